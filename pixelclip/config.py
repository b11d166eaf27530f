"""Typed configuration: dataclasses, YAML files, dotted overrides and the presets.

    cfg = load_config("vit_b16", overrides=["prompts.num_clusters=128", "optim.steps=2000"])
    cfg = load_config("my_run.yaml")

Every value is checked when the dataclass is built; a bad value raises `ConfigError` naming the
dotted field (`optim.lr_clip must be > 0, got -1.0`). Defaults follow the paper and, where the
paper is silent or differs, the authors' released code (noted next to the field).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pixelclip.typed import ConfigError, build, check, merge_dicts, parse_override


@dataclass
class BackboneConfig:
    # open_clip model name, e.g. "ViT-B-16-quickgelu", "convnext_base_w_320", or a project config
    # "pixelclip-tiny-vit". The activation must be the weights': OpenAI's were trained with QuickGELU, so
    # their ViT-B/16 is "ViT-B-16-quickgelu" (given "ViT-B-16" with a tag that needs QuickGELU, the builder
    # switches to the -quickgelu twin and says so; for a local weights file the name decides).
    name: str = "ViT-B-16-quickgelu"
    # open_clip pretrained tag ("openai"), a local file path, or None for random initialisation.
    pretrained: str | None = "openai"
    # Square input resolution of the dense encoder (ViT-B/16: 320 -> 20x20 grid).
    image_size: int = 320
    # Regular expressions over `visual.*` parameter names that train. Empty: the architecture's default
    # (ViT: attention weights and positional embedding; ConvNeXt: the whole tower).
    trainable: list[str] = field(default_factory=list)

    def validate(self, p: str) -> None:
        check(bool(self.name), f"{p}.name", "must be a non-empty open_clip model name", self.name)
        check(self.image_size >= 16, f"{p}.image_size", "must be >= 16", self.image_size)


@dataclass
class PromptConfig:
    num_clusters: int = 64  # K, the number of learnable classes
    length: int = 4  # l, tokens per learnable class
    template: str = "A photo of a {} in the scene."
    seed: int = 0  # seed of the random-token initialisation
    # Initial token ids drawn from the tokens of these words only; empty: the whole vocabulary (the
    # authors'). For a CLIP trained on few words (the SynthScenes CLIP), whose other embeddings never trained.
    init_words: list[str] = field(default_factory=list)

    def validate(self, p: str) -> None:
        check(self.num_clusters >= 2, f"{p}.num_clusters", "must be >= 2", self.num_clusters)
        check(all(w.strip() for w in self.init_words), f"{p}.init_words", "must hold non-empty words",
               self.init_words)
        check(self.length >= 1, f"{p}.length", "must be >= 1", self.length)
        check(self.template.count("{}") == 1, f"{p}.template", "must contain exactly one '{}'",
               self.template)


CLUSTER_MODES = ("prompts", "centroids", "names", "none")


@dataclass
class ClusterConfig:
    epsilon: float = 0.01  # entropy weight of eq. 3: 0.01 for ViT, 1.0 for ConvNeXt
    sinkhorn_iters: int = 3
    # What the masks are grouped onto (the paper's Table 3a/3d ablations; "prompts" is the method):
    #   prompts    learnable class prompts through the frozen text encoder, Sinkhorn assignment;
    #   centroids  K learnable vectors in CLIP's joint space, no text encoder ("w/o CLIP text encoder");
    #   names      the fixed `class_names` through the text encoder, argmax assignment, no Sinkhorn
    #              ("w/o class prompts", Table 3d); K is the number of names;
    #   none       no clustering: each mask is its own target, predicted from its own pooled feature
    #              ("w/o semantic clustering").
    # The fourth ablation of Table 3a, "w/o momentum encoder", is momentum.gamma=0.
    mode: str = "prompts"
    class_names: list[str] = field(default_factory=list)  # mode "names" only
    # Where the Sinkhorn plan starts: "softmax" (the authors': each mask's softmax over the K clusters,
    # so every mask enters with mass 1) or "exp" (SwAV's exp(logits - max), which lets confident masks
    # weigh more in the first cluster balancing). The paper does not say.
    sinkhorn_start: str = "softmax"

    def validate(self, p: str) -> None:
        check(self.epsilon > 0, f"{p}.epsilon", "must be > 0", self.epsilon)
        check(self.sinkhorn_iters >= 1, f"{p}.sinkhorn_iters", "must be >= 1", self.sinkhorn_iters)
        check(self.sinkhorn_start in ("softmax", "exp"), f"{p}.sinkhorn_start", "must be softmax or exp",
               self.sinkhorn_start)
        check(self.mode in CLUSTER_MODES, f"{p}.mode", f"must be one of {', '.join(CLUSTER_MODES)}", self.mode)
        if self.mode == "names":
            check(len(self.class_names) >= 2 and all(n.strip() for n in self.class_names), f"{p}.class_names",
                   "must hold at least 2 non-empty names when cluster.mode is 'names'", self.class_names)
        else:
            check(not self.class_names, f"{p}.class_names", "is only used with cluster.mode 'names'",
                   self.class_names)


@dataclass
class MomentumConfig:
    gamma: float = 0.999  # teacher <- gamma * teacher + (1 - gamma) * student, every step
    # The teacher's module mode while training: "train" (the authors': ConvNeXt's stochastic depth, 0.1
    # in convnext_base_w_320, stays active in the teacher; no effect on CLIP ViTs, which have no dropout)
    # or "eval" (a deterministic teacher).
    teacher_mode: str = "train"

    def validate(self, p: str) -> None:
        check(0.0 <= self.gamma <= 1.0, f"{p}.gamma", "must be in [0, 1]", self.gamma)
        check(self.teacher_mode in ("train", "eval"), f"{p}.teacher_mode", "must be train or eval",
               self.teacher_mode)


@dataclass
class DecoderConfig:
    hidden: int = 64  # channels after the input conv and the first upsampling
    mid: int = 32  # channels after the second upsampling
    # GroupNorm groups of both double convs; 0: 16 channels a group in each (the authors': 4 groups at 64
    # channels, 2 at 32)
    groups: int = 0

    def validate(self, p: str) -> None:
        for n in ("hidden", "mid"):
            check(getattr(self, n) >= 1, f"{p}.{n}", "must be >= 1", getattr(self, n))
        check(self.groups >= 0, f"{p}.groups", "must be >= 0 (0: 16 channels a group)", self.groups)
        size = 16 if self.groups == 0 else None
        ok = (self.hidden % 16 == 0 and self.mid % 16 == 0) if size else \
            (self.hidden % self.groups == 0 and self.mid % self.groups == 0)
        check(ok, f"{p}.groups", "must divide decoder.hidden and decoder.mid (groups 0: both multiples of 16)",
               self.groups)

    def block_groups(self) -> tuple[int, int]:
        """GroupNorm groups of the hidden and the mid double conv."""
        return (self.hidden // 16, self.mid // 16) if self.groups == 0 else (self.groups, self.groups)


@dataclass
class DataConfig:
    mask_size: int = 256  # resolution of masks, merged targets and decoder output
    resize_short: int = 1024  # short side before the random crop
    crop: int = 640  # random square crop, then resized to backbone.image_size
    flip_p: float = 0.5
    ssd_jitter: bool = True  # SSD-style photometric distortion, shared by both views
    # Student (strong) view only:
    jitter: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5, 0.25])  # b, c, s, hue
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 2.0])
    cutout_p: float = 1.0
    cutout_scale: list[float] = field(default_factory=lambda: [0.1, 0.5])  # box side / image side

    def validate(self, p: str) -> None:
        check(self.mask_size >= 8, f"{p}.mask_size", "must be >= 8", self.mask_size)
        check(self.crop >= 8, f"{p}.crop", "must be >= 8", self.crop)
        check(self.resize_short >= self.crop, f"{p}.resize_short", "must be >= data.crop",
               self.resize_short)
        for n in ("flip_p", "jitter_p", "gray_p", "blur_p", "cutout_p"):
            check(0.0 <= getattr(self, n) <= 1.0, f"{p}.{n}", "must be in [0, 1]", getattr(self, n))
        check(len(self.jitter) == 4 and all(v >= 0 for v in self.jitter), f"{p}.jitter",
               "must be 4 non-negative numbers (brightness, contrast, saturation, hue)", self.jitter)
        check(len(self.blur_sigma) == 2 and 0 < self.blur_sigma[0] <= self.blur_sigma[1],
               f"{p}.blur_sigma", "must be [low, high] with 0 < low <= high", self.blur_sigma)
        lo_hi = self.cutout_scale
        check(len(lo_hi) == 2 and 0 < lo_hi[0] <= lo_hi[1] <= 1, f"{p}.cutout_scale",
               "must be [low, high] with 0 < low <= high <= 1", lo_hi)


@dataclass
class OptimConfig:
    lr_decoder: float = 2e-4
    lr_clip: float = 2e-6
    lr_prompts: float = 2e-3  # the paper says 2e-5; the authors' code uses 2e-3
    weight_decay: float = 1e-4  # 0 for norm layers and embeddings (positional, class, prompt tokens)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    grad_clip: float = 0.01  # max global gradient norm over all trained parameters; 0 disables
    steps: int = 10_000
    batch_size: int = 48  # global batch, over all workers
    final_lr_ratio: float = 0.5  # cosine from the base rate to base * ratio
    # Linear warm-up of the CLIP image tower's rate over the first N steps (decoder and prompts start at
    # their full rate: they are new and must fit first). 0: none, as the authors.
    warmup_steps: int = 0

    def validate(self, p: str) -> None:
        for n in ("lr_decoder", "lr_clip", "lr_prompts"):
            check(getattr(self, n) > 0, f"{p}.{n}", "must be > 0", getattr(self, n))
        check(self.weight_decay >= 0, f"{p}.weight_decay", "must be >= 0", self.weight_decay)
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"{p}.betas",
               "must be two numbers in [0, 1)", self.betas)
        check(self.grad_clip >= 0, f"{p}.grad_clip", "must be >= 0", self.grad_clip)
        check(self.steps >= 1, f"{p}.steps", "must be >= 1", self.steps)
        check(self.batch_size >= 1, f"{p}.batch_size", "must be >= 1", self.batch_size)
        check(0 <= self.final_lr_ratio <= 1, f"{p}.final_lr_ratio", "must be in [0, 1]",
               self.final_lr_ratio)
        check(0 <= self.warmup_steps < self.steps, f"{p}.warmup_steps", "must be in [0, optim.steps)",
               self.warmup_steps)


@dataclass
class Config:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    momentum: MomentumConfig = field(default_factory=MomentumConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0

    def validate(self, prefix: str = "") -> Config:
        """Every section checked; errors name the field (`prefix` in front: `train.model.`)."""
        for f in dataclasses.fields(self):
            sub = getattr(self, f.name)
            if dataclasses.is_dataclass(sub):
                sub.validate(f"{prefix}{f.name}")
        return self

    @classmethod
    def from_mapping(cls, value: str | dict, name: str = "model") -> Config:
        """A job's `model`: a preset name or YAML file, or a mapping of fields, optionally with a
        `preset` (name or file) underneath them."""
        if isinstance(value, str):
            value = {"preset": value}
        check(isinstance(value, dict), name, "must be a preset name or a mapping", value)
        data = dict(value)
        base = load_config(data.pop("preset")).to_dict() if "preset" in data else {}
        return build(cls, merge_dicts(base, data), name).validate(f"{name}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def num_classes(self) -> int:
        """K: the classes the masks are grouped onto (`prompts.num_clusters`, or the fixed names)."""
        return len(self.cluster.class_names) if self.cluster.mode == "names" else self.prompts.num_clusters

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ----------------------------------------------------------------------------------------------
# Presets. `vit_b16` and `convnext_b` are the paper's two recipes; `tiny*` are random-initialised
# small open_clip configurations shipped with the project (pixelclip/model_configs) for CPU runs.

def _preset_vit_b16() -> dict:
    return {"backbone": {"name": "ViT-B-16-quickgelu", "pretrained": "openai", "image_size": 320},
            "cluster": {"epsilon": 0.01}}


def _preset_convnext_b() -> dict:
    return {"backbone": {"name": "convnext_base_w_320", "pretrained": "laion_aesthetic_s13b_b82k",
                         "image_size": 640},
            "cluster": {"epsilon": 1.0}}


def _tiny_common() -> dict:
    return {"prompts": {"num_clusters": 8, "length": 4},
            "decoder": {"hidden": 16, "mid": 8, "groups": 4},
            "data": {"mask_size": 64, "resize_short": 80, "crop": 64},
            "optim": {"steps": 30, "batch_size": 4, "lr_clip": 1e-4, "lr_decoder": 3e-3,
                      "grad_clip": 1.0}}


def _preset_tiny() -> dict:
    d = _tiny_common()
    d["backbone"] = {"name": "pixelclip-tiny-vit", "pretrained": None, "image_size": 64}
    d["cluster"] = {"epsilon": 0.05}
    return d


def _preset_tiny_convnext() -> dict:
    d = _tiny_common()
    d["backbone"] = {"name": "pixelclip-tiny-convnext", "pretrained": None, "image_size": 128}
    d["cluster"] = {"epsilon": 1.0}
    d["data"] = {"mask_size": 64, "resize_short": 144, "crop": 128}
    return d


# The project's own small CLIP, pretrained on SynthScenes image-caption pairs (pipelines.synth.pretrain).
SYNTH_CHECKPOINT = Path(__file__).resolve().parent / "assets" / "pixelclip-synth-vit.safetensors"


def _preset_synth() -> dict:
    """PixelCLIP on SynthScenes (128 px scenes, patch 8), from the project's SynthScenes CLIP."""
    return {"backbone": {"name": "pixelclip-synth-vit", "pretrained": str(SYNTH_CHECKPOINT), "image_size": 128},
            "prompts": {"num_clusters": 24, "length": 4},
            "decoder": {"hidden": 32, "mid": 16, "groups": 4},
            "cluster": {"epsilon": 0.05},
            "data": {"mask_size": 64, "resize_short": 144, "crop": 128},
            "optim": {"steps": 200, "batch_size": 16, "grad_clip": 1.0}}


PRESETS = {
    "vit_b16": _preset_vit_b16,
    "convnext_b": _preset_convnext_b,
    "tiny": _preset_tiny,
    "tiny_convnext": _preset_tiny_convnext,
    "synth": _preset_synth,
}


def config_from_dict(data: dict) -> Config:
    """A validated `Config` from a (possibly partial) nested dict."""
    return build(Config, data).validate()


def load_config(source: str | Path | dict | None = None, overrides: list[str] | None = None) -> Config:
    """A validated `Config` from a preset name, a YAML file, or a dict, then dotted overrides."""
    if source is None:
        data: dict = {}
    elif isinstance(source, dict):
        data = source
    elif str(source) in PRESETS:
        data = PRESETS[str(source)]()
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"config {source!r} is neither a preset ({', '.join(PRESETS)}) nor a file")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        if "preset" in data:
            preset = data.pop("preset")
            if preset not in PRESETS:
                raise ConfigError(f"preset {preset!r} in {path} is not one of {', '.join(PRESETS)}")
            data = merge_dicts(PRESETS[preset](), data)
    for item in overrides or []:
        data = merge_dicts(data, parse_override(item))
    return config_from_dict(data)
