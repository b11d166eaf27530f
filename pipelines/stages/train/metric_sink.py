"""Training's MLflow metrics, off the critical path.

    sink = MetricSink(client, run_id)        # a background thread owns every write
    sink.log([Metric(...), ...])             # never blocks, never raises
    left = sink.close(timeout=30)            # what the server never took
    spill(run_uri, left)                     # -> RUN/pending_metrics/<time>.jsonl in the run's storage
    replay_metrics(run_uri, client, run_id)  # later, when the server is back: written once, files removed

While the server is away the thread retries the oldest batch with a growing pause (up to 30 s) and
keeps later metrics in a bounded buffer; past the bound the oldest are set aside for the spill file,
so memory stays bounded for any outage. MLflow stores a metric by (key, step, timestamp, value), so
a batch that reached the server just before a timeout and is sent again is still stored once.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
import time
from typing import Any

from pipelines import storage

log = logging.getLogger(__name__)
PENDING_DIR = "pending_metrics"
MAX_BACKOFF_S = 30.0


def _quick_requests() -> None:
    """One try per request, 10 s each: the sink retries itself (MLflow's own retries would hold a
    batch for minutes before the sink could count the failure)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


class MetricSink:
    """Sends metric batches to one MLflow run from a daemon thread; bounded; see the module's text."""

    def __init__(self, client, run_id: str, max_pending: int = 100_000, first_backoff_s: float = 1.0):
        _quick_requests()
        self.client, self.run_id = client, run_id
        self.max_pending, self.first_backoff_s = max_pending, first_backoff_s
        self._queue: collections.deque[list] = collections.deque()
        self._pending = 0  # metrics in the queue
        self._overflow: list = []  # metrics set aside when the buffer was full: for the spill file
        self._cv = threading.Condition()
        self._closing = False
        self.failures = 0  # failed writes so far (each retried)
        self.outage_s = 0.0  # time spent waiting for the server
        self._thread = threading.Thread(target=self._run, name="mlflow-metric-sink", daemon=True)
        self._thread.start()

    def log(self, metrics: list) -> None:
        if not metrics:
            return
        with self._cv:
            self._queue.append(list(metrics))
            self._pending += len(metrics)
            while self._pending > self.max_pending and len(self._queue) > 1:  # the head may be in flight
                old = self._queue[1]
                del self._queue[1]
                self._overflow += old
                self._pending -= len(old)
            self._cv.notify()

    def _run(self) -> None:
        backoff = self.first_backoff_s
        while True:
            with self._cv:
                while not self._queue and not self._closing:
                    self._cv.wait()
                if not self._queue:
                    return
                batch = self._queue[0]
            try:
                for i in range(0, len(batch), 1000):  # MLflow takes at most 1000 metrics per batch
                    self.client.log_batch(self.run_id, metrics=batch[i:i + 1000])
            except Exception as e:  # the server is away (or refused): wait, then the same batch again
                self.failures += 1
                if self.failures == 1 or self.failures % 10 == 0:
                    log.warning("MLflow metrics for run %s not written (%s: %s); training goes on, retrying",
                                self.run_id, type(e).__name__, str(e).splitlines()[0][:200] if str(e) else "")
                with self._cv:
                    if self._closing:
                        return
                    t0 = time.monotonic()
                    self._cv.wait(backoff)
                    self.outage_s += time.monotonic() - t0
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            backoff = self.first_backoff_s
            with self._cv:
                if self._queue and self._queue[0] is batch:
                    self._queue.popleft()
                    self._pending -= len(batch)
                self._cv.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait until every queued metric is written; False when `timeout` passed first."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._queue:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 0.5))
        return True

    def close(self, timeout: float = 30.0) -> list:
        """Stop after writing what the server takes within `timeout`; returns the metrics it did not."""
        self.flush(timeout)
        with self._cv:
            self._closing = True
            left = self._overflow + [m for batch in self._queue for m in batch]
            self._queue.clear()
            self._overflow, self._pending = [], 0
            self._cv.notify_all()
        return left


def _row(m) -> dict[str, Any]:
    return {"key": m.key, "value": m.value, "timestamp": m.timestamp, "step": m.step}


def spill(run_uri: str, metrics: list, opts: storage.StorageOptions | None = None) -> str | None:
    """Write metrics the server never took to RUN/pending_metrics/ (JSON lines); returns the URI."""
    if not metrics:
        return None
    uri = storage.join(run_uri, PENDING_DIR, f"{time.time_ns()}.jsonl")
    storage.write_bytes(uri, "".join(json.dumps(_row(m)) + "\n" for m in metrics).encode(), opts)
    return uri


def replay_metrics(run_uri: str, client, run_id: str, opts: storage.StorageOptions | None = None) -> int:
    """Send the spilled metrics of a run to its MLflow run and remove each file once it is written;
    returns how many were sent. A file the server does not take stays for the next try."""
    from mlflow.entities import Metric

    sent = 0
    try:
        files = storage.list_files(storage.join(run_uri, PENDING_DIR), (".jsonl",), opts)
    except FileNotFoundError:  # nothing was ever spilled
        return 0
    for uri in files:
        rows = [json.loads(line) for line in storage.read_bytes(uri, opts).decode().splitlines() if line.strip()]
        metrics = [Metric(r["key"], float(r["value"]), int(r["timestamp"]), int(r["step"])) for r in rows]
        for i in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[i:i + 1000])
        storage.delete(uri, opts)
        sent += len(metrics)
    return sent
