"""Stage `tune`: a Ray Tune sweep over the training stage (the paper's Tables 3b and 3c).

    pixelclip tune --data s3://data/ready/ --storage s3://data/sweeps --name k-and-l --preset tiny \\
        --search prompts.num_clusters=8,16,32 --search prompts.length=2,4,8 --register-as pixelclip

Each trial is a whole `pipelines.stages.train.driver` run (its own Ray Train `TorchTrainer` with DDP workers) on a
configuration from the search space; Ray Train's reports reach Tune through `TuneReportCallback`, and
ASHA stops trials that fall behind at `grace_period`, `grace_period * reduction_factor`, ... steps.
Search values: `key=a,b,c` is a grid; `key=uniform(a,b)`, `loguniform(a,b)` or `randint(a,b)` draw
`num_samples` values. Any dotted config field can be searched (`cluster.epsilon`, `momentum.gamma`).

Layout in storage: the Tune experiment in `storage/name/`, each trial's training run (checkpoints)
in `storage/name/runs/name-<trial id>/`. In MLflow the sweep is one parent run (tag
`pixelclip.sweep`) and each trial a child run. Running the same `--name` again resumes the sweep:
finished trials are kept, interrupted ones continue from their last checkpoint. At the end the best
complete trial's model is logged to its run and registered, and `alias` points at it.

The default metric `loss_rel` is label-free: the training loss divided by that of a predictor that
knows only that one of K clusters is right, so runs with different K compare. It is a proxy; a
labelled validation metric is what the paper selects K by: with `--validate` every trial measures
zero-shot mIoU on a labelled split while it trains, and `--metric val_miou --metric-mode max` selects by it.
"""

from __future__ import annotations

import json
import os
from typing import Any

from pipelines import storage
from pipelines.ray_leftovers import released
from pipelines.stages.train.driver import build_trainer, finish_run
from pipelines.stages.train.progress import send_pending_metrics
from pipelines.stages.tune.job import DIST, VARIANT, TuneJobConfig
from pipelines.stages.tune.runs import close_children, register_best, sweep_run, trial_closer


def param_space(search: dict, variants: dict | None = None) -> dict:
    """Tune's search space: grids for lists, Tune distributions for `uniform(a,b)` and the like, and a
    grid over the names of `variants`."""
    from ray import tune

    space = {VARIANT: tune.grid_search(list(variants))} if variants else {}
    for key, values in search.items():
        if isinstance(values, list):
            space[key] = tune.grid_search(values)
        else:
            kind, lo, hi = DIST.match(values).groups()
            space[key] = (tune.randint(int(float(lo)), int(float(hi))) if kind == "randint"
                          else getattr(tune, kind)(float(lo), float(hi)))
    return space


