"""Ray Train scaling and overhead: images/s of the same PixelCLIP step outside Ray and inside Ray
Train with 1 and 2 workers, and the share of step time a worker spends waiting for data.

    python bench/train_scaling.py [--preset tiny] [--batch 8] [--steps 60] [--cpus 4]

Everything is local and real: SeaweedFS holds synthetic SA-1B shards, the prepare stage makes the
training-ready Parquet, and the train stage runs `TorchTrainer` (gloo DDP on CPU, or NCCL + bf16
with `--gpu`). Outside Ray, the same `Trainer.step` runs in this process on batches read once into
memory, with as many torch threads as one worker has (Ray gives each worker `cpus_per_worker`
threads). Rates inside Ray Train are rank 0's over the last `steps / 3` steps (startup excluded);
`data wait` is the share of that time rank 0 sat waiting for its next batch.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

import pixelclip
from pipelines.local.objectstore import SeaweedFS
from pipelines.stages.prepare import PrepareConfig, run_prepare
from pipelines.stages.train.driver import run_train
from pipelines.stages.train.job import TrainJobConfig
from pipelines.stages.train.reader import iter_batches, training_dataset
from pipelines.synth.sa1b import write_shards
from pixelclip.data.sa1b import ConvertOptions


def _config(preset: str, batch: int, steps: int, overrides: list[str]):
    return pixelclip.load_config(preset, [f"optim.batch_size={batch}", f"optim.steps={steps}", *overrides])


def outside_ray(cfg, batches: list[dict], steps: int, device: str, threads: int) -> float:
    """images/s of `Trainer.step` on in-memory batches (after 3 warm-up steps)."""
    torch.set_num_threads(threads)
    task = pixelclip.build_pixelclip(cfg, device=device)
    amp = torch.bfloat16 if device == "cuda" else None
    trainer = pixelclip.Trainer(task, cfg, autocast_dtype=amp)
    for b in batches[:3]:
        trainer.step(**{k: v.to(device) for k, v in b.items()})
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(steps):
        trainer.step(**{k: v.to(device) for k, v in batches[i % len(batches)].items()})
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * cfg.optim.batch_size / (time.perf_counter() - t0)


def inside_ray(cfg, data: str, opts, workers: int, name: str, gpu: bool, masks: dict | None = None) -> dict:
    job = TrainJobConfig(data=data, storage="s3://data/bench-runs", name=name, model=cfg.to_dict(), workers=workers,
                         cpus_per_worker=1.0, use_gpu=gpu, checkpoint_every=10**6,
                         log_every=max(1, cfg.optim.steps // 3), seed=0, masks=masks)
    out = run_train(job, opts)
    if out["error"]:
        raise RuntimeError(out["error"])
    return out["metrics"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--set", dest="overrides", action="append", default=["data.resize_short=64", "data.crop=48"])
    p.add_argument("--batch", type=int, default=8, help="global batch (split over the workers)")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--cpus", type=int, default=4, help="logical CPUs of the local Ray")
    p.add_argument("--images", type=int, default=640, help="synthetic SA-1B images (640: timed steps in one epoch)")
    p.add_argument("--gpu", action="store_true", help="workers and the outside-Ray step on GPUs")
    p.add_argument("--dino", default=None, metavar="ARCH",
                   help="also 1 worker with masks computed on each crop by one DINO actor of this timm architecture "
                        "(tiny: a small random ViT; random weights)")
    p.add_argument("--dino-k", type=int, default=8, help="clusters per crop (at most the crop's 16 px patches)")
    a = p.parse_args()
    import ray

    from pipelines import storage

    cfg = _config(a.preset, a.batch, a.steps, a.overrides)
    with tempfile.TemporaryDirectory() as tmp, SeaweedFS(tmp) as s3:
        s3.create_bucket("data")
        env = s3.env()
        opts = storage.StorageOptions(endpoint_url=s3.endpoint, access_key=env["AWS_ACCESS_KEY_ID"],
                                      secret_key=env["AWS_SECRET_ACCESS_KEY"], region="us-east-1")
        ray.init(num_cpus=a.cpus, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"AWS_ENDPOINT_URL": s3.endpoint, **{k: env[k] for k in (
                     "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}, "AWS_REGION": "us-east-1"}})
        ray.data.DataContext.get_current().enable_progress_bars = False
        write_shards("s3://data/raw", shards=4, images=a.images // 4, size=(64, 96), masks=10, seed=0, opts=opts)
        run_prepare(PrepareConfig(input="s3://data/raw/", output="s3://data/ready/",
                                  convert=ConvertOptions(short_side=48, min_area=4, max_masks=8)), opts)
        data = "s3://data/ready/"
        batches = list(iter_batches(training_dataset(data, cfg, opts, seed=0), a.batch))
        device = "cuda" if a.gpu else "cpu"
        rows = [("outside Ray, 1 process", outside_ray(cfg, batches, a.steps, device, threads=1), None)]
        for w in (1, 2):
            m = inside_ray(cfg, data, opts, w, f"scale-{w}-{time.time_ns()}", a.gpu)
            rows.append((f"Ray Train, {w} worker{'s' * (w > 1)}", m["images_per_s"], m["data_wait_fraction"]))
        if a.dino:
            masks = {"source": "dino", "arch": a.dino, "actors": 1, "k": a.dino_k, "allow_random_weights": True}
            m = inside_ray(cfg, data, opts, 1, f"scale-dino-{time.time_ns()}", a.gpu, masks)
            rows.append((f"Ray Train, 1 worker, DINO ({a.dino}) masks per crop, 1 actor", m["images_per_s"],
                         m["data_wait_fraction"]))
        ray.shutdown()
    base = rows[0][1]
    print(f"# preset {a.preset}, global batch {a.batch}, {a.steps} steps, {device}, {a.cpus} logical CPUs on "
          f"{torch.get_num_threads()} torch threads here; one worker = 1 CPU = 1 torch thread")
    print("| setup | images/s | vs outside Ray | data wait |\n|---|---:|---:|---:|")
    for label, ips, wait in rows:
        shown = "-" if wait is None else f"{100 * wait:.0f}%"
        print(f"| {label} | {ips:.1f} | {ips / base:.2f} | {shown} |")


if __name__ == "__main__":
    main()
