"""The local stack (SeaweedFS, MLflow, a Ray head with token auth) and real `ray job submit` of the
prepare and train stages against it; `down` leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines import storage
from pipelines.cli import run_command
from pipelines.local.ray_head import MARK_VAR as RAY_MARK
from pipelines.local.service import marked_pids
from pipelines.local.stack import Stack
from pipelines.synth.sa1b import write_shards
from tests.leaks import assert_no_secret, stack_env, stack_pids

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _submit(env: dict, *args: str, timeout: int = 400) -> subprocess.CompletedProcess:
    ray = str(Path(sys.executable).parent / "ray")
    cmd = [ray, "job", "submit", "--working-dir", str(REPO), "--entrypoint-num-cpus", "0", "--",
           sys.executable, "-m", "pipelines.cli", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.long
def test_stack_runs_submitted_jobs_and_stops_clean(tmp_path, capsys):
    import mlflow

    root, t0 = tmp_path / "stack", time.time()
    stack = Stack(root, num_cpus=4)
    try:
        assert run_command(["stack", "up", "--stack-dir", str(root), "--num-cpus", "4"]) == 0
        out = capsys.readouterr().out
        assert f"source {root / 'env.sh'}" in out and "MLflow" in out
        pids = {k: v["pid"] for k, v in stack.status().items()}
        assert all(pids.values())
        env = stack.up()  # idempotent: the same processes
        assert {k: v["pid"] for k, v in stack.status().items()} == pids
        assert oct((root / "env.sh").stat().st_mode & 0o777) == "0o600"
        shell = {**os.environ, **env}
        opts = storage.StorageOptions.from_env(endpoint_url=env["AWS_ENDPOINT_URL"],
                                               access_key=env["AWS_ACCESS_KEY_ID"],
                                               secret_key=env["AWS_SECRET_ACCESS_KEY"], region=env["AWS_REGION"])
        write_shards("s3://data/raw", shards=2, images=16, size=(64, 96), masks=10, seed=3, opts=opts)

        done = _submit(shell, "prepare", "--input", "s3://data/raw/", "--output", "s3://data/ready/",
                       "--short-side", "48", "--min-area", "4", "--max-masks", "8")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert storage.list_files("s3://data/ready/", (".parquet",), opts)

        # without the token (none in the environment, none in HOME) the submission is refused
        bare = {k: v for k, v in shell.items() if not k.startswith("RAY_AUTH")}
        bare.update(HOME=str(tmp_path / "home"), RAY_AUTH_MODE="token")
        refused = _submit(bare, "config", "tiny", timeout=120)
        assert refused.returncode != 0 and "token" in (refused.stdout + refused.stderr).lower()
        # a stage started from such a shell says what to source, in one line, instead of Ray's retry loop
        lost = subprocess.run([sys.executable, "-m", "pipelines.cli", "prepare", "--input", "s3://data/raw/",
                               "--output", "s3://data/never/", "--address", env["RAY_ADDRESS"]],
                              env={**bare, "RAY_ADDRESS": env["RAY_ADDRESS"]}, cwd=REPO, capture_output=True,
                              text=True, timeout=180)
        last = lost.stderr.strip().splitlines()[-1]
        assert lost.returncode == 2 and last.startswith("pixelclip prepare: error: cannot join the Ray cluster")
        assert "source .stack/env.sh" in last and "Traceback" not in lost.stderr

        # a long job still running when the stack stops: its driver and workers must go with it
        ray = str(Path(sys.executable).parent / "ray")
        started = subprocess.run([ray, "job", "submit", "--no-wait", "--working-dir", str(REPO),
                                  "--entrypoint-num-cpus", "0", "--", sys.executable, "-m", "pipelines.cli", "train",
                                  "--data", "s3://data/ready/", "--storage", "s3://data/runs", "--name", "orphan-check",
                                  "--preset", "tiny", "--workers", "2", "--set", "optim.steps=100000", "--set",
                                  "optim.batch_size=4", "--set", "data.resize_short=64", "--set", "data.crop=48"],
                                 env=shell, capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
        deadline = time.time() + 240
        while time.time() < deadline and not _cmdline_pids("RayTrainWorker", root):
            time.sleep(1)
        assert _cmdline_pids("RayTrainWorker", root), "the long job's training workers never started"
        assert _cmdline_pids("orphan-check", root), "the long job's driver is not running"
        client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])  # the job found MLflow through the head's env
        runs = client.search_runs([client.get_experiment_by_name("pixelclip").experiment_id],
                                  filter_string="tags.`pixelclip.run` = 'orphan-check'")
        assert len(runs) == 1 and runs[0].info.status == "RUNNING"

        # each service killed by PID mid-job, then `stack up`: back on the same addresses, the next job runs
        before = stack_env(root)
        for name in ("object store", "mlflow"):
            os.killpg(stack.status()[name]["pid"], signal.SIGKILL)  # the service and its workers die
        assert run_command(["stack", "up", "--stack-dir", str(root), "--num-cpus", "4"]) == 0
        assert stack_env(root) == before and "restarted the Ray head" not in capsys.readouterr().out
        done = _submit(shell, "prepare", "--input", "s3://data/raw/", "--output", "s3://data/ready-again/",
                       "--short-side", "48", "--min-area", "4", "--max-masks", "8")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert client.get_run(runs[0].info.run_id).info.status == "RUNNING"  # MLflow answers where it was
        assert_no_secret(root, t0, tmp_path / "leaks")  # prepare and train ran: no key in logs, Ray state, MLflow
        os.killpg(stack.status()["ray head"]["pid"], signal.SIGKILL)
        assert run_command(["stack", "up", "--stack-dir", str(root), "--num-cpus", "8"]) == 0
        out = capsys.readouterr().out
        assert stack_env(root)["RAY_ADDRESS"] == before["RAY_ADDRESS"]
        assert "keeps num-cpus" not in out  # a restarted head takes the new flags
        # a running head keeps its flags, and says so
        assert run_command(["stack", "up", "--stack-dir", str(root), "--num-cpus", "4"]) == 0
        assert "note: the running Ray head keeps num-cpus=8 (asked 4)" in capsys.readouterr().out
        assert _submit(shell, "config", "tiny", timeout=300).returncode == 0
    finally:
        assert run_command(["stack", "down", "--stack-dir", str(root)]) == 0
    assert stack_pids(root) == []
    assert not _cmdline_pids("orphan-check", root) and not _cmdline_pids("RayTrainWorker", root)
    assert not any(v["running"] for v in stack.status().values())


def _cmdline_pids(needle: str, root: Path) -> list[int]:
    """Processes of the stack in `root` (they carry its Ray head's mark) whose command line contains
    `needle` (Ray renames workers: `ray::RayTrainWorker`)."""
    out, marked = [], set(marked_pids(RAY_MARK, str(root / "ray")))
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) in marked:
            try:
                if needle.encode() in (d / "cmdline").read_bytes():
                    out.append(int(d.name))
            except OSError:
                continue
    return out
