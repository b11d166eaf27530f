"""Variants of the last ViT block for dense features (the `mode` of `DenseEncoder`).

Each readout maps the tokens entering the last `ResidualAttentionBlock` of an open_clip ViT,
[B, L, C] (batch_first) or [L, B, C], to the tokens handed to `ln_post` and the projection (same
layout). Token 0 is CLS; it takes part in the attention like any other token and is dropped later.
- "plain": the block as it is: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`.
- "maskclip" (MaskCLIP; the paper's, used in training): attention output `out_proj(v)` (value path,
  no query-key mixing), residual = the input CLS token broadcast to every position, MLP kept.
- "sclip" (SCLIP): per head `(softmax(q q^T s) + softmax(k k^T s)) @ v`, then `out_proj`; no
  residual, no MLP (as in SCLIP's released inference code).
- "clearclip" (ClearCLIP): per head `softmax(q q^T s) @ v`, then `out_proj`; no residual, no MLP.
q, k, v come from `ln_1(x)` and the packed `in_proj` (rows q, k, v); s = head_dim ** -0.5. The
attention branch keeps the block's layer scale `ls_1` (identity in CLIPs without layer scale).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def plain(blk: nn.Module, x: torch.Tensor, batch_first: bool) -> torch.Tensor:
    """The last block unchanged."""
    return blk(x)


def maskclip(blk: nn.Module, x: torch.Tensor, batch_first: bool) -> torch.Tensor:
    """Value path, input CLS as the residual, MLP kept."""
    attn: nn.MultiheadAttention = blk.attn
    W = attn.embed_dim
    w_v = attn.in_proj_weight[2 * W:]  # value rows of the packed q, k, v projection
    b_v = attn.in_proj_bias[2 * W:] if attn.in_proj_bias is not None else None
    val = attn.out_proj(F.linear(blk.ln_1(x), w_v, b_v))  # value path, no query-key mixing
    cls_in = x[:, :1] if batch_first else x[:1]  # input CLS token, broadcast to all positions
    x = cls_in + blk.ls_1(val)
    return x + blk.ls_2(blk.mlp(blk.ln_2(x)))


def _self_correlation(blk: nn.Module, x: torch.Tensor, batch_first: bool, use_k: bool) -> torch.Tensor:
    """ls_1(out_proj(sum over a in {q[, k]} of softmax(a a^T s) @ v)), per head; no residual, no MLP."""
    attn: nn.MultiheadAttention = blk.attn
    h = blk.ln_1(x)
    if not batch_first:
        h = h.transpose(0, 1)  # [B, L, C]
    B, L, C = h.shape
    nh = attn.num_heads
    hd = C // nh
    qkv = F.linear(h, attn.in_proj_weight, attn.in_proj_bias)  # [B, L, 3C], packed rows q, k, v
    q, k, v = qkv.view(B, L, 3, nh, hd).permute(2, 0, 3, 1, 4)  # each [B, nh, L, hd]
    s = hd ** -0.5
    out = F.scaled_dot_product_attention(q, q, v, scale=s)  # softmax(q q^T s) @ v: [B, nh, L, hd]
    if use_k:
        out = out + F.scaled_dot_product_attention(k, k, v, scale=s)  # + softmax(k k^T s) @ v
    out = blk.ls_1(attn.out_proj(out.transpose(1, 2).reshape(B, L, C)))  # [B, L, C]
    return out if batch_first else out.transpose(0, 1)


def sclip(blk: nn.Module, x: torch.Tensor, batch_first: bool) -> torch.Tensor:
    """SCLIP correlative self-attention: q-q plus k-k attention."""
    return _self_correlation(blk, x, batch_first, use_k=True)


def clearclip(blk: nn.Module, x: torch.Tensor, batch_first: bool) -> torch.Tensor:
    """ClearCLIP query-query attention."""
    return _self_correlation(blk, x, batch_first, use_k=False)


READOUTS: dict[str, Callable[[nn.Module, torch.Tensor, bool], torch.Tensor]] = {
    "plain": plain, "maskclip": maskclip, "sclip": sclip, "clearclip": clearclip}
