"""Diffusion caches: exact when they never reuse, and when they do, they run exactly the blocks /
branches they are designed to run and reuse the right values (checked against the plain model)."""

import pytest
import torch

from helpers.random_weights import randomize_
from helpers.tiny_s2v import s2v_kwargs, s2v_model
from openwan.configs.dit import DiTConfig
from openwan.models.dit import WanModel
from openwan.runtime.cache import DEFAULT_TEACACHE, CacheSpec, _noise_weight, apply_cache
from openwan.sampling.schedules import make_schedule
from openwan.sampling.solvers import SOLVERS, planned_steps, solver_step

CFG = DiTConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=3, text_dim=16, text_len=32)


@pytest.fixture()
def model():
    torch.manual_seed(0)
    return randomize_(WanModel(CFG).eval(), seed=1, scale=0.1)


def inputs(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 16, 2, 4, 4, generator=g)
    cond, uncond = torch.randn(5, 16, generator=g), torch.randn(7, 16, generator=g)
    return x, cond, uncond


def trajectory(x, steps=3):
    """(latent, t) per step, each latent its own tensor as a solver would make it."""
    g = torch.Generator().manual_seed(9)
    return [
        (x + 0.02 * k * torch.randn(x.shape, generator=g), torch.tensor([900.0 - 100 * k]))
        for k in range(steps)
    ]


def count_calls(modules):
    counter = {"n": 0}

    def hook(*_):
        counter["n"] += 1

    for m in modules:
        m.register_forward_hook(hook)
    return counter


@torch.no_grad()
def test_threshold_zero_and_no_mode_are_the_plain_model(model):
    x, cond, uncond = inputs(0)
    steps = trajectory(x)
    ref = [model(xs, t, [c]) for xs, t in steps for c in (cond, uncond)]
    for spec in (CacheSpec(teacache=0.0), CacheSpec()):
        cached = apply_cache(model, spec)
        got = [cached(xs, t, [c]) for xs, t in steps for c in (cond, uncond)]
        assert all(torch.equal(a, b) for a, b in zip(ref, got))
        assert cached.stats.calls == 6 and cached.stats.block_fraction == 1.0
        assert cached.remove() is model


@torch.no_grad()
def test_teacache_skips_reuse_the_residual_of_their_own_branch(model):
    x, cond, uncond = inputs(1)
    t1, t2 = torch.tensor([800.0]), torch.tensor([790.0])
    x2 = x + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))

    # by hand: the full outputs at step 1, and block 0 at step 2 plus step 1's residual
    def parts(xx, t, c):
        tokens, e, e0, ctx, layout = model.embed(xx, t, [c])
        h = model.blocks[0](tokens, e0, ctx, layout)
        out = h
        for b in model.blocks[1:]:
            out = b(out, e0, ctx, layout)
        return h, out, e, layout

    expected = {}
    for name, c in (("cond", cond), ("uncond", uncond)):
        h1, full1, _, _ = parts(x, t1, c)
        h2, _, e, layout = parts(x2, t2, c)
        expected[name] = model.unpatchify(model.head(h2 + (full1 - h1), e), layout.grid)
    plain = model(x2, t2, [cond])
    # large: every later call skips
    cached = apply_cache(model, CacheSpec(teacache=1.0, teacache_warmup=0))
    deep = count_calls(model.blocks[1:])
    cached(x, t1, [cond])
    cached(x, t1, [uncond])
    got_c = cached(x2, t2, [cond])
    got_u = cached(x2, t2, [uncond])
    assert deep["n"] == 2 * 2  # blocks 1..2 ran only at step 1, once per branch
    assert cached.stats.blocks_run == 2 * 3 + 2 * 1
    assert torch.allclose(got_c, expected["cond"], atol=1e-6)
    assert torch.allclose(got_u, expected["uncond"], atol=1e-6)
    assert not torch.allclose(got_c, plain, atol=1e-4)  # the skip is an approximation
    # a new generation (t goes back up) starts without a cache: every block runs
    assert torch.equal(
        cached(x, torch.tensor([999.0]), [cond]), model(x, torch.tensor([999.0]), [cond])
    )
    assert deep["n"] == 2 * 2 + 2 * 2


