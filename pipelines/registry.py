"""PixelCLIP in the MLflow model registry: a pyfunc model, logging, aliases, loading by URI.

    pixelclip registry list [--json]
    pixelclip registry alias pixelclip champion 3          # point an alias at a version
    pixelclip registry unalias pixelclip champion
    pixelclip segment photo.jpg --model models:/pixelclip@champion --classes "cat, sky" -o out.png

The CLI reads MLFLOW_TRACKING_URI (`pixelclip tracking start` prints it) and fails fast when it is unset or no
MLflow server answers there.

From Python, inside a run:

    with mlflow.start_run():
        info = log_model(task, config=cfg.to_dict(), registered_model_name="pixelclip")   # or a checkpoint path
    set_alias("pixelclip", "champion", info.registered_model_version)
    seg = load("models:/pixelclip@champion")                  # a pixelclip Segmenter
    labels = seg.segment([image], ["cat", "sky"])[0]           # [H, W] at the image's resolution

What `log_model` writes:
- the pyfunc model (a LoggedModel in MLflow 3; `info.model_uri` is `models:/m-...`), logged as "models from
  code" (no pickle): a three-line script that builds `PixelCLIPModel`, the weights-only checkpoint as its
  `checkpoint` artifact, and the `pixelclip` and `pipelines` packages as `code_paths`, so it loads where
  neither is installed (only torch, open_clip_torch, safetensors, numpy, pillow, pyyaml and mlflow are
  required). A code directory goes first on `sys.path` when the model loads, so in a process that has not
  imported `pixelclip` / `pipelines` yet, the copies logged with the model are the ones imported.
- run artifacts beside it: `<name>-checkpoint/checkpoint.safetensors` (the checkpoint as given, optimiser
  state included) and `<name>-open_clip/` (`open_clip.create_model("local-dir:<dir>")` loads it).

Pyfunc input: a pandas DataFrame with `image` (encoded PNG/JPEG bytes; base64 text is accepted too, as the
scoring server sends it) and `classes` (a comma-separated string or a list of names) per row. Output: a list
with one label map per row, a numpy int64 array [H, W] at the image's resolution, values indexing that row's
classes. (A list, because rows differ in size; the scoring server writes it as nested JSON lists.) The model
config (`device`: "auto" | "cpu" | "cuda[:N]", `protocol`: "whole" | "slide") can be overridden at load time.
Bad input raises ValueError; a missing column is caught first by MLflow's schema check (MlflowException).
"""

from __future__ import annotations

import base64
import importlib.metadata
import io
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types.schema import AnyType, ColSpec, DataType, Schema
from PIL import Image, ImageOps, UnidentifiedImageError

import pixelclip
from pixelclip.infer import Segmenter, check_class_names

CHECKPOINT_FILE = "checkpoint.safetensors"
MODEL_CONFIG = {"device": "auto", "protocol": "whole"}  # defaults; override with load(..., device=...)
# What the model needs to load and predict (mlflow is added); pinned to the installed versions.
REQUIREMENTS = ("torch", "open_clip_torch", "safetensors", "numpy", "pillow", "pyyaml")
SIGNATURE = ModelSignature(inputs=Schema([ColSpec(DataType.binary, "image"), ColSpec(AnyType(), "classes")]))
# The pyfunc, logged as models-from-code: this file is copied into the model and run when it loads.
MODEL_CODE = '''"""The PixelCLIP pyfunc (written by pipelines.registry.log_model)."""
import mlflow
from pipelines.registry import PixelCLIPModel

mlflow.models.set_model(PixelCLIPModel())
'''


# -- input -----------------------------------------------------------------------------------------------------


def decode_image(value: Any, row: int = 0) -> np.ndarray:
    """Encoded image bytes (or their base64 text) -> uint8 RGB [H, W, 3], EXIF orientation applied."""
    if isinstance(value, str):
        try:
            value = base64.b64decode(value)
        except ValueError as err:
            raise ValueError(f"row {row}: column 'image' is text but not base64 ({err})") from err
    if not isinstance(value, bytes | bytearray | memoryview) or len(value) == 0:
        raise ValueError(f"row {row}: column 'image' must hold encoded image bytes (PNG/JPEG), "
                         f"got {type(value).__name__}{' (empty)' if isinstance(value, bytes) else ''}")
    try:
        with Image.open(io.BytesIO(bytes(value))) as img:
            img.load()
            return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError) as err:
        raise ValueError(f"row {row}: column 'image' is not a decodable image (PNG/JPEG bytes): {err}") from err


