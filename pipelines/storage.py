"""Storage by URI: `s3://bucket/prefix`, `file:///abs/path` or a plain local path.

Endpoint and credentials come from the standard variables (AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION or AWS_DEFAULT_REGION) or from an explicit
`StorageOptions`, so the same code runs against AWS S3, MinIO or the local SeaweedFS (`pipelines.objectstore`).
Jobs call `check_readable` / `check_writable` first: they fail fast with a `StorageError` that says what is wrong
(credentials, bucket, endpoint, empty prefix) and never contains a secret.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO
from urllib.parse import urlparse

import fsspec
from fsspec.implementations.local import LocalFileSystem

DEFAULT_REGION = "us-east-1"
_CRED_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "InvalidClientTokenId"}
_REGION_CODES = {"PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"}


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


# -- URIs ----------------------------------------------------------------------------------------------------


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


def is_s3(uri: str | os.PathLike) -> bool:
    """Whether `uri` names an object in an S3-compatible store."""
    return str(uri).startswith(("s3://", "s3a://"))


def split_uri(uri: str | os.PathLike) -> tuple[str, str]:
    """("s3", "bucket/key") or ("file", "/abs/path")."""
    text = str(uri)
    if is_s3(text):
        path = text.split("://", 1)[1].strip("/")
        if not path:
            raise StorageError(f"{text!r} names no bucket; expected s3://bucket/prefix")
        return "s3", path
    if text.startswith("file://"):
        parsed = urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            raise StorageError(f"{text!r}: file:// URIs must be absolute (file:///abs/path)")
        return "file", os.path.abspath(parsed.path)
    if "://" in text:
        raise StorageError(f"unsupported URI {text!r}; use s3://bucket/prefix, file:///abs/path or a local path")
    return "file", os.path.abspath(os.path.expanduser(text))


def _to_uri(original: str, path: str) -> str:
    """A path from a filesystem, written in the style of the URI it came from."""
    if is_s3(original):
        return f"{original.split('://', 1)[0]}://{path}"
    return f"file://{path}" if original.startswith("file://") else path


def join(uri: str | os.PathLike, *parts: str) -> str:
    """`join("s3://b/p", "x", "y.tar") == "s3://b/p/x/y.tar"`; local paths join like os.path.join."""
    text = str(uri)
    if is_s3(text) or text.startswith("file://"):
        tail = "/".join(str(p).strip("/") for p in parts if str(p).strip("/"))
        return f"{text.rstrip('/')}/{tail}" if tail else text
    return os.path.join(text, *map(str, parts))


# -- filesystems ---------------------------------------------------------------------------------------------


def fsspec_fs(uri: str | os.PathLike, opts: StorageOptions | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """An fsspec filesystem (s3fs or local) for `uri` and the path within it."""
    scheme, path = split_uri(uri)
    if scheme == "file":
        return LocalFileSystem(), path
    import s3fs

    o = _opts(opts)
    client_kwargs = {k: v for k, v in (("endpoint_url", o.endpoint_url), ("region_name", o.region_name)) if v}
    fs = s3fs.S3FileSystem(key=o.access_key, secret=o.secret_key, token=o.session_token,
                           client_kwargs=client_kwargs, use_listings_cache=False)
    return fs, path


def arrow_fs(uri: str | os.PathLike, opts: StorageOptions | None = None, with_keys: bool = True):
    """A `pyarrow.fs.FileSystem` (S3 or local) for `uri` and the path within it.

    pyarrow does not read AWS_ENDPOINT_URL itself, so the endpoint is passed explicitly. With
    `with_keys=False` the keys are left out and each process that unpickles the filesystem finds
    them in the standard AWS chain (environment, instance role): for holders that persist the
    filesystem object, such as Ray Tune's experiment state.
    """
    from pyarrow import fs as pafs

    scheme, path = split_uri(uri)
    if scheme == "file":
        return pafs.LocalFileSystem(), path
    o = _opts(opts)
    kwargs: dict = {"region": o.region_name} if o.region_name else {}
    if with_keys and o.access_key and o.secret_key:
        kwargs.update(access_key=o.access_key, secret_key=o.secret_key, session_token=o.session_token)
    if o.endpoint_url:
        parsed = urlparse(o.endpoint_url if "://" in o.endpoint_url else f"https://{o.endpoint_url}")
        kwargs.update(endpoint_override=parsed.netloc + parsed.path.rstrip("/"), scheme=parsed.scheme or "https")
    return pafs.S3FileSystem(**kwargs), path


# -- listing and checks ---------------------------------------------------------------------------------------


def _matches(path: str, suffixes: tuple[str, ...]) -> bool:
    return not suffixes or path.lower().endswith(tuple(s.lower() for s in suffixes))


def list_files(uri: str | os.PathLike, suffixes: tuple[str, ...] = (), opts: StorageOptions | None = None) -> list[str]:
    """Every file under `uri` (recursive; `uri` may also be one file) ending in one of `suffixes`, sorted."""
    text = str(uri)
    fs, path = fsspec_fs(text, opts)
    found = [p for p in fs.find(path) if not p.endswith("/")]  # no directory placeholders
    return sorted(_to_uri(text, p) for p in found if _matches(p, tuple(suffixes)))


def _describe(suffixes: tuple[str, ...]) -> str:
    return "files ending in " + " or ".join(suffixes) if suffixes else "files"


def _client(opts: StorageOptions):
    """A fail-fast botocore client (no retries, short connect timeout) for diagnosing access."""
    import botocore.config
    import botocore.session

    cfg = botocore.config.Config(connect_timeout=5, read_timeout=30, retries={"total_max_attempts": 1})
    return botocore.session.get_session().create_client(
        "s3", endpoint_url=opts.endpoint_url, region_name=opts.region_name or DEFAULT_REGION,
        aws_access_key_id=opts.access_key, aws_secret_access_key=opts.secret_key,
        aws_session_token=opts.session_token, config=cfg)


def _storage_error(err: Exception, opts: StorageOptions, bucket: str, uri: str) -> StorageError:
    """Turn a botocore failure into a message that says what to fix."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    ep = opts.endpoint_name
    if isinstance(err, NoCredentialsError):
        return StorageError(f"no credentials for {ep}: set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
                            "(for the local store: source DIR/env.sh)")
    if isinstance(err, ClientError):
        code = str(err.response.get("Error", {}).get("Code", ""))
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _CRED_CODES:
            return StorageError(f"the object store at {ep} rejected the credentials (access key "
                                f"{mask(opts.access_key)}, secret key not shown): {code}; check AWS_ACCESS_KEY_ID / "
                                "AWS_SECRET_ACCESS_KEY")
        if code in _REGION_CODES or status == 301:
            return StorageError(f"bucket '{bucket}' is not in region {opts.region_name or DEFAULT_REGION} at {ep}: "
                                f"{code or status}; set AWS_REGION to the bucket's region")
        if code in ("NoSuchBucket", "404") or status == 404:
            return StorageError(f"bucket '{bucket}' does not exist at {ep}")
        if code in ("AccessDenied", "403", "AllAccessDisabled") or status == 403:
            return StorageError(f"access to {uri} denied at {ep} for access key {mask(opts.access_key)}: {code}")
        return StorageError(f"the object store at {ep} refused {uri}: {code or status}")
    if isinstance(err, EndpointConnectionError) or "Connect" in type(err).__name__:
        return StorageError(f"cannot reach {ep}: {err}; is the object store running? "
                            "(python -m pipelines.objectstore status --data DIR)")
    return StorageError(f"cannot use {uri} at {ep}: {type(err).__name__}: {err}")


