"""Checkpoints in safetensors, and export of the fine-tuned CLIP that open_clip loads as is.

A checkpoint is one `.safetensors` file, self-contained:
    clip.*        the open_clip model with the student image tower (text tower frozen, as loaded)
    teacher.*     the momentum image tower
    prompts.*     the learnable classes: prompts.tokens (cluster.mode "prompts") or prompts.centroids
                  ("centroids"); nothing for "names" (rebuilt from the config) and "none"
    decoder.*
    optim.<i>.<k> AdamW state tensors;  sched/optim hyper-parameters, step, config: JSON metadata
Loading never unpickles anything: safetensors holds tensors, the metadata holds JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .task import PixelCLIP

FORMAT = "pixelclip-checkpoint-v1"


def _module_tensors(task: PixelCLIP) -> dict[str, torch.Tensor]:
    out = {}
    for prefix, module in (("clip", task.clip), ("teacher", task.teacher.visual), ("decoder", task.decoder)):
        for k, v in module.state_dict().items():
            out[f"{prefix}.{k}"] = v
    if task.prompts is not None:
        for k, v in task.prompts.state_dict().items():
            out[f"prompts.{k}"] = v
    return out


def _optim_split(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for k, v in state.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{idx}.{k}"] = v
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _json_safe(d: dict) -> dict:
    return {k: v for k, v in d.items() if isinstance(v, int | float | str | bool | list | type(None))}


def save_checkpoint(path: str | Path, task: PixelCLIP, optimizer=None, scheduler=None, step: int = 0,
                    config: dict | None = None, extra: dict | None = None) -> Path:
    """Write a self-contained checkpoint to `path` (a local file; the pipelines upload it)."""
    path = Path(path)
    tensors = {k: v.detach().contiguous().cpu() for k, v in _module_tensors(task).items()}
    meta: dict[str, Any] = {"format": FORMAT, "step": int(step), "config": _built_config(task, config),
                            "extra": extra or {}}
    if optimizer is not None:
        opt_tensors, meta["optimizer"] = _optim_split(optimizer)
        tensors.update({k: v.detach().contiguous().cpu() for k, v in opt_tensors.items()})
    if scheduler is not None:
        meta["scheduler"] = _json_safe(scheduler.state_dict())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata={"pixelclip": json.dumps(meta)})
    tmp.replace(path)  # atomic: a crash never leaves a half-written checkpoint under the final name
    return path


def _built_config(task: PixelCLIP, config: dict | None) -> dict:
    """`config` with `backbone.name` set to the configuration the task was built as (`ViT-B-16` with
    OpenAI's weights is built as `ViT-B-16-quickgelu`): a checkpoint rebuilds without its pretrained
    tag, so the name alone must give the right activation."""
    config = dict(config or {})
    if task.model_name and isinstance(config.get("backbone"), dict):
        config["backbone"] = {**config["backbone"], "name": task.model_name}
    return config


def _parse_meta(f, path) -> dict:
    raw = (f.metadata() or {}).get("pixelclip")
    if raw is None:
        raise ValueError(f"{path} is not a PixelCLIP checkpoint (no 'pixelclip' metadata)")
    meta = json.loads(raw)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown checkpoint format {meta.get('format')!r}, expected {FORMAT}")
    return meta


def read_metadata(path: str | Path) -> dict:
    """The JSON metadata of a checkpoint (step, config, ...) without reading its tensors."""
    with safe_open(str(path), framework="pt", device="cpu") as f:
        return _parse_meta(f, path)


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) of a checkpoint, on the CPU."""
    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = _parse_meta(f, path)
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    return tensors, meta


def _load_prefixed(module: torch.nn.Module, tensors: dict, prefix: str, path) -> None:
    sd = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    missing, unexpected = module.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: {prefix} does not match the model (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}); was it written for another configuration?")


