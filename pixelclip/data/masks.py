"""Unlabeled masks for folders of plain photos: DINO features + k-means, and SAM's automatic masks.

PixelCLIP fine-tunes CLIP with masks that carry no labels. Besides SA-1B's own annotations they can
come from:

- `DinoMasker` (the paper's recipe): a self-supervised DINO ViT-S/16 sees the image resized to
  640x640; its last layer's patch tokens (after the final norm), L2-normalised, are a 40x40x384
  grid per image; k-means with k=16 per image (fast-pytorch-kmeans' batched `MultiKMeans`, on the
  device) groups them; the cluster map is brought back to the image size. Every call returns a
  partition of the image: disjoint masks that cover every pixel.
- `SamMasker`: `segment_anything.SamAutomaticMaskGenerator` on each image; overlapping masks,
  sorted by area.

Both take a list of images (HxWx3 uint8 numpy arrays or [3, H, W] uint8 tensors) and return per
image a bool array [n, H, W]. Weights are read only from the local file a caller names (safetensors,
or `torch.load(..., weights_only=True)`: nothing is ever unpickled); `from_weights(None)` builds a
randomly initialised model (for tests) and says so in `random_weights`. `tiny_sam` builds a small
random SAM that runs on CPU in a fraction of a second, for tests and smoke runs.

fast-pytorch-kmeans 0.2.2, as used here: `MultiKMeans` is correct for a batch of images provided
(1) a fresh instance is used per call (it keeps `centroids` between calls and asserts on a new batch
size), (2) the initial centroids are set on the instance before `fit_predict` (otherwise it runs its
own initialisation from the device's global RNG first, even when `centroids=` is passed), and
(3) `tol=0`: its stopping test compares the error summed over the batch with `tol * batch`, so with
the default tol an image can stop before its own convergence; with tol=0 every image runs to its
exact Lloyd fixed point (or `max_iter`), which gives the labels of a per-image `KMeans` from the same
start. Empty clusters get a zero centroid (NaN replaced by 0); they are dropped from the output.
The package imports psutil without declaring it as a dependency.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

DINO_ARCH = "vit_small_patch16_224.dino"  # timm name of DINO ViT-S/16; its keys match the official DINO ones
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ImageLike = np.ndarray | torch.Tensor


# ----------------------------------------------------------------------------------------------
# Inputs and weights.

def _as_chw_uint8(image: ImageLike) -> torch.Tensor:
    """HxWx3 uint8 numpy or [3, H, W] uint8 tensor -> [3, H, W] uint8 tensor (no copy of tensors)."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"numpy images must be HxWx3 uint8, got {image.shape} {image.dtype}")
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
            raise ValueError(f"tensor images must be [3, H, W] uint8, got {tuple(image.shape)} {image.dtype}")
        return image
    raise TypeError(f"expected a numpy array or a torch tensor, got {type(image).__name__}")


def _as_hwc_uint8(image: ImageLike) -> np.ndarray:
    """Either image form -> contiguous HxWx3 uint8 numpy array (what SAM's generator takes)."""
    return np.ascontiguousarray(_as_chw_uint8(image).permute(1, 2, 0).cpu().numpy())