def _probe_s3(uri: str, opts: StorageOptions):
    """One cheap listing: endpoint reachable, credentials accepted, bucket there. Returns (client, bucket, key)."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, key = split_uri(uri)[1].partition("/")
    client = _client(opts)
    try:
        client.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
    except (BotoCoreError, ClientError) as err:
        raise _storage_error(err, opts, bucket, uri) from err
    return client, bucket, key


def check_readable(uri: str | os.PathLike, suffixes: tuple[str, ...] = (),
                   opts: StorageOptions | None = None) -> list[str]:
    """Fail fast unless `uri` holds files (ending in `suffixes`) we may list; return them like `list_files`."""
    text, o = str(uri), _opts(opts)
    if is_s3(text):
        _probe_s3(text, o)
    elif not os.path.exists(split_uri(text)[1]):
        raise StorageError(f"{text} does not exist")
    try:
        files = list_files(text, tuple(suffixes), o)
    except (PermissionError, OSError) as err:
        raise StorageError(f"cannot list {text}: {type(err).__name__}: {err}") from err
    if not files:
        raise StorageError(f"no {_describe(tuple(suffixes))} under {text}")
    return files


def check_writable(uri: str | os.PathLike, opts: StorageOptions | None = None) -> None:
    """Fail fast unless a small probe object can be written under `uri` and deleted again."""
    text, o = str(uri), _opts(opts)
    probe = f".write-probe-{secrets.token_hex(4)}"
    if not is_s3(text):
        path = Path(split_uri(text)[1])
        try:
            path.mkdir(parents=True, exist_ok=True)
            (path / probe).write_bytes(b"ok")
            (path / probe).unlink()
        except OSError as err:
            raise StorageError(f"cannot write to {text}: {err}") from err
        return
    from botocore.exceptions import BotoCoreError, ClientError

    client, bucket, key = _probe_s3(text, o)
    key = f"{key.rstrip('/')}/{probe}" if key else probe
    try:
        client.put_object(Bucket=bucket, Key=key, Body=b"ok")
        client.delete_object(Bucket=bucket, Key=key)
    except (BotoCoreError, ClientError) as err:
        raise _storage_error(err, o, bucket, text) from err


# -- reading and writing ---------------------------------------------------------------------------------------


def read_bytes(uri: str | os.PathLike, opts: StorageOptions | None = None) -> bytes:
    """The whole content of one file."""
    fs, path = fsspec_fs(uri, opts)
    return fs.cat_file(path)


def write_bytes(uri: str | os.PathLike, data: bytes, opts: StorageOptions | None = None) -> None:
    """Write one file (parent directories are created for local paths)."""
    fs, path = fsspec_fs(uri, opts)
    if isinstance(fs, LocalFileSystem):
        fs.makedirs(os.path.dirname(path), exist_ok=True)
    fs.pipe_file(path, bytes(data))


def delete(uri: str | os.PathLike, opts: StorageOptions | None = None) -> None:
    """Remove one file."""
    fs, path = fsspec_fs(uri, opts)
    fs.rm_file(path)


def open_input(uri: str | os.PathLike, opts: StorageOptions | None = None) -> IO[bytes]:
    """A streaming binary file object (read in blocks, seekable); use it as a context manager."""
    fs, path = fsspec_fs(uri, opts)
    return fs.open(path, "rb")


def upload(local_path: str | os.PathLike, uri: str | os.PathLike, opts: StorageOptions | None = None) -> None:
    """Copy a local file to `uri`."""
    fs, path = fsspec_fs(uri, opts)
    if isinstance(fs, LocalFileSystem):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        shutil.copyfile(local_path, path)
    else:
        fs.put_file(os.fspath(local_path), path)


def download(uri: str | os.PathLike, local_path: str | os.PathLike, opts: StorageOptions | None = None) -> None:
    """Copy `uri` to a local file (parent directories are created)."""
    fs, path = fsspec_fs(uri, opts)
    os.makedirs(os.path.dirname(os.path.abspath(local_path)), exist_ok=True)
    if isinstance(fs, LocalFileSystem):
        shutil.copyfile(path, local_path)
    else:
        fs.get_file(path, os.fspath(local_path))
