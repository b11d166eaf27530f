"""Weights files named by users: one-line errors on the driver, absolute paths, the s3:// cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import pixelclip
from pipelines import storage
from pipelines.weights import WeightsError, check_weights, driver_model, driver_source, local_weights


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXELCLIP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "weights"


def test_local_files_missing_garbage_or_not_tensors(tmp_path, monkeypatch):
    good = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(2)}, str(good))
    monkeypatch.chdir(tmp_path)
    assert check_weights("w.safetensors", "masks.weights") == str(good)  # relative -> absolute
    with pytest.raises(WeightsError, match=r"^masks\.weights: /no/such\.pth does not exist: give the path"):
        check_weights("/no/such.pth", "masks.weights")
    (tmp_path / "garbage.pth").write_bytes(os.urandom(512))
    with pytest.raises(WeightsError, match=r"garbage\.pth is not a weights file \(.*\): give a \.safetensors") as e:
        check_weights("garbage.pth", "masks.weights")
    assert "\n" not in str(e.value)  # one line
    torch.save({"epoch": 3, "note": "not tensors"}, tmp_path / "meta.pth")
    with pytest.raises(WeightsError, match="expected a state dict of tensors"):
        check_weights(str(tmp_path / "meta.pth"), "prepare.weights")


@pytest.mark.slow
def test_s3_weights_missing_and_cached(store, cache, tmp_path):
    with pytest.raises(WeightsError, match=r"s3://data/w/none\.pth does not exist: upload the weights there"):
        check_weights("s3://data/w/none.pth", "train.masks.weights", store)
    local = tmp_path / "dino.safetensors"
    save_file({"pos_embed": torch.zeros(1, 4, 8)}, str(local))
    storage.upload(local, "s3://data/w/dino.safetensors", store)
    uri = "s3://data/w/dino.safetensors"
    assert check_weights(uri, "train.masks.weights", store) == uri
    cached = local_weights("s3://data/w/dino.safetensors", store)
    assert cached.startswith(str(cache)) and Path(cached).read_bytes() == local.read_bytes()
    assert local_weights("s3://data/w/dino.safetensors", store) == cached  # fetched once
    storage.write_bytes("s3://data/w/bad.pth", b"not a torch file", store)
    with pytest.raises(WeightsError, match=r"s3://data/w/bad\.pth is not a weights file"):
        check_weights("s3://data/w/bad.pth", "prepare.weights", store)


def test_driver_model_resolves_the_backbone(tmp_path, monkeypatch):
    """The workers get an absolute weights path and the configuration built for the weights."""
    cfg = pixelclip.load_config("vit_b16", ["backbone.name=ViT-B-16"]).to_dict()
    assert driver_model(cfg)["backbone"]["name"] == "ViT-B-16-quickgelu"
    with pytest.raises(ValueError, match=r"backbone.pretrained 'opneai' is neither a file nor a tag"):
        driver_model(pixelclip.load_config("vit_b16", ["backbone.pretrained=opneai"]).to_dict())
    with pytest.raises(WeightsError, match=r"backbone\.pretrained: .*/clip\.pt does not exist"):
        driver_model(pixelclip.load_config("tiny", ["backbone.pretrained=clip.pt"]).to_dict())
    synth = pixelclip.load_config("synth").to_dict()
    monkeypatch.chdir(tmp_path)
    rel = os.path.relpath(synth["backbone"]["pretrained"])
    out = driver_model({**synth, "backbone": {**synth["backbone"], "pretrained": rel}})
    assert out["backbone"]["pretrained"] == synth["backbone"]["pretrained"] and os.path.isabs(rel) is False


def test_evaluate_models_are_opened_on_the_driver_and_made_absolute(tmp_path, monkeypatch):
    """`--model` as the README writes it (a path relative to the checkout) reaches every actor absolute;
    a missing or garbage file fails here in one line, before any Ray work."""
    synth = pixelclip.load_config("synth").to_dict()["backbone"]
    monkeypatch.chdir(tmp_path)
    rel = os.path.relpath(synth["pretrained"])
    assert driver_source(f"openclip:{synth['name']}:{rel}") == f"openclip:{synth['name']}:{synth['pretrained']}"
    ckpt = tmp_path / "run" / "checkpoint.safetensors"
    ckpt.parent.mkdir()
    save_file({"w": torch.zeros(3)}, str(ckpt))
    assert driver_source("run/checkpoint.safetensors") == str(ckpt)
    with pytest.raises(WeightsError, match=r"^evaluate\.model: .*/none\.safetensors does not exist"):
        driver_source("none.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(os.urandom(256))
    with pytest.raises(WeightsError, match=r"junk\.safetensors is not a weights file"):
        driver_source("junk.safetensors")
    assert driver_source("models:/pixelclip@champion") == "models:/pixelclip@champion"  # the registry resolves it
    assert driver_source("openclip:ViT-B-16:openai") == "openclip:ViT-B-16:openai"  # a tag, not a file


@pytest.mark.slow
def test_stages_refuse_bad_weights_before_any_ray_work(store, ray_local, ready):
    from pipelines.stages.prepare import PrepareConfig, run_prepare
    from pipelines.stages.train.driver import build_trainer
    from pipelines.stages.train.job import TrainJobConfig

    with pytest.raises(WeightsError, match=r"^prepare\.weights: s3://data/w/missing\.pth does not exist"):
        run_prepare(PrepareConfig(input="s3://data/train-raw/", output="s3://data/never/", source="dino",
                                  weights="s3://data/w/missing.pth"), store)
    assert not storage.list_files("s3://data/never/", (".parquet",), store)
    job = TrainJobConfig(data=ready, storage="s3://data/runs", name="bad-dino",
                         model=pixelclip.load_config("tiny").to_dict(),
                         masks={"source": "dino", "weights": "s3://data/w/missing.pth"})
    with pytest.raises(WeightsError, match=r"^train\.masks\.weights: s3://data/w/missing\.pth does not exist"):
        build_trainer(job, store)
