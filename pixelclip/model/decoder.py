"""The light decoder of training: cosine maps [B, K, h, w] -> mask logits [B, K, H, W].

Each of the K maps is decoded on its own (reshaped to [B*K, 1, h, w]): conv3x3 1->hidden; transposed
conv x2 + double conv (GroupNorm); transposed conv x2 to `mid` channels + double conv; conv3x3
mid->1; bilinear to the mask resolution. Used only in training; inference reads the features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _double_conv(ch: int, groups: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(ch, ch, 3, padding=1, bias=False), nn.GroupNorm(groups, ch), nn.ReLU(inplace=True),
        nn.Conv2d(ch, ch, 3, padding=1, bias=False), nn.GroupNorm(groups, ch), nn.ReLU(inplace=True),
    )


class MaskDecoder(nn.Module):
    """Args: hidden, mid: channels; groups: GroupNorm groups of the two double convs (one int for both, or
    (hidden block, mid block); the authors': (4, 2)); out_size: mask resolution (square).
    Forward: cos maps [B, K, h, w] -> logits [B, K, out_size, out_size]."""

    def __init__(self, hidden: int = 64, mid: int = 32, groups: int | tuple[int, int] = (4, 2), out_size: int = 256):
        super().__init__()
        g_hidden, g_mid = (groups, groups) if isinstance(groups, int) else groups
        self.stem = nn.Conv2d(1, hidden, 3, padding=1)
        self.up1 = nn.ConvTranspose2d(hidden, hidden, 2, stride=2)
        self.conv1 = _double_conv(hidden, g_hidden)
        self.up2 = nn.ConvTranspose2d(hidden, mid, 2, stride=2)
        self.conv2 = _double_conv(mid, g_mid)
        self.head = nn.Conv2d(mid, 1, 3, padding=1)
        self.out_size = out_size

    def forward(self, cos: torch.Tensor) -> torch.Tensor:
        B, K, h, w = cos.shape
        x = self.stem(cos.reshape(B * K, 1, h, w))  # [B*K, hidden, h, w]
        x = self.conv1(self.up1(x))  # [B*K, hidden, 2h, 2w]
        x = self.conv2(self.up2(x))  # [B*K, mid, 4h, 4w]
        x = self.head(x)  # [B*K, 1, 4h, 4w]
        x = F.interpolate(x, size=(self.out_size, self.out_size), mode="bilinear", align_corners=False)
        return x.view(B, K, self.out_size, self.out_size)
