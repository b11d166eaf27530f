"""The main job on the embedded default: the whole product on one machine, end to end.

    pixelclip demo [-o out/demo] [--model auto|synth|tiny] [--steps N]   # `make demo`

1. the local stack: SeaweedFS, the MLflow server and a Ray head on 127.0.0.1 (`pipelines.local.stack`);
2. SynthScenes in the real formats: SA-1B tars with over-segmented unlabeled masks, and a labelled
   split in the ADE20K layout, written to the object store;
3. prepare (Ray Data) -> train (Ray Train, two DDP workers, checkpoints in the object store,
   metrics in MLflow) -> register (`models:/pixelclip-demo@champion`) -> evaluate (Ray Data,
   zero-shot mIoU of the starting CLIP and of the fine-tuned model) -> segment one held-out scene.
It prints where to look and what it measured. The model is the project's own SynthScenes CLIP
(`--model synth`, trained by `pipelines.synth.pretrain`) when its checkpoint is present, else the
random-initialised `tiny` preset; the demo says which. The stack keeps running afterwards (look at
the MLflow UI); `pixelclip stack down` stops it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from pipelines import storage

DATA = "s3://data/demo"
DEMO_STEPS = 360  # 3x the benchmark's 120: about 11 minutes of training on 2 cores
EVAL_SCENES = 64


def _choose_model(choice: str) -> tuple[str, list[str], str]:
    """(preset, overrides, what the demo says about the model)."""
    from pixelclip.config import SYNTH_CHECKPOINT

    have_synth = SYNTH_CHECKPOINT.is_file()
    if choice == "synth" and not have_synth:
        raise FileNotFoundError(f"--model synth needs {SYNTH_CHECKPOINT}; "
                                "train it with python -m pipelines.synth.pretrain")
    if choice in ("synth", "auto") and have_synth:
        from pipelines.synth.testbed import TESTBED, testbed_overrides

        # the SynthScenes benchmark's settings (bench/synthscenes/REPORT.md), chosen on its development split
        overrides = [f"optim.batch_size={TESTBED['batch_size']}", *testbed_overrides()]
        return "synth", overrides, (f"the project's SynthScenes CLIP ({SYNTH_CHECKPOINT.name}, trained by this "
                                    "project), fine-tuned with the SynthScenes benchmark's settings")
    return "tiny", [], "the tiny preset with RANDOM weights (no trained CLIP): mechanics only"


def _stage(name: str, timings: dict, fn, *args, **kw):
    t0 = time.perf_counter()
    print(f"\n== {name}", flush=True)
    out = fn(*args, **kw)
    timings[name] = time.perf_counter() - t0
    return out


def run(out: Path, model: str = "auto", steps: int | None = None, stack_dir: str = ".stack",
        workers: int = 2) -> dict:
    """Run the whole pipeline; returns the measured summary (also written to out/summary.json)."""
    from pipelines.local.stack import Stack

    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    env = _stage("stack up", timings, Stack(stack_dir, num_cpus=4).up)
    os.environ.update(env)  # like a shell that sourced env.sh; before Ray is imported (it reads its auth mode once)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import ray

    from pipelines.registry import set_alias
    from pipelines.stages.evaluate.job import EvalJobConfig, run_evaluate
    from pipelines.stages.prepare import PrepareConfig, run_prepare
    from pipelines.stages.segment import segment_image
    from pipelines.stages.train.driver import run_train
    from pipelines.stages.train.job import TrainJobConfig
    from pipelines.synth.scenes import write_eval_split, write_train_shards
    from pixelclip.config import load_config
    from pixelclip.data.sa1b import ConvertOptions
    from pixelclip.synth import CLASS_NAMES, SceneConfig, scene_at

    preset, overrides, about = _choose_model(model)
    if steps is None:  # the benchmark's PixelCLIP trial with the SynthScenes CLIP, for as many steps as fit the
        # demo's 15 minutes on 2 cores (120 steps train in about 4 minutes there); 60 for the mechanics
        steps = DEMO_STEPS if preset == "synth" else 60
    cfg = load_config(preset, [*overrides, f"optim.steps={steps}"])
    print(f"model: {about}")
    opts = storage.StorageOptions.from_env()
    # the workers' output reaches this terminal: the training's progress lines (step, loss, images/s, time
    # left; at least every 30 s), as `pixelclip train` prints them
    ray.init(address=env["RAY_ADDRESS"], ignore_reinit_error=True, log_to_driver=True)
    ray.data.DataContext.get_current().enable_progress_bars = False  # the progress lines, not Ray Data's bars
    size = SceneConfig(size=cfg.backbone.image_size if preset == "synth" else 96)
    _stage("write SynthScenes", timings, _write_data, write_train_shards, write_eval_split, size, opts,
           preset == "synth")
    convert = ConvertOptions(short_side=size.size, min_area=16, max_masks=24)
    _stage("prepare", timings, run_prepare, PrepareConfig(input=f"{DATA}/raw/", output=f"{DATA}/ready/",
                                                         convert=convert, overwrite=True), opts)
    name = f"demo-{preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    job = TrainJobConfig(data=f"{DATA}/ready/", storage=f"{DATA}/runs", name=name, model=cfg.to_dict(),
                         workers=workers, cpus_per_worker=1.0, checkpoint_every=max(steps // 3, 1),
                         log_every=max(steps // 6, 1), seed=0, register_as="pixelclip-demo")
    trained = _stage("train", timings, run_train, job, opts)
    set_alias("pixelclip-demo", "champion", trained["registered_version"])
    eval_job = dict(benchmarks={"ade20k-150": f"{DATA}/eval"}, class_names={"ade20k-150": list(CLASS_NAMES)},
                    templates="single", output=f"{DATA}/eval-results/{name}")
    before = _stage("evaluate the starting CLIP", timings, run_evaluate,
                    EvalJobConfig(model=_starting_clip(cfg), **eval_job, image_size=cfg.backbone.image_size), opts)
    after = _stage("evaluate the fine-tuned model", timings, run_evaluate,
                   EvalJobConfig(model="models:/pixelclip-demo@champion", **eval_job), opts)
    scene = scene_at(seed=1, index=0, split="eval", cfg=size)
    present = [CLASS_NAMES[c] for c in sorted(set(scene.label.ravel().tolist()))]
    _stage("segment", timings, _pictures, scene, cfg, out, segment_image)
    summary = _summary(about, env, trained, before, after, timings, out, present)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    _print(summary)
    return summary


def _pictures(scene, cfg, out: Path, segment_image) -> None:
    """out/before_after.png: the scene | its truth | the starting CLIP | the fine-tuned model, 4x, with a
    legend; out/overlay.png: the fine-tuned model's overlay (what `pixelclip segment` writes)."""
    from pixelclip.synth import CLASS_NAMES
    from pixelclip.viz import comparison

    names = list(CLASS_NAMES)
    start, _ = segment_image(_starting_clip(cfg), scene.image, names, templates="single",
                             image_size=cfg.backbone.image_size)
    tuned, overlay = segment_image("models:/pixelclip-demo@champion", scene.image, names, templates="single")
    comparison(scene.image, [("truth", scene.label), ("starting CLIP", start), ("fine-tuned", tuned)], names,
               scale=4).save(out / "before_after.png")
    overlay.save(out / "overlay.png")


