"""SynthScenes benchmark: the paper's central claims, in miniature, through the real stages.

    pixelclip synth-bench -o bench/synthscenes          # the checked-in report (about 2 h, 2 cores)
    pixelclip synth-bench --fast -o /tmp/synthbench     # the pipeline end to end in minutes
    pixelclip synth-bench ...                                        # the same

On the local stack (`pipelines.local.stack`, started if needed):
1. SynthScenes in the real formats: SA-1B tars of training scenes with over-segmented unlabeled masks
   (as SAM's), a labelled evaluation split and a separate labelled development split (ADE20K layout);
2. `prepare` (Ray Data) -> training-ready shards;
3. the starting CLIP (the project's SynthScenes CLIP, MaskCLIP readout) through `evaluate`: the baseline;
4. `tune` (Ray Tune over Ray Train), sweep "components": PixelCLIP and the ablations of the paper's
   Table 3a (without semantic clustering, without the CLIP text encoder, with fixed class names instead
   of class prompts, without the momentum encoder), each with several seeds; every trial measures
   zero-shot mIoU on the evaluation split while it trains (`pipelines.stages.train.validation`);
5. `tune`, sweep "clusters": PixelCLIP with other numbers of clusters K (Table 3b), same seeds;
6. the report: REPORT.md (tables, the paper's claims checked one by one), results.json, curves.png
   (mIoU during training) and segmentations.png (held-out scenes before and after), in --output.

The testbed's settings (`TESTBED`) were fixed before the ablations ran; `--lr-pilot` is how the one
setting chosen by measurement was chosen (on the development split, never on the evaluation split).
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

from pipelines import storage
from pipelines.synth.pilots import CHOICE, pilot, pilots
from pipelines.synth.report import claims, draw_curves, draw_segmentations, goals, step0_gap, summarize, write_report
from pipelines.synth.testbed import (
    DATA,
    FAST,
    TESTBED,
    baseline,
    chance,
    curves,
    model_config,
    seeded,
    sweep,
    validation,
    variants,
    write_data,
)

# -- the run ------------------------------------------------------------------------------------------------------

def trial_checkpoint(sweep_name: str, trial: str, opts) -> str:
    """The final checkpoint of one trial of a benchmark sweep (where `tune` keeps its training runs)."""
    from pipelines.stages.train.checkpoints import latest_checkpoint

    run_uri = storage.join(DATA, "sweeps", sweep_name, "runs", f"{sweep_name}-{trial}")
    ckpt = latest_checkpoint(run_uri, opts)
    if ckpt is None:
        raise RuntimeError(f"no checkpoint under {run_uri}")
    return ckpt


def row_checkpoint(row: dict, opts) -> str:
    """The final checkpoint of the trial behind one `curves` row (its sweep from the MLflow run's tags)."""
    import mlflow

    client = mlflow.MlflowClient(os.environ.get("MLFLOW_TRACKING_URI"))
    return trial_checkpoint(client.get_run(row["run_id"]).data.tags["pixelclip.sweep"], row["trial"], opts)


READOUTS = ("sclip", "clearclip")  # reported beside the paper's MaskCLIP readout for the start and PixelCLIP


def final_scores(rows: list[dict], data: dict, tb: dict, opts, out_dir: Path) -> dict:
    """Every trial's final checkpoint and the starting CLIP scored scene by scene on both evaluation splits
    (all their scenes; training validated on the first `val_limit`), summarised by
    `synth_eval.summarize_final`. The confusions go to OUT/scene_confusions.npz."""
    import numpy as np

    from pipelines.models import load_segmenter
    from pipelines.stages.train.job import ValidationConfig
    from pipelines.stages.train.validation import Validator
    from pipelines.synth.scoring import scene_confusions, summarize_final
    from pixelclip.config import SYNTH_CHECKPOINT
    from pixelclip.synth import CLASS_NAMES, STUFF_NAMES, THING_NAMES

    names = list(CLASS_NAMES)
    splits = [s for s in ("eval", "eval2") if s in data]
    samples = {s: Validator(ValidationConfig(**validation(data[s], tb, tb[f"{s}_images"])), opts).samples
               for s in splits}
    start_uri = f"openclip:pixelclip-synth-vit:{SYNTH_CHECKPOINT}"

    def score(uri: str, mode: str | None = None, **kw) -> dict[str, np.ndarray]:
        seg = load_segmenter(uri, templates="single", mode=mode, opts=opts, **kw)
        return {s: scene_confusions(seg, samples[s], names) for s in splits}

    start = {"maskclip": score(start_uri, image_size=tb["scene_px"]),
             **{m: score(start_uri, m, image_size=tb["scene_px"]) for m in READOUTS}}
    trials = []
    for r in rows:
        uri = row_checkpoint(r, opts)
        confs = {"maskclip": score(uri)}
        if r["variant"] == "pixelclip" and r["clusters"] is None:
            confs.update({m: score(uri, m) for m in READOUTS})
        trials.append(({"variant": r["variant"], "seed": r["seed"], "clusters": r["clusters"]}, confs))
    arrays = {f"start|{m}|{s}": c for m, per in start.items() for s, c in per.items()}
    for meta, confs in trials:
        key = f"{meta['variant']}/{meta['seed']}/K{meta['clusters']}"
        arrays.update({f"{key}|{m}|{s}": c for m, per in confs.items() for s, c in per.items()})
    np.savez_compressed(out_dir / "scene_confusions.npz", **arrays)
    groups = {"stuff": [names.index(n) for n in STUFF_NAMES], "things": [names.index(n) for n in THING_NAMES]}
    return summarize_final(start, trials, groups, {s: tb[f"{s}_seed"] for s in splits})


def pixelclip_checkpoints(rows: list[dict], opts) -> dict[str, str]:
    """{"PixelCLIP seed S": final checkpoint} of the components sweep's PixelCLIP trials (their sweep from
    the MLflow run's tags)."""
    import mlflow

    client = mlflow.MlflowClient(os.environ.get("MLFLOW_TRACKING_URI"))
    out = {f"PixelCLIP seed {r['seed']}": trial_checkpoint(client.get_run(r["run_id"]).data.tags["pixelclip.sweep"],
                                                           r["trial"], opts)
           for r in rows if r["variant"] == "pixelclip" and r["clusters"] is None}
    return dict(sorted(out.items()))


def run(out_dir: Path, fast: bool = False, stack_dir: str = ".stack", lr_pilot: bool = False,
        command: str = "", pilot_spec: dict | None = None, eval_seeds: tuple[int, int] | None = None) -> dict:
    from pipelines.local.stack import Stack

    t0 = time.perf_counter()
    tb = dict(FAST if fast else TESTBED)
    if eval_seeds:  # the evaluation splits drawn with other seeds (the development split keeps its own)
        if len(set(eval_seeds)) != 2 or tb["dev_seed"] in eval_seeds:
            raise ValueError(f"--eval-seeds {eval_seeds}: two different seeds, neither the development "
                             f"split's ({tb['dev_seed']})")
        tb["eval_seed"], tb["eval2_seed"] = eval_seeds
    out_dir.mkdir(parents=True, exist_ok=True)
    env = Stack(stack_dir, num_cpus=4).up()
    os.environ.update(env)  # before Ray is imported: it reads its auth mode once
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import ray
    import torch

    from pipelines.stages.prepare import PrepareConfig, run_prepare
    from pixelclip.data.sa1b import ConvertOptions
    from pixelclip.synth import CLASS_NAMES, NUM_STUFF

    torch.set_num_threads(1)  # the scene writer's per-image work; the stages set their own
    opts = storage.StorageOptions.from_env()
    ray.init(address=env["RAY_ADDRESS"], ignore_reinit_error=True, log_to_driver=False)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    print("== SynthScenes -> object store", flush=True)
    data = write_data(tb, opts)
    print("== prepare", flush=True)
    run_prepare(PrepareConfig(input=data["raw"], output=data["ready"], overwrite=True,
                              convert=ConvertOptions(short_side=tb["scene_px"], min_area=16, max_masks=24)), opts)
    if lr_pilot:
        return lr_pilot(tb, data, stamp, opts, out_dir)
    if pilot_spec:
        return pilot(pilot_spec["name"], pilot_spec["variants"], tb, data, stamp, opts, out_dir,
                     pilot_spec["steps"], pilot_spec["seeds"], command)
    print("== the starting CLIP (evaluate)", flush=True)
    base = baseline(data["eval"], tb, opts)
    model = model_config(tb)
    print("== sweep: components", flush=True)
    chosen = {k: v for k, v in variants(list(CLASS_NAMES)).items() if k in tb.get("variants", [k])}
    comp = sweep(f"components-{stamp}", tb, model, data, "eval", seeded(chosen, tb["seeds"], tb.get("variant_seeds")),
                 {}, opts)
    rows = curves(comp)
    if tb["clusters"]:
        print("== sweep: clusters", flush=True)
        clus = sweep(f"clusters-{stamp}", tb, model, data, "eval", seeded({"pixelclip": []}, tb["cluster_seeds"]),
                     {"prompts.num_clusters": tb["clusters"]}, opts)
        rows += curves(clus)
    k_default = model["prompts"]["num_clusters"]
    summary = summarize(rows, base, k_default)
    print("== final checkpoints, scene by scene, on both evaluation splits", flush=True)
    final = final_scores(rows, data, tb, opts, out_dir)
    print("== figures", flush=True)
    draw_curves(rows, base, out_dir / "curves.png")
    draw_segmentations(pixelclip_checkpoints(rows, opts), tb, out_dir / "segmentations.png", opts, n=2 if fast else 4)
    result = {"command": command or "pixelclip synth-bench", "date": time.strftime("%Y-%m-%d"),
              "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}", "testbed": tb, "baseline": base,
              "class_names": list(CLASS_NAMES), "n_stuff": NUM_STUFF, "summary": summary,
              "claims": claims(summary, base), "trials": rows, "choice": CHOICE, "final": final,
              "goals": goals(final), "pilots": pilots(out_dir),
              "step0_vs_evaluate": step0_gap(rows, base), "chance": chance(tb),
              "failed": [f"{r['variant']}/{r['seed']} K={r['clusters']}: {r['error']}" for r in rows if r["error"]],
              "minutes": (time.perf_counter() - t0) / 60}
    (out_dir / "results.json").write_text(json.dumps(result, indent=1))
    report = write_report(out_dir, result)
    print(report.read_text())
    return result


def rerender(out_dir: Path, command: str, segmentations: bool = False) -> Path:
    """REPORT.md and curves.png again from out_dir/results.json (after a change to the report's layout);
    the measurements are not touched, and the report names both commands. `segmentations`: also draw
    segmentations.png again, from the checkpoints in the stack's object store (the stack must run)."""
    result = json.loads((out_dir / "results.json").read_text())
    for r in result["trials"]:  # JSON made the steps strings
        for m in ("val_miou", "val_miou_stuff", "val_miou_things"):
            r[m] = {int(k): v for k, v in r[m].items()}
    result.setdefault("chance", chance(result["testbed"]))
    result["pilots"] = pilots(out_dir)  # every pilot run so far, also those after the measured run
    k_default = model_config(result["testbed"])["prompts"]["num_clusters"]
    result["summary"] = summarize(result["trials"], result["baseline"], k_default)
    result["claims"] = claims(result["summary"], result["baseline"])  # derived figures follow the report's rules
    if command not in result["command"]:
        result["command"] += f"` (measured), then rendered by `{command}"
    draw_curves(result["trials"], result["baseline"], out_dir / "curves.png")
    if segmentations:  # the checkpoints are in the stack's object store
        opts = storage.StorageOptions.from_env()
        draw_segmentations(pixelclip_checkpoints(result["trials"], opts), result["testbed"],
                           out_dir / "segmentations.png", opts, n=4 if result["testbed"]["eval_images"] >= 4 else 2)
    return write_report(out_dir, result)


