"""CLIP vision-tower key layouts: the official ``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth``
(open-clip XLM-RoBERTa ViT-H/14, ``visual.*`` keys) <-> transformers ``CLIPVisionModel`` (WAN_SPEC §5).

Only the vision tower is used by Wan: the text tower (``textual.*``), the contrastive temperature
(``log_scale``) and the image projection (``visual.head``) are dropped on load.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from openwan.checkpoint.io import CheckpointError

# Width of one attention head of the ViT-H/14 tower (1280 / 16 heads). The official file stores no
# config, and the head count cannot be read from the weight shapes, so it follows from this width.
CLIP_HEAD_DIM = 80
# official keys of the file that belong to no part of the vision tower Wan runs
_IGNORED_PREFIXES = ("textual.", "log_scale", "visual.head")

_BLOCK_MAP = {
    "norm1.weight": "layer_norm1.weight",
    "norm1.bias": "layer_norm1.bias",
    "attn.proj.weight": "self_attn.out_proj.weight",
    "attn.proj.bias": "self_attn.out_proj.bias",
    "norm2.weight": "layer_norm2.weight",
    "norm2.bias": "layer_norm2.bias",
    "mlp.0.weight": "mlp.fc1.weight",
    "mlp.0.bias": "mlp.fc1.bias",
    "mlp.2.weight": "mlp.fc2.weight",
    "mlp.2.bias": "mlp.fc2.bias",
}
_BLOCK_MAP_INV = {v: k for k, v in _BLOCK_MAP.items()}
_GLOBAL_MAP = {
    "visual.patch_embedding.weight": "embeddings.patch_embedding.weight",
    "visual.pre_norm.weight": "pre_layrnorm.weight",
    "visual.pre_norm.bias": "pre_layrnorm.bias",
    "visual.post_norm.weight": "post_layernorm.weight",
    "visual.post_norm.bias": "post_layernorm.bias",
}
_GLOBAL_MAP_INV = {v: k for k, v in _GLOBAL_MAP.items()}
_OFFICIAL_BLOCK = re.compile(r"^visual\.transformer\.(\d+)\.(.+)$")
_HF_BLOCK = re.compile(r"^encoder\.layers\.(\d+)\.(.+)$")
_QKV = ("q_proj", "k_proj", "v_proj")


def official_to_hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official ``visual.*`` keys -> ``CLIPVisionModel`` keys; text-tower keys are ignored."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key.startswith(_IGNORED_PREFIXES):
            continue
        if key in _GLOBAL_MAP:
            out[_GLOBAL_MAP[key]] = value
        elif key == "visual.cls_embedding":
            out["embeddings.class_embedding"] = value.reshape(-1)  # [1, 1, D] -> [D]
        elif key == "visual.pos_embedding":
            out["embeddings.position_embedding.weight"] = value.reshape(
                value.shape[-2], value.shape[-1]
            )  # [1, N, D] -> [N, D]
        elif m := _OFFICIAL_BLOCK.match(key):
            prefix, rest = f"encoder.layers.{m.group(1)}.", m.group(2)
            if rest in ("attn.to_qkv.weight", "attn.to_qkv.bias"):
                # fused rows are [q; k; v]
                kind = rest.rsplit(".", 1)[1]
                for name, part in zip(_QKV, value.chunk(3, dim=0), strict=True):
                    out[f"{prefix}self_attn.{name}.{kind}"] = part
            elif rest in _BLOCK_MAP:
                out[prefix + _BLOCK_MAP[rest]] = value
            else:
                raise CheckpointError(f"unexpected key in CLIP checkpoint: {key}")
        else:
            raise CheckpointError(f"unexpected key in CLIP checkpoint: {key}")
    if "embeddings.patch_embedding.weight" not in out:
        raise CheckpointError(
            "the CLIP checkpoint has no visual.* weights; expected the official "
            "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
        )
    return out


def hf_to_official(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``CLIPVisionModel`` keys -> the official ``visual.*`` keys (vision tower only)."""
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        if key.startswith("vision_model."):
            key = key[len("vision_model.") :]
        if key == "embeddings.position_ids":
            continue  # a non-persistent index buffer in some transformers versions
        if key in _GLOBAL_MAP_INV:
            out[_GLOBAL_MAP_INV[key]] = value
        elif key == "embeddings.class_embedding":
            out["visual.cls_embedding"] = value.reshape(1, 1, -1)
        elif key == "embeddings.position_embedding.weight":
            out["visual.pos_embedding"] = value.unsqueeze(0)
        elif m := _HF_BLOCK.match(key):
            prefix, rest = f"visual.transformer.{m.group(1)}.", m.group(2)
            proj = rest.split(".")
            if len(proj) == 3 and proj[0] == "self_attn" and proj[1] in _QKV:
                fused.setdefault(f"{prefix}attn.to_qkv.{proj[2]}", {})[proj[1]] = value
            elif rest in _BLOCK_MAP_INV:
                out[prefix + _BLOCK_MAP_INV[rest]] = value
            else:
                raise CheckpointError(f"unexpected key in CLIPVisionModel state dict: {key}")
        else:
            raise CheckpointError(f"unexpected key in CLIPVisionModel state dict: {key}")
    for key, parts in fused.items():
        out[key] = torch.cat([parts[n] for n in _QKV], dim=0)
    return out


def vision_config_from_official(sd: dict[str, torch.Tensor]) -> Any:  # -> CLIPVisionConfig
    """The ``CLIPVisionConfig`` of an official ``visual.*`` state dict, read from its shapes."""

    try:
        patch = sd["visual.patch_embedding.weight"]
        pos = sd["visual.pos_embedding"]
        fc1 = sd["visual.transformer.0.mlp.0.weight"]
    except KeyError as e:
        raise CheckpointError(f"the CLIP checkpoint lacks {e.args[0]}") from None
    dim, patch_size = int(patch.shape[0]), int(patch.shape[-1])
    grid = int(round((pos.shape[-2] - 1) ** 0.5))  # tokens = grid^2 patches + 1 class token
    layers = 1 + max(int(m.group(1)) for k in sd if (m := _OFFICIAL_BLOCK.match(k)) is not None)
    if dim % CLIP_HEAD_DIM:
        raise CheckpointError(
            f"CLIP width {dim} is not a multiple of the ViT-H/14 head width {CLIP_HEAD_DIM}"
        )
    return vit_h14_config(
        hidden_size=dim,
        intermediate_size=int(fc1.shape[0]),
        num_hidden_layers=layers,
        num_attention_heads=dim // CLIP_HEAD_DIM,
        image_size=grid * patch_size,
        patch_size=patch_size,
    )


def vit_h14_config(**overrides: Any) -> Any:  # -> CLIPVisionConfig
    """The open-clip ViT-H/14 vision tower of Wan2.1 I2V/FLF2V as a ``CLIPVisionConfig``.

    Exact GELU (not CLIP's quick-GELU), LayerNorm eps 1e-5; ``overrides`` shrink it for tests.
    """
    from transformers import CLIPVisionConfig

    fields: dict[str, Any] = {
        "hidden_size": 1280,
        "intermediate_size": 5120,
        "num_hidden_layers": 32,
        "num_attention_heads": 16,
        "image_size": 224,
        "patch_size": 14,
        "num_channels": 3,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-5,
        "projection_dim": 1024,
    }
    fields.update(overrides)
    return CLIPVisionConfig(**fields)
