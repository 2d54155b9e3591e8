"""Solver step math against diffusers' schedulers fed the same sigma table.

diffusers' own flow tables differ from the official ones (its UniPC starts at sigma 0.999999, the
official at 0.9998 for shift 5, see test_solvers_official.py for the official tables), so the
diffusers schedulers are given our table and must then produce the same trajectory.
"""

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from openwan.sampling.schedules import make_schedule  # noqa: E402
from openwan.sampling.solvers import SOLVERS  # noqa: E402


def toy_velocity(x, sigma, w, c):
    return torch.tanh(torch.einsum("ij,bjhw->bihw", w, x)) + c * sigma


def _inputs():
    g = torch.Generator().manual_seed(1)
    return (
        torch.randn(1, 4, 3, 5, generator=g),
        torch.randn(4, 4, generator=g) / 2,
        torch.randn(1, 4, 3, 5, generator=g),
    )


def _diffusers_scheduler(solver):
    if solver == "unipc":
        return diffusers.UniPCMultistepScheduler(
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            flow_shift=1.0,
            solver_order=2,
            solver_type="bh2",
            predict_x0=True,
            lower_order_final=True,
            final_sigmas_type="zero",
        )
    if solver == "dpm++":
        return diffusers.DPMSolverMultistepScheduler(
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            flow_shift=1.0,
            algorithm_type="dpmsolver++",
            solver_order=2,
            solver_type="midpoint",
            lower_order_final=True,
            final_sigmas_type="zero",
        )
    return diffusers.FlowMatchEulerDiscreteScheduler(shift=1.0)


@pytest.mark.parametrize("solver", ["unipc", "dpm++", "euler"])
@pytest.mark.parametrize("steps, shift", [(8, 5.0), (20, 3.0)])
def test_trajectory_matches_diffusers(solver, steps, shift):
    x0, w, c = _inputs()
    ours = make_schedule(solver, steps, shift)
    sch = _diffusers_scheduler(solver)
    sch.set_timesteps(steps)
    # replace diffusers' table by ours (same length, final sigma 0)
    sch.sigmas = ours.sigmas.clone()
    sch.timesteps = ours.timesteps.clone()
    x = x0.clone()
    for i, t in enumerate(sch.timesteps):
        x = sch.step(toy_velocity(x, ours.sigmas[i], w, c), t, x, return_dict=False)[0]
    out = SOLVERS[solver](lambda z, t, i: toy_velocity(z, ours.sigmas[i], w, c), x0.clone(), ours)
    assert (out - x).norm() / x.norm() < 1e-5


def test_euler_table_equals_diffusers_flow_match_with_explicit_sigmas():
    ours = make_schedule("euler", 10, 5.0)
    sch = diffusers.FlowMatchEulerDiscreteScheduler(shift=1.0)
    sch.set_timesteps(sigmas=ours.sigmas[:-1].numpy())
    torch.testing.assert_close(sch.sigmas, ours.sigmas, rtol=0, atol=1e-7)
