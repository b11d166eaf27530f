"""Stage `evaluate`: zero-shot mIoU on the benchmarks with Ray Data batch inference.

    pixelclip evaluate --model models:/pixelclip@champion --benchmark voc-20=s3://datasets/ \\
        --benchmark ade20k-150=/data/datasets --output s3://data/eval/champion
    pixelclip evaluate --model openclip:ViT-B-16:openai --image-size 320 --benchmark voc-20=/data \\
        --readout maskclip --readout sclip --readout clearclip --readout plain --output out/baselines

Every image of every benchmark is a row of a Ray Dataset; `Evaluator` actors (one GPU each where
the cluster has GPUs) hold the model once, segment their rows with each dense-feature mode and
return confusion matrices, which the driver sums. Results: mIoU and pixel accuracy overall and IoU
per class for every (benchmark, mode), written as `results.json` and `results.md` to `--output`
and logged to the MLflow run of the model evaluated (a registry model's run, or `--run-id`).

Tasks: "semseg" (dense zero-shot segmentation; protocol "whole", the paper's, or "slide"; the
paper's 8-template ensemble or a single template) and "masks" (zero-shot mask classification, the
paper's Table 2: each mask is mask-pooled and classified, the masks being the ground-truth class
regions or, with `--masks DIR`, `<id>.png` instance maps from a mask generator; mIoU of the painted
result over the pixels the masks cover, and the share of masks classified as the majority truth
under them). Results are written by `pipelines.stages.evaluate.report`.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from pipelines import storage
from pipelines.images import open_dataset
from pipelines.stages.evaluate.report import summarize, write_results
from pixelclip.eval.datasets import BENCHMARKS
from pixelclip.eval.miou import ConfusionMatrix
from pixelclip.typed import ConfigError, check


@dataclass
class EvalJobConfig:
    model: str = ""  # the model to evaluate (pipelines.models): models:/..., a .safetensors checkpoint,
    #   openclip:NAME[:TAG]; required
    benchmarks: dict[str, str] = field(default_factory=dict)  # benchmark name -> dataset root (a folder or
    #   s3:// prefix); required
    output: str | None = None  # folder or s3:// prefix for results.json and results.md
    modes: list[str] = field(default_factory=lambda: ["maskclip"])  # dense readouts to compare
    task: str = "semseg"  # or "masks": zero-shot classification of the ground-truth class regions
    protocol: str = "whole"  # or "slide"
    templates: str = "ensemble"  # or "single"
    image_size: int | None = None  # square input; default: the model's
    split: str = "val"
    limit: int | None = None  # the first N images of each benchmark (smoke runs)
    batch_size: int = 4  # images per actor call
    concurrency: int | None = None  # actors; default: one per GPU, else one
    use_gpu: bool | None = None  # None: GPUs when the cluster has them
    tracking_uri: str | None = None  # default: MLFLOW_TRACKING_URI
    run_id: str | None = None  # MLflow run to log to; default: the run of a registry model
    class_names: dict[str, list[str]] = field(default_factory=dict)  # benchmark -> its own class names (your
    #   dataset in a benchmark's layout)
    masks: str | None = None  # task "masks": folder / s3:// prefix of <id>.png instance maps (default: the truth)

    def validate(self, p: str = "evaluate") -> EvalJobConfig:
        from pipelines.models import TEMPLATES, parse_source
        from pixelclip.model.backbone import DENSE_MODES

        check(bool(self.model), f"{p}.model", "is required (models:/NAME@ALIAS, a checkpoint, openclip:...)",
              self.model)
        try:
            parse_source(self.model)
        except ValueError as e:
            raise ConfigError(f"{p}.model: {e}") from None
        if not self.benchmarks:
            raise ConfigError(f"{p}.benchmarks is empty: give NAME=ROOT, e.g. voc-20=/data/datasets")
        for name in [*self.benchmarks, *self.class_names]:
            if name not in BENCHMARKS:
                raise ConfigError(f"{p}.benchmarks: unknown benchmark {name!r} (known: {', '.join(BENCHMARKS)})")
        bad = [m for m in self.modes if m not in DENSE_MODES]
        check(bool(self.modes) and not bad, f"{p}.modes", f"must be a non-empty list of {', '.join(DENSE_MODES)}",
              self.modes)
        checks = [("task", self.task, ("semseg", "masks")), ("protocol", self.protocol, ("whole", "slide")),
                  ("templates", self.templates, tuple(TEMPLATES))]
        for name, value, allowed in checks:
            check(value in allowed, f"{p}.{name}", f"must be one of {', '.join(allowed)}", value)
        if self.masks and self.task != "masks":
            raise ConfigError(f"{p}.masks is for task 'masks' (mask classification); set --task masks")
        for name in ("limit", "batch_size", "concurrency", "image_size"):
            v = getattr(self, name)
            check(v is None or v >= 1, f"{p}.{name}", "must be >= 1", v)
        return self


def parse_benchmarks(items: list[str]) -> dict[str, str]:
    """`["voc-20=/data", "ade20k-150=s3://datasets/"]` -> {name: root}."""
    out = {}
    for item in items:
        name, sep, root = item.partition("=")
        if not sep or not name.strip() or not root.strip():
            raise ValueError(f"--benchmark {item!r} must look like NAME=ROOT (e.g. voc-20=/data/datasets)")
        out[name.strip()] = root.strip()
    return out


class SegmenterPredictor:
    """Label maps of a sample for every mode, from one loaded model (weights shared by the modes)."""

    def __init__(self, job: EvalJobConfig, device: str, opts):
        from pipelines.models import TEMPLATES, load_segmenter
        from pixelclip.infer import Segmenter

        base = load_segmenter(job.model, device=device, protocol=job.protocol, templates=job.templates,
                              image_size=job.image_size, opts=opts)
        self.segmenters = {m: Segmenter(base.encoder.with_mode(m), base.text, base.image_size,
                                        templates=TEMPLATES[job.templates], protocol=job.protocol)
                           for m in job.modes}

    def segment(self, sample, class_names: list[str]) -> dict[str, torch.Tensor]:
        """{mode: label map [H, W]} of `sample.image`."""
        return {m: seg.segment(sample.image, class_names)[0].cpu() for m, seg in self.segmenters.items()}

    def classify_masks(self, sample, masks: torch.Tensor, class_names: list[str]) -> dict[str, torch.Tensor]:
        """{mode: class index [N]} of the masks [N, H, W] of `sample.image`."""
        return {m: seg.classify_masks(sample.image, masks, class_names)[0].cpu() for m, seg in self.segmenters.items()}


def class_regions(label: np.ndarray, ignore_index: int) -> tuple[np.ndarray, torch.Tensor]:
    """The ground-truth classes present and one mask per class: (classes [N], masks [N, H, W] bool)."""
    classes = np.array([c for c in np.unique(label) if c != ignore_index], dtype=np.int64)
    masks = torch.from_numpy(label[None] == classes[:, None, None])
    return classes, masks


class Evaluator:
    """Ray Data actor: rows (benchmark, root, index) -> confusion matrices per (benchmark, mode)."""

    def __init__(self, job: dict, opts, predictor_factory=None):
        self.job = EvalJobConfig(**job)
        self.opts = opts
        device = "cuda" if torch.cuda.is_available() else "cpu"
        factory = predictor_factory or SegmenterPredictor
        self.predictor = factory(self.job, device, opts)
        self.datasets: dict[str, Any] = {}

    def _dataset(self, name: str, root: str):
        if name not in self.datasets:
            self.datasets[name] = open_dataset(name, root, self.job.split, self.opts, self.job.class_names.get(name))
        return self.datasets[name]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        acc: dict[tuple[str, str], dict] = {}
        for name, root, index in zip(batch["benchmark"], batch["root"], batch["index"], strict=True):
            ds = self._dataset(str(name), str(root))
            sample = ds[int(index)]
            preds, target, scored = self._predict(sample, ds)
            for mode, pred in preds.items():
                entry = acc.setdefault((str(name), mode), {"cm": ConfusionMatrix(ds.num_classes, ds.ignore_index),
                                                           "images": 0, "masks": 0, "masks_right": 0})
                entry["cm"].update(pred, target)
                entry["images"] += 1
                n, right = scored.get(mode, (0, 0))
                entry["masks"] += n
                entry["masks_right"] += right
        keys = sorted(acc)
        return {"benchmark": [k[0] for k in keys], "mode": [k[1] for k in keys],
                "confusion": [acc[k]["cm"].matrix.numpy().tobytes() for k in keys],
                "images": [acc[k]["images"] for k in keys], "masks": [acc[k]["masks"] for k in keys],
                "masks_right": [acc[k]["masks_right"] for k in keys]}

    def _predict(self, sample, ds) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, tuple[int, int]]]:
        """({mode: label map [H, W]}, the target [H, W], {mode: (masks scored, masks right)})."""
        target = torch.from_numpy(sample.label)
        if self.job.task == "semseg":
            return self.predictor.segment(sample, ds.class_names), target, {}
        if self.job.masks:  # masks from another model: pixels they leave uncovered are not scored
            masks, truth = file_masks(self.job.masks, sample, ds.ignore_index, self.opts)
            target = torch.where(masks.any(0), target, torch.full_like(target, ds.ignore_index))
        else:
            classes, masks = class_regions(sample.label, ds.ignore_index)
            truth = torch.from_numpy(classes)
        if not len(masks):  # nothing to classify: every pixel is ignored
            zeros = torch.zeros(sample.label.shape, dtype=torch.long)
            return {m: zeros for m in self.job.modes}, torch.full_like(target, ds.ignore_index), {}
        preds, scored = {}, {}
        for mode, labels in self.predictor.classify_masks(sample, masks, ds.class_names).items():
            painted = torch.zeros(sample.label.shape, dtype=torch.long)  # uncovered pixels are ignored
            for mask, lab in zip(masks, labels, strict=True):
                painted[mask] = int(lab)
            preds[mode] = painted
            valid = truth >= 0
            scored[mode] = (int(valid.sum()), int((labels.long()[valid] == truth[valid]).sum()))
        return preds, target, scored


def file_masks(folder: str, sample, ignore_index: int, opts=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks for `sample` from `folder/<id>.png`, an instance-id map (0: no mask, k > 0: mask k;
    8 or 16 bit) at the image's size, as a mask generator would write them. Returns (masks
    [N, H, W] bool, the ground-truth class of each [N]: the majority of its labelled pixels, -1
    where it covers none)."""
    import io

    from PIL import Image

    uri = storage.join(folder, f"{sample.id}.png")
    try:
        ids = np.asarray(Image.open(io.BytesIO(storage.read_bytes(uri, opts))))
    except FileNotFoundError as e:
        raise FileNotFoundError(f"no masks for image {sample.id}: expected {uri}") from e
    if ids.ndim != 2 or ids.shape != sample.label.shape:
        raise ValueError(f"masks {uri} must be a single-channel id map of {sample.label.shape[1]}x"
                         f"{sample.label.shape[0]} (WxH) like its image; got shape {ids.shape}")
    values = [v for v in np.unique(ids) if v != 0]
    masks = torch.from_numpy(ids[None] == np.array(values, dtype=ids.dtype).reshape(-1, 1, 1))
    truth = []
    for m in masks.numpy():
        labelled = sample.label[m & (sample.label != ignore_index)]
        truth.append(int(np.bincount(labelled).argmax()) if labelled.size else -1)
    return masks, torch.tensor(truth, dtype=torch.long)


