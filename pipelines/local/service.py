"""Shared mechanics of a local server process kept in a data directory (SeaweedFS, MLflow, ...).

A `LocalService` subclass records its server in DIR/<stem>.pid and DIR/<stem>.json (written under a file lock,
0600), logs to DIR/<stem>.log (each start opens with `log_mark`), and starts it in a new session so that
`stop` can end the whole process group. Subclasses supply what differs: the command, environment and readiness
probe (`start`, `_wait_ready` via `_poll_ready`), `_owns(pid)` (is a live pid the server of this data dir?),
and optionally `_pids()` (processes that may have left the group, reaped on stop) and `_forget` extras.
Errors are raised as the subclass's `error` class, a `ServiceError`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path


class ServiceError(RuntimeError):
    """A local service could not be started, reached or stopped."""


# -- ports ---------------------------------------------------------------------------------------------------


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on host:port now (SO_REUSEADDR, like Go's listeners)."""
    if not 0 < port < 65536:
        return False
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


PORT_WAIT_S = 15.0  # how long a restart waits for its previous ports before it moves


def free_soon(port: int, host: str, deadline: float) -> bool:
    """Whether `port` is free now or becomes free before `deadline` (time.monotonic()): a killed
    server's sockets take a moment to close, and a restart should take its port back."""
    while not port_free(port, host):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


def free_port(host: str = "127.0.0.1", taken: Iterable[int] = (),
              error: type[Exception] = ServiceError) -> int:
    """A port the OS reports free on `host`, not one of `taken`."""
    taken = set(taken)
    for _ in range(100):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in taken:
            return port
    raise error(f"could not find a free port on {host}")


# -- processes -----------------------------------------------------------------------------------------------


