"""Teacher/student views of one training sample: shared geometry, then weak and strong photometrics.

PixelCLIP trains on an image plus N unlabeled binary masks. The momentum teacher sees a weakly
augmented view, the student a strongly augmented one; both share the same geometry so the same
masks apply to both. Per sample (`ViewAugment.__call__`):

1. Geometry, shared. Resize so the short side is `data.resize_short` (bilinear, antialiased), take a
   random `data.crop` square (zero padding where the resized image is smaller, placed at a random
   offset), flip horizontally with probability `data.flip_p`, resize to the model input
   `image_size`. The image goes through all of this as one resample: every view pixel reads the
   source at the position its centre maps to (bilinear, `cv2.warpAffine`), after a separable
   triangle low-pass of the source window when the map shrinks (the filter of torchvision's
   antialiased bilinear resize); only the crop's source window is touched, the full-resolution
   resize is never materialised. View pixels whose centre falls outside the resized image are 0 (the
   rule the masks use, so the padding edge is sharp and aligned with them).
   Masks follow the same transform with nearest sampling, straight to `mask_size`: every output mask
   pixel reads the source pixel under its centre, which is the composition of the nearest resizes
   without materialising the full-resolution masks (padding reads False).
2. Shared photometric (`data.ssd_jitter`): SSD-style distortion as in detectron2's
   `ColorAugSSDTransform` -- additive brightness (+-32/255), multiplicative contrast (x[0.5, 1.5]),
   HSV saturation (x[0.5, 1.5], clipped at 1) and hue (+-18 of OpenCV's 180, i.e. +-0.1 turn), each
   with probability 0.5, contrast before or after the saturation/hue pair at random (the pair
   shares one RGB -> HSV -> RGB round trip). Result: the weak view. With `crop_view=True` the same
   geometry and distortion also give the weak view at the crop's own resolution (`Views.crop`), which
   DINO sees when masks are computed on each training crop.
3. Student only, on a copy of the weak view: colour jitter (`data.jitter` strengths, random order,
   probability `data.jitter_p`; torchvision `ColorJitter` semantics: brightness multiplies, contrast
   blends with the mean of the grayscale image, saturation blends with the grayscale image, hue
   shifts the HSV hue; clamped to [0, 1] after each), grayscale (`data.gray_p`; 3 equal channels,
   torchvision's 0.2989 / 0.587 / 0.114 weights), Gaussian blur (`data.blur_p`, sigma uniform in
   `data.blur_sigma` pixels of the crop, rescaled to `image_size`; kernel 2 ceil(3 sigma) + 1,
   reflect borders, as torchvision's `gaussian_blur`), and CutOut (`data.cutout_p`): one black box
   with sides uniform fractions in `data.cutout_scale` of the image side. `keep` [M, M] is False at
   mask pixels whose centre falls inside the box.

Image work runs in OpenCV on HWC numpy arrays, float32 in [0, 1]: the source is read without a copy
from the decoded [3, H, W] tensor when that is a view of HWC memory (as `pipelines.stages.train.reader` makes it),
and only the crop's source window is converted from uint8. OpenCV is pinned to one thread at the
first call: the reader runs one process per core, and a per-process OpenCV pool would only
oversubscribe the cores (this is process-wide: `cv2.setNumThreads(1)`). The views come back as
contiguous [3, S, S] float32 tensors.

All randomness is drawn from the `torch.Generator` passed in (a freshly, non-deterministically seeded
one when None), so a seed fixes the output; the global RNG is never used. `collate` stacks views
into a batch, padding the mask lists with all-False masks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from pixelclip.config import DataConfig
from pixelclip.data import photometric
from pixelclip.data.photometric import coin, randint, uniform

_opencv_pinned = False  # cv2.setNumThreads(1) done in this process


def _pin_opencv() -> None:
    """One OpenCV thread per process (the reader runs a process per core); once, at first use."""
    global _opencv_pinned
    if not _opencv_pinned:
        cv2.setNumThreads(1)
        _opencv_pinned = True


@dataclass
class Views:
    weak: torch.Tensor  # [3, S, S] float32 in [0, 1], teacher input
    strong: torch.Tensor  # [3, S, S] float32 in [0, 1], student input
    masks: torch.Tensor  # [N, M, M] bool, M = mask_size
    keep: torch.Tensor  # [M, M] bool, False where CutOut removed pixels
    crop: torch.Tensor | None = None  # [3, C, C] float32: the weak view at the crop's resolution, C = data.crop
    #   (only with ViewAugment(crop_view=True): what DINO sees to compute masks of this very crop)


# ----------------------------------------------------------------------------------------------
# Validation.

def _check_inputs(image: torch.Tensor, masks: torch.Tensor) -> None:
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must be a [3, H, W] tensor, got shape {shape}")
    if image.dtype != torch.uint8 and not image.dtype.is_floating_point:
        raise ValueError(f"image dtype must be uint8 or floating point, got {image.dtype}")
    if hasattr(masks, "sample"):  # masks kept as run lengths (e.g. rle_resize.RLEMasks), sampled on demand
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
    top = randint(g, min(0, hr - cfg.crop), max(0, hr - cfg.crop))
    left = randint(g, min(0, wr - cfg.crop), max(0, wr - cfg.crop))
    return _Geometry((hr, wr), top, left, coin(g, cfg.flip_p))


def _to_hwc(image: torch.Tensor) -> np.ndarray:
    """[3, H, W] tensor -> [H, W, 3] numpy, uint8 (uint8 input) or float32; no copy when the tensor is a
    channels-first view of HWC memory on the CPU (a decoded image permuted, as the reader makes it)."""
    x = image.detach().cpu().permute(1, 2, 0)  # [H, W, 3]
    if x.dtype != torch.uint8:
        x = x.float()
    return np.ascontiguousarray(x.numpy())


def _to_chw(x: np.ndarray, device: torch.device) -> torch.Tensor:
    """[S, S, 3] float32 numpy -> contiguous [3, S, S] tensor on `device` (cv2.split writes the planes)."""
    out = np.empty((3, *x.shape[:2]), dtype=np.float32)  # [3, S, S]
    planes = cv2.split(x, [out[0], out[1], out[2]])
    if any(p.ctypes.data != o.ctypes.data for p, o in zip(planes, out, strict=True)):  # not written in place
        out = np.stack(planes)
    return torch.from_numpy(out).to(device)


def _axis(out: int, crop: int, offset: int, resized: int, src: int) -> tuple[float, float, np.ndarray]:
    """One axis of the view -> source map: output pixel i reads the source at pixel-centre coordinate
    scale * i + shift; valid [out] bool: its centre lies inside the resized image (as `_nearest_index`)."""
    step, ratio = crop / out, src / resized  # crop px per output px, source px per resized px
    pos = (np.arange(out, dtype=np.float64) + 0.5) * step + offset  # [out], in the resized image
    valid = (pos >= 0) & (pos < resized)  # [out]
    return step * ratio, (offset + 0.5 * step) * ratio - 0.5, valid


def _window(shift: float, scale: float, out: int, src: int) -> tuple[int, int]:
    """[lo, hi) source rows (or columns) read by `out` pixels at scale * i + shift, with margins for the
    low-pass and bilinear taps, clipped to the image (never empty)."""
    margin = math.ceil(scale) + 1
    lo = min(max(0, math.floor(shift) - margin), src - 1)
    hi = max(min(src, math.ceil(shift + scale * (out - 1)) + margin + 1), lo + 1)
    return lo, hi


def _triangle(scale: float) -> np.ndarray:
    """[2r + 1] float32 low-pass for shrinking by `scale` source px per output px: the triangle of
    half-width `scale` that torchvision's antialiased bilinear resize uses; [1] when not shrinking."""
    if scale <= 1.0:
        return np.ones(1, dtype=np.float32)
    r = math.ceil(scale) - 1
    w = 1.0 - np.abs(np.arange(-r, r + 1, dtype=np.float64)) / scale  # [2r + 1]
    return (w / w.sum()).astype(np.float32)


