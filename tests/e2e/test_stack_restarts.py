"""`stack up` on a running stack says which flags its head kept. A stack service killed by PID comes
back where it was and nothing else restarts; one whose port was taken while it was down moves, and the
services that point at it follow (MLflow, the Ray head and env.sh). The fault sequence with submitted
jobs is test_stack.py's (make test-long)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from urllib.parse import urlparse

import pytest

from pipelines import storage
from pipelines.cli import run_command
from pipelines.local import objectstore
from pipelines.local.service import port_free
from pipelines.local.stack import Stack
from tests.leaks import stack_env, stack_pids

pytestmark = pytest.mark.slow

_JOB_SEES = """import os, ray
ray.init()
print(ray.get(ray.remote(num_cpus=0)(lambda: os.environ.get("AWS_ENDPOINT_URL")).remote()))
"""


def _pids(stack: Stack) -> dict[str, int]:
    return {name: s["pid"] for name, s in stack.status().items()}


def _endpoint_seen_by_a_job(env: dict) -> str:
    """What a task on the head's cluster finds in its environment (the way every stage finds the store)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_", "MLFLOW_"))}
    done = subprocess.run([sys.executable, "-c", _JOB_SEES], env={**clean, **env}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def _hold(port: int) -> socket.socket:
    """Listen on `port` once the killed server has let it go, so that a restart finds it taken."""
    deadline = time.monotonic() + 60
    while not port_free(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen()
    return s


@pytest.mark.timeout(900)  # about 1.5 min alone: two Ray head starts, a job
def test_a_killed_service_returns_in_place_and_a_moved_one_takes_its_dependents_along(tmp_path, capsys):
    import mlflow

    root = tmp_path / "stack"
    stack = Stack(root, num_cpus=2)
    try:
        env = stack.up()
        first = _pids(stack)
        # `stack up` with other flags on a running stack keeps the head and says what it kept
        assert run_command(["stack", "up", "--stack-dir", str(root), "--num-cpus", "4"]) == 0
        assert "note: the running Ray head keeps num-cpus=2 (asked 4)" in capsys.readouterr().out
        assert _pids(stack) == first

        # killed by PID, `up` again: the same addresses, and MLflow and the head were left alone
        os.killpg(first["object store"], signal.SIGKILL)
        assert stack.up() == env and stack.notes == []
        again = _pids(stack)
        assert again["object store"] != first["object store"]
        assert (again["mlflow"], again["ray head"]) == (first["mlflow"], first["ray head"])
        assert stack_env(root) == env

        # killed, and its port taken before `up`: the store moves; MLflow and the head restart to follow it
        os.killpg(again["object store"], signal.SIGKILL)
        with _hold(urlparse(env["AWS_ENDPOINT_URL"]).port), pytest.MonkeyPatch.context() as mp:
            mp.setattr(objectstore, "PORT_WAIT_S", 1.0)  # the port stays taken: no use waiting 15 s for it
            moved = stack.up()
        new = moved["AWS_ENDPOINT_URL"]
        assert new != env["AWS_ENDPOINT_URL"]
        assert any(n.startswith(f"restarted the MLflow server: the object store moved to {new}") for n in stack.notes)
        assert any(n.startswith("restarted the Ray head") and new in n for n in stack.notes), stack.notes
        after = _pids(stack)
        assert after["mlflow"] != again["mlflow"] and after["ray head"] != again["ray head"]
        assert stack_env(root)["AWS_ENDPOINT_URL"] == new  # a shell that sources env.sh again finds it
        assert moved["MLFLOW_TRACKING_URI"] == env["MLFLOW_TRACKING_URI"]  # the others kept their addresses
        assert moved["RAY_ADDRESS"] == env["RAY_ADDRESS"]
        assert _endpoint_seen_by_a_job(stack_env(root)) == new  # the head's jobs see the store where it is now

        # MLflow writes artifacts to the store where it is now (before, log_artifact hung on the old address)
        client = mlflow.MlflowClient(moved["MLFLOW_TRACKING_URI"])
        run = client.create_run(client.create_experiment("restarts"))
        note = tmp_path / "note.txt"
        note.write_text("after the move\n")
        client.log_artifact(run.info.run_id, str(note))
        opts = storage.StorageOptions.from_env(endpoint_url=new, access_key=moved["AWS_ACCESS_KEY_ID"],
                                               secret_key=moved["AWS_SECRET_ACCESS_KEY"],
                                               region=moved["AWS_REGION"])
        assert any(p.endswith(f"{run.info.run_id}/artifacts/note.txt")
                   for p in storage.list_files("s3://data/mlflow/", (".txt",), opts))
    finally:
        stack.down()
    assert stack_pids(root) == []
