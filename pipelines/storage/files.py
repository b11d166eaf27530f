"""Filesystems for a URI (fsspec for the stages, pyarrow for Ray), listing, reading and writing;
every call to an object store is retried while it is briefly away (`retry.retrying`)."""

from __future__ import annotations

import os
import shutil
from typing import IO
from urllib.parse import urlparse

import fsspec
from fsspec.implementations.local import LocalFileSystem

from pipelines.storage.options import StorageOptions, _opts
from pipelines.storage.retry import retrying
from pipelines.storage.uris import _to_uri, split_uri

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


ARROW_ATTEMPTS = 10


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
    # Ray Train uploads checkpoints and Ray Data writes shards through this filesystem: AWS's standard
    # retry (exponential backoff with jitter, capped at 20 s a wait) for a store that is briefly away
    kwargs: dict = {"retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=ARROW_ATTEMPTS)}
    if o.region_name:
        kwargs["region"] = o.region_name
    if with_keys and o.access_key and o.secret_key:
        kwargs.update(access_key=o.access_key, secret_key=o.secret_key, session_token=o.session_token)
    if o.endpoint_url:
        parsed = urlparse(o.endpoint_url if "://" in o.endpoint_url else f"https://{o.endpoint_url}")
        kwargs.update(endpoint_override=parsed.netloc + parsed.path.rstrip("/"), scheme=parsed.scheme or "https")
    return pafs.S3FileSystem(**kwargs), path



# -- listing, reading and writing ------------------------------------------------------------------------


def _matches(path: str, suffixes: tuple[str, ...]) -> bool:
    return not suffixes or path.lower().endswith(tuple(s.lower() for s in suffixes))


def list_files(uri: str | os.PathLike, suffixes: tuple[str, ...] = (), opts: StorageOptions | None = None) -> list[str]:
    """Every file under `uri` (recursive; `uri` may also be one file) ending in one of `suffixes`, sorted."""
    text = str(uri)
    fs, path = fsspec_fs(text, opts)
    found = retrying("listing", text, opts, lambda: fs.find(path))
    found = [p for p in found if not p.endswith("/")]  # no directory placeholders
    return sorted(_to_uri(text, p) for p in found if _matches(p, tuple(suffixes)))


def read_bytes(uri: str | os.PathLike, opts: StorageOptions | None = None) -> bytes:
    """The whole content of one file."""
    fs, path = fsspec_fs(uri, opts)
    return retrying("reading", uri, opts, lambda: fs.cat_file(path))


def write_bytes(uri: str | os.PathLike, data: bytes, opts: StorageOptions | None = None) -> None:
    """Write one file (parent directories are created for local paths)."""
    fs, path = fsspec_fs(uri, opts)
    if isinstance(fs, LocalFileSystem):
        fs.makedirs(os.path.dirname(path), exist_ok=True)
    retrying("writing", uri, opts, lambda: fs.pipe_file(path, bytes(data)))


def delete(uri: str | os.PathLike, opts: StorageOptions | None = None) -> None:
    """Remove one file."""
    fs, path = fsspec_fs(uri, opts)
    retrying("deleting", uri, opts, lambda: fs.rm_file(path))


def size(uri: str | os.PathLike, opts: StorageOptions | None = None) -> int:
    """The size of one file in bytes."""
    fs, path = fsspec_fs(uri, opts)
    return int(retrying("reading", uri, opts, lambda: fs.size(path)))


def read_range(uri: str | os.PathLike, start: int, end: int, opts: StorageOptions | None = None) -> bytes:
    """Bytes [start, end) of one file (fewer when the file is shorter)."""
    fs, path = fsspec_fs(uri, opts)
    return retrying("reading", uri, opts, lambda: fs.cat_file(path, start=start, end=end))


def open_input(uri: str | os.PathLike, opts: StorageOptions | None = None) -> IO[bytes]:
    """A streaming binary file object (read in blocks, seekable); use it as a context manager. Opening
    is retried; a store lost in the middle of the stream fails the read (callers say so with
    `unreachable`: nothing half-read can be resumed)."""
    fs, path = fsspec_fs(uri, opts)
    return retrying("opening", uri, opts, lambda: fs.open(path, "rb"))


def upload(local_path: str | os.PathLike, uri: str | os.PathLike, opts: StorageOptions | None = None) -> None:
    """Copy a local file to `uri`."""
    fs, path = fsspec_fs(uri, opts)
    if isinstance(fs, LocalFileSystem):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        shutil.copyfile(local_path, path)
    else:
        retrying("uploading to", uri, opts, lambda: fs.put_file(os.fspath(local_path), path))


def download(uri: str | os.PathLike, local_path: str | os.PathLike, opts: StorageOptions | None = None) -> None:
    """Copy `uri` to a local file (parent directories are created)."""
    fs, path = fsspec_fs(uri, opts)
    os.makedirs(os.path.dirname(os.path.abspath(local_path)), exist_ok=True)
    if isinstance(fs, LocalFileSystem):
        shutil.copyfile(path, local_path)
    else:
        retrying("downloading", uri, opts, lambda: fs.get_file(path, os.fspath(local_path)))