def _geometry_image(image: np.ndarray, geo: _Geometry, crop: int, size: int) -> np.ndarray:
    """[H, W, 3] uint8 or float32 -> [S, S, 3] float32 (uint8 / 255): short-side resize, crop (zero padded),
    flip and resize to S as one bilinear resample of the crop's source window (low-passed where it shrinks)."""
    h, w = image.shape[:2]
    sy, oy, valid_y = _axis(size, crop, geo.top, geo.resized[0], h)  # row i reads source row sy * i + oy
    sx, ox, valid_x = _axis(size, crop, geo.left, geo.resized[1], w)  # [S] bool each
    (y0, y1), (x0, x1) = _window(oy, sy, size, h), _window(ox, sx, size, w)
    src = image[y0:y1, x0:x1]  # [h', w', 3], a view of the source window
    if src.dtype == np.uint8:  # to [0, 1] float32 before resampling: only the window, no uint8 rounding
        src = np.divide(src, np.float32(255.0), dtype=np.float32)
    if sy > 1.0 or sx > 1.0:  # shrinking: antialias as torchvision's resize does
        src = cv2.sepFilter2D(src, -1, _triangle(sx), _triangle(sy), borderType=cv2.BORDER_REPLICATE)
    oy, ox = oy - y0, ox - x0
    if geo.flip:  # output column j reads what column S - 1 - j reads unflipped
        sx, ox, valid_x = -sx, ox + sx * (size - 1), valid_x[::-1]
    m = np.array([[sx, 0.0, ox], [0.0, sy, oy]])  # output (col, row) -> source (col, row), pixel centres
    out = cv2.warpAffine(src, m, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_REPLICATE)  # [S, S, 3]; replicate = torch's edge clamp
    out[~valid_y] = 0  # zero padding: view pixels whose centre lies outside the resized image
    out[:, ~valid_x] = 0
    return out


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
        vc = vc.flip(0)
    if hasattr(masks, "sample"):  # sampled unflipped, flipped here: torch's flip beats a reversed numpy copy
        out = torch.from_numpy(masks.sample(rows.numpy(), cols.numpy()))  # [N, M, M]
        out = out.flip(-1) if geo.flip else out
    else:
        cols = cols.flip(0) if geo.flip else cols
        out = masks[:, rows[:, None], cols[None, :]]  # [N, M, M]
    valid = vr[:, None] & vc[None, :]  # [M, M]
    return out if bool(valid.all()) else out & valid


