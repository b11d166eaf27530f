"""Fail-fast checks before a job starts: `check_readable` / `check_writable` turn what botocore says
into a `StorageError` that names what to fix (credentials, bucket, region, endpoint, empty prefix)
and never holds a secret."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pipelines.storage.files import list_files
from pipelines.storage.options import DEFAULT_REGION, StorageError, StorageOptions, _opts, mask
from pipelines.storage.uris import is_s3, split_uri

_CRED_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "InvalidClientTokenId"}
_REGION_CODES = {"PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"}



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
                            "(local stack: `pixelclip stack status`, `pixelclip stack up`)")
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
