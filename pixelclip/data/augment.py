"""Teacher/student views of one training sample: shared geometry, then weak and strong photometrics.

PixelCLIP trains on an image plus N unlabeled binary masks. The momentum teacher sees a weakly
augmented view, the student a strongly augmented one; both share the same geometry so the same
masks apply to both. Per sample (`ViewAugment.__call__`):

1. Geometry, shared. Resize so the short side is `data.resize_short` (bilinear, antialiased), take a
   random `data.crop` square (zero padding where the resized image is smaller, placed at a random
   offset), flip horizontally with probability `data.flip_p`, resize to the model input
   `image_size`. Masks follow the same transform with nearest sampling, straight to `mask_size`:
   every output mask pixel reads the source pixel under its centre, which is the composition of the
   nearest resizes without materialising the full-resolution masks (padding reads False).
2. Shared photometric (`data.ssd_jitter`): SSD-style distortion as in detectron2's
   `ColorAugSSDTransform` -- additive brightness (+-32/255), multiplicative contrast (x[0.5, 1.5]),
   HSV saturation (x[0.5, 1.5]) and hue (+-18 of OpenCV's 180, i.e. +-0.1 turn), each with
   probability 0.5, contrast before or after the saturation/hue pair at random. Result: the weak view.
3. Student only, on a copy of the weak view: colour jitter (`data.jitter` strengths, random order,
   probability `data.jitter_p`), grayscale (`data.gray_p`), Gaussian blur (`data.blur_p`, sigma
   uniform in `data.blur_sigma` pixels of the crop, rescaled to `image_size`), and CutOut
   (`data.cutout_p`): one black box with sides uniform fractions in `data.cutout_scale` of the image
   side. `keep` [M, M] is False at mask pixels whose centre falls inside the box.

All randomness is drawn from the `torch.Generator` passed in (a freshly, non-deterministically seeded
one when None), so a seed fixes the output; the global RNG is never used. `collate` stacks views
into a batch, padding the mask lists with all-False masks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torchvision.transforms.v2.functional as TF

from pixelclip.config import DataConfig

SSD_BRIGHTNESS = 32.0 / 255.0  # additive brightness delta, as a fraction of the full range
SSD_RANGE = (0.5, 1.5)  # contrast and saturation factors
SSD_HUE = 18.0 / 180.0  # hue delta in turns (18 of OpenCV's 0..180 hue scale)


@dataclass
class Views:
    weak: torch.Tensor  # [3, S, S] float32 in [0, 1], teacher input
    strong: torch.Tensor  # [3, S, S] float32 in [0, 1], student input
    masks: torch.Tensor  # [N, M, M] bool, M = mask_size
    keep: torch.Tensor  # [M, M] bool, False where CutOut removed pixels


# ----------------------------------------------------------------------------------------------
# Random draws, all from an explicit generator.

def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand((), generator=g, device=g.device).item()


def _coin(g: torch.Generator, p: float) -> bool:
    """True with probability p; p == 0 never draws True, p == 1 always does."""
    return torch.rand((), generator=g, device=g.device).item() < p


def _randint(g: torch.Generator, lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi] (inclusive)."""
    return int(torch.randint(lo, hi + 1, (), generator=g, device=g.device).item())


# ----------------------------------------------------------------------------------------------
# Validation.

