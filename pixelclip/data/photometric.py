"""Photometric operations of the training views on [S, S, 3] float32 RGB in [0, 1] (HWC numpy), in
place where possible: clamping, SSD-style jitter, colour jitter, grayscale, Gaussian blur. The random
draws take a `torch.Generator`, so a view depends only on its seed."""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

SSD_BRIGHTNESS = 32.0 / 255.0  # additive brightness delta, as a fraction of the full range
SSD_RANGE = (0.5, 1.5)  # contrast and saturation factors
SSD_HUE = 18.0 / 180.0  # hue delta in turns (18 of OpenCV's 0..180 hue scale)
GRAY = np.array([[0.2989, 0.587, 0.114]], dtype=np.float32)  # [1, 3] torchvision's RGB -> gray weights


# Random draws, all from an explicit generator.

def uniform(g: torch.Generator, lo: float, hi: float) -> float:
    """Uniform float in [lo, hi)."""
    return lo + (hi - lo) * torch.rand((), generator=g, device=g.device).item()


def coin(g: torch.Generator, p: float) -> bool:
    """True with probability p; p == 0 never draws True, p == 1 always does."""
    return torch.rand((), generator=g, device=g.device).item() < p


def randint(g: torch.Generator, lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi] (inclusive)."""
    return int(torch.randint(lo, hi + 1, (), generator=g, device=g.device).item())


def clip(x: np.ndarray) -> np.ndarray:
    """Clamp to [0, 1], in place (two OpenCV thresholds: faster than np.clip); use the returned array."""
    _, x = cv2.threshold(x, 1.0, 1.0, cv2.THRESH_TRUNC, dst=x)
    _, x = cv2.threshold(x, 0.0, 0.0, cv2.THRESH_TOZERO, dst=x)
    return x


def hsv_adjust(x: np.ndarray, saturation: float | None, hue: float | None) -> np.ndarray:
    """New [S, S, 3]: HSV saturation times `saturation` (clipped at 1) and hue shifted by `hue` turns, in one
    RGB -> HSV -> RGB round trip (OpenCV float HSV: H in degrees [0, 360), S and V in [0, 1])."""
    f = 1.0 if saturation is None else saturation
    d = 0.0 if hue is None else (hue % 1.0) * 360.0  # in [0, 360); OpenCV's HSV -> RGB reads H modulo 360
    hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)  # [S, S, 3]
    hsv = cv2.transform(hsv, np.array([[1, 0, 0, d], [0, f, 0, 0], [0, 0, 1, 0]], dtype=np.float32))
    if f > 1.0:  # saturation clipped at 1 (per-channel bound: only S)
        hsv = cv2.min(hsv, (math.inf, 1.0, math.inf, math.inf), dst=hsv)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def ssd_draw(g: torch.Generator) -> list[tuple]:
    """The random SSD distortion (detectron2 `ColorAugSSDTransform`, each step with p = 0.5) as a list of
    operations in the order they apply: ("brightness", delta), ("contrast", factor), ("hsv", saturation
    or None, hue or None). Drawn once, so that views at two resolutions get the same distortion."""
    ops: list[tuple] = []
    if coin(g, 0.5):
        ops.append(("brightness", uniform(g, -SSD_BRIGHTNESS, SSD_BRIGHTNESS)))
    contrast_first = coin(g, 0.5)
    steps = ["contrast", "saturation", "hue"] if contrast_first else ["saturation", "hue", "contrast"]
    hsv: dict[str, float] = {}  # saturation and hue are adjacent: applied together after the hue step
    for step in steps:
        if coin(g, 0.5):
            if step == "contrast":
                ops.append(("contrast", uniform(g, *SSD_RANGE)))
            elif step == "saturation":
                hsv[step] = uniform(g, *SSD_RANGE)
            else:
                hsv[step] = uniform(g, -SSD_HUE, SSD_HUE)
        if step == "hue" and hsv:
            ops.append(("hsv", hsv.get("saturation"), hsv.get("hue")))
    return ops


def ssd_apply(x: np.ndarray, ops: list[tuple]) -> np.ndarray:
    """Apply `ssd_draw`'s operations to x [S, S, 3] (pixel-wise, so any resolution takes the same ones)."""
    for op in ops:
        if op[0] == "brightness":
            x = clip(np.add(x, op[1], out=x))
        elif op[0] == "contrast":
            x = clip(np.multiply(x, op[1], out=x))
        else:
            x = hsv_adjust(x, op[1], op[2])
    return x


def brightness(x: np.ndarray, f: float) -> np.ndarray:
    """torchvision `adjust_brightness`: f x, clamped; in place."""
    return clip(np.multiply(x, f, out=x))


def contrast(x: np.ndarray, f: float) -> np.ndarray:
    """torchvision `adjust_contrast`: blend with the mean of the grayscale image, clamped; in place."""
    mean = float(GRAY[0] @ np.array(cv2.mean(x)[:3], dtype=np.float32))  # mean of the [S, S] gray image
    return clip(np.add(np.multiply(x, f, out=x), (1.0 - f) * mean, out=x))


def saturation(x: np.ndarray, f: float) -> np.ndarray:
    """torchvision `adjust_saturation`: blend with the grayscale image (one 3x3 colour matrix), clamped."""
    return clip(cv2.transform(x, (f * np.eye(3) + (1.0 - f) * GRAY).astype(np.float32)))  # [S, S, 3]


def colour_jitter(x: np.ndarray, strengths: list[float], g: torch.Generator) -> np.ndarray:
    """torchvision `ColorJitter` semantics: factors in [1 - s, 1 + s], hue in [-h, h], random order."""
    b, c, s, h = strengths
    order = torch.randperm(4, generator=g, device=g.device).tolist()
    for op in order:
        if op == 0 and b > 0:
            x = brightness(x, uniform(g, max(0.0, 1 - b), 1 + b))
        elif op == 1 and c > 0:
            x = contrast(x, uniform(g, max(0.0, 1 - c), 1 + c))
        elif op == 2 and s > 0:
            x = saturation(x, uniform(g, max(0.0, 1 - s), 1 + s))
        elif op == 3 and h > 0:
            x = hsv_adjust(x, None, uniform(g, -min(h, 0.5), min(h, 0.5)))
    return clip(x)


def grayscale(x: np.ndarray) -> np.ndarray:
    """[S, S, 3] -> [S, S, 3] with 3 identical channels (torchvision's `rgb_to_grayscale` weights)."""
    return cv2.cvtColor(cv2.transform(x, GRAY), cv2.COLOR_GRAY2RGB)  # [S, S] -> [S, S, 3]


def blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur, kernel 2 * ceil(3 sigma) + 1 capped to the image side (kept odd); reflect borders
    (OpenCV's BORDER_REFLECT_101 is torch's 'reflect'), the kernel of torchvision's `gaussian_blur`."""
    side = min(x.shape[:2])
    k = min(2 * math.ceil(3 * sigma) + 1, side if side % 2 else side - 1)
    if k < 3:
        return x
    return cv2.GaussianBlur(x, (k, k), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)
