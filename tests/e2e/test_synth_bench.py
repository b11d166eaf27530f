"""The SynthScenes benchmark end to end in its fast form (one seed, a few steps): local stack, scenes in
the object store, prepare, the evaluate stage, two Ray Tune sweeps over Ray Train with validation
while training, MLflow, the report and its figures. It checks the pipeline, not the numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import pixelclip
from pipelines.cli import run_command
from pipelines.stages.tune.job import TuneJobConfig
from pipelines.synth.report import claims, summarize
from pipelines.synth.testbed import variants
from pixelclip.synth import CLASS_NAMES
from tests.leaks import assert_no_secret, stack_pids

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.long
def test_fast_benchmark_writes_the_report(tmp_path):
    root, out, t0 = tmp_path / "stack", tmp_path / "report", time.time()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "AWS_", "MLFLOW_"))}
    try:
        done = subprocess.run([sys.executable, "-m", "pipelines.cli", "synth-bench", "--fast", "--output", str(out),
                               "--stack-dir", str(root), "--eval-seeds", "4,5"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert_no_secret(root, t0, tmp_path / "leaks")  # prepare, evaluate and a Tune sweep: no key anywhere
    finally:
        assert run_command(["stack", "down", "--stack-dir", str(root)]) == 0
    assert stack_pids(root) == []
    result = json.loads((out / "results.json").read_text())
    tb = result["testbed"]
    variants = tb["variants"]  # --fast: PixelCLIP alone, no K sweep (every variant takes steps below)
    trials = result["trials"]
    assert sorted(t["variant"] for t in trials) == sorted(variants) and tb["clusters"] == []
    every = tb["validate_every"]
    for t in trials:  # every trial finished and was validated at step 0, every `every` steps and at the end
        assert t["status"] == "TERMINATED" and t["error"] is None, t
        assert sorted(int(s) for s in t["val_miou"]) == list(range(0, tb["steps"] + 1, every)), t
        assert all(0 <= v <= 100 for v in t["val_miou"].values())
    assert result["step0_vs_evaluate"] < 0.05  # step 0 is the starting CLIP, as the evaluate stage measured it
    report = (out / "REPORT.md").read_text()
    for v in variants:
        assert f"| {v} |" in report
    assert "--fast" in report and "| starting CLIP (step 0 of every trial) |" in report
    assert all(c["holds"] is None for c in result["claims"])  # one seed: no claim is judged
    final = result["final"]  # the final checkpoints scored scene by scene on both evaluation splits
    assert (tb["eval_seed"], tb["eval2_seed"]) == (4, 5)  # --eval-seeds
    assert final["splits"] == {"eval": {"seed": tb["eval_seed"], "scenes": tb["eval_images"]},
                               "eval2": {"seed": tb["eval2_seed"], "scenes": tb["eval2_images"]}}
    assert [(t["variant"], t["seed"]) for t in final["trials"]] == [(v, 0) for v in variants]
    assert abs(final["start"]["eval"]["miou"] - result["baseline"]["miou"]) < 0.05  # what evaluate measured
    assert all(g["holds"] is None for g in result["goals"])  # one seed decides no goal
    assert "## The goal, on the final checkpoints" in report and (out / "scene_confusions.npz").stat().st_size
    for png in ("curves.png", "segmentations.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the report renders again from results.json alone, naming both commands
    (out / "REPORT.md").unlink()
    again = subprocess.run([sys.executable, "-m", "pipelines.cli", "synth-bench", "--report-only", "--output",
                            str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    rendered = (out / "REPORT.md").read_text()
    assert "--report-only" in rendered and "(measured)" in rendered and "| pixelclip |" in rendered


def test_the_benchmark_variants_are_valid_configurations():
    model = pixelclip.load_config("synth").to_dict()
    job = TuneJobConfig(storage="s3://s", name="c", train={"data": "s3://d/", "model": model},
                        variants=variants(list(CLASS_NAMES))).validate()
    modes = {v: job.trial_job({"variant": v}, "x").model.cluster.mode for v in job.variants}
    assert modes == {"pixelclip": "prompts", "no-clustering": "none", "no-text-encoder": "centroids",
                     "fixed-names": "names", "no-momentum": "prompts"}
    assert job.trial_job({"variant": "no-momentum"}, "x").model.momentum.gamma == 0
    assert job.trial_job({"variant": "fixed-names"}, "x").model.cluster.class_names == list(CLASS_NAMES)


def test_every_benchmark_variant_trains_from_the_synthscenes_clip():
    """What `--fast` leaves out: each variant of the components sweep, on the testbed's model, takes
    finite training steps (in-process, a small batch at the scene size)."""
    from pipelines.synth.testbed import TESTBED, model_config
    from tests.conftest import synthetic_batch

    base = model_config({**TESTBED, "steps": 10, "batch_size": 2})
    for name, items in variants(list(CLASS_NAMES)).items():
        cfg = pixelclip.load_config(base, items)
        trainer = pixelclip.Trainer(pixelclip.build_pixelclip(cfg), cfg)
        out = [trainer.step(**synthetic_batch(cfg, batch=2, side=8))["loss"] for _ in range(2)]
        assert all(v == v and abs(v) < 1e6 for v in out), (name, out)
        assert trainer.skipped == 0, name


def _row(variant, seed, final, clusters=None):
    return {"variant": variant, "seed": seed, "clusters": clusters, "val_miou": {0: 10.0, 30: final},
            "val_miou_stuff": {30: final + 5}, "val_miou_things": {30: final - 5}}


def test_summary_and_claims_use_the_seeds_spread():
    base = {"miou": 10.0, "stuff": 15.0, "things": 5.0}
    rows = [_row("pixelclip", s, v) for s, v in enumerate([14.0, 15.0, 16.0])]
    rows += [_row("no-clustering", s, v) for s, v in enumerate([3.0, 4.0, 5.0])]
    rows += [_row("no-momentum", s, v) for s, v in enumerate([14.5, 15.0, 15.5])]
    rows += [_row("pixelclip", s, 12.0, clusters=6) for s in range(3)]
    summary = summarize(rows, base, 24)
    px = summary["variants"]["pixelclip"]
    assert px["val_miou"]["mean"] == 15.0 and px["val_miou"]["std"] == 1.0 and px["gain"]["mean"] == 5.0
    assert summary["clusters"][6]["mean"] == 12.0 and summary["clusters"][24] == px["val_miou"]
    got = {c["compared"]: c["holds"] for c in claims(summary, base)}
    assert got["pixelclip - starting CLIP"] is True  # +5 > 1
    assert got["no-clustering - pixelclip"] is True  # -11, spread 1
    assert got["pixelclip - no-momentum"] is False  # 0 within the spread
    assert got["pixelclip - no-text-encoder"] is None  # not run
    one_seed = summarize([_row("pixelclip", 0, 20.0)], base, 24)
    assert claims(one_seed, base)[0]["holds"] is None  # a single seed has no spread to judge by


def test_chance_is_what_uniformly_random_labels_score():
    import numpy as np
    import torch

    from pipelines.synth.testbed import FAST, chance
    from pixelclip.eval.miou import ConfusionMatrix
    from pixelclip.synth import SceneConfig, scene_at

    tb = {**FAST, "eval_images": 8}
    rng = np.random.default_rng(0)
    cm = ConfusionMatrix(len(CLASS_NAMES))
    for i in range(tb["eval_images"]):
        label = scene_at(tb["eval_seed"], i, "eval", SceneConfig(size=tb["scene_px"])).label
        for _ in range(8):
            cm.update(torch.from_numpy(rng.integers(0, len(CLASS_NAMES), label.shape)), torch.from_numpy(label))
    iou = cm.iou()
    present = cm.matrix.sum(1) > 0  # the formula averages over the classes in the truth
    assert chance(tb)["miou"] == pytest.approx(float(iou[present].mean() * 100), abs=0.1)


def test_scene_confusions_sum_to_the_split_miou_and_bootstrap_brackets_it():
    import numpy as np
    import torch

    from pipelines.synth.scoring import bootstrap_interval, group_miou, miou
    from pixelclip.eval.miou import ConfusionMatrix

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 5, (40, 8, 8))
    pred = np.where(rng.random((40, 8, 8)) < 0.6, truth, rng.integers(0, 5, (40, 8, 8)))
    confs = np.stack([np.bincount(t.ravel() * 5 + p.ravel(), minlength=25).reshape(5, 5)
                      for t, p in zip(truth, pred, strict=True)])
    cm = ConfusionMatrix(5)
    cm.update(torch.from_numpy(pred), torch.from_numpy(truth))
    assert abs(miou(confs.sum(0)) - cm.miou() * 100) < 1e-9
    assert abs(group_miou(confs.sum(0), [0, 1, 2, 3, 4]) - miou(confs.sum(0))) < 1e-9
    lo, hi = bootstrap_interval([confs], n=300)
    assert lo < miou(confs.sum(0)) < hi and hi - lo < 20
    wide = bootstrap_interval([confs[:8]], n=300)
    assert wide[1] - wide[0] > hi - lo  # fewer scenes: a wider interval


def _confs(acc: float, seed: int, n: int = 30, C: int = 4) -> np.ndarray:
    """[n, C, C] confusions of scenes labelled at random, predicted right with probability `acc`."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, C, (n, 6, 6))
    pred = np.where(rng.random((n, 6, 6)) < acc, truth, rng.integers(0, C, (n, 6, 6)))
    return np.stack([np.bincount(t.ravel() * C + p.ravel(), minlength=C * C).reshape(C, C)
                     for t, p in zip(truth, pred, strict=True)])


