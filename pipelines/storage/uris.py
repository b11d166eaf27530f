"""Storage URIs: `s3://bucket/prefix`, `file:///abs/path` or a plain local path."""

from __future__ import annotations

import os
from urllib.parse import urlparse

from pipelines.storage.options import StorageError


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