@torch.no_grad()
def test_teacache_skips_extrapolate_the_last_two_residuals_in_time(model):
    """A skipped call adds the deeper blocks' residual extrapolated linearly in t from the last
    two full runs, and decides to skip by how well the same extrapolation predicts block 0."""
    x, cond, _ = inputs(4)
    g = torch.Generator().manual_seed(5)
    x2 = x + 2.0 * torch.randn(x.shape, generator=g)  # far from step 1: runs in full
    x3 = x2 + 1e-4 * torch.randn(x.shape, generator=g)  # next to step 2: skipped
    calls = [(x, torch.tensor([900.0])), (x2, torch.tensor([300.0])), (x3, torch.tensor([299.0]))]

    def parts(xx, t):
        tokens, e, e0, ctx, layout = model.embed(xx, t, [cond])
        h = model.blocks[0](tokens, e0, ctx, layout)
        out = h
        for b in model.blocks[1:]:
            out = b(out, e0, ctx, layout)
        return h, h - tokens, out - h, e, layout

    (_, f1, r1, _, _), (_, f2, r2, _, _), (h3, f3, _, e, layout) = (parts(*c) for c in calls)
    step = (299.0 - 300.0) / (300.0 - 900.0)
    expected = model.unpatchify(model.head(h3 + r2 + (r2 - r1) * step, e), layout.grid)
    held = model.unpatchify(model.head(h3 + r2, e), layout.grid)

    def change(guess):
        return float((f3 - guess).abs().mean() / f2.abs().mean())

    for extrapolate, want, guess in ((True, expected, f2 + (f2 - f1) * step), (False, held, f2)):
        cached = apply_cache(
            model, CacheSpec(teacache=0.2, extrapolate=extrapolate, teacache_warmup=0)
        )
        got = [cached(xx, t, [cond]) for xx, t in calls][-1]
        assert cached.stats.changes[0] > 0.2 > cached.stats.changes[1]  # full, full, skipped
        assert cached.stats.changes[1] == pytest.approx(change(guess), rel=1e-4)
        assert cached.stats.blocks_run == 3 + 3 + 1
        assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(expected, held, atol=1e-5)  # the extrapolation term matters
    assert change(f2 + (f2 - f1) * step) != pytest.approx(change(f2), rel=1e-3)

    # teacache_warmup: the first steps run in full whatever the threshold
    cached = apply_cache(model, CacheSpec(teacache=1e9, teacache_warmup=2))
    for xx, t in calls:
        cached(xx, t, [cond])
    assert cached.stats.blocks_run == 3 + 3 + 1


@torch.no_grad()
def test_taylor_extrapolates_whole_calls_from_the_last_two_full_outputs(model):
    x, cond, uncond = inputs(6)
    steps = trajectory(x, steps=5)  # t = 900, 800, ..., 500
    plain = [model(xs, t, [cond]) for xs, t in steps]
    spec = CacheSpec(taylor=True, taylor_interval=2, taylor_warmup=1, taylor_space="v")
    cached = apply_cache(model, spec)
    blocks = count_calls(model.blocks)
    got = [cached(xs, t, [cond]) for xs, t in steps]
    # full at steps 0 (warm-up), 1 and 3; steps 2 and 4 extrapolate the output linearly in t
    assert blocks["n"] == 3 * len(model.blocks) and cached.stats.calls_extrapolated == 2
    assert all(torch.equal(got[k], plain[k]) for k in (0, 1, 3))
    step2 = plain[1] + (plain[1] - plain[0]) / (800.0 - 900.0) * (700.0 - 800.0)
    step4 = plain[3] + (plain[3] - plain[1]) / (600.0 - 800.0) * (500.0 - 600.0)
    assert torch.allclose(got[2], step2, atol=1e-6) and torch.allclose(got[4], step4, atol=1e-6)
    assert not torch.allclose(got[4], plain[4], atol=1e-4)
    # each CFG branch extrapolates its own outputs
    cached = apply_cache(model, spec)
    got = [(cached(xs, t, [cond]), cached(xs, t, [uncond])) for xs, t in steps]
    plain_u = [model(xs, t, [uncond]) for xs, t in steps]
    step2_u = plain_u[1] + (plain_u[1] - plain_u[0]) / (800.0 - 900.0) * (700.0 - 800.0)
    assert cached.stats.calls_extrapolated == 4
    assert torch.allclose(got[2][0], step2, atol=1e-6)
    assert torch.allclose(got[2][1], step2_u, atol=1e-6)
    assert CacheSpec.parse("taylor:4", DEFAULT_TEACACHE) == CacheSpec(
        taylor=True, taylor_interval=4
    )
    assert CacheSpec.parse("taylor:4,cfg", DEFAULT_TEACACHE).describe() == "cfg:2,taylor:4"