def parse_classes(value: Any, row: int = 0) -> list[str]:
    """A comma-separated string or a sequence of names -> a checked list of class names."""
    if isinstance(value, str):
        names = [n.strip() for n in value.split(",") if n.strip()]
    elif isinstance(value, Sequence | np.ndarray | pd.Series):
        names = [str(n).strip() for n in value]
    elif value is None or (isinstance(value, float) and np.isnan(value)):
        names = []
    else:
        raise ValueError(f"row {row}: column 'classes' must be a comma-separated string or a list of names, "
                         f"got {type(value).__name__}")
    try:
        return check_class_names(names)
    except ValueError as err:
        raise ValueError(f"row {row}: column 'classes': {err}") from err


def _as_frame(model_input: Any) -> pd.DataFrame:
    """The pyfunc input as a DataFrame with both columns (a dict or a list of dicts is accepted too)."""
    if isinstance(model_input, dict):  # one row ({"image": b"...", ...}) or columns ({"image": [...], ...})
        one_row = isinstance(model_input.get("image"), bytes | bytearray | str)
        model_input = pd.DataFrame([model_input] if one_row else model_input)
    elif isinstance(model_input, list):
        model_input = pd.DataFrame(model_input)
    if not isinstance(model_input, pd.DataFrame):
        raise ValueError(f"input must be a pandas DataFrame with columns 'image' and 'classes', "
                         f"got {type(model_input).__name__}")
    missing = [c for c in ("image", "classes") if c not in model_input.columns]
    if missing:
        raise ValueError(f"input is missing column(s) {missing}: expected 'image' (encoded PNG/JPEG bytes) and "
                         f"'classes' (comma-separated names or a list), got {list(model_input.columns)}")
    return model_input


def _device(name: str | None) -> str:
    if name in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(name)


# -- the pyfunc model ------------------------------------------------------------------------------------------


