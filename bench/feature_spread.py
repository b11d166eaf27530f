"""How spatially distinct are a model's dense features? The SynthScenes benchmark's collapse diagnostic.

    source .stack/env.sh
    python bench/feature_spread.py --sweep components-YYYYMMDD-HHMMSS [--scenes 16]   # pixelclip.sweep tag

For the starting CLIP and for the final checkpoint of every trial of a SynthScenes benchmark sweep
(found through MLflow's tags), on held-out SynthScenes it prints:
- `cos to mean`: the mean cosine between each position's dense feature (MaskCLIP readout, normalised)
  and the image's mean feature. 1.0 means every position carries the same (global) feature, so a
  zero-shot segmentation can only name one class per image;
- `classes/image`: how many distinct classes the zero-shot segmentation predicts per image (the first
  line printed gives the truth's count on the same scenes);
- the trial's final validation mIoU.
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch
import torch.nn.functional as F


def spread(seg, images: torch.Tensor, class_names: list[str]) -> tuple[float, float]:
    """(mean cos(position feature, image mean feature), distinct predicted classes per image)."""
    with torch.no_grad():
        f = F.normalize(seg.encoder(images).float(), dim=1).flatten(2)  # [B, D, hw]
        mean_dir = F.normalize(f.mean(2), dim=1)  # [B, D]
        cos = torch.einsum("bd,bdn->bn", mean_dir, f).mean().item()
        pred = torch.einsum("bdn,cd->bcn", f, seg.text_features(class_names)).argmax(1)  # [B, hw]
    return cos, statistics.fmean(len(torch.unique(p)) for p in pred)


def main() -> None:
    import mlflow

    from pipelines import storage
    from pipelines.models import load_segmenter
    from pipelines.synth.bench import trial_checkpoint
    from pixelclip.config import SYNTH_CHECKPOINT
    from pixelclip.infer import as_chw, chw_to_float
    from pixelclip.synth import CLASS_NAMES, SceneConfig, scene_at

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweep", required=True, help="the sweep's name (pixelclip.sweep tag), e.g. components-...")
    p.add_argument("--scenes", type=int, default=16, help="held-out scenes (eval seed 1, 128 px)")
    a = p.parse_args()
    torch.set_num_threads(2)
    opts = storage.StorageOptions.from_env()
    scenes = [scene_at(1, i, "eval", SceneConfig(size=128)) for i in range(a.scenes)]
    images = torch.stack([chw_to_float(as_chw(s.image)) for s in scenes])
    truth = statistics.fmean(len(set(s.label.ravel().tolist())) for s in scenes)
    names = list(CLASS_NAMES)
    print(f"{a.scenes} held-out scenes; the truth has {truth:.1f} classes per image")
    print("| model | cos to mean | classes/image | final val mIoU |\n|---|---:|---:|---:|")
    start = load_segmenter(f"openclip:pixelclip-synth-vit:{SYNTH_CHECKPOINT}", templates="single", image_size=128)
    cos, distinct = spread(start, images, names)
    print(f"| starting CLIP | {cos:.3f} | {distinct:.1f} | |")
    client = mlflow.MlflowClient(os.environ.get("MLFLOW_TRACKING_URI"))
    exp = client.get_experiment_by_name("pixelclip")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`pixelclip.sweep` = '{a.sweep}'",
                              max_results=1000)
    if not runs:
        raise SystemExit(f"no trial of sweep {a.sweep!r} in MLflow at {client.tracking_uri}")
    for r in sorted(runs, key=lambda r: r.data.tags.get("pixelclip.variant", "")):
        trial = r.data.tags["pixelclip.trial"]
        ckpt = trial_checkpoint(a.sweep, trial, opts)
        cos, distinct = spread(load_segmenter(ckpt, templates="single", opts=opts), images, names)
        hist = client.get_metric_history(r.info.run_id, "val_miou")
        final = max(hist, key=lambda m: m.step).value if hist else float("nan")
        print(f"| {r.data.tags.get('pixelclip.variant', trial)} | {cos:.3f} | {distinct:.1f} | {final:.1f} |")


if __name__ == "__main__":
    main()
