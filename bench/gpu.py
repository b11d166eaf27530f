"""The GPU benchmark: the PixelCLIP step, Ray Train's overhead, the stream's DINO masks and evaluation,
on one GPU, as one table.

    bash bench/gpu.sh                          # a machine with one GPU: under 8 minutes
    bash bench/gpu.sh --device cpu --smoke     # the same code at toy sizes on the CPU (`make test` runs it)

Rows (random weights of the real architectures: speed does not depend on the weights):
- `step <preset> eager|compile`: `Trainer.step` of `vit_b16` and `convnext_b` (bf16 autocast, the
  paper's shapes: K=64, 256 px masks, 64 masks an image) eager and with `torch.compile` on the dense
  encoders and the decoder: images/s, MFU (FLOPs of one step counted by torch's FlopCounterMode, over
  the step time, against the GPU's dense bf16 peak), peak memory, and the step's parts as shares of it
  (teacher, text encoder, clustering, student, decoder; each timed on its own).
- `ray-train <preset> 1 worker` and `outside ray`: the same step on the same device inside a Ray Train
  `TorchTrainer` with one GPU worker, on batches made on the device (the data path costs nothing), and
  in this process: Ray's overhead on the step.
- `dino actor`: masks per second of one Ray Data actor running DINO ViT-S/16 + k-means (k=16) on
  640 px crops (`pipelines.stages.train.online_masks.DinoCropStage`), crops fed from memory.
- `evaluate <preset>`: images/s of `Segmenter` (the paper's whole-image protocol, 150 class names).
A row that cannot run here (Ray or open_clip missing on the machine, compile failing) says why and the
rest go on. Without a GPU and without `--device cpu` it stops at once with a message.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # step_breakdown, when run from anywhere

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}
ROWS: list[dict] = []


def _peak(device: torch.device, given: float | None) -> float | None:
    if given or device.type != "cuda":
        return given
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def _row(name: str, **kw) -> None:
    ROWS.append({"row": name, **kw})
    print(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in kw.items()), flush=True)


def _sizes(args):
    if args.smoke:
        return {"vit_b16": "tiny", "convnext_b": "tiny_convnext"}, 2, 8, 2
    return {"vit_b16": "vit_b16", "convnext_b": "convnext_b"}, args.batch, 64, args.repeats


def _compiled(task):
    """The task with its dense encoders and decoder compiled (the text encoder runs once per step)."""
    task.student.forward = torch.compile(task.student.forward)
    task.teacher.forward = torch.compile(task.teacher.forward)
    task.decoder.forward = torch.compile(task.decoder.forward)
    return task


def step_rows(args, device, peak) -> None:
    from step_breakdown import _batch, _time, breakdown

    import pixelclip

    presets, batch, masks, repeats = _sizes(args)
    amp = device.type == "cuda"
    for label, preset in presets.items():
        for mode in ("eager", "compile"):
            if mode == "compile" and args.smoke:
                _row(f"step {label} compile", skipped="--smoke (compiling takes minutes on a CPU)")
                continue
            try:
                cfg = pixelclip.load_config(preset, ["backbone.pretrained=null"])
                task = pixelclip.build_pixelclip(cfg, device=device).train()
                if mode == "compile":
                    _compiled(task)
                trainer = pixelclip.Trainer(task, cfg, autocast_dtype=torch.bfloat16 if amp else None)
                b = _batch(cfg, batch, masks, device)
                if mode == "compile":
                    for _ in range(3):  # compile outside the timing
                        trainer.step(**b)
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats()
                    step_ms = _time(lambda tr=trainer, bb=b: tr.step(**bb), device, repeats)
                    parts, gflops = {}, None
                else:
                    r = breakdown(task, cfg, trainer, b, device, amp, repeats)
                    step_ms, gflops = r["step_ms"], r["step_gflops"]
                    parts = {k.split(" ")[0]: f"{100 * v / step_ms:.0f}%" for k, v in r["parts_ms"].items()}
                    args.gflops[label] = gflops
                gflops = gflops or args.gflops.get(label)
                mfu = f"{100 * gflops * 1e9 / (step_ms / 1e3) / (peak * 1e12):.1f}%" if peak and gflops else "n/a"
                mem = f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB" if device.type == "cuda" else "n/a"
                _row(f"step {label} {mode}", batch=batch, images_per_s=f"{1e3 * batch / step_ms:.1f}",
                     step_ms=f"{step_ms:.0f}", mfu=mfu, peak_memory=mem, **parts)
                args.images_per_s[(label, mode)] = 1e3 * batch / step_ms
                task = trainer = b = None  # free the GPU memory before the next row
            except Exception as e:  # one row failing (compile, memory) must not lose the others
                _row(f"step {label} {mode}", error=f"{type(e).__name__}: {str(e).splitlines()[0][:160]}")
            if device.type == "cuda":
                torch.cuda.empty_cache()


def _ray_loop(config: dict) -> None:
    import ray.train
    import ray.train.torch
    from step_breakdown import _batch, _time

    import pixelclip

    device = ray.train.torch.get_device()
    cfg = pixelclip.load_config(config["preset"], ["backbone.pretrained=null"])
    task = pixelclip.build_pixelclip(cfg, device=device).train()
    amp = torch.bfloat16 if device.type == "cuda" else None
    trainer = pixelclip.Trainer(task, cfg, autocast_dtype=amp)
    b = _batch(cfg, config["batch"], config["masks"], device)
    trainer.step(**b)
    ms = _time(lambda: trainer.step(**b), device, config["repeats"])
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as d:  # Ray Train V2 keeps the metrics of reports with a checkpoint
        metrics = {"images_per_s": 1e3 * config["batch"] / ms}
        Path(d, "metrics.json").write_text(json.dumps(metrics))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def ray_rows(args, device) -> None:
    try:
        import ray
        from ray.train.torch import TorchTrainer
    except ImportError:
        _row("ray-train", skipped="ray is not installed on this machine")
        return
    import ray.train

    presets, batch, masks, repeats = _sizes(args)
    label = "vit_b16"
    ray.init(address="local", num_cpus=4, num_gpus=1 if device.type == "cuda" else 0, include_dashboard=False,
             log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parent)}})
    try:
        trainer = TorchTrainer(
            _ray_loop, train_loop_config={"preset": presets[label], "batch": batch, "masks": masks,
                                          "repeats": repeats},
            scaling_config=ray.train.ScalingConfig(num_workers=1, use_gpu=device.type == "cuda"),
            run_config=ray.train.RunConfig(storage_path=args.tmp, name="gpu-bench"))
        inside = trainer.fit().metrics["images_per_s"]
        outside = args.images_per_s.get((label, "eager"))
        ratio = f"{inside / outside:.3f}" if outside else "n/a"
        _row(f"ray-train {label} 1 worker", images_per_s=f"{inside:.1f}",
             outside_ray=f"{outside:.1f}" if outside else "n/a", inside_over_outside=ratio)
        dino_row(args, device)
    except Exception as e:
        _row("ray-train", error=f"{type(e).__name__}: {str(e).splitlines()[0][:160]}")
    finally:
        ray.shutdown()


def dino_row(args, device) -> None:
    import numpy as np
    import ray

    from pipelines.stages.train.online_masks import DinoCropStage

    crop, n, arch = (64, 8, "tiny") if args.smoke else (640, 256, "vit_small_patch16_224.dino")
    crops = np.random.default_rng(0).integers(0, 256, (n, 3, crop, crop), dtype=np.uint8)
    ds = ray.data.from_items([{"crop": c} for c in crops]).materialize()
    stage = ds.map_batches(
        DinoCropStage, batch_size=16, batch_format="numpy",
        fn_constructor_kwargs={"weights": None, "arch": arch, "k": 16, "mask_size": 256 if not args.smoke else 64,
                               "crop": crop, "seed": 0, "opts": None},
        compute=ray.data.ActorPoolStrategy(size=1), num_gpus=1 if device.type == "cuda" else 0)
    t0 = time.perf_counter()
    rows = stage.count()  # includes the actor's start: model build once
    dt = time.perf_counter() - t0
    _row("dino actor (1, with its start)", crops=rows, crop_px=crop, masks_per_s=f"{rows / dt:.1f}")
    body = DinoCropStage(None, arch, 16, 256 if not args.smoke else 64, crop, 0, None)  # the actor's body alone
    batch = {"crop": crops[:16]}
    body(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.repeats):
        body(batch)
    dt = time.perf_counter() - t0
    _row("dino stage body (warm)", crops_per_call=len(batch["crop"]),
         masks_per_s=f"{args.repeats * len(batch['crop']) / dt:.1f}")


def evaluate_rows(args, device) -> None:
    import pixelclip
    from pixelclip.infer import SINGLE_TEMPLATE, Segmenter

    presets, _, _, repeats = _sizes(args)
    names = [f"class {i}" for i in range(150)]
    for label, preset in presets.items():
        try:
            cfg = pixelclip.load_config(preset, ["backbone.pretrained=null"])
            task = pixelclip.build_pixelclip(cfg, device=device).eval()
            seg = Segmenter(task.student, task.text, cfg.backbone.image_size, templates=SINGLE_TEMPLATE)
            side = 64 if args.smoke else 640
            images = [torch.randint(0, 256, (3, side, side * 4 // 3), dtype=torch.uint8) for _ in range(4)]
            with torch.no_grad():
                seg.segment(images, names)  # warm-up; the text features are cached from here on
                t0 = time.perf_counter()
                for _ in range(repeats):
                    seg.segment(images, names)
            if device.type == "cuda":
                torch.cuda.synchronize()
            _row(f"evaluate {label}", images_per_s=f"{repeats * len(images) / (time.perf_counter() - t0):.1f}",
                 image=f"{side}x{side * 4 // 3}", classes=len(names))
        except Exception as e:
            _row(f"evaluate {label}", error=f"{type(e).__name__}: {str(e).splitlines()[0][:160]}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--smoke", action="store_true", help="toy sizes, no compile: checks the code on a CPU")
    p.add_argument("--batch", type=int, default=16, help="images per step on the one GPU")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak (default: from the GPU's name)")
    p.add_argument("--tmp", default="/tmp/pixelclip-gpu-bench")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench/gpu.sh: no CUDA GPU is visible (torch.cuda.is_available() is False); run it on a machine "
              "with a GPU, or check the code here with --device cpu --smoke", file=sys.stderr)
        return 2
    args.gflops, args.images_per_s = {}, {}
    peak = _peak(device, args.peak_tflops)
    what = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# PixelCLIP GPU benchmark on {what}; torch {torch.__version__}; bf16 peak {peak or 'unknown'} TFLOP/s; "
          f"{'smoke sizes' if args.smoke else 'paper shapes, random weights'}", flush=True)
    t0 = time.perf_counter()
    step_rows(args, device, peak)
    ray_rows(args, device)
    evaluate_rows(args, device)
    print("\n| row | figures |\n|---|---|")
    for r in ROWS:
        print(f"| {r['row']} | " + "; ".join(f"{k} {v}" for k, v in r.items() if k != "row") + " |")
    print(f"\n# {time.perf_counter() - t0:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
