"""A local MLflow tracking server (experiments, runs, model registry) in a data directory.

    pixelclip tracking start  --dir .stack/mlflow [--port 5000] [--artifacts s3://mlflow/artifacts]
    export MLFLOW_TRACKING_URI=http://127.0.0.1:<port>         # printed by start / status
    pixelclip tracking status --dir .stack/mlflow
    pixelclip tracking stop   --dir .stack/mlflow

Runs and the registry live in DIR/mlflow.db (SQLite; a postgresql:// backend URI is accepted too: MLflow 3 no
longer wants the plain file store). Artifacts are proxied by the server (`--serve-artifacts`): clients only talk
HTTP, the server writes to `--artifacts` (an s3:// prefix, with the endpoint and keys taken from AWS_* /
`StorageOptions`, e.g. the local SeaweedFS of `pipelines.local.objectstore`) or to DIR/artifacts.
The server binds 127.0.0.1 only, runs as one uvicorn process under the `mlflow server` launcher, with MLflow's
job runner (huey consumers) and telemetry off; the caller's MLFLOW_* / AWS_* settings never reach it except those
set here. It is recorded in DIR/mlflow.pid and DIR/mlflow.json, so `start` reuses a running one, and every
process it starts carries PIXELCLIP_TRACKING_DIR=DIR in its environment, so `stop` leaves none behind.
Secrets (S3 secret key, database password) are never printed nor put on a command line.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from pipelines import mlflow_client
from pipelines.local.service import (
    PORT_WAIT_S,
    LocalService,
    ServiceError,
    free_port,
    free_soon,
    marked_pids,
    port_free,
    proc_environ,
)
from pipelines.mlflow_client import TrackingError
from pipelines.storage import StorageError, StorageOptions, check_writable, is_s3

log = logging.getLogger(__name__)

MARK_VAR = "PIXELCLIP_TRACKING_DIR"  # in the environment of every process of one server
LOG_MARK = "=== pipelines.local.tracking: starting mlflow server at"
DB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mssql")


class TrackingServerError(TrackingError, ServiceError):
    """The local MLflow tracking server could not be started or stopped."""


# -- processes -------------------------------------------------------------------------------------------------


def tracking_pids(data_dir: str | Path) -> list[int]:
    """Live processes started for the server of `data_dir` (launcher, uvicorn, anything they spawned)."""
    return marked_pids(MARK_VAR, str(Path(data_dir).expanduser().resolve()))


def _masked_uri(uri: str) -> str:
    """A database URI without its password."""
    parsed = urlparse(uri)
    if not parsed.password:
        return uri
    return parsed._replace(netloc=parsed.netloc.replace(f":{parsed.password}@", ":***@", 1)).geturl()


# -- the server ------------------------------------------------------------------------------------------------


class MLflowServer(LocalService):
    """One `mlflow server` for `data_dir`: SQLite (or PostgreSQL) backend, proxied artifacts, loopback only."""

    stem, lock_name, log_mark, error = "mlflow", ".mlflow.lock", LOG_MARK, TrackingServerError
    name, title = "MLflow server", "the MLflow server"

    def __init__(self, data_dir: str | Path, port: int | None = None, host: str = "127.0.0.1",
                 backend_uri: str | None = None, artifacts_uri: str | None = None,
                 storage_opts: StorageOptions | None = None):
        super().__init__(data_dir, host)
        self.port = port
        self.backend_uri = backend_uri or f"sqlite:///{self.data_dir / 'mlflow.db'}"
        self.artifacts_uri = str(artifacts_uri or self.data_dir / "artifacts")
        self.storage_opts = storage_opts
        self._requested = {"port": port, "artifacts": str(artifacts_uri) if artifacts_uri else None,
                           "backend": _masked_uri(backend_uri) if backend_uri else None}
        scheme = self.backend_uri.split(":", 1)[0].split("+", 1)[0].lower()
        if scheme not in DB_SCHEMES:
            raise TrackingServerError(
                f"backend URI {_masked_uri(self.backend_uri)!r} is not a database; MLflow 3 wants "
                "sqlite:///path/mlflow.db or postgresql://user@host/db (the file store is deprecated)")

    def __repr__(self) -> str:
        return (f"MLflowServer(data_dir={str(self.data_dir)!r}, port={self.port}, "
                f"backend_uri={_masked_uri(self.backend_uri)!r}, artifacts_uri={self.artifacts_uri!r})")

    def _owns(self, pid: int) -> bool:
        """`pid` was started for this data dir."""
        env = proc_environ(pid)
        if env is None:
            return True  # cannot tell without /proc
        return f"{MARK_VAR}={self.data_dir}".encode() in env.split(b"\0")

    def _pids(self) -> list[int]:
        return tracking_pids(self.data_dir)

    # -- addresses -----------------------------------------------------------------------------------------------

    @property
    def tracking_uri(self) -> str:
        """`http://127.0.0.1:<port>` of the running (or requested) server."""
        state = self._read_state()
        port = state["port"] if state else self.port
        if port is None:
            raise TrackingServerError(f"no MLflow server is recorded in {self.data_dir}; start it first")
        host = state.get("host", self.host) if state else self.host
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    def env(self) -> dict[str, str]:
        """The variable that points the MLflow client (and Ray workers) at this server."""
        return {"MLFLOW_TRACKING_URI": self.tracking_uri}

    # -- start -----------------------------------------------------------------------------------------------------

    def _child_env(self) -> dict[str, str]:
        """The caller's environment minus its MLFLOW_* / AWS_* settings, plus exactly what this server needs."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "_MLFLOW_", "AWS_"))}
        env.update({MARK_VAR: str(self.data_dir), "MLFLOW_BACKEND_STORE_URI": self.backend_uri,
                    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
                    "DO_NOT_TRACK": "true", "PYTHONUNBUFFERED": "1"})
        if not is_s3(self.artifacts_uri):
            return env
        o = self.storage_opts or StorageOptions.from_env()
        values = {"MLFLOW_S3_ENDPOINT_URL": o.endpoint_url, "AWS_ACCESS_KEY_ID": o.access_key,
                  "AWS_SECRET_ACCESS_KEY": o.secret_key, "AWS_SESSION_TOKEN": o.session_token,
                  "AWS_DEFAULT_REGION": o.region_name, "AWS_REGION": o.region_name,
                  "MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE": "path" if o.endpoint_url else None}
        env.update({k: v for k, v in values.items() if v})
        if not o.access_key:  # profiles, SSO, web identity: let boto3 find its credentials as usual
            env.update({k: v for k, v in os.environ.items()
                        if k in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CA_BUNDLE",
                 "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE")})
        return env

    def _command(self, port: int) -> list[str]:
        # Backend URI travels in MLFLOW_BACKEND_STORE_URI: a database password stays off the command line.
        return [sys.executable, "-m", "mlflow", "server", "--host", self.host, "--port", str(port),
                "--workers", "1", "--serve-artifacts", "--artifacts-destination", self.artifacts_uri]

    def _check_artifacts(self) -> None:
        """Fail before starting when the artifact store cannot take writes."""
        try:
            check_writable(self.artifacts_uri, self.storage_opts)
        except StorageError as err:
            raise TrackingServerError(f"MLflow artifacts cannot be stored at {self.artifacts_uri}: {err}") from err

    def _spawn(self, port: int) -> subprocess.Popen:
        if importlib.util.find_spec("mlflow") is None:
            raise TrackingServerError(f"mlflow is not installed in {sys.prefix}; install the application's extras "
                "(pip install -e '.[pipelines]' or make venv)")
        return self._popen(self._command(port), self.data_dir, self._child_env())

    def _choose_port(self) -> int:
        if self.port is None:  # the last start's port when it is free, so that a restart is found where it was
            last = self._last_ports().get("port")
            back = last and free_soon(last, self.host, time.monotonic() + PORT_WAIT_S)
            return last if back else free_port(self.host, error=TrackingServerError)
        if not port_free(self.port, self.host):
            raise TrackingServerError(
                f"port {self.port} on {self.host} is already in use (another MLflow server?); pick "
                "another with --port N / MLflowServer(port=N), or leave it out to use a free one")
        return self.port

    def _check_reuse(self, state: dict) -> None:
        """A running server is reused only if it matches what this object was explicitly asked for."""
        for key, value in self._requested.items():
            if value is not None and state.get(key) != value:
                raise TrackingServerError(
                    f"an MLflow server for {self.data_dir} already runs (pid {state['pid']}) with "
                    f"{key} {state.get(key)!r}, not {value!r}; stop it first")

    def start(self, timeout: float = 180.0) -> MLflowServer:
        """Start the server, or reuse the one already running for this data dir; wait until its API answers."""
        with self._locked():
            state = self._live_state()
            if state is not None:
                self._check_reuse(state)
                self._wait_ready(state["pid"], self.tracking_uri, timeout)
                return self
            self._check_artifacts()
            port = self._choose_port()
            self._proc = self._spawn(port)
            pid = self._proc.pid
            state = {"host": self.host, "port": port, "backend": _masked_uri(self.backend_uri),
                     "artifacts": self.artifacts_uri, "data_dir": str(self.data_dir), "started": time.time(),
                     "store_endpoint": self.storage_opts.endpoint_url if self.storage_opts else None}
            self._record_and_wait(pid, state, lambda: self._wait_ready(pid, self.tracking_uri, timeout), 10.0)
            log.info("MLflow server pid %d at %s", pid, self.tracking_uri)
            return self

    def _wait_ready(self, pid: int, uri: str, timeout: float) -> None:
        """Poll the REST API until it answers; fail with the log's tail otherwise."""

        def probe() -> str | None:
            problem = mlflow_client.probe(uri, timeout=3.0)
            return None if problem is None else problem[1]

        self._poll_ready(pid, timeout, probe, f"at {uri}", 0.25)

    def status(self) -> dict:
        """Whether the recorded server runs, its pid, URI, stores and processes."""
        state, running = self._running_state()
        return {"running": running, "pid": state["pid"] if running else None,
                "tracking_uri": self.tracking_uri if running else None,
                "backend": (state or {}).get("backend", _masked_uri(self.backend_uri)),
                "artifacts": (state or {}).get("artifacts", self.artifacts_uri),
                "processes": tracking_pids(self.data_dir), "data_dir": str(self.data_dir),
                "log": str(self.log_file)}


# -- CLI -----------------------------------------------------------------------------------------------------------


