"""The official CLIP ViT-H/14 vision-tower key set and shapes (WAN_SPEC §5), built on meta."""

import torch
from transformers import CLIPVisionModel

from openwan.checkpoint.clip_format import (
    hf_to_official,
    official_to_hf,
    vision_config_from_official,
    vit_h14_config,
)


def _spec_manifest() -> dict[str, tuple[int, ...]]:
    keys: dict[str, tuple[int, ...]] = {
        "visual.patch_embedding.weight": (1280, 3, 14, 14),
        "visual.cls_embedding": (1, 1, 1280),
        "visual.pos_embedding": (1, 257, 1280),
        "visual.pre_norm.weight": (1280,),
        "visual.pre_norm.bias": (1280,),
        "visual.post_norm.weight": (1280,),
        "visual.post_norm.bias": (1280,),
    }
    for i in range(32):
        b = f"visual.transformer.{i}."
        keys |= {
            b + "norm1.weight": (1280,),
            b + "norm1.bias": (1280,),
            b + "attn.to_qkv.weight": (3840, 1280),
            b + "attn.to_qkv.bias": (3840,),
            b + "attn.proj.weight": (1280, 1280),
            b + "attn.proj.bias": (1280,),
            b + "norm2.weight": (1280,),
            b + "norm2.bias": (1280,),
            b + "mlp.0.weight": (5120, 1280),
            b + "mlp.0.bias": (5120,),
            b + "mlp.2.weight": (1280, 5120),
            b + "mlp.2.bias": (1280,),
        }
    return keys


def test_vit_h14_manifest_on_meta():
    spec = _spec_manifest()
    with torch.device("meta"):
        model = CLIPVisionModel(vit_h14_config())
    built = {k: tuple(v.shape) for k, v in hf_to_official(model.state_dict()).items()}
    assert built == spec
    # the official file also holds the text tower, the projection and the temperature
    meta_sd = {k: torch.empty(s, device="meta") for k, s in spec.items()}
    meta_sd |= {"visual.head": torch.empty(1280, 1024, device="meta")}
    meta_sd |= {"textual.token_embedding.weight": torch.empty(250002, 1024, device="meta")}
    config = vision_config_from_official(meta_sd)
    assert (config.num_hidden_layers, config.num_attention_heads, config.image_size) == (
        32,
        16,
        224,
    )
    assert (config.intermediate_size, config.hidden_act) == (5120, "gelu")
    model.load_state_dict(official_to_hf(meta_sd), strict=True, assign=True)
