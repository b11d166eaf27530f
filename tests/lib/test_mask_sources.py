"""Tests of pixelclip.data.masks: DINO + k-means masks and SAM automatic masks, on random weights.

Random weights say nothing about mask quality, so these tests check structure (shapes, dtypes,
partition, ordering, determinism), the geometry from pixels to patches and back, and weight loading.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from pixelclip.data.masks import (
    DinoMasker,
    SamMasker,
    kmeans_labels,
    label_masks,
    read_state_dict,
    tiny_sam,
    upsample_labels,
)


def tiny_vit(seed: int = 0) -> torch.nn.Module:
    """A 2-block, 48-wide timm ViT with 16 px patches (the DINO ViT-S/16 layout, scaled down)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, depth=2,
                                 embed_dim=48, num_heads=3, dynamic_img_size=True)


def random_images(seed: int = 0) -> list:
    """Two uint8 images of different sizes, one numpy HxWx3 and one tensor [3, H, W]."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    b = torch.from_numpy(rng.integers(0, 256, (3, 90, 40), dtype=np.uint8))
    return [a, b]


def check_partition(masks: np.ndarray, hw: tuple[int, int], k: int) -> None:
    """bool [n, H, W], 1 <= n <= k, no empty mask, disjoint, covering, by area descending."""
    assert isinstance(masks, np.ndarray) and masks.dtype == np.bool_
    assert masks.ndim == 3 and masks.shape[1:] == hw and 1 <= masks.shape[0] <= k
    assert (masks.sum(0) == 1).all()  # disjoint and covering every pixel
    areas = masks.sum((1, 2))
    assert (areas > 0).all() and (np.diff(areas) <= 0).all()


# ----------------------------------------------------------------------------------------------
# DINO

def test_dino_masks_partition_and_determinism():
    masker = DinoMasker(tiny_vit(), k=6, image_size=128, seed=3)
    images = random_images()
    out = masker(images)
    assert len(out) == 2
    check_partition(out[0], (50, 70), 6)
    check_partition(out[1], (90, 40), 6)
    again = masker(images)
    assert all(np.array_equal(a, b) for a, b in zip(out, again, strict=True))
    assert masker([]) == []


def test_dino_image_alone_or_in_a_batch_same_masks():
    """The k-means start is per image, not per batch."""
    masker = DinoMasker(tiny_vit(), k=6, image_size=128)
    images = random_images(1)
    batch = masker(images)
    alone = [masker([im])[0] for im in images]
    assert all(np.array_equal(a, b) for a, b in zip(batch, alone, strict=True))


@pytest.mark.parametrize("side", [64, 32])
def test_dino_masks_follow_pixels_not_positions(side):
    """With position embeddings zeroed a ViT's tokens are a function of patch contents only, so on two
    flat halves split on the patch grid no mask straddles the split, and each half is covered. This
    checks resize -> tokens (prefix stripped, row-major) -> clusters -> pixels, not semantics."""
    model = tiny_vit()
    with torch.no_grad():
        model.pos_embed.zero_()
    image = np.zeros((side, side, 3), dtype=np.uint8)
    image[:, : side // 2] = (200, 30, 30)
    image[:, side // 2:] = (20, 60, 220)
    masks = DinoMasker(model, k=4, image_size=64)([image])[0]
    check_partition(masks, (side, side), 4)
    left = np.zeros((side, side), dtype=bool)
    left[:, : side // 2] = True
    in_left = (masks & left).any((1, 2))
    in_right = (masks & ~left).any((1, 2))
    assert not (in_left & in_right).any()
    assert in_left.any() and in_right.any()
    # A transposed token grid would split top/bottom instead: the masks must not.
    top = np.zeros((side, side), dtype=bool)
    top[: side // 2] = True
    assert ((masks & top).any((1, 2)) & (masks & ~top).any((1, 2))).all()


@pytest.mark.slow
def test_dino_vit_s16_features_at_640():
    """The paper's setting: DINO ViT-S/16 at 640 gives a 40x40x384 L2-normalised token grid."""
    masker = DinoMasker.from_weights(None)
    assert masker.random_weights and masker.k == 16 and masker.image_size == 640
    image = np.random.default_rng(0).integers(0, 256, (100, 150, 3), dtype=np.uint8)
    feats = masker.features([image])
    assert feats.shape == (1, 40, 40, 384) and feats.dtype == torch.float32
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(1, 40, 40))
    check_partition(masker([image])[0], (100, 150), 16)


