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


def test_leading_known_latents_are_the_frames_whose_whole_past_is_given():
    from openwan.pipelines.image_cond import known_frame_mask

    lat = torch.randn(16, 5, 2, 2)

    def y(known):
        return torch.cat([known_frame_mask(17, known, (2, 2)), lat])

    assert torch.equal(stages.leading_known_latents(y([0]), 4), lat[:, :1])
    assert torch.equal(stages.leading_known_latents(y([0, 1, 2, 3, 4]), 4), lat[:, :2])
    # FLF2V: the last frame is given too, but its latent also encodes the unknown frames before it
    assert torch.equal(stages.leading_known_latents(y([0, 16]), 4), lat[:, :1])
    assert stages.leading_known_latents(y([8]), 4) is None


def test_anchored_frames_end_on_their_latents_and_the_others_are_untouched():
    torch.manual_seed(0)
    noise = torch.randn(4, 3, 2, 2)
    known = torch.randn(4, 1, 2, 2)

    def model_fn(x, t, i):  # elementwise, so frames do not interact
        return 0.5 * x + torch.sin(x) + float(t[0]) / 1000

    for solver in ("unipc", "euler"):
        free = stages.denoise(model_fn, noise, solver, 6, 3.0)
        pinned_fn = stages.anchor_known_frames(model_fn, known, solver, 6, 3.0)
        seen = []

        def spy(x, t, i, seen=seen, pinned_fn=pinned_fn):
            seen.append(x[:, :1].clone())
            return pinned_fn(x, t, i)

        pinned = stages.denoise(spy, noise, solver, 6, 3.0)
        assert torch.allclose(pinned[:, :1], known, atol=1e-5)
        assert torch.allclose(pinned[:, 1:], free[:, 1:], atol=1e-6)
        # on the way the pinned frame stays on the straight path from its noise to ``known``
        # (the first sigma of the table is just below 1, where the noise is taken to sit)
        sigmas = make_schedule(solver, 6, 3.0).sigmas
        for x, s in zip(seen, sigmas):
            assert torch.allclose(x, known + s / sigmas[0] * (noise[:, :1] - known), atol=1e-5)
