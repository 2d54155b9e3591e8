"""Key manifests of every real config, built on the meta device (no weights).

Each model must equal its stored manifest (drift detection), and each manifest is checked against
facts of the official checkpoints from WAN_SPEC (counts and shapes), so a wrong model cannot bless
itself by regenerating its manifest.
"""

import json
from pathlib import Path

import pytest
import torch

from openwan.configs import dit as dit_cfg
from openwan.configs.vae import WAN21_VAE, WAN22_VAE
from openwan.models.dit import WanModel
from openwan.models.vace import VaceWanModel
from openwan.models.vae import WanVAE

MANIFESTS = Path(__file__).parent / "manifests"

DITS = {
    "dit_t2v_1.3B": dit_cfg.WAN21_T2V_1_3B,
    "dit_t2v_14B": dit_cfg.WAN21_T2V_14B,
    "dit_i2v_14B": dit_cfg.WAN21_I2V_14B,
    "dit_flf2v_14B": dit_cfg.WAN21_FLF2V_14B,
    "dit_ti2v_5B": dit_cfg.WAN22_TI2V_5B,
    "dit_i2v_A14B": dit_cfg.WAN22_I2V_A14B,
    "dit_vace_1.3B": dit_cfg.WAN21_VACE_1_3B,
    "dit_vace_14B": dit_cfg.WAN21_VACE_14B,
}
VAES = {"vae_2.1": WAN21_VAE, "vae_2.2": WAN22_VAE}


def _load(name):
    return json.loads((MANIFESTS / f"{name}.json").read_text())


