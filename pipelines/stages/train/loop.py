"""The training worker loop (one per Ray Train worker): build the task, resume, stream batches, step,
report metrics and checkpoints. The driver (`driver.py`) builds the trainer that runs it."""

from __future__ import annotations

import math
import time

import torch
import torch.distributed as dist

from pipelines import storage
from pipelines.stages.train.checkpoints import latest_checkpoint, report, restore
from pipelines.stages.train.job import LoopConfig
from pipelines.stages.train.progress import Progress


def _all_ok(ok: bool, device) -> bool:
    """True when every worker says ok (a MIN all-reduce); the local value without a process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return ok
    t = torch.tensor([1.0 if ok else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0)


def uninformed_loss(k: int) -> float:
    """The per-pixel loss of a predictor that knows only that one of `k` clusters is right: the
    binary entropy of 1/k. `loss / uninformed_loss(K)` compares runs with different K."""
    p = 1.0 / k
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def train_loop_per_worker(train_loop_config: dict) -> None:
    """The worker loop: build, (resume,) stream batches, step, report, checkpoint.
    `train_loop_config["loop"]` is the driver's `LoopConfig`."""
    import copy

    import ray.train
    import ray.train.torch

    import pixelclip
    from pipelines.stages.train.reader import iter_batches

    config: LoopConfig = train_loop_config["loop"]
    cfg = copy.deepcopy(config.model)
    if cfg.backbone.pretrained and storage.is_s3(cfg.backbone.pretrained):  # checked on the driver
        from pipelines.weights import local_weights

        cfg.backbone.pretrained = local_weights(cfg.backbone.pretrained, field="backbone.pretrained")
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.seed + rank)
    task = pixelclip.build_pixelclip(cfg, device=device)
    ddp = ray.train.torch.prepare_model(task, parallel_strategy="ddp")
    amp = torch.bfloat16 if device.type == "cuda" and config.precision == "bf16" else None
    trainer = pixelclip.Trainer(task, cfg, forward=ddp, autocast_dtype=amp, all_ok=lambda ok: _all_ok(ok, device))
    step = 0
    ckpt, stored = ray.train.get_checkpoint(), latest_checkpoint(config.run_uri)
    if ckpt is not None or stored is not None:
        step = restore(task, trainer, ckpt, stored)
        print(f"rank {rank} resumed at step {step}", flush=True)
    shard = ray.train.get_dataset_shard("train")
    per_worker = cfg.optim.batch_size // world
    progress = Progress(config.run_id, config.tracking_uri, cfg.optim.steps,
                         cfg.optim.batch_size) if rank == 0 else None
    val_cfg = config.validation
    validator, last_val = None, {}
    if val_cfg is not None and rank == 0:
        from pipelines.stages.train.validation import Validator

        validator = Validator(val_cfg)
        last_val = {**validator(task), "val_step": step}  # the starting point (or the resumed one)
        print(f"validation at step {step}: mIoU {last_val['val_miou']:.2f} on {len(validator)} images "
              f"({last_val['val_seconds']:.1f} s)", flush=True)
        if progress is not None and progress.sink is not None:
            progress.log(step, last_val)
    total, t_last, n_last, waited, losses = cfg.optim.steps, time.perf_counter(), 0, 0.0, []
    baseline = uninformed_loss(cfg.num_classes)
    if progress is not None:
        progress.start(step)
    try:
        while step < total:
            got_batch, t_ask = False, time.perf_counter()
            for batch in iter_batches(shard, per_worker, device):
                waited += time.perf_counter() - t_ask  # time this worker sat waiting for its next batch
                got_batch = True
                m = trainer.step(**batch)
                step += 1
                n_last += 1
                if math.isfinite(m["loss"]):
                    losses.append(m["loss"])
                due_log, due_ckpt = step % config.log_every == 0, step % config.checkpoint_every == 0
                due_val = val_cfg is not None and (step % val_cfg.every == 0 or step == total)
                if due_log or due_ckpt or due_val or step == total:
                    if validator is not None and due_val:
                        last_val = {**validator(task), "val_step": step}
                    m.update(last_val)  # the latest validation rides along in every report (Tune needs the metric)
                    now = time.perf_counter()
                    m.update(step=step, images_per_s=n_last * cfg.optim.batch_size / max(now - t_last, 1e-9),
                             data_wait_fraction=waited / max(now - t_last, 1e-9), skipped_total=trainer.skipped,
                             loss_mean=sum(losses) / len(losses) if losses else float("nan"))
                    m["loss_rel"] = m["loss_mean"] / baseline  # mean since the last report, comparable across K
                    t_last, n_last, waited, losses = now, 0, 0.0, []
                    if progress is not None:
                        progress(step, m)
                    report(m, task, trainer, step, config.model.to_dict(), due_ckpt or step == total)
                elif progress is not None:
                    progress.tick(step, m)
                if step >= total:
                    break
                t_ask = time.perf_counter()
            if not got_batch:
                raise RuntimeError(f"worker {rank} got no batch of {per_worker} images from {config.data}: "
                                   "too few training records for the global batch size")
    finally:  # what MLflow has not taken yet is written to the run's storage, replayed by the driver
        if progress is not None:
            progress.close(config.run_uri)
