"""Readers for the five zero-shot segmentation benchmarks, in the folder layouts that the
detectron2 (CAT-Seg) and mmsegmentation preparation scripts produce.

    ds = open_benchmark("ade20k-150", "/data/datasets")   # finds which layout is there
    ds.layout, len(ds), ds.class_names[:3]                 # 'detectron2', 2000, ['wall', 'building', 'sky']
    s = ds[0]             # Sample(id, image [H, W, 3] uint8 RGB, label [H, W] int64 in [0, C) or 255)

Layouts, tried in this order (paths below `root`; `root` may also be the layout's top folder
itself, e.g. `.../coco`, `.../VOCdevkit/VOC2012` or `.../VOC2012` below a `VOCdevkit`):

  coco-stuff-171     detectron2    coco/{images, stuffthingmaps_detectron2}/val2017
                     mmseg         coco_stuff164k/{images, annotations}/val2017, labels *_labelTrainIds.png
                     mmseg-raw     coco_stuff164k/{images, annotations}/val2017, labels <id>.png (raw)
                     cocostuff-raw {images, stuffthingmaps_trainval2017}/val2017 (raw)
  ade20k-150         detectron2    ADEChallengeData2016/{images, annotations_detectron2}/validation
                     raw           ADEChallengeData2016/{images, annotations}/validation
  pascal-context-59  detectron2    pascal_ctx_d2/{images, annotations_ctx59}/validation
                     mmseg         VOCdevkit/VOC2010/{JPEGImages, SegmentationClassContext},
                                   ids from ImageSets/SegmentationContext/val.txt
  cityscapes-19      trainIds      cityscapes/leftImg8bit/val/<city>/*_leftImg8bit.png
                                   + cityscapes/gtFine/val/<city>/*_gtFine_labelTrainIds.png
                     labelIds      the same with *_gtFine_labelIds.png (official ids)
  voc-20             detectron2    VOCdevkit/VOC2012/{JPEGImages, annotations_detectron2/val}
                     raw           VOCdevkit/VOC2012/{JPEGImages, SegmentationClass},
                                   ids from ImageSets/Segmentation/val.txt
Images are <id>.jpg and labels <id>.png where not said otherwise.

Label values (stored -> class index; 255 is ignore everywhere):
  detectron2, mmseg, trainIds   already 0..C-1 / 255; any other value is an error naming the file
  ADE raw, PC mmseg, VOC raw    0 (background / unlabelled) -> 255, 1..C -> 0..C-1, 255 -> 255
  COCO raw (both)               COCO category id - 1 (0..181), 255 unlabelled. The 11 values never used,
                                11 25 28 29 44 65 67 68 70 82 90 (COCO ids 12 26 29 30 45 66 68 69 71 83 91),
                                and everything above 181 -> 255; the other 171 values, in increasing order,
                                -> 0..170, the order of COCO_STUFF_171 (mmseg's coco_stuff164k converter)
  Cityscapes labelIds           the official id -> train id table (7 -> 0 road, ..., 33 -> 18 bicycle), others -> 255

An id listed (by the split file, or present as an image or a label in a split folder) without
its image or its label is an error naming the missing ids: skipping them would silently change
the mIoU. Ids are sorted. `split` is "val" (the benchmark) or "train".
"""

from __future__ import annotations

import dataclasses
import glob
import operator
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Protocol

import numpy as np

from . import classnames
from .decode import IGNORE_INDEX, decode_image, decode_label, identity_lut, reduce_zero_lut, table_lut

COCO_UNUSED_VALUES = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)  # 0-based PNG values (COCO id - 1)
CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                        24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}  # fmt: skip


def coco_raw_lut(num_classes: int = 171) -> np.ndarray:
    """Raw COCO-Stuff value (COCO id - 1, 0..181) -> 0..170; unused values and the rest -> 255. [256]."""
    used = [v for v in range(182) if v not in COCO_UNUSED_VALUES]
    if len(used) != num_classes:
        raise ValueError(f"COCO-Stuff raw mapping has {len(used)} classes, expected {num_classes}")
    return table_lut(used)


def cityscapes_label_ids_lut(num_classes: int = 19) -> np.ndarray:
    """Official Cityscapes label id -> train id 0..18; every other value -> 255. [256]."""
    if num_classes != len(CITYSCAPES_TRAIN_IDS):
        raise ValueError(f"the Cityscapes train ids are 19 classes, not {num_classes}")
    lut = table_lut([])
    for label_id, train_id in CITYSCAPES_TRAIN_IDS.items():
        lut[label_id] = train_id
    return lut