def _load_classes(task: PixelCLIP, tensors: dict, path) -> None:
    """The learnable classes (`prompts.*`), with shape errors that name the config fields."""
    own = task.prompts.state_dict() if task.prompts is not None else {}
    stored = {k[len("prompts."):]: v for k, v in tensors.items() if k.startswith("prompts.")}
    if set(own) != set(stored):
        raise ValueError(f"{path}: holds learnable classes {sorted(stored) or 'none'}, the model has "
                         f"{sorted(own) or 'none'}: was it trained with another cluster.mode?")
    for k, v in stored.items():
        if v.shape != own[k].shape:
            raise ValueError(f"{path}: prompts.{k} is {tuple(v.shape)}, the model has {tuple(own[k].shape)} "
                             "(prompts.num_clusters / prompts.length)")
    if own:
        task.prompts.load_state_dict(stored)


def load_checkpoint(path: str | Path, task: PixelCLIP, optimizer=None, scheduler=None) -> dict:
    """Restore `task` (and optimiser / scheduler when given) from `path`. Returns the metadata."""
    tensors, meta = read_checkpoint(path)
    _load_prefixed(task.clip, tensors, "clip", path)
    _load_prefixed(task.teacher.visual, tensors, "teacher", path)
    _load_prefixed(task.decoder, tensors, "decoder", path)
    _load_classes(task, tensors, path)
    if optimizer is not None:
        if "optimizer" not in meta:
            raise ValueError(f"{path} holds no optimiser state")
        o = meta["optimizer"]
        state: dict = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, idx, name = k.split(".", 2)
                state.setdefault(int(idx), {})[name] = v
        for k, v in o["scalars"].items():
            idx, name = k.split(".", 1)
            state.setdefault(int(idx), {})[name] = v
        groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in o["param_groups"]]
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    if scheduler is not None and "scheduler" in meta:
        scheduler.load_state_dict({**scheduler.state_dict(), **meta["scheduler"]})
    return meta


def export_open_clip(task: PixelCLIP, path: str | Path) -> Path:
    """Save the fine-tuned CLIP (student image tower + frozen text tower) as an open_clip state
    dict in safetensors. Load it with `open_clip.create_model(task.model_name, pretrained=str(path))`;
    the name (the configuration the task was built as, e.g. `ViT-B-16-quickgelu` for OpenAI's weights,
    so the activation is right) is also in the file's metadata under "open_clip_model".

    If `path` is a directory, it also gets `open_clip_config.json`, so that
    `open_clip.create_model("local-dir:" + str(path))` works without knowing the model name.
    """
    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in task.clip.state_dict().items()}
    if path.suffix != ".safetensors":
        path.mkdir(parents=True, exist_ok=True)
        name = getattr(task, "model_name", None)
        if name:
            import open_clip

            cfg = open_clip.get_model_config(name)
            pp = getattr(task.clip.visual, "preprocess_cfg", {}) or {}
            (path / "open_clip_config.json").write_text(
                json.dumps({"model_cfg": cfg, "preprocess_cfg": pp}, indent=2))
        path = path / "open_clip_model.safetensors"
    save_file(state, str(path), metadata={"open_clip_model": task.model_name} if task.model_name else None)
    return path


def load_pixelclip(path: str | Path, device: str | torch.device = "cpu") -> tuple[PixelCLIP, dict]:
    """Rebuild the model a checkpoint was written from (its stored config, no pretrained download:
    the weights come from the checkpoint) and load it. Returns (task, metadata)."""
    from .build import build_pixelclip
    from .config import config_from_dict

    meta = read_metadata(path)
    if not meta.get("config"):
        raise ValueError(f"{path} stores no config; build the model yourself and call load_checkpoint")
    cfg = config_from_dict(meta["config"])
    cfg.backbone.pretrained = None
    task = build_pixelclip(cfg, device=device, weights_follow=True)
    load_checkpoint(path, task)
    return task, meta
