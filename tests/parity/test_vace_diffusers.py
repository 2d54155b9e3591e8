"""VACE DiT forward against diffusers' WanVACETransformer3DModel in fp32 at a tiny random-weight
config, loading the same weights through both checkpoint formats."""

import json

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
from openwan.checkpoint.io import CheckpointError  # noqa: E402
from openwan.configs.dit import DiTConfig  # noqa: E402
from openwan.models.vace import VaceWanModel  # noqa: E402

# 4 main blocks, hints after blocks 0 and 2 (the 1.3B pattern, every second block)
TINY = DiTConfig(
    dim=64,
    ffn_dim=96,
    num_heads=2,
    num_layers=4,
    text_dim=24,
    text_len=512,
    vace_layers=(0, 2),
    vace_in_dim=96,
)


def _pair(cfg=TINY, seed=0):
    ours = randomize_(VaceWanModel(cfg), seed=seed).eval()
    ref = diffusers.WanVACETransformer3DModel(**cfg.to_diffusers_dict())
    ref.load_state_dict(official_to_diffusers(ours.state_dict()), strict=True)
    return ours, ref.eval()


def _inputs(batch=1, f=3, h=4, w=6, ctx_len=10, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 16, f, h, w, generator=g)
    vace = torch.randn(batch, 96, f, h, w, generator=g)
    ctx = torch.randn(batch, ctx_len, TINY.text_dim, generator=g)
    padded = torch.cat([ctx, torch.zeros(batch, TINY.text_len - ctx_len, TINY.text_dim)], dim=1)
    return x, vace, ctx, padded


@pytest.mark.parametrize("fmt", ["official", "diffusers"])
@pytest.mark.parametrize("scale", [1.0, 0.6])
def test_vace_forward_matches_diffusers_from_both_formats(tmp_path, fmt, scale):
    ours, ref = _pair()
    save_dit(ours, tmp_path, format=fmt)
    loaded = load_dit(tmp_path)
    assert isinstance(loaded, VaceWanModel) and loaded.config == TINY
    x, vace, ctx, padded = _inputs(batch=2)
    t = torch.tensor([613.7, 20.25])
    with torch.no_grad():
        out = loaded(x, t, [ctx[0], ctx[1]], vace_context=vace, vace_context_scale=scale)
        expect = ref(
            x,
            t,
            padded,
            control_hidden_states=vace,
            control_hidden_states_scale=torch.full((2,), scale),
            return_dict=False,
        )[0]
    assert out.shape == (2, 16, 3, 4, 6)
    assert rel_err(out, expect) < 1e-5


def test_context_changes_the_output_and_scale_zero_is_plain_t2v():
    ours, _ = _pair(seed=3)
    x, vace, ctx, _ = _inputs(seed=4)
    t = torch.tensor([500.0])
    with torch.no_grad():
        a = ours(x, t, [ctx[0]], vace_context=vace)
        b = ours(x, t, [ctx[0]], vace_context=vace * 0.5)
        off = ours(x, t, [ctx[0]], vace_context=vace, vace_context_scale=0.0)
        plain = ours.head(
            ours.run_blocks(*_embedded(ours, x, t, ctx), hints=[torch.zeros(1)] * 2),
            ours.embed(x, t, [ctx[0]])[1],
        )
    assert rel_err(b, a) > 1e-3
    assert rel_err(off, ours.unpatchify(plain, (3, 2, 3))) < 1e-6


def _embedded(model, x, t, ctx):
    tokens, _, e0, c, layout = model.embed(x, t, [ctx[0]])
    return tokens, e0, c, layout


def test_padding_to_seq_len_does_not_change_the_output():
    ours, _ = _pair(seed=5)
    x, vace, ctx, _ = _inputs(seed=6)
    t = torch.tensor([400.0])
    with torch.no_grad():
        a = ours(x, t, [ctx[0]], vace_context=vace)
        b = ours(x, t, [ctx[0]], vace_context=vace, seq_len=3 * 2 * 3 + 7)
    assert rel_err(b, a) < 1e-6


def test_bad_vace_context_is_refused():
    ours, _ = _pair()
    x, vace, ctx, _ = _inputs()
    t = torch.tensor([400.0])
    with pytest.raises(ValueError, match=r"vace_context of shape \[1, 96, 3, 4, 6\]"):
        ours(x, t, [ctx[0]], vace_context=vace[:, :32])
    with pytest.raises(ValueError, match="starting at 0"):
        VaceWanModel(TINY.replace(vace_layers=(1, 2)))


def test_key_adapter_round_trip():
    sd = VaceWanModel(TINY).state_dict()
    conv = official_to_diffusers(sd)
    assert conv["vace_blocks.0.proj_in.weight"].shape == (64, 64)
    assert "vace_blocks.1.proj_in.weight" not in conv
    assert "vace_blocks.1.proj_out.bias" in conv and "vace_blocks.1.norm2.weight" in conv
    assert conv["vace_patch_embedding.weight"].shape == (64, 96, 1, 2, 2)
    back = diffusers_to_official(conv)
    assert back.keys() == sd.keys()
    assert all(torch.equal(back[k], sd[k]) for k in sd)


def test_released_config_spelling_is_recognised(tmp_path):
    """The released VACE configs say model_type "t2v" (code default "vace"), both load as VACE."""
    ours, _ = _pair()
    save_dit(ours, tmp_path, format="official")
    cfg_path = tmp_path / "config.json"
    raw = json.loads(cfg_path.read_text())
    assert raw["_class_name"] == "VaceWanModel" and raw["model_type"] == "t2v"
    raw["model_type"] = "vace"
    cfg_path.write_text(json.dumps(raw))
    assert load_dit(tmp_path).config == TINY
    # constructor defaults (vace_layers every second block, width from the weights)
    del raw["vace_layers"], raw["vace_in_dim"]
    cfg_path.write_text(json.dumps(raw))
    assert load_dit(tmp_path).config == TINY
    raw["num_layers"] = 6  # every second block of 6 = 3 context blocks, the weights have 2
    cfg_path.write_text(json.dumps(raw))
    with pytest.raises(
        CheckpointError, match="2 VACE blocks but its config.json has no vace_layers"
    ):
        load_dit(tmp_path)
