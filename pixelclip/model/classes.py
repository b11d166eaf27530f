"""What unlabeled masks are grouped onto, besides the learnable class prompts (`ClassPrompts`).

The paper's ablations (Table 3a, 3d) replace the learnable class prompts by:
- `ClassCentroids`: K learnable vectors in CLIP's joint space, with no text encoder behind them;
- `FixedClasses`: the text features of a fixed list of class names (assignment by argmax).
Every class module answers `num_classes` and `forward(text) -> [K, D]` (not necessarily normalised),
so the task treats them alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .prompts import TextEncoder


class ClassCentroids(nn.Module):
    """K learnable class features [K, D] in the joint space, initialised at random unit vectors (`seed`)."""

    def __init__(self, num_classes: int, dim: int, seed: int = 0, device: str | torch.device = "cpu"):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        init = F.normalize(torch.randn(num_classes, dim, generator=gen), dim=-1)
        self.centroids = nn.Parameter(init.to(device))

    @property
    def num_classes(self) -> int:
        return self.centroids.shape[0]

    def forward(self, text: TextEncoder | None = None) -> torch.Tensor:
        return self.centroids


class FixedClasses(nn.Module):
    """The frozen text features of `class_names` in `template` (one prompt each, as in training)."""

    def __init__(self, text: TextEncoder, class_names: Sequence[str], template: str):
        super().__init__()
        self.class_names = list(class_names)
        feats = text.class_embeddings(self.class_names, [template])  # [K, D], normalised, no grad
        self.register_buffer("features", feats, persistent=False)  # recomputed from the names at build

    @property
    def num_classes(self) -> int:
        return self.features.shape[0]

    def forward(self, text: TextEncoder | None = None) -> torch.Tensor:
        return self.features
