"""What a CLIP pretrained on SynthScenes has learned, measured zero-shot on held-out scenes.

    probe = make_probe(seed=0, size=128, n_eval=64, n_single=144)
    report = evaluate_clip(model, tokenizer, probe)     # a plain dict of percentages
    report["dense"]["maskclip"]  # {"miou": ..., "stuff": ..., "things": ..., "pixel_acc": ...}

Two probes:
- classification: single-object scenes (one thing on one stuff region, split "single"); the image
  embedding against the text embeddings of the 18 thing names and, separately, the 6 stuff names;
  top-1 accuracy of each.
- dense: the labelled evaluation scenes (split "eval", as `pipelines.synth.scenes` writes them)
  segmented by `Segmenter.from_open_clip` over all 24 class names, for each dense readout mode;
  mIoU over all classes, and the per-class IoU averaged over stuff classes and over thing classes.
Numbers are percentages. The model is copied before anything is measured, so a model in training is
left as it was (the text encoder wrapper freezes the text tower it is given).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..eval.miou import ConfusionMatrix
from ..infer import ENSEMBLE_TEMPLATES, Segmenter
from ..model.backbone import preprocess_stats
from ..model.prompts import TextEncoder
from .scenes import CLASS_NAMES, NUM_STUFF, STUFF_NAMES, THING_NAMES, SceneConfig, scene_at

STUFF_IDS = tuple(range(NUM_STUFF))
THING_IDS = tuple(range(NUM_STUFF, len(CLASS_NAMES)))


@dataclass(eq=False)
class ProbeSet:
    """Held-out scenes: `eval_images` [N, S, S, 3] uint8 with `eval_labels` [N, S, S] int64 (indices
    into CLASS_NAMES); `single_images` [M, S, S, 3] uint8, each one thing `single_thing` [M] (index
    into THING_NAMES) on one stuff `single_stuff` [M] (index into STUFF_NAMES)."""

    eval_images: np.ndarray
    eval_labels: np.ndarray
    single_images: np.ndarray
    single_thing: np.ndarray
    single_stuff: np.ndarray


def make_probe(seed: int = 0, size: int = 128, n_eval: int = 64, n_single: int = 144) -> ProbeSet:
    """Draw the probe scenes: `scene_at(seed, i, "eval")` for i < n_eval, and n_single scenes of
    split "single" with exactly one thing and one stuff region."""
    ev = [scene_at(seed, i, "eval", SceneConfig(size=size)) for i in range(n_eval)]
    one = SceneConfig(size=size, things=(1.0,), stuff=(1.0,))
    single = [scene_at(seed, i, "single", one) for i in range(n_single)]
    return ProbeSet(
        eval_images=np.stack([s.image for s in ev]) if ev else np.zeros((0, size, size, 3), np.uint8),
        eval_labels=np.stack([s.label for s in ev]) if ev else np.zeros((0, size, size), np.int64),
        single_images=np.stack([s.image for s in single]) if single else np.zeros((0, size, size, 3), np.uint8),
        single_thing=np.asarray([s.instance_labels[-1] - NUM_STUFF for s in single], dtype=np.int64),
        single_stuff=np.asarray([s.instance_labels[0] for s in single], dtype=np.int64),
    )


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Top-1 accuracy in percent of logits [N, C] against target [N] (NaN for N = 0)."""
    if logits.ndim != 2 or target.shape != logits.shape[:1]:
        raise ValueError(f"expected logits [N, C] and target [N], got {tuple(logits.shape)} and {tuple(target.shape)}")
    if target.numel() == 0:
        return float("nan")
    return 100.0 * float((logits.argmax(1) == target.to(logits.device)).float().mean())


def group_iou(cm: ConfusionMatrix, groups: dict[str, Sequence[int]]) -> dict[str, float]:
    """mIoU in percent: "miou" over all classes present, and for each group the per-class IoU
    averaged over the group's classes present (absent from target and prediction: left out)."""
    iou = cm.iou()  # [C] float64, NaN where absent
    out = {"miou": 100.0 * cm.miou()}
    for name, ids in groups.items():
        vals = iou[list(ids)]
        out[name] = 100.0 * float(torch.nanmean(vals)) if bool((~vals.isnan()).any()) else float("nan")
    return out


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


@torch.no_grad()
def image_embeddings(model, images: torch.Tensor, batch: int = 32) -> torch.Tensor:
    """L2-normalised global image embeddings [N, D] of [0, 1] images [N, 3, S, S]."""
    mean, std = preprocess_stats(model)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    out = [model.encode_image((x - m) / s).float() for x in images.split(batch)]
    return F.normalize(torch.cat(out), dim=-1) if out else torch.zeros(0, model.visual.output_dim)


def zero_shot_accuracy(model, text: TextEncoder, images: torch.Tensor, target: torch.Tensor,
                       names: Sequence[str], templates: Sequence[str]) -> float:
    """Top-1 accuracy (percent) of classifying images [N, 3, S, S] among `names` (targets [N])."""
    with torch.no_grad():
        classes = text.class_embeddings(list(names), templates)  # [C, D]
    return accuracy(image_embeddings(model, images) @ classes.T, target)


def dense_scores(seg: Segmenter, images: torch.Tensor, labels: np.ndarray, batch: int = 16) -> dict[str, float]:
    """Segment images [N, 3, S, S] over CLASS_NAMES and score against labels [N, S, S]: mIoU
    overall / stuff / things and pixel accuracy, in percent."""
    cm = ConfusionMatrix(len(CLASS_NAMES))
    for i in range(0, len(images), batch):
        preds = seg.segment(list(images[i:i + batch]), CLASS_NAMES)  # B x [S, S]
        cm.update(torch.stack(preds), torch.from_numpy(labels[i:i + batch]))
    scores = group_iou(cm, {"stuff": STUFF_IDS, "things": THING_IDS})
    scores["pixel_acc"] = 100.0 * cm.pixel_accuracy()
    return scores


def evaluate_clip(model, tokenizer, probe: ProbeSet, modes: Sequence[str] = ("maskclip", "plain"),
                  templates: Sequence[str] = ENSEMBLE_TEMPLATES) -> dict:
    """Zero-shot classification and dense mIoU of an open_clip CLIP on `probe` (see the module
    docstring). The model is deep-copied to float32 eval mode first; the original is untouched."""
    model = copy.deepcopy(model).float().eval()
    text = TextEncoder(model, tokenizer)
    single = images_to_tensor(probe.single_images)
    out = {
        "cls_things": zero_shot_accuracy(model, text, single, torch.from_numpy(probe.single_thing), THING_NAMES,
                                         templates),
        "cls_stuff": zero_shot_accuracy(model, text, single, torch.from_numpy(probe.single_stuff), STUFF_NAMES,
                                        templates),
        "dense": {},
    }
    images = images_to_tensor(probe.eval_images)
    size = int(images.shape[-1]) if len(images) else 128
    for mode in modes:
        seg = Segmenter.from_open_clip(model, tokenizer, size, mode=mode, templates=tuple(templates))
        out["dense"][mode] = dense_scores(seg, images, probe.eval_labels)
    return out
