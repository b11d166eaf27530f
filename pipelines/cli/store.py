"""The local S3 object store (SeaweedFS) on 127.0.0.1, its keys in a 0600 file of its folder."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from pipelines.cli.common import report_status

HELP = "start, stop or report the local SeaweedFS object store"


def add_arguments(p) -> None:
    p.add_argument("action", choices=["start", "stop", "status"], help="what to do with the server")
    p.add_argument("--dir", type=Path, default=Path(".stack/seaweedfs"), help="its folder (created if missing)")
    p.add_argument("--port", type=int, help="S3 port on 127.0.0.1 (default: the last one, else a free one)")
    p.add_argument("--bucket", action="append", default=[], help="with start: also create this bucket; repeatable")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the server")


def run(args) -> int:
    from pipelines.local.objectstore import ObjectStoreError, SeaweedFS
    from pipelines.storage import mask

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    store = SeaweedFS(args.dir, s3_port=args.port)
    try:
        if args.action == "start":
            store.start(timeout=args.timeout)
            print(f"access key {mask(store.credentials()['access_key'])}; secret in {store.credentials_file}")
            for bucket in args.bucket:
                store.create_bucket(bucket)
                print(f"bucket {bucket} ready")
            _print_running(store, store.status())
        elif args.action == "stop":
            store.stop(timeout=args.timeout)
            print(f"SeaweedFS in {store.data_dir} stopped")
        else:
            return report_status(f"SeaweedFS in {store.data_dir}", store.status(), lambda st: _print_running(store, st))
    except ObjectStoreError as err:
        print(f"pixelclip store {args.action}: error: {err}", file=sys.stderr)
        return 2
    return 0


def _print_running(store, st: dict) -> None:
    print(f"SeaweedFS in {store.data_dir}: running (pid {st['pid']}), S3 endpoint {st['endpoint']}")
    print(f"to use it: source {store.env_file}")
