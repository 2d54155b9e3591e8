"""umT5-XXL official key set and shapes (WAN_SPEC §4), built on meta; no weights needed."""

import torch
from transformers import UMT5EncoderModel

from openwan.checkpoint.t5_format import hf_to_official, official_to_hf, umt5_config_from_official


def _spec_manifest() -> dict[str, tuple[int, ...]]:
    keys: dict[str, tuple[int, ...]] = {
        "token_embedding.weight": (256384, 4096),
        "norm.weight": (4096,),
    }
    for i in range(24):
        b = f"blocks.{i}."
        keys |= {b + f"attn.{p}.weight": (4096, 4096) for p in "qkvo"}
        keys |= {
            b + "norm1.weight": (4096,),
            b + "norm2.weight": (4096,),
            b + "pos_embedding.embedding.weight": (32, 64),
            b + "ffn.gate.0.weight": (10240, 4096),
            b + "ffn.fc1.weight": (10240, 4096),
            b + "ffn.fc2.weight": (4096, 10240),
        }
    return keys


def test_umt5_xxl_manifest_on_meta():
    spec = _spec_manifest()
    meta_sd = {k: torch.empty(s, device="meta") for k, s in spec.items()}
    config = umt5_config_from_official(meta_sd)
    assert (config.num_layers, config.num_heads, config.d_kv, config.d_ff) == (24, 64, 64, 10240)
    with torch.device("meta"):
        model = UMT5EncoderModel(config)
    built = {k: tuple(v.shape) for k, v in hf_to_official(model.state_dict()).items()}
    assert built == spec
    model.load_state_dict(official_to_hf(meta_sd), strict=True, assign=True)
