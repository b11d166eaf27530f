"""The local stack: SeaweedFS (S3), an MLflow server and a Ray head with token authentication, all on
127.0.0.1, in one folder. `up` is idempotent and brings a dead service back on its ports; `down` leaves
no process behind."""

from __future__ import annotations

import sys

from pipelines.cli.common import add_stack_dir

HELP = "the local stack: object store, MLflow and a Ray head on 127.0.0.1 (up|down|status)"


def add_arguments(p) -> None:
    p.add_argument("action", choices=["up", "down", "status"], help="start (or complete), stop, or report")
    add_stack_dir(p)
    p.add_argument("--num-cpus", type=int, help="logical CPUs of the Ray head (default: the machine's)")
    p.add_argument("--num-gpus", type=int, help="GPUs of the Ray head (default: the machine's)")


def run(args) -> int:
    from pipelines.local.service import ServiceError
    from pipelines.local.stack import BUCKET, Stack

    stack = Stack(args.stack_dir, args.num_cpus, args.num_gpus)
    try:
        if args.action == "up":
            env = stack.up()
            for note in stack.notes:
                print(f"note: {note}")
            print(f"object store  {env['AWS_ENDPOINT_URL']}  (bucket s3://{BUCKET})")
            print(f"MLflow        {env['MLFLOW_TRACKING_URI']}")
            print(f"Ray           {env['RAY_API_SERVER_ADDRESS']}  (dashboard and jobs; GCS {env['RAY_ADDRESS']})")
            print(f"to use it:    source {stack.env_file}")
        elif args.action == "down":
            stack.down()
            print(f"stopped the stack in {stack.root}")
        else:
            for name, st in stack.status().items():
                where = st.get("dashboard") or st.get("tracking_uri") or st.get("endpoint") or ""
                print(f"{name:13} {'running' if st['running'] else 'stopped'}  {where}")
    except ServiceError as e:
        print(f"pixelclip stack {args.action}: error: {e}", file=sys.stderr)
        return 2
    return 0