@torch.no_grad()
def test_taylor_extrapolates_the_noise_estimate_by_default(model):
    x, cond, _ = inputs(3)
    steps = trajectory(x, steps=5)  # t = 900, 800, ..., 500
    plain = [model(xs, t, [cond]) for xs, t in steps]
    cached = apply_cache(model, CacheSpec(taylor=True, taylor_interval=2, taylor_warmup=1))
    got = [cached(xs, t, [cond]) for xs, t in steps]

    def eps(k):  # the flow x = (1 - s) x0 + s eps has velocity eps - x0: eps = x + (1 - s) v
        return steps[k][0] + (1 - steps[k][1] / 1000) * plain[k]

    for k, (p, q) in ((2, (0, 1)), (4, (1, 3))):
        ts = [float(steps[i][1]) for i in (p, q, k)]
        line = eps(q) + (eps(q) - eps(p)) / (ts[1] - ts[0]) * (ts[2] - ts[1])
        want = (line - steps[k][0]) / (1 - ts[2] / 1000)
        assert torch.allclose(got[k], want, atol=1e-5), k
        v_line = plain[q] + (plain[q] - plain[p]) / (ts[1] - ts[0]) * (ts[2] - ts[1])
        assert not torch.allclose(got[k], v_line, atol=1e-3)  # not the output's own line
    assert all(torch.equal(got[k], plain[k]) for k in (0, 1, 3))
    with pytest.raises(ValueError, match="taylor_space"):
        CacheSpec(taylor=True, taylor_space="x0")
    # TI2V's per-token timesteps (0 on the clean first frame): sigma per latent frame
    per_token = torch.full((1, 2 * 2 * 2), 600.0)
    per_token[0, :4] = 0.0  # latent frame 0 of x [1, 16, 2, 4, 4] (patch 1x2x2: 4 tokens)
    assert _noise_weight(x, per_token).flatten().tolist() == pytest.approx([1.0, 0.4])


@torch.no_grad()
def test_attention_cache_reuses_the_last_computed_attention_outputs(model):
    x, cond, uncond = inputs(2)
    steps = trajectory(x)
    attn = [getattr(b, n) for b in model.blocks for n in ("self_attn", "cross_attn")]
    # reference for the reused step 1: the plain model with step 0's attention outputs forced in
    saved: dict = {}

    def record(m, args, out):
        saved[m] = out

    handles = [m.register_forward_hook(record) for m in attn]
    model(*steps[0], [cond])
    for h in handles:
        h.remove()
    handles = [m.register_forward_hook(lambda m, a, o: saved[m]) for m in attn]
    forced = model(*steps[1], [cond])
    for h in handles:
        h.remove()
    plain = [model(xs, t, [cond]) for xs, t in steps]

    cached = apply_cache(model, CacheSpec(attn=True, attn_interval=2, warmup=1))
    runs = count_calls(attn)
    got = [cached(xs, t, [c]) for xs, t in steps for c in (cond, uncond)]
    assert runs["n"] == 2 * len(attn) * 2  # steps 0 and 2 per branch; step 1 reused
    assert cached.stats.attn_run == runs["n"] and cached.stats.attn_total == 3 * 2 * len(attn)
    assert torch.equal(got[0], plain[0]) and torch.equal(got[4], plain[2])
    assert torch.allclose(got[2], forced, atol=1e-6)
    assert not torch.allclose(got[2], plain[1], atol=1e-4)
    assert cached.remove() is model
    assert [getattr(b, n) for b in model.blocks for n in ("self_attn", "cross_attn")] == attn


