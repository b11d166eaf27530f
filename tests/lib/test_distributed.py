"""Data-parallel training across two gloo processes: global clustering, identical replicas."""

import pytest
import torch
import torch.multiprocessing as mp

from tests.conftest import free_port, synthetic_batch


def _worker(rank, world, port, out):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    import pixelclip

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        cfg = pixelclip.load_config("tiny")
        task = pixelclip.build_pixelclip(cfg)  # same seed: identical replicas to start with
        trainer = pixelclip.Trainer(task, cfg, forward=DDP(task))
        batch = synthetic_batch(cfg, batch=2, seed=rank)  # each rank sees different images
        losses = [trainer.step(**batch)["loss"] for _ in range(3)]
        out[rank] = {"losses": losses, "tokens": task.prompts.tokens.detach().clone(),
                     "pos": task.clip.visual.positional_embedding.detach().clone(),
                     "teacher": task.teacher.visual.positional_embedding.detach().clone(),
                     "assign": task(**batch).assign}
    finally:
        dist.destroy_process_group()


@pytest.mark.dist
def test_ddp_steps_keep_replicas_identical():
    out = mp.get_context("spawn").Manager().dict()
    mp.start_processes(_worker, args=(2, free_port(), out), nprocs=2, start_method="spawn")
    a, b = out[0], out[1]
    assert all(torch.isfinite(torch.tensor(x["losses"])).all() for x in (a, b))
    assert a["losses"] != b["losses"]  # different data per rank
    for key in ("tokens", "pos", "teacher"):  # gradients were averaged: parameters agree
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    assert (a["assign"] >= 0).all() and (b["assign"] >= 0).all()
