"""The MLflow model registry at MLFLOW_TRACKING_URI: models, versions, aliases and their runs' metrics.
Segment with a registered model through `pixelclip segment --model models:/NAME@ALIAS`."""

from __future__ import annotations

import json
import os
import sys

from pipelines.cli.common import HelpFormatter

HELP = "list models, move aliases (segment with pixelclip segment --model models:/NAME@ALIAS)"
START_HINT = "start a server with `pixelclip tracking start --dir .stack/mlflow` and export the URI it prints"


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="registry_command", required=True, metavar="ACTION")
    ls = sub.add_parser("list", help="registered models, versions, aliases and their runs' metrics",
                        formatter_class=HelpFormatter)
    ls.add_argument("--json", action="store_true", help="print JSON")
    a = sub.add_parser("alias", help="point ALIAS of model NAME at VERSION", formatter_class=HelpFormatter)
    a.add_argument("name", help="the registered model")
    a.add_argument("alias", help="the alias, e.g. champion")
    a.add_argument("version", help="the version it points at")
    u = sub.add_parser("unalias", help="remove ALIAS from model NAME", formatter_class=HelpFormatter)
    u.add_argument("name", help="the registered model")
    u.add_argument("alias", help="the alias to remove")


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, checked to answer like an MLflow server (a `TrackingError` otherwise)."""
    from pipelines.mlflow_client import TrackingError, check_tracking

    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if not uri:
        raise TrackingError(f"MLFLOW_TRACKING_URI is not set; {START_HINT}")
    check_tracking(uri)
    return uri


def print_models(models: list[dict]) -> None:
    if not models:
        print("no registered models")
    for m in models:
        aliases = ", ".join(f"@{a} -> v{v}" for a, v in sorted(m["aliases"].items())) or "no aliases"
        print(f"{m['name']}  ({len(m['versions'])} versions; {aliases})")
        for v in reversed(m["versions"]):
            tags = " ".join(f"@{a}" for a in v["aliases"])
            metrics = " ".join(f"{k}={val:.4g}" for k, val in sorted(v["metrics"].items()))
            print(f"  v{v['version']:<4} {tags:<16} run {v['run_id'] or '-'}  {v['status']}  {metrics}".rstrip())


def run(args) -> int:
    import mlflow

    from pipelines.mlflow_client import TrackingError
    from pipelines.registry import delete_alias, list_models, set_alias

    try:
        mlflow.set_tracking_uri(tracking_uri())
        if args.registry_command == "list":
            models = list_models()
            if args.json:
                print(json.dumps(models, indent=2))
            else:
                print_models(models)
        elif args.registry_command == "alias":
            set_alias(args.name, args.alias, args.version)
            print(f"{args.name}@{args.alias} -> version {args.version}")
        else:
            delete_alias(args.name, args.alias)
            print(f"removed alias {args.alias!r} from {args.name}")
    except (TrackingError, mlflow.exceptions.MlflowException, ValueError, OSError) as err:
        print(f"pixelclip registry {args.registry_command}: error: {getattr(err, 'message', None) or err}",
              file=sys.stderr)
        return 2
    return 0