class FileSystem(Protocol):
    """The part of an fsspec filesystem the readers use (s3fs.S3FileSystem fits)."""

    def open(self, path: str, mode: str = "rb") -> IO[bytes]: ...
    def glob(self, pattern: str) -> list[str]: ...
    def exists(self, path: str) -> bool: ...


class LocalFS:
    """The local filesystem, with the three methods of `FileSystem`."""

    def open(self, path: str, mode: str = "rb") -> IO[bytes]:
        return open(path, mode)

    def glob(self, pattern: str) -> list[str]:
        return sorted(glob.glob(pattern))

    def exists(self, path: str) -> bool:
        return os.path.exists(path)


@dataclass(frozen=True)
class Layout:
    """Where one preparation script puts a benchmark split, and how its label values map.

    Folders and the split file are relative to `root/prefix`; "{split}" in them is replaced by
    `splits[split]`. `depth` is the number of path components in an id (2 for Cityscapes:
    "<city>/<name>"). With `ids_from_labels` the image folder holds every split, and the label
    folder defines this one.
    """

    name: str
    prefix: str
    image_dir: str
    label_dir: str
    image_suffix: str
    label_suffix: str
    lut: Callable[[int], np.ndarray]
    splits: Mapping[str, str]
    split_file: str | None = None
    ids_from_labels: bool = False
    depth: int = 1


@dataclass(frozen=True)
class BenchmarkSpec:
    """A benchmark: its class names (index = class) and the layouts it may be stored in."""

    name: str
    class_names: tuple[str, ...]
    layouts: tuple[Layout, ...]


@dataclass(eq=False)
class Sample:
    """One evaluation image: `image` [H, W, 3] uint8 RGB, `label` [H, W] int64 in [0, C) or 255."""

    id: str
    image: np.ndarray
    label: np.ndarray


_VAL_TRAIN = {"val": "val", "train": "train"}
_COCO = {"val": "val2017", "train": "train2017"}
_ADE = {"val": "validation", "train": "training"}

BENCHMARKS: dict[str, BenchmarkSpec] = {
    "coco-stuff-171": BenchmarkSpec("coco-stuff-171", tuple(classnames.COCO_STUFF_171), (
        Layout("detectron2", "coco", "images/{split}", "stuffthingmaps_detectron2/{split}", ".jpg", ".png",
               identity_lut, _COCO),
        Layout("mmseg", "coco_stuff164k", "images/{split}", "annotations/{split}", ".jpg", "_labelTrainIds.png",
               identity_lut, _COCO),
        Layout("mmseg-raw", "coco_stuff164k", "images/{split}", "annotations/{split}", ".jpg", ".png",
               coco_raw_lut, _COCO),
        Layout("cocostuff-raw", "", "images/{split}", "stuffthingmaps_trainval2017/{split}", ".jpg", ".png",
               coco_raw_lut, _COCO),
    )),
    "ade20k-150": BenchmarkSpec("ade20k-150", tuple(classnames.ADE20K_150), (
        Layout("detectron2", "ADEChallengeData2016", "images/{split}", "annotations_detectron2/{split}",
               ".jpg", ".png", identity_lut, _ADE),
        Layout("raw", "ADEChallengeData2016", "images/{split}", "annotations/{split}", ".jpg", ".png",
               reduce_zero_lut, _ADE),
    )),
    "pascal-context-59": BenchmarkSpec("pascal-context-59", tuple(classnames.PASCAL_CONTEXT_59), (
        Layout("detectron2", "pascal_ctx_d2", "images/{split}", "annotations_ctx59/{split}", ".jpg", ".png",
               identity_lut, _ADE),
        Layout("mmseg", "VOCdevkit/VOC2010", "JPEGImages", "SegmentationClassContext", ".jpg", ".png",
               reduce_zero_lut, _VAL_TRAIN, split_file="ImageSets/SegmentationContext/{split}.txt"),
    )),
    "cityscapes-19": BenchmarkSpec("cityscapes-19", tuple(classnames.CITYSCAPES_19), (
        Layout("trainIds", "cityscapes", "leftImg8bit/{split}", "gtFine/{split}", "_leftImg8bit.png",
               "_gtFine_labelTrainIds.png", identity_lut, _VAL_TRAIN, depth=2),
        Layout("labelIds", "cityscapes", "leftImg8bit/{split}", "gtFine/{split}", "_leftImg8bit.png",
               "_gtFine_labelIds.png", cityscapes_label_ids_lut, _VAL_TRAIN, depth=2),
    )),
    "voc-20": BenchmarkSpec("voc-20", tuple(classnames.VOC_20), (
        Layout("detectron2", "VOCdevkit/VOC2012", "JPEGImages", "annotations_detectron2/{split}", ".jpg", ".png",
               identity_lut, _VAL_TRAIN, ids_from_labels=True),
        Layout("raw", "VOCdevkit/VOC2012", "JPEGImages", "SegmentationClass", ".jpg", ".png",
               reduce_zero_lut, _VAL_TRAIN, split_file="ImageSets/Segmentation/{split}.txt"),
    )),
}  # fmt: skip


