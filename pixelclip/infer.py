"""Open-vocabulary inference: segment images with typed class names, classify given masks.

    seg = Segmenter.from_pixelclip(task)                # or Segmenter.from_open_clip(model, tok, 320)
    labels = seg.segment([image], ["cat", "grass", "sky"])[0]   # [H, W] long, input resolution

Protocols (the learned prompts and the decoder are not used at inference):
- "whole" (the paper's): the image resized to the encoder's square input; dense features;
  similarity to the class text features (8-template ensemble by default); upsampled bilinearly
  to the input's resolution; argmax.
- "slide": short side resized to `short_side`, square windows of the encoder's input size with
  stride `stride`, cosine maps averaged where windows overlap, then upsampled to the input size.
Memory stays bounded for huge images: they are first shrunk in their own dtype (box average in row
bands, `max_side`), never converted to float at full resolution, and the full-resolution label map
is computed in row chunks (pass `dtype=torch.uint8` for a map of 1 byte per pixel).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .model.backbone import DenseEncoder, preprocess_stats
from .model.cluster import interp_matrix, mask_pool
from .model.prompts import TextEncoder

# The paper's inference ensemble (its appendix A): CLIP's curated prompts plus the training template.
ENSEMBLE_TEMPLATES = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
    "a photo of a {} in the scene",
)
SINGLE_TEMPLATE = ("A photo of a {} in the scene.",)
_BAND = 1 << 20  # float elements (4 MiB) per row band when shrinking images or upsampling logits


def as_chw(image) -> torch.Tensor:
    """Any common image (torch [C, H, W] or [H, W]; numpy [H, W(, C)]; PIL) -> a tensor [C, H, W],
    C in (1, 3, 4), in the image's own dtype: no float copy (numpy arrays are shared, not copied)."""
    if hasattr(image, "convert") and hasattr(image, "mode"):  # PIL
        image = _pil_array(image)
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 3 and arr.shape[-1] in (1, 3, 4):
            arr = np.moveaxis(arr, -1, 0)  # a view [C, H, W]
        if arr.dtype.byteorder == ">" or any(s < 0 for s in arr.strides):
            arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("="))
        _scale(arr.dtype)  # unsupported dtypes fail here, with a clear message
        with warnings.catch_warnings():  # read-only arrays (np.asarray of PIL) are shared, never written
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            image = torch.from_numpy(arr)
    if not isinstance(image, torch.Tensor):
        raise ValueError(f"image must be a tensor, array or PIL image, got {type(image).__name__}")
    x = image.unsqueeze(0) if image.ndim == 2 else image
    if x.ndim != 3 or x.shape[0] not in (1, 3, 4):
        raise ValueError(f"image must be [3, H, W] (or grayscale / RGBA), got shape {tuple(image.shape)}")
    if min(x.shape[-2:]) < 1:
        raise ValueError(f"image is empty: shape {tuple(image.shape)}")
    return x


def _pil_array(image) -> np.ndarray:
    """uint16 [H, W] for 16-bit grayscale PIL images (PIL's RGB conversion would clip them), else uint8 RGB."""
    if image.mode.startswith("I;16"):
        return np.asarray(image).astype(np.uint16)
    if image.mode == "I":  # 32-bit integer mode: what 16-bit PNGs open as in some Pillow versions
        return np.asarray(image).clip(0, 65535).astype(np.uint16)
    return np.asarray(image.convert("RGB"))


def chw_to_float(x: torch.Tensor) -> torch.Tensor:
    """[C, H, W] (C in 1, 3, 4; any supported dtype) -> [3, H, W] float32 in [0, 1]: grayscale
    repeated, alpha dropped, 8-bit divided by 255, 16-bit (and int32) by 65535."""
    x = x.expand(3, -1, -1) if x.shape[0] == 1 else x[:3]
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    if x.dtype in (torch.int16, torch.int32, torch.uint16):  # 16-bit images
        return x.to(torch.float32).div_(65535.0).clamp_(0.0, 1.0)
    if not x.is_floating_point():
        raise ValueError(f"unsupported image dtype {x.dtype}")
    return x.float().clamp(0.0, 1.0)


