"""Bounded retries for an object store that is briefly away, and the one line when it stays away."""

from __future__ import annotations

import os
import time

from pipelines.storage.options import StorageError, StorageOptions, _opts
from pipelines.storage.uris import is_s3

RETRY_ENV = "PIXELCLIP_STORAGE_RETRY_S"
DEFAULT_RETRY_S = 60.0  # how long an object store may be away before a read or write gives up
_TRANSIENT_NAMES = ("Connect", "Timeout", "IncompleteRead", "ResponseParser", "ClientPayload", "ServerDisconnected")
_TRANSIENT_CODES = ("SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttl", " 503", " 500")


def retry_budget() -> float:
    """Seconds a storage call keeps retrying a store that does not answer (PIXELCLIP_STORAGE_RETRY_S)."""
    text = os.environ.get(RETRY_ENV, "")
    try:
        return max(0.0, float(text)) if text else DEFAULT_RETRY_S
    except ValueError:
        raise StorageError(f"{RETRY_ENV}={text!r} is not a number of seconds") from None


def is_transient(err: BaseException) -> bool:
    """Whether `err` may pass if tried again: the store unreachable or timing out, throttling, a 5xx.
    Missing objects, refused permissions and bad credentials are not."""
    if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError, StorageError)):
        return False
    seen, e = set(), err
    while e is not None and id(e) not in seen:  # the cause chain: s3fs wraps botocore wraps aiohttp
        seen.add(id(e))
        if isinstance(e, (ConnectionError, TimeoutError)) or any(n in type(e).__name__ for n in _TRANSIENT_NAMES):
            return True
        if any(code in str(e) for code in _TRANSIENT_CODES):
            return True
        e = e.__cause__ or e.__context__
    return False


def unreachable(action: str, uri: str, opts: StorageOptions | None, err: BaseException,
                waited: float | None) -> StorageError:
    """The one line a user sees when the store stayed away (`waited` seconds, or None when it went
    in the middle of a stream): endpoint, object, what to do."""
    first = str(err).splitlines()[0] if str(err) else ""
    how = f"did not answer for {waited:.0f} s" if waited is not None else "went away"
    return StorageError(
        f"the object store at {_opts(opts).endpoint_name} {how} while {action} {uri} "
        f"({type(err).__name__}: {first[:160]}); start it again (local stack: `pixelclip stack status`, "
        f"`pixelclip stack up`) and rerun the job, or wait longer with {RETRY_ENV}")


def retrying(action: str, uri: str | os.PathLike, opts: StorageOptions | None, fn, budget: float | None = None):
    """`fn()`, tried again with bounded exponential backoff (0.5 s doubling to 8 s) while it fails
    transiently and less than `budget` seconds (default `retry_budget()`) have passed; then the
    `unreachable` error. Local paths are not retried."""
    if not is_s3(uri):
        return fn()
    budget = retry_budget() if budget is None else budget
    start, delay = time.monotonic(), 0.5
    while True:
        try:
            return fn()
        except Exception as err:
            waited = time.monotonic() - start
            if not is_transient(err):
                raise
            if waited + delay > budget:
                raise unreachable(action, str(uri), opts, err, waited) from err
            time.sleep(delay)
            delay = min(delay * 2, 8.0)