def _check_inputs(image: torch.Tensor, masks: torch.Tensor) -> None:
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must be a [3, H, W] tensor, got shape {shape}")
    if image.dtype != torch.uint8 and not image.dtype.is_floating_point:
        raise ValueError(f"image dtype must be uint8 or floating point, got {image.dtype}")
    if hasattr(masks, "sample"):  # masks kept as run lengths (e.g. rle.RLEMasks), sampled on demand
        if tuple(masks.shape[1:]) != tuple(image.shape[1:]):
            raise ValueError(f"masks H, W {tuple(masks.shape[1:])} must match image H, W "
                             f"{tuple(image.shape[1:])}")
        return
    if not isinstance(masks, torch.Tensor) or masks.dim() != 3 or masks.dtype != torch.bool:
        shape = tuple(masks.shape) if isinstance(masks, torch.Tensor) else type(masks).__name__
        dtype = masks.dtype if isinstance(masks, torch.Tensor) else None
        raise ValueError(f"masks must be a [N, H, W] bool tensor, got shape {shape} dtype {dtype}")
    if masks.shape[1:] != image.shape[1:]:
        raise ValueError(f"masks H, W {tuple(masks.shape[1:])} must match image H, W "
                         f"{tuple(image.shape[1:])}")


# ----------------------------------------------------------------------------------------------
# Geometry.

@dataclass
class _Geometry:
    resized: tuple[int, int]  # (Hr, Wr) after the short-side resize
    top: int  # crop offset in the resized image; negative: zero padding above / left
    left: int
    flip: bool


def _sample_geometry(cfg: DataConfig, h: int, w: int, g: torch.Generator) -> _Geometry:
    scale = cfg.resize_short / min(h, w)
    hr, wr = max(1, round(h * scale)), max(1, round(w * scale))
    # Crop offset: inside the image when it is large enough, else the image lands at a random
    # offset inside the zero-padded crop (negative offsets).
    top = _randint(g, min(0, hr - cfg.crop), max(0, hr - cfg.crop))
    left = _randint(g, min(0, wr - cfg.crop), max(0, wr - cfg.crop))
    return _Geometry((hr, wr), top, left, _coin(g, cfg.flip_p))


def _geometry_image(image: torch.Tensor, geo: _Geometry, crop: int, size: int) -> torch.Tensor:
    """[3, H, W] -> [3, size, size]: short-side resize, crop (zero padded), flip, resize."""
    x = image
    if tuple(x.shape[-2:]) != geo.resized:
        x = TF.resize(x, list(geo.resized), antialias=True)  # [3, Hr, Wr]
    x = TF.crop(x, geo.top, geo.left, crop, crop)  # [3, crop, crop]
    if geo.flip:
        x = TF.horizontal_flip(x)
    if crop != size:
        x = TF.resize(x, [size, size], antialias=True)  # [3, S, S]
    return x


def _nearest_index(out: int, crop: int, offset: int, resized: int, src: int, device) -> tuple:
    """Source index under each of `out` pixel centres of the crop, and whether it is inside the image."""
    centres = (torch.arange(out, device=device, dtype=torch.float64) + 0.5) * (crop / out)  # [out]
    pos = centres + offset  # position in the resized image
    valid = (pos >= 0) & (pos < resized)  # [out]
    idx = torch.floor(pos * (src / resized)).long().clamp_(0, src - 1)  # [out]
    return idx, valid


def _geometry_masks(masks, geo: _Geometry, crop: int, size: int) -> torch.Tensor:
    """[N, H, W] bool (a tensor, or an object with `.shape` and `.sample(rows, cols)`) ->
    [N, size, size] bool, nearest sampling; padding reads False."""
    h, w = masks.shape[-2:]
    device = masks.device if isinstance(masks, torch.Tensor) else "cpu"
    rows, vr = _nearest_index(size, crop, geo.top, geo.resized[0], h, device)  # [M]
    cols, vc = _nearest_index(size, crop, geo.left, geo.resized[1], w, device)  # [M]
    if geo.flip:  # sample centres are symmetric in the crop, so a flip reverses the columns
        cols, vc = cols.flip(0), vc.flip(0)
    if hasattr(masks, "sample"):
        out = torch.from_numpy(masks.sample(rows.numpy(), cols.numpy()))  # [N, M, M]
    else:
        out = masks[:, rows[:, None], cols[None, :]]  # [N, M, M]
    return out & (vr[:, None] & vc[None, :])


