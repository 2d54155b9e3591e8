"""Wan-S2V-14B key manifest: openwan's model on the meta device against the key set and shapes of
the OFFICIAL ``WanModel_S2V`` at the real config (built on meta by tools/make_s2v_fixtures.py),
plus the S2V facts of WAN_SPEC §7.7 so the manifest cannot bless itself."""

import json
from pathlib import Path

import torch

from openwan.configs.s2v import WAN22_S2V_14B
from openwan.models.s2v import WanModelS2V

MANIFEST = json.loads((Path(__file__).parent / "manifests/dit_s2v_14B.json").read_text())


def test_s2v_14b_matches_the_official_manifest():
    with torch.device("meta"):
        model = WanModelS2V(WAN22_S2V_14B)
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == MANIFEST


def test_s2v_manifest_agrees_with_the_spec():
    m = MANIFEST
    injectors = 12  # audio_inject_layers [0, 4, ..., 36, 39]
    # base 14B DiT (1095) + per injector 10 attention + 2 AdaLN keys + 12 audio-encoder keys
    # + cond_encoder (2) + trainable_cond_mask (1) + FramePack (6)
    assert len(m) == 1095 + 12 * injectors + 12 + 2 + 1 + 6
    assert m["casual_audio_encoder.weights"] == [1, 25, 1, 1]
    assert m["casual_audio_encoder.encoder.conv1_local.conv.weight"] == [4 * 1280, 1024, 3]
    assert m["casual_audio_encoder.encoder.conv1_global.conv.weight"] == [1280, 1024, 3]
    assert m["casual_audio_encoder.encoder.conv2.conv.weight"] == [2560, 1280, 3]
    assert m["casual_audio_encoder.encoder.conv3.conv.weight"] == [5120, 2560, 3]
    assert m["casual_audio_encoder.encoder.padding_tokens"] == [1, 1, 1, 5120]
    assert m["audio_injector.injector.11.q.weight"] == [5120, 5120]
    assert "audio_injector.injector.12.q.weight" not in m
    assert m["audio_injector.injector_adain_layers.11.linear.weight"] == [10240, 5120]
    assert m["trainable_cond_mask.weight"] == [3, 5120]
    assert m["cond_encoder.weight"] == [5120, 16, 1, 2, 2]
    assert m["frame_packer.proj.weight"] == [5120, 16, 1, 2, 2]
    assert m["frame_packer.proj_2x.weight"] == [5120, 16, 2, 4, 4]
    assert m["frame_packer.proj_4x.weight"] == [5120, 16, 4, 8, 8]
    assert m["patch_embedding.weight"] == [5120, 16, 1, 2, 2]
    assert m["head.head.weight"] == [64, 5120] and m["blocks.39.modulation"] == [1, 6, 5120]
    assert not any(k.startswith(("motioner.", "zip_motion_out.", "img_emb.")) for k in m)
