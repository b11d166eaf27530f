"""PixelCLIP in the MLflow model registry, against a real SeaweedFS and a real MLflow server: log, register,
alias, load by alias (exactly the in-memory label maps), the open_clip export, the CLI, bad input."""

from __future__ import annotations

import copy
import io
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import pixelclip
from pipelines import registry
from pipelines.cli import run_command
from pipelines.local.tracking import MLflowServer
from pixelclip.infer import Segmenter
from pixelclip.io import read_metadata, save_checkpoint
from tests.conftest import free_port, mlflow_at, running_store, synthetic_batch

pytestmark = pytest.mark.slow  # two real servers, two logged models, one fresh interpreter: ~55 s on 2 cores

BUCKET = "mlflow"
MODEL = "pixelclip-test"
CLASSES = ["cat", "grass", "sky"]


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """SeaweedFS with the artifact bucket, and an MLflow server whose artifacts are proxied to it."""
    with running_store(tmp_path_factory.mktemp("objectstore"), BUCKET) as store, \
            MLflowServer(tmp_path_factory.mktemp("mlflow"), artifacts_uri=f"s3://{BUCKET}/artifacts",
                         storage_opts=store.storage_options()) as srv:
        yield srv


@pytest.fixture(scope="module")
def mlflow(server):
    """The mlflow module pointed at the server; tracking URI and sys.path (model code dirs) restored after."""
    with mlflow_at(server.tracking_uri) as m:
        yield m


@pytest.fixture(scope="module")
def trained():
    """A tiny PixelCLIP after 3 training steps, its config and the losses."""
    cfg = pixelclip.load_config("tiny")
    task = pixelclip.build_pixelclip(cfg)
    trainer = pixelclip.Trainer(task, cfg)
    batch = synthetic_batch(cfg)
    losses = [trainer.step(batch["weak"], batch["strong"], batch["masks"])["loss"] for _ in range(3)]
    return task, cfg, losses


@pytest.fixture(scope="module")
def logged(mlflow, trained):
    """Version 1 of MODEL, logged from the task inside a run, with the alias `champion`."""
    task, cfg, losses = trained
    exp_id = mlflow.create_experiment("pixelclip-registry")
    with mlflow.start_run(experiment_id=exp_id) as run:
        for step, loss in enumerate(losses):
            mlflow.log_metric("loss", loss, step=step)
        info = registry.log_model(task, config=cfg.to_dict(), registered_model_name=MODEL)
    assert info.run_id == run.info.run_id and int(info.registered_model_version) == 1
    registry.set_alias(MODEL, "champion", info.registered_model_version)
    return info, exp_id


@pytest.fixture(scope="module")
def pyfunc_v1(mlflow, logged):
    """Version 1 loaded as a pyfunc on the CPU."""
    return mlflow.pyfunc.load_model(f"models:/{MODEL}/1", model_config={"device": "cpu"})


@pytest.fixture(scope="module")
def images():
    """Two RGB images of different sizes, as arrays and as PNG bytes."""
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (50, 70, 3), dtype=np.uint8), rng.integers(0, 256, (97, 61, 3), dtype=np.uint8)]
    return arrays, [_png(a) for a in arrays]


def test_champion_gives_exactly_the_in_memory_label_maps(mlflow, trained, logged, pyfunc_v1, images):
    task, *_ = trained
    arrays, pngs = images
    expected = [t.numpy() for t in Segmenter.from_pixelclip(task).segment(arrays, CLASSES)]

    seg = registry.load(f"models:/{MODEL}@champion", device="cpu")
    got = [t.cpu().numpy() for t in seg.segment(arrays, CLASSES)]
    assert [g.shape for g in got] == [(50, 70), (97, 61)]
    assert all(np.array_equal(g, e) for g, e in zip(got, expected, strict=True))

    model = pyfunc_v1
    out = model.predict(pd.DataFrame({"image": pngs, "classes": ["cat, grass, sky", CLASSES]}))
    assert isinstance(out, list) and all(o.dtype == np.int64 for o in out)
    assert all(np.array_equal(o, e) for o, e in zip(out, expected, strict=True))
    info, _ = logged
    assert model.metadata.metadata["pixelclip_step"] == 0 and model.metadata.model_id == info.model_id
    location = mlflow.get_logged_model(info.model_id).artifact_location  # mlflow-artifacts:/<exp>/models/m-...
    reqs = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{location}/requirements.txt")).read_text()
    assert "pixelclip" not in reqs and {"torch", "open_clip_torch", "mlflow"} <= {
        r.split("==")[0] for r in reqs.split()}