def test_goals_from_the_final_checkpoints_scene_by_scene():
    """Five PixelCLIP seeds well above the start and a collapsed no-clustering: the two headline goals hold
    on both splits; an ablation equal to PixelCLIP is not decided; one with two seeds says so."""
    from pipelines.synth.report import goal_lines, goals, pilot_lines
    from pipelines.synth.scoring import summarize_final

    splits = {"eval": 1, "eval2": 3}

    def model(acc, seed):
        return {"maskclip": {s: _confs(acc, seed * 10 + k) for k, s in enumerate(splits)}}

    start = {**model(0.3, 99), "sclip": model(0.35, 98)["maskclip"]}
    trials = [({"variant": "pixelclip", "seed": s, "clusters": None},
               {**model(0.8, s), "sclip": model(0.75, s + 50)["maskclip"]}) for s in range(5)]
    trials += [({"variant": "no-clustering", "seed": s, "clusters": None}, model(0.05, s + 20)) for s in range(5)]
    trials += [({"variant": "fixed-names", "seed": s, "clusters": None}, model(0.8, s + 30)) for s in range(3)]
    trials += [({"variant": "no-momentum", "seed": s, "clusters": None}, model(0.8, s + 40)) for s in range(2)]
    trials += [({"variant": "pixelclip", "seed": 0, "clusters": 6}, model(0.5, 60))]
    final = summarize_final(start, trials, {"stuff": [0, 1], "things": [2, 3]}, splits, n_boot=200)
    assert set(final["variants"]) == {"pixelclip", "no-clustering", "fixed-names", "no-momentum"}  # K sweep apart
    pc = final["variants"]["pixelclip"]["eval"]
    lo, hi = pc["miou"]["interval"]
    assert pc["miou"]["n"] == 5 and lo <= pc["miou"]["mean"] <= hi
    assert pc["vs_start"]["miou"]["interval"][0] > 0  # the gain's interval excludes zero
    g = {x["goal"].split(" (")[0]: x for x in goals(final)}
    beat = g["PixelCLIP beats the starting CLIP"]
    assert beat["holds"] is True and all(r["seeds_above"] == 5 and r["ratio"] > 1.3 for r in beat["splits"].values())
    assert g["without semantic clustering ends below PixelCLIP by more than the larger spread"]["holds"] is True
    names = g["learnable class prompts vs fixed class names"]["splits"]["eval"]
    assert names["holds"] is None and names["n"] == 3
    assert g["the momentum encoder vs none"]["splits"]["eval2"]["verdict"] == "not decided: 2 seed(s)"
    # the same five seeds, but one below the start: the goal does not hold
    low = [(m, model(0.1, 70) if m["variant"] == "pixelclip" and m["seed"] == 4 and m["clusters"] is None else c)
           for m, c in trials]
    worse = summarize_final(start, low, {"stuff": [0, 1], "things": [2, 3]}, splits, n_boot=50)
    assert goals(worse)[0]["holds"] is False
    pilots = [{"name": "warmup", "date": "2026-12-02 10:00", "steps": 60, "results": {
        "warm50/0": {"val_miou": {"0": 10.0, "30": 12.0, "60": 11.0}, "things": {"60": 5.0}, "stuff": {"60": 20.0}},
        "x1/0": {"val_miou": {}, "things": {}, "stuff": {}, "error": "boom"}}}]
    text = "\n".join(goal_lines({"final": final, "goals": goals(final)}) + pilot_lines({"pilots": pilots}))
    assert "| starting CLIP, sclip readout |" in text and "| pixelclip, sclip readout |" in text
    assert "10.0 -> 11.0 (12.0 at 30)" in text and "failed: boom" in text


def test_eval_seeds_flag_takes_two_integers(capsys):
    from pipelines.cli import parser

    assert parser().parse_args(["synth-bench", "--eval-seeds", "4,5"]).eval_seeds == (4, 5)
    for bad in ("1", "a,b", "1,2,3"):
        with pytest.raises(SystemExit):
            parser().parse_args(["synth-bench", "--eval-seeds", bad])
        assert "--eval-seeds" in capsys.readouterr().err
