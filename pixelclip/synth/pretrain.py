"""Contrastive pretraining of a small open_clip CLIP on SynthScenes image-caption pairs, on CPU.

    cfg = PretrainConfig(minutes=30)
    pool = load_pool("out/cache", cfg.seed, cfg.size, cfg.pool)
    probe = make_probe(cfg.seed, cfg.size, cfg.eval_scenes, cfg.single_scenes)
    run = pretrain(cfg, pool, probe)         # run.model, run.tokenizer, run.curve, run.evals
    save_checkpoint(run.model, "out/synthclip/pixelclip-synth-vit.safetensors")

open_clip's own parts throughout: `open_clip.create_model(cfg.model)` (the project's model config
`pixelclip-synth-vit`: ViT at 128 px with patch 8), its tokenizer, `open_clip.loss.ClipLoss`, and the
optimiser of open_clip's training code (AdamW, no weight decay on gains, biases and the logit scale;
the logit scale clamped at 100). The learning rate warms up linearly, then follows a cosine to
`min_lr`, whose progress is the larger of steps done / `steps` and time spent / the time left for
training, so that a run cut short by `minutes` still ends annealed. Training may drop patches
(`patch_dropout`, FLIP; off for the last `unmasked_tail` of the run, as FLIP's unmasked tuning) and run
its forward in bfloat16 autocast; evaluation and the saved weights
are float32 computations without either. The checkpoint is the model's state dict in float16 as
.safetensors, loadable by `open_clip.create_model(name, pretrained=path)`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from .pool import CaptionBatches, ScenePool
from .probe import ProbeSet, evaluate_clip

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class PretrainConfig:
    """Settings of a pretraining run (defaults: the run that made pixelclip/assets/pixelclip-synth-vit.*)."""

    model: str = "pixelclip-synth-vit"  # an open_clip model config (the project's, or any)
    seed: int = 0  # model init, pool, batches and probe scenes
    steps: int = 3000  # upper bound: `minutes` usually ends the run first
    minutes: float | None = 30.0  # wall-clock budget of `pretrain`, final evaluation included
    batch: int = 64
    lr: float = 5e-4
    min_lr: float = 1e-5  # the end of the cosine
    warmup: int = 100  # steps
    weight_decay: float = 0.1
    beta2: float = 0.98
    pool: int = 16384  # distinct training scenes, drawn once and cached
    size: int = 128  # scene side, px: the model's input
    crop_scale: float = 0.85  # random square crops of at least this fraction of the side
    patch_dropout: float = 0.5  # fraction of patch tokens dropped in training (0: none)
    unmasked_tail: float = 0.1  # the last fraction of the run trains on all tokens (FLIP's unmasked tuning)
    precision: str = "bf16"  # forward autocast in training: "bf16" or "fp32"
    threads: int = 2  # torch intra-op threads
    log_every: int = 25  # steps per point of the loss curve
    eval_every: int = 150  # steps between evaluations (0: only at the end)
    eval_scenes: int = 64  # labelled held-out scenes for dense mIoU
    single_scenes: int = 144  # single-object scenes for zero-shot classification

    def __post_init__(self):
        positive = ("steps", "batch", "pool", "threads", "log_every", "eval_scenes", "single_scenes")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"PretrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup", "eval_every", "weight_decay", "min_lr"):
            if getattr(self, name) < 0:
                raise ValueError(f"PretrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0 or self.min_lr > self.lr:
            raise ValueError(f"PretrainConfig.lr must be > 0 and >= min_lr, got lr={self.lr}, min_lr={self.min_lr}")
        if self.minutes is not None and self.minutes <= 0:
            raise ValueError(f"PretrainConfig.minutes must be > 0 or None, got {self.minutes}")
        if self.batch > self.pool:
            raise ValueError(f"PretrainConfig.batch ({self.batch}) must not exceed pool ({self.pool})")
        if self.size < 32:
            raise ValueError(f"PretrainConfig.size must be >= 32, got {self.size}")
        if not 0 < self.crop_scale <= 1:
            raise ValueError(f"PretrainConfig.crop_scale must be in (0, 1], got {self.crop_scale}")
        if not 0 <= self.unmasked_tail <= 1:
            raise ValueError(f"PretrainConfig.unmasked_tail must be in [0, 1], got {self.unmasked_tail}")
        if not 0 <= self.patch_dropout < 1:
            raise ValueError(f"PretrainConfig.patch_dropout must be in [0, 1), got {self.patch_dropout}")
        if not 0 < self.beta2 < 1:
            raise ValueError(f"PretrainConfig.beta2 must be in (0, 1), got {self.beta2}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"PretrainConfig.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    @classmethod
    def from_dict(cls, d: dict) -> PretrainConfig:
        """From a plain dict (e.g. the "config" of train.json); an unknown key is an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"PretrainConfig: unknown fields {unknown}; known: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PretrainRun:
    """What `pretrain` returns: the trained model (train mode off) and its tokenizer, the loss curve
    (one point per `log_every` steps), the evaluations, and how the run ended."""

    model: torch.nn.Module
    tokenizer: object
    curve: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    steps: int = 0
    stopped: str = "steps"  # "steps" or "time"
    unmasked_from: int | None = None  # the step from which patch dropout was off
    seconds: float = 0.0


