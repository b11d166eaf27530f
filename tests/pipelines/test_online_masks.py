"""DINO masks on each training crop: the library's `crop_masks`, the crop view, the Ray Data stage, train."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pixelclip
from pixelclip.config import DataConfig
from pixelclip.data.augment import ViewAugment
from pixelclip.data.masks import DinoMasker


class PatchColour(nn.Module):
    """DINO's interface with tokens a test can predict: each patch token is the patch's mean colour."""

    num_prefix_tokens = 0
    dynamic_img_size = True

    def __init__(self, patch: int = 16):
        super().__init__()
        self.patch_embed = SimpleNamespace(patch_size=(patch, patch), img_size=(224, 224))
        self.patch = patch

    def forward_features(self, x):
        tokens = F.avg_pool2d(x, self.patch).flatten(2).transpose(1, 2)  # [B, g*g, 3]
        noise = torch.randn(tokens.shape, generator=torch.Generator().manual_seed(0))
        return tokens + 1e-3 * noise  # no two tokens equal: k-means never starts from twin centroids


def _two_colours(h=200, w=200, split=100) -> torch.Tensor:
    img = torch.zeros(3, h, w, dtype=torch.uint8)
    img[0, :, :split] = 230  # red on the left
    img[2, :, split:] = 230  # blue on the right
    return img


def _plain(**kw) -> DataConfig:
    base = {"mask_size": 32, "resize_short": 200, "crop": 128, "flip_p": 0.0, "ssd_jitter": False,
            "jitter_p": 0.0, "gray_p": 0.0, "blur_p": 0.0, "cutout_p": 0.0}
    return DataConfig(**{**base, **kw})


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_crop_masks_follow_the_crop_they_were_computed_on(flip):
    """The masks partition the crop as its own pixels do: red vs blue where the crop (flipped or not)
    has them, at the mask resolution; and the crop view is the weak view at the crop's resolution."""
    aug = ViewAugment(_plain(flip_p=flip), image_size=64, crop_view=True)
    v = aug(_two_colours(), torch.zeros(0, 200, 200, dtype=torch.bool), generator=torch.Generator().manual_seed(3))
    assert v.crop.shape == (3, 128, 128) and v.weak.shape == (3, 64, 64)
    halved = F.interpolate(v.crop[None], size=64, mode="area")[0]  # the same view, up to the resampling filter
    assert (halved - v.weak).abs().mean() < 0.01 and (halved - v.weak).abs().max() < 0.2
    masker = DinoMasker(PatchColour(), k=2, image_size=128)
    masks = masker.crop_masks((v.crop * 255).round().to(torch.uint8)[None], mask_size=32)[0]  # [2, 32, 32]
    assert masks.shape == (2, 32, 32) and torch.equal(masks.sum(0), torch.ones(32, 32, dtype=torch.long))
    centres = ((torch.arange(32) + 0.5) * 4).long()  # the crop pixel under each mask pixel
    red = v.crop[0][centres[:, None], centres[None, :]] > v.crop[2][centres[:, None], centres[None, :]]
    agree = max((masks[0] == red).float().mean(), (masks[1] == red).float().mean())
    assert agree >= 1 - 1 / 8, "all but at most the one column of 16 px patches that the boundary crosses"
    assert 0 < red.float().mean() < 1, "the test's crop must hold both colours"
    left_red = red[:, :4].all()
    assert bool(left_red) == (flip == 0.0), "a flipped crop has its red side on the right, and so do its masks"


def test_crop_masks_with_a_random_dino():
    """Shapes and a partition per crop with the tiny random DINO; crops not a multiple of the patch size
    are resized to one."""
    masker = DinoMasker.from_weights(None, arch="tiny", k=16, image_size=96)
    crops = torch.randint(0, 256, (3, 3, 100, 100), dtype=torch.uint8)
    masks = masker.crop_masks(crops, mask_size=48)
    assert masks.shape == (3, 16, 48, 48) and masks.dtype == torch.bool
    assert torch.equal(masks.sum(1), torch.ones(3, 48, 48, dtype=torch.long))
    assert not torch.equal(masks[0], masks[1])  # each crop its own masks
    with pytest.raises(ValueError, match="square images"):
        masker.crop_masks(crops[:, :, :, :90], 48)