def _trial(config: dict, sweep: dict) -> None:
    """One trial: the training stage with this trial's values; its reports go to Tune."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    job_cfg: TuneJobConfig = sweep["job"]
    trial_id = ray.tune.get_context().get_trial_id()
    job = job_cfg.trial_job(config, trial_id, sweep["parent_run_id"])
    trainer, loop = build_trainer(job, sweep["opts"], callbacks=[TuneReportCallback()])
    result = trainer.fit()  # a failure or a stop (ASHA, Ctrl+C) is recorded by `_trial_closer`
    send_pending_metrics(loop, sweep["opts"])  # what an MLflow outage held back
    if result.error:
        raise result.error
    finish_run(loop, "FINISHED")


def _trial_dirname(trial) -> str:
    return trial.trial_id  # so a result's path names its trial, reported or not


def default_concurrency(job: TuneJobConfig) -> int:
    """Trials that fit side by side: each needs its workers plus a CPU for Ray Data to feed them."""
    import ray

    res = ray.cluster_resources()
    t = job.train
    n = int(res.get("CPU", 0) // (t.workers * t.cpus_per_worker + 1))
    use_gpu = bool(res.get("GPU", 0)) if t.use_gpu is None else t.use_gpu
    if use_gpu:
        n = min(n, int(res.get("GPU", 0) // t.workers))
    return max(n, 1)


def _scheduler(job: TuneJobConfig, steps: int):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if job.scheduler == "fifo":
        return FIFOScheduler()
    grace = job.grace_period or max(job.train.log_every, steps // 4)
    return ASHAScheduler(time_attr="step", max_t=steps, grace_period=grace, reduction_factor=job.reduction_factor)


def build_tuner(job: TuneJobConfig, opts: storage.StorageOptions | None = None, parent_run_id: str | None = None):
    """A Ray Tune `Tuner` for the sweep: restored from storage when the sweep exists there."""
    from ray import tune

    opts = opts or storage.StorageOptions.from_env()
    steps = job.steps
    trainable = tune.with_resources(
        tune.with_parameters(_trial, sweep={"job": job, "opts": storage.for_ray(opts),
                                            "parent_run_id": parent_run_id}),
        {"CPU": 0.1})  # the trial only drives its trainer; its workers hold the resources
    fs, path = storage.arrow_fs(job.storage, opts, with_keys=False)  # Tune pickles it into its state
    experiment = f"{path.rstrip('/')}/{job.name}"
    if tune.Tuner.can_restore(experiment, storage_filesystem=fs):
        return tune.Tuner.restore(experiment, trainable, resume_unfinished=True, resume_errored=True,
                                  param_space=param_space(job.search, job.variants), storage_filesystem=fs), True
    tuner = tune.Tuner(
        trainable,
        param_space=param_space(job.search, job.variants),
        tune_config=tune.TuneConfig(metric=job.metric, mode=job.mode, scheduler=_scheduler(job, steps),
                                    num_samples=job.num_samples, trial_dirname_creator=_trial_dirname,
                                    max_concurrent_trials=job.max_concurrent or default_concurrency(job)),
        run_config=tune.RunConfig(name=job.name, storage_path=path, storage_filesystem=fs,
                                  failure_config=tune.FailureConfig(max_failures=job.max_failures), verbose=1,
                                  callbacks=[trial_closer(job, parent_run_id)]),
    )
    return tuner, False


def trial_rows(experiment_path: str, job: TuneJobConfig, opts, results=None) -> list[dict]:
    """One row per trial of the saved sweep: its values, last step and metric, whether it reached
    the last step, its Tune status (RUNNING / PENDING ones are unfinished: the sweep was
    interrupted) and its error."""
    from ray.tune import ExperimentAnalysis

    steps = job.steps
    fs, _ = storage.arrow_fs(job.storage, opts, with_keys=False)
    errors = {r.path.rstrip("/").rsplit("/", 1)[-1]: r.error for r in results or [] if r.error}
    rows = []
    for t in ExperimentAnalysis(experiment_path, storage_filesystem=fs).trials:
        m = t.last_result or {}
        error = errors.get(t.trial_id) or (f"trial failed, see {t.path}" if t.status == "ERROR" else None)
        keys = [*([VARIANT] if job.variants else []), *job.search]
        rows.append({"trial_id": t.trial_id, "config": {k: t.config.get(k) for k in keys},
                     "step": m.get("step"), job.metric: m.get(job.metric), "complete": m.get("step") == steps,
                     "status": t.status, "error": repr(error) if isinstance(error, Exception) else error})
    return rows


def best_trial(rows: list[dict], job: TuneJobConfig) -> dict:
    """The best trial among those that reached the last step (ASHA stops the others early)."""
    done = [r for r in rows if r["complete"] and r["error"] is None and r[job.metric] is not None]
    if not done:
        raise RuntimeError(f"sweep {job.name}: no trial reached the last step without error: {rows}")
    pick = min if job.mode == "min" else max
    return pick(done, key=lambda r: r[job.metric])


def check_weights_on_driver(job: TuneJobConfig, opts) -> None:
    """Every weights file the trials will open (backbone, DINO), checked once before any trial starts;
    local paths become absolute, so that trials on any node find them."""
    from pipelines.weights import check_weights, driver_model
    from pixelclip.config import config_from_dict

    job.train.model = config_from_dict(driver_model(job.train.model.to_dict(), opts))
    masks = job.train.masks
    if masks.source == "dino" and masks.weights:
        masks.weights = check_weights(masks.weights, "tune.train.masks.weights", opts)


def run_tune(job: TuneJobConfig, opts: storage.StorageOptions | None = None) -> dict:
    """Run (or resume) the sweep; returns the trials, the best one and the registered version.

    The storage keys must be in the environment of the driver and of the Ray job (see
    `check_keys_from_environment`); `pixelclip tune` passes them to its Ray job itself."""
    job.train.tracking_uri = job.train.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    job.validate()
    opts = opts or storage.StorageOptions.from_env()
    storage.for_ray(opts)  # the trials read the keys from their node's environment, never from the sweep
    storage.check_writable(job.storage, opts)
    check_weights_on_driver(job, opts)
    parent = sweep_run(job)
    with storage.keys_in_a_file(), released():  # Tune would copy the keys into every trial's runtime env
        tuner, resumed = build_tuner(job, opts, parent)  # its filesystem reads the keys from that file
        results = tuner.fit()  # `released`: no placement group or actor of a stopped trial outlives it
    rows = trial_rows(results.experiment_path, job, opts, results)
    out: dict[str, Any] = {"name": job.name, "resumed": resumed, "trials": rows, "parent_run_id": parent,
                           "experiment_path": results.experiment_path, "best": None, "registered_version": None,
                           "interrupted": [r["trial_id"] for r in rows if r["status"] not in ("TERMINATED", "ERROR")]}
    if out["interrupted"]:  # Ctrl+C: Tune saved its state; the same command resumes the sweep
        return out
    client = None
    if parent:
        import mlflow

        client = mlflow.MlflowClient(job.train.tracking_uri)
        run_ids = close_children(client, parent, rows, job)
        for row in rows:
            row["mlflow_run_id"] = run_ids.get(row["trial_id"])
    try:
        best = out["best"] = best_trial(rows, job)
    except RuntimeError:
        if client is not None:
            client.set_terminated(parent, "FAILED")
        raise
    if client is not None:
        client.log_dict(parent, {"trials": rows, "best": best}, "sweep.json")
        client.log_metric(parent, f"best_{job.metric}", float(best[job.metric]))
        client.set_tag(parent, "pixelclip.best_trial", best["trial_id"])
        if job.register_as:
            out["registered_version"] = register_best(job, best, run_ids[best["trial_id"]], parent, client, opts)
        client.set_terminated(parent, "FINISHED")
    return out


def format_summary(out: dict, metric: str) -> str:
    """The sweep as a small table: one line per trial, the best marked."""
    lines = [f"sweep {out['name']}" + (" (resumed)" if out["resumed"] else "")]
    if out.get("interrupted"):
        lines.append(f"interrupted with {len(out['interrupted'])} trial(s) unfinished: run the same command "
                     "again to resume the sweep")
    for r in sorted(out["trials"], key=lambda r: str(r["trial_id"])):
        mark = "*" if out["best"] and r["trial_id"] == out["best"]["trial_id"] else " "
        value = r.get(metric)
        value = f"{value:.4f}" if isinstance(value, float) else str(value)
        lines.append(f"{mark} {r['trial_id']}  {json.dumps(r['config'])}  step {r['step']}  {metric} {value}"
                     + ("" if r["complete"] else "  (stopped early)") + (f"  error {r['error']}" if r["error"] else ""))
    if out.get("registered_version"):
        lines.append(f"registered version {out['registered_version']}")
    return "\n".join(lines)
