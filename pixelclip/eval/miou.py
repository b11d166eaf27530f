"""Confusion-matrix based mIoU for semantic segmentation, mergeable across workers.

    cm = ConfusionMatrix(num_classes=150)
    for pred, target in batches:          # integer label maps, [H, W] or [B, H, W]
        cm.update(pred, target)
    cm.all_reduce()                       # sums over the default process group, if any
    print(cm.miou(), cm.iou())

Rows of `matrix` are ground truth, columns are prediction. Pixels whose target equals
`ignore_index` are skipped whatever the prediction there. A class absent from both ground
truth and prediction has IoU NaN and is left out of the mean; any other class counts, with
IoU 0 when it is missed entirely or only predicted.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def _all_reduce_sum(t: torch.Tensor) -> None:
    """Sum `t` in place over the default process group (a no-op when none is initialised)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)


def _bad_values(values: torch.Tensor, limit: int = 5) -> list[int]:
    """Up to `limit` distinct values of a 1-D integer tensor, for error messages."""
    return values.unique()[:limit].tolist()


class ConfusionMatrix:
    """Confusion matrix for semantic segmentation, mergeable across workers.

    `matrix` is [C, C] int64 with rows = ground truth and columns = prediction.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, device: torch.device | str | None = None):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def __repr__(self) -> str:
        return (
            f"ConfusionMatrix(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"pixels={int(self.matrix.sum())})"
        )

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Accumulate one image [H, W] or a batch [B, H, W] of integer label maps.

        Raises ValueError on a shape mismatch, non-integer dtypes, a target value outside
        [0, C) that is not `ignore_index`, or a prediction outside [0, C) at a counted pixel.
        """
        if pred.shape != target.shape:
            raise ValueError(
                f"pred and target must have the same shape, got pred {tuple(pred.shape)} "
                f"and target {tuple(target.shape)}"
            )
        for name, t in (("pred", pred), ("target", target)):
            if t.is_floating_point() or t.is_complex():
                raise ValueError(f"{name} must be an integer tensor, got dtype {t.dtype}")
        c = self.num_classes
        target = target.reshape(-1).long()
        pred = pred.reshape(-1).to(device=target.device, dtype=torch.int64)
        keep = target != self.ignore_index
        target, pred = target[keep], pred[keep]
        bad = (target < 0) | (target >= c)
        if bad.any():
            raise ValueError(
                f"target has values {_bad_values(target[bad])} outside [0, {c}) "
                f"that are not ignore_index={self.ignore_index}"
            )
        bad = (pred < 0) | (pred >= c)
        if bad.any():
            raise ValueError(f"pred has values {_bad_values(pred[bad])} outside [0, {c})")
        counts = torch.bincount(target * c + pred, minlength=c * c).reshape(c, c)
        self.matrix += counts.to(self.matrix.device)

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add `other`'s counts into this matrix in place; returns self."""
        if not isinstance(other, ConfusionMatrix):
            raise TypeError(f"can only merge a ConfusionMatrix, got {type(other).__name__}")
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge num_classes={other.num_classes} into {self.num_classes}")
        self.matrix += other.matrix.to(self.matrix.device)
        return self

    def all_reduce(self) -> ConfusionMatrix:
        """Sum the matrix over the default process group if one is initialised; returns self.

        With the NCCL backend the matrix must live on the rank's CUDA device.
        """
        _all_reduce_sum(self.matrix)
        return self

    def iou(self) -> torch.Tensor:
        """Per-class IoU, [C] float64; NaN for classes absent from both target and prediction."""
        m = self.matrix.double()
        tp = m.diagonal()
        union = m.sum(dim=1) + m.sum(dim=0) - tp
        return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))

    def miou(self) -> float:
        """Mean IoU over present classes as a fraction in [0, 1]; NaN if no class is present."""
        return float(torch.nanmean(self.iou()))

    def pixel_accuracy(self) -> float:
        """Fraction of counted pixels predicted correctly; NaN if no pixel was counted."""
        total = int(self.matrix.sum())
        return float("nan") if total == 0 else int(self.matrix.trace()) / total

    def state_dict(self) -> dict[str, Any]:
        """Plain, device-independent state: num_classes, ignore_index and a CPU copy of the matrix."""
        return {
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "matrix": self.matrix.detach().cpu().clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the counts with those of `state`; num_classes must match."""
        if state["num_classes"] != self.num_classes:
            raise ValueError(f"state has num_classes={state['num_classes']}, expected {self.num_classes}")
        matrix = torch.as_tensor(state["matrix"])
        if matrix.shape != self.matrix.shape:
            raise ValueError(
                f"state matrix has shape {tuple(matrix.shape)}, expected {tuple(self.matrix.shape)}"
            )
        self.ignore_index = int(state.get("ignore_index", self.ignore_index))
        self.matrix.copy_(matrix.to(dtype=torch.int64))

    def reset(self) -> None:
        """Zero all counts."""
        self.matrix.zero_()

    @classmethod
    def from_state_dict(
        cls, state: dict[str, Any], device: torch.device | str | None = None
    ) -> ConfusionMatrix:
        """Build a matrix from `state_dict()` output."""
        cm = cls(state["num_classes"], state.get("ignore_index", 255), device=device)
        cm.load_state_dict(state)
        return cm
