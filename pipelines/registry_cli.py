"""The registry CLI: `pixelclip registry ...` / `python -m pipelines.registry_cli ...`.

    list [--json]                                      models, versions, aliases, their runs' metrics
    alias NAME ALIAS VERSION | unalias NAME ALIAS      set, move or remove an alias
    segment models:/pixelclip@champion photo.jpg --classes "cat, sky" -o out.png

It reads MLFLOW_TRACKING_URI and fails fast when it is unset or no MLflow server answers there.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import mlflow
import numpy as np
from PIL import Image

from pipelines.registry import delete_alias, list_models, load, parse_classes, read_image, set_alias

START_HINT = "start a server with `pixelclip tracking start --data .stack/mlflow` and export the URI it prints"


def _tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, checked to answer like an MLflow server (a `TrackingError` otherwise)."""
    from pipelines.mlflow_client import TrackingError, check_tracking

    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if not uri:
        raise TrackingError(f"MLFLOW_TRACKING_URI is not set; {START_HINT}")
    check_tracking(uri)
    return uri


def _print_models(models: list[dict]) -> None:
    if not models:
        print("no registered models")
    for m in models:
        aliases = ", ".join(f"@{a} -> v{v}" for a, v in sorted(m["aliases"].items())) or "no aliases"
        print(f"{m['name']}  ({len(m['versions'])} versions; {aliases})")
        for v in reversed(m["versions"]):
            tags = " ".join(f"@{a}" for a in v["aliases"])
            metrics = " ".join(f"{k}={val:.4g}" for k, val in sorted(v["metrics"].items()))
            print(f"  v{v['version']:<4} {tags:<16} run {v['run_id'] or '-'}  {v['status']}  {metrics}".rstrip())


def _segment_command(args) -> None:
    from pixelclip.viz import overlay

    names = parse_classes(args.classes)
    image = read_image(args.image)
    labels = load(args.model_uri, device=args.device, protocol=args.protocol).segment(image, names)[0].cpu()
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    overlay(image, labels, names).save(args.output)
    if args.labels:
        Image.fromarray(labels.numpy().astype(np.uint8 if len(names) < 256 else np.uint16)).save(args.labels)
    counts = np.bincount(labels.numpy().ravel(), minlength=len(names)) / labels.numel()
    print(", ".join(f"{n} {c:.1%}" for n, c in zip(names, counts, strict=True)))
    print(f"wrote {args.output}" + (f" and {args.labels}" if args.labels else ""))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pixelclip registry", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="registered models, versions, aliases and their runs' metrics")
    ls.add_argument("--json", action="store_true", help="print JSON")
    a = sub.add_parser("alias", help="point ALIAS of model NAME at VERSION")
    a.add_argument("name")
    a.add_argument("alias")
    a.add_argument("version")
    u = sub.add_parser("unalias", help="remove ALIAS from model NAME")
    u.add_argument("name")
    u.add_argument("alias")
    s = sub.add_parser("segment", help="segment an image with a registered model and write an overlay")
    s.add_argument("model_uri", help="e.g. models:/pixelclip@champion")
    s.add_argument("image", help="a PNG/JPEG file (or s3:// URI)")
    s.add_argument("--classes", required=True, help='comma-separated class names, e.g. "cat, grass, sky"')
    s.add_argument("-o", "--output", default="overlay.png", help="overlay PNG (default overlay.png)")
    s.add_argument("--labels", help="also write the label map as a PNG of class indices")
    s.add_argument("--device", help="auto (default), cpu, cuda, cuda:1")
    s.add_argument("--protocol", choices=["whole", "slide"], help="inference protocol (default: the model's)")
    return p


def main(argv: list[str] | None = None) -> int:
    """`{list,alias,unalias,segment} ...` against MLFLOW_TRACKING_URI; 0 on success, 2 on an error."""
    from pipelines.mlflow_client import TrackingError

    args = _parser().parse_args(argv)
    try:
        mlflow.set_tracking_uri(_tracking_uri())
        if args.command == "list":
            models = list_models()
            if args.json:
                print(json.dumps(models, indent=2))
            else:
                _print_models(models)
        elif args.command == "alias":
            set_alias(args.name, args.alias, args.version)
            print(f"{args.name}@{args.alias} -> version {args.version}")
        elif args.command == "unalias":
            delete_alias(args.name, args.alias)
            print(f"removed alias {args.alias!r} from {args.name}")
        else:
            _segment_command(args)
    except (TrackingError, mlflow.exceptions.MlflowException, ValueError, OSError) as err:
        print(f"error: {getattr(err, 'message', None) or err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
