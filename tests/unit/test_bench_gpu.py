"""The GPU benchmark section is skipped cleanly on a machine without CUDA."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_gpu.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the script runs the benchmark")
def test_gpu_section_skips_without_cuda():
    run = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True)
    assert run.returncode == 0 and "GPU section is skipped" in run.stdout


def test_unknown_case_is_refused_before_any_work():
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--cases", "base,turbo"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "unknown case(s) turbo" in run.stderr
