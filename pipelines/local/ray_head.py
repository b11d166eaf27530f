"""A local Ray head (`ray start --head --block`) kept in a data directory, like SeaweedFS and MLflow.

    head = RayHead(".stack/ray", num_cpus=4, env={"AWS_ENDPOINT_URL": ...}).start()
    head.dashboard_url     # http://127.0.0.1:<port>: `ray job submit --address` and the dashboard
    head.client_env()      # RAY_ADDRESS, RAY_API_SERVER_ADDRESS, RAY_AUTH_MODE, RAY_AUTH_TOKEN_PATH

The head listens on 127.0.0.1 only, with Ray's token authentication: the token is generated once
into DATA/auth_token (0600) and every client reads it through RAY_AUTH_TOKEN_PATH. `env` goes into
the head's environment and so into every job and worker it runs (the local stack passes the object
store's keys and the MLflow address that way, as a cluster's instance role would, so jobs need no
secrets on their command line). `stop` ends `ray start --block`, which stops every Ray process it
started, then reaps any left.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from pipelines.local.service import (
    PORT_WAIT_S,
    LocalService,
    ServiceError,
    free_port,
    free_soon,
    marked_pids,
    port_free,
    proc_environ,
    write_private,
)

MARK_VAR = "PIXELCLIP_RAY_HEAD_DIR"
LOG_MARK = "=== pipelines.local.ray_head: starting ray head at"


class RayHeadError(ServiceError):
    """The local Ray head could not be started, reached or stopped."""


def find_ray() -> str:
    """The `ray` command of this environment."""
    here = Path(sys.executable).parent / "ray"
    found = str(here) if here.exists() else shutil.which("ray")
    if not found:
        raise RayHeadError("the `ray` command is missing: install the application's extras "
                           "(pip install -e '.[pipelines]' or make venv)")
    return found


class RayHead(LocalService):
    """One Ray head node for `data_dir` on `host` (loopback), with token authentication."""

    stem, lock_name, log_mark, error = "ray", ".lock", LOG_MARK, RayHeadError
    name = title = "Ray head"

    def __init__(self, data_dir: str | Path, num_cpus: int | None = None, num_gpus: int | None = None,
                 port: int | None = None, dashboard_port: int | None = None, env: dict[str, str] | None = None,
                 host: str = "127.0.0.1"):
        super().__init__(data_dir, host)
        self.num_cpus, self.num_gpus, self.port, self.dashboard_port = num_cpus, num_gpus, port, dashboard_port
        self.extra_env = dict(env or {})

    token_file = property(lambda self: self.data_dir / "auth_token")

    @property
    def temp_dir(self) -> Path:
        """Ray's session folder for this head alone: /tmp/pixelclip-ray-<hash of the data dir>, short
        enough for Ray's socket paths. Not Ray's shared /tmp/ray: there its "latest cluster" record
        names whichever Ray started last on the machine, and a job's driver would connect to that one."""
        digest = hashlib.sha1(str(self.data_dir).encode()).hexdigest()[:10]
        return Path(tempfile.gettempdir()) / f"pixelclip-ray-{digest}"

    def _owns(self, pid: int) -> bool:
        env = proc_environ(pid)
        return True if env is None else f"{MARK_VAR}={self.data_dir}".encode() in env.split(b"\0")

    def _pids(self) -> list[int]:
        return marked_pids(MARK_VAR, str(self.data_dir))

    def token(self) -> str:
        """The cluster's auth token, generated on first use (DATA/auth_token, 0600)."""
        if not self.token_file.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_private(self.token_file, secrets.token_hex(32))
        return self.token_file.read_text().strip()

    # -- addresses -----------------------------------------------------------------------------------------------

    def _ports(self) -> dict[str, int]:
        state = self._read_state()
        if state is None:
            raise RayHeadError(f"no Ray head is recorded in {self.data_dir}; start it first (pixelclip stack up)")
        return state["ports"]

    @property
    def address(self) -> str:
        """`127.0.0.1:<gcs port>`: for ray.init(address=...) on this machine."""
        return f"{self.host}:{self._ports()['gcs']}"

    @property
    def dashboard_url(self) -> str:
        """`http://127.0.0.1:<port>`: the dashboard and the job-submission API."""
        return f"http://{self.host}:{self._ports()['dashboard']}"

    def serves(self) -> dict[str, str]:
        """The addresses this head hands its jobs (never a key): when one of them moves, the head must
        restart so that its jobs see the new one."""
        return {k: self.extra_env[k] for k in ("AWS_ENDPOINT_URL", "MLFLOW_TRACKING_URI") if k in self.extra_env}

    def client_env(self) -> dict[str, str]:
        """What ray.init (RAY_ADDRESS: the GCS) and `ray job submit` (RAY_API_SERVER_ADDRESS) need to
        reach this head, with its token."""
        return {"RAY_ADDRESS": self.address, "RAY_API_SERVER_ADDRESS": self.dashboard_url, "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN_PATH": str(self.token_file)}

    def _terminate(self, pid: int, timeout: float) -> None:
        """`ray start --block` shuts its Ray processes down on SIGINT (it ignores SIGTERM while they
        run); what is left after `timeout` gets the generic SIGTERM / SIGKILL of the group."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGINT)
        if self._wait_gone([pid, *self._pids()], timeout):
            super()._terminate(pid, 5.0)
        elif self._proc is not None and self._proc.pid == pid:
            self._proc.poll()
            self._proc = None

    def _forget(self, state: dict | None = None) -> None:
        """Also drop Ray's "latest cluster" record when it names this head (`ray stop` would), so that a
        later plain ray.init() starts its own cluster instead of reaching for a stopped one."""
        super()._forget(state)
        port = ((state or {}).get("ports") or {}).get("gcs")
        record = Path("/tmp/ray/ray_current_cluster")
        with contextlib.suppress(OSError):
            if port and record.read_text().strip().endswith(f":{port}"):
                record.unlink()

    # -- start ---------------------------------------------------------------------------------------------------

    def _choose_ports(self) -> dict[str, int]:
        """Asked-for ports must be free; the others are the last start's where free (a restarted head is
        found at the same address), else any free port."""
        ports: dict[str, int] = {}
        last = self._last_ports()
        deadline = time.monotonic() + PORT_WAIT_S  # a killed head's sockets take a moment to close
        for wanted in (self.port, self.dashboard_port):
            if wanted is not None and not port_free(wanted, self.host):
                raise RayHeadError(f"port {wanted} on {self.host} is already in use (another Ray?); pick another "
                                   f"or leave it out to use a free one")
        for name in ("gcs", "dashboard", "client", "node_manager", "object_manager", "metrics", "dashboard_agent",
                     "agent_listen"):
            wanted = {"gcs": self.port, "dashboard": self.dashboard_port}.get(name)
            before = last.get(name)
            if wanted is None and before and before not in ports.values() and free_soon(before, self.host, deadline):
                wanted = before
            ports[name] = wanted or free_port(self.host, ports.values(), error=RayHeadError)
        return ports

    def _command(self, ports: dict[str, int]) -> list[str]:
        cmd = [find_ray(), "start", "--head", "--block", f"--node-ip-address={self.host}", f"--port={ports['gcs']}",
               f"--dashboard-host={self.host}", f"--dashboard-port={ports['dashboard']}", "--include-dashboard=true",
               f"--ray-client-server-port={ports['client']}", f"--node-manager-port={ports['node_manager']}",
               f"--object-manager-port={ports['object_manager']}", f"--metrics-export-port={ports['metrics']}",
               f"--dashboard-agent-grpc-port={ports['dashboard_agent']}",
               f"--dashboard-agent-listen-port={ports['agent_listen']}", "--disable-usage-stats",
               f"--temp-dir={self.temp_dir}"]
        if self.num_cpus is not None:
            cmd.append(f"--num-cpus={self.num_cpus}")
        if self.num_gpus is not None:
            cmd.append(f"--num-gpus={self.num_gpus}")
        return cmd

    def _child_env(self, ports: dict[str, int]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH", "RAY_API_SERVER"))}
        env.update(self.extra_env)
        # every job and worker of this head finds this head, whatever the shell that started it pointed at
        env["RAY_ADDRESS"] = f"{self.host}:{ports['gcs']}"
        env.update({MARK_VAR: str(self.data_dir), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_file),
                    "RAY_USAGE_STATS_ENABLED": "0"})
        # jobs run `python -m pipelines.cli ...` through the head's PATH: this environment's python
        # first, whether or not the shell that started the stack had activated it
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env

    def start(self, timeout: float = 120.0) -> RayHead:
        """Start the head, or reuse the one already running for this data dir; wait until jobs can be submitted."""
        with self._locked():
            state = self._live_state()
            if state is not None:
                self._wait_ready(state["pid"], timeout)
                return self
            self.token()
            self.temp_dir.mkdir(mode=0o700, exist_ok=True)
            ports = self._choose_ports()
            self._proc = self._popen(self._command(ports), self.data_dir, self._child_env(ports))
            pid = self._proc.pid
            state = {"host": self.host, "ports": ports, "data_dir": str(self.data_dir), "started": time.time(),
                     "serves": self.serves(), "num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
            self._record_and_wait(pid, state, lambda: self._wait_ready(pid, timeout), 20.0)
            return self

    def _wait_ready(self, pid: int, timeout: float) -> None:
        """Poll the job API (with the token) until it answers, and the head's dashboard agent until it
        listens: the job API hands every submission to that agent, and refuses it ("No available agent")
        when the agent is not up within 10 s, as after a restart on a loaded machine."""
        url = f"{self.dashboard_url}/api/jobs/"

        def probe() -> str | None:
            req = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token()}"})
            try:
                with urllib.request.urlopen(req, timeout=3) as resp:
                    if resp.status != 200:
                        return f"HTTP {resp.status}"
            except urllib.error.HTTPError as e:
                return f"HTTP {e.code}"
            except (urllib.error.URLError, OSError) as e:
                return str(e)
            agent = self._ports()["agent_listen"]
            try:
                socket.create_connection((self.host, agent), timeout=3).close()
            except OSError as e:
                return f"the dashboard agent does not listen on port {agent} yet ({e})"
            return None

        self._poll_ready(pid, timeout, probe, f"at {url}", 0.5)
