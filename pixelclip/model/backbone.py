"""Dense features [B, D, h, w] from open_clip image towers, without patching them.

`DenseEncoder` reads the submodules of an open_clip visual tower and runs its own forward:
- ViT (`open_clip.transformer.VisionTransformer`): positional embeddings resized bicubically to
  the input's grid; all blocks but the last run as they are; the last block follows `mode` (see
  `vit_readout`; default "maskclip", the paper's: every token's attention output is the value path
  `out_proj(v(ln_1(x)))`, the residual is the input CLS token broadcast to every position, the MLP
  is kept); then `ln_post` and the projection on every token, CLS dropped.
- ConvNeXt through timm (`open_clip.timm_model.TimmModel`): the trunk's features, the head's norm
  with no global pooling, then the projection applied at each location ("plain"; "maskclip" is
  the same readout for ConvNeXt).
Images enter in [0, 1]; the encoder normalises them with the model's mean and std.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .vit_readout import READOUTS

DENSE_MODES = ("plain", "maskclip", "sclip", "clearclip")  # readouts of the last block (ViT)
_CONVNEXT_MODES = ("plain", "maskclip")  # both: norm + projection at each location
_CONFIG_DIR = Path(__file__).resolve().parent.parent / "model_configs"
log = logging.getLogger("pixelclip")


def register_model_configs() -> None:
    """Make the project's open_clip configurations (`pixelclip-tiny-*`) known to open_clip.

    Idempotent. After it, `open_clip.create_model("pixelclip-tiny-vit", pretrained=path)` works.
    """
    import open_clip

    names = {p.stem for p in _CONFIG_DIR.glob("*.json")}
    if not names.issubset(open_clip.list_models()):
        open_clip.add_model_config(_CONFIG_DIR)


def resolve_model_name(name: str, pretrained: str | None) -> str:
    """The open_clip configuration to build for `name` with `pretrained`: the one whose activation the
    weights were trained with.

    open_clip records for each pretrained tag whether its weights use QuickGELU (OpenAI's, and the DFN
    and MetaCLIP ViTs) but builds `name` as configured and only warns on a mismatch; fine-tuning cannot
    repair the wrong activation (the MLPs and the text tower are frozen). So a tag that needs QuickGELU
    on a GELU configuration resolves to its `-quickgelu` twin (`ViT-B-16` + `openai` ->
    `ViT-B-16-quickgelu`), and the reverse to the plain twin; with no twin it is an error. For a local
    weights file or random weights the name is kept: the file's activation is the configuration's, so
    name a `-quickgelu` configuration for OpenAI weights. Raises ValueError for an unknown name or tag.
    """
    import open_clip

    register_model_configs()
    if name.startswith(("hf-hub:", "local-dir:")):
        return name
    if name not in open_clip.list_models():
        raise ValueError(f"backbone.name {name!r} is not an open_clip model configuration")
    if not pretrained or Path(pretrained).is_file():
        return name
    tags = open_clip.list_pretrained_tags_by_model(name)
    if pretrained not in tags:
        hint = " (a local weights file must exist on this machine)" if "/" in pretrained or "." in pretrained else ""
        raise ValueError(f"backbone.pretrained {pretrained!r} is neither a file nor a tag of {name}{hint} "
                         f"(tags: {', '.join(tags) or 'none'})")
    wants = bool(open_clip.get_pretrained_cfg(name, pretrained).get("quick_gelu", False))
    has = bool(open_clip.get_model_config(name).get("quick_gelu", False))
    if wants == has:
        return name
    twin = f"{name}-quickgelu" if wants else name.removesuffix("-quickgelu")
    known = twin != name and twin in open_clip.list_models()
    if not known or pretrained not in open_clip.list_pretrained_tags_by_model(twin):
        raise ValueError(f"backbone {name!r} uses {'GELU' if wants else 'QuickGELU'} but the weights {pretrained!r} "
                         f"were trained with {'QuickGELU' if wants else 'GELU'}, and open_clip has no twin "
                         "configuration with the right activation")
    log.warning("backbone %s with weights %r: building %s, the weights were trained with %s",
                name, pretrained, twin, "QuickGELU" if wants else "GELU")
    return twin


class _NoRandomInitWarning(logging.Filter):
    """Drops open_clip's "No pretrained weights loaded ... initialized randomly" warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


