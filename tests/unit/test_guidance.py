"""CFG and the A14B expert switch in the shared denoising stage."""

import torch

from openwan.pipelines import stages
from openwan.sampling.schedules import make_schedule


class Recorder(torch.nn.Module):
    def __init__(self, value):
        super().__init__()
        self.value = value
        self.calls = []

    def forward(self, x, t, context):
        self.calls.append(float(t[0]))
        # cond context is ones, uncond zeros: the output tells which branch ran
        return torch.full_like(x, self.value) + context[0].mean()


def _fn(experts, boundary=None):
    ctx, null = torch.ones(3, 4), torch.zeros(3, 4)
    return stages.guided_model_fn(
        experts, ctx, null, boundary_t=boundary, device=torch.device("cpu")
    )


def test_cfg_formula_and_skip_at_scale_one():
    m = Recorder(2.0)
    fn = _fn([stages.Expert(m, 5.0)])
    out = fn(torch.zeros(1, 2, 2), torch.tensor([500.0]), 0)
    # v_u + g (v_c - v_u) = 2 + 5 * ((2 + 1) - 2)
    assert torch.allclose(out, torch.full_like(out, 7.0)) and len(m.calls) == 2
    m1 = Recorder(2.0)
    _fn([stages.Expert(m1, 1.0)])(torch.zeros(1, 2, 2), torch.tensor([500.0]), 0)
    assert len(m1.calls) == 1


def test_a14b_expert_switch_follows_the_official_boundary():
    # T2V-A14B defaults: 40 UniPC steps, shift 12, boundary 0.875 -> 26 high-noise steps (WAN_SPEC §6.6)
    low, high = Recorder(0.0), Recorder(0.0)
    fn = _fn([stages.Expert(low, 3.0), stages.Expert(high, 4.0)], boundary=875.0)
    sched = make_schedule("unipc", 40, 12.0)
    for i, t in enumerate(sched.timesteps):
        fn(torch.zeros(1, 2, 2), t.reshape(1), i)
    assert len(high.calls) == 2 * 26 and len(low.calls) == 2 * 14
    assert min(high.calls) >= 875 > max(low.calls)
    # I2V-A14B: shift 5, boundary 0.9 -> 15 high-noise steps
    t = make_schedule("unipc", 40, 5.0).timesteps
    assert int((t >= 900).sum()) == 15