@torch.no_grad()
def test_cfg_cache_estimates_the_second_branch_with_residual_compensation(model):
    x, cond, uncond = inputs(3)
    steps = trajectory(x, steps=4)
    plain = [(model(xs, t, [cond]), model(xs, t, [uncond])) for xs, t in steps]
    cached = apply_cache(model, CacheSpec(cfg=True, cfg_interval=2, warmup=1))
    blocks = count_calls(model.blocks)
    got = [(cached(xs, t, [cond]), cached(xs, t, [uncond])) for xs, t in steps]
    # 4 steps x 2 branches, the unconditional branch skipped at steps 1 and 3
    assert blocks["n"] == (8 - 2) * 3 and cached.stats.branches_reused == 2
    for k in (0, 2):
        assert torch.equal(got[k][0], plain[k][0]) and torch.equal(got[k][1], plain[k][1])
    for k in (1, 3):
        c_prev, u_prev = plain[k - 1]
        assert torch.equal(got[k][0], plain[k][0])
        assert torch.allclose(got[k][1], plain[k][0] + (u_prev - c_prev), atol=1e-6)
        assert not torch.allclose(got[k][1], plain[k][1], atol=1e-4)


@torch.no_grad()
def test_taylor_with_cfg_runs_the_second_branch_at_every_other_full_step(model):
    x, cond, uncond = inputs(4)
    steps = trajectory(x, steps=8)  # t = 900, 800, ..., 200
    ts = [900.0 - 100 * k for k in range(8)]
    c = [model(xs, t, [cond]) for xs, t in steps]
    u = [model(xs, t, [uncond]) for xs, t in steps]
    spec = CacheSpec(
        taylor=True, taylor_interval=2, taylor_warmup=2, cfg=True, warmup=1, taylor_space="v"
    )
    cached = apply_cache(model, spec)
    blocks = count_calls(model.blocks)
    got = [(cached(xs, t, [cond]), cached(xs, t, [uncond])) for xs, t in steps]

    def line(p, q, k):  # the extrapolation at step k through (step p, a), (step q, b)
        (a, i), (b, j) = p, q
        return b + (b - a) / (ts[j] - ts[i]) * (ts[k] - ts[j])

    # the DiT answers steps 0, 1, 2, 4, 6 (taylor skips 3, 5, 7); among those after the cfg
    # warm-up (1, 2, 4, 6) the second branch alternates: compensated at 1 and 4, in full at 2, 6
    want_u = {0: u[0], 1: c[1] + (u[0] - c[0]), 2: u[2]}
    want_u[3] = line((want_u[1], 1), (want_u[2], 2), 3)
    want_u[4] = c[4] + (u[2] - c[2])  # the difference measured at the last full run (step 2)
    want_u[5] = line((want_u[2], 2), (want_u[4], 4), 5)
    want_u[6] = u[6]
    want_u[7] = line((want_u[4], 4), (u[6], 6), 7)
    want_c = {k: c[k] for k in (0, 1, 2, 4, 6)}
    want_c[3] = line((c[1], 1), (c[2], 2), 3)
    want_c[5], want_c[7] = line((c[2], 2), (c[4], 4), 5), line((c[4], 4), (c[6], 6), 7)
    for k in range(8):
        assert torch.allclose(got[k][0], want_c[k], atol=1e-5), k
        assert torch.allclose(got[k][1], want_u[k], atol=1e-5), k
    assert blocks["n"] == (5 + 3) * len(model.blocks)
    assert cached.stats.branches_reused == 2 and cached.stats.calls_extrapolated == 6


@torch.no_grad()
def test_inside_a_solve_taylor_counts_its_full_steps_back_from_the_last_step(model):
    x, cond, _ = inputs(5)
    spec = CacheSpec(taylor=True, taylor_interval=3, taylor_warmup=2)
    cached = apply_cache(model, spec)
    blocks = count_calls(model.blocks)
    ran, announced = [], []

    def model_fn(xs, t, i):
        before = blocks["n"]
        announced.append((planned_steps(), solver_step()))
        out = cached(xs[None], t, [cond])[0]
        ran.append(blocks["n"] > before)
        return out

    SOLVERS["euler"](model_fn, x[0], make_schedule("euler", 8, 3.0))
    # warm-up 0, 1; then every third step counted back from the last: 7, 4 (1 is warm-up)
    assert [i for i, r in enumerate(ran) if r] == [0, 1, 4, 7]
    assert announced == [(8, i) for i in range(8)]
    assert planned_steps() is None and solver_step() is None
    # a cache that takes over at step 2 (the A14B low-noise expert): its own two warm-up calls
    # (2, 3), then the solve's phase (4, 7; counting its own calls would give 6)
    late = apply_cache(model, spec)
    ran.clear()

    def handover(xs, t, i):
        if i < 2:
            return model(xs[None], t, [cond])[0]
        before = blocks["n"]
        out = late(xs[None], t, [cond])[0]
        ran.append(blocks["n"] > before)
        return out

    SOLVERS["euler"](handover, x[0], make_schedule("euler", 8, 3.0))
    assert [2 + k for k, r in enumerate(ran) if r] == [2, 3, 4, 7]
    # called outside a solver, the interval counts forward from the warm-up as before
    cached = apply_cache(model, spec)
    ran.clear()
    for xs, t in trajectory(x, steps=8):
        before = blocks["n"]
        cached(xs, t, [cond])
        ran.append(blocks["n"] > before)
    assert [i for i, r in enumerate(ran) if r] == [0, 1, 2, 5]


