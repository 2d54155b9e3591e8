"""Solvers against reference numbers produced by the official Wan schedulers
(tools/make_solver_fixtures.py; Wan-Video/Wan2.1 @ 9737cba)."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from openwan.sampling.schedules import make_schedule
from openwan.sampling.solvers import SOLVERS

FIXTURE = load_file(str(Path(__file__).parents[1] / "fixtures/solvers/official.safetensors"))
CASES = sorted({k.rsplit(".", 1)[0] for k in FIXTURE if not k.startswith("toy.")})


def toy_velocity(x, t, w, c):
    return torch.tanh(torch.einsum("ij,bjhw->bihw", w, x)) + c * (t / 1000.0)


def _case(key):
    solver, steps, shift = key.split(".", 2)
    return solver, int(steps), float(shift)


@pytest.mark.parametrize("key", CASES)
def test_schedule_tables_equal_official(key):
    solver, steps, shift = _case(key)
    sched = make_schedule(solver, steps, shift)
    torch.testing.assert_close(sched.sigmas, FIXTURE[f"{key}.sigmas"], rtol=0, atol=1e-7)
    assert torch.equal(sched.timesteps.long(), FIXTURE[f"{key}.timesteps"])


@pytest.mark.parametrize("key", CASES)
def test_full_solve_equals_official(key):
    solver, steps, shift = _case(key)
    w, c = FIXTURE["toy.w"], FIXTURE["toy.c"]
    sched = make_schedule(solver, steps, shift)
    out = SOLVERS[solver](lambda x, t, i: toy_velocity(x, t, w, c), FIXTURE["toy.x"].clone(), sched)
    ref = FIXTURE[f"{key}.x0"]
    assert (out - ref).norm() / ref.norm() < 1e-5


def test_known_table_values():
    # WAN_SPEC §6.4: 50 steps, shift 5 -> t = 999, 995, 991, 987, 982, ..., 241, 172, 92
    t = make_schedule("unipc", 50, 5.0).timesteps.long().tolist()
    assert t[:5] == [999, 995, 991, 987, 982] and t[-3:] == [241, 172, 92]
    d = make_schedule("dpm++", 4, 1.0)
    assert d.sigmas.tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert d.timesteps.tolist() == [1000.0, 750.0, 500.0, 250.0]
