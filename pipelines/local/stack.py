"""The local stack: SeaweedFS (S3), the MLflow server and a Ray head on 127.0.0.1, in one folder.

    pixelclip stack up [--stack-dir .stack] [--num-cpus 4]    # start what is not running; print addresses
    source .stack/env.sh                                # AWS_*, MLFLOW_TRACKING_URI, RAY_ADDRESS, ...
    ray job submit --working-dir . -- python -m pipelines.cli train ...
    pixelclip stack status
    pixelclip stack down                                # stop all three; no process is left behind

`up` is idempotent: a service already running for the folder is reused, never started twice. The
object store gets a bucket `data` (MLflow's artifacts live in s3://data/mlflow). The Ray head runs
with the store's keys and the MLflow address in its environment, so every job and worker it runs
finds them the way a cluster's nodes find an instance role: nothing secret goes on a command line.
`env.sh` (0600) holds what a shell needs: the keys, MLFLOW_TRACKING_URI, RAY_ADDRESS (the GCS, for
ray.init), RAY_API_SERVER_ADDRESS (the job API, for `ray job submit`) and RAY_AUTH_TOKEN_PATH.
"""

from __future__ import annotations

from pathlib import Path

from pipelines.local.service import write_private

BUCKET = "data"


class Stack:
    """The three services of one stack folder."""

    def __init__(self, root: str | Path = ".stack", num_cpus: int | None = None, num_gpus: int | None = None):
        from pipelines.local.objectstore import SeaweedFS

        self.root = Path(root).expanduser().resolve()
        self.store = SeaweedFS(self.root / "seaweedfs")
        self.num_cpus, self.num_gpus = num_cpus, num_gpus
        self.notes: list[str] = []

    env_file = property(lambda self: self.root / "env.sh")

    def tracking(self):
        from pipelines.local.tracking import MLflowServer

        return MLflowServer(self.root / "mlflow", artifacts_uri=f"s3://{BUCKET}/mlflow",
                            storage_opts=self.store.storage_options())

    def head(self):
        from pipelines.local.ray_head import RayHead

        env = {**self.store.env(), "MLFLOW_TRACKING_URI": self.tracking().tracking_uri,
               "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}  # no download bars from every actor
        return RayHead(self.root / "ray", num_cpus=self.num_cpus, num_gpus=self.num_gpus, env=env)

    def up(self) -> dict[str, str]:
        """Start (or reuse) the store, then MLflow, then the Ray head; write env.sh; return the env.

        Each service comes back on its last ports when they are free. When one had to move, the
        services that point at it restart (MLflow follows the store; the Ray head and its jobs follow
        both), and `self.notes` says so, as it says which flags a running head kept."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.notes = []
        self.store.start()
        self.store.create_bucket(BUCKET)
        tracking = self.tracking()
        state, running = tracking._running_state()
        endpoint = self.store.env()["AWS_ENDPOINT_URL"]
        if running and state.get("store_endpoint") not in (None, endpoint):
            self.notes.append(f"restarted the MLflow server: the object store moved to {endpoint}")
            tracking.stop()
        tracking.start()
        head = self.head()
        state, running = head._running_state()
        if running and state.get("serves") not in (None, head.serves()):
            moved = ", ".join(f"{k} {v}" for k, v in head.serves().items() if state["serves"].get(k) != v)
            self.notes.append(f"restarted the Ray head (its running jobs stopped): {moved}")
            head.stop()
        elif running:
            kept = [f"num-{r}={state.get(f'num_{r}')} (asked {want})" for r, want in
                    (("cpus", self.num_cpus), ("gpus", self.num_gpus))
                    if want is not None and state.get(f"num_{r}") != want]
            if kept:
                self.notes.append(f"the running Ray head keeps {', '.join(kept)}: `pixelclip stack down` "
                                  "then `up` with the new flags to change it")
        head = head.start()
        env = {**self.store.env(), "MLFLOW_TRACKING_URI": self.tracking().tracking_uri, **head.client_env()}
        lines = [f"# the local stack in {self.root}: `source` this file\n"]
        lines += [f"export {k}={v}\n" for k, v in env.items()]
        write_private(self.env_file, "".join(lines))
        return env

    def down(self) -> None:
        """Stop the Ray head (and its jobs), MLflow, then the store."""
        from pipelines.local.ray_head import RayHead
        from pipelines.local.tracking import MLflowServer

        RayHead(self.root / "ray").stop()
        MLflowServer(self.root / "mlflow").stop()
        self.store.stop()
        self.env_file.unlink(missing_ok=True)

    def status(self) -> dict[str, dict]:
        """Whether each service runs, and where."""
        from pipelines.local.ray_head import RayHead
        from pipelines.local.tracking import MLflowServer

        head = RayHead(self.root / "ray")
        state, running = head._running_state()
        return {"object store": self.store.status(), "mlflow": MLflowServer(self.root / "mlflow").status(),
                "ray head": {"running": running, "pid": state["pid"] if running else None,
                             "dashboard": head.dashboard_url if running else None,
                             "address": head.address if running else None}}
