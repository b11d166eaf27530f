"""Storage by URI: `s3://bucket/prefix`, `file:///abs/path` or a plain local path.

Endpoint and credentials come from the standard variables (AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION or AWS_DEFAULT_REGION) or from an explicit
`StorageOptions`, so the same code runs against AWS S3, MinIO or the local SeaweedFS (`pipelines.local.objectstore`).
Jobs call `check_readable` / `check_writable` first: they fail fast with a `StorageError` that says what is wrong
(credentials, bucket, endpoint, empty prefix) and never contains a secret.
"""

from pipelines.storage.checks import check_readable, check_writable
from pipelines.storage.files import (
    ARROW_ATTEMPTS,
    arrow_fs,
    delete,
    download,
    fsspec_fs,
    list_files,
    open_input,
    read_bytes,
    read_range,
    size,
    upload,
    write_bytes,
)
from pipelines.storage.options import (
    DEFAULT_REGION,
    KEY_VARS,
    StorageError,
    StorageOptions,
    for_ray,
    keys_in_a_file,
    mask,
)
from pipelines.storage.retry import DEFAULT_RETRY_S, RETRY_ENV, is_transient, retry_budget, retrying, unreachable
from pipelines.storage.uris import is_s3, join, split_uri

__all__ = ["ARROW_ATTEMPTS", "DEFAULT_REGION", "DEFAULT_RETRY_S", "KEY_VARS", "RETRY_ENV", "StorageError",
           "StorageOptions", "arrow_fs", "check_readable", "check_writable", "delete", "download", "for_ray",
           "fsspec_fs", "is_s3", "is_transient", "join", "keys_in_a_file", "list_files", "mask", "open_input",
           "read_bytes", "read_range", "retry_budget", "retrying", "size", "split_uri", "unreachable", "upload",
           "write_bytes"]
