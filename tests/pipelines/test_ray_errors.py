"""A failure inside Ray reaches the user as its root cause in one line; joining a cluster without
its token names `.stack/env.sh`."""

from __future__ import annotations

import pytest

from pipelines.ray_errors import describe, inside_ray, one_line, root_cause

pytestmark = pytest.mark.slow


def _boom(row):
    raise ValueError(f"shard {row['id']} is unreadable\nsecond line of detail")


def test_a_task_and_a_data_stage_failure_show_what_the_worker_raised(ray_local):
    import ray

    task = ray.remote(lambda: _boom({"id": 7}))
    with pytest.raises(Exception) as got:
        ray.get(task.remote())
    assert inside_ray(got.value) and len(str(got.value).splitlines()) > 3  # Ray's text: the remote traceback
    cause = root_cause(got.value)
    assert type(cause) is ValueError and describe(got.value) == "ValueError: shard 7 is unreadable"

    failure = _data_failure()
    assert inside_ray(failure)
    assert describe(failure) == "ValueError: shard 3 is unreadable"  # read from the worker's traceback


def _data_failure() -> Exception:
    import ray

    try:
        ray.data.from_items([{"id": 3}]).map(_boom).materialize()
    except Exception as e:  # what Ray Data raises on the driver
        return e
    raise AssertionError("the stage did not fail")


def test_the_cli_prints_a_ray_failure_in_one_line(ray_local, monkeypatch, capsys):
    import pipelines.cli as cli

    failure = _data_failure()

    def stage(args):
        raise failure

    monkeypatch.setattr("pipelines.cli.config.run", stage)
    with pytest.raises(SystemExit) as e:
        cli.main(["config", "tiny"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 1 and err.count("\n") == 0
    assert err == ("pixelclip config: error inside Ray: ValueError: shard 3 is unreadable "
                   "(pixelclip --debug ... for the full trace)")
    with pytest.raises(type(failure)):  # --debug: the whole trace
        cli.main(["--debug", "config", "tiny"])


def test_errors_outside_ray_are_their_own_root_cause():
    err = KeyError("x")
    assert not inside_ray(err) and root_cause(err) is err and describe(err) == one_line(err) == "KeyError: 'x'"
