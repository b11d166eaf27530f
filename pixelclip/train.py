"""Optimisation around `PixelCLIP`: parameter groups, cosine schedule, EMA, clipping, the step loop.

    task = build_pixelclip(cfg); trainer = Trainer(task, cfg)
    for batch in batches: metrics = trainer.step(**batch)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import nn

from .config import Config
from .model.momentum import ema_update
from .task import PixelCLIP

_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.LocalResponseNorm)
_EMBED_NAMES = ("positional_embedding", "class_embedding")


def _no_decay_names(module: nn.Module) -> set[str]:
    """Names of parameters without weight decay: norm layers, embeddings."""
    out = set()
    for mname, m in module.named_modules():
        is_norm = isinstance(m, _NORMS) or type(m).__name__.lower().startswith(("layernorm", "rmsnorm"))
        for pname, _ in m.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            if is_norm or isinstance(m, nn.Embedding) or pname in _EMBED_NAMES:
                out.add(full)
    return out


def param_groups(task: PixelCLIP, cfg: Config) -> list[dict]:
    """AdamW groups: CLIP image tower, prompt tokens and decoder at their own rates; weight decay
    0 for norms and embeddings (the prompt tokens are embeddings)."""
    o = cfg.optim
    groups = []
    for tag, module, lr in (("clip", task.student.visual, o.lr_clip), ("decoder", task.decoder, o.lr_decoder)):
        no_wd = _no_decay_names(module)
        decay = [p for n, p in module.named_parameters() if p.requires_grad and n not in no_wd]
        plain = [p for n, p in module.named_parameters() if p.requires_grad and n in no_wd]
        groups.append({"name": f"{tag}", "params": decay, "lr": lr, "weight_decay": o.weight_decay})
        groups.append({"name": f"{tag}_no_wd", "params": plain, "lr": lr, "weight_decay": 0.0})
    learnable = [p for p in task.prompts.parameters() if p.requires_grad] if task.prompts is not None else []
    groups.append({"name": "prompts", "params": learnable, "lr": o.lr_prompts, "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


def cosine_factor(step: int, total: int, final_ratio: float) -> float:
    """1 at step 0, `final_ratio` at step `total`, cosine in between (no warm-up)."""
    t = min(max(step, 0), total) / max(total, 1)
    return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def warmup_factor(step: int, warmup: int) -> float:
    """Linear from 1/warmup at step 0 to 1 at step `warmup - 1` and after; 1 when warmup is 0."""
    return 1.0 if warmup <= 0 else min(1.0, (step + 1) / warmup)


def build_optimizer(task: PixelCLIP, cfg: Config):
    """(AdamW, LambdaLR schedule) for `task` under `cfg.optim`: cosine for every group, times the
    linear warm-up (`optim.warmup_steps`) for the CLIP image tower's groups."""
    o = cfg.optim
    opt = torch.optim.AdamW(param_groups(task, cfg), betas=tuple(o.betas))

    def factor(warm: bool):
        return lambda s: cosine_factor(s, o.steps, o.final_lr_ratio) * (warmup_factor(s, o.warmup_steps) if warm else 1)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, [factor(g["name"].startswith("clip")) for g in opt.param_groups])
    return opt, sched


class Trainer:
    """One optimisation step at a time: EMA update, forward, backward, clipping, AdamW, schedule.

    A step whose loss or gradient norm is not finite is skipped (no update) and counted.
    `forward` defaults to the task itself; pass a DDP-wrapped task to train data-parallel, with
    `all_ok` reducing the "loss is finite" flag over the workers so that all skip the same step
    (the gradient norm is computed from all-reduced gradients, so it agrees by itself).
    """

    def __init__(self, task: PixelCLIP, cfg: Config, forward: Callable | None = None,
                 autocast_dtype: torch.dtype | None = None, all_ok: Callable[[bool], bool] | None = None):
        self.task = task
        self.forward = forward or task
        self.gamma = cfg.momentum.gamma
        self.grad_clip = cfg.optim.grad_clip
        self.optimizer, self.scheduler = build_optimizer(task, cfg)
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.autocast_dtype = autocast_dtype
        self.all_ok = all_ok or (lambda ok: ok)  # data-parallel: every worker must agree to skip
        self.step_count = 0
        self.skipped = 0

    def step(self, weak, strong, masks, keep=None) -> dict[str, float]:
        t0 = time.perf_counter()
        self.task.train()
        ema_update(self.task.teacher.visual, self.task.student.visual, self.gamma)  # before its forward
        device_type = weak.device.type
        with torch.autocast(device_type, dtype=self.autocast_dtype or torch.bfloat16,
                            enabled=self.autocast_dtype is not None):
            out = self.forward(weak, strong, masks, keep)
        self.optimizer.zero_grad(set_to_none=True)
        metrics = dict(out.metrics)
        if not self.all_ok(bool(torch.isfinite(out.loss))):
            return self._skip(metrics, "loss")
        out.loss.backward()
        if self.grad_clip > 0:
            gnorm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        else:
            gnorm = torch.linalg.vector_norm(
                torch.stack([p.grad.norm() for p in self.params if p.grad is not None]))
        if not torch.isfinite(gnorm):
            self.optimizer.zero_grad(set_to_none=True)
            return self._skip(metrics, "grad")
        self.optimizer.step()
        self.scheduler.step()
        self.step_count += 1
        metrics.update(loss=float(out.loss.detach()), grad_norm=float(gnorm), skipped=0.0,
                       step_time_s=time.perf_counter() - t0)
        for g in self.optimizer.param_groups:
            metrics[f"lr/{g['name']}"] = g["lr"]
        return metrics

    def _skip(self, metrics: dict, why: str) -> dict[str, float]:
        self.skipped += 1
        metrics.update(loss=float("nan"), skipped=1.0, skipped_total=float(self.skipped))
        metrics[f"skipped_{why}"] = 1.0
        return metrics
