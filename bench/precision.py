"""What bf16 autocast does to the clustering and to the student's cosine map, against fp32.

    python bench/precision.py [--preset synth] [--scenes 32] [--steps 0]

Runs on the CPU (bf16 autocast follows the same rules there as on CUDA: matmuls and convolutions take
bf16 inputs). Images are SynthScenes scenes with their exact instance masks, through the real
`ViewAugment`; the model is the preset's (by default the project's SynthScenes CLIP, which is trained,
so its features and cosines are CLIP-like: the class cosines sit in a narrow band, as real CLIP's).

Prints, for the masks of every scene (and, last, for synthetic features with real CLIP's statistics at
the ViT recipe's shapes, `clip_like`):
- clustering: the share of mask assignments that differ from the all-fp32 reference when (a) the
  whole assignment runs under autocast as the project did before (bf16 pooling and logits, the plan
  cast back to bf16 before the argmax; also the share of masks that then tie exactly at the maximum),
  (b) the teacher runs in bf16 and the clustering in fp32/fp64 (the project now), (c) all in fp32;
- the student's cosine map: its mean and spread (per map, over positions), the error of the bf16 map
  relative to that spread; the decoder's logits and the gradient reaching the student features with
  (d) the map and the decoder under autocast and (e) the map and the decoder's first convolution in
  fp32 (the rest under autocast), each against all-fp32 (relative error, cosine of the gradients).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

import pixelclip
from pixelclip.data.augment import ViewAugment, collate
from pixelclip.model.cluster import assign_masks, mask_pool, sinkhorn
from pixelclip.synth import scene_at

BF16 = torch.bfloat16


def _batch(cfg, n: int, seed: int) -> dict:
    aug = ViewAugment(cfg.data, cfg.backbone.image_size)
    views = []
    for i in range(n):
        s = scene_at(seed=seed, index=i)
        img = torch.from_numpy(s.image).permute(2, 0, 1)
        views.append(aug(img, torch.from_numpy(s.instances), generator=torch.Generator().manual_seed(i)))
    return collate(views)


def _old_assign(feats, masks, cls, eps, iters):
    """The assignment as it ran before: everything under the caller's autocast, plan cast back."""
    pooled, area = mask_pool(feats.float(), masks)
    valid = area > 1
    logits = F.normalize(pooled[valid], dim=-1) @ cls.T / eps
    q = sinkhorn(logits, iters, "exp").to(logits.dtype)
    top = q.max(dim=1, keepdim=True).values
    ties = ((q == top).sum(dim=1) > 1).float().mean().item()
    return q.argmax(dim=1), valid, ties


def clustering(task, b) -> dict:
    eps, it = task.epsilon, task.sinkhorn_iters
    with torch.no_grad():
        cls = task.class_features()
        f32 = task.teacher(b["weak"])
        ref, _ = assign_masks(f32, b["masks"], cls, eps, it, start="exp")
        with torch.autocast("cpu", dtype=BF16):
            f16 = task.teacher(b["weak"])
            cls16 = task.class_features()
            old, valid, ties = _old_assign(f16, b["masks"], cls16, eps, it)
            new, _ = assign_masks(f16, b["masks"], cls16, eps, it, start="exp")
        fp32, _ = assign_masks(f32, b["masks"], cls, eps, it, start="exp")
    r = ref[valid]
    return {"masks": int(valid.sum()), "old_differs": float((old != r).float().mean()), "old_ties": ties,
            "teacher_bf16_differs": float((new[valid] != r).float().mean()),
            "fp32_differs": float((fp32[valid] != r).float().mean())}


