"""Rank 0's view of a training run: a console line per report (and at least every 30 s between
reports) and the metrics in MLflow, written through `MetricSink` so that an MLflow outage never stops
training; after the run, the driver sends what an outage held back (`send_pending_metrics`)."""

from __future__ import annotations

import sys
import time


class Progress:
    """Rank 0's view of the run: a console line per report (and at least every `every_s` seconds between
    reports) and the metrics in MLflow."""

    def __init__(self, run_id: str | None, tracking_uri: str | None, total: int, batch: int, every_s: float = 30.0):
        self.sink = None
        if run_id:  # MLflow writes go through a background thread: an outage never stops training
            import mlflow

            from pipelines.stages.train.metric_sink import MetricSink

            self.sink = MetricSink(mlflow.MlflowClient(tracking_uri), run_id)
        self.run_id, self.total, self.batch, self.every_s = run_id, total, batch, every_s
        self.t0 = self.t_line = time.perf_counter()
        self.step0: int | None = None

    def start(self, step: int) -> None:
        """The step training (re)starts from: time left is estimated from the steps run since."""
        self.step0, self.t0 = step, time.perf_counter()

    def _line(self, step: int, m: dict, rate: float) -> None:
        done = step - (self.step0 if self.step0 is not None else step)
        left = (time.perf_counter() - self.t0) / done * (self.total - step) if done > 0 else None
        val = f"  val mIoU {m['val_miou']:.1f}" if "val_miou" in m else ""
        eta = f"{left / 60:.1f} min" if left is not None else "(after the first step)"
        # written to the stream itself: Ray Train turns a worker's print() into a log record as well,
        # which would show every line twice on the console
        sys.stdout.write(f"step {step}/{self.total}  loss {m.get('loss', float('nan')):.4f}  {rate:.1f} img/s  "
                         f"clusters {m.get('clusters_used', 0):.0f}{val}  time left {eta}\n")
        sys.stdout.flush()
        self.t_line = time.perf_counter()

    def tick(self, step: int, m: dict) -> None:
        """After every step: a line when `every_s` passed since the last one (no MLflow write)."""
        now = time.perf_counter()
        if now - self.t_line >= self.every_s:
            done = step - (self.step0 or 0)
            self._line(step, m, done * self.batch / max(now - self.t0, 1e-9))

    def __call__(self, step: int, m: dict) -> None:
        self._line(step, m, m.get("images_per_s", 0.0))
        if self.sink is not None:
            self.log(step, m)

    def log(self, step: int, m: dict) -> None:
        """Numeric metrics to the MLflow run at `step` (a validation only at the step it was measured)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        stale = m.get("val_step", step) != step
        metrics = [Metric(k.replace("/", "_"), float(v), now, step) for k, v in m.items()
                   if isinstance(v, int | float) and k not in ("step", "val_step")
                   and not (stale and k.startswith("val_"))]
        self.sink.log(metrics)

    def close(self, run_uri: str, timeout: float = 30.0) -> None:
        """Write what the sink still holds within `timeout`; the rest goes to RUN/pending_metrics/."""
        if self.sink is None:
            return
        from pipelines.stages.train.metric_sink import spill

        left = self.sink.close(timeout)
        if left:
            where = spill(run_uri, left)
            sys.stdout.write(f"MLflow did not take {len(left)} metrics ({self.sink.failures} failed writes): "
                             f"kept in {where}; the driver sends them when the run ends\n")
            sys.stdout.flush()


def send_pending_metrics(config, opts, wait_s: float = 120.0) -> int:
    """The metrics rank 0 could not write during an MLflow outage (RUN/pending_metrics/), sent to the
    run now, each once; retried for `wait_s` while the server is still away. Files that stay are sent
    by the next resume or run of the same name."""
    if not config.run_id:  # a LoopConfig
        return 0
    import mlflow

    from pipelines.stages.train.metric_sink import replay_metrics

    client = mlflow.MlflowClient(config.tracking_uri)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            sent = replay_metrics(config.run_uri, client, config.run_id, opts)
        except Exception as e:  # the server is still away: training's result does not depend on it
            if time.monotonic() > deadline:
                print(f"warning: {config.run_uri}/pending_metrics/ not sent to MLflow ({type(e).__name__}); "
                      "the next run of this name sends it", flush=True)
                return 0
            time.sleep(5)
            continue
        if sent:
            print(f"sent {sent} metrics that MLflow missed during the run", flush=True)
        return sent