def _cutout_box(cfg: DataConfig, size: int, g: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the CutOut box in pixels of the [S, S] view."""
    lo, hi = cfg.cutout_scale
    bh = min(size, max(1, round(uniform(g, lo, hi) * size)))
    bw = min(size, max(1, round(uniform(g, lo, hi) * size)))
    return randint(g, 0, size - bh), randint(g, 0, size - bw), bh, bw


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

    def __init__(self, cfg: DataConfig, image_size: int, crop_view: bool = False):
        """crop_view: also return the weak view at the crop's own resolution (`Views.crop`, data.crop px:
        the same geometry and SSD distortion as `weak`, resampled once from the source), for masks
        computed on each training crop (DINO, as the authors)."""
        if not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
        self.cfg = cfg
        self.image_size = image_size
        self.crop_view = crop_view

    def __call__(self, image: torch.Tensor, masks: torch.Tensor,
                 generator: torch.Generator | None = None) -> Views:
        """image [3, H, W] uint8 (or float in [0, 1]); masks [N, H, W] bool, or masks kept as run
        lengths with `.shape` and `.sample(rows, cols) -> bool [N, len(rows), len(cols)]`."""
        _check_inputs(image, masks)
        _pin_opencv()
        g = generator
        if g is None:
            g = torch.Generator()
            g.seed()  # non-deterministic seed, leaves the global RNG alone
        cfg, size = self.cfg, self.image_size
        geo = _sample_geometry(cfg, image.shape[1], image.shape[2], g)
        src = _to_hwc(image)
        x = _geometry_image(src, geo, cfg.crop, size)  # [S, S, 3] float32, a fresh array
        c = _geometry_image(src, geo, cfg.crop, cfg.crop) if self.crop_view else None  # [C, C, 3]
        if image.dtype != torch.uint8:  # float input: clamp to [0, 1] (uint8 / 255 is in range already)
            x = photometric.clip(x)
            c = photometric.clip(c) if c is not None else None
        out_masks = _geometry_masks(masks, geo, cfg.crop, cfg.mask_size)  # [N, M, M]
        ssd = photometric.ssd_draw(g) if cfg.ssd_jitter else []
        weak = photometric.ssd_apply(x, ssd)  # [S, S, 3]
        strong, keep = self._strong(weak.copy(), g)
        crop = _to_chw(photometric.ssd_apply(c, ssd), image.device) if c is not None else None
        return Views(weak=_to_chw(weak, image.device), strong=_to_chw(strong, image.device), masks=out_masks,
                     keep=keep.to(image.device), crop=crop)

    def _strong(self, x: np.ndarray, g: torch.Generator) -> tuple[np.ndarray, torch.Tensor]:
        """Student-only photometrics on x [S, S, 3]; returns (strong [S, S, 3], keep [M, M])."""
        cfg, size, m = self.cfg, self.image_size, self.cfg.mask_size
        if coin(g, cfg.jitter_p):
            x = photometric.colour_jitter(x, cfg.jitter, g)
        if coin(g, cfg.gray_p):
            x = photometric.grayscale(x)
        if coin(g, cfg.blur_p):
            sigma = uniform(g, *cfg.blur_sigma) * size / cfg.crop  # crop pixels -> view pixels
            x = photometric.blur(x, sigma)
        keep = torch.ones(m, m, dtype=torch.bool)  # [M, M]
        if coin(g, cfg.cutout_p):
            box = _cutout_box(cfg, size, g)
            top, left, bh, bw = box
            x[top:top + bh, left:left + bw] = 0.0
            keep = _box_keep(box, size, m, "cpu")
        return photometric.clip(x), keep


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
