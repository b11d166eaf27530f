"""Shared fixtures: tiny random-initialised models and synthetic batches (no downloads)."""

from __future__ import annotations

import socket

import pytest
import torch

import pixelclip


def synthetic_batch(cfg, batch: int = 4, n_masks: int = 6, seed: int = 0, side: int = 16):
    """Random images and square masks at the config's resolutions."""
    g = torch.Generator().manual_seed(seed)
    S, M = cfg.backbone.image_size, cfg.data.mask_size
    weak = torch.rand(batch, 3, S, S, generator=g)
    masks = torch.zeros(batch, n_masks, M, M, dtype=torch.bool)
    for b in range(batch):
        for n in range(n_masks):
            y, x = torch.randint(0, M - side, (2,), generator=g).tolist()
            masks[b, n, y:y + side, x:x + side] = True
    return {"weak": weak, "strong": weak.clone(), "masks": masks}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_cfg():
    return pixelclip.load_config("tiny")


@pytest.fixture
def tiny_task(tiny_cfg):
    return pixelclip.build_pixelclip(tiny_cfg)
