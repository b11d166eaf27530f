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
                       fn=None) -> tuple[float, float]:
    """Interval of the mean over seeds of `fn(sum of the resampled scenes' confusions)`, resampling the
    scenes (one draw shared by every seed, since they are scored on the same scenes)."""
    fn = fn or miou
    return bootstrap(lambda idx: mean_over_seeds(per_seed, idx, fn), per_seed[0].shape[0], n, seed, level)


def bootstrap(stat, n_scenes: int, n: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of `stat(idx)` over `n` draws of `n_scenes` scene indices with replacement."""
    rng = np.random.default_rng(seed)
    stats = np.array([stat(rng.integers(0, n_scenes, n_scenes)) for _ in range(n)])
    lo, hi = np.nanpercentile(stats, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


def mean_over_seeds(per_seed: list[np.ndarray], idx: np.ndarray | None = None, fn=miou) -> float:
    """Mean over seeds of `fn` of each seed's summed confusions (over the scenes `idx`; None: all)."""
    return float(np.mean([fn(c.sum(0) if idx is None else c[idx].sum(0)) for c in per_seed]))


def compare(a: list[np.ndarray], b: list[np.ndarray], n: int = 1000, seed: int = 0, fn=miou) -> dict:
    """Mean of `a` minus mean of `b` over seeds (both scored on the same scenes), with a scene-bootstrap
    interval of the difference: one draw of scenes shared by both, so the scenes' own difficulty cancels."""
    d = mean_over_seeds(a, fn=fn) - mean_over_seeds(b, fn=fn)
    lo, hi = bootstrap(lambda idx: mean_over_seeds(a, idx, fn) - mean_over_seeds(b, idx, fn), a[0].shape[0], n,
                       seed)
    return {"difference": round(d, 2), "interval": [round(lo, 2), round(hi, 2)]}


def _seed_stats(values: list[float]) -> dict:
    vals = [v for v in values if v == v]  # NaN: the group absent from the split
    return {"mean": round(float(np.mean(vals)), 2) if vals else None,
            "std": round(float(np.std(vals, ddof=1)), 2) if len(vals) > 1 else 0.0,
            "min": min(vals) if vals else None, "max": max(vals) if vals else None, "n": len(vals),
            "values": values}


def summarize_final(start: dict, trials: list[tuple[dict, dict]], groups: dict[str, list[int]],
                    split_seeds: dict[str, int], n_boot: int = 1000) -> dict:
    """The final checkpoints' numbers from their per-scene confusions.

    start: {readout: {split: [N, C, C]}} of the starting CLIP ("maskclip" first, the paper's readout);
    trials: [({"variant", "seed", "clusters"}, {readout: {split: [N, C, C]}})]; groups: {name: class ids}.
    Returns per split: the start's scores (and its other readouts); per trial its scores; per variant
    (K sweep excluded) the mean over seeds with the scene-bootstrap interval of the mean, and its
    difference to the start and to PixelCLIP with the interval of the difference."""
    fns = {"miou": miou, **{g: (lambda c, idx=idx: group_miou(c, idx)) for g, idx in groups.items()}}
    splits = list(split_seeds)

    def scores(c: np.ndarray) -> dict:
        return {k: round(f(c.sum(0)), 2) for k, f in fns.items()}

    rows = []
    for meta, confs in trials:
        row = {**meta, **{s: scores(confs["maskclip"][s]) for s in splits}}
        others = {m: {s: scores(c) for s, c in per.items()} for m, per in confs.items() if m != "maskclip"}
        if others:
            row["readouts"] = others
        rows.append(row)
    by_variant: dict[str, list[int]] = {}
    for i, (meta, _) in enumerate(trials):
        if meta["clusters"] is None:
            by_variant.setdefault(meta["variant"], []).append(i)
    ref = by_variant.get("pixelclip", [])
    variants = {}
    for v, ids in by_variant.items():
        out = {}
        for s in splits:
            per = [trials[i][1]["maskclip"][s] for i in ids]
            entry = {}
            for m, f in fns.items():
                entry[m] = _seed_stats([rows[i][s][m] for i in ids])
                lo, hi = bootstrap(lambda idx, f=f, per=per: mean_over_seeds(per, idx, f), per[0].shape[0], n_boot)
                entry[m]["interval"] = [round(lo, 2), round(hi, 2)]
            entry["vs_start"] = {m: compare(per, [start["maskclip"][s]], n_boot, fn=f) for m, f in fns.items()}
            if v != "pixelclip" and ref:
                entry["vs_pixelclip"] = compare(per, [trials[i][1]["maskclip"][s] for i in ref], n_boot)
            out[s] = entry
        variants[v] = out
    start_scores = {}
    for s in splits:
        start_scores[s] = {**scores(start["maskclip"][s]),
                           "readouts": {m: scores(per[s]) for m, per in start.items() if m != "maskclip"}}
    return {"splits": {s: {"seed": seed, "scenes": int(start["maskclip"][s].shape[0])}
                       for s, seed in split_seeds.items()},
            "start": start_scores, "trials": rows, "variants": variants}