def test_stage_turns_crops_into_packed_masks():
    """The Ray Data actor's body on a numpy batch (as Ray Data hands it): crop column in, masks out."""
    from pipelines.stages.train.online_masks import DinoCropStage
    from pipelines.stages.train.reader import collate, decode_row
    from pipelines.synth.sa1b import encode_jpeg

    cfg = pixelclip.load_config("tiny")
    aug = ViewAugment(cfg.data, cfg.backbone.image_size, crop_view=True)
    rng = np.random.default_rng(0)
    rows = [decode_row({"image_id": f"x{i}", "image": encode_jpeg(rng.integers(0, 255, (70, 90, 3), dtype=np.uint8)),
                        "height": 70, "width": 90, "masks": [b"not read"]}, aug, seed=0) for i in range(3)]
    assert all(r["num_masks"] == 0 and r["crop"].shape == (3, 64, 64) for r in rows)
    batch = {k: np.array([r[k] for r in rows], dtype=object) if k == "masks" else np.stack([r[k] for r in rows])
             for k in rows[0]}
    stage = DinoCropStage(None, "tiny", k=16, mask_size=cfg.data.mask_size, crop=cfg.data.crop, seed=0, opts=None)
    out = stage(batch)
    assert "crop" not in out and out["num_masks"].tolist() == [16, 16, 16]
    t = collate(out)
    assert t["masks"].shape == (3, 16, 64, 64) and torch.equal(t["masks"].sum(1), torch.ones(3, 64, 64).long())
    assert t["weak"].shape == (3, 3, 64, 64)


@pytest.mark.slow
def test_train_with_dino_masks_per_crop(store, ray_local, ready):
    """`train --masks dino`: the stream computes masks on each crop in a Ray Data actor and the two DDP
    workers train on them; the records' own masks are never read."""
    from pipelines.stages.train.driver import run_train
    from pipelines.stages.train.job import OnlineMasksConfig, TrainJobConfig
    from pipelines.stages.train.online_masks import OnlineMasks
    from pipelines.stages.train.reader import iter_batches, training_dataset

    model = pixelclip.load_config("tiny", ["optim.steps=6", "optim.batch_size=4"]).to_dict()
    masks = {"source": "dino", "arch": "tiny", "k": 8, "actors": 1, "allow_random_weights": True}
    cfg = pixelclip.config.config_from_dict(model)
    online = OnlineMasks(OnlineMasksConfig(**masks).validate(), workers=1, use_gpu=False, opts=store)
    batch = next(iter_batches(training_dataset(ready, cfg, store, seed=0, online=online), 4))
    assert batch["masks"].shape == (4, 8, 64, 64)
    assert torch.equal(batch["masks"].sum(1), torch.ones(4, 64, 64).long())  # a partition of every crop
    job = TrainJobConfig(data=ready, storage="s3://data/runs", name="tiny-dino", model=model, workers=2,
                         checkpoint_every=6, log_every=2, seed=0, masks=masks)
    out = run_train(job, store)
    assert out["error"] is None and out["metrics"]["step"] == 6
    assert out["metrics"]["masks"] > 0 and 0 <= out["metrics"]["data_wait_fraction"] <= 1


def test_bad_online_masks_config_names_the_field():
    from pipelines.stages.train.job import OnlineMasksConfig, TrainJobConfig

    with pytest.raises(ValueError, match=r"train\.masks\.weights is required"):
        OnlineMasksConfig(source="dino").validate()
    with pytest.raises(ValueError, match=r"train\.masks\.source must be one of stored, dino"):
        OnlineMasksConfig(source="sam").validate()
    with pytest.raises(ValueError, match=r"unknown field train\.masks\.kk"):
        TrainJobConfig(data="d", storage="s", name="n", masks={"kk": 3})
    with pytest.raises(ValueError, match=r"gpus_per_actor must be in \(0, 1\)"):
        OnlineMasksConfig(source="dino", allow_random_weights=True, gpus_per_actor=1.0).validate()
