"""The README's and docs/' blocks run as written, after `make demo`, as the README tells a newcomer:
in a copy of the checkout (so `.stack/` and `out/` of your own checkout stay yours), in document
order, each bash block with `bash -euo pipefail`, each Python block with this environment's
interpreter. A block that cannot run here says why (tests/doc_blocks.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.doc_blocks import ROOT, all_blocks
from tests.leaks import assert_no_secret

pytestmark = [pytest.mark.slow, pytest.mark.docs]  # in make test: the README's and docs/' blocks must run as written
CLEAN = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "MLFLOW_TRACKING_URI")


def _copy_of_checkout(dest: Path) -> Path:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.splitlines()
    for name in listed:
        src = ROOT / name
        if src.is_file() and not src.is_symlink():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    (dest / ".venv").symlink_to(Path(sys.prefix))  # the environment `make` made, as `.venv`
    return dest


def _demo(repo: Path, env: dict) -> None:
    """`make demo` is `pixelclip demo`; here with the random tiny model and 6 steps (the same stages)."""
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "demo", "--model", "tiny", "--steps", "6"],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = repo / "out" / "demo"
    summary = json.loads((out / "summary.json").read_text())
    assert "RANDOM weights" in summary["model"] and "RANDOM weights" in done.stdout
    assert summary["registered"].startswith("models:/pixelclip-demo@champion")
    assert 0 <= summary["miou_start"] <= 100 and 0 <= summary["miou_finetuned"] <= 100
    assert (out / "overlay.png").stat().st_size > 0 and "== where to look" in done.stdout
    assert re.search(r"step \d/6  loss", done.stdout)  # the workers' progress lines reach the demo's terminal
    with Image.open(out / "before_after.png") as pic:  # image | truth | start | fine-tuned, 4x
        assert pic.width >= 4 * 4 * 96 and "| gain |" in done.stdout
    assert set(summary["seconds"]) >= {"prepare", "train", "evaluate the fine-tuned model", "segment"}


@pytest.mark.timeout(1800)  # 4 to 7.5 min alone; the demo and the README's tour each start Ray jobs
def test_the_demo_then_every_runnable_block_as_written(tmp_path):
    repo, t0 = _copy_of_checkout(tmp_path / "checkout"), time.time()
    env = {k: v for k, v in os.environ.items() if k not in CLEAN and not k.startswith(("AWS_", "RAY_AUTH"))}
    env["HOME"] = str(tmp_path / "home")  # no token or credentials of the user's
    # the docs' blocks assume the environment the README's tour activates (`pixelclip`, `ray` on PATH);
    # the README's own block activates it itself
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    ran = []
    try:
        _demo(repo, env)  # it leaves the stack running: the README's tour takes it from there
        # prepare, train, register, evaluate, segment ran: no key in logs, Ray state or MLflow
        assert_no_secret(repo / ".stack", t0, tmp_path / "leaks")
        for block in all_blocks(repo):
            if block.not_run is not None:
                continue
            cmd = ["bash", "-euo", "pipefail", "-c", block.text] if block.lang == "bash" else \
                [sys.executable, "-c", block.text]
            done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=900)
            assert done.returncode == 0, f"{block.where} failed ({done.returncode}):\n{block.text}\n" \
                                         f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            ran.append(block.where)
    finally:
        subprocess.run([sys.executable, "-m", "pipelines.cli", "stack", "down"], cwd=repo, env=env,
                       capture_output=True, timeout=300)
    assert {w.split(":")[0] for w in ran} >= {"README.md", "docs/synthscenes.md"}
    assert (repo / "out" / "seg.png").is_file()  # the README's segment command wrote its overlay
