"""The SynthScenes benchmark's testbed: its fixed settings (`TESTBED`, `FAST`), the variants
(PixelCLIP and its ablations), the data it writes, the baseline and chance levels, and one sweep
through the real `tune` stage with its curves."""

from __future__ import annotations

import json
import os
import statistics

DATA = "s3://data/synthbench"
BENCH = "ade20k-150"  # the layout the splits are written in

# The testbed, fixed before any ablation ran (REPORT.md says how each value was chosen).
TESTBED = {
    "scene_px": 128, "masks": "oversegmented", "train_shards": 8, "images_per_shard": 64,
    "eval_images": 256, "eval_seed": 1, "eval2_images": 256, "eval2_seed": 3, "val_limit": 64,
    "dev_images": 48, "dev_seed": 2,
    "steps": 120, "batch_size": 8, "validate_every": 30, "seeds": [0, 1, 2], "clusters": [6, 96],
    "variant_seeds": {"pixelclip": [0, 1, 2, 3, 4], "no-clustering": [0, 1, 2, 3, 4]},  # the two headline goals
    "cluster_seeds": [0],
    # The rates of each group: encoder and decoder at x50 the reference (--lr-pilot), the prompts at the
    # reference's 2e-3 (pilot "groups-warmup-words", development split, 2026-12-02; pilots.json)
    "lr": {"lr_clip": 1e-4, "lr_decoder": 1e-2, "lr_prompts": 2e-3},
    "overrides": ["decoder.hidden=16", "decoder.mid=8", "data.mask_size=32"],
}
FAST = {**TESTBED, "variant_seeds": {}, "train_shards": 2, "images_per_shard": 16, "eval_images": 8,
        "eval2_images": 4, "val_limit": 8, "dev_images": 4, "steps": 4, "batch_size": 4, "validate_every": 2,
        "seeds": [0], "clusters": [], "cluster_seeds": [0],
        "variants": ["pixelclip"]}  # the pipeline end to end; every variant takes steps in the tests
REFERENCE_LR = {"lr_clip": 2e-6, "lr_decoder": 2e-4, "lr_prompts": 2e-3}


def variants(class_names: list[str]) -> dict[str, list[str]]:
    """The components sweep: PixelCLIP and the four ablations of Table 3a (3d for fixed names)."""
    names = ", ".join(json.dumps(n) for n in class_names)
    return {"pixelclip": [], "no-clustering": ["cluster.mode=none"], "no-text-encoder": ["cluster.mode=centroids"],
            "fixed-names": ["cluster.mode=names", f"cluster.class_names=[{names}]"],
            "no-momentum": ["momentum.gamma=0"]}


def seeded(variants_: dict[str, list[str]], seeds: list[int],
            per_variant: dict[str, list[int]] | None = None) -> dict[str, list[str]]:
    """One trial per variant and seed (`per_variant` gives some variants other seeds)."""
    return {f"{name}/{s}": [*items, f"seed={s}", f"prompts.seed={s}"] for name, items in variants_.items()
            for s in (per_variant or {}).get(name, seeds)}


def testbed_overrides(tb: dict = TESTBED, lr_scale: float | None = None) -> list[str]:
    """The testbed's model on top of the synth preset, steps and batch aside: its learning rates and its
    other settings (also what `make demo` fine-tunes with)."""
    if lr_scale is None and "lr" in tb:  # the rates of each group, set apart
        lrs = [f"optim.{k}={v:g}" for k, v in tb["lr"].items()]
    else:
        scale = tb["lr_scale"] if lr_scale is None else lr_scale
        lrs = [f"optim.{k}={v * scale:g}" for k, v in REFERENCE_LR.items()]
    return [*lrs, *tb["overrides"]]


def model_config(tb: dict, lr_scale: float | None = None) -> dict:
    from pixelclip.config import load_config

    return load_config("synth", [f"optim.steps={tb['steps']}", f"optim.batch_size={tb['batch_size']}",
                                 *testbed_overrides(tb, lr_scale)]).to_dict()


def write_data(tb: dict, opts) -> dict:
    """Training tars, evaluation and development splits; returns their URIs."""
    from pipelines.synth.scenes import write_eval_split, write_train_shards
    from pixelclip.synth import SceneConfig

    cfg = SceneConfig(size=tb["scene_px"])
    write_train_shards(f"{DATA}/raw", tb["train_shards"], tb["images_per_shard"], tb["masks"], cfg, seed=0, opts=opts)
    write_eval_split(f"{DATA}/eval", tb["eval_images"], cfg, seed=tb["eval_seed"], opts=opts)
    write_eval_split(f"{DATA}/dev", tb["dev_images"], cfg, seed=tb["dev_seed"], opts=opts)
    out = {"raw": f"{DATA}/raw/", "ready": f"{DATA}/ready/", "eval": f"{DATA}/eval", "dev": f"{DATA}/dev"}
    if tb.get("eval2_images"):  # the second evaluation split, drawn with another seed
        write_eval_split(f"{DATA}/eval2", tb["eval2_images"], cfg, seed=tb["eval2_seed"], opts=opts)
        out["eval2"] = f"{DATA}/eval2"
    return out


