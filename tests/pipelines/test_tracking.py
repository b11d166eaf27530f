"""MLflow tracking server against a real SeaweedFS: runs, artifacts proxied to S3, model registry, clean stop."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines import storage
from pipelines.local.objectstore import pid_alive
from pipelines.local.tracking import MLflowServer, tracking_pids
from pipelines.mlflow_client import TrackingError, check_tracking
from tests.conftest import mlflow_at

pytestmark = pytest.mark.slow  # two real servers, ~30 s

ARTIFACTS = "s3://data/tracking-test/artifacts"  # in the bucket of the session's store
MODEL = "pixelclip-echo"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(pids: list[int]) -> set[tuple[str, int]]:
    """(address, port) of the TCP sockets these processes listen on (Linux /proc)."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd) if fd.is_symlink() else ""
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                addr, port = cols[1].split(":")
                ip = ".".join(str(int(addr[i - 2:i], 16)) for i in (8, 6, 4, 2)) if len(addr) == 8 else addr
                found.add((ip, int(port, 16)))
    return found


@pytest.fixture(scope="module")
def server(tmp_path_factory, store):
    """One MLflow server (SQLite backend, artifacts proxied to SeaweedFS) for the module."""
    srv = MLflowServer(tmp_path_factory.mktemp("mlflow"), artifacts_uri=ARTIFACTS, storage_opts=store)
    try:
        yield srv.start()
    finally:
        srv.stop()
        assert tracking_pids(srv.data_dir) == []


@pytest.fixture(scope="module")
def mlflow(server):
    """The mlflow client module pointed at the server; the tracking URI is reset afterwards."""
    with mlflow_at(server.tracking_uri) as m:
        yield m


# -- runs and artifacts ------------------------------------------------------------------------------------------


def test_run_params_metrics_and_artifact_land_in_bucket(mlflow, server, store, tmp_path):
    exp_id = mlflow.create_experiment("pixelclip-test")
    assert mlflow.get_experiment(exp_id).artifact_location == f"mlflow-artifacts:/{exp_id}"  # proxied
    payload = os.urandom(2048) + b"pixelclip"
    (tmp_path / "note.bin").write_bytes(payload)
    with mlflow.start_run(experiment_id=exp_id) as run:
        mlflow.log_params({"lr": 0.001, "preset": "tiny"})
        for step in range(3):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_artifact(str(tmp_path / "note.bin"), artifact_path="notes")
    run_id = run.info.run_id

    got = mlflow.get_run(run_id)
    assert got.data.params == {"lr": "0.001", "preset": "tiny"}
    assert got.data.metrics["loss"] == pytest.approx(1 / 3)
    history = mlflow.MlflowClient().get_metric_history(run_id, "loss")
    assert [m.step for m in history] == [0, 1, 2]

    key = f"{ARTIFACTS}/{exp_id}/{run_id}/artifacts/notes/note.bin"
    assert key in storage.list_files(ARTIFACTS, opts=store)  # the object really is in SeaweedFS
    assert storage.read_bytes(key, store) == payload
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="notes/note.bin",
                                                dst_path=str(tmp_path / "back"))
    assert Path(local).read_bytes() == payload
    assert not any((server.data_dir / "artifacts").glob("**/*"))  # nothing went to the local default
    assert not (server.data_dir / "mlartifacts").exists()


def test_model_registry_alias(mlflow, store):
    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input: list[str], params=None) -> list[str]:
            return model_input

    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="echo", python_model=Echo(), pip_requirements=["mlflow"])
    version = mlflow.register_model(info.model_uri, MODEL).version
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(MODEL, "champion", version)
    assert client.get_model_version_by_alias(MODEL, "champion").version == version

    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    assert model.predict(["cat", "grass", "sky"]) == ["cat", "grass", "sky"]
    assert any(f.endswith("/MLmodel") for f in storage.list_files(ARTIFACTS, opts=store))


# -- the server's life -------------------------------------------------------------------------------------------


def test_start_is_idempotent_loopback_only_and_hides_secrets(server, store):
    st = server.status()
    again = MLflowServer(server.data_dir).start(timeout=10)
    assert again.status()["pid"] == st["pid"] and again.tracking_uri == server.tracking_uri
    assert server.env() == {"MLFLOW_TRACKING_URI": server.tracking_uri}
    assert len(st["processes"]) == 2  # the `mlflow server` launcher and one uvicorn: no job runner, no workers
    port = int(server.tracking_uri.rsplit(":", 1)[1])
    assert _listening(st["processes"]) == {("127.0.0.1", port)}
    with pytest.raises(TrackingError, match="already runs"):
        MLflowServer(server.data_dir, artifacts_uri="s3://elsewhere/artifacts").start(timeout=10)

    out = subprocess.run([sys.executable, "-m", "pipelines.cli", "tracking", "status", "--dir", str(server.data_dir)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and server.tracking_uri in out.stdout
    cmdlines = [Path(f"/proc/{pid}/cmdline").read_bytes().decode() for pid in st["processes"]]
    texts = [out.stdout + out.stderr, server.log_file.read_text(), server.state_file.read_text(), *cmdlines,
             repr(server), json.dumps(st)]
    assert not [t for t in texts if store.secret_key in t]


def test_check_tracking_fails_fast(server, store):
    check_tracking(server.tracking_uri)
    t0 = time.monotonic()
    with pytest.raises(TrackingError, match=r"cannot reach the MLflow server .* is it running\?"):
        check_tracking(f"http://127.0.0.1:{_closed_port()}")
    assert time.monotonic() - t0 < 3
    with pytest.raises(TrackingError, match="not an MLflow tracking server"):
        check_tracking(store.endpoint_url)  # an HTTP server, but S3
    with pytest.raises(TrackingError, match="expected http://host:port"):
        check_tracking("sqlite:///mlflow.db")


def test_bad_configurations_are_explained(tmp_path, store):
    with pytest.raises(TrackingError, match="not a database"):
        MLflowServer(tmp_path / "a", backend_uri=f"file://{tmp_path}/mlruns")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(TrackingError, match="already in use"):
            MLflowServer(tmp_path / "b", port=busy.getsockname()[1]).start()
    with pytest.raises(TrackingError, match="bucket 'missing' does not exist"):
        MLflowServer(tmp_path / "c", artifacts_uri="s3://missing/artifacts", storage_opts=store).start()
    assert tracking_pids(tmp_path / "c") == []


def test_stop_leaves_no_process(server):
    pids, uri = server.status()["processes"], server.tracking_uri
    assert pids
    t0 = time.monotonic()
    server.stop()
    assert time.monotonic() - t0 < 15
    assert tracking_pids(server.data_dir) == []
    assert not [p for p in pids if pid_alive(p)]
    assert not server.pid_file.exists() and not server.state_file.exists()
    assert server.status()["running"] is False
    with pytest.raises(TrackingError, match="is it running"):
        check_tracking(uri)
    server.stop()  # idempotent
