import json
from pathlib import Path

import pytest

from openwan.configs.dit import ConfigError, DiTConfig
from openwan.configs.s2v import WAN22_S2V_14B, S2VConfig


def _tiny(**kw):
    dit = DiTConfig(model_type="s2v", dim=64, ffn_dim=128, num_heads=2, num_layers=12)
    return S2VConfig(dit=dit, audio_dim=32, **kw)


def test_injector_map_reproduces_the_official_substring_matching():
    # the official model matches "transformer_blocks.1" inside "transformer_blocks.10", "...11":
    # 4 injectors, block 1 -> the last match (3), block 10 -> 2 (measured on the official code)
    assert _tiny(audio_inject_layers=(1, 10)).injector_map() == (4, {1: 3, 10: 2})
    count, mapping = WAN22_S2V_14B.injector_map()
    assert count == 12 and mapping[39] == 11 and mapping[27] == 7


def test_the_official_config_json_builds_the_14b_preset():
    # config.json written by the official WanModel_S2V (diffusers ConfigMixin) at the real config
    raw = json.loads(
        (Path(__file__).parents[1] / "fixtures/s2v/official_config_14B.json").read_text()
    )
    assert raw["_class_name"] == "WanModel_S2V"
    assert S2VConfig.from_dict(raw) == WAN22_S2V_14B


def test_official_config_json_round_trip():
    raw = WAN22_S2V_14B.to_dict()
    raw.update(_class_name="WanModel_S2V", _diffusers_version="0.33.1", motion_frames=73)
    assert S2VConfig.from_dict(raw) == WAN22_S2V_14B
    assert raw["audio_inject_layers"][-1] == 39 and raw["dim"] == 5120


@pytest.mark.parametrize(
    "change,match",
    [
        ({"enable_motioner": True}, "enable_motioner"),
        ({"framepack_drop_mode": "drop"}, "framepack_drop_mode"),
        ({"cond_dim": 0}, "cond_dim"),
        ({"audio_inject_layers": (0, 12)}, "outside"),
        ({"audio_context": 74}, "audio_context"),
    ],
)
def test_unsupported_configs_are_rejected(change, match):
    with pytest.raises(ConfigError, match=match):
        _tiny(**change)


def test_unknown_key_is_rejected():
    raw = WAN22_S2V_14B.to_dict()
    raw["enable_lipsync"] = True
    with pytest.raises(ConfigError, match="enable_lipsync"):
        S2VConfig.from_dict(raw)


def test_audio_context_is_left_out_of_the_official_config_and_kept_otherwise():
    # at 0 the official keys alone (the official constructor must not meet an unknown key)
    assert "audio_context" not in WAN22_S2V_14B.to_dict()
    ours = _tiny(audio_context=16, audio_inject_layers=(0, 4, 8))
    assert ours.to_dict()["audio_context"] == 16
    assert S2VConfig.from_dict(ours.to_dict()) == ours
