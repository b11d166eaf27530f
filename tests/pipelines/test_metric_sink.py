"""Tracking off the critical path: training's metric writes survive an MLflow outage (a real server
stopped and started again on its port), bounded, spilled to the run's storage, replayed once."""

from __future__ import annotations

import time

import pytest

from pipelines.local.tracking import MLflowServer
from pipelines.stages.train.metric_sink import MetricSink, replay_metrics, spill

pytestmark = pytest.mark.slow


def _metrics(step: int):
    from mlflow.entities import Metric

    return [Metric("loss", 1.0 / (step + 1), 1_000 + step, step), Metric("val_miou", float(step), 1_000 + step, step)]


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_an_mlflow_outage_costs_no_metric_and_no_step(tmp_path):
    import mlflow

    server = MLflowServer(tmp_path / "mlflow").start(timeout=240)  # a loaded machine starts it slowly
    try:
        uri = server.tracking_uri
        client = mlflow.MlflowClient(uri)
        run_id = client.create_run(client.create_experiment("sink")).info.run_id
        sink = MetricSink(mlflow.MlflowClient(uri), run_id, max_pending=6, first_backoff_s=0.2)
        sink.log(_metrics(0))
        assert sink.flush(60), "the first batch was not written while the server was up"

        server.stop()  # the outage: every write fails from here
        t0 = time.perf_counter()
        for step in range(1, 9):
            sink.log(_metrics(step))  # what training calls at every report
        assert time.perf_counter() - t0 < 1.0, "logging blocked while the server was away"
        deadline = time.monotonic() + 60
        while sink.failures == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sink.failures >= 1
        assert sink._pending <= 6 + 2  # bounded: the oldest were set aside for the spill file
        left = sink.close(timeout=1.0)  # the run ends before the server is back
        assert sorted({m.step for m in left}) == list(range(1, 9)) and len(left) == 16
        where = spill(str(tmp_path / "run"), left)
        assert where and where.endswith(".jsonl")

        again = MLflowServer(tmp_path / "mlflow").start(timeout=240)
        assert again.tracking_uri == uri  # it came back on its port: everything pointing at it still works
        assert replay_metrics(str(tmp_path / "run"), client, run_id) == 16
        assert replay_metrics(str(tmp_path / "run"), client, run_id) == 0  # each spill file is sent once
        expected = [(s, 1.0 / (s + 1)) for s in range(9)]
        assert _history(client, run_id, "loss") == expected  # every metric, once
        assert _history(client, run_id, "val_miou") == [(s, float(s)) for s in range(9)]
    finally:
        MLflowServer(tmp_path / "mlflow").stop()
