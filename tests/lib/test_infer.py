
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pixelclip.infer import ENSEMBLE_TEMPLATES, Segmenter, to_image_tensor
from pixelclip.viz import overlay, palette, prompt_segmentation

CLASSES = ["cat", "grass", "sky"]


@pytest.fixture
def seg(tiny_task):
    return Segmenter.from_pixelclip(tiny_task)


def test_ensemble_is_the_papers_eight_templates():
    assert len(ENSEMBLE_TEMPLATES) == 8 and ENSEMBLE_TEMPLATES[-1] == "a photo of a {} in the scene"


@pytest.mark.parametrize("protocol", ["whole", "slide"])
def test_segment_gives_label_maps_at_input_resolution(tiny_task, protocol):
    seg = Segmenter.from_pixelclip(tiny_task, protocol=protocol, short_side=80)
    images = [torch.rand(3, 50, 70), (torch.rand(3, 97, 61) * 255).to(torch.uint8)]
    out = seg.segment(images, CLASSES)
    assert [tuple(o.shape) for o in out] == [(50, 70), (97, 61)]
    assert all(o.dtype == torch.long and o.min() >= 0 and o.max() < 3 for o in out)


def test_whole_protocol_matches_cosine_of_upsampled_features(seg):
    """The argmax of upsampled dot products equals the reference: upsample features, cosine, argmax."""
    img = torch.rand(3, 40, 56)
    text = seg.text_features(CLASSES)
    feats = seg._features([img])  # [1, D, h, w]
    up = F.normalize(F.interpolate(feats, size=(40, 56), mode="bilinear", align_corners=False), dim=1)
    expected = torch.einsum("bdhw,cd->bchw", up, text)[0].argmax(0)
    got = seg.segment(img, CLASSES)[0]
    assert (got == expected).float().mean() > 0.999  # ties aside, identical


def test_chunked_upsampling_equals_full(seg):
    seg.chunk_rows = 7
    logits = torch.randn(4, 5, 6)
    full = F.interpolate(logits[None], size=(33, 29), mode="bilinear", align_corners=False)[0].argmax(0)
    assert torch.equal(seg._upsampled_argmax(logits, 33, 29), full)


def test_text_features_are_normalised_ensembles(seg):
    t = seg.text_features(CLASSES)
    assert t.shape[0] == 3 and torch.allclose(t.norm(dim=-1), torch.ones(3), atol=1e-5)
    single = Segmenter(seg.encoder, seg.text, seg.image_size, templates=["a {}"]).text_features(CLASSES)
    assert not torch.allclose(single, t)


@pytest.mark.parametrize(("names", "match"), [
    ([], "empty"), (["cat", "cat"], "duplicates"), (["cat", " "], "empty name"), ("cat, dog", "not one string"),
])
def test_bad_class_lists(seg, names, match):
    with pytest.raises(ValueError, match=match):
        seg.segment(torch.rand(3, 32, 32), names)


def test_image_formats():
    gray = np.full((20, 30), 128, np.uint8)
    assert to_image_tensor(gray).shape == (3, 20, 30)
    rgba = np.zeros((20, 30, 4), np.uint8)
    assert to_image_tensor(rgba).shape == (3, 20, 30)
    deep = np.full((10, 10, 3), 65535, np.uint16)
    assert torch.allclose(to_image_tensor(deep), torch.ones(3, 10, 10))
    pil = Image.fromarray(np.zeros((12, 9, 3), np.uint8))
    assert to_image_tensor(pil).shape == (3, 12, 9)
    with pytest.raises(ValueError, match="image must be"):
        to_image_tensor(torch.rand(2, 5, 5, 5))


def test_classify_masks(seg):
    img = torch.rand(3, 48, 64)
    masks = torch.zeros(3, 48, 64, dtype=torch.bool)
    masks[0, :20] = True
    masks[1, 20:, :30] = True
    labels, cos = seg.classify_masks(img, masks, CLASSES)
    assert labels.shape == (3,) and cos.shape == (3, 3)
    assert torch.isnan(cos[2]).all()  # an empty mask has no score
    assert torch.equal(labels[:2], cos[:2].argmax(1))
    with pytest.raises(ValueError, match="match the image"):
        seg.classify_masks(img, masks[:, :10], CLASSES)


def test_prompt_segmentation_and_overlay(tiny_task, tmp_path):
    img = torch.rand(3, 40, 50)
    lab = prompt_segmentation(tiny_task, [img])[0]
    assert lab.shape == (40, 50) and lab.max() < tiny_task.prompts.num_classes
    pic = overlay(img, lab, [f"prompt {i}" for i in range(tiny_task.prompts.num_classes)])
    assert pic.width == 50 and pic.height > 40
    pic.save(tmp_path / "o.png")
    assert len({tuple(c) for c in palette(64)}) == 64