# ----------------------------------------------------------------------------------------------
# Photometric operations on [3, S, S] float32 in [0, 1].

def _hsv_saturation(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Scale the HSV saturation by `factor` (clipped at 1), keeping hue and value."""
    v = x.amax(dim=0, keepdim=True)  # [1, S, S]
    lo = x.amin(dim=0, keepdim=True)  # [1, S, S]
    # c' = v - f (v - c); saturation <= 1 means min' >= 0, i.e. f <= v / (v - min).
    limit = torch.where(v > lo, v / (v - lo).clamp_min(1e-12), torch.full_like(v, factor))
    f = limit.clamp(max=factor)  # [1, S, S]
    return (v - f * (v - x)).clamp_(0.0, 1.0)


def _ssd_distort(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """SSD photometric distortion (detectron2 `ColorAugSSDTransform`), each step with p = 0.5."""
    if _coin(g, 0.5):
        x = (x + _uniform(g, -SSD_BRIGHTNESS, SSD_BRIGHTNESS)).clamp_(0.0, 1.0)
    contrast_first = _coin(g, 0.5)
    steps = ["contrast", "saturation", "hue"] if contrast_first else ["saturation", "hue", "contrast"]
    for step in steps:
        if not _coin(g, 0.5):
            continue
        if step == "contrast":
            x = (x * _uniform(g, *SSD_RANGE)).clamp_(0.0, 1.0)
        elif step == "saturation":
            x = _hsv_saturation(x, _uniform(g, *SSD_RANGE))
        else:
            x = TF.adjust_hue(x, _uniform(g, -SSD_HUE, SSD_HUE))
    return x


def _colour_jitter(x: torch.Tensor, strengths: list[float], g: torch.Generator) -> torch.Tensor:
    """torchvision `ColorJitter` semantics: factors in [1 - s, 1 + s], hue in [-h, h], random order."""
    b, c, s, h = strengths
    order = torch.randperm(4, generator=g, device=g.device).tolist()
    for op in order:
        if op == 0 and b > 0:
            x = TF.adjust_brightness(x, _uniform(g, max(0.0, 1 - b), 1 + b))
        elif op == 1 and c > 0:
            x = TF.adjust_contrast(x, _uniform(g, max(0.0, 1 - c), 1 + c))
        elif op == 2 and s > 0:
            x = TF.adjust_saturation(x, _uniform(g, max(0.0, 1 - s), 1 + s))
        elif op == 3 and h > 0:
            x = TF.adjust_hue(x, _uniform(g, -min(h, 0.5), min(h, 0.5)))
    return x.clamp_(0.0, 1.0)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur, kernel 2 * ceil(3 sigma) + 1 capped to the image side (kept odd)."""
    side = min(x.shape[-2:])
    k = min(2 * math.ceil(3 * sigma) + 1, side if side % 2 else side - 1)
    if k < 3:
        return x
    return TF.gaussian_blur(x, [k, k], [sigma, sigma])


def _cutout_box(cfg: DataConfig, size: int, g: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the CutOut box in pixels of the [S, S] view."""
    lo, hi = cfg.cutout_scale
    bh = min(size, max(1, round(_uniform(g, lo, hi) * size)))
    bw = min(size, max(1, round(_uniform(g, lo, hi) * size)))
    return _randint(g, 0, size - bh), _randint(g, 0, size - bw), bh, bw


def _box_keep(box: tuple[int, int, int, int], size: int, m: int, device) -> torch.Tensor:
    """[M, M] bool, False where a mask pixel centre falls inside the box (nearest mapping)."""
    top, left, bh, bw = box
    centres = (torch.arange(m, device=device, dtype=torch.float64) + 0.5) * (size / m)  # [M]
    in_r = (centres >= top) & (centres < top + bh)  # [M]
    in_c = (centres >= left) & (centres < left + bw)  # [M]
    return ~(in_r[:, None] & in_c[None, :])


# ----------------------------------------------------------------------------------------------

class ViewAugment:
    """Callable producing `Views` (weak, strong, masks, keep) from an image and its masks."""

    def __init__(self, cfg: DataConfig, image_size: int):
        if not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
        self.cfg = cfg
        self.image_size = image_size

    def __call__(self, image: torch.Tensor, masks: torch.Tensor,
                 generator: torch.Generator | None = None) -> Views:
        """image [3, H, W] uint8 (or float in [0, 1]); masks [N, H, W] bool, or masks kept as run
        lengths with `.shape` and `.sample(rows, cols) -> bool [N, len(rows), len(cols)]`."""
        _check_inputs(image, masks)
        g = generator
        if g is None:
            g = torch.Generator()
            g.seed()  # non-deterministic seed, leaves the global RNG alone
        cfg, size = self.cfg, self.image_size
        geo = _sample_geometry(cfg, image.shape[1], image.shape[2], g)
        x = _geometry_image(image, geo, cfg.crop, size)  # [3, S, S]
        # uint8 -> [0, 1]; float: clamped copy (the crop may be a view of the caller's image).
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float().clamp(0.0, 1.0)
        out_masks = _geometry_masks(masks, geo, cfg.crop, cfg.mask_size)  # [N, M, M]
        weak = _ssd_distort(x, g) if cfg.ssd_jitter else x  # [3, S, S]
        strong, keep = self._strong(weak.clone(), g)
        return Views(weak=weak, strong=strong, masks=out_masks, keep=keep)

    def _strong(self, x: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Student-only photometrics on x [3, S, S]; returns (strong, keep [M, M])."""
        cfg, size, m = self.cfg, self.image_size, self.cfg.mask_size
        if _coin(g, cfg.jitter_p):
            x = _colour_jitter(x, cfg.jitter, g)
        if _coin(g, cfg.gray_p):
            x = TF.rgb_to_grayscale(x, num_output_channels=3).contiguous()  # an expand: copy it
        if _coin(g, cfg.blur_p):
            sigma = _uniform(g, *cfg.blur_sigma) * size / cfg.crop  # crop pixels -> view pixels
            x = _blur(x, sigma)
        keep = torch.ones(m, m, dtype=torch.bool, device=x.device)  # [M, M]
        if _coin(g, cfg.cutout_p):
            box = _cutout_box(cfg, size, g)
            top, left, bh, bw = box
            x[:, top:top + bh, left:left + bw] = 0.0
            keep = _box_keep(box, size, m, x.device)
        return x.clamp_(0.0, 1.0), keep


def collate(views: list[Views]) -> dict[str, torch.Tensor]:
    """Stack views into a batch; mask lists are padded to the longest with all-False masks.

    Returns weak/strong [B, 3, S, S], masks [B, Nmax, M, M] bool, keep [B, M, M] bool.
    """
    if not views:
        raise ValueError("collate got an empty list of views")
    n_max = max(v.masks.shape[0] for v in views)
    m = views[0].keep.shape[-1]
    for i, v in enumerate(views):
        if v.masks.shape[1:] != (m, m) or v.keep.shape != (m, m):
            raise ValueError(f"views[{i}] masks/keep must be [*, {m}, {m}], got masks "
                             f"{tuple(v.masks.shape)} keep {tuple(v.keep.shape)}")
    masks = torch.zeros(len(views), n_max, m, m, dtype=torch.bool, device=views[0].masks.device)
    for i, v in enumerate(views):
        masks[i, : v.masks.shape[0]] = v.masks
    return {
        "weak": torch.stack([v.weak for v in views]),  # [B, 3, S, S]
        "strong": torch.stack([v.strong for v in views]),  # [B, 3, S, S]
        "masks": masks,  # [B, Nmax, M, M]
        "keep": torch.stack([v.keep for v in views]),  # [B, M, M]
    }
