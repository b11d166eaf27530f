"""Checkpoint discovery: the newest complete checkpoint of a run, never a copy cut short."""

from __future__ import annotations

import logging

import pytest

from pipelines import storage
from pipelines.stages.train.checkpoints import CHECKPOINT_FILE, expected_size, is_complete, latest_checkpoint
from pixelclip.io import read_metadata, save_checkpoint


@pytest.fixture(scope="module")
def ckpt_bytes(tmp_path_factory, tiny_cfg):
    import pixelclip

    path = tmp_path_factory.mktemp("ckpt") / CHECKPOINT_FILE
    save_checkpoint(path, pixelclip.build_pixelclip(tiny_cfg), step=8)
    return path.read_bytes()


def _write_run(root: str, data: bytes, opts=None) -> None:
    for step, body in ((4, data), (8, data), (12, data[: len(data) // 2])):  # 12: a copy cut short
        storage.write_bytes(storage.join(root, f"step_{step:08d}", CHECKPOINT_FILE), body, opts)


def test_expected_size_reads_the_header(ckpt_bytes):
    assert expected_size(ckpt_bytes) == len(ckpt_bytes)
    assert expected_size(ckpt_bytes[:7]) is None and expected_size(b"\xff" * 16) is None
    assert expected_size(b"\x04\x00\x00\x00\x00\x00\x00\x00{no}") is None


def test_a_partial_local_copy_is_never_the_newest(tmp_path, ckpt_bytes, caplog):
    run = str(tmp_path / "run")
    _write_run(run, ckpt_bytes)
    with caplog.at_level(logging.WARNING, "pixelclip.train"):
        newest = latest_checkpoint(run)
    assert newest.endswith(f"step_00000008/{CHECKPOINT_FILE}") and read_metadata(newest)["step"] == 8
    assert "step_00000012" in caplog.text and "incomplete" in caplog.text
    longer = tmp_path / "run" / "step_00000008" / CHECKPOINT_FILE
    longer.write_bytes(ckpt_bytes + b"tail")  # two writers on one name: not a checkpoint either
    assert not is_complete(str(longer)) and latest_checkpoint(run).endswith(f"step_00000004/{CHECKPOINT_FILE}")
    assert latest_checkpoint(str(tmp_path / "nothing-here")) is None


@pytest.mark.slow
def test_a_partial_upload_is_never_the_newest(store, ckpt_bytes):
    run = "s3://data/checkpoint-discovery/run"
    _write_run(run, ckpt_bytes, store)
    assert latest_checkpoint(run, store) == storage.join(run, "step_00000008", CHECKPOINT_FILE)
    assert is_complete(storage.join(run, "step_00000004", CHECKPOINT_FILE), store)
