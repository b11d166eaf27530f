"""Mask pooling, Sinkhorn-Knopp online clustering (eq. 3-4 of the paper), merged targets.

Collectives live in `_all_reduce` alone: when a process group is initialised the Sinkhorn sums are
all-reduced, so the equipartition holds over the global batch; without one they are local.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F


def _all_reduce(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce over the default process group, or nothing when there is none."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return t


def interp_matrix(out_size: int, in_size: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """[out, in] matrix A with A @ v == linear interpolation of v (align_corners=False)."""
    eye = torch.eye(in_size, device=device, dtype=dtype).unsqueeze(0)  # [1, in, in]
    return F.interpolate(eye, size=out_size, mode="linear", align_corners=False)[0].T  # [out, in]


def mask_pool(features: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Area-normalised mean of bilinearly upsampled features over each mask.

    Equal to `F.interpolate(features, masks.shape[-2:], mode="bilinear")` pooled over each mask, but
    computed through the (separable) adjoint of the upsampling, never materialising the upsampled
    map. Args: features [B, D, h, w]; masks [B, N, H, W] (bool or {0,1}).
    Returns: pooled [B, N, D] (zero for empty masks), area [B, N] in mask pixels.
    """
    _B, _D, h, w = features.shape
    H, W = masks.shape[-2:]
    m = masks.to(features.dtype)  # [B, N, H, W]
    a_h = interp_matrix(H, h, features.device, features.dtype)  # [H, h]
    a_w = interp_matrix(W, w, features.device, features.dtype)  # [W, w]
    weights = a_h.T @ (m @ a_w)  # [B, N, h, w]: each mask's weight on each feature cell
    area = m.sum(dim=(-2, -1))  # [B, N]
    pooled = torch.einsum("bdhw,bnhw->bnd", features, weights) / area.clamp(min=1).unsqueeze(-1)
    return pooled, area


SINKHORN_STARTS = ("softmax", "exp")


@torch.no_grad()
def sinkhorn(logits: torch.Tensor, n_iters: int = 3, start: str = "softmax") -> torch.Tensor:
    """Soft assignment of M masks to K clusters with the equipartition constraint (SwAV style).

    logits [M, K] = cos(mask feature, cluster feature) / epsilon for this process's masks.
    The plan starts from Q [K, M] = the per-mask softmax of the logits over the K clusters ("softmax",
    the authors') or exp(logits - global max) ("exp", SwAV's); normalised to total 1; then `n_iters`
    times: rows to 1/K, columns to 1/M; finally columns scaled back to sum 1. The two starts differ
    because the first step balances the clusters: the softmax gives every mask the same mass before it.
    Sums and M are global over the process group. Float64 throughout (exp(-2 / epsilon) must not
    underflow for small epsilon), and the plan is returned in float64 so that the argmax reads it there.
    Returns Q [M, K] float64: each row sums to 1; each column sums to about M_global / K.
    """
    if start not in SINKHORN_STARTS:
        raise ValueError(f"sinkhorn start {start!r} is not one of {', '.join(SINKHORN_STARTS)}")
    K = logits.shape[1]
    q = logits.detach().to(torch.float64)
    count = _all_reduce(torch.tensor([float(q.shape[0])], device=q.device, dtype=torch.float64))
    m_global = float(count.item())
    if m_global == 0:
        return q.new_zeros(q.shape)
    if start == "softmax":
        q = torch.softmax(q, dim=1).T  # [K, M]: each mask's column sums to 1
    else:
        local_max = q.max() if q.numel() else torch.tensor(-math.inf, device=q.device, dtype=q.dtype)
        shift = _all_reduce(local_max.reshape(1).clone(), op="max")  # one scalar for every process
        q = torch.exp(q - shift).T  # [K, M]
    tiny = torch.finfo(q.dtype).tiny
    q /= _all_reduce(q.sum().reshape(1)).clamp(min=tiny)  # total mass 1
    for _ in range(n_iters):
        rows = _all_reduce(q.sum(dim=1, keepdim=True))  # [K, 1] global cluster masses
        q /= rows.clamp(min=tiny)
        q /= K  # each cluster: 1/K
        q /= q.sum(dim=0, keepdim=True).clamp(min=tiny)  # [1, M] each mask's mass (local)
        q /= m_global  # each mask: 1/M
    q *= m_global  # columns (masks) sum to 1
    return q.T  # [M, K]


@torch.no_grad()
def assign_masks(features: torch.Tensor, masks: torch.Tensor, class_feats: torch.Tensor, epsilon: float,
                 sinkhorn_iters: int = 3, balanced: bool = True, start: str = "softmax"
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard assignment of every mask to one of K classes: mask pooling, cosine logits, plan, argmax.

    features [B, D, h, w] (the teacher's, any dtype); masks [B, N, H, W] bool; class_feats [K, D].
    Runs outside autocast whatever the caller's precision: pooling and the cosine logits in float32,
    the plan in float64 (Sinkhorn when `balanced`, else a plain softmax: fixed class names), and the
    argmax on the float64 plan, so bf16 training assigns exactly as fp32 does for the same features.
    Returns assign [B, N] long (-1 for masks of at most one pixel, which are dropped) and the plan
    [M, K] float64 of the M kept masks.
    """
    with torch.autocast(features.device.type, enabled=False):
        pooled, area = mask_pool(features.float(), masks)  # [B, N, D], [B, N]
        valid = area > 1  # masks of at most one pixel are dropped
        cls = F.normalize(class_feats.float(), dim=-1)  # [K, D]
        logits = F.normalize(pooled[valid], dim=-1) @ cls.T / epsilon  # [M, K] float32
        # [M, K] float64: the Sinkhorn plan, or a plain softmax for fixed class names
        q = sinkhorn(logits, sinkhorn_iters, start) if balanced else torch.softmax(logits.double(), dim=1)
        assign = torch.full(valid.shape, -1, dtype=torch.long, device=masks.device)  # [B, N]
        assign[valid] = q.argmax(dim=1)
    return assign, q


def merged_targets(masks: torch.Tensor, assign: torch.Tensor, num_clusters: int) -> torch.Tensor:
    """Union of each image's masks per assigned cluster.

    masks [B, N, H, W] bool; assign [B, N] long cluster index, -1 for dropped masks.
    Returns targets [B, K, H, W] float in {0, 1}.
    """
    B, N, H, W = masks.shape
    out = torch.zeros(B * num_clusters, H * W, device=masks.device, dtype=torch.float32)
    keep = assign >= 0  # [B, N]
    img = torch.arange(B, device=masks.device).unsqueeze(1).expand(B, N)[keep]  # [M]
    out.index_add_(0, img * num_clusters + assign[keep], masks[keep].flatten(1).to(out.dtype))
    return out.clamp_(max=1.0).view(B, num_clusters, H, W)


def cluster_usage(assign: torch.Tensor, num_clusters: int) -> tuple[int, float]:
    """(clusters with at least one mask, entropy in nats of the cluster-size distribution)."""
    a = assign[assign >= 0]
    if a.numel() == 0:
        return 0, 0.0
    counts = torch.bincount(a, minlength=num_clusters).float()
    p = counts[counts > 0] / counts.sum()
    return int((counts > 0).sum()), float(-(p * p.log()).sum())
