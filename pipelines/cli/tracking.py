"""The local MLflow server on 127.0.0.1 (SQLite, artifacts in its folder or in s3://)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from pipelines.cli.common import report_status

HELP = "start, stop or report the local MLflow server"


def add_arguments(p) -> None:
    p.add_argument("action", choices=["start", "stop", "status"], help="what to do with the server")
    p.add_argument("--dir", type=Path, default=Path(".stack/mlflow"), help="its folder (created if missing)")
    p.add_argument("--port", type=int, help="port on 127.0.0.1 (default: the last one, else a free one)")
    p.add_argument("--artifacts", help="artifact store, e.g. s3://mlflow/artifacts (endpoint and keys from AWS_*; "
                                       "default DIR/artifacts)")
    p.add_argument("--backend", help="database URI (default sqlite:///DIR/mlflow.db)")
    p.add_argument("--timeout", type=float, default=180.0,
                   help="start: seconds to wait for the server (a loaded machine may need minutes)")


def run(args) -> int:
    from pipelines.local.tracking import MLflowServer
    from pipelines.mlflow_client import TrackingError
    from pipelines.storage import StorageOptions, is_s3, mask

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        server = MLflowServer(args.dir, port=args.port, backend_uri=args.backend, artifacts_uri=args.artifacts)
        if args.action == "start":
            if is_s3(server.artifacts_uri):
                opts = StorageOptions.from_env()
                print(f"artifacts on {opts.endpoint_name} with access key {mask(opts.access_key)}")
            _print_running(server, server.start(timeout=args.timeout).status())
        elif args.action == "stop":
            server.stop()
            print(f"MLflow server in {server.data_dir} stopped")
        else:
            return report_status(f"MLflow server in {server.data_dir}", server.status(),
                                 lambda st: _print_running(server, st))
    except TrackingError as err:
        print(f"pixelclip tracking {args.action}: error: {err}", file=sys.stderr)
        return 2
    return 0


def _print_running(server, st: dict) -> None:
    print(f"MLflow server in {server.data_dir}: running (pid {st['pid']}), tracking URI {st['tracking_uri']}")
    print(f"backend {st['backend']}; artifacts {st['artifacts']}")
    print(f"to use it: export MLFLOW_TRACKING_URI={st['tracking_uri']}")
