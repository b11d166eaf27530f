"""One way to name a model for segmentation and evaluation, whatever holds it.

    models:/pixelclip@champion     a registered PixelCLIP (MLflow registry; also models:/name/3, runs:/<id>/model)
    s3://runs/tiny/step_00000100/checkpoint.safetensors     a PixelCLIP checkpoint (s3:// or a local path)
    openclip:ViT-B-16:openai       a plain open_clip CLIP: model name and pretrained tag or weights file
    openclip:pixelclip-tiny-vit    ... with random weights (tests, smoke runs)

`load_segmenter(source)` gives a `pixelclip.infer.Segmenter`; `ModelSource.mlflow_run_id` is the
MLflow run that produced a registered model (where evaluation results of it are logged).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from pixelclip.infer import ENSEMBLE_TEMPLATES, SINGLE_TEMPLATE, Segmenter

TEMPLATES = {"ensemble": ENSEMBLE_TEMPLATES, "single": SINGLE_TEMPLATE}


@dataclass(frozen=True)
class ModelSource:
    kind: str  # "registry", "checkpoint" or "openclip"
    ref: str  # the URI, path or open_clip name
    pretrained: str | None = None  # openclip only: tag or weights file; None = random init

    @property
    def label(self) -> str:
        return self.ref if self.kind != "openclip" else f"openclip:{self.ref}:{self.pretrained or 'random'}"

    def mlflow_run_id(self, tracking_uri: str | None = None) -> str | None:
        """The MLflow run behind a registry model (`models:/name@alias`, `models:/name/N`, `runs:/id/...`)."""
        if self.kind != "registry":
            return None
        if self.ref.startswith("runs:/"):
            return self.ref.removeprefix("runs:/").split("/", 1)[0]
        import mlflow

        client = mlflow.MlflowClient(tracking_uri)
        name, _, rest = self.ref.removeprefix("models:/").partition("@")
        if rest:
            return client.get_model_version_by_alias(name, rest).run_id
        name, _, version = name.partition("/")
        if version.isdigit():
            return client.get_model_version(name, version).run_id
        return None  # models:/m-<id> (a logged model): no registry version


def require_tracking(src: ModelSource) -> None:
    """A registry model needs an MLflow server; without one MLflow would quietly use ./mlflow.db."""
    import os

    if src.kind == "registry" and not os.environ.get("MLFLOW_TRACKING_URI"):
        raise ValueError(f"{src.ref} is a registry model: set MLFLOW_TRACKING_URI to the MLflow server "
                         "(pixelclip tracking status prints it)")


def parse_source(text: str) -> ModelSource:
    """Classify a model string (see the module docstring); a clear error for anything else."""
    text = str(text).strip()
    if text.startswith(("models:/", "runs:/")):
        return ModelSource("registry", text)
    if text.startswith("openclip:"):
        name, _, pretrained = text.removeprefix("openclip:").partition(":")
        if not name:
            raise ValueError(f"model {text!r}: expected openclip:<model name>[:<pretrained tag or file>]")
        return ModelSource("openclip", name, pretrained or None)
    if text.endswith(".safetensors"):
        return ModelSource("checkpoint", text)
    raise ValueError(f"model {text!r} is not models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model, "
                     "a .safetensors checkpoint (local or s3://) or openclip:NAME[:TAG]")


def load_segmenter(source: str | ModelSource, *, device: str = "cpu", protocol: str = "whole",
                   mode: str | None = None, templates: str = "ensemble", image_size: int | None = None,
                   opts=None) -> Segmenter:
    """A `Segmenter` for any model source. `mode`: dense readout (`DENSE_MODES`; None: the model's
    own, "maskclip"); `templates`: "ensemble" (the paper's 8) or "single"; `image_size`: the square
    input (default: the PixelCLIP config's, or the open_clip model's native size)."""
    src = parse_source(source) if isinstance(source, str) else source
    if templates not in TEMPLATES:
        raise ValueError(f"templates must be one of {', '.join(TEMPLATES)}, got {templates!r}")
    kw = {"protocol": protocol, "templates": TEMPLATES[templates]}
    if src.kind == "openclip":
        from pixelclip.model.backbone import create_clip

        model, tokenizer = create_clip(src.ref, src.pretrained, device=device)
        model.eval()
        size = image_size or _native_size(model)
        return Segmenter.from_open_clip(model, tokenizer, size, mode=mode or "maskclip", **kw)
    if src.kind == "registry":
        from pipelines.registry import load

        require_tracking(src)
        base = load(src.ref, device=device, protocol=protocol)
        return Segmenter(base.encoder if mode is None else base.encoder.with_mode(mode), base.text,
                         image_size or base.image_size, **kw)
    task = load_task_checkpoint(src.ref, device, opts)
    encoder = task.student if mode is None else task.student.with_mode(mode)
    return Segmenter(encoder, task.text, image_size or task.image_size, **kw)


def _native_size(model) -> int:
    size = getattr(model.visual, "image_size", 224)
    return int(size[0] if isinstance(size, tuple | list) else size)


def load_task_checkpoint(ref: str, device: str = "cpu", opts=None):
    """A PixelCLIP task (eval mode) from a checkpoint, local or s3://."""
    from pixelclip.io import load_pixelclip

    if "://" in ref and not ref.startswith("file://"):
        from pipelines import storage

        with tempfile.TemporaryDirectory() as d:
            local = Path(d) / "checkpoint.safetensors"
            storage.download(ref, local, opts)
            task, _ = load_pixelclip(local, device=device)
    else:
        path = Path(ref.removeprefix("file://"))
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        task, _ = load_pixelclip(path, device=device)
    task.eval()
    return task
