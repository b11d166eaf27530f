import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from pixelclip.model.cluster import cluster_usage, mask_pool, merged_targets, sinkhorn
from tests.conftest import free_port


def test_mask_pool_equals_hand_computed_mean():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 5, 4, 6, generator=g)  # [B, D, h, w]
    masks = torch.rand(2, 3, 16, 24, generator=g) > 0.6  # [B, N, H, W]
    pooled, area = mask_pool(feats, masks)
    up = F.interpolate(feats, size=(16, 24), mode="bilinear", align_corners=False)  # [B, D, H, W]
    for b in range(2):
        for n in range(3):
            m = masks[b, n]
            torch.testing.assert_close(pooled[b, n], up[b][:, m].mean(dim=1), rtol=1e-5, atol=1e-5)
            assert area[b, n] == m.sum()
    # a mask of one pixel is its feature at that pixel; an empty mask pools to zero
    one = torch.zeros(1, 2, 16, 24, dtype=torch.bool)
    one[0, 0, 3, 7] = True
    p, a = mask_pool(feats[:1], one)
    torch.testing.assert_close(p[0, 0], up[0, :, 3, 7], rtol=1e-5, atol=1e-5)
    assert a.tolist() == [[1.0, 0.0]] and torch.equal(p[0, 1], torch.zeros(5))


def _logits(m, k, eps, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    a = F.normalize(torch.randn(m, 16, generator=g), dim=-1)
    b = F.normalize(torch.randn(k, 16, generator=g), dim=-1)
    return scale * (a @ b.T) / eps


@pytest.mark.parametrize(("m", "k", "eps", "iters"), [
    (500, 64, 1.0, 3),      # the ConvNeXt recipe: 3 iterations reach the marginals
    (40, 64, 1.0, 3),       # fewer masks than clusters
    (1, 64, 0.01, 3),       # a single mask
    (500, 64, 0.01, 200),   # the sharp ViT recipe needs more iterations to reach 1e-3
    (40, 64, 0.01, 200),
])
def test_sinkhorn_marginals(m, k, eps, iters):
    q = sinkhorn(_logits(m, k, eps), iters)
    assert q.shape == (m, k) and torch.isfinite(q).all() and (q >= 0).all()
    torch.testing.assert_close(q.sum(1), torch.ones(m), atol=1e-3, rtol=0)  # each mask: mass 1
    torch.testing.assert_close(q.sum(0), torch.full((k,), m / k), atol=1e-3, rtol=0)  # equipartition


def test_sinkhorn_three_iterations_balance_sharp_logits():
    """With epsilon 0.01 the default 3 iterations do not converge, but when every mask prefers the
    same few clusters they still spread the masks over many more of them than the argmax does."""
    logits = _logits(500, 64, 0.01, scale=0.3)
    logits[:, :4] += 30.0  # every mask is closest to one of the first four clusters
    q = sinkhorn(logits, 3)
    torch.testing.assert_close(q.sum(1), torch.ones(500), atol=1e-5, rtol=0)
    raw_used, raw_entropy = cluster_usage(logits.argmax(1), 64)
    used, entropy = cluster_usage(q.argmax(1), 64)
    assert raw_used <= 4 and used >= 32 and entropy > raw_entropy + 1.5


def test_sinkhorn_no_overflow_and_empty():
    logits = torch.tensor([[300.0, -300.0], [-300.0, 300.0]])  # exp would overflow float32
    q = sinkhorn(logits, 3)
    assert torch.isfinite(q).all()
    assert sinkhorn(torch.zeros(0, 8), 3).shape == (0, 8)


def _dist_worker(rank, world, port, logits, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        half = logits.shape[0] // 2
        part = logits[:half] if rank == 0 else logits[half:]
        out[rank] = sinkhorn(part, 3)
    finally:
        dist.destroy_process_group()


@pytest.mark.dist
def test_sinkhorn_all_reduce_over_two_processes():
    """Two gloo processes with half the masks each give the single-process result on all masks."""
    logits = _logits(60, 8, 0.05, seed=3)
    manager = mp.get_context("spawn").Manager()
    out = manager.dict()
    mp.start_processes(_dist_worker, args=(2, free_port(), logits, out), nprocs=2, start_method="spawn")
    joint = torch.cat([out[0], out[1]])
    torch.testing.assert_close(joint, sinkhorn(logits, 3), rtol=1e-5, atol=1e-6)
    local = sinkhorn(logits[:30], 3)  # what rank 0 would get without the all-reduce: different
    assert not torch.allclose(local, out[0], atol=1e-4)


def test_merged_targets_union_per_cluster():
    masks = torch.zeros(1, 3, 4, 4, dtype=torch.bool)
    masks[0, 0, 0, :2] = True
    masks[0, 1, 0, 1:3] = True  # overlaps mask 0 at (0, 1)
    masks[0, 2, 3, 3] = True
    t = merged_targets(masks, torch.tensor([[1, 1, -1]]), num_clusters=3)
    assert t.shape == (1, 3, 4, 4)
    assert t[0, 1, 0].tolist() == [1, 1, 1, 0] and t[0, 1].sum() == 3  # union, clamped to 1
    assert t[0, 0].sum() == 0 and t[0, 2].sum() == 0  # the dropped mask (-1) goes nowhere


def test_cluster_usage():
    used, ent = cluster_usage(torch.tensor([0, 0, 1, 1, -1]), 4)
    assert used == 2 and abs(ent - torch.log(torch.tensor(2.0)).item()) < 1e-6
    assert cluster_usage(torch.tensor([-1]), 4) == (0, 0.0)
