"""Wan-S2V against reference numbers from the OFFICIAL Wan2.2 modules at a tiny random config.

Fixtures: tools/make_s2v_fixtures.py (Wan-Video/Wan2.2 @ 42bf4cf, fp32 attention substitute,
every weight re-randomised); weights are stored in the official state-dict layout and load with
strict=True.
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from helpers.random_weights import rel_err
from openwan.configs.s2v import S2VConfig
from openwan.models.s2v import AudioInjector, FramePack, S2VLayout, WanModelS2V
from openwan.ops.rope import rope_cos_sin
from openwan.pipelines.s2v_clip import ClipConditions, sample_clip

FIXTURES = Path(__file__).parents[1] / "fixtures/s2v"


def _load(name):
    path = str(FIXTURES / f"{name}.safetensors")
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    return load_file(path), meta


def _weights(tensors, prefix=""):
    start = f"weights.{prefix}"
    return {k[len(start) :]: v for k, v in tensors.items() if k.startswith(start)}


FORWARD, META = _load("forward")
CONFIG = S2VConfig.from_dict(json.loads(META["config"]))


@pytest.fixture(scope="module")
def model():
    m = WanModelS2V(CONFIG).eval()
    m.load_state_dict(_weights(FORWARD), strict=True)
    return m


def test_fixture_config_is_the_real_architecture_at_tiny_widths():
    assert META["official_commit"].startswith("42bf4cf")
    assert CONFIG.dit.head_dim == 32 and CONFIG.audio_inject_layers == (0, 1, 3)
    assert CONFIG.injector_map() == (3, {0: 0, 1: 1, 3: 2})


def test_audio_encoder(model):
    fx, _ = _load("audio_encoder")
    enc = model.casual_audio_encoder
    enc.load_state_dict(_weights(fx, "casual_audio_encoder."), strict=True)
    with torch.no_grad():
        glob, local = enc(fx["in.features"])
    assert glob.shape == (2, 22, 1, 64) and local.shape == (2, 22, 5, 64)
    assert rel_err(glob, fx["out.global"]) <= 1e-5
    assert rel_err(local, fx["out.local"]) <= 1e-5


def test_audio_injector_step():
    fx, _ = _load("injector")
    count, mapping = CONFIG.injector_map()
    inj = AudioInjector(64, 2, count, 1e-6)
    inj.load_state_dict(_weights(fx, "audio_injector."), strict=True)
    hidden = fx["in.hidden"]
    n = hidden.shape[1] - 40  # 40 reference/motion tokens follow the noisy ones
    cos = torch.ones(hidden.shape[1], 1, 16)
    layout = S2VLayout(
        grid=(3, 4, 8),
        k_lens=None,
        cos=cos,
        sin=cos * 0,
        split=n,
        audio_local=fx["in.audio_local"],
        audio_global=fx["in.audio_global"],
    )
    index = mapping[int(fx["meta.block"])]
    assert index == int(fx["meta.injector"])
    with torch.no_grad():
        out = inj(index, hidden, layout)
    ref = fx["out.hidden"]
    assert torch.equal(out[:, n:], hidden[:, n:])  # reference/motion tokens get no audio
    assert rel_err(out - hidden, ref - hidden) <= 1e-5  # the injected residual itself
    assert rel_err(out, ref) <= 1e-5


@pytest.mark.parametrize("frames", [5, 19, 23])
@pytest.mark.parametrize("add_last", [0, 1, 2])
def test_framepack_tokens_and_positions(frames, add_last):
    fx, _ = _load("framepack")
    pack = FramePack(64)
    pack.load_state_dict(_weights(fx, "frame_packer."), strict=True)
    with torch.no_grad():
        tokens = pack(fx[f"in.motion.{frames}"], add_last)
    assert tokens.shape == (2, 32 + 8 + 8, 64)
    assert rel_err(tokens, fx[f"out.tokens.{frames}.{add_last}"]) <= 1e-5
    cos, sin = rope_cos_sin(FramePack.rope_angles(8, 16, 32))
    rope = fx[f"out.rope.{frames}.{add_last}"]  # official complex multipliers [n, 16, (re, im)]
    torch.testing.assert_close(cos[:, 0], rope[..., 0].float(), rtol=0, atol=1e-6)
    torch.testing.assert_close(sin[:, 0], rope[..., 1].float(), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "tag,drop", [("first_clip", True), ("later_clip", False), ("batch2", False)]
)
def test_full_forward(model, tag, drop):
    inp = {k[len(tag) + 4 :]: v for k, v in FORWARD.items() if k.startswith(f"{tag}.in.")}
    context = [inp[k] for k in sorted(k for k in inp if k.startswith("context."))]
    with torch.no_grad():
        out = model(
            inp["x"],
            inp["t"],
            context,
            ref_latents=inp["ref_latents"],
            motion_latents=inp["motion_latents"],
            cond_states=inp["cond_states"],
            audio_input=inp["audio_input"],
            drop_motion_frames=drop,
        )
    assert out.shape == inp["x"].shape
    assert rel_err(out, FORWARD[f"out.{tag}"]) <= 1e-5


def test_motion_tokens_change_the_output(model):
    # guards the fixture itself: the two clip kinds must differ, else the drop flag is untested
    a, b = FORWARD["out.first_clip"], FORWARD["out.later_clip"]
    assert rel_err(a, b) > 0.1


@pytest.mark.parametrize("drop", [True, False])
def test_sampled_clip(model, drop):
    fx, meta = _load("sampling")
    info = json.loads(meta["sampling"])
    cond = ClipConditions(
        ref_latents=fx["in.ref_latents"],
        motion_latents=fx["in.motion_latents"],
        cond_states=fx["in.cond_states"],
        audio=fx["in.audio_input"],
        drop_motion_frames=drop,
    )
    out = sample_clip(
        model,
        fx["in.noise"].clone(),
        cond,
        fx["in.context"],
        fx["in.neg_context"],
        steps=info["steps"],
        shift=info["shift"],
        guide_scale=info["guide_scale"],
    )
    assert rel_err(out, fx[f"out.latent.drop{int(drop)}"]) <= 1e-4


def test_wrong_audio_length_is_an_error(model):
    inp = {k[len("later_clip.in.") :]: v for k, v in FORWARD.items() if "later_clip.in." in k}
    with pytest.raises(ValueError, match="4 per latent frame"):
        model(
            inp["x"],
            inp["t"],
            [inp["context.0"]],
            ref_latents=inp["ref_latents"],
            motion_latents=inp["motion_latents"],
            cond_states=inp["cond_states"],
            audio_input=inp["audio_input"][..., :8],
        )


def test_bf16_weights_run_close_to_fp32(model):
    # the official pipeline runs the DiT in bf16: every S2V branch must accept bf16 weights
    inp = {k[len("later_clip.in.") :]: v for k, v in FORWARD.items() if "later_clip.in." in k}
    half = WanModelS2V(CONFIG).eval()
    half.load_state_dict(model.state_dict())
    half.to(torch.bfloat16)
    kwargs = dict(
        ref_latents=inp["ref_latents"],
        motion_latents=inp["motion_latents"],
        cond_states=inp["cond_states"],
        audio_input=inp["audio_input"],
    )
    with torch.no_grad():
        out = half(inp["x"], inp["t"], [inp["context.0"]], **kwargs)
    assert out.dtype == torch.float32
    assert rel_err(out, FORWARD["out.later_clip"]) <= 0.05