def _write_data(write_train_shards, write_eval_split, size, opts, as_benchmark: bool) -> None:
    """The benchmark's training scenes (512) for the SynthScenes CLIP; fewer for the mechanics."""
    from pipelines.synth.testbed import TESTBED

    shards, images = (TESTBED["train_shards"], TESTBED["images_per_shard"]) if as_benchmark else (4, 48)
    write_train_shards(f"{DATA}/raw", shards=shards, images=images, masks="oversegmented", cfg=size, seed=0,
                       opts=opts)
    write_eval_split(f"{DATA}/eval", EVAL_SCENES, cfg=size, seed=1, opts=opts)


def _starting_clip(cfg) -> str:
    return f"openclip:{cfg.backbone.name}:{cfg.backbone.pretrained}" if cfg.backbone.pretrained else \
        f"openclip:{cfg.backbone.name}"


def _miou(results: dict) -> float:
    return results["benchmarks"]["ade20k-150"]["maskclip"]["miou"]


def _summary(about, env, trained, before, after, timings, out, present) -> dict:
    return {"model": about, "mlflow_ui": env["MLFLOW_TRACKING_URI"], "ray_dashboard": env["RAY_API_SERVER_ADDRESS"],
            "registered": f"models:/pixelclip-demo@champion (version {trained['registered_version']})",
            "mlflow_run_id": trained["mlflow_run_id"], "checkpoint": trained["checkpoint"],
            "picture": str(out / "before_after.png"), "overlay": str(out / "overlay.png"),
            "classes_present": present,
            "miou_start": _miou(before), "miou_finetuned": _miou(after),
            "final_loss": trained["metrics"].get("loss"), "images_per_s": trained["metrics"].get("images_per_s"),
            "seconds": {k: round(v, 1) for k, v in timings.items()}}


def _print(s: dict) -> None:
    print("\n== where to look")
    for key in ("mlflow_ui", "ray_dashboard", "registered", "checkpoint", "picture", "overlay"):
        print(f"{key:15} {s[key]}")
    print(f"\nmodel: {s['model']}")
    print("| measured | value |\n|---|---:|")
    print(f"| zero-shot mIoU on {EVAL_SCENES} held-out scenes, starting CLIP (MaskCLIP readout) | {s['miou_start']} |")
    print(f"| zero-shot mIoU, fine-tuned and registered model | {s['miou_finetuned']} |")
    gain = s["miou_finetuned"] - s["miou_start"]
    print(f"| gain | {gain:+.2f} |")
    print(f"| final training loss | {s['final_loss']:.4f} |\n| training images/s (2 workers) | "
          f"{s['images_per_s']:.1f} |")
    for stage, sec in s["seconds"].items():
        print(f"| {stage} (s) | {sec} |")
    verdict = "no gain at this length" if gain <= 0 else "a gain"
    print(f"\n{verdict} with one seed on {EVAL_SCENES} scenes; bench/synthscenes/REPORT.md measures the method "
          "over 5 seeds, with intervals, on two splits of 256 scenes")
    print("\nthe stack keeps running: pixelclip stack down stops it")