def validation(root: str, tb: dict, limit: int) -> dict:
    from pixelclip.synth import CLASS_NAMES, STUFF_NAMES, THING_NAMES

    return {"benchmark": BENCH, "root": root, "every": tb["validate_every"], "limit": limit,
            "class_names": list(CLASS_NAMES), "templates": "single", "mode": "maskclip",
            "groups": {"stuff": list(STUFF_NAMES), "things": list(THING_NAMES)}}


def baseline(eval_root: str, tb: dict, opts) -> dict:
    """The starting CLIP through the evaluation stage: mIoU, stuff and things (%)."""
    from pipelines.stages.evaluate.job import EvalJobConfig, run_evaluate
    from pixelclip.config import SYNTH_CHECKPOINT
    from pixelclip.synth import CLASS_NAMES

    job = EvalJobConfig(model=f"openclip:pixelclip-synth-vit:{SYNTH_CHECKPOINT}", benchmarks={BENCH: eval_root},
                        class_names={BENCH: list(CLASS_NAMES)}, templates="single", image_size=tb["scene_px"],
                        limit=tb["eval_images"], output=f"{DATA}/baseline")
    res = run_evaluate(job, opts)["benchmarks"][BENCH]["maskclip"]
    return {"miou": res["miou"], **group_mious(res["per_class"])}


def chance(tb: dict) -> dict:
    """Expected mIoU (%) of uniformly random labels on the evaluation split: for a class with pixel
    share p among C classes, IoU = (p / C) / (p + 1/C - p / C)."""
    import numpy as np

    from pixelclip.synth import CLASS_NAMES, SceneConfig, scene_at

    C = len(CLASS_NAMES)
    counts = np.zeros(C)
    for i in range(tb["eval_images"]):
        counts += np.bincount(scene_at(tb["eval_seed"], i, "eval", SceneConfig(size=tb["scene_px"])).label.ravel(),
                              minlength=C)
    p = counts / counts.sum()
    iou = (p / C) / (p + 1 / C - p / C)
    per_class = {n: float(iou[c] * 100) if counts[c] else None for c, n in enumerate(CLASS_NAMES)}
    vals = [v for v in per_class.values() if v is not None]
    return {"miou": round(statistics.fmean(vals), 2), **group_mious(per_class)}


def group_mious(per_class: dict) -> dict:
    from pixelclip.synth import STUFF_NAMES, THING_NAMES

    out = {}
    for group, names in (("stuff", STUFF_NAMES), ("things", THING_NAMES)):
        vals = [per_class[n] for n in names if per_class.get(n) is not None]
        out[group] = round(statistics.fmean(vals), 2) if vals else None
    return out


def sweep(name: str, tb: dict, model: dict, data: dict, split: str, variants_: dict, search: dict, opts) -> dict:
    """One Tune sweep (FIFO: every trial runs to the end; one training worker per trial), validating on
    the labelled `split` ("eval" or "dev")."""
    from pipelines.stages.tune.job import TuneJobConfig
    from pipelines.stages.tune.sweep import run_tune

    limit = min(tb[f"{split}_images"], tb.get("val_limit") or 10 ** 9)
    trial = {"data": data["ready"], "model": model, "workers": 1, "cpus_per_worker": 1.0,
             "checkpoint_every": tb["steps"], "log_every": tb["validate_every"],
             "validation": validation(data[split], tb, limit)}
    job = TuneJobConfig(storage=f"{DATA}/sweeps", name=name, train=trial, search=search, variants=variants_,
                        metric="val_miou", mode="max", scheduler="fifo")
    return run_tune(job, opts)


def curves(out: dict) -> list[dict]:
    """Per trial: its variant, seed, K, MLflow run and the validation curves (step -> %)."""
    import mlflow

    client = mlflow.MlflowClient(os.environ.get("MLFLOW_TRACKING_URI"))
    rows = []
    for r in out["trials"]:
        variant, _, seed = str(r["config"].get("variant", "")).partition("/")
        hist = {m: {h.step: round(h.value, 3) for h in client.get_metric_history(r["mlflow_run_id"], m)}
                for m in ("val_miou", "val_miou_stuff", "val_miou_things")}
        rows.append({"trial": r["trial_id"], "variant": variant, "seed": int(seed) if seed else None,
                     "clusters": r["config"].get("prompts.num_clusters"), "run_id": r["mlflow_run_id"],
                     "status": r["status"], "error": r["error"], **hist})
    return rows