def create_clip(name: str, pretrained: str | None = None, device: str | torch.device = "cpu",
                weights_follow: bool = False):
    """Build an open_clip model and its tokenizer the open_clip way.

    `pretrained` is an open_clip tag (downloaded by open_clip where there is network), a local file
    path, or None for random initialisation. The configuration is `resolve_model_name(name,
    pretrained)`, so the activation matches the weights. `weights_follow`: a checkpoint is loaded
    into the model right after, so open_clip's warning that it initialised randomly is not shown.
    Returns `(model, tokenizer)`.
    """
    import open_clip

    built = resolve_model_name(name, pretrained)
    quiet = _NoRandomInitWarning() if weights_follow and not pretrained else None
    root = logging.getLogger()  # open_clip warns through the root logger
    if quiet is not None:
        root.addFilter(quiet)
    try:
        model = open_clip.create_model(built, pretrained=pretrained or None, device=device)
    finally:
        if quiet is not None:
            root.removeFilter(quiet)
    tokenizer = open_clip.get_tokenizer(built)
    return model, tokenizer


def _is_vit(visual: nn.Module) -> bool:
    from open_clip.transformer import VisionTransformer

    return isinstance(visual, VisionTransformer)


def _is_timm(visual: nn.Module) -> bool:
    from open_clip.timm_model import TimmModel

    return isinstance(visual, TimmModel)


def default_trainable(visual: nn.Module) -> list[str]:
    """Parameter-name patterns that train by default: ViT attention + positional embedding;
    ConvNeXt (timm) the whole tower."""
    if _is_vit(visual):
        return [r"^positional_embedding$", r"\.attn\."]
    return [r".*"]


def set_trainable(visual: nn.Module, patterns: Sequence[str]) -> list[str]:
    """Freeze every parameter of `visual`, then unfreeze names matching any pattern. Returns names."""
    regs = [re.compile(p) for p in patterns]
    names = []
    for name, p in visual.named_parameters():
        p.requires_grad_(any(r.search(name) for r in regs))
        if p.requires_grad:
            names.append(name)
    if not names:
        raise ValueError(f"backbone.trainable {list(patterns)} matches no parameter of the image tower")
    return names


