"""Training checkpoints in a run's storage: write one through Ray Train, find the newest complete
one, restore a task and its trainer from it.

A run's storage holds `step_NNNNNNNN/checkpoint.safetensors` per kept checkpoint. Ray Train copies
each into place; on an object store a PUT is atomic, but a copy into a folder is not, and a worker
can die half-way through it. A safetensors file says its own size (an 8-byte header length, a JSON
header with every tensor's byte range), so a file shorter or longer than that is not a checkpoint
and the next older one is taken.
"""

from __future__ import annotations

import json
import logging
import struct
import tempfile
from pathlib import Path

import torch

from pipelines import storage

log = logging.getLogger("pixelclip.train")
CHECKPOINT_FILE = "checkpoint.safetensors"
_MAX_HEADER = 100 * 2**20  # safetensors' own limit on the JSON header


def _step_of(uri: str) -> int:
    return int(uri.rsplit("/step_", 1)[1].split("/")[0])


def expected_size(head: bytes) -> int | None:
    """The total size a safetensors file with these first bytes must have, or None when the bytes
    are not a safetensors header (too short, an absurd length, JSON that does not parse)."""
    if len(head) < 8:
        return None
    (n,) = struct.unpack("<Q", head[:8])
    if n > _MAX_HEADER or len(head) < 8 + n:
        return None
    try:
        header = json.loads(head[8:8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    return 8 + n + max(ends, default=0)


def is_complete(uri: str, opts: storage.StorageOptions | None = None) -> bool:
    """Whether the file at `uri` is a whole safetensors file (two small ranged reads, no tensors)."""
    try:
        actual = storage.size(uri, opts)
        if actual < 8:
            return False
        (n,) = struct.unpack("<Q", storage.read_range(uri, 0, 8, opts))
        if n > _MAX_HEADER or 8 + n > actual:
            return False
        want = expected_size(storage.read_range(uri, 0, 8 + n, opts))
    except (OSError, struct.error):
        return False
    return want == actual


def latest_checkpoint(run_uri: str, opts: storage.StorageOptions | None = None) -> str | None:
    """URI of the newest complete checkpoint under a run (`.../step_NNNNNNNN/checkpoint.safetensors`).

    Ray Train hands restarted workers the last checkpoint it registered; a checkpoint uploaded just
    before a worker died can be missing from that record, so the run's storage is the reference. A
    partial copy is passed over with a warning."""
    try:
        files = storage.list_files(run_uri, (CHECKPOINT_FILE,), opts)
    except storage.StorageError:
        return None
    for uri in sorted((f for f in files if "/step_" in f), key=_step_of, reverse=True):
        if is_complete(uri, opts):
            return uri
        log.warning("%s is incomplete (a copy cut short); taking an older checkpoint", uri)
    return None


def rng_state() -> dict:
    return {"torch": torch.get_rng_state().tolist()}


def restore(task, trainer, ckpt, stored: str | None) -> int:
    """Load the newer of Ray Train's checkpoint and the newest stored one into the task and
    trainer; returns the step to continue from."""
    from pixelclip.io import load_checkpoint, read_metadata

    with tempfile.TemporaryDirectory() as tmp:
        candidates = []
        if ckpt is not None:
            d = ckpt.to_directory(tmp + "/ray")
            candidates.append(Path(d) / CHECKPOINT_FILE)
        if stored is not None:
            local = Path(tmp) / "stored.safetensors"
            storage.download(stored, local)
            candidates.append(local)
        path = max(candidates, key=lambda p: read_metadata(p)["step"])
        meta = load_checkpoint(path, task, trainer.optimizer, trainer.scheduler)
    extra = meta.get("extra", {})
    trainer.step_count = int(meta["step"]) - int(extra.get("skipped", 0))
    trainer.skipped = int(extra.get("skipped", 0))
    if "rng" in extra:
        torch.set_rng_state(torch.tensor(extra["rng"]["torch"], dtype=torch.uint8))
    trainer.resumed_at = [*extra.get("resumed_at", []), int(meta["step"])]  # kept in later checkpoints
    return int(meta["step"])


def report(metrics: dict, task, trainer, step: int, cfg_dict: dict, with_checkpoint: bool) -> None:
    """`ray.train.report` the metrics, with a checkpoint written by rank 0 when `with_checkpoint`."""
    import ray.train

    if not with_checkpoint:
        ray.train.report(metrics)
        return
    from pixelclip.io import save_checkpoint

    rank = ray.train.get_context().get_world_rank()
    with tempfile.TemporaryDirectory() as d:
        ckpt = None
        if rank == 0:
            extra = {"skipped": trainer.skipped, "rng": rng_state(),
                     "resumed_at": getattr(trainer, "resumed_at", [])}
            save_checkpoint(Path(d) / CHECKPOINT_FILE, task, trainer.optimizer, trainer.scheduler, step=step,
                            config=cfg_dict, extra=extra)
            ckpt = ray.train.Checkpoint.from_directory(d)
        ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=f"step_{step:08d}")
