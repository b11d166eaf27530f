"""The PixelCLIP training step: student, momentum teacher, learnable class prompts, decoder, loss.

One step (Fig. 3 of the paper, details from the reference notes):
1. teacher(weak view) -> features, mask-pooled over each unlabeled mask (masks of <= 1 pixel drop);
2. learnable class prompts -> K class features through the frozen text encoder;
3. cos(mask feature, class feature) / epsilon -> Sinkhorn-Knopp (global over the process group)
   -> hard assignment -> per-image, per-class union of masks = targets [B, K, M, M];
4. student(strong view) -> features; cos with the K class features -> decoder -> logits [B, K, M, M];
5. per-pixel binary cross-entropy, averaged over pixels covered by at least one mask (and not cut out).
The forward has no side effects: the EMA update and the optimiser live in `pixelclip.train`.

`mode` (config `cluster.mode`) selects the paper's ablations: "centroids" groups masks onto learnable
vectors instead of prompts through the text encoder; "names" onto fixed class names, by argmax;
"none" skips clustering: the student's map is compared with each mask's own teacher feature and each
mask is its own target.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .model.backbone import DenseEncoder
from .model.cluster import assign_masks, cluster_usage, mask_pool, merged_targets
from .model.decoder import MaskDecoder
from .model.prompts import TextEncoder


@dataclass
class StepOutput:
    loss: torch.Tensor  # scalar, finite; 0 (still attached to the graph) when no pixel is covered
    assign: torch.Tensor  # [B, N] cluster of each mask, -1 for dropped masks
    metrics: dict[str, float] = field(default_factory=dict)


def check_batch(weak: torch.Tensor, strong: torch.Tensor, masks: torch.Tensor,
                keep: torch.Tensor | None, mask_size: int) -> None:
    """Raise ValueError naming the problem if the batch is not what `training_step` takes."""
    for name, img in (("weak", weak), ("strong", strong)):
        if not isinstance(img, torch.Tensor) or img.ndim != 4 or img.shape[1] != 3:
            shape = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
            raise ValueError(f"{name} must be images [B, 3, H, W], got {shape}")
        if not img.is_floating_point():
            raise ValueError(f"{name} must be a float tensor with values in [0, 1], got dtype {img.dtype}")
        lo, hi = float(img.min()) if img.numel() else 0.0, float(img.max()) if img.numel() else 0.0
        if lo < -0.01 or hi > 1.01:  # NaN passes: a non-finite step is the trainer's to skip
            raise ValueError(f"{name} must hold values in [0, 1] (the encoder normalises), got [{lo:.3g}, {hi:.3g}]")
    if weak.shape != strong.shape:
        raise ValueError(f"weak {tuple(weak.shape)} and strong {tuple(strong.shape)} views differ in shape")
    if not isinstance(masks, torch.Tensor) or masks.ndim != 4:
        shape = tuple(masks.shape) if isinstance(masks, torch.Tensor) else type(masks).__name__
        raise ValueError(f"masks must be [B, N, {mask_size}, {mask_size}] bool, got {shape}")
    if masks.dtype != torch.bool:
        raise ValueError(f"masks must be bool, got dtype {masks.dtype}")
    if masks.shape[0] != weak.shape[0]:
        raise ValueError(f"masks hold {masks.shape[0]} images but the views hold {weak.shape[0]}")
    if tuple(masks.shape[-2:]) != (mask_size, mask_size):
        raise ValueError(f"masks are {tuple(masks.shape[-2:])}, expected ({mask_size}, {mask_size}) "
                         "(data.mask_size)")
    if keep is not None and (keep.dtype != torch.bool or keep.shape != (masks.shape[0], *masks.shape[-2:])):
        raise ValueError(f"keep must be bool [B, {mask_size}, {mask_size}], got {keep.dtype} "
                         f"{tuple(keep.shape)}")


class PixelCLIP(nn.Module):
    """PixelCLIP around an open_clip model. Build it with `pixelclip.build_pixelclip(cfg)`.

    Args:
        clip: the open_clip model; its `visual` is the student's tower, its text tower stays frozen.
        student, teacher: `DenseEncoder`s over `clip.visual` and over a frozen copy of it.
        text: the frozen `TextEncoder` of `clip`.  prompts: what masks are grouped onto: the
            learnable `ClassPrompts`, or (ablations) `ClassCentroids`, `FixedClasses`, None for mode "none".
        decoder: the training-only `MaskDecoder`.
        epsilon: Sinkhorn entropy weight.  sinkhorn_iters: iterations.  sinkhorn_start: "softmax" | "exp".
        image_size: input resolution.  mask_size: target resolution.  model_name: open_clip name.
        mode: `cluster.mode` ("prompts", "centroids", "names", "none").
        teacher_mode: "train" (follows the task's mode, as the authors') or "eval" (always eval).
    """

    def __init__(self, clip: nn.Module, student: DenseEncoder, teacher: DenseEncoder, text: TextEncoder,
                 prompts: nn.Module | None, decoder: MaskDecoder, epsilon: float, sinkhorn_iters: int,
                 image_size: int, mask_size: int, model_name: str = "", mode: str = "prompts",
                 sinkhorn_start: str = "softmax", teacher_mode: str = "train"):
        super().__init__()
        if (prompts is None) != (mode == "none"):
            raise ValueError(f"cluster mode {mode!r} {'takes no' if mode == 'none' else 'needs a'} class module")
        if teacher_mode not in ("train", "eval"):
            raise ValueError(f"teacher_mode must be 'train' or 'eval', got {teacher_mode!r}")
        self.clip = clip
        self.student = student
        self.teacher = teacher
        self.text = text
        self.prompts = prompts
        self.decoder = decoder
        self.epsilon = float(epsilon)
        self.sinkhorn_iters = int(sinkhorn_iters)
        self.sinkhorn_start = sinkhorn_start
        self.teacher_mode = teacher_mode
        self.image_size = int(image_size)
        self.mask_size = int(mask_size)
        self.model_name = model_name  # open_clip configuration name, for export
        self.mode = mode

    def train(self, mode: bool = True) -> PixelCLIP:
        """Train mode; the teacher follows it when `teacher_mode` is "train" (the authors': ConvNeXt's
        stochastic depth stays active in the teacher), else it stays in eval mode."""
        super().train(mode)
        if self.teacher_mode == "eval":
            self.teacher.eval()
        return self

    def class_features(self) -> torch.Tensor:
        """The K class features [K, D] (learned prompts, centroids or fixed names), L2-normalised."""
        if self.prompts is None:
            raise ValueError("this model was trained without semantic clustering (cluster.mode 'none'): "
                             "it has no class features")
        return F.normalize(self.prompts(self.text).float(), dim=-1)

    @torch.no_grad()
    def assign_masks(self, weak: torch.Tensor, masks: torch.Tensor,
                     class_feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher features of the weak view (at the step's precision), then mask pooling, logits,
        Sinkhorn and argmax in float32/float64 (`model.cluster.assign_masks`).
        Returns (assign [B, N], plan [M, K] float64)."""
        feats = self.teacher(weak)  # [B, D, h, w]
        # fixed class names already mean something: no online clustering (Table 3d), else Sinkhorn
        return assign_masks(feats, masks, class_feats, self.epsilon, self.sinkhorn_iters,
                            balanced=self.mode != "names", start=self.sinkhorn_start)

    def forward(self, weak: torch.Tensor, strong: torch.Tensor, masks: torch.Tensor,
                keep: torch.Tensor | None = None) -> StepOutput:
        """One training step's loss.

        weak, strong: [B, 3, S, S] float in [0, 1] (teacher and student views, same geometry);
        masks: [B, N, M, M] bool (all-False padding is dropped); keep: [B, M, M] bool, False where
        CutOut removed pixels from the targets.
        """
        check_batch(weak, strong, masks, keep, self.mask_size)
        if self.mode == "none":
            return self._per_mask_step(weak, strong, masks, keep)
        class_feats = self.class_features()  # [K, D]
        K = class_feats.shape[0]
        assign, _ = self.assign_masks(weak, masks, class_feats.detach())
        with torch.no_grad():
            targets = merged_targets(masks, assign, K)  # [B, K, M, M]
            covered = targets.amax(dim=1) > 0  # [B, M, M] pixels under at least one kept mask
            if keep is not None:
                covered &= keep
        feats = F.normalize(self.student(strong).float(), dim=1)  # [B, D, h, w]
        cos = torch.einsum("bdhw,kd->bkhw", feats, class_feats)  # [B, K, h, w]
        logits = self.decoder(cos).float()  # [B, K, M, M]
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")  # [B, K, M, M]
        weight = covered.unsqueeze(1).to(bce.dtype)  # [B, 1, M, M]
        n_pix = weight.sum() * K
        loss = (bce * weight).sum() / n_pix.clamp(min=1.0)
        used, entropy = cluster_usage(assign, K)
        metrics = {
            "masks": float((assign >= 0).sum()),
            "clusters_used": float(used),
            "cluster_entropy": entropy,
            "covered_fraction": float(covered.float().mean()),
        }
        return StepOutput(loss=loss, assign=assign, metrics=metrics)

    def _per_mask_step(self, weak, strong, masks, keep) -> StepOutput:
        """Without semantic clustering: the decoder predicts every mask from the cosine map between
        the student's features and that mask's pooled teacher feature; each mask is its own target."""
        with torch.no_grad():
            feats = self.teacher(weak)  # [B, D, h, w]
            with torch.autocast(feats.device.type, enabled=False):  # pooling in float32, as for clustering
                pooled, area = mask_pool(feats.float(), masks)  # [B, N, D], [B, N]
            valid = area > 1  # [B, N]
            mask_feats = F.normalize(pooled, dim=-1)
            targets = masks.float() * valid[..., None, None]  # [B, N, M, M]
            covered = targets.amax(dim=1) > 0  # [B, M, M]
            if keep is not None:
                covered &= keep
        feats = F.normalize(self.student(strong).float(), dim=1)  # [B, D, h, w]
        cos = torch.einsum("bdhw,bnd->bnhw", feats, mask_feats)  # [B, N, h, w]
        logits = self.decoder(cos).float()  # [B, N, M, M]
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        weight = covered.unsqueeze(1).to(bce.dtype) * valid[..., None, None].to(bce.dtype)  # [B, N, M, M]
        loss = (bce * weight).sum() / weight.sum().clamp(min=1.0)
        assign = torch.where(valid, torch.arange(masks.shape[1], device=masks.device).expand_as(valid), -1)
        metrics = {"masks": float(valid.sum()), "covered_fraction": float(covered.float().mean())}
        return StepOutput(loss=loss, assign=assign, metrics=metrics)

    training_step = forward