def test_dino_rejects_bad_inputs_and_settings():
    masker = DinoMasker(tiny_vit(), k=4, image_size=64)
    with pytest.raises(ValueError, match="uint8"):
        masker([torch.rand(3, 20, 20)])
    with pytest.raises(ValueError, match="HxWx3"):
        masker([np.zeros((20, 20), dtype=np.uint8)])
    with pytest.raises(ValueError, match="multiple of the patch size"):
        DinoMasker(tiny_vit(), image_size=100)
    with pytest.raises(ValueError, match="number of patches"):
        DinoMasker(tiny_vit(), k=17, image_size=64)  # a 4x4 grid
    fixed = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, depth=1,
                              embed_dim=48, num_heads=3)
    with pytest.raises(ValueError, match="dynamic_img_size"):
        DinoMasker(fixed, image_size=64)


def test_dino_from_weights_round_trip(tmp_path):
    """Random ViT-S/16 weights saved as .safetensors, .pth, and .pth with DINO's wrapper prefix."""
    ref = DinoMasker.from_weights(None, k=4, image_size=64, seed=5)
    sd = {k: v.contiguous() for k, v in ref.model.state_dict().items()}
    assert {"cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.11.mlp.fc2.bias", "norm.weight"} <= set(sd)
    save_file(sd, str(tmp_path / "dino.safetensors"))
    torch.save(sd, tmp_path / "dino.pth")
    torch.save({"teacher": {f"backbone.{k}": v for k, v in sd.items()}}, tmp_path / "wrapped.pth")
    images = random_images(2)
    expected = ref(images)
    for name in ("dino.safetensors", "dino.pth", "wrapped.pth"):
        masker = DinoMasker.from_weights(tmp_path / name, k=4, image_size=64, seed=5)
        assert not masker.random_weights
        for k, v in masker.model.state_dict().items():
            assert torch.equal(v, sd[k]), (name, k)
        assert all(np.array_equal(a, b) for a, b in zip(masker(images), expected, strict=True))


def test_dino_from_weights_wrong_keys(tmp_path):
    sd = DinoMasker.from_weights(None, k=4, image_size=64).model.state_dict()
    sd["final_norm.gamma"] = sd.pop("norm.weight")
    del sd["cls_token"]
    sd["pos_embed"] = torch.zeros(1, 10, 384)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="state dict does not match") as info:
        DinoMasker.from_weights(tmp_path / "bad.pth", k=4, image_size=64)
    msg = str(info.value)
    assert "missing keys [cls_token, norm.weight]" in msg
    assert "unexpected keys [final_norm.gamma]" in msg
    assert "pos_embed (1, 10, 384) vs (1, 197, 384)" in msg


