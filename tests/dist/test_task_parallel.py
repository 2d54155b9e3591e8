"""VACE and S2V under context parallelism (+ FSDP) give the single-process DiT output (gloo)."""

import json

import pytest

from helpers import dist_launch, dist_tasks

pytestmark = pytest.mark.dist
TOL = 1e-5


def _errors(tmp_path, world, layouts):
    out = tmp_path / f"task_errors_{world}.json"
    dist_launch.run(dist_tasks.task_layouts, world, layouts, str(out), timeout=90)
    errors = json.loads(out.read_text())
    print(json.dumps(errors, indent=1))
    return errors


def test_vace_and_s2v_on_two_processes(tmp_path):
    errors = _errors(tmp_path, 2, [{"ulysses": 2}, {"ring": 2}, {"ring": 2, "fsdp": True}])
    generation = errors.pop("vace generate ring=2")
    assert len(errors) == 6  # {vace, s2v} x 3 layouts, each the max over its input cases
    assert max(errors.values()) < TOL, errors
    assert generation < 1e-4, generation  # a full tiny VACE generation (end to end)


def test_vace_and_s2v_on_four_processes_ulysses_x_ring(tmp_path):
    errors = _errors(tmp_path, 4, [{"ulysses": 2, "ring": 2}, {"ring": 4, "fsdp": True}])
    assert len(errors) == 4
    assert max(errors.values()) < TOL, errors
