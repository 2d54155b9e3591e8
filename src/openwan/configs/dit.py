"""DiT (WanModel) configuration.

Field names are the official constructor / ``config.json`` keys, so an official
``config.json`` maps onto this dataclass one to one. Keys the official checkpoints
never serialise (``patch_size``, ``qk_norm``, ``cross_attn_norm``, ``text_dim``,
``window_size``) keep the official defaults.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Keys written by diffusers' ConfigMixin that carry no architecture information.
_META_KEYS = {"_class_name", "_diffusers_version", "_name_or_path", "_commit_hash"}

# diffusers ``WanTransformer3DModel`` config keys -> official keys (see WAN_SPEC §8.1).
_DIFFUSERS_RENAMES = {
    "in_channels": "in_dim",
    "out_channels": "out_dim",
    "num_attention_heads": "num_heads",
    "ffn_dim": "ffn_dim",
    "freq_dim": "freq_dim",
    "text_dim": "text_dim",
    "num_layers": "num_layers",
    "eps": "eps",
    "patch_size": "patch_size",
    "vace_layers": "vace_layers",
    "vace_in_channels": "vace_in_dim",
}
# diffusers keys that are derived from others or fixed for every Wan model.
_DIFFUSERS_DERIVED = {
    "attention_head_dim",
    "qk_norm",
    "cross_attn_norm",
    "rope_max_seq_len",
    "added_kv_proj_dim",
    "image_dim",
    "pos_embed_seq_len",
}


class ConfigError(ValueError):
    """A config file that does not describe a model openwan can build."""


def read_config_json(path: str | Path) -> dict[str, Any]:
    """The object in a ``config.json``; a missing file or bad JSON is a :class:`ConfigError`."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"config file {path} is not valid JSON: {e}") from None
    return raw


@dataclass(frozen=True)
class DiTConfig:
    model_type: str = "t2v"  # t2v | i2v | flf2v | ti2v | s2v (VACE: "t2v" + vace_layers)
    patch_size: tuple[int, int, int] = (1, 2, 2)
    text_len: int = 512
    in_dim: int = 16
    dim: int = 2048
    ffn_dim: int = 8192
    freq_dim: int = 256
    text_dim: int = 4096
    out_dim: int = 16
    num_heads: int = 16
    num_layers: int = 32
    window_size: tuple[int, int] = (-1, -1)
    qk_norm: bool = True
    cross_attn_norm: bool = True
    eps: float = 1e-6
    # Wan2.1 I2V/FLF2V have a CLIP image embedder and image cross-attention; Wan2.2 I2V experts
    # (also model_type "i2v") do not. None = decided by model_type (the loader checks the weights).
    image_embedding: bool | None = None
    # VACE (None for plain WanModel)
    vace_layers: tuple[int, ...] | None = None
    vace_in_dim: int | None = None

    def __post_init__(self) -> None:
        if self.dim % self.num_heads != 0:
            raise ConfigError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.head_dim % 2 != 0:
            raise ConfigError(f"head_dim {self.head_dim} must be even for RoPE")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def has_image_embedding(self) -> bool:
        if self.image_embedding is not None:
            return self.image_embedding
        return self.model_type in ("i2v", "flf2v")

    @property
    def is_vace(self) -> bool:
        return self.vace_layers is not None

    def replace(self, **changes: Any) -> DiTConfig:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ json
    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DiTConfig:
        """Build from an official or a diffusers ``config.json`` dict.

        Unknown keys are an error (a misspelt key would otherwise silently fall
        back to a default and build the wrong model).
        """
        raw = {k: v for k, v in raw.items() if k not in _META_KEYS}
        if "in_channels" in raw or "num_attention_heads" in raw:
            raw = _from_diffusers(raw)
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - fields)
        if unknown:
            raise ConfigError(f"unknown DiT config keys {unknown}; known keys: {sorted(fields)}")
        kw: dict[str, Any] = dict(raw)
        for key in ("patch_size", "window_size", "vace_layers"):
            if kw.get(key) is not None:
                kw[key] = tuple(kw[key])
        if kw.get("vace_layers") is not None and kw.get("model_type") == "vace":
            # VaceWanModel's code default; the released VACE configs say "t2v". Architecturally a
            # VACE model is a T2V model plus context blocks (``is_vace``), so one spelling is kept.
            kw["model_type"] = "t2v"
        return cls(**kw)

    @classmethod
    def from_json(cls, path: str | Path) -> DiTConfig:
        return cls.from_dict(read_config_json(path))

    def to_dict(self) -> dict[str, Any]:
        """Official-style ``config.json`` content (non-default VACE keys only when set)."""
        d = dataclasses.asdict(self)
        for key in ("patch_size", "window_size", "vace_layers"):
            if d[key] is not None:
                d[key] = list(d[key])
        if not self.is_vace:
            d.pop("vace_layers")
            d.pop("vace_in_dim")
        if self.image_embedding is None:
            d.pop("image_embedding")
        return d

    def to_diffusers_dict(self) -> dict[str, Any]:
        """``WanTransformer3DModel`` / ``WanVACETransformer3DModel`` config for this model."""
        d: dict[str, Any] = {
            "patch_size": list(self.patch_size),
            "num_attention_heads": self.num_heads,
            "attention_head_dim": self.head_dim,
            "in_channels": self.in_dim,
            "out_channels": self.out_dim,
            "text_dim": self.text_dim,
            "freq_dim": self.freq_dim,
            "ffn_dim": self.ffn_dim,
            "num_layers": self.num_layers,
            "cross_attn_norm": self.cross_attn_norm,
            "qk_norm": "rms_norm_across_heads" if self.qk_norm else None,
            "eps": self.eps,
            "image_dim": 1280 if self.has_image_embedding else None,
            "added_kv_proj_dim": self.dim if self.has_image_embedding else None,
            "rope_max_seq_len": 1024,
        }
        if self.model_type == "flf2v":
            d["pos_embed_seq_len"] = 514
        if self.is_vace:
            d["vace_layers"] = list(self.vace_layers or ())
            d["vace_in_channels"] = self.vace_in_dim
        return d