def _rows(job: EvalJobConfig, opts) -> tuple[list[dict], dict[str, Any]]:
    """One row per image to evaluate, and the opened datasets (checked on the driver first: a
    wrong layout fails here, naming the paths it expected)."""
    rows, datasets = [], {}
    for name, root in job.benchmarks.items():
        ds = datasets[name] = open_dataset(name, root, job.split, opts, job.class_names.get(name))
        n = len(ds) if job.limit is None else min(job.limit, len(ds))
        rows += [{"benchmark": name, "root": root, "index": i} for i in range(n)]
    return rows, datasets


def _concurrency(job: EvalJobConfig) -> tuple[int, bool]:
    import ray

    gpus = int(ray.cluster_resources().get("GPU", 0))
    use_gpu = bool(gpus) if job.use_gpu is None else job.use_gpu
    return job.concurrency or (max(gpus, 1) if use_gpu else 1), use_gpu


def run_evaluate(job: EvalJobConfig, opts: storage.StorageOptions | None = None, predictor_factory=None) -> dict:
    """Evaluate, write results.json / results.md to `job.output`, log them to MLflow; returns the results.

    `predictor_factory(job, device, opts)`: what segments (default: the model's `SegmenterPredictor`)."""
    import ray

    job.validate()
    opts = opts or storage.StorageOptions.from_env()
    if job.output:
        storage.check_writable(job.output, opts)
    from pipelines.weights import driver_source

    job.model = driver_source(job.model, opts)  # checked once, and absolute for every actor
    tracking_uri = job.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    run_id = _run_id(job, tracking_uri)
    rows, datasets = _rows(job, opts)
    concurrency, use_gpu = _concurrency(job)
    t0 = time.perf_counter()
    out = ray.data.from_items(rows).map_batches(
        Evaluator, fn_constructor_kwargs={"job": asdict(job), "opts": storage.for_ray(opts),
                                          "predictor_factory": predictor_factory},
        batch_size=job.batch_size, concurrency=concurrency, num_gpus=1 if use_gpu else 0)
    totals: dict[tuple[str, str], dict] = {}
    for r in out.iter_rows():
        key = (r["benchmark"], r["mode"])
        C = datasets[r["benchmark"]].num_classes
        cm = torch.from_numpy(np.frombuffer(r["confusion"], dtype=np.int64).reshape(C, C).copy())
        t = totals.setdefault(key, {"cm": torch.zeros(C, C, dtype=torch.int64), "images": 0, "masks": 0,
                                    "masks_right": 0})
        t["cm"] += cm
        for k in ("images", "masks", "masks_right"):
            t[k] += int(r[k])
    results = summarize(job, datasets, totals, time.perf_counter() - t0)
    results["mlflow_run_id"] = run_id
    write_results(results, job, opts, tracking_uri, run_id)
    return results


def _run_id(job: EvalJobConfig, tracking_uri: str | None) -> str | None:
    """The MLflow run to log to: `--run-id`, else the run behind a registry model; checks the server."""
    from pipelines.models import parse_source

    if job.run_id and not tracking_uri:
        raise ValueError("evaluate.run_id needs an MLflow server: set tracking_uri or MLFLOW_TRACKING_URI")
    src = parse_source(job.model)
    if src.kind == "registry" and not tracking_uri:
        raise ValueError(f"{job.model} is a registry model: set tracking_uri or MLFLOW_TRACKING_URI")
    if not tracking_uri:
        return None
    from pipelines.mlflow_client import check_tracking

    check_tracking(tracking_uri)
    return job.run_id or src.mlflow_run_id(tracking_uri)
