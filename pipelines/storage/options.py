"""Where the object store is and who we are: `StorageOptions`, the errors, and how keys reach Ray's
workers (never through the job: `for_ray`, `keys_in_a_file`)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path

DEFAULT_REGION = "us-east-1"


class StorageError(RuntimeError):
    """A storage location cannot be used; the message says why (and never holds a secret)."""


def mask(value: str | None, keep: int = 4, tail: int = 3) -> str:
    """`AKIA...xyz`: enough of a key to recognise it, never the whole of it."""
    if not value:
        return "<none>"
    if len(value) <= keep + tail + 2:
        return value[:2] + "..."
    return f"{value[:keep]}...{value[-tail:]}"


@dataclass
class StorageOptions:
    """Where the object store is and who we are; None means the library's default."""

    endpoint_url: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    region: str | None = None
    session_token: str | None = None

    @classmethod
    def from_env(cls, **overrides) -> StorageOptions:
        """Read the standard AWS variables; keyword arguments that are not None win."""
        env = os.environ
        opts = cls(endpoint_url=env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
                   access_key=env.get("AWS_ACCESS_KEY_ID") or None,
                   secret_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
                   region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
                   session_token=env.get("AWS_SESSION_TOKEN") or None)
        names = {f.name for f in fields(cls)}
        for key, value in overrides.items():
            if key not in names:
                raise TypeError(f"unknown storage option {key!r}; expected one of {sorted(names)}")
            if value is not None:
                setattr(opts, key, value)
        return opts

    def __repr__(self) -> str:
        secret = "'***'" if self.secret_key else None
        token = "'***'" if self.session_token else None
        return (f"StorageOptions(endpoint_url={self.endpoint_url!r}, access_key={mask(self.access_key)!r}, "
                f"secret_key={secret}, region={self.region!r}, session_token={token})")

    __str__ = __repr__

    @property
    def endpoint_name(self) -> str:
        """The endpoint for messages."""
        return self.endpoint_url or f"AWS S3 ({self.region or 'default region'})"

    @property
    def region_name(self) -> str | None:
        """Custom endpoints (MinIO, SeaweedFS) get us-east-1 when no region is set; AWS resolves its own."""
        return self.region or (DEFAULT_REGION if self.endpoint_url else None)


def _opts(opts: StorageOptions | None) -> StorageOptions:
    return opts if opts is not None else StorageOptions.from_env()


def for_ray(opts: StorageOptions | None) -> StorageOptions:
    """The storage options to hand to Ray tasks, actors, trainers and sweeps: the endpoint and the
    region, never the keys. Ray records what it is given (runtime environments in its logs and in
    `ray list ... --detail`, arguments in its object store), so workers find the keys the way cluster
    nodes do: in their node's environment (the local stack's Ray head has them; on a cluster, the
    nodes' environment or an instance role). Refuses keys that this process's environment lacks,
    since then no worker started from here would have them either."""
    o = _opts(opts)
    if o.access_key and o.access_key not in (os.environ.get("AWS_ACCESS_KEY_ID"), _filed["key"]):
        raise StorageError(
            f"storage keys for {o.endpoint_name} were given in code but are not in this process's environment "
            "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY): Ray workers read the keys from their node's "
            "environment, never from the job; export them (for the local stack: source .stack/env.sh) before "
            "`ray start` and the job, or use an instance role")
    return StorageOptions(endpoint_url=o.endpoint_url, region=o.region)



KEY_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
_filed: dict = {"key": None}  # the access key `keys_in_a_file` moved out of the environment, while it is out


@contextlib.contextmanager
def keys_in_a_file():
    """Within the block, this process's storage keys live in a 0600 credentials file
    (AWS_SHARED_CREDENTIALS_FILE, which boto, s3fs and pyarrow read) instead of its environment.
    Ray Tune copies AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from the driver's environment into
    every trial's runtime environment, which Ray logs; a sweep runs inside this block."""
    saved = {k: os.environ[k] for k in KEY_VARS if k in os.environ}
    if not saved.get("AWS_ACCESS_KEY_ID"):
        yield
        return
    others = {k: os.environ.get(k) for k in ("AWS_SHARED_CREDENTIALS_FILE", "AWS_PROFILE")}
    with tempfile.TemporaryDirectory(prefix="pixelclip-keys-") as d:
        path = Path(d) / "credentials"
        names = {"AWS_ACCESS_KEY_ID": "aws_access_key_id", "AWS_SECRET_ACCESS_KEY": "aws_secret_access_key",
                 "AWS_SESSION_TOKEN": "aws_session_token"}
        lines = ["[default]"] + [f"{names[k]} = {v}" for k, v in saved.items() if k in names]
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.environ["AWS_SHARED_CREDENTIALS_FILE"] = str(path)
        os.environ.pop("AWS_PROFILE", None)
        for k in saved:
            del os.environ[k]
        _filed["key"] = saved["AWS_ACCESS_KEY_ID"]
        try:
            yield
        finally:
            _filed["key"] = None
            os.environ.update(saved)
            for k, v in others.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
