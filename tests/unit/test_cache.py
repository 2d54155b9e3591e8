"""First-block cache: exact when it never skips, reuses the right residual per CFG branch when it
does, and resets on a new generation."""

import pytest
import torch

from helpers.random_weights import randomize_
from openwan.configs.dit import DiTConfig
from openwan.models.dit import WanModel
from openwan.runtime.cache import apply_first_block_cache

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


@torch.no_grad()
def test_threshold_zero_is_the_plain_model(model):
    x, cond, uncond = inputs(0)
    ref = [
        model(x * s, torch.tensor([t]), [c])
        for t, s in ((900.0, 1), (500.0, 0.9))
        for c in (cond, uncond)
    ]
    cache = apply_first_block_cache(model, 0.0)
    got = [
        model(x * s, torch.tensor([t]), [c])
        for t, s in ((900.0, 1), (500.0, 0.9))
        for c in (cond, uncond)
    ]
    assert all(torch.equal(a, b) for a, b in zip(ref, got))
    assert cache.stats.calls == 4 and cache.stats.skipped == 0
    cache.remove()
    assert "forward" not in vars(model) and torch.equal(
        model(x, torch.tensor([900.0]), [cond]), ref[0]
    )


@torch.no_grad()
def test_skips_reuse_the_residual_of_their_own_branch(model):
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
        _, full1, _, _ = parts(x, t1, c)
        h1, _, _, _ = parts(x, t1, c)
        h2, _, e, layout = parts(x2, t2, c)
        tokens = h2 + (full1 - h1)
        expected[name] = model.unpatchify(model.head(tokens, e), layout.grid)
    plain = model(x2, t2, [cond])
    cache = apply_first_block_cache(model, 1.0)  # a large threshold: every second call skips
    model(x, t1, [cond])
    model(x, t1, [uncond])
    got_c = model(x2, t2, [cond])
    got_u = model(x2, t2, [uncond])
    assert cache.stats.skipped == 2
    assert torch.allclose(got_c, expected["cond"], atol=1e-6)
    assert torch.allclose(got_u, expected["uncond"], atol=1e-6)
    assert not torch.allclose(got_c, plain, atol=1e-4)  # the skip is an approximation
    # a new generation (t goes back up) starts without a cache
    model(x, torch.tensor([999.0]), [cond])
    assert cache.stats.skipped == 2


def test_bad_thresholds_and_models_are_refused(model):
    with pytest.raises(ValueError, match=">= 0"):
        apply_first_block_cache(model, -1.0)
    one = WanModel(DiTConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=1, text_dim=16))
    with pytest.raises(ValueError, match="two blocks"):
        apply_first_block_cache(one, 0.1)
