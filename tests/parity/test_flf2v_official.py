"""FLF2V against fixed numbers from the OFFICIAL Wan2.1 modules at a tiny random config
(tools/make_flf2v_fixtures.py): the DiT forward with first+last CLIP tokens and the FLF2V mask,
and the CLIP vision tower's penultimate block from official-layout weights."""

import json
from pathlib import Path

import torch
from safetensors import safe_open

from helpers.random_weights import rel_err
from openwan.checkpoint.dit_format import build_from_state_dict
from openwan.configs.dit import DiTConfig
from openwan.models.image import CLIPImageEncoder
from openwan.pipelines.image_cond import known_frame_mask

FIXTURE = Path(__file__).parents[1] / "fixtures" / "flf2v" / "flf2v_tiny.safetensors"


def _load():
    with safe_open(str(FIXTURE), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k).float() for k in f.keys()}  # noqa: SIM118
    return meta, tensors


def test_flf2v_dit_matches_the_official_model():
    meta, t = _load()
    assert meta["official"].startswith("Wan-Video/Wan2.1@")
    config = DiTConfig.from_dict(json.loads(meta["dit_config"]))
    assert config.model_type == "flf2v" and config.has_image_embedding
    sd = {k.removeprefix("dit."): v for k, v in t.items() if k.startswith("dit.")}
    model = build_from_state_dict(config, sd)  # strict: the official key set
    # the official model takes clip_fea [2B, 257, 1280] (first, last); openwan [B, 514, 1280]
    clip_fea = t["in.clip_fea"].reshape(1, 514, 1280)
    with torch.no_grad():
        out = model(t["in.x"][None], t["in.t"], [t["in.context"]], y=t["in.y"][None],
                    clip_fea=clip_fea, seq_len=int(meta["seq_len"]))[0]  # fmt: skip
    assert rel_err(out, t["out.dit"]) <= 1e-5, rel_err(out, t["out.dit"])
    # the image tokens matter at this scale (so the comparison above covers the image branch)
    with torch.no_grad():
        other = model(t["in.x"][None], t["in.t"], [t["in.context"]], y=t["in.y"][None],
                      clip_fea=torch.zeros_like(clip_fea))[0]  # fmt: skip
    assert rel_err(other, t["out.dit"]) > 1e-4  # 5.7e-4; the parity error is ~1e-7


def test_flf2v_mask_matches_the_fixture():
    _, t = _load()
    frames, h, w = t["in.y"].shape[1:]
    assert torch.equal(
        known_frame_mask(4 * (frames - 1) + 1, [0, 4 * (frames - 1)], (h, w)), t["in.y"][:4]
    )


def test_clip_tower_matches_the_official_vision_transformer(tmp_path):
    _, t = _load()
    official = {k.removeprefix("clip."): v for k, v in t.items() if k.startswith("clip.")}
    assert "visual.head" in official  # the projection is in the file and ignored on load
    torch.save(official, tmp_path / "clip.pth")
    enc = CLIPImageEncoder.from_pretrained(tmp_path / "clip.pth")
    with torch.no_grad():
        got = enc(t["in.pixels"])
    assert got.shape == t["out.clip"].shape == (2, 5, 160)
    assert rel_err(got, t["out.clip"]) <= 1e-5, rel_err(got, t["out.clip"])
