"""bench/gpu.sh: the GPU benchmark's code runs on the CPU at toy sizes, and fails fast without a GPU."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the benchmark would run")
def test_without_a_gpu_it_stops_at_once_with_a_message():
    p = subprocess.run(["bash", "bench/gpu.sh"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "no CUDA GPU is visible" in p.stderr and "--device cpu --smoke" in p.stderr


@pytest.mark.slow
@pytest.mark.long
def test_smoke_run_on_the_cpu_prints_every_row():
    p = subprocess.run(["bash", "bench/gpu.sh", "--device", "cpu", "--smoke"], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    table = [line for line in p.stdout.splitlines() if line.startswith("| ")]
    rows = {line.split(" | ")[0].removeprefix("| ") for line in table[1:]}
    expected = {"step vit_b16 eager", "step convnext_b eager", "step vit_b16 compile", "step convnext_b compile",
                "ray-train vit_b16 1 worker", "dino actor (1, with its start)", "dino stage body (warm)",
                "evaluate vit_b16", "evaluate convnext_b"}
    assert rows == expected, p.stdout[-3000:]
    assert not any("error" in line for line in table), "\n".join(table)
    assert "images_per_s" in p.stdout and "inside_over_outside" in p.stdout