class BenchmarkDataset:
    """One split of a benchmark: sorted ids with their (image path, label path), decoded on indexing.

    `ds[i]` reads and decodes one Sample (nothing is cached); it raises ValueError naming the
    file for a label whose size differs from its image or that holds an unknown class value.
    """

    ignore_index: int = IGNORE_INDEX

    def __init__(
        self, spec: BenchmarkSpec, layout: Layout, entries: list[tuple[str, str, str]], fs: FileSystem | None = None
    ):
        self.name = spec.name
        self.class_names = list(spec.class_names)
        self.layout = layout.name
        self._entries = sorted(entries)  # (id, image path, label path)
        self._fs = fs if fs is not None else LocalFS()
        self._lut = layout.lut(len(self.class_names))  # [256] stored value -> class, 255, or -1 (invalid)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def ids(self) -> list[str]:
        return [e[0] for e in self._entries]

    @property
    def items(self) -> list[tuple[str, str]]:
        """(image path, label path) per sample, in id order."""
        return [(e[1], e[2]) for e in self._entries]

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"BenchmarkDataset({self.name!r}, layout={self.layout!r}, samples={len(self)})"

    def _read(self, path: str) -> bytes:
        with self._fs.open(path, "rb") as f:
            return f.read()

    def __getitem__(self, index: int) -> Sample:
        sample_id, image_path, label_path = self._entries[operator.index(index)]
        image = decode_image(self._read(image_path), image_path)  # [H, W, 3]
        label = decode_label(self._read(label_path), label_path, self._lut)  # [H, W]
        if label.shape != image.shape[:2]:
            raise ValueError(
                f"label {label_path} is {label.shape[1]}x{label.shape[0]} (WxH) but its image "
                f"{image_path} is {image.shape[1]}x{image.shape[0]}"
            )
        return Sample(sample_id, image, label)


def _join(base: str, *parts: str) -> str:
    out = base
    for p in parts:
        p = p.strip("/")
        if p:
            out = p if not out else out + p if out.endswith("/") else f"{out}/{p}"
    return out


def _bases(root: str, prefix: str) -> list[str]:
    """root/a/b for prefix "a/b", then root/b and root (root may already be one of its folders)."""
    parts = [p for p in prefix.split("/") if p]
    bases = [_join(root, *parts[i:]) for i in range(len(parts) + 1)]
    return list(dict.fromkeys(bases))


def _resolve(layout: Layout, base: str, split: str) -> tuple[str, str, str | None]:
    """(image folder, label folder, split file or None) of `layout` below `base`."""
    s = layout.splits[split]
    split_file = _join(base, layout.split_file.format(split=s)) if layout.split_file else None
    return _join(base, layout.image_dir.format(split=s)), _join(base, layout.label_dir.format(split=s)), split_file


def _pattern(folder: str, suffix: str, depth: int) -> str:
    return _join(folder, *(["*"] * (depth - 1)), "*" + suffix)


def _list_ids(fs: FileSystem, folder: str, suffix: str, depth: int) -> set[str]:
    """Ids of the files `folder/[*/]*suffix`: their last `depth` path components, without `suffix`."""
    ids = set()
    for path in fs.glob(_pattern(folder, suffix, depth)):
        rel = "/".join(str(path).replace(os.sep, "/").rstrip("/").split("/")[-depth:])
        ids.add(rel[: -len(suffix)])
    return ids


def _describe(layout: Layout, base: str, split: str) -> str:
    image_dir, label_dir, split_file = _resolve(layout, base, split)
    out = (
        f"{_pattern(image_dir, layout.image_suffix, layout.depth)} + "
        f"{_pattern(label_dir, layout.label_suffix, layout.depth)}"
    )
    return out + (f" + {split_file}" if split_file else "")


