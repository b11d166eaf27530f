"""Where a secret must never appear after the stages ran against the local stack: every file of the
stack's folder and of the Ray sessions written since the test began, Ray's state API
(`ray list actors/tasks --detail`), and every MLflow param, tag and artifact."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

RAY_SESSIONS = Path("/tmp/ray")


def _files(root: Path, since: float):
    for p in root.rglob("*"):
        try:
            if p.is_file() and not p.is_symlink() and p.stat().st_mtime >= since:
                yield p
        except OSError:  # a file Ray removed while we walked
            continue


def file_hits(secret: str, roots: list[Path], since: float) -> list[str]:
    needle = secret.encode()
    hits = []
    for root in roots:
        for p in _files(root, since):
            try:
                if needle in p.read_bytes():
                    hits.append(str(p))
            except OSError:
                continue
    return hits


def ray_sessions() -> list[Path]:
    """The session folders of every Ray on this machine that uses the shared /tmp/ray."""
    return [p for p in RAY_SESSIONS.glob("session_*") if p.is_dir() and not p.is_symlink()]


def ray_state_hits(secret: str, env: dict) -> list[str]:
    """`ray list actors/tasks --detail` against the head that `env` points at."""
    ray = str(Path(sys.executable).parent / "ray")
    hits = []
    for what in ("actors", "tasks"):
        done = subprocess.run([ray, "list", what, "--detail", "--limit", "10000"], env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, f"ray list {what}: {done.stderr[-2000:]}"
        if secret in done.stdout:
            hits.append(f"ray list {what} --detail")
    return hits


def mlflow_hits(secret: str, tracking_uri: str, tmp: Path) -> list[str]:
    """Every run's params and tags, every artifact it holds (downloaded), and the registry's tags."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    hits = []
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id], max_results=1000):
            rid = run.info.run_id
            for kind, d in (("param", run.data.params), ("tag", run.data.tags)):
                hits += [f"run {rid} {kind} {k}" for k, v in d.items() if secret in f"{k}={v}"]
            if client.list_artifacts(rid):
                local = Path(client.download_artifacts(rid, "", str(tmp / rid)))
                hits += [f"run {rid} artifact {p.relative_to(local)}" for p in map(Path, file_hits(secret, [local], 0))]
    for model in client.search_registered_models():
        for v in client.search_model_versions(f"name='{model.name}'"):
            hits += [f"model {model.name} v{v.version} tag {k}" for k, val in v.tags.items() if secret in val]
    return hits


def secret_hits(secret: str, stack_root: Path, env: dict, since: float, tmp: Path) -> list[str]:
    """Every place the secret appears; the caller asserts the list is empty. `env`: the stack's
    client environment (its RAY_ADDRESS, token and MLFLOW_TRACKING_URI)."""
    assert len(secret) >= 16, "a secret this short would match by chance"
    from pipelines.local.ray_head import RayHead

    hits = file_hits(secret, [stack_root / "ray", stack_root / "mlflow", RayHead(stack_root / "ray").temp_dir], since)
    hits += file_hits(secret, ray_sessions(), since)  # Ray's shared folder too, should anything of the stack land there
    hits += ray_state_hits(secret, env)
    hits += mlflow_hits(secret, env["MLFLOW_TRACKING_URI"], tmp)
    return hits


def stack_env(root: Path) -> dict:
    """The variables `root/env.sh` exports (the stack's keys, RAY_ADDRESS, token, MLflow URI)."""
    env = {}
    for line in (root / "env.sh").read_text().splitlines():
        if line.startswith("export ") and "=" in line:
            k, v = line[len("export "):].split("=", 1)
            env[k] = v.strip("'\"")
    return env


def assert_no_secret(root: Path, since: float, tmp: Path) -> None:
    """The stack in `root` (still running) leaked its object store's secret key nowhere."""
    import os

    env = stack_env(root)
    hits = secret_hits(env["AWS_SECRET_ACCESS_KEY"], root, {**os.environ, **env}, since, tmp)
    assert hits == [], f"the storage secret key appears in: {hits[:20]}"


def stack_pids(root: Path) -> list[int]:
    """Every process of the stack in `root` still alive: its Ray head's, MLflow's and SeaweedFS's."""
    from pipelines.local.objectstore import weed_pids
    from pipelines.local.ray_head import MARK_VAR
    from pipelines.local.service import marked_pids
    from pipelines.local.tracking import tracking_pids

    return [*marked_pids(MARK_VAR, str(root / "ray")), *tracking_pids(root / "mlflow"), *weed_pids(root)]