class PixelCLIPModel(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc around a PixelCLIP checkpoint: encoded images + class names -> full-resolution label maps."""

    def __init__(self):
        self.task = None
        self.segmenter: Segmenter | None = None

    def load_context(self, context) -> None:
        """Rebuild the model from `artifacts["checkpoint"]` (no download: weights come from the checkpoint)."""
        from pixelclip.io import load_pixelclip

        cfg = {**MODEL_CONFIG, **(context.model_config or {})}
        self.task, _ = load_pixelclip(context.artifacts["checkpoint"], device=_device(cfg["device"]))
        self.task.eval()
        self.segmenter = Segmenter.from_pixelclip(self.task, protocol=cfg["protocol"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> list[np.ndarray]:
        """One label map (int64 [H, W], indices into that row's classes) per row; rows sharing a class list
        are segmented together."""
        if self.segmenter is None:
            raise RuntimeError("PixelCLIPModel has no weights: load it with mlflow.pyfunc.load_model")
        frame = _as_frame(model_input)
        images = [decode_image(v, i) for i, v in enumerate(frame["image"])]
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, v in enumerate(frame["classes"]):
            groups.setdefault(tuple(parse_classes(v, i)), []).append(i)
        out: list[np.ndarray | None] = [None] * len(images)
        for names, rows in groups.items():
            labels = self.segmenter.segment([images[i] for i in rows], list(names))
            for i, lab in zip(rows, labels, strict=True):
                out[i] = lab.cpu().numpy()
        return out


# -- logging ---------------------------------------------------------------------------------------------------


def _requirements() -> list[str]:
    """Minimal pip requirements, pinned to what is installed here (local version labels such as +cpu dropped)."""
    pins = [f"mlflow=={mlflow.__version__}"]
    for dist in REQUIREMENTS:
        try:
            pins.append(f"{dist}=={importlib.metadata.version(dist).split('+')[0]}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(dist)
    return pins


def _input_example() -> pd.DataFrame:
    """A 16x16 PNG and two class names (MLflow checks that the logged model serves it)."""
    buf = io.BytesIO()
    ramp = np.linspace(0, 255, 16 * 16 * 3).astype(np.uint8).reshape(16, 16, 3)
    Image.fromarray(ramp).save(buf, format="PNG")
    return pd.DataFrame({"image": [buf.getvalue()], "classes": ["cat, sky"]})


def _task_config(task, config) -> dict:
    """The config dict of an in-memory task, checked to describe it (ValueError otherwise)."""
    if config is None:
        raise ValueError("log_model(task) needs config= (the pixelclip Config or its dict): the checkpoint "
                         "must carry it so that the model can be rebuilt when it loads")
    cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    parsed = pixelclip.load_config(cfg)  # ConfigError (a ValueError) names a bad field
    from pixelclip.model.backbone import resolve_model_name

    built = resolve_model_name(parsed.backbone.name, parsed.backbone.pretrained)
    if (built, parsed.backbone.image_size) != (task.model_name, task.image_size):
        raise ValueError(f"config describes {parsed.backbone.name} at {parsed.backbone.image_size} px, the task "
                         f"is {task.model_name} at {task.image_size} px: pass the config it was built from")
    return cfg


def _materialize(source, config, tmp: Path):
    """(task, metadata, local path of the checkpoint as given or None for a task) for a PixelCLIP task or a
    checkpoint path / URI."""
    from pixelclip.io import load_checkpoint, load_pixelclip, read_metadata

    if isinstance(source, pixelclip.PixelCLIP):
        return source, {"config": _task_config(source, config), "step": 0, "extra": {}}, None
    path = str(source)
    if "://" in path and not path.startswith("file://"):  # s3://... : fetched with the pipelines' storage layer
        from pipelines import storage

        storage.download(path, tmp / "given" / CHECKPOINT_FILE)
        path = tmp / "given" / CHECKPOINT_FILE
    path = Path(str(path).removeprefix("file://"))
    if path.is_dir():  # a training checkpoint directory (training writes checkpoint.safetensors in it)
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {source}")
    meta = read_metadata(path)
    if meta.get("config"):
        return (*load_pixelclip(path), path)
    if config is None:
        raise ValueError(f"{source} stores no config: pass config= (the pixelclip Config it was trained with)")
    cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    parsed = pixelclip.load_config(cfg)
    parsed.backbone.pretrained = None
    task = pixelclip.build_pixelclip(parsed, weights_follow=True)
    load_checkpoint(path, task)
    return task, {**meta, "config": cfg}, path


def log_model(task_or_checkpoint_path, name: str = "model", registered_model_name: str | None = None,
              config: dict | None = None) -> ModelInfo:
    """Log PixelCLIP to the active run: the pyfunc (weights-only checkpoint as its artifact), plus the checkpoint
    as given (`<name>-checkpoint/`) and the open_clip export (`<name>-open_clip/`) as run artifacts. Registers a
    new version of `registered_model_name` when given (`info.registered_model_version`).

    `task_or_checkpoint_path`: a `PixelCLIP` (then `config`, its Config or dict, is required) or a checkpoint
    path / s3:// URI (its stored config is used; `config` only fills in for a checkpoint without one)."""
    from pixelclip.io import export_open_clip, save_checkpoint

    if not name or "/" in name:
        raise ValueError(f"name must be a non-empty name without '/', got {name!r}")
    if isinstance(task_or_checkpoint_path, pixelclip.PixelCLIP):
        _task_config(task_or_checkpoint_path, config)
    if mlflow.active_run() is None:
        raise RuntimeError("log_model logs into the active MLflow run: call it inside `with mlflow.start_run():`")
    with tempfile.TemporaryDirectory(prefix="pixelclip-model-") as d:
        tmp = Path(d)
        task, meta, given = _materialize(task_or_checkpoint_path, config, tmp)
        weights = save_checkpoint(tmp / "model" / CHECKPOINT_FILE, task, step=meta.get("step", 0),
                                  config=meta["config"], extra=meta.get("extra"))
        export = tmp / "open_clip"
        export_open_clip(task, export)
        given = given or weights  # a task: the weights are the checkpoint
        mlflow.log_artifact(str(given), artifact_path=f"{name}-checkpoint")
        mlflow.log_artifacts(str(export), artifact_path=f"{name}-open_clip")
        (tmp / "code").mkdir()
        script = tmp / "code" / "pixelclip_model.py"
        script.write_text(MODEL_CODE)
        backbone = meta["config"].get("backbone", {})
        return mlflow.pyfunc.log_model(
            name=name, python_model=str(script), artifacts={"checkpoint": str(weights)},
            code_paths=[str(Path(pixelclip.__file__).parent), str(Path(__file__).parent)],
            pip_requirements=_requirements(), signature=SIGNATURE, input_example=_input_example(),
            model_config=dict(MODEL_CONFIG), registered_model_name=registered_model_name,
            metadata={"pixelclip_step": int(meta.get("step", 0)), "backbone": backbone.get("name"),
                      "checkpoint_artifact": f"{name}-checkpoint/{Path(given).name}",
                      "open_clip_artifact": f"{name}-open_clip"})


# -- the registry ----------------------------------------------------------------------------------------------


def _client(client=None) -> mlflow.MlflowClient:
    return client or mlflow.MlflowClient()


def _pages(search, **kwargs) -> list:
    """Every result of a paginated MlflowClient search."""
    out, token = [], None
    while True:
        page = search(page_token=token, **kwargs)
        out.extend(page)
        token = page.token
        if not token:
            return out


def _run_metrics(client, run_id: str | None, cache: dict) -> dict[str, float]:
    """The latest value of each metric of a run ({} when the run is gone)."""
    if not run_id:
        return {}
    if run_id not in cache:
        try:
            cache[run_id] = dict(client.get_run(run_id).data.metrics)
        except mlflow.exceptions.MlflowException:
            cache[run_id] = {}
    return cache[run_id]


def list_models(client=None) -> list[dict]:
    """Registered models with their versions (version, aliases, run_id, status, source, the run's latest metrics)."""
    client = _client(client)
    cache: dict[str, dict] = {}
    out = []
    for rm in sorted(_pages(client.search_registered_models, max_results=100), key=lambda m: m.name):
        quoted = rm.name.replace("'", "\\'")
        versions = _pages(client.search_model_versions, filter_string=f"name = '{quoted}'", max_results=1000)
        aliases = {a: int(v) for a, v in (rm.aliases or {}).items()}  # searched versions carry no aliases
        out.append({
            "name": rm.name,
            "description": rm.description or "",
            "aliases": aliases,
            "versions": [{"version": int(v.version), "run_id": v.run_id,
                          "aliases": sorted(a for a, n in aliases.items() if n == int(v.version)),
                          "status": v.status, "source": v.source, "metrics": _run_metrics(client, v.run_id, cache)}
                         for v in sorted(versions, key=lambda v: int(v.version))],
        })
    return out


def set_alias(name: str, alias: str, version: int | str, client=None) -> None:
    """Point `alias` of registered model `name` at `version` (moving it if it pointed elsewhere)."""
    client = _client(client)
    client.get_model_version(name, str(version))  # a clear RESOURCE_DOES_NOT_EXIST for a missing version
    client.set_registered_model_alias(name, alias, str(version))


def delete_alias(name: str, alias: str, client=None) -> None:
    """Remove `alias` from registered model `name`."""
    _client(client).delete_registered_model_alias(name, alias)


def load(model_uri: str, device: str | None = None, protocol: str | None = None) -> Segmenter:
    """The `Segmenter` of a logged PixelCLIP pyfunc (`models:/pixelclip@champion`, `models:/pixelclip/3`,
    `models:/m-...`, `runs:/<run_id>/model`): `.segment(images, class_names)` gives full-resolution label maps.
    `device` / `protocol` override the model config ("auto" picks CUDA when there is one)."""
    overrides = {k: v for k, v in (("device", device), ("protocol", protocol)) if v is not None}
    model = mlflow.pyfunc.load_model(model_uri, model_config=overrides or None)
    python_model = model.unwrap_python_model()
    segmenter = getattr(python_model, "segmenter", None)
    if segmenter is None:
        raise ValueError(f"{model_uri} is not a PixelCLIP pyfunc model (got {type(python_model).__name__})")
    return segmenter


def read_image(path: str | os.PathLike) -> np.ndarray:
    """uint8 RGB [H, W, 3] of a local image file or a storage URI (s3://...)."""
    if "://" in str(path) and not str(path).startswith("file://"):
        from pipelines import storage

        return decode_image(storage.read_bytes(path))
    return decode_image(Path(str(path).removeprefix("file://")).read_bytes())


def segment_uri(model_uri: str, image_path: str | os.PathLike, classes: str | Sequence[str],
                device: str | None = None) -> np.ndarray:
    """Label map int64 [H, W] of one image (path or s3:// URI) with the model at `model_uri`."""
    names = parse_classes(classes)
    return load(model_uri, device=device).segment(read_image(image_path), names)[0].cpu().numpy()