def _detect(spec: BenchmarkSpec, root: str, split: str, fs: FileSystem) -> tuple[Layout, str, set[str]]:
    """The first layout whose folders (and split file) exist with at least one label file in them."""
    for layout in spec.layouts:
        for base in _bases(root, layout.prefix):
            image_dir, label_dir, split_file = _resolve(layout, base, split)
            needed = [image_dir, label_dir] + ([split_file] if split_file else [])
            if all(fs.exists(p) for p in needed):
                label_ids = _list_ids(fs, label_dir, layout.label_suffix, layout.depth)
                if label_ids:
                    return layout, base, label_ids
    tried = "\n".join(f"  {lay.name}: {_describe(lay, _join(root, lay.prefix), split)}" for lay in spec.layouts)
    raise FileNotFoundError(
        f"no {spec.name} layout found under {root} for split {split!r}; expected one of:\n{tried}\n"
        "(root may also be a layout's top folder itself, e.g. the 'coco' or 'VOCdevkit/VOC2012' folder)"
    )


def _read_split_file(fs: FileSystem, path: str) -> set[str]:
    with fs.open(path, "rb") as f:
        return set(f.read().decode("utf-8").split())


def _some(ids: list[str], n: int = 10) -> str:
    return ", ".join(ids[:n]) + (", ..." if len(ids) > n else "")


def _entries(
    layout: Layout, base: str, split: str, label_ids: set[str], fs: FileSystem, name: str
) -> list[tuple[str, str, str]]:
    """(id, image path, label path) of every sample in the split; an error names missing files."""
    image_dir, label_dir, split_file = _resolve(layout, base, split)
    image_ids = _list_ids(fs, image_dir, layout.image_suffix, layout.depth)
    if split_file:
        ids = _read_split_file(fs, split_file)
    elif layout.ids_from_labels:
        ids = label_ids
    else:
        ids = image_ids | label_ids
    if not ids:
        raise FileNotFoundError(f"{name} ({layout.name}): split file {split_file} lists no ids")
    no_image, no_label = sorted(ids - image_ids), sorted(ids - label_ids)
    if no_image or no_label:
        parts = []
        if no_image:
            parts.append(f"{len(no_image)} without an image in {image_dir}: {_some(no_image)}")
        if no_label:
            parts.append(f"{len(no_label)} without a label in {label_dir}: {_some(no_label)}")
        raise FileNotFoundError(f"{name} ({layout.name} layout, split {split!r}) has ids " + "; ".join(parts))
    return [
        (i, _join(image_dir, i + layout.image_suffix), _join(label_dir, i + layout.label_suffix)) for i in sorted(ids)
    ]


def open_benchmark(
    name: str,
    root: str | os.PathLike[str],
    split: str = "val",
    fs: FileSystem | None = None,
    class_names: Sequence[str] | None = None,
) -> BenchmarkDataset:
    """Find `name`'s layout under `root` and list the split's samples (decoded lazily by indexing).

    `fs` is an fsspec-style filesystem (e.g. s3fs, with root "s3://bucket/datasets"); None reads
    the local filesystem. `class_names` replaces the benchmark's classes for a dataset of your own
    stored in its layout (label values then index these names; not for the fixed COCO-raw and
    Cityscapes-labelIds mappings). Raises ValueError for an unknown name or split or bad class
    names, FileNotFoundError when no layout matches (listing the paths expected for each) or when
    ids lack an image or a label.
    """
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; valid names: {', '.join(BENCHMARKS)}")
    spec = BENCHMARKS[name]
    if class_names is not None:
        names = tuple(str(n).strip() for n in class_names)
        if not names or not all(names) or len(set(names)) != len(names) or len(names) > 255:
            raise ValueError(f"class_names for {name} must be 1 to 255 distinct non-empty names, got {list(names)}")
        spec = dataclasses.replace(spec, class_names=names)
    splits = sorted({s for layout in spec.layouts for s in layout.splits})
    if split not in splits:
        raise ValueError(f"unknown split {split!r} for {name}; valid splits: {', '.join(splits)}")
    fs = fs if fs is not None else LocalFS()
    root = os.fspath(root)
    layout, base, label_ids = _detect(spec, root, split, fs)
    return BenchmarkDataset(spec, layout, _entries(layout, base, split, label_ids, fs, name), fs)
