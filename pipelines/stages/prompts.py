"""What the learned class prompts of a PixelCLIP model do: `pixelclip prompts draw|map`.

    pixelclip prompts draw --model run/checkpoint.safetensors photo1.jpg s3://data/photo2.jpg -o out/prompts/
    pixelclip prompts map --model models:/pixelclip@champion --classes "cat, dog, sky" [--method tsne] -o map.png

`draw` labels each pixel with the nearest of the K learned class prompt features (the paper's Fig. 5c-d / 7)
and saves one overlay per image (`<stem>_prompts.png`, legend "prompt 0..K-1"). `map` projects the K prompt
features and the text features of a class list to 2-D (PCA, or t-SNE with scikit-learn) and writes a scatter
plot and its coordinates (`map.png`, `map.json`) (the paper's Fig. 5a-b). Both need a PixelCLIP model (a
checkpoint or a registered model): a plain CLIP (`openclip:...`) has no learned prompts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from pipelines.images import parse_classes, read_photo
from pipelines.models import TEMPLATES, ModelSource, parse_source
from pixelclip.prompt_map import draw_map, project_2d
from pixelclip.viz import overlay, prompt_segmentation


def load_task(source: str | ModelSource, device: str = "cpu"):
    """The `pixelclip.PixelCLIP` of a checkpoint (local or s3://) or a registered model (models:/...,
    runs:/...), in eval mode. ValueError for a plain CLIP (`openclip:...`) or a non-PixelCLIP model."""
    src = parse_source(source) if isinstance(source, str) else source
    if src.kind == "openclip":
        raise ValueError(f"{src.label} is a plain CLIP without learned class prompts: give a PixelCLIP model "
                         "(a .safetensors checkpoint, or models:/NAME@ALIAS from the registry)")
    if src.kind == "checkpoint":
        from pipelines.models import load_task_checkpoint

        return _with_classes(load_task_checkpoint(src.ref, device, None), src.label)
    import mlflow

    from pipelines.models import require_tracking

    require_tracking(src)
    model = mlflow.pyfunc.load_model(src.ref, model_config={"device": device})
    task = getattr(model.unwrap_python_model(), "task", None)
    if task is None:
        raise ValueError(f"{src.ref} is not a PixelCLIP pyfunc model (it has no learned class prompts)")
    return _with_classes(task.eval(), src.label)


def _with_classes(task, label: str):
    if task.prompts is None:
        raise ValueError(f"{label} was trained without semantic clustering (cluster.mode 'none'): it has no "
                         "class prompts to draw or map")
    return task


def draw_prompts(task, images: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                 **segmenter_kwargs) -> list[Path]:
    """For each image (path or s3:// URI), the overlay of what the K learned prompts segment, written to
    `out_dir/<stem>_prompts.png` (`<stem>_<i>_prompts.png` when stems repeat). Returns the paths."""
    if not images:
        raise ValueError("give at least one image")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = [f"prompt {k}" for k in range(task.prompts.num_classes)]
    stems = [Path(str(p).rstrip("/")).stem for p in images]
    written = []
    for i, (path, stem) in enumerate(zip(images, stems, strict=True)):
        photo = read_photo(path)
        labels = prompt_segmentation(task, [photo], **segmenter_kwargs)[0]  # [H, W] in [0, K)
        name = f"{stem}_{i}_prompts.png" if stems.count(stem) > 1 else f"{stem}_prompts.png"
        overlay(photo, labels, names).save(out / name)
        written.append(out / name)
    return written


def prompt_map(task, classes: str | Sequence[str], method: str = "pca", templates: str = "ensemble",
               seed: int = 0) -> dict:
    """2-D coordinates of the K learned prompt features and the C class text features (both normalised):
    {"method", "templates", "points": [{"label", "kind" ("prompt" | "class"), "index", "x", "y"}]}, the
    K prompts first."""
    names = parse_classes(classes)
    if templates not in TEMPLATES:
        raise ValueError(f"templates must be one of {', '.join(TEMPLATES)}, got {templates!r}")
    import torch

    with torch.no_grad():
        prompts = task.class_features()  # [K, D], normalised
        text = task.text.class_embeddings(names, TEMPLATES[templates]).to(prompts.device)  # [C, D]
        xy = project_2d(torch.cat([prompts, text]).float(), method=method, seed=seed)  # [K + C, 2]
    K = prompts.shape[0]
    labels = [f"prompt {k}" for k in range(K)] + names
    points = [{"label": label, "kind": "prompt" if j < K else "class", "index": j if j < K else j - K,
               "x": float(x), "y": float(y)} for j, (label, (x, y)) in enumerate(zip(labels, xy, strict=True))]
    return {"method": method, "templates": templates, "points": points}


def write_map(result: dict, out: str | os.PathLike, title: str | None = None) -> tuple[Path, Path]:
    """Draw `prompt_map`'s result to the picture `out` (PNG unless its suffix says otherwise) and write the
    result as JSON beside it (same name, `.json`). Returns (picture path, JSON path)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pts = result["points"]
    xy = [[p["x"], p["y"]] for p in pts]
    picture = draw_map(xy, [p["label"] for p in pts], [p["kind"] == "prompt" for p in pts], title=title)
    png = out if out.suffix else out.with_suffix(".png")
    picture.save(png)
    js = png.with_suffix(".json")
    js.write_text(json.dumps(result, indent=2))
    return png, js
