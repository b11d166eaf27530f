"""Rank 0's progress lines: at every report, at least every N seconds between, never 'nan'."""

from __future__ import annotations

import time

from pipelines.stages.train.progress import Progress


def test_lines_at_reports_and_between_them(capsys):
    p = Progress(None, None, total=100, batch=8, every_s=0.05)
    p.start(0)
    p(1, {"loss": 0.5, "images_per_s": 3.0})
    first = capsys.readouterr().out
    assert "step 1/100" in first and "nan" not in first and "time left" in first
    p.tick(2, {"loss": 0.4})  # too soon after the last line: nothing
    assert capsys.readouterr().out == ""
    time.sleep(0.06)
    p.tick(3, {"loss": 0.3, "clusters_used": 5})
    line = capsys.readouterr().out
    assert line.startswith("step 3/100  loss 0.3000") and "clusters 5" in line and "img/s" in line
    assert "min" in line.split("time left")[1]


def test_the_first_line_of_a_resumed_run_has_no_nan(capsys):
    p = Progress(None, None, total=50, batch=4)
    p.start(20)
    p(20, {"loss": 0.2, "images_per_s": 1.0})
    out = capsys.readouterr().out
    assert "nan" not in out and "(after the first step)" in out