def to_image_tensor(image) -> torch.Tensor:
    """Any common image (torch [3|1|4, H, W] or [H, W]; numpy [H, W(, C)]; PIL) -> [3, H, W] float
    in [0, 1]. Grayscale is repeated, alpha dropped, 16-bit and float inputs scaled."""
    return chw_to_float(as_chw(image))


def shrink_image(image, size: tuple[int, int]) -> torch.Tensor:
    """Downscale any image to `size` = (h, w) (each at most the input's) -> [3, h, w] float in [0, 1],
    without a full-resolution float copy: in row bands of the image's own dtype, box-average by an
    integer factor and resize to width w; then antialiased bilinear to height h."""
    x = as_chw(image)
    H, W = x.shape[-2:]
    h, w = size
    f = max(1, min(H // h, W // w))  # integer box factor; what remains is less than 2x
    if f == 1 and w == W:
        small = chw_to_float(x)
    else:
        small = torch.empty(3, -(-H // f), w, device=x.device)  # [3, ceil(H / f), w]
        rows = max(1, _BAND // (3 * W * f)) * f  # input rows per band (~4 MiB of float), a multiple of f
        for r in range(0, H, rows):
            band = chw_to_float(x[:, r:r + rows].contiguous())[None]  # [1, 3, rows, W]
            if f > 1:
                band = F.avg_pool2d(band, f, f, ceil_mode=True)  # [1, 3, rows / f, W / f]
            band = _resize(band, (band.shape[-2], w))  # [1, 3, rows / f, w]
            small[:, r // f:r // f + band.shape[-2]] = band[0]
    return small if small.shape[-2] == h else _resize(small[None], (h, w))[0]


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)  # non-negative weights


def _scale(dtype) -> float:
    if dtype == np.uint8:
        return 255.0
    if dtype in (np.uint16, np.int16, np.int32):
        return 65535.0
    if np.issubdtype(dtype, np.floating):
        return 1.0
    raise ValueError(f"unsupported image dtype {dtype}")


def check_class_names(class_names: Sequence[str]) -> list[str]:
    if isinstance(class_names, str):
        raise ValueError("class_names must be a list of names, not one string (split it first)")
    names = [str(n).strip() for n in class_names]
    if not names:
        raise ValueError("class_names is empty: give at least one class name")
    if any(not n for n in names):
        raise ValueError(f"class_names contains an empty name: {list(class_names)}")
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise ValueError(f"class_names contains duplicates: {dups}")
    return names


class Segmenter:
    """Dense open-vocabulary prediction with an image encoder and the frozen text encoder.

    Args:
        encoder: `DenseEncoder` ([0, 1] images -> [B, D, h, w]).  text: `TextEncoder`.
        image_size: the encoder's square input.  templates: prompt templates (ensemble by default).
        protocol: "whole" or "slide".  short_side, stride: sliding-window geometry.
        batch_size: images per encoder call.  chunk_rows: output rows computed at a time (fewer for
        wide images or many classes, so that a chunk stays within 4 MiB).
        max_side: an image with a longer side is first shrunk, in its own dtype and in row bands, to
        the size the protocol reads (the square input for "whole", short side `short_side` for
        "slide"), never converted to float at full resolution. Label maps are at full resolution.
    """

    def __init__(self, encoder: DenseEncoder, text: TextEncoder, image_size: int,
                 templates: Sequence[str] = ENSEMBLE_TEMPLATES, protocol: str = "whole",
                 short_side: int = 640, stride: int | None = None, batch_size: int = 8,
                 chunk_rows: int = 256, max_side: int = 2048):
        if protocol not in ("whole", "slide"):
            raise ValueError(f"protocol must be 'whole' or 'slide', got {protocol!r}")
        if not templates or any(t.count("{}") != 1 for t in templates):
            raise ValueError("templates must be a non-empty list of strings with one '{}' each")
        self.encoder, self.text = encoder, text
        self.image_size, self.templates, self.protocol = int(image_size), tuple(templates), protocol
        self.short_side = int(short_side)
        self.stride = int(stride or max(1, image_size * 2 // 3))
        self.batch_size, self.chunk_rows = int(batch_size), int(chunk_rows)
        if int(max_side) < 1 or self.chunk_rows < 1 or self.batch_size < 1:
            raise ValueError(f"max_side, chunk_rows and batch_size must be >= 1, got {max_side}, {chunk_rows}, "
                             f"{batch_size}")
        self.max_side = int(max_side)
        self._cache: dict[tuple, torch.Tensor] = {}

    @classmethod
    def from_pixelclip(cls, task, *, mode: str | None = None, **kwargs) -> Segmenter:
        """Segmenter over a PixelCLIP task's student; `mode` (a `DENSE_MODES` name) swaps its dense
        readout over the same weights (None keeps the student's, "maskclip")."""
        encoder = task.student if mode is None else task.student.with_mode(mode)
        return cls(encoder, task.text, task.image_size, **kwargs)

    @classmethod
    def from_open_clip(cls, model, tokenizer, image_size: int, *, mode: str = "maskclip",
                       **kwargs) -> Segmenter:
        """Segmenter over any open_clip CLIP with the dense readout `mode` (a `DENSE_MODES` name)."""
        mean, std = preprocess_stats(model)
        return cls(DenseEncoder(model.visual, mean, std, mode=mode), TextEncoder(model, tokenizer), image_size,
                   **kwargs)

    @property
    def device(self) -> torch.device:
        return self.encoder.mean.device

    def text_features(self, class_names: Sequence[str]) -> torch.Tensor:
        """[C, D] normalised, ensembled text features (cached per class list)."""
        names = tuple(check_class_names(class_names))
        if names not in self._cache:
            self._cache[names] = self.text.class_embeddings(names, self.templates).to(self.device)
        return self._cache[names]

    def _prepare(self, image, slide: bool) -> tuple[torch.Tensor, tuple[int, int]]:
        """(the image as [3, h, w] float: as it is, or shrunk to what the protocol reads when its long
        side exceeds `max_side`; its full size (H, W))."""
        x = as_chw(image)
        H, W = x.shape[-2:]
        if max(H, W) <= self.max_side:
            return chw_to_float(x), (H, W)
        h, w = self._slide_size(H, W) if slide else (self.image_size, self.image_size)
        return shrink_image(x, (min(h, H), min(w, W))), (H, W)

    def _slide_size(self, H: int, W: int) -> tuple[int, int]:
        """The size the "slide" protocol resizes an H x W image to: short side `short_side`, each side
        at least the encoder's input."""
        s = self.short_side / min(H, W)
        return max(self.image_size, round(H * s)), max(self.image_size, round(W * s))

    @torch.no_grad()
    def _features(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Whole-image features [B, D, h, w] of [3, H, W] images resized to the square input."""
        size = (self.image_size, self.image_size)
        x = torch.stack([_resize(im[None].to(self.device), size)[0] for im in images])  # [B, 3, S, S]
        self.encoder.eval()
        return torch.cat([self.encoder(c) for c in x.split(self.batch_size)]).float()

    def _upsampled_argmax(self, logits: torch.Tensor, H: int, W: int,
                          dtype: torch.dtype = torch.long) -> torch.Tensor:
        """argmax over classes of bilinearly upsampled logits [C, h, w] -> [H, W], in row chunks: each
        chunk reads only the input rows it interpolates from, and holds at most ~4 MiB of logits."""
        C, h, w = logits.shape
        a_h = interp_matrix(H, h, logits.device, logits.dtype)  # [H, h]
        a_w = interp_matrix(W, w, logits.device, logits.dtype)  # [W, w]
        step = max(1, min(self.chunk_rows, _BAND // (C * W)))
        out = torch.empty(H, W, dtype=dtype, device=logits.device)
        for r in range(0, H, step):
            rows = a_h[r:r + step]  # [r, h]
            used = rows.any(0).nonzero()  # the input rows these output rows interpolate from
            y0, y1 = int(used[0]), int(used[-1]) + 1
            right = logits[:, y0:y1] @ a_w.T  # [C, y, W]
            out[r:r + step] = torch.einsum("rh,chw->crw", rows[:, y0:y1], right).argmax(0)  # [r, W]
        return out

    @torch.no_grad()
    def _slide_logits(self, image: torch.Tensor, text_feats: torch.Tensor) -> torch.Tensor:
        """Cosine maps [C, H', W'] averaged over windows on the short-side-resized image."""
        h2, w2 = self._slide_size(*image.shape[-2:])
        img = _resize(image[None].to(self.device), (h2, w2))  # [1, 3, h2, w2]
        S, st = self.image_size, self.stride
        ys = sorted({*range(0, h2 - S + 1, st), h2 - S})
        xs = sorted({*range(0, w2 - S + 1, st), w2 - S})
        acc = torch.zeros(text_feats.shape[0], h2, w2, device=self.device)
        cnt = torch.zeros(1, h2, w2, device=self.device)
        self.encoder.eval()
        for y in ys:
            for x in xs:
                f = F.normalize(self.encoder(img[..., y:y + S, x:x + S]).float(), dim=1)  # [1, D, h, w]
                cos = torch.einsum("bdhw,cd->bchw", f, text_feats)
                acc[:, y:y + S, x:x + S] += F.interpolate(cos, size=(S, S), mode="bilinear",
                                                          align_corners=False)[0]
                cnt[:, y:y + S, x:x + S] += 1
        return acc / cnt

    @torch.no_grad()
    def segment_with_features(self, images, feats: torch.Tensor,
                              dtype: torch.dtype = torch.long) -> list[torch.Tensor]:
        """Label maps [H, W] (each at its input's resolution) against features [C, D]. `dtype`: of the
        maps (torch.long; torch.uint8 for fewer than 256 classes keeps huge maps small)."""
        if not (feats.ndim == 2 and feats.shape[0] >= 1):
            raise ValueError(f"feats must be [C, D] with C >= 1, got {tuple(feats.shape)}")
        integer = not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)
        if not integer or torch.iinfo(dtype).max < feats.shape[0] - 1:
            raise ValueError(f"dtype {dtype} cannot hold {feats.shape[0]} class indices")
        slide = self.protocol == "slide"
        ims = [self._prepare(im, slide) for im in (images if isinstance(images, list | tuple) else [images])]
        feats = F.normalize(feats.float().to(self.device), dim=-1)
        if slide:
            return [self._upsampled_argmax(self._slide_logits(im, feats), *hw, dtype) for im, hw in ims]
        dense = self._features([im for im, _ in ims])  # [B, D, h, w]; dot products keep the argmax of
        logits = torch.einsum("bdhw,cd->bchw", dense, feats)  # the cosine after upsampling, per pixel
        return [self._upsampled_argmax(lg, *hw, dtype) for lg, (_, hw) in zip(logits, ims, strict=True)]

    def segment(self, images, class_names: Sequence[str], dtype: torch.dtype = torch.long) -> list[torch.Tensor]:
        """Label maps [H, W] (indices into `class_names`) for one image or a list of images."""
        return self.segment_with_features(images, self.text_features(class_names), dtype)

    @torch.no_grad()
    def classify_masks(self, image, masks: torch.Tensor,
                       class_names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero-shot mask classification: mask-pool the features over each mask [N, H, W] (at the
        image's resolution) and compare with the class features. Returns (labels [N], cos [N, C])."""
        im, (H, W) = self._prepare(image, slide=False)
        if masks.ndim != 3 or tuple(masks.shape[-2:]) != (H, W):
            raise ValueError(f"masks must be [N, {H}, {W}] to match the image, got {tuple(masks.shape)}")
        feats = self.text_features(class_names)
        dense = self._features([im])  # [1, D, h, w]
        pooled, area = mask_pool(dense, masks[None].to(self.device))  # [1, N, D]
        cos = F.normalize(pooled[0], dim=-1) @ feats.T  # [N, C]
        cos[area[0] == 0] = float("nan")
        return cos.nan_to_num(-1.0).argmax(1), cos
