"""Stage `train`: data-parallel PixelCLIP fine-tuning with Ray Train (V2) on training-ready shards.

    pixelclip train --data s3://data/ready/ --storage s3://runs/ --name vitb16-sa1b --preset vit_b16 --workers 4
    pixelclip train --data s3://data/ready/ --storage s3://runs/ --name tiny --preset tiny --workers 2 --steps 50

Each worker builds the model from the same configuration (so replicas start identical), wraps it in
DDP (gloo on CPU, NCCL on GPU; bf16 autocast on GPU), streams its share of the shards through
`pipelines.stages.train.reader` (`ray.train.get_dataset_shard`) and runs `pixelclip.Trainer` steps; the Sinkhorn
sums are all-reduced inside the step, so clustering is global over the whole batch. Every
`checkpoint_every` steps rank 0 writes a safetensors checkpoint (model, teacher, prompts, decoder,
optimiser, scheduler, step, RNG state) that Ray Train uploads to `storage/name/`. A worker that dies
is replaced and training resumes from the last checkpoint (`FailureConfig`); running the same
`--name` again resumes the run.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from pipelines import storage
from pipelines.ray_leftovers import sigint_restored
from pipelines.stages.train import loop
from pipelines.stages.train.checkpoints import CHECKPOINT_FILE, latest_checkpoint
from pipelines.stages.train.job import LoopConfig, TrainJobConfig
from pipelines.stages.train.progress import send_pending_metrics

log = logging.getLogger("pixelclip.train")


def build_trainer(job: TrainJobConfig, opts: storage.StorageOptions | None = None, callbacks: list | None = None):
    """(Ray Train `TorchTrainer`, its loop config) for the job. Checks storage, data and the MLflow
    server before any worker starts. `callbacks`: Ray Train callbacks (a sweep passes Tune's)."""
    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from pipelines.stages.train.online_masks import OnlineMasks
    from pipelines.stages.train.reader import training_dataset
    from pipelines.weights import driver_model
    from pixelclip.config import config_from_dict

    job.validate()
    opts = opts or storage.StorageOptions.from_env()
    # weights checked and absolute, the name the one built
    job.model = cfg = config_from_dict(driver_model(job.model.to_dict(), opts))
    storage.check_writable(job.storage, opts)
    resources = ray.cluster_resources()
    use_gpu = bool(resources.get("GPU", 0)) if job.use_gpu is None else job.use_gpu
    masks = job.masks
    online = OnlineMasks(masks, job.workers, use_gpu, opts, seed=cfg.seed) if masks.source == "dino" else None
    ds = training_dataset(job.data, cfg, opts, seed=job.seed, online=online)
    held = job.workers * job.cpus_per_worker + (online.cpus if online else 0.0)
    if held >= resources.get("CPU", 0):
        actors = f" and {online.actors} DINO actors x {masks.cpus_per_actor} CPU" if online and online.cpus else ""
        raise ValueError(f"{job.workers} workers x {job.cpus_per_worker} CPU{actors} leave no CPU of the cluster's "
                         f"{resources.get('CPU', 0):g} for Ray Data to feed them: lower train.workers, "
                         "train.cpus_per_worker" + (" or train.masks.actors" if actors else ""))
    per_worker = {"CPU": job.cpus_per_worker}
    if use_gpu and online is not None:  # each DINO actor shares a worker's GPU
        per_worker["GPU"] = online.worker_gpu
    fs, path = storage.arrow_fs(job.storage, storage.for_ray(opts), with_keys=False)  # Ray pickles it
    tracking_uri = job.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    loop_config = LoopConfig(model=cfg, data=job.data, run_uri=storage.join(job.storage, job.name),
                             log_every=job.log_every, checkpoint_every=job.checkpoint_every,
                             precision=job.precision, validation=job.validation, tracking_uri=tracking_uri,
                             run_id=mlflow_run(job, tracking_uri))
    return TorchTrainer(
        loop.train_loop_per_worker,
        train_loop_config={"loop": loop_config},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=job.workers, use_gpu=use_gpu,
                                               resources_per_worker=per_worker, placement_strategy=job.placement),
        run_config=ray.train.RunConfig(
            name=job.name, storage_path=path, storage_filesystem=fs,
            failure_config=ray.train.FailureConfig(max_failures=job.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=3), callbacks=callbacks,
            worker_runtime_env={"env_vars": worker_env(opts, tracking_uri)},
            # Ray Train's own INFO lines (every report, every checkpoint) stay in its session files, so
            # the console shows the progress lines
            logging_config=ray.train.LoggingConfig(log_level="WARNING")),
        datasets={"train": ds},
    ), loop_config


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def mlflow_run(job: TrainJobConfig, tracking_uri: str | None) -> str | None:
    """The MLflow run of this training run: found by its name (so a resumed or restarted run logs
    into the same MLflow run, never a duplicate) or created with the configuration as parameters.
    Fails fast when the server cannot be reached."""
    if not tracking_uri:
        return None
    import mlflow
    from mlflow.entities import Param

    from pipelines.mlflow_client import check_tracking

    check_tracking(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(job.experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(job.experiment)
    found = client.search_runs([exp_id], filter_string=f"tags.`pixelclip.run` = '{job.name}'", max_results=1)
    if found:  # resumed: the run is running again until this attempt ends
        if found[0].info.status != "RUNNING":
            client.update_run(found[0].info.run_id, status="RUNNING")
        return found[0].info.run_id
    tags = {**job.tags, "pixelclip.run": job.name}
    if job.parent_run_id:
        tags["mlflow.parentRunId"] = job.parent_run_id
    run = client.create_run(exp_id, run_name=job.name, tags=tags)
    params = {**_flatten(job.model.to_dict(), "model."), "train.workers": job.workers, "train.data": job.data,
              "train.storage": job.storage, "train.checkpoint_every": job.checkpoint_every}
    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=items[i:i + 100])
    return run.info.run_id


def worker_env(opts: storage.StorageOptions, tracking_uri: str | None) -> dict:
    """The endpoint, region and tracking URI for the workers' runtime environment. Never the keys:
    Ray writes runtime environments into its logs and `ray list ... --detail`, so the workers read
    the keys from their node's environment (`storage.for_ray`)."""
    o = storage.for_ray(opts)
    pairs = {"AWS_ENDPOINT_URL": o.endpoint_url, "AWS_REGION": o.region, "MLFLOW_TRACKING_URI": tracking_uri}
    return {k: v for k, v in pairs.items() if v}


def run_train(job: TrainJobConfig, opts: storage.StorageOptions | None = None) -> dict:
    """Fit and return a summary: final metrics, checkpoint path, the run's storage path, MLflow run."""
    trainer, config = build_trainer(job, opts)
    try:
        with sigint_restored():  # else Ray Train's handler keeps the controller and its actors alive
            result = trainer.fit()
    except Exception:
        send_pending_metrics(config, opts)
        finish_run(config, "FAILED")
        raise
    opts = opts or storage.StorageOptions.from_env()
    send_pending_metrics(config, opts)
    final = latest_checkpoint(config.run_uri, opts)
    version = None
    if config.run_id and final and not result.error:
        version = log_final_model(config.tracking_uri, config.run_id, final, job, opts)
    finish_run(config, "FAILED" if result.error else "FINISHED")
    return {"metrics": result.metrics, "checkpoint": final, "path": result.path,
            "error": repr(result.error) if result.error else None, "mlflow_run_id": config.run_id,
            "registered_version": version}


def log_final_model(tracking_uri: str, run_id: str, checkpoint_uri: str, job: TrainJobConfig, opts) -> str | None:
    """Log the final checkpoint to the run as a pyfunc (+ safetensors + open_clip export); register it."""
    import mlflow

    from pipelines.registry import log_model

    mlflow.set_tracking_uri(tracking_uri)
    with tempfile.TemporaryDirectory() as d, mlflow.start_run(run_id=run_id):
        local = Path(d) / CHECKPOINT_FILE
        storage.download(checkpoint_uri, local, opts)  # with this job's credentials
        info = log_model(str(local), registered_model_name=job.register_as, config=job.model.to_dict())
    version = getattr(info, "registered_model_version", None)
    return str(version) if version is not None else None


def finish_run(config: LoopConfig, status: str) -> None:
    if config.run_id:
        import mlflow

        mlflow.MlflowClient(config.tracking_uri).set_terminated(config.run_id, status)


def summary_json(summary: dict) -> str:
    return json.dumps(summary, indent=2, default=str)