def _decoder_grad(task, feats, cls, targets, variant: str):
    """(logits, gradient on the student features, cos map) with the map and the decoder computed as
    `variant` says: "fp32" (no autocast), "autocast" (the step as it is: einsum and decoder under bf16
    autocast) or "fp32_stem" (map and the decoder's first convolution in fp32, the rest under autocast)."""
    f = feats.clone().requires_grad_()
    fn = F.normalize(f, dim=1)
    with torch.autocast("cpu", dtype=BF16, enabled=variant != "fp32"):
        if variant == "fp32_stem":
            with torch.autocast("cpu", enabled=False):
                cos = torch.einsum("bdhw,kd->bkhw", fn.float(), cls.float())
        else:
            cos = torch.einsum("bdhw,kd->bkhw", fn, cls)
        logits = _decode(task.decoder, cos, stem_fp32=variant == "fp32_stem").float()
    loss = F.binary_cross_entropy_with_logits(logits, targets)
    (grad,) = torch.autograd.grad(loss, f)
    return logits.detach(), grad, cos.detach().float()


def _decode(dec, cos, stem_fp32: bool):
    B, K, h, w = cos.shape
    x = cos.reshape(B * K, 1, h, w)
    if stem_fp32:
        with torch.autocast("cpu", enabled=False):
            x = dec.stem(x.float())
    else:
        x = dec.stem(x)
    x = dec.conv2(dec.up2(dec.conv1(dec.up1(x))))
    x = F.interpolate(dec.head(x), size=(dec.out_size,) * 2, mode="bilinear", align_corners=False)
    return x.view(B, K, dec.out_size, dec.out_size)


def cosine_map(task, b) -> dict:
    with torch.no_grad():
        cls = task.class_features()
        feats = task.student(b["strong"])
        assign, _ = task.assign_masks(b["weak"], b["masks"], cls)
        from pixelclip.model.cluster import merged_targets

        targets = merged_targets(b["masks"], assign, cls.shape[0])
    ref_logits, ref_grad, cos = _decoder_grad(task, feats, cls, targets, "fp32")
    now_logits, now_grad, cos16 = _decoder_grad(task, feats, cls, targets, "autocast")
    fix_logits, fix_grad, _ = _decoder_grad(task, feats, cls, targets, "fp32_stem")
    spread = cos.std(dim=(-2, -1)).mean()  # per map, over positions
    rounding = (cos.bfloat16().float() - cos).abs().mean()

    def rel(a, r):
        return float((a - r).norm() / r.norm())

    def cosine(a, r):
        return float(F.cosine_similarity(a.flatten(), r.flatten(), dim=0))

    return {"cos_mean": float(cos.mean()), "cos_spread": float(spread),
            "bf16_rounding_over_spread": float(rounding / spread),
            "autocast_map_err_over_spread": float((cos16 - cos).abs().mean() / spread),
            "now_logits_rel_err": rel(now_logits, ref_logits), "now_grad_cos": cosine(now_grad, ref_grad),
            "fp32_stem_logits_rel_err": rel(fix_logits, ref_logits), "fp32_stem_grad_cos": cosine(fix_grad, ref_grad)}


def clip_like_inputs(images: int = 48, masks: int = 100, k: int = 64, d: int = 512, seed: int = 0):
    """Synthetic teacher features [B, 512, 20, 20], masks [B, 100, 64, 64] and K=64 class features whose
    cosines to the pooled masks sit near 0.2 +- 0.04, as real CLIP's do at the ViT recipe's shapes."""
    g = torch.Generator().manual_seed(seed)
    common = F.normalize(torch.randn(d, generator=g), dim=0)
    cls = F.normalize(common + 4.9 * F.normalize(torch.randn(k, d, generator=g), dim=1), dim=1)  # cos 0.2
    feats = common[None, :, None, None] * 0.4 + 0.02 * torch.randn(images, d, 20, 20, generator=g)
    m = torch.zeros(images, masks, 64, 64, dtype=torch.bool)
    for i in range(images):
        ys, xs = torch.randint(0, 56, (2, masks), generator=g)
        hs, ws = torch.randint(3, 20, (2, masks), generator=g)
        for j in range(masks):
            m[i, j, ys[j]:ys[j] + hs[j], xs[j]:xs[j] + ws[j]] = True
    return feats, m, cls


