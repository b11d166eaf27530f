"""Results of the evaluate stage: summary numbers, the Markdown tables, and where they are written."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

from pipelines import storage
from pixelclip.eval.miou import ConfusionMatrix


def summarize(job, datasets: dict, totals: dict, seconds: float) -> dict:
    """Results as plain data: per benchmark and mode, mIoU / pixel accuracy (%) and IoU per class."""
    from pipelines.models import parse_source

    out: dict[str, Any] = {"model": parse_source(job.model).label, "task": job.task, "protocol": job.protocol,
                           "templates": job.templates, "split": job.split, "modes": job.modes,
                           "seconds": round(seconds, 2), "benchmarks": {}}
    for (name, mode), t in sorted(totals.items()):
        cm = ConfusionMatrix(datasets[name].num_classes, datasets[name].ignore_index)
        cm.matrix = t["cm"]
        iou = cm.iou().tolist()
        entry = {"miou": _pct(cm.miou()), "pixel_accuracy": _pct(cm.pixel_accuracy()), "images": t["images"],
                 "per_class": {c: _pct(v) for c, v in zip(datasets[name].class_names, iou, strict=True)}}
        if job.task == "masks":
            entry["mask_accuracy"] = _pct(t["masks_right"] / t["masks"]) if t["masks"] else None
            entry["masks"] = t["masks"]
        out["benchmarks"].setdefault(name, {})[mode] = entry
    return out


def _pct(x: float) -> float | None:
    return None if x is None or math.isnan(x) else round(100.0 * float(x), 2)


def format_markdown(results: dict) -> str:
    """A table of mIoU (%) with one row per mode and one column per benchmark, then IoU per class."""
    names = list(results["benchmarks"])
    modes = results["modes"]
    lines = [f"# Zero-shot evaluation of `{results['model']}`", "",
             f"task {results['task']}, protocol {results['protocol']}, templates {results['templates']}, "
             f"split {results['split']}, {results['seconds']} s", "",
             "| mode | " + " | ".join(f"{n} ({results['benchmarks'][n][modes[0]]['images']} img)" for n in names)
             + " | mean |", "|---" * (len(names) + 2) + "|"]
    for mode in modes:
        vals = [results["benchmarks"][n][mode]["miou"] for n in names]
        shown = [f"{v:.1f}" if v is not None else "n/a" for v in vals]
        real = [v for v in vals if v is not None]
        mean = f"{sum(real) / len(real):.1f}" if real else "n/a"
        lines.append(f"| {mode} | " + " | ".join(shown) + f" | {mean} |")
    if results["task"] == "masks":
        lines += ["", "Mask accuracy (%): " + ", ".join(
            f"{n}/{m} {results['benchmarks'][n][m]['mask_accuracy']}" for n in names for m in modes)]
    for n in names:
        lines += ["", f"## {n}: IoU per class (%)", "", "| class | " + " | ".join(modes) + " |",
                  "|---" * (len(modes) + 1) + "|"]
        for c in results["benchmarks"][n][modes[0]]["per_class"]:
            vals = [results["benchmarks"][n][m]["per_class"][c] for m in modes]
            lines.append(f"| {c} | " + " | ".join("-" if v is None else f"{v:.1f}" for v in vals) + " |")
    return "\n".join(lines) + "\n"


def write_results(results: dict, job, opts, tracking_uri: str | None, run_id: str | None) -> None:
    """results.json and results.md to `job.output`; metrics and both files to the MLflow run `run_id`."""
    with tempfile.TemporaryDirectory() as d:
        files = {"results.json": json.dumps(results, indent=2), "results.md": format_markdown(results)}
        for name, text in files.items():
            (Path(d) / name).write_text(text)
            if job.output:
                storage.write_bytes(storage.join(job.output, name), text.encode(), opts)
        if run_id:
            import mlflow

            client = mlflow.MlflowClient(tracking_uri)
            for name, per_mode in results["benchmarks"].items():
                for mode, r in per_mode.items():
                    for metric in ("miou", "pixel_accuracy", "mask_accuracy"):
                        if r.get(metric) is not None:
                            client.log_metric(run_id, f"eval.{job.task}.{name}.{mode}.{metric}", r[metric])
            for name in files:
                client.log_artifact(run_id, str(Path(d) / name), artifact_path=f"evaluation/{job.task}-{job.protocol}")