def build_model(name: str, patch_dropout: float = 0.0):
    """(model, tokenizer): a randomly initialised open_clip model of the project's configs."""
    import open_clip

    from ..model.backbone import register_model_configs

    register_model_configs()
    model = open_clip.create_model(name, force_patch_dropout=patch_dropout or None)
    return model, open_clip.get_tokenizer(name)


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, beta2: float) -> torch.optim.AdamW:
    """AdamW as open_clip's training: no decay on 1-d parameters (gains, biases) and the logit scale."""
    def exclude(n: str, p: torch.Tensor) -> bool:
        return p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if exclude(n, p)], "weight_decay": 0.0},
              {"params": [p for n, p in named if not exclude(n, p)], "weight_decay": weight_decay}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, beta2), eps=1e-6)


def lr_at(step: int, progress: float, lr: float, min_lr: float, warmup: int) -> float:
    """Linear warmup over `warmup` steps, then a cosine from lr to min_lr over progress in [0, 1]."""
    if step < warmup:
        return lr * (step + 1) / warmup
    p = min(max(progress, 0.0), 1.0)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * p))


def train_step(model, loss_fn, opt, images: torch.Tensor, tokens: torch.Tensor, autocast: torch.dtype | None) -> float:
    """One contrastive step on images [B, 3, S, S] (normalised) and tokens [B, T]. Returns the loss."""
    model.train()
    with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        img, txt, scale = model(images, tokens)[:3]  # [B, D], [B, D] (normalised), scalar
    loss = loss_fn(img.float(), txt.float(), scale.float())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(100))  # as open_clip's training
    return float(loss.detach())


def _unmask(model) -> bool:
    """Turn the image tower's patch dropout off; True if it was on."""
    pd = getattr(model.visual, "patch_dropout", None)
    if getattr(pd, "prob", 0.0) > 0:
        pd.prob = 0.0  # open_clip's PatchDropout is the identity at prob 0
        return True
    return False


def _normaliser(model) -> Callable[[torch.Tensor], torch.Tensor]:
    from ..model.backbone import preprocess_stats

    mean, std = preprocess_stats(model)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    return lambda x: (x - m) / s


def _evaluate(run: PretrainRun, probe: ProbeSet | None, step: int, t0: float, log) -> float:
    """Evaluate the current model on `probe` and record it. Returns the seconds it took."""
    if probe is None:
        return 0.0
    t = time.perf_counter()
    scores = evaluate_clip(run.model, run.tokenizer, probe)
    took = time.perf_counter() - t
    run.evals.append({"step": step, "elapsed_s": round(time.perf_counter() - t0, 1), "eval_s": round(took, 1),
                      **scores})
    d = scores["dense"]
    log(f"eval step {step}: cls things {scores['cls_things']:.1f}% stuff {scores['cls_stuff']:.1f}% | "
        + " | ".join(f"{m} mIoU {v['miou']:.1f} (stuff {v['stuff']:.1f}, things {v['things']:.1f})"
                     for m, v in d.items()))
    return took


