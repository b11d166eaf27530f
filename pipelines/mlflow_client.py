"""Reaching an MLflow tracking server from the stages, the registry CLI and the local stack alike:
`check_tracking` fails fast, in one line, unless an MLflow server answers at a URI. The stages import
this, never the module that manages the local server (`pipelines.local.tracking`)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from urllib.parse import urlparse

LOOPBACK = ("127.0.0.1", "localhost", "::1")
START_HINT = "is it running? (pixelclip tracking start)"


class TrackingError(RuntimeError):
    """The MLflow tracking server could not be reached (or, for the local server, started or stopped)."""


def opener(uri: str) -> urllib.request.OpenerDirector:
    """No HTTP proxy for a server on this machine (an http_proxy variable must not swallow 127.0.0.1)."""
    host = urlparse(uri).hostname or ""
    handlers = [urllib.request.ProxyHandler({})] if host in LOOPBACK else []
    return urllib.request.build_opener(*handlers)


def probe(uri: str, timeout: float) -> tuple[str, str] | None:
    """None when `uri` answers like an MLflow tracking server, else (kind, reason) with kind in
    "unreachable" (nothing answers), "refused" (MLflow said no) or "foreign" (some other HTTP server)."""
    url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
    try:
        with opener(uri).open(url, timeout=timeout) as resp:
            status, body = resp.status, resp.read(65536)
    except urllib.error.HTTPError as err:
        status, body = err.code, err.read(65536)
    except (urllib.error.URLError, OSError, ValueError) as err:  # refused, timed out, bad host
        return "unreachable", str(getattr(err, "reason", err))
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if status == 200 and isinstance(data, dict):
        return None
    if isinstance(data, dict) and "error_code" in data:
        return "refused", f"HTTP {status} {data['error_code']}: {str(data.get('message', ''))[:200]}"
    return "foreign", f"HTTP {status}, {body[:80]!r}"


def check_tracking(uri: str, timeout: float = 5.0) -> None:
    """Fail fast with a `TrackingError` unless an MLflow tracking server answers at `uri` (http[s]://host:port)."""
    if not str(uri).startswith(("http://", "https://")):
        raise TrackingError(f"{uri!r} is not the URI of an MLflow tracking server; expected http://host:port "
                            "(pixelclip tracking start prints it)")
    problem = probe(str(uri), timeout)
    if problem is None:
        return
    kind, reason = problem
    if kind == "unreachable":
        raise TrackingError(f"cannot reach the MLflow server at {uri} ({reason}): {START_HINT}")
    if kind == "refused":
        raise TrackingError(f"the MLflow server at {uri} refused a search for experiments: {reason}")
    raise TrackingError(f"{uri} answers but is not an MLflow tracking server ({reason}): {START_HINT}")
