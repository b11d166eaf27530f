"""Tests of pixelclip.data.augment: shared geometry, weak/strong views, CutOut keep map, collate, and the
OpenCV photometric / resampling ops against their torchvision definitions."""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from pixelclip.config import DataConfig, load_config
from pixelclip.data import augment as A
from pixelclip.data import photometric as P
from pixelclip.data.augment import ViewAugment, Views, collate


def tiny_data(**changes) -> DataConfig:
    """The tiny preset's data config (mask 64, resize_short 80, crop 64) with fields replaced."""
    return dataclasses.replace(load_config("tiny").data, **changes)


def no_photometric(**changes) -> DataConfig:
    return tiny_data(ssd_jitter=False, jitter_p=0.0, gray_p=0.0, blur_p=0.0, cutout_p=0.0, **changes)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rect_sample(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 image [3, H, W], bright (255) exactly on the union of 2 rectangular masks, dark elsewhere,
    with masks [2, H, W]: one on the left, one on the lower right (asymmetric, so flips show)."""
    masks = torch.zeros(2, h, w, dtype=torch.bool)
    masks[0, h // 5: 3 * h // 5, w // 10: 4 * w // 10] = True
    masks[1, 3 * h // 5: 9 * h // 10, 6 * w // 10: 9 * w // 10] = True
    image = torch.full((3, h, w), 10, dtype=torch.uint8)
    image[:, masks.any(0)] = 245
    return image, masks


def brightness_at_mask_res(view: torch.Tensor, m: int) -> torch.Tensor:
    """[3, S, S] -> [M, M] mean brightness, area-resampled to the mask grid."""
    return F.interpolate(view.mean(0)[None, None], size=(m, m), mode="area")[0, 0]


@pytest.mark.parametrize(("h", "w", "image_size", "mask_size"), [
    (120, 90, 64, 64), (90, 160, 64, 32), (200, 200, 96, 48)])
def test_geometry_moves_masks_with_image(h, w, image_size, mask_size):
    image, masks = rect_sample(h, w)
    flips = set()
    for seed in range(8):
        cfg = no_photometric(mask_size=mask_size, flip_p=0.5)
        v = ViewAugment(cfg, image_size)(image, masks, gen(seed))
        lum = brightness_at_mask_res(v.weak, mask_size)  # [M, M]
        union = v.masks.any(0)
        assert union.any() and (~union).any()
        # Away from the rectangle borders (blurred by the antialiased resizes) the image and masks agree.
        inner = -F.max_pool2d(-union.float()[None, None], 5, 1, 2)[0, 0] > 0.5  # eroded union
        outer = F.max_pool2d(union.float()[None, None], 5, 1, 2)[0, 0] < 0.5  # far from the union
        if inner.any():
            assert lum[inner].min() > 0.85
        assert lum[outer].max() < 0.15
        assert lum[union].mean() > 0.75 and lum[~union].mean() < 0.25
        torch.testing.assert_close(v.strong, v.weak)  # no photometric augmentation at all
        assert v.keep.all()
        # Mask 0 sits on the left of the source; it stays left unless flipped.
        cols = torch.nonzero(v.masks[0])[:, 1].float()
        if cols.numel():
            flips.add(bool(cols.mean() > mask_size / 2))
    assert flips == {True, False}  # both flipped and unflipped samples were seen


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_flip_probability_is_respected(flip):
    image, masks = rect_sample(80, 80)  # resized 80x80, crop 64: the left mask stays in the left half
    for seed in range(4):
        v = ViewAugment(no_photometric(flip_p=flip), 64)(image, masks, gen(seed))
        cols = torch.nonzero(v.masks[0])[:, 1].float()
        assert (cols.mean() > 32) == (flip == 1.0)
        bright_cols = torch.nonzero(v.weak.mean(0) > 0.5)[:, 1].float()
        assert bright_cols.numel() > 0


def test_cutout_only_changes_the_box_and_keep_matches():
    torch.manual_seed(0)
    image = (torch.rand(3, 100, 130) * 0.7 + 0.2)  # float in [0.2, 0.9]: the view is never black
    masks = torch.rand(3, 100, 130) > 0.5
    for mask_size in (64, 32):
        cfg = tiny_data(mask_size=mask_size, jitter_p=0.0, gray_p=0.0, blur_p=0.0, cutout_p=1.0,
                        cutout_scale=[0.2, 0.5])
        for seed in range(5):
            v = ViewAugment(cfg, 64)(image, masks, gen(seed))
            assert not (v.weak == 0).all(0).any()  # no black pixel before CutOut (SSD jitter is on)
            box = (v.strong == 0).all(0)  # [S, S]
            rows, cols = torch.nonzero(box, as_tuple=True)
            top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
            assert box[top:bottom, left:right].all()  # a filled rectangle
            assert box.sum() == (bottom - top) * (right - left)
            for side in (bottom - top, right - left):
                assert 0.2 * 64 - 1 <= side <= 0.5 * 64 + 1
            assert torch.equal(v.strong[:, ~box], v.weak[:, ~box])  # identical outside the box
            # keep: False exactly under the box, mapped to the mask grid.
            expected = F.interpolate(box.float()[None, None], size=(mask_size, mask_size),
                                     mode="nearest-exact")[0, 0] > 0.5
            assert torch.equal(v.keep, ~expected)
            frac_removed = (~v.keep).float().mean().item()
            assert abs(frac_removed - box.float().mean().item()) < 0.05
            assert v.masks.shape == (3, mask_size, mask_size)


def test_strong_differs_photometrically_with_full_recipe():
    image, masks = rect_sample(96, 128)
    cfg = tiny_data(jitter_p=1.0, gray_p=1.0, blur_p=1.0, cutout_p=0.0)
    v = ViewAugment(cfg, 64)(image, masks, gen(3))
    assert not torch.allclose(v.strong, v.weak)
    assert torch.allclose(v.strong[0], v.strong[1]) and torch.allclose(v.strong[1], v.strong[2])  # gray
    assert v.keep.all()


@pytest.mark.parametrize(("h", "w"), [(40, 56), (300, 170)])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_shapes_dtypes_ranges(h, w, dtype):
    torch.manual_seed(1)
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
    image = image if dtype == torch.uint8 else image.float() / 255
    masks = torch.rand(5, h, w) > 0.7
    cfg = tiny_data(mask_size=32)
    for seed in range(3):
        v = ViewAugment(cfg, 48)(image, masks, gen(seed))
        assert v.weak.shape == v.strong.shape == (3, 48, 48)
        assert v.weak.dtype == v.strong.dtype == torch.float32
        assert v.masks.shape == (5, 32, 32) and v.masks.dtype == torch.bool
        assert v.keep.shape == (32, 32) and v.keep.dtype == torch.bool
        for t in (v.weak, v.strong):
            assert t.min() >= 0.0 and t.max() <= 1.0 and torch.isfinite(t).all()


def test_padding_when_resized_image_is_smaller_than_crop():
    # resize_short < crop is rejected by config validation; the augmentation still pads correctly.
    cfg = no_photometric(resize_short=48, crop=64, flip_p=0.0)
    image = torch.full((3, 30, 45), 200, dtype=torch.uint8)  # resized to 48 x 72
    masks = torch.ones(1, 30, 45, dtype=torch.bool)
    seen_offsets = set()
    for seed in range(6):
        v = ViewAugment(cfg, 64)(image, masks, gen(seed))
        rows_with_image = (v.weak.mean((0, 2)) > 0.5).sum().item()
        rows_with_mask = v.masks[0].any(1).sum().item()
        assert abs(rows_with_image - 48) <= 1 and abs(rows_with_mask - 48) <= 1
        assert v.masks[0].all(1).sum() == rows_with_mask  # full width covered: 72 > 64
        lum = v.weak.mean(0)  # [S, S]
        assert torch.equal(lum > 0.5, v.masks[0])  # padded rows are black and masked out
        seen_offsets.add(int(torch.nonzero(v.masks[0].any(1))[0]))
    assert len(seen_offsets) > 1  # the image lands at a random offset inside the padding


def test_zero_masks_allowed():
    image = torch.randint(0, 256, (3, 70, 90), dtype=torch.uint8)
    v = ViewAugment(tiny_data(), 64)(image, torch.zeros(0, 70, 90, dtype=torch.bool), gen(0))
    assert v.masks.shape == (0, 64, 64) and v.masks.dtype == torch.bool


def views_equal(a: Views, b: Views) -> bool:
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("weak", "strong", "masks", "keep"))


def test_determinism():
    torch.manual_seed(2)
    image = torch.randint(0, 256, (3, 90, 120), dtype=torch.uint8)
    masks = torch.rand(4, 90, 120) > 0.5
    aug = ViewAugment(tiny_data(jitter_p=1.0, blur_p=1.0), 64)
    a, b = aug(image, masks, gen(7)), aug(image, masks, gen(7))
    assert views_equal(a, b)
    others = [aug(image, masks, gen(s)) for s in (8, 9)]
    assert not any(views_equal(a, o) for o in others)
    state = torch.get_rng_state()
    aug(image, masks, gen(7))
    aug(image, masks)  # no generator: its own seed, global RNG untouched
    assert torch.equal(state, torch.get_rng_state())


def test_collate_pads_and_stacks():
    aug = ViewAugment(tiny_data(mask_size=32), 48)
    image = torch.randint(0, 256, (3, 60, 80), dtype=torch.uint8)
    views = [aug(image, torch.rand(n, 60, 80) > 0.5, gen(n)) for n in (3, 0, 5)]
    batch = collate(views)
    assert batch["weak"].shape == batch["strong"].shape == (3, 3, 48, 48)
    assert batch["masks"].shape == (3, 5, 32, 32) and batch["masks"].dtype == torch.bool
    assert batch["keep"].shape == (3, 32, 32) and batch["keep"].dtype == torch.bool
    assert torch.equal(batch["masks"][0, :3], views[0].masks) and not batch["masks"][0, 3:].any()
    assert not batch["masks"][1].any()
    assert torch.equal(batch["masks"][2], views[2].masks)
    assert torch.equal(batch["strong"][1], views[1].strong)
    assert torch.equal(batch["keep"][2], views[2].keep)


def test_collate_all_empty_masks():
    aug = ViewAugment(tiny_data(), 64)
    image = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    batch = collate([aug(image, torch.zeros(0, 64, 64, dtype=torch.bool), gen(i)) for i in range(2)])
    assert batch["masks"].shape == (2, 0, 64, 64)


@pytest.mark.parametrize(("image", "masks", "match"), [
    (torch.zeros(64, 64, dtype=torch.uint8), torch.zeros(1, 64, 64, dtype=torch.bool),
     r"image.*\[3, H, W\].*got shape \(64, 64\)"),
    (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), torch.zeros(1, 64, 64, dtype=torch.bool),
     r"image.*got shape \(1, 3, 64, 64\)"),
    (torch.zeros(4, 64, 64, dtype=torch.uint8), torch.zeros(1, 64, 64, dtype=torch.bool),
     r"image.*got shape \(4, 64, 64\)"),
    (torch.zeros(3, 64, 64, dtype=torch.int32), torch.zeros(1, 64, 64, dtype=torch.bool),
     r"image dtype.*int32"),
    (torch.zeros(3, 64, 64, dtype=torch.uint8), torch.zeros(1, 64, 64, dtype=torch.uint8),
     r"masks.*bool"),
    (torch.zeros(3, 64, 64, dtype=torch.uint8), torch.zeros(64, 64, dtype=torch.bool),
     r"masks.*\[N, H, W\]"),
    (torch.zeros(3, 64, 64, dtype=torch.uint8), torch.zeros(2, 64, 60, dtype=torch.bool),
     r"masks H, W \(64, 60\).*image H, W \(64, 64\)"),
])
def test_bad_inputs_raise(image, masks, match):
    with pytest.raises(ValueError, match=match):
        ViewAugment(tiny_data(), 64)(image, masks, gen(0))


def test_bad_image_size_and_empty_collate_raise():
    with pytest.raises(ValueError, match="image_size"):
        ViewAugment(tiny_data(), 0)
    with pytest.raises(ValueError, match="empty"):
        collate([])


# ----------------------------------------------------------------------------------------------
# OpenCV implementation details: numerics against torchvision, layout, threads.

def photo(h: int = 40, w: int = 56, seed: int = 0) -> np.ndarray:
    """[H, W, 3] float32 in [0, 1] with the HSV edge cases: gray rows (S = 0), black and white pixels."""
    x = np.random.default_rng(seed).random((h, w, 3), dtype=np.float32)
    x[:4] = 0.5
    x[4:6] = 0.0
    x[6:8] = 1.0
    x[8:10, :, 0] = 0.0
    return x


def chw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).permute(2, 0, 1).contiguous()


def hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).numpy()


@pytest.mark.parametrize("hue", [-0.5, -0.3, -0.1, -1e-3, 0.0, 0.05, 0.25, 0.5])
def test_hue_shift_matches_torchvision(hue):
    x = photo()
    np.testing.assert_allclose(P.hsv_adjust(x.copy(), None, hue), hwc(TF.adjust_hue(chw(x), hue)), atol=1e-5)


@pytest.mark.parametrize("factor", [0.0, 0.5, 1.0, 1.5, 4.0])
def test_hsv_saturation_is_scaled_and_clipped_at_one(factor):
    x = photo()
    t = chw(x)
    v, lo = t.amax(0, keepdim=True), t.amin(0, keepdim=True)  # [1, H, W]
    # HSV saturation s = (v - min) / v scaled to min(f s, 1), hue and value kept: c' = v - f' (v - c), where
    # f' = min(f, v / (v - min)).
    limit = torch.where(v > lo, v / (v - lo).clamp_min(1e-12), torch.full_like(v, factor))
    expected = (v - limit.clamp(max=factor) * (v - t)).clamp(0, 1)
    np.testing.assert_allclose(P.hsv_adjust(x.copy(), factor, None), hwc(expected), atol=1e-5)
    # Saturation and hue in one round trip equal the two steps in turn.
    both = P.hsv_adjust(x.copy(), factor, 0.07)
    np.testing.assert_allclose(both, P.hsv_adjust(P.hsv_adjust(x.copy(), factor, None), None, 0.07), atol=1e-5)


@pytest.mark.parametrize("factor", [0.0, 0.5, 1.0, 1.5])
def test_colour_jitter_ops_match_torchvision(factor):
    x = photo()
    for ours, theirs in ((P.brightness, TF.adjust_brightness), (P.contrast, TF.adjust_contrast),
                         (P.saturation, TF.adjust_saturation)):
        np.testing.assert_allclose(ours(x.copy(), factor), hwc(theirs(chw(x), factor)), atol=1e-5)


def test_grayscale_matches_torchvision_with_equal_channels():
    x = photo()
    out = P.grayscale(x)
    assert out.shape == x.shape and out.dtype == np.float32
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    np.testing.assert_allclose(out, hwc(TF.rgb_to_grayscale(chw(x), num_output_channels=3)), atol=1e-6)


@pytest.mark.parametrize("sigma", [0.2, 0.6, 1.3, 2.0, 30.0])
def test_blur_matches_torchvision_gaussian_blur(sigma):
    x = photo(33, 48)
    k = min(2 * math.ceil(3 * sigma) + 1, 33)  # kernel rule, capped to the (odd) short side
    out = P.blur(x, sigma)
    if k < 3:
        assert out is x
    else:
        np.testing.assert_allclose(out, hwc(TF.gaussian_blur(chw(x), [k, k], [sigma, sigma])), atol=1e-5)


def smooth_image(h: int, w: int) -> np.ndarray:
    """[H, W, 3] uint8, band-limited (periods >= 12 px), so that resampling methods agree closely."""
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    chans = [np.sin(yy / 5 + c) * np.cos(xx / 7 - c) + 0.5 * np.sin((xx + yy) / 11 * (c + 1)) for c in range(3)]
    return np.clip(np.stack(chans, -1) * 80 + 128, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("h", "w", "resize_short", "crop", "size", "max_tol"), [
    (150, 225, 204, 128, 128, 2 / 255),  # upscale then crop (the convnext_b case): plain bilinear both ways
    (150, 225, 204, 128, 64, 0.03),  # upscale, crop, shrink (the vit_b case): one filter instead of two
    (300, 450, 100, 64, 64, 0.01),  # shrink 3x: triangle low-pass, as torchvision's antialias
])
def test_one_resample_matches_two_step_resize(h, w, resize_short, crop, size, max_tol):
    image = smooth_image(h, w)
    cfg = no_photometric(resize_short=resize_short, crop=crop, flip_p=0.5)
    for seed in range(6):
        geo = A._sample_geometry(cfg, h, w, gen(seed))
        ref = TF.resize(torch.from_numpy(image).permute(2, 0, 1), list(geo.resized), antialias=True)
        ref = TF.crop(ref, geo.top, geo.left, crop, crop)
        ref = TF.horizontal_flip(ref) if geo.flip else ref
        ref = TF.resize(ref, [size, size], antialias=True) if crop != size else ref
        ref = hwc(ref.float() / 255)  # [S, S, 3]
        out = A._geometry_image(image, geo, crop, size)
        assert out.shape == (size, size, 3) and out.dtype == np.float32
        assert np.abs(out - ref).mean() < 0.005
        assert np.abs(out - ref).max() <= max_tol + 1e-6


def test_shrinking_is_antialiased():
    board = ((np.add.outer(np.arange(240), np.arange(300)) % 2) * 255).astype(np.uint8)  # 1 px checkerboard
    image = torch.from_numpy(np.repeat(board[None], 3, 0))  # [3, 240, 300], resized to 80 x 100: 3x smaller
    for seed in range(3):
        v = ViewAugment(no_photometric(flip_p=0.5), 64)(image, torch.ones(1, 240, 300, dtype=torch.bool), gen(seed))
        assert (v.weak - 0.5).abs().max() < 0.05  # plain bilinear sampling would read 0 or 1


def test_padding_edge_is_aligned_with_masks_when_resizing():
    # crop 64 -> view 32: view pixels are zero exactly where their centre is outside the resized image,
    # which is where the masks (sampled at the same centres, mask_size 32) read False.
    cfg = no_photometric(resize_short=48, crop=64, flip_p=0.5, mask_size=32)
    image = torch.full((3, 30, 45), 200, dtype=torch.uint8)  # resized to 48 x 72
    masks = torch.ones(1, 30, 45, dtype=torch.bool)
    for seed in range(6):
        v = ViewAugment(cfg, 32)(image, masks, gen(seed))
        assert 0 < v.masks[0].sum() < 32 * 32
        assert torch.equal(v.weak.mean(0) > 0.5, v.masks[0])
        torch.testing.assert_close(v.weak.mean(0)[v.masks[0]], torch.full_like(v.weak[0][v.masks[0]], 200 / 255))


def test_decoded_layout_is_read_without_copy_and_views_are_contiguous():
    hw3 = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    image = torch.from_numpy(hw3).permute(2, 0, 1)  # [3, H, W] view of HWC memory, as the reader makes it
    assert np.shares_memory(A._to_hwc(image), hw3)
    v = ViewAugment(tiny_data(), 64)(image, torch.zeros(0, 70, 90, dtype=torch.bool), gen(0))
    assert v.weak.is_contiguous() and v.strong.is_contiguous()
    assert cv2.getNumThreads() == 1  # OpenCV pinned to one thread by the first call
    w = ViewAugment(tiny_data(), 64)(image.contiguous(), torch.zeros(0, 70, 90, dtype=torch.bool), gen(0))
    assert views_equal(v, w)  # a channels-first contiguous image gives the same views
