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
from openwan.models.vace import VaceWanModel

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
    ("vace_patch_embedding.", "vace_patch_embedding."),
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
# VACE context blocks (``vace_blocks.{n}.``) are DiT blocks plus the hint projections.
_VACE_BLOCK = [*_BLOCK, ("before_proj.", "proj_in."), ("after_proj.", "proj_out.")]
_BLOCK_KEY = re.compile(r"^(blocks|vace_blocks)\.(\d+)\.(.+)$")
_Table = list[tuple[str, str]]


def _match(rest: str, table: _Table) -> str | None:
    for a, b in table:
        if rest == a or (a.endswith(".") and rest.startswith(a)):
            return b + rest[len(a) :]
    return None


def _rename(key: str, tables: dict[str, _Table]) -> str | None:
    for a, b in tables["exact"]:
        if key == a:
            return b
    m = _BLOCK_KEY.match(key)
    if m:
        stack, index, rest = m.groups()
        new = _match(rest, tables[stack])
        return None if new is None else f"{stack}.{index}.{new}"
    for a, b in tables["global"]:
        if key.startswith(a):
            return b + key[len(a) :]
    return None


def _convert(sd: dict[str, torch.Tensor], forward: bool) -> dict[str, torch.Tensor]:
    tables = {"blocks": _BLOCK, "vace_blocks": _VACE_BLOCK, "global": _GLOBAL, "exact": _EXACT}
    if not forward:
        tables = {name: [(b, a) for a, b in t] for name, t in tables.items()}
    out = {}
    for key, value in sd.items():
        new = _rename(key, tables)
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
    config = _vace_fields_from_weights(config, sd, source=str(folder))
    return build_from_state_dict(config, sd, dtype=dtype, device=device, source=str(folder))


def _vace_fields_from_weights(
    config: DiTConfig, sd: dict[str, torch.Tensor], *, source: str
) -> DiTConfig:
    """Complete a VACE config the way ``VaceWanModel``'s constructor defaults would.

    Its defaults are every second block (``range(0, num_layers, 2)``) and ``vace_in_dim = in_dim``;
    the context width is read from ``vace_patch_embedding`` when the config leaves it out.
    """
    n_blocks = len({k.split(".")[1] for k in sd if k.startswith("vace_blocks.")})
    if not n_blocks and not config.is_vace:
        return config
    layers = config.vace_layers
    if layers is None:
        layers = tuple(range(0, config.num_layers, 2))
        if n_blocks != len(layers):
            raise CheckpointError(
                f"{source} has {n_blocks} VACE blocks but its config.json has no vace_layers; "
                "add the list of block indices the hints are added after"
            )
    in_dim = config.vace_in_dim
    if in_dim is None:
        weight = sd.get("vace_patch_embedding.weight")
        in_dim = int(weight.shape[1]) if weight is not None else config.in_dim
    model_type = (
        "t2v" if config.model_type == "vace" else config.model_type
    )  # as DiTConfig.from_dict
    return config.replace(vace_layers=layers, vace_in_dim=in_dim, model_type=model_type)


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
        model = VaceWanModel(config) if config.is_vace else WanModel(config)
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
        cls = "VaceWanModel" if model.config.is_vace else "WanModel"
        config = {"_class_name": cls, **model.config.to_dict()}
    else:
        raise ValueError(f"unknown checkpoint format {format!r}; use 'official' or 'diffusers'")
    save_state_dict(sd, folder / "diffusion_pytorch_model.safetensors")
    with atomic_path(folder / "config.json") as tmp:
        tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return folder