def read_state_dict(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Tensors of a local .safetensors, or .pth/.pt read with `torch.load(weights_only=True)`.

    A checkpoint that nests the weights under "teacher", "state_dict" or "model" is unwrapped, and
    the prefixes "module." and "backbone." (DINO's training wrappers) are stripped."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj = load_file(str(path), device=str(map_location))
    else:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    for key in ("teacher", "state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a state dict of tensors")
    return {k.removeprefix("module.").removeprefix("backbone."): v for k, v in obj.items()}


def _short(items: list[str], n: int = 12) -> str:
    return "[" + ", ".join(items[:n]) + (f", ... ({len(items) - n} more)" if len(items) > n else "") + "]"


def load_strict(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], what: str) -> None:
    """`module.load_state_dict(strict=True)`, with a ValueError that lists the mismatched keys."""
    own = module.state_dict()
    missing = sorted(own.keys() - state_dict.keys())
    unexpected = sorted(state_dict.keys() - own.keys())
    shapes = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state_dict.items()
              if k in own and v.shape != own[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(f"{what}: the state dict does not match the model: missing keys {_short(missing)}, "
                         f"unexpected keys {_short(unexpected)}, shape mismatches {_short(shapes)}")
    module.load_state_dict(state_dict, strict=True)


# ----------------------------------------------------------------------------------------------
# k-means and the way back to pixels.

def kmeans_labels(x: torch.Tensor, k: int, seed: int = 0, max_iter: int = 100) -> torch.Tensor:
    """Per-item k-means (Euclidean) on x [B, N, C] float -> labels [B, N] int64, on x's device.

    Starts from k distinct points drawn with `seed` (the same positions for every item, so an item's
    result does not depend on the rest of the batch, up to floating-point differences between batched
    kernels) and runs Lloyd's iterations to the fixed point (tol=0) or `max_iter`. Never touches the
    global RNG."""
    try:
        from fast_pytorch_kmeans import MultiKMeans
    except ModuleNotFoundError as e:
        raise ImportError(f"fast-pytorch-kmeans could not be imported: no module {e.name!r} "
                          "(0.2.2 imports psutil without declaring it)") from e
    N = x.shape[1]
    if not 1 <= k <= N:
        raise ValueError(f"k={k} must be between 1 and the number of points ({N})")
    start = torch.randperm(N, generator=torch.Generator().manual_seed(seed))[:k].to(x.device)
    km = MultiKMeans(n_clusters=k, max_iter=max_iter, tol=0.0, mode="euclidean")
    km.centroids = x[:, start].float().clone()  # set here: passing centroids= still runs its own init
    # It builds helper tensors on device *type* "cuda", i.e. the current device: make that x's.
    ctx = torch.cuda.device(x.device) if x.device.type == "cuda" else contextlib.nullcontext()
    with ctx:
        return km.fit_predict(x.float())


def upsample_labels(labels: torch.Tensor, k: int, size: tuple[int, int], max_side: int = 640) -> torch.Tensor:
    """Label map [h, w] (values < k) -> [H, W] int16 on its device.

    The one-hot maps are resized bilinearly (align_corners=False) to at most `max_side` per side and
    each pixel takes the argmax (ties: lowest label); beyond that resolution the label map is resized
    with nearest-exact sampling, so the cost is bounded (k * max_side**2 floats) for any photo size."""
    H, W = size
    work = (min(H, max_side), min(W, max_side))
    onehot = F.one_hot(labels.long(), k).permute(2, 0, 1)[None].float()  # [1, k, h, w]
    lab = F.interpolate(onehot, size=work, mode="bilinear", align_corners=False)[0].argmax(0).to(torch.int16)
    if work == (H, W):
        return lab
    iy = ((torch.arange(H, device=lab.device, dtype=torch.float64) + 0.5) * (work[0] / H)).long()
    ix = ((torch.arange(W, device=lab.device, dtype=torch.float64) + 0.5) * (work[1] / W)).long()
    return lab[iy.clamp_(max=work[0] - 1)[:, None], ix.clamp_(max=work[1] - 1)[None, :]]


def label_masks(label_map: np.ndarray) -> np.ndarray:
    """Label map [H, W] of non-negative ints -> bool [n, H, W], one mask per label present, by area
    descending (ties: lower label first)."""
    counts = np.bincount(label_map.ravel())
    ids = np.flatnonzero(counts)
    ids = ids[np.argsort(-counts[ids], kind="stable")]
    return label_map[None] == ids[:, None, None].astype(label_map.dtype)


# ----------------------------------------------------------------------------------------------
# DINO features + k-means.

class DinoMasker:
    """Masks from DINO ViT patch features clustered with k-means: per image a partition, bool [n, H, W].

    Back to pixels: one-hot bilinear + argmax, not nearest resizing of the label map. The [g, g]
    cluster map becomes k one-hot maps, resized bilinearly and each pixel takes the argmax (ties:
    lowest cluster id). A token describes its patch as seen from the patch centre, so boundaries run
    halfway between patch centres and diagonal edges become fine steps, where nearest resizing would
    give the blocky patch grid (16 px steps at 640); the argmax still gives disjoint masks that cover
    the image. The bilinear step runs at up to `image_size` per side (the model's input resolution,
    so the cost is bounded for any photo); larger images get that label map by nearest-exact. A
    cluster of few patches can vanish only with fewer than 2 pixels per grid cell (sides under 80 px
    at 640); empty clusters are dropped, so n <= k. Masks come by area, largest first.
    """

    random_weights: bool = False  # set by from_weights(None)

    def __init__(self, model: torch.nn.Module, k: int = 16, image_size: int = 640, device="cpu", seed: int = 0,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, max_iter: int = 100):
        """model: a timm ViT (forward_features -> [B, prefix + g*g, C] after the final norm), built with
        dynamic_img_size=True or img_size=image_size. Moved to `device` and put in eval mode."""
        patch = model.patch_embed.patch_size[0]
        if image_size % patch:
            raise ValueError(f"image_size {image_size} is not a multiple of the patch size {patch}")
        if not getattr(model, "dynamic_img_size", False) and tuple(model.patch_embed.img_size) != (image_size,) * 2:
            raise ValueError(f"the model takes {tuple(model.patch_embed.img_size)} inputs, not {image_size}: "
                             "build it with dynamic_img_size=True or img_size=image_size")
        self.grid = image_size // patch
        if not 1 <= k <= self.grid**2:
            raise ValueError(f"k={k} must be between 1 and the number of patches ({self.grid**2})")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.k, self.image_size, self.seed, self.max_iter = k, image_size, seed, max_iter
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)

    @classmethod
    def from_weights(cls, path: str | Path | None, arch: str = DINO_ARCH, **kw) -> DinoMasker:
        """A masker on the DINO ViT-S/16 backbone read from a local .pth/.pt or .safetensors file
        (`arch`: a timm name; "tiny": `tiny_dino`, for tests and smoke runs).

        Official DINO key names (cls_token, pos_embed, patch_embed.proj.*, blocks.N.*, norm.*) and
        timm's are the same; anything else raises ValueError listing the keys. path=None: random
        weights (seeded by kw's `seed`), flagged by `random_weights`. kw go to `__init__`."""
        import timm

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(kw.get("seed", 0))
            if arch == "tiny":
                model = tiny_dino()
            else:
                model = timm.create_model(arch, pretrained=False, num_classes=0, dynamic_img_size=True)
        if path is not None:
            load_strict(model, read_state_dict(path), f"{path} ({arch})")
        masker = cls(model, **kw)
        masker.random_weights = path is None
        return masker

    def _preprocess(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """Images -> [B, 3, S, S] normalised float on the device (bilinear, antialiased resize)."""
        out = []
        for image in images:
            x = _as_chw_uint8(image).to(self.device, non_blocking=True)[None].float().div_(255)
            out.append(F.interpolate(x, size=(self.image_size,) * 2, mode="bilinear", antialias=True,
                                     align_corners=False))
        return (torch.cat(out) - self.mean) / self.std

    @torch.no_grad()
    def features(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """Last-layer patch tokens (after the final norm), L2-normalised: [B, g, g, C] float32."""
        return F.normalize(self._tokens(self._preprocess(images)), dim=-1)

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images [B, 3, S, S] -> last-layer patch tokens after the final norm [B, g, g, C] float32."""
        tokens = self.model.forward_features(x)
        tokens = tokens[:, self.model.num_prefix_tokens:].float()
        B, n, C = tokens.shape
        g = x.shape[-1] // self.model.patch_embed.patch_size[0]
        if n != g * g:
            raise ValueError(f"the model gave {n} patch tokens, expected {g}x{g}")
        return tokens.reshape(B, g, g, C)

    @torch.no_grad()
    def crop_masks(self, crops: torch.Tensor, mask_size: int) -> torch.Tensor:
        """Masks of training crops, as the authors compute them online: one partition per crop.

        crops: [B, 3, C, C] uint8 (or float in [0, 1]), each the weak view of a training crop at its own
        resolution (C = data.crop, 640 in both recipes; resized to a multiple of the patch size if need
        be). DINO's last-layer patch tokens after the final norm, not L2-normalised ([B, C/16, C/16, 384]),
        k-means with k clusters per crop, the label map brought to `mask_size` by nearest sampling (equal
        to the authors' nearest upsampling to C and then to the mask size).
        Returns bool [B, k, M, M], M = mask_size: disjoint masks covering each crop; a cluster with no
        pixel at that size is an all-False mask (training drops masks of at most one pixel).
        """
        if crops.ndim != 4 or crops.shape[1] != 3 or crops.shape[-1] != crops.shape[-2]:
            raise ValueError(f"crops must be square images [B, 3, C, C], got {tuple(crops.shape)}")
        patch = self.model.patch_embed.patch_size[0]
        x = crops.to(self.device, non_blocking=True).float()
        x = x.div_(255) if crops.dtype == torch.uint8 else x
        side = max(patch, x.shape[-1] // patch * patch)
        if side != x.shape[-1]:
            x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
        tokens = self._tokens((x - self.mean) / self.std)  # [B, g, g, C]
        B, g, _, C = tokens.shape
        labels = kmeans_labels(tokens.reshape(B, g * g, C), self.k, self.seed, self.max_iter)  # [B, g*g]
        idx = torch.arange(mask_size, device=labels.device) * g // mask_size  # nearest: floor(i * g / M)
        lab = labels.reshape(B, g, g)[:, idx[:, None], idx[None, :]]  # [B, M, M]
        return lab[:, None] == torch.arange(self.k, device=lab.device).view(1, -1, 1, 1)  # [B, k, M, M]

    @torch.no_grad()
    def __call__(self, images: Sequence[ImageLike]) -> list[np.ndarray]:
        """Per image a bool [n, H, W] partition (n <= k, by area descending). Batched on the device."""
        if len(images) == 0:
            return []
        sizes = [tuple(_as_chw_uint8(image).shape[1:]) for image in images]
        feats = self.features(images)
        B, g, _, C = feats.shape
        labels = kmeans_labels(feats.reshape(B, g * g, C), self.k, self.seed, self.max_iter).reshape(B, g, g)
        out = []
        for lab, size in zip(labels, sizes, strict=True):
            label_map = upsample_labels(lab, self.k, size, self.image_size).cpu().numpy()
            out.append(label_masks(label_map))
        return out


# ----------------------------------------------------------------------------------------------
# SAM's automatic mask generator.

class SamMasker:
    """SAM automatic masks: per image a bool [N, H, W] (overlapping, by area descending; N may be 0).

    Runs wherever `sam_model` is; amg_kwargs go to `SamAutomaticMaskGenerator` (box_nms_thresh,
    points_per_batch, crop_n_layers, ...; output_mode is always "binary_mask")."""

    random_weights: bool = False  # set by from_weights(None)

    def __init__(self, sam_model, points_per_side: int = 32, pred_iou_thresh: float = 0.88,
                 stability_score_thresh: float = 0.95, min_mask_region_area: int = 0, **amg_kwargs):
        from segment_anything import SamAutomaticMaskGenerator

        if amg_kwargs.pop("output_mode", "binary_mask") != "binary_mask":
            raise ValueError("SamMasker returns binary masks; output_mode must be 'binary_mask'")
        if min_mask_region_area > 0 and importlib.util.find_spec("cv2") is None:
            raise ImportError("min_mask_region_area > 0 needs OpenCV (cv2), which is not installed")
        self.model = sam_model.eval()
        self.generator = SamAutomaticMaskGenerator(
            self.model, points_per_side=points_per_side, pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh, min_mask_region_area=min_mask_region_area,
            output_mode="binary_mask", **amg_kwargs)

    @classmethod
    def from_weights(cls, path: str | Path | None, model_type: str | Callable[[], torch.nn.Module] = "vit_b",
                     device="cpu", **kw) -> SamMasker:
        """A masker on SAM weights read from a local file with `torch.load(weights_only=True)`.

        model_type: a `segment_anything.sam_model_registry` key (built with checkpoint=None, since its
        builder would unpickle the file) or a callable returning a `Sam` (e.g. `tiny_sam`). path=None:
        random weights, flagged by `random_weights`. kw go to `__init__`."""
        from segment_anything import sam_model_registry

        if isinstance(model_type, str):
            if model_type not in sam_model_registry:
                raise ValueError(f"unknown SAM model_type {model_type!r}; one of {sorted(sam_model_registry)}")
            sam = sam_model_registry[model_type](checkpoint=None)
        else:
            sam = model_type()
        if path is not None:
            load_strict(sam, read_state_dict(path, map_location=device), f"{path} (SAM {model_type})")
        masker = cls(sam.to(device), **kw)
        masker.random_weights = path is None
        return masker

    def __call__(self, images: Sequence[ImageLike]) -> list[np.ndarray]:
        """Per image a bool [N, H, W], largest mask first."""
        out = []
        for image in images:
            image = _as_hwc_uint8(image)
            anns = sorted(self.generator.generate(image), key=lambda a: -a["area"])
            if anns:
                out.append(np.stack([a["segmentation"] for a in anns]).astype(bool, copy=False))
            else:
                out.append(np.zeros((0, *image.shape[:2]), dtype=bool))
        return out


def tiny_dino(dim: int = 32, depth: int = 2) -> torch.nn.Module:
    """A random ViT with DINO's interface (patch 16, any input size), small enough for CPU tests."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=224, patch_size=16, embed_dim=dim, depth=depth, num_heads=2, mlp_ratio=2.0,
                             num_classes=0, dynamic_img_size=True).eval()


def tiny_sam(img_size: int = 256, dim: int = 32, seed: int = 0) -> torch.nn.Module:
    """A random SAM small enough for CPU tests and smoke runs (~80k parameters at the defaults).

    Any img_size that is a multiple of 16 works: SAM's preprocessing pads to
    `image_encoder.img_size` and the prompt encoder is built for an img_size/16 embedding grid. The
    global RNG is left as it was."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    grid = img_size // 16
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = Sam(
            image_encoder=ImageEncoderViT(
                img_size=img_size, patch_size=16, embed_dim=dim, depth=1, num_heads=2, mlp_ratio=2.0, out_chans=dim,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True, window_size=8),
            prompt_encoder=PromptEncoder(embed_dim=dim, image_embedding_size=(grid, grid),
                                         input_image_size=(img_size, img_size), mask_in_chans=4),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=3, transformer_dim=dim, iou_head_depth=2, iou_head_hidden_dim=16,
                transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=2 * dim, num_heads=2)),
            pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])
    return sam.eval()
