"""DiT checkpoints: official <-> diffusers keys, strict loading built on ``meta``, saving."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from openwan.checkpoint.io import (
    CheckpointError,
    assign_strict,
    atomic_path,
    find_weights,
    load_state_dict,
    save_state_dict,
)
from openwan.configs.dit import ConfigError, DiTConfig
from openwan.models.dit import WanModel

# Top-level renames (official prefix -> diffusers prefix), WAN_SPEC §8.1.
_GLOBAL = [
    ("time_embedding.0.", "condition_embedder.time_embedder.linear_1."),
    ("time_embedding.2.", "condition_embedder.time_embedder.linear_2."),
    ("time_projection.1.", "condition_embedder.time_proj."),
    ("text_embedding.0.", "condition_embedder.text_embedder.linear_1."),
    ("text_embedding.2.", "condition_embedder.text_embedder.linear_2."),
    ("img_emb.proj.0.", "condition_embedder.image_embedder.norm1."),
    ("img_emb.proj.1.", "condition_embedder.image_embedder.ff.net.0.proj."),
    ("img_emb.proj.3.", "condition_embedder.image_embedder.ff.net.2."),
    ("img_emb.proj.4.", "condition_embedder.image_embedder.norm2."),
    ("head.head.", "proj_out."),
    ("patch_embedding.", "patch_embedding."),
]
_EXACT = [
    ("img_emb.emb_pos", "condition_embedder.image_embedder.pos_embed"),
    ("head.modulation", "scale_shift_table"),
]
# Inside ``blocks.{i}.`` (note norm2/norm3 swap: official norm3 is the affine pre-cross-attn norm).
_BLOCK = [
    ("modulation", "scale_shift_table"),
    ("self_attn.q.", "attn1.to_q."),
    ("self_attn.k.", "attn1.to_k."),
    ("self_attn.v.", "attn1.to_v."),
    ("self_attn.o.", "attn1.to_out.0."),
    ("self_attn.norm_q.", "attn1.norm_q."),
    ("self_attn.norm_k.", "attn1.norm_k."),
    ("cross_attn.q.", "attn2.to_q."),
    ("cross_attn.k.", "attn2.to_k."),
    ("cross_attn.v.", "attn2.to_v."),
    ("cross_attn.o.", "attn2.to_out.0."),
    ("cross_attn.norm_q.", "attn2.norm_q."),
    ("cross_attn.norm_k.", "attn2.norm_k."),
    ("cross_attn.k_img.", "attn2.add_k_proj."),
    ("cross_attn.v_img.", "attn2.add_v_proj."),
    ("cross_attn.norm_k_img.", "attn2.norm_added_k."),
    ("norm3.", "norm2."),
    ("ffn.0.", "ffn.net.0.proj."),
    ("ffn.2.", "ffn.net.2."),
]
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)$")


def _rename(key: str, block_table: list[tuple[str, str]], global_table, exact_table) -> str | None:
    for a, b in exact_table:
        if key == a:
            return b
    m = _BLOCK_KEY.match(key)
    if m:
        rest = m.group(2)
        for a, b in block_table:
            if rest == a or (a.endswith(".") and rest.startswith(a)):
                return f"blocks.{m.group(1)}.{b}{rest[len(a) :]}"
        return None
    for a, b in global_table:
        if key.startswith(a):
            return b + key[len(a) :]
    return None


def _convert(sd: dict[str, torch.Tensor], forward: bool) -> dict[str, torch.Tensor]:
    flip = (lambda t: t) if forward else (lambda t: [(b, a) for a, b in t])
    out = {}
    for key, value in sd.items():
        new = _rename(key, flip(_BLOCK), flip(_GLOBAL), flip(_EXACT))
        if new is None:
            side = "official" if forward else "diffusers"
            raise CheckpointError(f"unexpected key in a {side} Wan transformer checkpoint: {key}")
        out[new] = value
    return out


def official_to_diffusers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return _convert(sd, forward=True)


def diffusers_to_official(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return _convert(sd, forward=False)


def is_diffusers_state_dict(sd: dict[str, torch.Tensor]) -> bool:
    return any(k.startswith(("condition_embedder.", "proj_out.")) for k in sd)


def load_dit(
    path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> WanModel:
    """Load a DiT from an official or a diffusers transformer folder (config.json + safetensors)."""
    folder = Path(path)
    try:
        config = DiTConfig.from_json(folder / "config.json")
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    sd = load_state_dict(find_weights(folder))
    if is_diffusers_state_dict(sd):
        sd = diffusers_to_official(sd)
    if config.model_type == "i2v" and config.image_embedding is None:
        # Wan2.1 I2V carries a CLIP image embedder; Wan2.2 I2V-A14B experts (same model_type) do not
        config = config.replace(image_embedding=any(k.startswith("img_emb.") for k in sd))
    return build_from_state_dict(config, sd, dtype=dtype, device=device, source=str(folder))


def build_from_state_dict(
    config: DiTConfig,
    sd: dict[str, torch.Tensor],
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    source: str = "state dict",
) -> WanModel:
    """Build on ``meta`` and assign the weights strictly, naming any mismatch."""
    with torch.device("meta"):
        model = WanModel(config)
    what = (
        f"{source} does not match its config ({config.model_type}, dim {config.dim}, "
        f"{config.num_layers} layers)"
    )
    assign_strict(model, sd, what=what, dtype=dtype, device=device)
    return model.eval()


def save_dit(model: WanModel, folder: str | Path, format: str = "official") -> Path:
    """Write ``config.json`` + ``diffusion_pytorch_model.safetensors`` in the official or diffusers layout."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sd = {k: v for k, v in model.state_dict().items()}
    if format == "diffusers":
        cls = "WanVACETransformer3DModel" if model.config.is_vace else "WanTransformer3DModel"
        config = {"_class_name": cls, **model.config.to_diffusers_dict()}
        sd = official_to_diffusers(sd)
    elif format == "official":
        config = {"_class_name": "WanModel", **model.config.to_dict()}
    else:
        raise ValueError(f"unknown checkpoint format {format!r}; use 'official' or 'diffusers'")
    save_state_dict(sd, folder / "diffusion_pytorch_model.safetensors")
    with atomic_path(folder / "config.json") as tmp:
        tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return folder
