"""Final checkpoints of the SynthScenes benchmark scored per scene, and scene-bootstrap intervals.

    confs = scene_confusions(segmenter, samples, class_names)   # [N, C, C] int64, one per scene
    miou(confs.sum(0))                                           # the split's mIoU (%), as `evaluate` computes it
    lo, hi = bootstrap_interval([confs_seed0, confs_seed1], n=1000, seed=0)  # 95% over resampled scenes

A split's mIoU sums the confusions of its scenes, so resampling scenes with replacement (the same
draw for every seed of a variant) and recomputing gives the evaluation's own uncertainty: how much the
number would move on another draw of scenes from the same generator.
"""

from __future__ import annotations

import numpy as np
import torch


def miou(conf: np.ndarray) -> float:
    """mIoU (%) of a [C, C] confusion (rows truth, columns prediction) over classes present in either."""
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - tp
    present = union > 0
    return float((tp[present] / union[present]).mean() * 100) if present.any() else float("nan")


def group_miou(conf: np.ndarray, idx: list[int]) -> float:
    """mIoU (%) over the classes `idx` that are present."""
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - tp
    sel = [i for i in idx if union[i] > 0]
    return float((tp[sel] / union[sel]).mean() * 100) if sel else float("nan")


@torch.no_grad()
def scene_confusions(seg, samples, class_names: list[str], batch: int = 16) -> np.ndarray:
    """[N, C, C] int64: each sample's confusion (samples with `.image` and `.label` [H, W], 255 ignored)."""
    C = len(class_names)
    text = seg.text_features(class_names)
    out = np.zeros((len(samples), C, C), np.int64)
    for i in range(0, len(samples), batch):
        chunk = samples[i:i + batch]
        preds = seg.segment_with_features([s.image for s in chunk], text)
        for j, (s, p) in enumerate(zip(chunk, preds, strict=True)):
            t = np.asarray(s.label).ravel().astype(np.int64)
            q = p.cpu().numpy().ravel().astype(np.int64)
            keep = t < C
            out[i + j] = np.bincount(t[keep] * C + q[keep], minlength=C * C).reshape(C, C)
    return out


def bootstrap_interval(per_seed: list[np.ndarray], n: int = 1000, seed: int = 0, level: float = 0.95,
                       fn=miou) -> tuple[float, float]:
    """Interval of the mean over seeds of `fn(sum of the resampled scenes' confusions)`, resampling the
    scenes (one draw shared by every seed, since they are scored on the same scenes)."""
    rng = np.random.default_rng(seed)
    N = per_seed[0].shape[0]
    stats = np.empty(n)
    for b in range(n):
        idx = rng.integers(0, N, N)
        stats[b] = np.mean([fn(c[idx].sum(0)) for c in per_seed])
    lo, hi = np.nanpercentile(stats, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)
