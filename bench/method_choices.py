"""What two of the authors' choices change: the Sinkhorn's start and the teacher's module mode.

    python bench/method_choices.py [--batches 3]

1. Sinkhorn start, "softmax" (the authors': each mask's softmax over the clusters) against "exp"
   (SwAV's exp(logits - max)), 3 iterations, on synthetic features with real CLIP's statistics at the
   recipes' shapes (48 images x 100 masks, K=64, cosines 0.2 +- 0.04; `precision.clip_like`), at the
   ViT epsilon 0.01 and the ConvNeXt epsilon 1.0: the share of masks assigned differently, and the
   clusters used and the entropy of the cluster sizes under each.
2. Teacher mode on `convnext_base_w_320` (stochastic depth 0.1; random weights: no weights here, so
   this measures the noise the mode injects, not its effect on trained features): 1 - cosine between
   the teacher features of two passes over the same images in train mode, and the share of mask
   assignments that differ between the two passes. In eval mode both are 0 by construction; CLIP ViTs
   have no dropout, so the mode does not change them.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from precision import clip_like_inputs

import pixelclip
from pixelclip.model.cluster import assign_masks, cluster_usage


def sinkhorn_start(eps: float, seed: int) -> dict:
    feats, masks, cls = clip_like_inputs(seed=seed)
    a, _ = assign_masks(feats, masks, cls, eps, 3, start="softmax")
    b, _ = assign_masks(feats, masks, cls, eps, 3, start="exp")
    valid = a >= 0
    (ua, ea), (ub, eb) = cluster_usage(a, cls.shape[0]), cluster_usage(b, cls.shape[0])
    return {f"eps{eps:g}_differs": float((a[valid] != b[valid]).float().mean()),
            f"eps{eps:g}_softmax_used": ua, f"eps{eps:g}_exp_used": ub,
            f"eps{eps:g}_softmax_entropy": ea, f"eps{eps:g}_exp_entropy": eb}


def teacher_mode(seed: int, size: int = 256, images: int = 4) -> dict:
    cfg = pixelclip.load_config("convnext_b", ["backbone.pretrained=null", f"backbone.image_size={size}",
                                               f"data.mask_size={size // 4}", f"seed={seed}"])
    task = pixelclip.build_pixelclip(cfg).train()
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(images, 3, size, size, generator=g)
    m = size // 4
    masks = torch.zeros(images, 32, m, m, dtype=torch.bool)
    for i in range(images):
        for j in range(32):
            y, z = torch.randint(0, m - 8, (2,), generator=g).tolist()
            masks[i, j, y:y + 8, z:z + 8] = True
    cls = task.class_features().detach()
    with torch.no_grad():
        f1, f2 = task.teacher(x), task.teacher(x)
    a1, _ = assign_masks(f1, masks, cls, task.epsilon, 3)
    a2, _ = assign_masks(f2, masks, cls, task.epsilon, 3)
    cos = F.cosine_similarity(f1, f2, dim=1).mean()
    return {"train_mode_feature_1_minus_cos": float(1 - cos),
            "train_mode_assign_differs": float((a1 != a2).float().mean())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, default=3)
    args = p.parse_args()
    rows = [{**sinkhorn_start(0.01, i), **sinkhorn_start(1.0, i), **teacher_mode(i)} for i in range(args.batches)]
    print(f"# {args.batches} draws; mean (min..max)")
    for k in rows[0]:
        v = np.array([r[k] for r in rows], dtype=float)
        print(f"{k:34s} {v.mean():10.3g}  ({v.min():.3g} .. {v.max():.3g})")


if __name__ == "__main__":
    main()
