"""Ray Train fine-tuning end to end: two CPU workers, real SeaweedFS, checkpoints, a killed worker."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import torch

import pixelclip
from pipelines import storage
from pipelines.ray_leftovers import live_actors
from pipelines.stages.train.driver import run_train
from pipelines.stages.train.job import TrainJobConfig
from pipelines.stages.train.reader import iter_batches, training_dataset
from pixelclip.io import load_pixelclip

pytestmark = pytest.mark.slow


def _model(steps: int) -> dict:
    cfg = pixelclip.load_config("tiny", [f"optim.steps={steps}", "optim.batch_size=4", "data.resize_short=64",
                                         "data.crop=48"])
    return cfg.to_dict()


def _checkpoint_steps(name: str, opts) -> list[int]:
    files = storage.list_files(f"s3://data/runs/{name}/", (".safetensors",), opts)
    return sorted(int(f.split("step_")[1].split("/")[0]) for f in files if "step_" in f)


def _eval_loss(task, batch) -> float:
    task.eval()
    with torch.no_grad():
        return float(task(**batch).loss)


def _final_meta(name: str, step: int, opts, tmp_path):
    local = tmp_path / f"{name}-{step}.safetensors"
    storage.download(f"s3://data/runs/{name}/step_{step:08d}/checkpoint.safetensors", local, opts)
    return load_pixelclip(local)


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:  # "pid (comm) state ppid ...": comm may hold spaces
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _train_worker_pids() -> list[int]:
    """The Ray Train workers of this session's Ray (descendants of this process: `ray_local` started its
    raylet), never those of another Ray on the same machine (a second suite, a user's stack)."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
            if "RayTrainWorker" not in cmd:
                continue
            up = int(pid)
            while up > 1 and up != os.getpid():
                up = _parent(up)
        except (OSError, ValueError, IndexError):
            continue
        if up == os.getpid():
            pids.append(int(pid))
    return sorted(pids)


def _mlflow_runs(uri: str, name: str):
    import mlflow

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("pixelclip")
    return client, client.search_runs([exp.experiment_id], filter_string=f"tags.`pixelclip.run` = '{name}'")


@pytest.mark.timeout(1200)  # about 2 min alone; beside two other heavy jobs the first checkpoint took over 4 min
def test_killed_worker_is_replaced_training_resumes_and_resumes_again_by_name(store, ray_local, ready, tmp_path,
                                                                              mlflow_server):
    """Two DDP workers; one is killed mid-run: it is replaced and the run resumes from its last checkpoint
    in the same MLflow run. The model learned (its loss on a fixed batch below a fresh model's). The same
    name again with more steps resumes from the end instead of starting over."""
    total, before = 20, signal.getsignal(signal.SIGINT)  # one epoch of `ready` per worker: no second pass
    job = TrainJobConfig(data=ready, storage="s3://data/runs", name="tiny-kill", model=_model(total), workers=2,
                         checkpoint_every=4, log_every=2, max_failures=2, seed=0,
                         tracking_uri=mlflow_server.tracking_uri, register_as="pixelclip-train-test")
    result = {}

    def target():
        try:
            result.update(run_train(job, store))
        except Exception as e:
            result["exception"] = repr(e)

    thread = threading.Thread(target=target)
    thread.start()
    deadline = time.time() + 600
    while time.time() < deadline and not _checkpoint_steps("tiny-kill", store):
        time.sleep(0.5)
    assert _checkpoint_steps("tiny-kill", store), "no checkpoint appeared"
    victims = _train_worker_pids()
    assert victims, "no RayTrainWorker process found"
    os.kill(victims[-1], signal.SIGKILL)
    at_kill = _checkpoint_steps("tiny-kill", store)[-1]
    assert at_kill < total, "training finished before the worker was killed"
    thread.join(timeout=400)
    assert not thread.is_alive()
    assert "exception" not in result, result["exception"]
    assert result["error"] is None and result["metrics"]["step"] == total
    steps = _checkpoint_steps("tiny-kill", store)
    assert steps[-1] == total and all(s % 4 == 0 for s in steps)
    resumed = _final_meta("tiny-kill", total, store, tmp_path)[1]["extra"]["resumed_at"]
    assert len(resumed) == 1 and at_kill <= resumed[0] < total and resumed[0] % 4 == 0  # a checkpoint, not 0
    # one MLflow run (the restart logged into it), its loss logged at every step of the schedule
    client, runs = _mlflow_runs(mlflow_server.tracking_uri, "tiny-kill")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED" and result["mlflow_run_id"] == runs[0].info.run_id
    assert runs[0].data.params["model.optim.steps"] == str(total)
    steps = {m.step for m in client.get_metric_history(runs[0].info.run_id, "loss")}
    assert steps == set(range(2, total + 1, 2))
    # the final model is registered from this run
    assert result["registered_version"] == "1"
    version = client.get_model_version("pixelclip-train-test", "1")
    assert version.run_id == runs[0].info.run_id
    # the loss falls: the fine-tuned model against a fresh one on the same fixed batch
    cfg = job.model
    batch = next(iter_batches(training_dataset(ready, cfg, store, seed=1), 4))
    tuned, _ = _final_meta("tiny-kill", total, store, tmp_path)
    assert _eval_loss(tuned, batch) < _eval_loss(pixelclip.build_pixelclip(cfg), batch)
    # the same name again, with more steps, resumes from the last step instead of starting over
    again = run_train(TrainJobConfig(**{**job.__dict__, "model": _model(total + 4), "register_as": None}), store)
    assert again["error"] is None and again["metrics"]["step"] == total + 4
    assert _checkpoint_steps("tiny-kill", store)[-1] == total + 4
    assert _final_meta("tiny-kill", total + 4, store, tmp_path)[1]["extra"]["resumed_at"] == [*resumed, total]
    # a fit on the main thread leaves no controller or Data actor behind (Ray Train's SIGINT handler
    # held the controller's handle) and Ctrl+C is the caller's again
    assert signal.getsignal(signal.SIGINT) is before
    deadline = time.time() + 60
    while live_actors() and time.time() < deadline:
        time.sleep(0.5)
    assert live_actors() == {}