def test_cache_spec_parsing():
    assert CacheSpec.parse("off", 0.1) == CacheSpec()
    assert CacheSpec.parse("teacache", DEFAULT_TEACACHE) == CacheSpec(teacache=DEFAULT_TEACACHE)
    spec = CacheSpec.parse("teacache:0.05, cfg ,attn:3", 0.1)
    assert spec == CacheSpec(teacache=0.05, cfg=True, attn=True, attn_interval=3)
    assert CacheSpec.parse(spec.describe(), 0.1) == spec
    with pytest.raises(ValueError, match="unknown cache mode 'fast'"):
        CacheSpec.parse("cfg,fast", 0.1)
    with pytest.raises(ValueError, match="bad value"):
        CacheSpec.parse("teacache:abc", 0.1)
    with pytest.raises(ValueError, match=">= 0"):
        CacheSpec(teacache=-1.0)


def test_a_one_block_model_has_no_first_block_cache():
    one = WanModel(DiTConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=1, text_dim=16))
    with pytest.raises(ValueError, match="two blocks"):
        apply_cache(one, CacheSpec(teacache=0.1))


@torch.no_grad()
@pytest.mark.parametrize("first", [True, False])
def test_s2v_caches_are_exact_without_reuse_and_extrapolate_or_compensate_with_it(first):
    model = s2v_model()
    x, kw, cond, uncond = s2v_kwargs(5, first)
    silent = {**kw, "audio_input": torch.zeros_like(kw["audio_input"])}
    steps = trajectory(x, steps=5)
    plain = [(model(xs, t, [cond], **kw), model(xs, t, [uncond], **silent)) for xs, t in steps]
    # no reuse: the cache composes embed_s2v -> blocks with the audio injectors -> head exactly
    for spec in (CacheSpec(taylor=True, taylor_interval=1), CacheSpec(attn=True, warmup=9)):
        cached = apply_cache(model, spec)
        got = [(cached(xs, t, [cond], **kw), cached(xs, t, [uncond], **silent)) for xs, t in steps]
        cached.remove()
        assert all(torch.equal(g[0], p[0]) and torch.equal(g[1], p[1]) for g, p in zip(got, plain))
    # taylor:2 after one warm-up step: steps 2 and 4 of each branch are lines through its own
    # last two full outputs
    spec = CacheSpec(taylor=True, taylor_interval=2, taylor_warmup=1, taylor_space="v")
    cached = apply_cache(model, spec)
    got = [(cached(xs, t, [cond], **kw), cached(xs, t, [uncond], **silent)) for xs, t in steps]
    assert cached.stats.calls_extrapolated == 4
    for b in (0, 1):
        line = plain[1][b] + (plain[1][b] - plain[0][b]) / (800.0 - 900.0) * (700.0 - 800.0)
        assert torch.allclose(got[2][b], line, atol=1e-6)
        assert not torch.allclose(got[2][b], plain[2][b], atol=1e-5)
    # cfg: the zero-audio branch at step 1 is the conditional one plus the last measured gap
    cached = apply_cache(model, CacheSpec(cfg=True, cfg_interval=2, warmup=1))
    got = [(cached(xs, t, [cond], **kw), cached(xs, t, [uncond], **silent)) for xs, t in steps]
    assert cached.stats.branches_reused == 2
    gap = plain[0][1] - plain[0][0]
    assert torch.allclose(got[1][1], plain[1][0] + gap, atol=1e-6)


def test_s2v_has_no_first_block_cache():
    with pytest.raises(ValueError, match="teacache.*S2V"):
        apply_cache(s2v_model(), CacheSpec(teacache=0.1))