def pretrain(cfg: PretrainConfig, pool: ScenePool, probe: ProbeSet | None = None, log: Callable = print,
             start: float | None = None) -> PretrainRun:
    """Train `cfg.model` from scratch on `pool` for `cfg.steps` steps or until `cfg.minutes` have
    passed since `start` (default: now), leaving time for the final evaluation on `probe` (none: no
    evaluation). Evaluates before the first step, every `cfg.eval_every` steps and at the end (only
    at the end when `cfg.eval_every` is 0). Uses `cfg.threads` torch threads (restored after)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _pretrain(cfg, pool, probe, log, time.perf_counter() if start is None else start)
    finally:
        torch.set_num_threads(threads)


def _pretrain(cfg: PretrainConfig, pool: ScenePool, probe: ProbeSet | None, log: Callable, t0: float) -> PretrainRun:
    import open_clip

    deadline = None if cfg.minutes is None else t0 + 60.0 * cfg.minutes
    torch.manual_seed(cfg.seed)
    model, tokenizer = build_model(cfg.model, cfg.patch_dropout)
    run = PretrainRun(model, tokenizer)
    opt = make_optimizer(model, cfg.lr, cfg.weight_decay, cfg.beta2)
    loss_fn = open_clip.loss.ClipLoss()
    batches = CaptionBatches(pool, cfg.batch, cfg.crop_scale, cfg.seed)
    normalise, autocast = _normaliser(model), PRECISIONS[cfg.precision]
    reserve = _evaluate(run, probe, 0, t0, log) if cfg.eval_every else 0.0  # the untrained model: chance level
    loop_t0, losses = time.perf_counter(), []
    for step in range(cfg.steps):
        now = time.perf_counter()
        if deadline is not None and now + 1.2 * reserve + 5.0 >= deadline:
            run.stopped = "time"
            break
        left = (deadline - 1.2 * reserve - 5.0 - loop_t0) if deadline is not None else math.inf
        progress = max(step / cfg.steps, (now - loop_t0) / max(left, 1e-9))
        lr = lr_at(step, progress, cfg.lr, cfg.min_lr, cfg.warmup)
        if progress >= 1 - cfg.unmasked_tail and _unmask(model):
            run.unmasked_from = step
            log(f"step {step}: patch dropout off for the rest of the run")
        for g in opt.param_groups:
            g["lr"] = lr
        images, captions = batches.sample()
        losses.append(train_step(model, loss_fn, opt, normalise(images), tokenizer(captions), autocast))
        run.steps = step + 1
        if run.steps % cfg.log_every == 0:
            point = {"step": run.steps, "loss": round(sum(losses) / len(losses), 4), "lr": lr,
                     "logit_scale": round(float(model.logit_scale.detach().exp()), 2),
                     "elapsed_s": round(time.perf_counter() - t0, 1)}
            run.curve.append(point)
            losses = []
            log(f"step {point['step']}: loss {point['loss']:.3f} lr {lr:.2e} scale {point['logit_scale']:.1f} "
                f"({point['elapsed_s']:.0f} s)")
        if cfg.eval_every and run.steps % cfg.eval_every == 0 and run.steps < cfg.steps:
            reserve = max(reserve, _evaluate(run, probe, run.steps, t0, log))
    model.eval()
    if not run.evals or run.evals[-1]["step"] != run.steps:
        _evaluate(run, probe, run.steps, t0, log)
    run.seconds = time.perf_counter() - t0
    return run


def save_checkpoint(model: torch.nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write the model's state dict as float16 .safetensors (what `open_clip.create_model(name,
    pretrained=path)` loads; it casts back to the model's dtype). Returns the path."""
    from safetensors.torch import save_file

    state = {k: (v.half() if v.is_floating_point() else v).contiguous().clone()
             for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"format": "pt", **(metadata or {})})
    return path