def test_loads_where_pixelclip_is_not_installed(server, trained, logged, images, tmp_path):
    """A fresh interpreter without this project on its path gets pixelclip from the model's code_paths."""
    task, *_ = trained
    arrays, pngs = images
    (tmp_path / "a.png").write_bytes(pngs[1])
    script = (
        "import importlib.util, sys\n"
        "assert importlib.util.find_spec('pixelclip') is None and importlib.util.find_spec('pipelines') is None\n"
        "import mlflow, numpy as np, pandas as pd\n"
        "m = mlflow.pyfunc.load_model(sys.argv[1], model_config={'device': 'cpu'})\n"
        "import pixelclip\n"
        "print(pixelclip.__file__)\n"
        "img = open('a.png', 'rb').read()\n"
        "np.save('out.npy', m.predict(pd.DataFrame({'image': [img], 'classes': ['cat, grass, sky']}))[0])\n")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTHON"))},
           "PYTHONPATH": sysconfig.get_paths()["purelib"], "MLFLOW_TRACKING_URI": server.tracking_uri,
           "MLFLOW_DISABLE_TELEMETRY": "true", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    # -S: no site processing, so the .pth of the editable install of this project is not read
    out = subprocess.run([sys.executable, "-S", "-c", script, f"models:/{MODEL}/1"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "/code/pixelclip/__init__.py" in out.stdout
    expected = Segmenter.from_pixelclip(task).segment(arrays[1], CLASSES)[0].numpy()
    assert np.array_equal(np.load(tmp_path / "out.npy"), expected)


def test_checkpoint_and_open_clip_export_are_run_artifacts(mlflow, trained, logged, tmp_path):
    import open_clip

    task, cfg, *_ = trained
    info, _ = logged
    ckpt = mlflow.artifacts.download_artifacts(f"runs:/{info.run_id}/model-checkpoint/checkpoint.safetensors",
                                               dst_path=str(tmp_path))
    assert read_metadata(ckpt)["config"] == cfg.to_dict()
    export = mlflow.artifacts.download_artifacts(f"runs:/{info.run_id}/model-open_clip", dst_path=str(tmp_path))
    assert sorted(p.name for p in Path(export).iterdir()) == ["open_clip_config.json", "open_clip_model.safetensors"]
    model = open_clip.create_model(f"local-dir:{export}")
    got, want = model.state_dict(), task.clip.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def test_list_models_and_moving_the_alias(mlflow, trained, logged, tmp_path):
    task, cfg, _ = trained
    info1, exp_id = logged
    [entry] = [m for m in registry.list_models() if m["name"] == MODEL]
    assert entry["aliases"] == {"champion": 1}
    [v1] = entry["versions"]
    assert (v1["version"], v1["aliases"], v1["run_id"]) == (1, ["champion"], info1.run_id)
    assert set(v1["metrics"]) == {"loss"}

    task = copy.deepcopy(task)  # a 4th step on a copy, and a checkpoint file with optimiser state
    trainer = pixelclip.Trainer(task, cfg)
    batch = synthetic_batch(cfg, seed=1)
    trainer.step(batch["weak"], batch["strong"], batch["masks"])
    save_checkpoint(tmp_path / "ckpt" / "checkpoint.safetensors", task, trainer.optimizer, step=4, config=cfg.to_dict())
    with mlflow.start_run(experiment_id=exp_id) as run:
        mlflow.log_metric("miou", 0.25)
        info2 = registry.log_model(tmp_path / "ckpt", registered_model_name=MODEL)  # a training checkpoint dir
    assert int(info2.registered_model_version) == 2 and info2.run_id == run.info.run_id
    location = mlflow.get_logged_model(info2.model_id).artifact_location
    weights = mlflow.artifacts.download_artifacts(artifact_uri=f"{location}/artifacts/checkpoint.safetensors",
                                                  dst_path=str(tmp_path))
    assert "optimizer" not in read_metadata(weights) and read_metadata(weights)["step"] == 4  # weights only
    raw = mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/model-checkpoint/checkpoint.safetensors",
                                              dst_path=str(tmp_path / "raw"))
    assert "optimizer" in read_metadata(raw)  # the checkpoint as given, to resume from

    registry.set_alias(MODEL, "champion", 2)
    [entry] = [m for m in registry.list_models() if m["name"] == MODEL]
    assert entry["aliases"] == {"champion": 2}
    assert [(v["version"], v["aliases"]) for v in entry["versions"]] == [(1, []), (2, ["champion"])]
    assert entry["versions"][1]["metrics"] == {"miou": 0.25}
    seg = registry.load(f"models:/{MODEL}@champion", device="cpu")
    image = np.random.default_rng(3).integers(0, 256, (40, 52, 3), dtype=np.uint8)
    want = Segmenter.from_pixelclip(task).segment(image, CLASSES)[0]
    assert torch.equal(seg.segment(image, CLASSES)[0].cpu(), want)

    registry.delete_alias(MODEL, "champion")
    assert [m["aliases"] for m in registry.list_models() if m["name"] == MODEL] == [{}]
    with pytest.raises(mlflow.exceptions.MlflowException, match="not found"):
        registry.set_alias(MODEL, "champion", 7)  # no such version
    registry.set_alias(MODEL, "champion", 1)  # as the other tests expect it


def test_bad_input_raises(mlflow, trained, pyfunc_v1, images):
    model, (_, pngs) = pyfunc_v1, images
    with pytest.raises(mlflow.exceptions.MlflowException, match="missing inputs"):
        model.predict(pd.DataFrame({"image": pngs}))
    with pytest.raises(ValueError, match="row 1: column 'image' is not a decodable image"):
        model.predict(pd.DataFrame({"image": [pngs[0], b"not an image"], "classes": ["cat", "cat"]}))
    with pytest.raises(ValueError, match="row 0: column 'classes': class_names is empty"):
        model.predict(pd.DataFrame({"image": [pngs[0]], "classes": [" , "]}))
    with pytest.raises(ValueError, match="duplicates"):
        model.predict(pd.DataFrame({"image": [pngs[0]], "classes": [["cat", "cat"]]}))
    python_model = model.unwrap_python_model()
    with pytest.raises(ValueError, match=r"missing column\(s\) \['classes'\]"):
        python_model.predict(None, pd.DataFrame({"image": pngs}))
    assert python_model.predict(None, {"image": pngs[0], "classes": "cat, sky"})[0].shape == (50, 70)
    with pytest.raises(ValueError, match="needs config="):
        registry.log_model(trained[0])
    with pytest.raises(ValueError, match="config describes pixelclip-tiny-convnext"):
        registry.log_model(trained[0], config=pixelclip.load_config("tiny_convnext"))
    with pytest.raises(RuntimeError, match="inside `with mlflow"):
        registry.log_model(trained[0], config=trained[1])


def test_cli_and_segment_uri(mlflow, server, trained, logged, images, tmp_path, monkeypatch, capsys):
    arrays, pngs = images
    (tmp_path / "photo.png").write_bytes(pngs[0])
    labels = registry.segment_uri(f"models:/{MODEL}/1", tmp_path / "photo.png", "cat, grass, sky", device="cpu")
    assert np.array_equal(labels, Segmenter.from_pixelclip(trained[0]).segment(arrays[0], CLASSES)[0].numpy())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.tracking_uri)
    assert run_command(["registry", "list"]) == 0
    assert f"{MODEL}  (" in (out := capsys.readouterr().out) and "@champion -> v1" in out
    assert run_command(["registry", "alias", MODEL, "staging", "1"]) == 0
    assert run_command(["registry", "unalias", MODEL, "staging"]) == 0
    assert run_command(["segment", str(tmp_path / "photo.png"), "--model", f"models:/{MODEL}@champion", "--classes",
                        "cat, grass, sky", "-o", str(tmp_path / "out.png"), "--device", "cpu"]) == 0
    assert "wrote" in capsys.readouterr().out
    with Image.open(tmp_path / "out.png") as im:
        assert im.width == 70 and im.height >= 50

    assert run_command(["registry", "alias", MODEL, "champion", "9"]) == 2
    assert "error:" in capsys.readouterr().err
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert run_command(["registry", "list"]) == 2
    assert "MLFLOW_TRACKING_URI is not set" in capsys.readouterr().err
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    assert run_command(["registry", "list"]) == 2
    assert "cannot reach the MLflow server" in capsys.readouterr().err
