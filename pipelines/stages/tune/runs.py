"""The MLflow side of a sweep (`pipelines.stages.tune.sweep`): the parent run, closing each trial's child run as
Tune ends it, and registering the best trial's model."""

from __future__ import annotations

import dataclasses
import json

from pipelines import storage
from pipelines.stages.train.checkpoints import latest_checkpoint
from pipelines.stages.train.driver import log_final_model


def sweep_run(job) -> str | None:
    """The sweep's parent MLflow run: found by its tag (a resumed sweep logs into it) or created."""
    uri, experiment = job.train.tracking_uri, job.train.experiment
    if not uri:
        return None
    import mlflow

    from pipelines.mlflow_client import check_tracking

    check_tracking(uri)
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    found = client.search_runs([exp_id], filter_string=f"tags.`pixelclip.sweep_parent` = '{job.name}'",
                               max_results=1)
    if found:
        return found[0].info.run_id
    run = client.create_run(exp_id, run_name=job.name, tags={"pixelclip.sweep_parent": job.name})
    params = {"tune.search": json.dumps(job.search), "tune.variants": json.dumps(job.variants)[:6000],
              "tune.metric": job.metric, "tune.mode": job.mode,
              "tune.scheduler": job.scheduler, "tune.num_samples": job.num_samples,
              "tune.grace_period": job.grace_period, "tune.reduction_factor": job.reduction_factor,
              "tune.train.workers": job.train.workers, "tune.train.data": job.train.data,
              "tune.max_failures": job.max_failures}
    for k, v in params.items():
        client.log_param(run.info.run_id, k, str(v)[:6000])
    return run.info.run_id


def trial_closer(job, parent_run_id: str | None):
    """A Tune callback (driver side) that closes each trial's MLflow run as the trial ends: Tune
    stops trials from outside (ASHA, and at the last step), so the trial cannot close it itself."""
    from ray import tune

    steps = job.steps

    class TrialCloser(tune.Callback):
        def _close(self, trial, status: str | None) -> None:
            if not parent_run_id:
                return
            import mlflow

            client = mlflow.MlflowClient(job.train.tracking_uri)
            exp_id = client.get_run(parent_run_id).info.experiment_id
            runs = client.search_runs([exp_id], filter_string=f"tags.`pixelclip.run` = '{job.name}-{trial.trial_id}'")
            step = (trial.last_result or {}).get("step")
            status = status or ("FINISHED" if step == steps else "KILLED")
            print(f"trial {trial.trial_id}: {status.lower()} at step {step} of {steps}", flush=True)
            for run in runs:
                if run.info.status == "RUNNING":
                    client.set_tag(run.info.run_id, "pixelclip.stopped_early", str(step != steps).lower())
                    client.set_terminated(run.info.run_id, status)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._close(trial, None)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._close(trial, "FAILED")

    return TrialCloser()


def close_children(client, parent_run_id: str, rows: list[dict], job) -> dict[str, str]:
    """Mark child runs of trials that ASHA stopped as KILLED; map trial id -> MLflow run id."""
    exp_id = client.get_run(parent_run_id).info.experiment_id
    runs = client.search_runs([exp_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
                              max_results=1000)
    by_trial = {r.data.tags.get("pixelclip.trial"): r for r in runs}
    for row in rows:
        run = by_trial.get(row["trial_id"])
        if run is not None and run.info.status == "RUNNING":
            client.set_tag(run.info.run_id, "pixelclip.stopped_early", str(not row["complete"]).lower())
            client.set_terminated(run.info.run_id, "FINISHED" if row["complete"] else "KILLED")
    return {t: r.info.run_id for t, r in by_trial.items()}


def register_best(job, best: dict, run_id: str, parent_run_id: str, client, opts) -> str | None:
    """Log the best trial's final model to its run, register it, point the alias at it (once)."""
    from pipelines.registry import set_alias

    tags = client.get_run(parent_run_id).data.tags
    if "pixelclip.registered_version" in tags:  # a resumed, already finished sweep: nothing new
        return tags["pixelclip.registered_version"]
    trial_job = dataclasses.replace(job.trial_job(best["config"], best["trial_id"], parent_run_id),
                                    register_as=job.register_as)
    final = latest_checkpoint(storage.join(trial_job.storage, trial_job.name), opts)
    if final is None:
        raise RuntimeError(f"sweep {job.name}: best trial {best['trial_id']} has no checkpoint in storage")
    version = log_final_model(job.train.tracking_uri, run_id, final, trial_job, opts)
    if version is not None:
        set_alias(job.register_as, job.alias, version, client)
        client.set_tag(parent_run_id, "pixelclip.registered_version", version)
    return version
