"""Ray Tune sweeps over the training stage: search parsing and validation, and a real sweep of four
tiny trials with ASHA that is interrupted (Ctrl+C), resumed by name, and registers its best."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time

import pytest

import pixelclip
from pipelines.ray_leftovers import live_actors, live_groups
from pipelines.stages.train.loop import uninformed_loss
from pipelines.stages.tune.job import TuneJobConfig, parse_search
from pipelines.stages.tune.sweep import best_trial, param_space, run_tune
from pipelines.storage import StorageError
from pixelclip.config import ConfigError
from tests.leaks import file_hits, mlflow_hits, ray_sessions, ray_state_hits


def _model(steps: int = 12, length: int | None = None) -> dict:
    extra = [] if length is None else [f"prompts.length={length}"]
    return pixelclip.load_config("tiny", [f"optim.steps={steps}", "optim.batch_size=4", "data.resize_short=64",
                                          "data.crop=48", *extra]).to_dict()


def _job(train: dict | None = None, **kw) -> TuneJobConfig:
    base = dict(storage="s3://data/sweeps", name="sweep", search={"prompts.num_clusters": [4, 8]},
                train={"data": "s3://data/train-ready/", "model": _model(), **(train or {})})
    return TuneJobConfig(**{**base, **kw})


def test_parse_search_grids_and_distributions():
    got = parse_search(["prompts.num_clusters=8,16,32", "cluster.epsilon=loguniform(0.01, 0.1)",
                        "momentum.gamma=0.99,0.999"])
    assert got == {"prompts.num_clusters": [8, 16, 32], "cluster.epsilon": "loguniform(0.01, 0.1)",
                   "momentum.gamma": [0.99, 0.999]}
    with pytest.raises(ValueError, match=r"section\.field=a,b,c"):
        parse_search(["prompts.num_clusters"])
    with pytest.raises(ValueError, match=r"no value for prompts\.length"):
        parse_search(["prompts.length=,"])


def test_param_space_uses_tune_domains():
    from ray.tune.search.sample import Float, Integer

    space = param_space({"prompts.length": [2, 4], "cluster.epsilon": "loguniform(0.01,0.1)",
                         "prompts.num_clusters": "randint(4,9)"})
    assert space["prompts.length"] == {"grid_search": [2, 4]}
    assert isinstance(space["cluster.epsilon"], Float) and space["cluster.epsilon"].lower == 0.01
    assert isinstance(space["prompts.num_clusters"], Integer) and space["prompts.num_clusters"].upper == 9


@pytest.mark.parametrize("search, message", [
    ({"prompts.num_clusterz": [4]}, "unknown field prompts.num_clusterz"),
    ({"prompts.num_clusters": [4, 1]}, "prompts.num_clusters"),
    ({"cluster.epsilon": "loguniform(0,1)"}, "tune.search.cluster.epsilon"),
    ({"cluster.epsilon": "normal(0,1)"}, "tune.search.cluster.epsilon"),
    ({}, "tune.search is empty"),
])
def test_bad_search_names_the_field(search, message):
    with pytest.raises((ValueError, ConfigError), match=message):
        _job(search=search).validate()


def test_bad_job_fields_are_named(monkeypatch):
    with pytest.raises(ValueError, match=r"tune\.mode"):
        _job(mode="best").validate()
    with pytest.raises(ValueError, match=r"tune\.grace_period"):
        _job(grace_period=13).validate()
    with pytest.raises(ValueError, match=r"train\.workers"):
        _job({"workers": 3}).validate()  # batch 4 does not split over 3 workers
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ValueError, match="needs an MLflow server"):
        _job(register_as="m").validate()
    with pytest.raises(ConfigError, match=r"tune\.train\.name is set per trial"):
        _job({"name": "mine"}).validate()


def test_trial_job_applies_values_and_names_the_run():
    job = _job().trial_job({"prompts.num_clusters": 8, "prompts.length": 2}, "abc_00001", "parent-id")
    assert job.model.to_dict()["prompts"] == {**_model()["prompts"], "num_clusters": 8, "length": 2}
    assert job.name == "sweep-abc_00001" and job.storage == "s3://data/sweeps/sweep/runs"
    assert job.parent_run_id == "parent-id" and job.tags == {"pixelclip.sweep": "sweep", "pixelclip.trial": "abc_00001"}


def test_best_trial_only_among_complete_trials():
    rows = [{"trial_id": "a", "complete": False, "error": None, "loss_rel": 0.1},
            {"trial_id": "b", "complete": True, "error": None, "loss_rel": 0.5},
            {"trial_id": "c", "complete": True, "error": None, "loss_rel": 0.3},
            {"trial_id": "d", "complete": True, "error": "boom", "loss_rel": 0.0}]
    assert best_trial(rows, _job())["trial_id"] == "c"
    assert best_trial(rows, _job(mode="max"))["trial_id"] == "b"
    with pytest.raises(RuntimeError, match="no trial reached the last step"):
        best_trial(rows[:1], _job())


def test_uninformed_loss_is_the_binary_entropy_of_one_in_k():
    assert uninformed_loss(2) == pytest.approx(math.log(2))
    k = 64
    assert uninformed_loss(k) == pytest.approx(-(math.log(1 / k) / k + (1 - 1 / k) * math.log(1 - 1 / k)))


def _children(client, parent: str):
    exp = client.get_experiment_by_name("pixelclip")
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")


@pytest.mark.slow
@pytest.mark.timeout(1200)  # about 3 min alone; a loaded machine has taken 10
def test_sweep_interrupted_resumes_and_registers_best(store, ray_local, ready, mlflow_server, tmp_path, monkeypatch):
    import mlflow
    import ray

    uri, t0 = mlflow_server.tracking_uri, time.time()
    args = ["--data", ready, "--storage", "s3://data/sweeps", "--name", "kl", "--preset", "tiny",
            "--set", "optim.steps=12", "--set", "optim.batch_size=4", "--set", "data.resize_short=64",
            "--set", "data.crop=48", "--search", "prompts.num_clusters=4,8", "--set", "prompts.length=2",
            "--grace-period", "4", "--log-every", "2", "--checkpoint-every", "4", "--register-as", "pixelclip-tune",
            "--max-concurrent", "1", "--address", ray.get_runtime_context().gcs_address]
    env = {**os.environ, "AWS_ENDPOINT_URL": store.endpoint_url, "AWS_ACCESS_KEY_ID": store.access_key,
           "AWS_SECRET_ACCESS_KEY": store.secret_key, "AWS_REGION": store.region, "MLFLOW_TRACKING_URI": uri}
    log = tmp_path / "tune.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "tune", *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    client = mlflow.MlflowClient(uri)
    # the first trial runs to the end (alone at every ASHA rung); interrupt the sweep after it
    deadline, first = time.time() + 600, None
    while time.time() < deadline and first is None and proc.poll() is None:
        parents = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                     filter_string="tags.`pixelclip.sweep_parent` = 'kl'")
        done = [r for r in _children(client, parents[0].info.run_id) if r.info.status == "FINISHED"] if parents else []
        first = done[0] if done else None
        time.sleep(0.5)
    assert first is not None, f"no trial finished; log:\n{log.read_text()[-3000:]}"
    proc.send_signal(signal.SIGINT)  # Ctrl+C: Tune saves the experiment state and stops
    assert proc.wait(timeout=180) is not None
    text = log.read_text()
    assert "interrupted with" in text and "unfinished" in text, f"the sweep was not interrupted:\n{text[-3000:]}"
    # nothing of the interrupted sweep holds the cluster: no placement group, no trial/Train/Data actor
    assert live_groups() == set() and live_actors() == {}, (live_groups(), live_actors())

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")  # keys given in code only: no trial could find them
    with pytest.raises(StorageError, match="not in this process's environment"):
        run_tune(TuneJobConfig(storage="s3://data/sweeps", name="kl", train={"data": ready, "model": _model(12)},
                               search={"prompts.num_clusters": [4, 8]}), store)
    for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        monkeypatch.setenv(k, env[k])
    job = TuneJobConfig(storage="s3://data/sweeps", name="kl", search={"prompts.num_clusters": [4, 8]},
                        grace_period=4, register_as="pixelclip-tune", max_concurrent=1,
                        train={"data": ready, "model": _model(12, length=2), "log_every": 2, "checkpoint_every": 4,
                               "tracking_uri": uri})
    out = run_tune(job, store)
    assert out["resumed"] is True
    assert live_groups() == set() and live_actors() == {}, (live_groups(), live_actors())  # ASHA's stop included
    rows = out["trials"]
    assert len(rows) == 2 and all(r["error"] is None for r in rows)
    assert {r["config"]["prompts.num_clusters"] for r in rows} == {4, 8}
    assert out["best"]["complete"] and out["best"]["step"] == 12
    assert out["best"]["loss_rel"] == min(r["loss_rel"] for r in rows if r["complete"])
    # MLflow: one parent, one child run per trial (none duplicated by the resume), the first
    # trial's metrics logged once per step (it was not run again)
    children = _children(client, out["parent_run_id"])
    trial_ids = sorted(r.data.tags["pixelclip.trial"] for r in children)
    assert trial_ids == sorted(r["trial_id"] for r in rows)
    statuses = {r.data.tags["pixelclip.trial"]: r.info.status for r in children}
    assert statuses == {r["trial_id"]: "FINISHED" if r["complete"] else "KILLED" for r in rows}, (statuses, rows)
    steps = [m.step for m in client.get_metric_history(first.info.run_id, "loss")]
    assert sorted(steps) == list(range(2, 13, 2))
    # the best trial's model is registered from its run, with the alias
    version = client.get_model_version_by_alias("pixelclip-tune", "candidate")
    assert version.version == out["registered_version"] == "1"
    assert version.run_id == next(r["mlflow_run_id"] for r in rows if r["trial_id"] == out["best"]["trial_id"])
    # running the finished sweep again changes nothing
    again = run_tune(job, store)
    assert again["registered_version"] == "1" and len(_children(client, out["parent_run_id"])) == len(rows)
    assert len(client.search_model_versions("name = 'pixelclip-tune'")) == 1
    # nothing the sweep stored (Tune state, trial results, checkpoints) holds the storage secret
    from pipelines import storage

    fs, _ = storage.fsspec_fs("s3://data/sweeps/kl/", store)
    stored = [f for f in fs.find("data/sweeps/kl/") if not f.endswith("/")]
    assert any(f.endswith(".pkl") for f in stored) and any("experiment_state" in f for f in stored)
    assert not [f for f in stored if store.secret_key.encode() in fs.cat(f)]
    # nor anything Ray or MLflow kept: the sweep's shell had the keys, its runtime env did not
    hits = file_hits(store.secret_key, ray_sessions(), t0)
    hits += ray_state_hits(store.secret_key, {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address})
    hits += mlflow_hits(store.secret_key, uri, tmp_path / "leaks")
    assert hits == [], f"the storage secret is in: {hits}"
