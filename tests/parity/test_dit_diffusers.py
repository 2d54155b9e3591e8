"""DiT forward against diffusers' WanTransformer3DModel in fp32 at tiny random-weight configs,
loading the same weights through both checkpoint formats."""

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from helpers.random_weights import randomize_, rel_err  # noqa: E402
from openwan.checkpoint.dit_format import (  # noqa: E402
    diffusers_to_official,
    load_dit,
    official_to_diffusers,
    save_dit,
)
from openwan.configs.dit import DiTConfig  # noqa: E402
from openwan.models.dit import WanModel  # noqa: E402

# text_len 512: the diffusers config has no text_len, real models pad to 512
TINY = DiTConfig(dim=64, ffn_dim=96, num_heads=2, num_layers=2, text_dim=24, text_len=512)


def _pair(cfg, seed=0):
    ours = randomize_(WanModel(cfg), seed=seed)
    ref = diffusers.WanTransformer3DModel(**cfg.to_diffusers_dict())
    ref.load_state_dict(official_to_diffusers(ours.state_dict()), strict=True)
    return ours.eval(), ref.eval()


def _inputs(cfg, f=3, h=4, w=6, ctx_len=10, batch=1, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 16, f, h, w, generator=g)
    ctx = torch.randn(batch, ctx_len, cfg.text_dim, generator=g)
    padded = torch.cat([ctx, torch.zeros(batch, cfg.text_len - ctx_len, cfg.text_dim)], dim=1)
    return x, ctx, padded


@pytest.mark.parametrize("fmt", ["official", "diffusers"])
def test_t2v_forward_matches_diffusers_from_both_formats(tmp_path, fmt):
    ours, ref = _pair(TINY)
    save_dit(ours, tmp_path, format=fmt)
    loaded = load_dit(tmp_path)
    x, ctx, padded = _inputs(TINY, batch=2)
    t = torch.tensor([613.7, 20.25])  # fractional timesteps are used as given
    with torch.no_grad():
        out = loaded(x, t, [ctx[0], ctx[1]])
        expect = ref(x, t, padded, return_dict=False)[0]
    assert out.shape == (2, 16, 3, 4, 6)
    assert rel_err(out, expect) < 1e-5


def test_per_token_timesteps_match_diffusers():
    cfg = TINY.replace(model_type="ti2v", in_dim=48, out_dim=48)
    ours, ref = _pair(cfg, seed=3)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 48, 3, 4, 6, generator=g)
    ctx = torch.randn(1, 7, cfg.text_dim, generator=g)
    t = torch.full((1, 3 * 2 * 3), 700.0)
    t[:, :6] = 0.0  # first latent frame: TI2V image tokens at t = 0
    with torch.no_grad():
        out = ours(x, t, [ctx[0]])
        expect = ref(
            x, t, torch.cat([ctx, torch.zeros(1, 505, cfg.text_dim)], 1), return_dict=False
        )[0]
        scalar = ours(x, torch.tensor([700.0]), [ctx[0]])
    assert rel_err(out, expect) < 1e-5
    assert rel_err(out, scalar) > 1e-3  # the t = 0 tokens really change the result
    t_all = torch.full((1, 18), 700.0)
    with torch.no_grad():
        assert rel_err(ours(x, t_all, [ctx[0]]), scalar) < 1e-6


@pytest.mark.parametrize("model_type, n_img", [("i2v", 257), ("flf2v", 514)])
def test_image_conditioned_forward_matches_diffusers(model_type, n_img):
    cfg = TINY.replace(model_type=model_type, in_dim=36)
    ours, ref = _pair(cfg, seed=5)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 16, 3, 4, 6, generator=g)
    y = torch.randn(1, 20, 3, 4, 6, generator=g)
    clip = torch.randn(1, n_img, 1280, generator=g)
    ctx = torch.randn(1, 9, cfg.text_dim, generator=g)
    t = torch.tensor([500.0])
    with torch.no_grad():
        out = ours(x, t, [ctx[0]], y=y, clip_fea=clip)
        padded = torch.cat([ctx, torch.zeros(1, 503, cfg.text_dim)], 1)
        # diffusers takes FLF2V tokens as [2B, 257, 1280]; ours are the same memory as [B, 514, 1280]
        clip_ref = clip.view(-1, 257, 1280)
        expect = ref(
            torch.cat([x, y], 1), t, padded, encoder_hidden_states_image=clip_ref, return_dict=False
        )[0]
    assert rel_err(out, expect) < 1e-5


def test_padding_to_seq_len_does_not_change_the_output():
    ours, _ = _pair(TINY)
    x, ctx, _ = _inputs(TINY)
    t = torch.tensor([400.0])
    with torch.no_grad():
        a = ours(x, t, [ctx[0]])
        b = ours(x, t, [ctx[0]], seq_len=3 * 2 * 3 + 5)  # padded keys are masked
    assert rel_err(b, a) < 1e-6


def test_key_adapter_round_trip_and_unknown_keys():
    ours = WanModel(TINY.replace(model_type="flf2v", in_dim=36))
    sd = ours.state_dict()
    conv = official_to_diffusers(sd)
    assert "blocks.0.norm2.weight" in conv and "blocks.0.attn2.add_k_proj.weight" in conv
    assert "condition_embedder.image_embedder.pos_embed" in conv and "scale_shift_table" in conv
    back = diffusers_to_official(conv)
    assert back.keys() == sd.keys()
    from openwan.checkpoint.io import CheckpointError

    with pytest.raises(CheckpointError, match="unexpected key.*blocks.0.foo"):
        official_to_diffusers({"blocks.0.foo": torch.zeros(1)})


def test_bf16_weights_keep_fp32_islands():
    ours, _ = _pair(TINY)
    x, ctx, _ = _inputs(TINY)
    t = torch.tensor([300.0])
    with torch.no_grad():
        ref = ours(x, t, [ctx[0]])
        out = ours.to(torch.bfloat16)(x, t, [ctx[0]])
    assert out.dtype == torch.float32
    assert rel_err(out, ref) < 0.05