def _from_diffusers(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    unknown = []
    for key, value in raw.items():
        if key in _DIFFUSERS_RENAMES:
            out[_DIFFUSERS_RENAMES[key]] = value
        elif key in _DIFFUSERS_DERIVED:
            continue
        else:
            unknown.append(key)
    if unknown:
        raise ConfigError(f"unknown diffusers transformer config keys {sorted(unknown)}")
    heads = raw["num_attention_heads"]
    out["dim"] = heads * raw.get("attention_head_dim", 128)
    out["qk_norm"] = raw.get("qk_norm") is not None
    if "cross_attn_norm" in raw:
        out["cross_attn_norm"] = bool(raw["cross_attn_norm"])
    if raw.get("pos_embed_seq_len"):
        out["model_type"] = "flf2v"
    elif raw.get("image_dim"):
        out["model_type"] = "i2v"
    elif out.get("in_dim") == 48:
        out["model_type"] = "ti2v"
    elif out.get("in_dim") == 36:
        out["model_type"] = "i2v"  # Wan2.2 I2V-A14B expert: no image embedder
        out["image_embedding"] = False
    out["text_len"] = 512
    return out


# ---------------------------------------------------------------- presets
WAN21_T2V_1_3B = DiTConfig(
    model_type="t2v", in_dim=16, out_dim=16, dim=1536, ffn_dim=8960, num_heads=12, num_layers=30
)
WAN21_T2V_14B = DiTConfig(
    model_type="t2v", in_dim=16, out_dim=16, dim=5120, ffn_dim=13824, num_heads=40, num_layers=40
)
WAN21_I2V_14B = WAN21_T2V_14B.replace(model_type="i2v", in_dim=36)
WAN21_FLF2V_14B = WAN21_T2V_14B.replace(model_type="flf2v", in_dim=36)
WAN21_VACE_1_3B = WAN21_T2V_1_3B.replace(vace_layers=tuple(range(0, 30, 2)), vace_in_dim=96)
WAN21_VACE_14B = WAN21_T2V_14B.replace(vace_layers=tuple(range(0, 40, 5)), vace_in_dim=96)
WAN22_T2V_A14B = WAN21_T2V_14B
WAN22_I2V_A14B = WAN21_T2V_14B.replace(model_type="i2v", in_dim=36, image_embedding=False)
WAN22_TI2V_5B = DiTConfig(
    model_type="ti2v", in_dim=48, out_dim=48, dim=3072, ffn_dim=14336, num_heads=24, num_layers=30
)

PRESETS: dict[str, DiTConfig] = {
    "wan21-t2v-1.3b": WAN21_T2V_1_3B,
    "wan21-t2v-14b": WAN21_T2V_14B,
    "wan21-i2v-14b": WAN21_I2V_14B,
    "wan21-flf2v-14b": WAN21_FLF2V_14B,
    "wan21-vace-1.3b": WAN21_VACE_1_3B,
    "wan21-vace-14b": WAN21_VACE_14B,
    "wan22-t2v-a14b": WAN22_T2V_A14B,
    "wan22-i2v-a14b": WAN22_I2V_A14B,
    "wan22-ti2v-5b": WAN22_TI2V_5B,
}
