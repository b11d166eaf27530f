"""Open-vocabulary inference: segment images with typed class names, classify given masks.

    seg = Segmenter.from_pixelclip(task)                # or Segmenter.from_open_clip(model, tok, 320)
    labels = seg.segment([image], ["cat", "grass", "sky"])[0]   # [H, W] long, input resolution

Protocols (the learned prompts and the decoder are not used at inference):
- "whole" (the paper's): the image resized to the encoder's square input; dense features;
  similarity to the class text features (8-template ensemble by default); upsampled bilinearly
  to the input's resolution; argmax.
- "slide": short side resized to `short_side`, square windows of the encoder's input size with
  stride `stride`, cosine maps averaged where windows overlap, then upsampled to the input size.
Label maps are computed in row chunks, so memory stays bounded for large images.
"""

from __future__ import annotations

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


def to_image_tensor(image) -> torch.Tensor:
    """Any common image (torch [3|1|4, H, W] or [H, W]; numpy [H, W(, C)]; PIL) -> [3, H, W] float
    in [0, 1]. Grayscale is repeated, alpha dropped, 16-bit and float inputs scaled."""
    if hasattr(image, "convert") and hasattr(image, "mode"):  # PIL
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 3 and arr.shape[-1] in (1, 3, 4):
            arr = np.moveaxis(arr, -1, 0)
        image = torch.from_numpy(np.ascontiguousarray(arr).astype(np.float32) / _scale(arr.dtype))
    if not isinstance(image, torch.Tensor):
        raise ValueError(f"image must be a tensor, array or PIL image, got {type(image).__name__}")
    x = image
    if x.ndim == 2:
        x = x.unsqueeze(0)
    if x.ndim != 3 or x.shape[0] not in (1, 3, 4):
        raise ValueError(f"image must be [3, H, W] (or grayscale / RGBA), got shape {tuple(image.shape)}")
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    x = x[:3]
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif x.dtype in (torch.int16, torch.int32, torch.uint16):  # 16-bit images
        x = x.float() / 65535.0
    elif not x.is_floating_point():
        raise ValueError(f"unsupported image dtype {x.dtype}")
    return x.float().clamp(0.0, 1.0)


def _scale(dtype) -> float:
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
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
        batch_size: images per encoder call.  chunk_rows: output rows computed at a time.
    """

    def __init__(self, encoder: DenseEncoder, text: TextEncoder, image_size: int,
                 templates: Sequence[str] = ENSEMBLE_TEMPLATES, protocol: str = "whole",
                 short_side: int = 640, stride: int | None = None, batch_size: int = 8,
                 chunk_rows: int = 256):
        if protocol not in ("whole", "slide"):
            raise ValueError(f"protocol must be 'whole' or 'slide', got {protocol!r}")
        if not templates or any(t.count("{}") != 1 for t in templates):
            raise ValueError("templates must be a non-empty list of strings with one '{}' each")
        self.encoder, self.text = encoder, text
        self.image_size, self.templates, self.protocol = int(image_size), tuple(templates), protocol
        self.short_side = int(short_side)
        self.stride = int(stride or max(1, image_size * 2 // 3))
        self.batch_size, self.chunk_rows = int(batch_size), int(chunk_rows)
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

    @torch.no_grad()
    def _features(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Whole-image features [B, D, h, w] of [3, H, W] images resized to the square input."""
        size = (self.image_size, self.image_size)
        x = torch.stack([F.interpolate(im[None].to(self.device), size=size, mode="bilinear",
                                       antialias=True, align_corners=False)[0] for im in images])
        self.encoder.eval()
        return torch.cat([self.encoder(c) for c in x.split(self.batch_size)]).float()

    def _upsampled_argmax(self, logits: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """argmax over classes of bilinearly upsampled logits [C, h, w] -> [H, W], in row chunks."""
        _C, h, w = logits.shape
        a_h = interp_matrix(H, h, logits.device, logits.dtype)  # [H, h]
        a_w = interp_matrix(W, w, logits.device, logits.dtype)  # [W, w]
        right = logits @ a_w.T  # [C, h, W]
        out = torch.empty(H, W, dtype=torch.long, device=logits.device)
        for r in range(0, H, self.chunk_rows):
            rows = torch.einsum("rh,chw->crw", a_h[r:r + self.chunk_rows], right)  # [C, r, W]
            out[r:r + self.chunk_rows] = rows.argmax(0)
        return out

    @torch.no_grad()
    def _slide_logits(self, image: torch.Tensor, text_feats: torch.Tensor) -> torch.Tensor:
        """Cosine maps [C, H', W'] averaged over windows on the short-side-resized image."""
        H, W = image.shape[-2:]
        s = self.short_side / min(H, W)
        h2, w2 = max(self.image_size, round(H * s)), max(self.image_size, round(W * s))
        img = F.interpolate(image[None].to(self.device), size=(h2, w2), mode="bilinear",
                            antialias=True, align_corners=False)  # [1, 3, h2, w2]
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
    def segment_with_features(self, images, feats: torch.Tensor) -> list[torch.Tensor]:
        """Label maps [H, W] (long, each at its input's resolution) against features [C, D]."""
        ims = [to_image_tensor(im) for im in (images if isinstance(images, list | tuple) else [images])]
        feats = F.normalize(feats.float().to(self.device), dim=-1)
        if self.protocol == "slide":
            return [self._upsampled_argmax(self._slide_logits(im, feats), *im.shape[-2:]) for im in ims]
        dense = self._features(ims)  # [B, D, h, w]; dot products keep the argmax of the cosine
        logits = torch.einsum("bdhw,cd->bchw", dense, feats)  # after upsampling, per pixel
        return [self._upsampled_argmax(lg, *im.shape[-2:]) for lg, im in zip(logits, ims, strict=True)]

    def segment(self, images, class_names: Sequence[str]) -> list[torch.Tensor]:
        """Label maps [H, W] (indices into `class_names`) for one image or a list of images."""
        return self.segment_with_features(images, self.text_features(class_names))

    @torch.no_grad()
    def classify_masks(self, image, masks: torch.Tensor,
                       class_names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero-shot mask classification: mask-pool the features over each mask [N, H, W] (at the
        image's resolution) and compare with the class features. Returns (labels [N], cos [N, C])."""
        im = to_image_tensor(image)
        if masks.ndim != 3 or tuple(masks.shape[-2:]) != tuple(im.shape[-2:]):
            raise ValueError(f"masks must be [N, {im.shape[-2]}, {im.shape[-1]}] to match the image, "
                             f"got {tuple(masks.shape)}")
        feats = self.text_features(class_names)
        dense = self._features([im])  # [1, D, h, w]
        pooled, area = mask_pool(dense, masks[None].to(self.device))  # [1, N, D]
        cos = F.normalize(pooled[0], dim=-1) @ feats.T  # [N, C]
        cos[area[0] == 0] = float("nan")
        return cos.nan_to_num(-1.0).argmax(1), cos
