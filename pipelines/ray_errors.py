"""What a user sees when Ray is in the way: connecting with a clear message, and the root cause of a
failure inside Ray (a task, an actor, a Ray Data stage, a Ray Train worker) in one line.

    connect(address)          # ray.init; "cannot reach ... source .stack/env.sh" instead of a 20 s retry loop
    root_cause(err)           # the exception a worker raised, behind Ray's wrappers
    describe(err)             # "ValueError: ..." of the root cause, one line
    is_user_error(err)        # whether the CLI shows it as one line (a message that says what to fix)
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# the last line of a traceback: "ValueError: message" or "pkg.mod.SomeError: message"
_FINAL = re.compile(r"^(?P<type>[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Failure))(?:: (?P<msg>.*))?$")

STACK_HINT = ("for the local stack, `source .stack/env.sh` first (written by `pixelclip stack up`: it sets "
              "RAY_ADDRESS and the token's path, RAY_AUTH_TOKEN_PATH); for another cluster, check the address and "
              "its auth token (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN_PATH)")


class RayConnectError(ConnectionError):
    """This process could not join the Ray cluster; the message says what to set."""


def connect(address: str | None = None, **kwargs) -> None:
    """`ray.init(address)` for a driver of this project; a refused or unreachable cluster becomes one
    `RayConnectError` that names `.stack/env.sh`."""
    import ray
    from ray.exceptions import AuthenticationError

    try:
        ray.init(address=address, ignore_reinit_error=True, **kwargs)
    except (ConnectionError, AuthenticationError) as e:  # no token, a wrong token, or nothing listening
        where = address or os.environ.get("RAY_ADDRESS") or "the default address"
        token = "no auth token in this environment" if not (
            os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")) else "with this token"
        said = (str(e).splitlines() or [type(e).__name__])[0].split(". ")[0].rstrip(".")  # Ray's first sentence
        raise RayConnectError(f"cannot join the Ray cluster at {where} ({token}; Ray said: {said}): "
                              f"{STACK_HINT}") from None


def _chain(err: BaseException) -> list[BaseException]:
    """`err` and what it wraps: Ray's task errors (`.cause`), Ray Train's worker failures, `__cause__`."""
    out, seen = [], set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        out.append(err)
        nxt = getattr(err, "cause", None)
        if not isinstance(nxt, BaseException):
            failures = getattr(err, "worker_failures", None)  # Ray Train: {rank: exception}
            nxt = next(iter(failures.values()), None) if isinstance(failures, dict) and failures else None
        if not isinstance(nxt, BaseException):
            nxt = err.__cause__
        err = nxt
    return out


def inside_ray(err: BaseException) -> bool:
    """Whether Ray wrapped this failure (it happened in a task, an actor or a training worker)."""
    return any(type(e).__module__.startswith("ray.") or "RayTaskError" in type(e).__name__ for e in _chain(err))


def root_cause(err: BaseException) -> BaseException:
    """The innermost exception behind Ray's wrappers; `err` itself when nothing wraps it."""
    chain = _chain(err)
    for e in reversed(chain):  # the first one that is not a Ray wrapper, from the inside
        if not (type(e).__module__.startswith("ray.") or "RayTaskError" in type(e).__name__):
            return e
    return chain[-1]


def _is_wrapper(e: BaseException) -> bool:
    return type(e).__module__.startswith("ray.") or "RayTaskError" in type(e).__name__


def describe(err: BaseException) -> str:
    """The root cause in one line. When Ray kept only the text of what a worker raised (Ray Data's
    UserCodeException carries no cause object), the worker's exception line is read from that text."""
    cause = root_cause(err)
    if not _is_wrapper(cause):
        return one_line(cause)
    for e in _chain(err):
        for line in str(e).splitlines():
            m = _FINAL.match(line.strip())
            if m and not m["type"].startswith("ray."):
                name = m["type"].rsplit(".", 1)[-1]
                return f"{name}: {m['msg'][:400]}" if m["msg"] else name
    return one_line(cause)


def one_line(err: BaseException) -> str:
    text = str(err).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(err).__name__}: {first[:400]}" if first else type(err).__name__


_OURS = (str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent / "pixelclip"))


def _raised_here(e: BaseException) -> bool:
    """Whether the innermost frame of `e`'s traceback is in this project's code (pipelines/, pixelclip/)."""
    tb = e.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename.startswith(_OURS)


def is_user_error(e: Exception) -> bool:
    """Errors that say what to fix (bad values, missing files, unreachable services): a message, no
    traceback. A RuntimeError counts only when this project raised it (its messages say what to fix);
    one from inside a library is a bug to see whole."""
    if isinstance(e, ValueError | FileNotFoundError) or type(e).__module__.startswith("mlflow"):
        return True
    return isinstance(e, RuntimeError) and _raised_here(e)
