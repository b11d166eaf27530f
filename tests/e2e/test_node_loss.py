"""A node lost mid-run: a two-node Ray cluster on this machine (`ray.cluster_utils.Cluster`), DDP
with one worker per node (STRICT_SPREAD), the worker node killed after the first checkpoint and a
fresh node added; training resumes from that checkpoint and reaches its last step in one MLflow run."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.long]
REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import json, sys, threading, time
    from pathlib import Path
    import ray
    from ray.cluster_utils import Cluster
    import pixelclip
    from pipelines import storage
    from pipelines.stages.prepare import PrepareConfig, run_prepare
    from pipelines.synth.sa1b import write_shards
    from pipelines.stages.train.driver import run_train
    from pipelines.stages.train.job import TrainJobConfig
    from pixelclip.data.sa1b import ConvertOptions

    root, uri = Path(sys.argv[1]), sys.argv[2]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    doomed = cluster.add_node(num_cpus=2)
    ray.init(address=cluster.address, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    write_shards(str(root / "raw"), shards=2, images=24, size=(64, 96), masks=10, seed=5)
    run_prepare(PrepareConfig(input=str(root / "raw"), output=str(root / "ready"),
                              convert=ConvertOptions(short_side=48, min_area=4, max_masks=8)))
    model = pixelclip.load_config("tiny", ["optim.steps=16", "optim.batch_size=4", "data.resize_short=64",
                                           "data.crop=48"]).to_dict()
    job = TrainJobConfig(data=str(root / "ready"), storage=str(root / "runs"), name="node-loss", model=model,
                         workers=2, cpus_per_worker=1.0, checkpoint_every=4, log_every=2, max_failures=3,
                         placement="STRICT_SPREAD", tracking_uri=uri, seed=0)
    events, result = {}, {}

    def train():
        try:
            result.update(run_train(job))
        except BaseException as e:
            result["raised"] = repr(e)

    runner = threading.Thread(target=train, daemon=True)  # Ray starts nodes from the main thread only
    runner.start()
    run = root / "runs" / "node-loss"
    while not any(run.glob("**/checkpoint.safetensors")) and runner.is_alive():
        time.sleep(0.2)
    time.sleep(1)  # the checkpoint is complete once Ray Train has reported it
    events["killed_after"] = sorted(str(p.relative_to(run)) for p in run.glob("**/checkpoint.safetensors"))
    cluster.remove_node(doomed, allow_graceful=False)  # the whole node: raylet, its workers
    time.sleep(3)
    cluster.add_node(num_cpus=2)  # a replacement, as an autoscaler or KubeRay would start
    events["replaced"] = True
    runner.join(600)
    assert "raised" not in result, result.get("raised")
    print("RESULT " + json.dumps({**events, "checkpoint": result["checkpoint"], "error": result["error"],
                                  "run_id": result["mlflow_run_id"], "step": result["metrics"].get("step")}))
    ray.shutdown()
    cluster.shutdown()
""")


def test_a_lost_node_costs_a_restart_not_the_run(tmp_path):
    import mlflow

    from pipelines.local.tracking import MLflowServer

    server = MLflowServer(tmp_path / "mlflow").start(timeout=240)
    try:
        done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), server.tracking_uri], cwd=REPO,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        line = next(ln for ln in done.stdout.splitlines() if ln.startswith("RESULT "))
        result = json.loads(line.removeprefix("RESULT "))
        assert result["replaced"] and result["error"] is None and result["step"] == 16, result
        assert result["checkpoint"].endswith("checkpoint.safetensors")
        client = mlflow.MlflowClient(server.tracking_uri)
        runs = client.search_runs([client.get_experiment_by_name("pixelclip").experiment_id],
                                  filter_string="tags.`pixelclip.run` = 'node-loss'")
        assert [r.info.run_id for r in runs] == [result["run_id"]]  # one MLflow run, resumed into
        steps = [m.step for m in client.get_metric_history(result["run_id"], "loss")]
        assert max(steps) == 16
        from pixelclip.io import read_metadata

        resumed = read_metadata(result["checkpoint"])["extra"].get("resumed_at", [])
        assert resumed and 0 < resumed[0] < 16, resumed  # it went on from a checkpoint, not from step 0
    finally:
        MLflowServer(tmp_path / "mlflow").stop()
