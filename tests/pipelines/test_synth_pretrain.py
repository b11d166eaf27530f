"""SynthScenes CLIP pretraining: the loop learns something, the checkpoint loads the open_clip way and
through the project's model strings, the metrics are right on hand-made cases."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from pixelclip.eval.miou import ConfusionMatrix
from pixelclip.synth import CLASS_NAMES, NUM_STUFF
from pixelclip.synth.pool import CaptionBatches, ScenePool, build_pool, load_pool, pool_path
from pixelclip.synth.pretrain import PretrainConfig, build_model, lr_at, pretrain, save_checkpoint
from pixelclip.synth.probe import STUFF_IDS, THING_IDS, accuracy, evaluate_clip, group_iou, make_probe

NAME = "pixelclip-synth-vit"
TINY = PretrainConfig(steps=3, batch=4, pool=8, warmup=1, lr=1e-3, log_every=1, eval_every=0, minutes=None,
                      threads=1, eval_scenes=2, single_scenes=3, unmasked_tail=0.5)


@pytest.fixture(scope="module")
def pool() -> ScenePool:
    return build_pool(0, 128, 8, workers=1)


@pytest.fixture(scope="module")
def trained(pool):
    return pretrain(TINY, pool, probe=None, log=lambda m: None)


@pytest.fixture(scope="module")
def checkpoint(trained, tmp_path_factory):
    return save_checkpoint(trained.model, tmp_path_factory.mktemp("ckpt") / f"{NAME}.safetensors")


def test_config_is_validated_by_field():
    with pytest.raises(ValueError, match=r"PretrainConfig\.batch"):
        PretrainConfig(batch=0)
    with pytest.raises(ValueError, match=r"PretrainConfig\.patch_dropout"):
        PretrainConfig(patch_dropout=1.0)
    with pytest.raises(ValueError, match="unknown fields"):
        PretrainConfig.from_dict({"bogus": 1})
    assert PretrainConfig.from_dict(TINY.to_dict()) == TINY


def test_schedule_warms_up_then_anneals():
    assert lr_at(0, 0.0, 1.0, 0.0, 10) == pytest.approx(0.1)
    assert lr_at(10, 0.0, 1.0, 0.0, 10) == pytest.approx(1.0)
    assert lr_at(50, 0.5, 1.0, 0.1, 10) == pytest.approx(0.55)
    assert lr_at(99, 1.0, 1.0, 0.1, 10) == pytest.approx(0.1)
    assert lr_at(99, 3.0, 1.0, 0.1, 10) == pytest.approx(0.1)  # past the end: stays at min_lr


@pytest.mark.slow
def test_pool_is_cached_and_batches_carry_matching_captions(tmp_path, pool):
    cached = load_pool(tmp_path, 0, 128, 8, workers=1)
    assert pool_path(tmp_path, 0, 128, 8).is_file()
    again = load_pool(tmp_path, 0, 128, 8, workers=1)
    assert np.array_equal(cached.images, pool.images) and np.array_equal(again.classes, pool.classes)
    assert pool.images.shape == (8, 128, 128, 3) and pool.images.dtype == np.uint8
    images, captions = CaptionBatches(pool, batch=8, crop_scale=0.85, seed=0).sample()
    assert images.shape == (8, 3, 128, 128) and float(images.min()) >= 0 and float(images.max()) <= 1
    assert len(captions) == 8
    words = [set(t.replace(",", " ").split()) for t in captions]
    for row in pool.classes:  # batch == pool: every scene once, in a random order
        names = {CLASS_NAMES[c] for c in row if c >= 0}
        assert any(names <= w for w in words), (names, captions)


@pytest.mark.slow
def test_few_steps_give_a_finite_loss_and_change_the_weights(trained):
    assert trained.steps == 3 and trained.stopped == "steps"
    assert trained.unmasked_from == 2 and trained.model.visual.patch_dropout.prob == 0  # the last half: all tokens
    assert [p["step"] for p in trained.curve] == [1, 2, 3]
    assert all(math.isfinite(p["loss"]) for p in trained.curve)
    torch.manual_seed(TINY.seed)
    init, _ = build_model(NAME)  # the same random init as the run's
    after = dict(trained.model.named_parameters())
    changed = [n for n, p in init.named_parameters() if not torch.equal(p, after[n])]
    assert any(n.startswith("visual.") for n in changed) and any(n.startswith("transformer.") for n in changed)
    assert all(p.requires_grad for p in trained.model.parameters())


@pytest.mark.slow
def test_checkpoint_loads_with_open_clip(trained, checkpoint):
    import open_clip
    from safetensors import safe_open

    from pixelclip.model.backbone import register_model_configs

    with safe_open(str(checkpoint), "pt") as f:
        assert all(f.get_tensor(k).dtype == torch.float16 for k in f.keys())  # noqa: SIM118 (safe_open is no dict)
    assert checkpoint.stat().st_size < 16e6
    register_model_configs()
    model = open_clip.create_model(NAME, pretrained=str(checkpoint))
    ref = trained.model.state_dict()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, ref[k].half().float(), rtol=0, atol=0)


@pytest.mark.slow
def test_checkpoint_segments_through_the_model_string(checkpoint):
    from pipelines.models import load_segmenter

    seg = load_segmenter(f"openclip:{NAME}:{checkpoint}", mode="plain", templates="single")
    assert seg.image_size == 128
    image = torch.rand(3, 100, 140)
    [labels] = seg.segment([image], list(CLASS_NAMES))
    assert labels.shape == (100, 140) and int(labels.min()) >= 0 and int(labels.max()) < len(CLASS_NAMES)


def test_accuracy_on_hand_made_cases():
    target = torch.tensor([0, 2, 1, 2])
    perfect = torch.nn.functional.one_hot(target, 3).float()
    assert accuracy(perfect, target) == 100.0
    assert accuracy(perfect.roll(1, dims=1), target) == 0.0
    assert accuracy(perfect[:, [0, 2, 1]], target) == 25.0  # classes 1 and 2 swapped: only the 0 is right
    with pytest.raises(ValueError):
        accuracy(perfect, target[:2])


def test_group_iou_on_hand_made_cases():
    label = torch.arange(len(CLASS_NAMES)).repeat_interleave(4).view(1, -1)  # every class, 4 pixels each
    cm = ConfusionMatrix(len(CLASS_NAMES))
    cm.update(label.clone(), label)
    assert group_iou(cm, {"stuff": STUFF_IDS, "things": THING_IDS}) == {"miou": 100.0, "stuff": 100.0, "things": 100.0}
    wrong = label.clone()
    wrong[label >= NUM_STUFF] = 0  # every thing pixel called the first stuff class
    cm.reset()
    cm.update(wrong, label)
    s = group_iou(cm, {"stuff": STUFF_IDS, "things": THING_IDS})
    assert s["things"] == 0.0
    assert s["stuff"] == pytest.approx(100 * (4 / (4 + 18 * 4) + 5) / 6)  # class 0: 4 right of 76 claimed
    assert s["miou"] == pytest.approx(100 * (4 / 76 + 5) / 24)


def test_evaluate_clip_reports_percentages_and_leaves_the_model_alone(trained):
    probe = make_probe(seed=0, size=128, n_eval=2, n_single=3)
    assert probe.single_thing.shape == (3,) and (probe.single_stuff < NUM_STUFF).all()
    scores = evaluate_clip(trained.model, trained.tokenizer, probe, templates=("a photo of a {}.",))
    for v in (scores["cls_things"], scores["cls_stuff"], *scores["dense"]["maskclip"].values(),
              *scores["dense"]["plain"].values()):
        assert math.isnan(v) or 0.0 <= v <= 100.0
    assert set(scores["dense"]) == {"maskclip", "plain"}
    assert all(p.requires_grad for p in trained.model.parameters())  # the text tower was not frozen


@pytest.mark.slow
def test_cli_writes_checkpoint_and_train_json(tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({**TINY.to_dict(), "steps": 2}))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pipelines.synth.pretrain", "--output", str(out), "--config", str(cfg),
           "--cache-dir", str(tmp_path / "cache"), "--workers", "1", "--seed", "1"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    report = json.loads((out / "train.json").read_text())
    assert report["config"]["seed"] == 1 and report["config"]["steps"] == 2 and report["run"]["steps"] == 2
    assert (out / f"{NAME}.safetensors").stat().st_size == report["model"]["checkpoint_bytes"]
    assert report["final"]["step"] == 2 and "maskclip" in report["final"]["dense"]
    assert len(report["curve"]) == 2 and report["model"]["parameters"] > 0
