"""The PixelCLIP training step split into its parts, in ms and as shares of the full step.

    python bench/step_breakdown.py --preset tiny
    python bench/step_breakdown.py --preset vit_b16 --batch 2          # paper shapes, random weights
    python bench/step_breakdown.py --preset convnext_b --batch 48 --device cuda --amp   # on a GPU

Each part runs on its own with the real library functions and the shapes of the real step:
teacher forward; text encoder over the K prompts (forward + backward); mask pooling + Sinkhorn +
merged targets; student forward + backward; decoder + loss (forward + backward); then the full
`Trainer.step` (which adds the EMA update, clipping and AdamW). Random weights (no download).
On CUDA it also prints images/s, model FLOP utilisation (FLOPs counted by torch's FlopCounterMode
for one full step, against --peak-tflops) and peak memory.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import pixelclip
from pixelclip.model.cluster import assign_masks, merged_targets


def _batch(cfg, batch: int, n_masks: int, device):
    g = torch.Generator().manual_seed(0)
    S, M = cfg.backbone.image_size, cfg.data.mask_size
    weak = torch.rand(batch, 3, S, S, generator=g)
    masks = torch.zeros(batch, n_masks, M, M, dtype=torch.bool)
    side = max(M // 8, 2)
    for b in range(batch):
        for n in range(n_masks):
            y, x = torch.randint(0, M - side, (2,), generator=g).tolist()
            masks[b, n, y:y + side, x:x + side] = True
    return {"weak": weak.to(device), "strong": weak.clone().to(device), "masks": masks.to(device)}


def _time(fn, device, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000.0


def _gflops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops() / 1e9


def breakdown(task, cfg, trainer, b: dict, device: torch.device, amp_on: bool, repeats: int) -> dict:
    """Time each part of the step on its own and the full `Trainer.step`; count their FLOPs.

    Returns {"parts_ms": {part: ms}, "parts_gflops": {part: GFLOP}, "step_ms": ms, "step_gflops": GFLOP}."""
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp_on)
    with torch.no_grad(), amp:
        t_feat = task.teacher(b["weak"]).float()
        s_feat = task.student(b["strong"]).float()
        cls = task.class_features()

    def teacher():
        with torch.no_grad(), amp:
            task.teacher(b["weak"])

    def text():
        with amp:
            task.class_features().sum().backward()

    def pool_sinkhorn():
        assign, _ = assign_masks(t_feat, b["masks"], cls, task.epsilon, task.sinkhorn_iters,
                                 start=task.sinkhorn_start)
        return merged_targets(b["masks"], assign, cls.shape[0])

    targets = pool_sinkhorn()
    grad = torch.randn_like(s_feat)

    def student():
        with amp:
            out = task.student(b["strong"]).float()
        (out * grad).sum().backward()

    def decoder_loss():
        f = F.normalize(s_feat, dim=1).requires_grad_()
        with amp:
            logits = task.decoder(torch.einsum("bdhw,kd->bkhw", f, cls)).float()
        covered = (targets.amax(1) > 0).unsqueeze(1).float()
        loss = (F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * covered).sum()
        (loss / covered.sum().clamp(min=1)).backward()

    def full():
        trainer.step(**b)

    parts = {"student fwd+bwd": student, "teacher fwd": teacher, "text enc (K prompts) fwd+bwd": text,
             "pooling + Sinkhorn + targets": pool_sinkhorn, "decoder + loss fwd+bwd": decoder_loss}
    ms = {k: _time(f, device, repeats) for k, f in parts.items()}
    gflops = {k: _gflops(f) for k, f in parts.items()}
    task.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step_ms = _time(full, device, repeats)
    return {"parts_ms": ms, "parts_gflops": gflops, "step_ms": step_ms, "step_gflops": _gflops(full)}


def run(args) -> None:
    device = torch.device(args.device)
    overrides = ["backbone.pretrained=null", *args.override]
    cfg = pixelclip.load_config(args.preset, overrides)
    task = pixelclip.build_pixelclip(cfg, device=device).train()
    trainer = pixelclip.Trainer(task, cfg, autocast_dtype=torch.bfloat16 if args.amp else None)
    b = _batch(cfg, args.batch, args.masks, device)
    r = breakdown(task, cfg, trainer, b, device, args.amp, args.repeats)
    ms, gflops, step_ms, step_gflops = r["parts_ms"], r["parts_gflops"], r["step_ms"], r["step_gflops"]
    print(f"# preset={args.preset} device={device} batch={args.batch} masks/image={args.masks} "
          f"K={cfg.prompts.num_clusters} image={cfg.backbone.image_size} mask={cfg.data.mask_size} "
          f"amp={'bf16' if args.amp else 'off'} threads={torch.get_num_threads()} repeats={args.repeats} (median)")
    print(f"{'part':34s} {'ms':>10s} {'time share':>11s} {'GFLOP':>10s} {'FLOP share':>11s}")
    for k, v in ms.items():
        print(f"{k:34s} {v:10.1f} {100 * v / step_ms:10.1f}% {gflops[k]:10.1f} "
              f"{100 * gflops[k] / step_gflops:10.1f}%")
    tot_ms, tot_gf = sum(ms.values()), sum(gflops.values())
    print(f"{'sum of parts':34s} {tot_ms:10.1f} {100 * tot_ms / step_ms:10.1f}% {tot_gf:10.1f} "
          f"{100 * tot_gf / step_gflops:10.1f}%")
    print(f"{'full Trainer.step':34s} {step_ms:10.1f} {100.0:10.1f}% {step_gflops:10.1f} {100.0:10.1f}%")
    keys = ("pooling + Sinkhorn + targets", "decoder + loss fwd+bwd")
    head_t, head_f = sum(ms[k] for k in keys), sum(gflops[k] for k in keys)
    print(f"pooling + Sinkhorn + decoder + loss: {100 * head_t / step_ms:.1f}% of the step time, "
          f"{100 * head_f / step_gflops:.1f}% of its FLOPs (target <= 10%)")
    print(f"images/s: {1000 * args.batch / step_ms:.2f}")
    if device.type == "cuda":
        mfu = step_gflops * 1e9 / (step_ms / 1000) / (args.peak_tflops * 1e12)
        print(f"model FLOPs/step: {step_gflops / 1e3:.2f} TFLOP; MFU: {100 * mfu:.1f}% of {args.peak_tflops} TFLOP/s")
        print(f"peak memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--masks", type=int, default=32, help="masks per image")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", action="store_true", help="bf16 autocast")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU (H100 SXM: 989)")
    p.add_argument("--override", action="append", default=[], help="dotted config override")
    run(p.parse_args())


if __name__ == "__main__":
    main()