def _shapes(module):
    return {k: list(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("name", sorted(DITS))
def test_dit_matches_manifest(name):
    cfg = DITS[name]
    with torch.device("meta"):
        model = (VaceWanModel if cfg.is_vace else WanModel)(cfg)
    assert _shapes(model) == _load(name)


@pytest.mark.parametrize("name", sorted(VAES))
def test_vae_matches_manifest(name):
    with torch.device("meta"):
        model = WanVAE(VAES[name])
    assert _shapes(model) == _load(name)


def test_dit_manifests_agree_with_the_spec():
    # WAN_SPEC §1.5: 15 global + 27 per block; I2V +5 per block +8 img_emb; FLF2V + emb_pos
    assert len(_load("dit_t2v_14B")) == 15 + 27 * 40 == 1095
    assert len(_load("dit_i2v_14B")) == 1095 + 5 * 40 + 8 == 1303
    assert len(_load("dit_flf2v_14B")) == 1304
    assert len(_load("dit_i2v_A14B")) == 1095  # Wan2.2 I2V experts: no CLIP branch
    assert len(_load("dit_t2v_1.3B")) == 15 + 27 * 30
    m = _load("dit_t2v_1.3B")
    assert m["patch_embedding.weight"] == [1536, 16, 1, 2, 2]
    assert m["time_projection.1.weight"] == [6 * 1536, 1536]
    assert m["text_embedding.0.weight"] == [1536, 4096]
    assert m["time_embedding.0.weight"] == [1536, 256]
    assert m["head.head.weight"] == [4 * 16, 1536] and m["head.modulation"] == [1, 2, 1536]
    assert m["blocks.29.modulation"] == [1, 6, 1536]
    assert m["blocks.0.ffn.0.weight"] == [8960, 1536] and m["blocks.0.ffn.2.weight"] == [1536, 8960]
    assert m["blocks.0.self_attn.norm_q.weight"] == [1536] and m["blocks.0.norm3.weight"] == [1536]
    assert not any(".norm1." in k or ".norm2." in k for k in m)  # parameter-free norms
    five = _load("dit_ti2v_5B")
    assert five["patch_embedding.weight"] == [3072, 48, 1, 2, 2] and five["head.head.weight"] == [
        192,
        3072,
    ]
    i2v = _load("dit_i2v_14B")
    assert i2v["patch_embedding.weight"] == [5120, 36, 1, 2, 2]
    assert i2v["img_emb.proj.1.weight"] == [1280, 1280] and i2v["img_emb.proj.3.weight"] == [
        5120,
        1280,
    ]
    assert i2v["blocks.39.cross_attn.k_img.weight"] == [5120, 5120]
    assert _load("dit_flf2v_14B")["img_emb.emb_pos"] == [1, 514, 1280]


def test_vace_manifests_agree_with_the_spec():
    # WAN_SPEC §3.10: T2V keys + vace_patch_embedding (2) + per context block the 27 block tensors
    # and after_proj (2); block 0 also before_proj (2)
    for name, base, n in [
        ("dit_vace_1.3B", "dit_t2v_1.3B", 15),
        ("dit_vace_14B", "dit_t2v_14B", 8),
    ]:
        m, t2v = _load(name), _load(base)
        assert len(m) == len(t2v) + 2 + n * (27 + 2) + 2
        assert {k: v for k, v in m.items() if k in t2v} == t2v
        dim = t2v["head.modulation"][2]
        assert m["vace_patch_embedding.weight"] == [dim, 96, 1, 2, 2]
        assert m["vace_blocks.0.before_proj.weight"] == [dim, dim]
        assert "vace_blocks.1.before_proj.weight" not in m
        assert m[f"vace_blocks.{n - 1}.after_proj.weight"] == [dim, dim]
        assert f"vace_blocks.{n}.after_proj.weight" not in m
        assert m[f"vace_blocks.{n - 1}.ffn.0.weight"] == t2v["blocks.0.ffn.0.weight"]


def test_vae_manifests_agree_with_the_spec():
    v21 = _load("vae_2.1")
    # WAN_SPEC §2.2 tables
    assert v21["encoder.conv1.weight"] == [96, 3, 3, 3, 3]
    assert v21["encoder.downsamples.3.shortcut.weight"] == [192, 96, 1, 1, 1]
    assert v21["encoder.downsamples.5.time_conv.weight"] == [192, 192, 3, 1, 1]
    assert v21["encoder.head.2.weight"] == [32, 384, 3, 3, 3]
    assert v21["conv1.weight"] == [32, 32, 1, 1, 1] and v21["conv2.weight"] == [16, 16, 1, 1, 1]
    assert v21["decoder.conv1.weight"] == [384, 16, 3, 3, 3]
    assert v21["decoder.upsamples.3.time_conv.weight"] == [768, 384, 3, 1, 1]
    assert v21["decoder.upsamples.3.resample.1.weight"] == [192, 384, 3, 3]
    assert v21["decoder.upsamples.4.shortcut.weight"] == [384, 192, 1, 1, 1]
    assert v21["decoder.upsamples.11.resample.1.weight"] == [96, 192, 3, 3]
    assert v21["decoder.head.2.weight"] == [3, 96, 3, 3, 3]
    assert v21["decoder.middle.1.norm.gamma"] == [384, 1, 1]
    assert v21["decoder.upsamples.0.residual.0.gamma"] == [384, 1, 1, 1]
    v22 = _load("vae_2.2")
    # WAN_SPEC §2.3 tables
    assert v22["encoder.conv1.weight"] == [160, 12, 3, 3, 3]
    assert v22["encoder.downsamples.1.downsamples.0.shortcut.weight"] == [320, 160, 1, 1, 1]
    assert v22["encoder.downsamples.2.downsamples.2.time_conv.weight"] == [640, 640, 3, 1, 1]
    assert v22["encoder.head.2.weight"] == [96, 640, 3, 3, 3]
    assert v22["conv1.weight"] == [96, 96, 1, 1, 1] and v22["conv2.weight"] == [48, 48, 1, 1, 1]
    assert v22["decoder.conv1.weight"] == [1024, 48, 3, 3, 3]
    assert v22["decoder.upsamples.0.upsamples.3.time_conv.weight"] == [2048, 1024, 3, 1, 1]
    assert v22["decoder.upsamples.0.upsamples.3.resample.1.weight"] == [1024, 1024, 3, 3]
    # decoder stages (1024->1024, 1024->1024, 1024->512, 512->256) as in the official code and
    # diffusers (WAN_SPEC's §2.3 decoder table lists them one stage early)
    assert "decoder.upsamples.1.upsamples.0.shortcut.weight" not in v22
    assert v22["decoder.upsamples.2.upsamples.0.shortcut.weight"] == [512, 1024, 1, 1, 1]
    assert v22["decoder.upsamples.2.upsamples.3.resample.1.weight"] == [512, 512, 3, 3]
    assert v22["decoder.upsamples.3.upsamples.0.shortcut.weight"] == [256, 512, 1, 1, 1]
    assert "decoder.upsamples.3.upsamples.3.resample.1.weight" not in v22
    assert v22["decoder.head.2.weight"] == [12, 256, 3, 3, 3]


@pytest.mark.parametrize("name", sorted(VAES))
def test_vae_manifest_equals_diffusers_real_config(name):
    diffusers = pytest.importorskip("diffusers")
    from openwan.checkpoint.vae_format import config_to_diffusers, official_to_diffusers

    cfg = VAES[name]
    kwargs = {k: v for k, v in config_to_diffusers(cfg).items() if not k.startswith("_")}
    kwargs.pop("clip_output", None)
    with torch.device("meta"):
        ref = diffusers.AutoencoderKLWan(**kwargs)
    ours = {k: torch.empty(s, device="meta") for k, s in _load(name).items()}
    assert _shapes_of(official_to_diffusers(ours, cfg)) == _shapes(ref)


@pytest.mark.parametrize("name", sorted(DITS))
def test_dit_manifest_equals_diffusers_real_config(name):
    diffusers = pytest.importorskip("diffusers")
    from openwan.checkpoint.dit_format import official_to_diffusers

    cfg = DITS[name]
    cls = diffusers.WanVACETransformer3DModel if cfg.is_vace else diffusers.WanTransformer3DModel
    with torch.device("meta"):
        ref = cls(**cfg.to_diffusers_dict())
    ours = {k: torch.empty(s, device="meta") for k, s in _load(name).items()}
    assert _shapes_of(official_to_diffusers(ours)) == _shapes(ref)


def _shapes_of(sd):
    return {k: list(v.shape) for k, v in sd.items()}