def proc_cmdline(pid: int) -> list[str] | None:
    """The command line of `pid`, or None without /proc."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def proc_environ(pid: int) -> bytes | None:
    """The raw environment of `pid` (NUL-separated), or None without /proc."""
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None


def marked_pids(var: str, value: str) -> list[int]:
    """Live processes whose environment holds `var=value` (a service marks all its processes so)."""
    needle = f"{var}={value}".encode()
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        env = proc_environ(int(entry.name))
        if env and needle in env.split(b"\0") and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return sorted(found)


def pid_alive(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): trust kill(0)
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (0600), also when it already existed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


# -- the base class ------------------------------------------------------------------------------------------


class LocalService:
    """One server process for `data_dir`, recorded in pid/state files; see the module docstring."""

    stem = "service"  # DIR/<stem>.pid, .json, .log
    lock_name = ".lock"
    log_mark = "=== pipelines.local.service: starting at"
    name = "service"  # in log lines: "<name> pid N ..."
    title = "the service"  # in errors: "<title> (pid N) ..."
    error: type[ServiceError] = ServiceError

    def __init__(self, data_dir: str | Path, host: str = "127.0.0.1"):
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.host = host
        self._proc: subprocess.Popen | None = None

    pid_file = property(lambda self: self.data_dir / f"{self.stem}.pid")
    state_file = property(lambda self: self.data_dir / f"{self.stem}.json")
    log_file = property(lambda self: self.data_dir / f"{self.stem}.log")
    ports_file = property(lambda self: self.data_dir / f"{self.stem}.ports.json")  # kept across stops

    def _last_ports(self) -> dict[str, int]:
        """The ports of this folder's last start: a restart takes them again when they are free, so
        that whatever points at this service (env.sh, the other services, a user's shell) stays right."""
        try:
            return {k: int(v) for k, v in json.loads(self.ports_file.read_text()).items()}
        except (OSError, ValueError, AttributeError):
            return {}

    @property
    def _log(self) -> logging.Logger:
        return logging.getLogger(type(self).__module__)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout: float = 60.0):
        raise NotImplementedError

    # -- hooks ---------------------------------------------------------------------------------------------------

    def _owns(self, pid: int) -> bool:
        """Whether the live `pid` serves this data dir (True when it cannot be told)."""
        raise NotImplementedError

    def _pids(self) -> list[int]:
        """Live processes of this data dir that may have left the process group."""
        return []

    # -- state -----------------------------------------------------------------------------------------------------

    def _read_state(self) -> dict | None:
        try:
            state = json.loads(self.state_file.read_text())
            state["pid"] = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return state

    def _is_ours(self, pid: int) -> bool:
        """`pid` is alive and serves this data dir (guards against a recycled pid)."""
        return pid_alive(pid) and self._owns(pid)

    def _running_state(self) -> tuple[dict | None, bool]:
        """The recorded state and whether its process runs."""
        state = self._read_state()
        return state, state is not None and self._is_ours(state["pid"])

    def _live_state(self) -> dict | None:
        """The recorded server if it runs; a stale record (and any process it left) is cleaned up."""
        state = self._read_state()
        if state is not None and self._is_ours(state["pid"]):
            return state
        if state is not None:
            self._log.warning("stale pid file %s: process %d is gone; cleaning up", self.pid_file, state["pid"])
        elif self.pid_file.exists() or self.state_file.exists():
            self._log.warning("removing an unreadable pid/state file in %s", self.data_dir)
        self._reap(5.0)
        self._forget(state)
        return None

    def _forget(self, state: dict | None = None) -> None:
        """Remove the pid/state files."""
        self.pid_file.unlink(missing_ok=True)
        self.state_file.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _locked(self):
        """Serialise start/stop on this data dir across processes."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.data_dir / self.lock_name, "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.rsplit(self.log_mark, 1)[-1].splitlines()[1:][-lines:])  # this start's lines only

    # -- start -----------------------------------------------------------------------------------------------------

    def _popen(self, cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
        """Start `cmd` in a new session, appending its output to the log after a start mark."""
        with open(self.log_file, "ab") as logf:
            logf.write(f"{self.log_mark} {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
            logf.flush()
            return subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=logf,
                                    stderr=subprocess.STDOUT, start_new_session=True)

    def _record_and_wait(self, pid: int, state: dict, wait: Callable[[], None], kill_timeout: float) -> None:
        """Record the started server, then `wait()` for it; on failure end it and forget it."""
        write_private(self.state_file, json.dumps(state, indent=2) + "\n")
        self.pid_file.write_text(f"{pid}\n")
        ports = state.get("ports") or ({"port": state["port"]} if "port" in state else {})
        write_private(self.ports_file, json.dumps(ports) + "\n")
        try:
            wait()
        except BaseException:
            self._terminate(pid, kill_timeout)
            self._forget(state)
            raise

    def _poll_ready(self, pid: int, timeout: float, probe: Callable[[], str | None], where: str,
                    interval: float) -> None:
        """Call `probe` (None: ready, else why not) until it succeeds; fail with the log's tail otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is not None and self._proc.pid == pid:
                # our own child: ask it. Its /proc environ (which `_is_ours` reads) is empty for a
                # moment while the new program starts, which read as "gone" under load.
                gone = self._proc.poll() is not None
            else:
                gone = not self._is_ours(pid)
            if gone:
                raise self.error(f"{self.title} (pid {pid}) exited during start-up; last lines of "
                                 f"{self.log_file}:\n{self._log_tail()}")
            last = probe()
            if last is None:
                return
            if time.monotonic() > deadline:
                raise self.error(f"{self.title} (pid {pid}) did not answer {where} within {timeout:.0f} s "
                                 f"({last}); last lines of {self.log_file}:\n{self._log_tail()}")
            time.sleep(interval)

    # -- stop ------------------------------------------------------------------------------------------------------

    def _wait_gone(self, pids: list[int], timeout: float) -> list[int]:
        """Wait until `pids` exit (reaping our own child); return those still alive."""
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is not None:
                self._proc.poll()
            alive = [p for p in pids if pid_alive(p)]
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.1)

    @staticmethod
    def _signal_group(pid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)  # the whole session started with start_new_session=True
            else:
                os.kill(pid, sig)

    def _terminate(self, pid: int, timeout: float) -> None:
        """SIGTERM the process group, wait; SIGKILL what is left."""
        self._signal_group(pid, signal.SIGTERM)
        if self._wait_gone([pid, *self._pids()], timeout):
            self._log.warning("%s pid %d ignored SIGTERM for %.0f s; killing it", self.name, pid, timeout)
            self._signal_group(pid, signal.SIGKILL)
            self._wait_gone([pid], 10.0)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # anything else left in its group
        self._reap(5.0)
        if self._proc is not None and self._proc.pid == pid:
            self._proc.poll()
            self._proc = None

    def _reap(self, timeout: float) -> None:
        """End processes of this data dir that left the process group (SIGTERM, then SIGKILL)."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            left = self._pids()
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            if not self._wait_gone(left, timeout):
                return

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server of this data dir (if any), every process it started, and remove its pid/state files."""
        if not self.data_dir.is_dir():
            return
        with self._locked():
            state = self._read_state()
            if state is not None and self._is_ours(state["pid"]):
                self._terminate(state["pid"], timeout)
            self._reap(5.0)
            self._forget(state)