class DenseEncoder(nn.Module):
    """Dense image features from an open_clip visual tower.

    Args:
        visual: `model.visual` of an open_clip CLIP (ViT or timm ConvNeXt); used as is, not copied.
        mean, std: per-channel normalisation of [0, 1] images (the model's preprocess config).
        mode: the dense readout, one of `DENSE_MODES` ("maskclip" by default, the paper's and the
            one training uses); ConvNeXt towers accept only "plain" and "maskclip" (identical).
    Forward: images [B, 3, H, W] float in [0, 1] -> features [B, D, h, w].
    """

    def __init__(self, visual: nn.Module, mean: Sequence[float], std: Sequence[float],
                 mode: str = "maskclip"):
        super().__init__()
        if mode not in DENSE_MODES:
            raise ValueError(f"dense mode {mode!r} is unknown; valid modes: {', '.join(DENSE_MODES)}")
        if _is_vit(visual):
            blocks = visual.transformer.resblocks
            if not isinstance(getattr(blocks[-1], "attn", None), nn.MultiheadAttention):
                raise ValueError("ViT dense features need nn.MultiheadAttention in the last block; "
                                 f"found {type(getattr(blocks[-1], 'attn', None)).__name__}")
            if getattr(visual, "attn_pool", None) is not None:
                raise ValueError("ViT towers with attentional pooling are not supported for dense features")
            self.kind = "vit"
        elif _is_timm(visual):
            head = getattr(visual.trunk, "head", None)
            if head is None or not hasattr(head, "norm") or not hasattr(visual.trunk, "forward_features"):
                raise ValueError("timm towers need a trunk with forward_features and a head with a norm "
                                 "(ConvNeXt-style); got " + type(visual.trunk).__name__)
            if mode not in _CONVNEXT_MODES:
                raise ValueError(f"dense mode {mode!r} needs a ViT; the timm tower "
                                 f"{type(visual.trunk).__name__} supports only {', '.join(_CONVNEXT_MODES)}")
            self.kind = "convnext"
        else:
            raise ValueError(f"unsupported image tower {type(visual).__name__}: "
                             "expected an open_clip VisionTransformer or a timm ConvNeXt")
        self.visual = visual
        self.mode = mode
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), False)

    def with_mode(self, mode: str) -> DenseEncoder:
        """An encoder with another `mode` over the same `visual` and buffers (shared, not copied)."""
        enc = DenseEncoder(self.visual, (0.0,) * 3, (1.0,) * 3, mode=mode)
        enc.mean, enc.std = self.mean, self.std  # same tensors, so the same device and values
        enc.training = self.training
        return enc

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"

    @property
    def out_dim(self) -> int:
        if self.kind == "vit":
            return self.visual.proj.shape[1]
        head = self.visual.head
        last = [m for m in head.modules() if isinstance(m, nn.Linear)][-1]
        return last.out_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        if self.kind == "vit":
            return self._vit(x)
        return self._convnext(x)

    # -- ViT ------------------------------------------------------------------------------------
    def _pos_embed(self, gh: int, gw: int) -> torch.Tensor:
        pos = self.visual.positional_embedding  # [1 + g0*g1, C]
        g0, g1 = self.visual.grid_size
        if (gh, gw) == (g0, g1):
            return pos
        grid = pos[1:].reshape(1, g0, g1, -1).permute(0, 3, 1, 2)  # [1, C, g0, g1]
        grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)
        grid = grid.permute(0, 2, 3, 1).reshape(gh * gw, -1)  # [gh*gw, C]
        return torch.cat([pos[:1], grid], dim=0)

    def _vit(self, x: torch.Tensor) -> torch.Tensor:
        v = self.visual
        B = x.shape[0]
        x = v.conv1(x)  # [B, C, gh, gw]
        gh, gw = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)  # [B, gh*gw, C]
        cls = v.class_embedding.view(1, 1, -1).expand(B, -1, -1).to(x.dtype)
        x = torch.cat([cls, x], dim=1)  # [B, 1 + gh*gw, C]
        x = v.ln_pre(x + self._pos_embed(gh, gw).to(x.dtype))
        batch_first = v.transformer.batch_first
        if not batch_first:
            x = x.transpose(0, 1)  # [L, B, C]
        blocks = v.transformer.resblocks
        for blk in blocks[:-1]:
            x = blk(x)
        x = READOUTS[self.mode](blocks[-1], x, batch_first)
        if not batch_first:
            x = x.transpose(0, 1)  # [B, L, C]
        x = v.ln_post(x[:, 1:]) @ v.proj  # [B, gh*gw, D]
        return x.transpose(1, 2).reshape(B, -1, gh, gw)  # [B, D, gh, gw]

    # -- ConvNeXt (timm) --------------------------------------------------------------------------
    def _convnext(self, x: torch.Tensor) -> torch.Tensor:
        trunk = self.visual.trunk
        x = trunk.forward_features(x)  # [B, C, h, w]
        x = trunk.head.norm(x)  # per-location norm, no global pooling
        x = x.permute(0, 2, 3, 1)  # [B, h, w, C]
        x = trunk.head.pre_logits(x) if hasattr(trunk.head, "pre_logits") else x
        x = self.visual.head(x)  # projection at each location: [B, h, w, D]
        return x.permute(0, 3, 1, 2).contiguous()  # [B, D, h, w]


def preprocess_stats(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) an open_clip model expects, from its preprocess config."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    visual = model.visual
    cfg = getattr(visual, "preprocess_cfg", None) or {}
    mean = cfg.get("mean") or getattr(visual, "image_mean", None) or OPENAI_DATASET_MEAN
    std = cfg.get("std") or getattr(visual, "image_std", None) or OPENAI_DATASET_STD
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)