@pytest.mark.slow
def test_kmeans_batched_equals_per_item_and_keeps_global_rng():
    """A token grid's worth of loosely clustered unit vectors (1600 x 384, as at 640 px) per item. With
    MultiKMeans' default tol the batch stops on its summed error, before some items converge."""
    g = torch.Generator().manual_seed(0)
    B, N, C = 8, 1600, 384
    centres = torch.randn(B, 40, C, generator=g).repeat_interleave(N // 40, dim=1)
    x = F.normalize(torch.randn(B, N, C, generator=g) + 0.3 * centres, dim=-1)
    state = torch.get_rng_state()
    labels = kmeans_labels(x, k=16, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert labels.shape == (B, N) and labels.dtype == torch.int64 and labels.max() < 16
    for b in range(B):
        assert torch.equal(kmeans_labels(x[b:b + 1], k=16, seed=1)[0], labels[b]), b
    assert torch.equal(kmeans_labels(x, k=16, seed=1), labels)
    with pytest.raises(ValueError, match="number of points"):
        kmeans_labels(x[:, :5], k=8)


def test_upsample_labels_is_bilinear_one_hot_argmax_then_nearest():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 5, (8, 8), generator=g)
    onehot = F.one_hot(labels, 5).permute(2, 0, 1)[None].float()
    for size in [(64, 64), (37, 50), (5, 7)]:  # at most max_side: bilinear + argmax at full size
        ref = F.interpolate(onehot, size=size, mode="bilinear", align_corners=False)[0].argmax(0)
        out = upsample_labels(labels, 5, size, max_side=64)
        assert out.dtype == torch.int16 and torch.equal(out.long(), ref)
    work = F.interpolate(onehot, size=(64, 40), mode="bilinear", align_corners=False)[0].argmax(0)
    ref = F.interpolate(work[None, None].float(), size=(150, 40), mode="nearest-exact")[0, 0].long()
    assert torch.equal(upsample_labels(labels, 5, (150, 40), max_side=64).long(), ref)


def test_label_masks_order():
    label_map = np.array([[3, 3, 0], [3, 1, 1]], dtype=np.int16)
    masks = label_masks(label_map)
    assert masks.dtype == np.bool_ and masks.shape == (3, 2, 3)
    assert masks.sum((1, 2)).tolist() == [3, 2, 1]
    assert np.array_equal(masks[0], label_map == 3) and np.array_equal(masks[2], label_map == 0)


# ----------------------------------------------------------------------------------------------
# SAM

def open_sam(model, **kw) -> SamMasker:
    """Thresholds off so random weights give masks; no NMS so all 3 masks per point survive."""
    return SamMasker(model, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                     box_nms_thresh=1.0, **kw)


def test_sam_plumbing():
    out = open_sam(tiny_sam())(random_images())
    assert len(out) == 2
    for masks, hw in zip(out, [(50, 70), (90, 40)], strict=True):
        assert isinstance(masks, np.ndarray) and masks.dtype == np.bool_
        assert masks.ndim == 3 and masks.shape[1:] == hw and masks.shape[0] >= 1
        assert (np.diff(masks.sum((1, 2))) <= 0).all()


def test_sam_default_thresholds_shape_even_when_empty():
    out = SamMasker(tiny_sam(), points_per_side=4)(random_images()[:1])
    assert out[0].dtype == np.bool_ and out[0].ndim == 3 and out[0].shape[1:] == (50, 70)


@pytest.mark.parametrize("img_size", [1024, 128])
def test_tiny_sam_sizes(img_size):
    """SAM's pipeline is keyed on image_encoder.img_size: any multiple of 16 runs, 1024 included."""
    masks = open_sam(tiny_sam(img_size=img_size))(random_images()[:1])[0]
    assert masks.shape[1:] == (50, 70) and masks.shape[0] >= 1


def test_sam_from_weights_uses_weights_only(tmp_path, monkeypatch):
    model = tiny_sam(seed=1)
    torch.save(model.state_dict(), tmp_path / "sam.pth")
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    masker = SamMasker.from_weights(tmp_path / "sam.pth", model_type=tiny_sam, points_per_side=4,
                                    pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
    assert calls and all(c.get("weights_only") is True for c in calls)
    assert not masker.random_weights
    for k, v in masker.model.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k
    images = random_images()
    assert all(np.array_equal(a, b) for a, b in zip(masker(images), open_sam(model)(images), strict=True))


class _Payload:
    """Anything a plain torch.load would unpickle and weights_only refuses."""


def test_sam_from_weights_refuses_pickled_objects_and_wrong_keys(tmp_path):
    torch.save({"model": _Payload()}, tmp_path / "evil.pth")
    with pytest.raises(pickle.UnpicklingError):
        read_state_dict(tmp_path / "evil.pth")
    sd = tiny_sam().state_dict()
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"unexpected keys \[extra.weight\]"):
        SamMasker.from_weights(tmp_path / "bad.pth", model_type=tiny_sam)
    with pytest.raises(ValueError, match="vit_b"):
        SamMasker.from_weights(None, model_type="vit_x")


def test_sam_from_weights_registry_random():
    masker = SamMasker.from_weights(None, model_type="vit_b")
    assert masker.random_weights
    assert masker.model.image_encoder.img_size == 1024 and len(masker.model.image_encoder.blocks) == 12


def test_sam_options():
    with pytest.raises(ValueError, match="binary_mask"):
        SamMasker(tiny_sam(), output_mode="coco_rle")
    try:
        import cv2  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="cv2"):
            SamMasker(tiny_sam(), min_mask_region_area=10)
