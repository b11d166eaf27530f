"""Zero-shot mIoU on a labelled split while training runs: the curve, not only the end point.

    pixelclip train ... --validate ade20k-150=s3://data/eval --validate-every 50 --validate-limit 64

The training stage's rank 0 reads the split once (its first `limit` images, into memory), then at
step 0, every `every` steps and at the last step segments it with the student's current image encoder
(the dense readout `mode`, the frozen text encoder's class features, as `pixelclip evaluate` does) and
reports `val_miou` (plus `val_miou_<group>` for named subsets of classes) with the training metrics:
to MLflow, to Ray Train, and so to Tune, where `--metric val_miou --metric-mode max` selects by it.
The learned prompts and the decoder play no part, as at inference.
"""

from __future__ import annotations

import time

import torch

from pipelines import storage
from pipelines.stages.train.job import ValidationConfig


class Validator:
    """The validation split in memory, and mIoU of a PixelCLIP task's current student on it."""

    def __init__(self, cfg: ValidationConfig, opts: storage.StorageOptions | None = None):
        from pipelines.images import open_dataset, read_class_names

        self.cfg = cfg.validate()
        names = cfg.class_names
        if isinstance(names, str):
            names = read_class_names(names, opts)
        ds = open_dataset(cfg.benchmark, cfg.root, cfg.split, opts, names)
        n = len(ds) if cfg.limit is None else min(cfg.limit, len(ds))
        if n == 0:
            raise ValueError(f"train.validation: {cfg.benchmark} under {cfg.root} holds no images")
        self.samples = [ds[i] for i in range(n)]
        self.class_names, self.ignore_index = list(ds.class_names), ds.ignore_index
        self.groups: dict[str, list[int]] = {}
        for group, members in cfg.groups.items():
            unknown = [c for c in members if c not in self.class_names]
            if unknown or not members:
                raise ValueError(f"train.validation.groups.{group}: {unknown or 'no classes'} not among the "
                                 f"split's classes ({', '.join(self.class_names[:8])}, ...)")
            self.groups[group] = [self.class_names.index(c) for c in members]

    def __len__(self) -> int:
        return len(self.samples)

    @torch.no_grad()
    def __call__(self, task) -> dict[str, float]:
        """{"val_miou": ..., "val_miou_<group>": ..., "val_seconds": ...} of `task`'s student, in percent."""
        from pipelines.models import TEMPLATES
        from pixelclip.eval.miou import ConfusionMatrix
        from pixelclip.infer import Segmenter

        t0, was_training = time.perf_counter(), task.training
        task.eval()
        try:
            seg = Segmenter.from_pixelclip(task, mode=self.cfg.mode, templates=TEMPLATES[self.cfg.templates])
            text = seg.text_features(self.class_names)
            cm = ConfusionMatrix(len(self.class_names), self.ignore_index)
            for i in range(0, len(self.samples), 16):
                chunk = self.samples[i:i + 16]
                preds = seg.segment_with_features([s.image for s in chunk], text)
                for sample, pred in zip(chunk, preds, strict=True):
                    cm.update(pred.cpu(), torch.from_numpy(sample.label))
        finally:
            task.train(was_training)
        iou = cm.iou()  # [C], NaN for classes absent from both truth and prediction
        out = {"val_miou": cm.miou() * 100}
        for group, idx in self.groups.items():
            vals = iou[idx]
            vals = vals[~torch.isnan(vals)]
            out[f"val_miou_{group}"] = float(vals.mean() * 100) if len(vals) else float("nan")
        out["val_seconds"] = time.perf_counter() - t0
        return out
