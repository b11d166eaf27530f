import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from pixelclip.model.cluster import assign_masks, cluster_usage, mask_pool, merged_targets, sinkhorn
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
@pytest.mark.parametrize("start", ["softmax", "exp"])
def test_sinkhorn_marginals(m, k, eps, iters, start):
    q = sinkhorn(_logits(m, k, eps), iters, start)
    assert q.shape == (m, k) and q.dtype == torch.float64 and torch.isfinite(q).all() and (q >= 0).all()
    one = torch.ones(m, dtype=torch.float64)
    torch.testing.assert_close(q.sum(1), one, atol=1e-3, rtol=0)  # each mask: mass 1
    torch.testing.assert_close(q.sum(0), torch.full((k,), m / k, dtype=torch.float64), atol=1e-3, rtol=0)


def test_sinkhorn_starts_from_a_per_mask_softmax():
    """The default plan is the authors': Q = softmax over the clusters of each mask's logits, transposed,
    then total 1, then three times rows to 1/K and columns to 1/M, then columns to 1. Written out here
    step by step; the SwAV start exp(logits - max) gives a different plan on the same logits."""
    logits = _logits(50, 8, 0.05, seed=1).double()
    logits[:10] *= 3.0  # some confident masks: the starts differ where masks differ in confidence
    q = torch.softmax(logits, dim=1).T  # [K, M]
    q = q / q.sum()
    for _ in range(3):
        q = q / q.sum(dim=1, keepdim=True) / 8
        q = q / q.sum(dim=0, keepdim=True) / 50
    expected = (q * 50).T
    torch.testing.assert_close(sinkhorn(logits, 3), expected, rtol=1e-12, atol=1e-12)
    swav = sinkhorn(logits, 3, start="exp")
    assert (swav - expected).abs().max() > 1e-3
    with pytest.raises(ValueError, match="sinkhorn start 'log'"):
        sinkhorn(logits, 3, start="log")


def _clip_like(b=4, n=24, k=16, d=64, seed=0):
    """Teacher features and class features whose cosines sit near 0.2 +- 0.03, as real CLIP's do."""
    g = torch.Generator().manual_seed(seed)
    common = F.normalize(torch.randn(d, generator=g), dim=0)
    cls = F.normalize(common + 0.9 * F.normalize(torch.randn(k, d, generator=g), dim=1), dim=1)  # [K, D]
    feats = (common[None, :, None, None] * 0.3 + torch.randn(b, d, 8, 8, generator=g) * 0.05)  # [B, D, 8, 8]
    masks = torch.zeros(b, n, 32, 32, dtype=torch.bool)
    for i in range(b):
        for j in range(n):
            y, x = torch.randint(0, 28, (2,), generator=g).tolist()
            masks[i, j, y:y + 4 + j % 5, x:x + 4] = True
    return feats, masks, cls


@pytest.mark.parametrize("balanced", [True, False])
def test_assignment_under_bf16_autocast_equals_fp32(balanced):
    """Pooling, logits, plan and argmax leave autocast: the same features give the same assignment
    under CPU bf16 autocast as in fp32 (bf16 matmuls and a bf16 plan would flip some of them)."""
    feats, masks, cls = _clip_like()
    ref, _ = assign_masks(feats, masks, cls, epsilon=0.01, balanced=balanced)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, q = assign_masks(feats, masks, cls, epsilon=0.01, balanced=balanced)
    assert q.dtype == torch.float64 and torch.equal(got, ref)
    # the same inputs rounded to bf16 before and with bf16 logits: assignments would differ
    pooled, area = mask_pool(feats, masks)
    bf = (F.normalize(pooled[area > 1], dim=-1).bfloat16() @ cls.bfloat16().T / 0.01)
    flipped = sinkhorn(bf.float(), 3).argmax(1) if balanced else bf.float().argmax(1)
    assert (flipped != ref[area > 1]).any(), "the test's features must be ones where bf16 changes assignments"


def test_sinkhorn_three_iterations_balance_sharp_logits():
    """With epsilon 0.01 the default 3 iterations do not converge, but when every mask prefers the
    same few clusters they still spread the masks over many more of them than the argmax does."""
    logits = _logits(500, 64, 0.01, scale=0.3)
    logits[:, :4] += 30.0  # every mask is closest to one of the first four clusters
    q = sinkhorn(logits, 3)
    torch.testing.assert_close(q.sum(1), torch.ones(500, dtype=torch.float64), atol=1e-5, rtol=0)
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
