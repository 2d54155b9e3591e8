"""Context parallel / FSDP layouts give the single-process DiT output (gloo, 2 and 4 processes)."""

import json

import pytest
import torch

from helpers import dist_launch, dist_workers

pytestmark = pytest.mark.dist
TOL = 1e-5


def _errors(tmp_path, world, layouts):
    out = tmp_path / f"errors_{world}.json"
    dist_launch.run(dist_workers.forward_layouts, world, layouts, str(out), timeout=90)
    errors = json.loads(out.read_text())
    print(json.dumps(errors, indent=1))
    return errors


def test_two_processes_ulysses_ring_fsdp(tmp_path):
    errors = _errors(tmp_path, 2, [{"ulysses": 2}, {"ring": 2}, {"fsdp": True}])
    assert len(errors) == 12  # {t2v, i2v, vace, s2v} x 3 layouts, each max over its input cases
    assert max(errors.values()) < TOL, errors


def test_four_processes_2d_cp_and_fsdp_x_cp(tmp_path):
    layouts = [
        {"ulysses": 2, "ring": 2},
        {"ring": 4},
        {"ulysses": 2, "ring": 2, "fsdp": True},
        {"ulysses": 2, "fsdp": True},  # data parallel 2 x Ulysses 2, parameters over all 4
    ]
    errors = _errors(tmp_path, 4, layouts)
    assert len(errors) == 16  # {t2v, i2v, vace, s2v} x 4 layouts
    assert max(errors.values()) < TOL, errors


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL needs at least 2 CUDA devices")
def test_nccl_ulysses_and_ring_on_gpus(tmp_path):
    """The same layouts over NCCL on the GPUs (fp32; PyTorch keeps TF32 matmuls off by default)."""
    out = tmp_path / "nccl.json"
    layouts = [{"ulysses": 2}, {"ring": 2}, {"ulysses": 1, "ring": 2, "fsdp": True}]
    dist_launch.run(
        dist_workers.forward_layouts, 2, layouts, str(out), "cuda", timeout=180, backend="nccl"
    )
    errors = json.loads(out.read_text())
    assert max(errors.values()) < TOL, errors