def clip_like(eps: float = 0.01, seed: int = 0):
    """The clustering on `clip_like_inputs`: the share of assignments that differ from fp32 with the old
    bf16 path, and with the clustering out of autocast (the same fp32 features in both: only the
    clustering's precision differs)."""
    feats, m, cls = clip_like_inputs(seed=seed)
    with torch.no_grad():
        ref, _ = assign_masks(feats, m, cls, eps, 3)
        pooled, area = mask_pool(feats, m)
        cos = F.normalize(pooled[area > 1], dim=-1) @ cls.T
        with torch.autocast("cpu", dtype=BF16):
            old, valid, ties = _old_assign(feats, m, cls, eps, 3)
            new, _ = assign_masks(feats, m, cls, eps, 3)
    r = ref[valid]
    return {"clip_like_masks": int(valid.sum()), "clip_like_cos_mean": float(cos.mean()),
            "clip_like_cos_sd": float(cos.std()), "clip_like_old_differs": float((old != r).float().mean()),
            "clip_like_old_ties": ties, "clip_like_new_differs": float((new[valid] != r).float().mean())}


def clip_like_map(images: int = 8, k: int = 64, seed: int = 0) -> dict:
    """The decoder on cosine maps with real CLIP's statistics (0.2 +- 0.03, smooth over the 20x20 grid),
    the vit_b16 decoder (64/32 channels; output at 80 px): logits and the gradient reaching the map
    under autocast with the map in bf16, and with the map and the first convolution in fp32."""
    from pixelclip.model.decoder import MaskDecoder

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    dec = MaskDecoder(64, 32, (4, 2), out_size=80)
    z = F.interpolate(torch.randn(images, k, 5, 5, generator=g), size=(20, 20), mode="bicubic")
    cos = 0.2 + 0.03 * z / z.std()
    targets = (F.interpolate(cos, size=(80, 80)) == F.interpolate(cos, size=(80, 80)).amax(1, keepdim=True)).float()
    out = {}
    ref = None
    for variant in ("fp32", "autocast", "fp32_stem"):
        c = cos.clone().requires_grad_()
        with torch.autocast("cpu", dtype=BF16, enabled=variant != "fp32"):
            x = c if variant != "autocast" else c.bfloat16()
            logits = _decode(dec, x, stem_fp32=variant == "fp32_stem").float()
        (grad,) = torch.autograd.grad(F.binary_cross_entropy_with_logits(logits, targets), c)
        if ref is None:
            ref = (logits.detach(), grad)
            continue
        out[f"map_{variant}_logits_rel_err"] = float((logits.detach() - ref[0]).norm() / ref[0].norm())
        out[f"map_{variant}_grad_cos"] = float(F.cosine_similarity(grad.flatten(), ref[1].flatten(), dim=0))
    out["map_bf16_rounding_over_spread"] = float((cos.bfloat16().float() - cos).abs().mean() / 0.03)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="synth")
    p.add_argument("--scenes", type=int, default=32)
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--override", action="append", default=[])
    args = p.parse_args()
    cfg = pixelclip.load_config(args.preset, args.override)
    task = pixelclip.build_pixelclip(cfg).train()
    rows_c, rows_m = [], []
    for i in range(args.batches):
        b = _batch(cfg, args.scenes, args.seed + i)
        rows_c.append(clustering(task, b))
        rows_m.append(cosine_map(task, b))
    print(f"# preset={args.preset} epsilon={task.epsilon} K={cfg.num_classes} scenes={args.scenes} x "
          f"{args.batches} batches, CPU bf16 autocast vs fp32; mean (min..max) over batches")
    rows_s = [{**clip_like(seed=i), **clip_like_map(seed=i)} for i in range(args.batches)]
    for rows in (rows_c, rows_m, rows_s):
        for k in rows[0]:
            v = np.array([r[k] for r in rows])
            print(f"{k:28s} {v.mean():10.5f}  ({v.min():.5f} .. {v.max():.5f})")


if __name__ == "__main__":
    main()
