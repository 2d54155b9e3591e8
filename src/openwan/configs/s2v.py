"""Wan-S2V (speech-to-video) DiT configuration (WAN_SPEC §1.3, §7.7).

The official ``WanModel_S2V`` config.json holds the base DiT keys plus the S2V switches below;
field names are the official constructor keys. openwan builds the one S2V variant that was
released (S2V-14B): FramePack motion compression, audio AdaLN in ``attn_norm`` mode, zero timestep
for reference/motion tokens. Other switch values describe unreleased variants and are rejected.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openwan.configs.dit import ConfigError, DiTConfig, read_config_json

# Python-config keys that the official constructor swallows through **kwargs.
_IGNORED_KEYS = {"trainable_token", "motion_frames", "motion_token_num"}
# Switch values of the released S2V-14B; anything else is a different (unreleased) architecture.
_REQUIRED = {
    "enable_adain": True,
    "adain_mode": "attn_norm",
    "zero_timestep": True,
    "enable_motioner": False,
    "enable_tsm": False,
    "trainable_token_pos_emb": False,
    "enable_framepack": True,
    "framepack_drop_mode": "padd",
}
NUM_AUDIO_LAYERS = 25  # wav2vec2-large: embedding output + 24 transformer layers (hard-coded)
FRAMEPACK_BUCKETS = (1, 2, 16)  # newest, 2x, 4x compressed latent frames (hard-coded)
REF_FRAME_POSITION = 30  # RoPE time position of the reference-image tokens


@dataclass(frozen=True)
class S2VConfig:
    dit: DiTConfig
    cond_dim: int = 16
    audio_dim: int = 1024
    num_audio_token: int = 4
    audio_inject_layers: tuple[int, ...] = (0, 4, 8, 12, 16, 20, 24, 27, 30, 33, 36, 39)
    add_last_motion: bool = True
    zero_init: bool = True  # training init only (zeroes injector outputs etc.)
    enable_adain: bool = True
    adain_mode: str = "attn_norm"
    zero_timestep: bool = True
    enable_motioner: bool = False
    enable_tsm: bool = False
    trainable_token_pos_emb: bool = False
    enable_framepack: bool = True
    framepack_drop_mode: str = "padd"
    # openwan, not official (left out of config.json at 0): a clip after the first reads this
    # many audio frames from before its start, in place of its first audio frame repeated over
    # the motion history (WanModelS2V.encode_audio). The clip's first latent frame shows 3 frames
    # from before its own audio, so the official layout leaves their mouth to guesswork.
    audio_context: int = 0

    def __post_init__(self) -> None:
        for key, value in _REQUIRED.items():
            if getattr(self, key) != value:
                raise ConfigError(
                    f"S2V {key}={getattr(self, key)!r} is not supported (only the released "
                    f"S2V-14B architecture, {key}={value!r}, is implemented)"
                )
        d = self.dit
        if d.in_dim != 16:
            raise ConfigError(
                f"S2V needs in_dim 16 (FramePack convs take 16 channels), got {d.in_dim}"
            )
        if self.cond_dim <= 0:
            raise ConfigError("S2V needs cond_dim > 0 (the pose condition encoder always runs)")
        if d.dim % 4:
            raise ConfigError(f"S2V needs dim divisible by 4 (audio encoder widths), got {d.dim}")
        if not 0 <= self.audio_context <= 73:  # MOTION_FRAMES[0], the history it replaces
            raise ConfigError(f"audio_context must lie in 0..73 frames, got {self.audio_context}")
        bad = [i for i in self.audio_inject_layers if not 0 <= i < d.num_layers]
        if bad:
            raise ConfigError(f"audio_inject_layers {bad} outside 0..{d.num_layers - 1}")

    def injector_map(self) -> tuple[int, dict[int, int]]:
        """(number of injectors, block index -> injector index), as the official model builds it.

        The official code matches ``f"transformer_blocks.{i}"`` as a SUBSTRING of each block's
        module name, so layer 1 also matches blocks 10..19; every match creates an injector and the
        block->injector map keeps the last match. Reproduced because it decides the checkpoint keys.
        """
        count = 0
        mapping: dict[int, int] = {}
        for block in range(self.dit.num_layers):
            name = f"root.transformer_blocks.{block}"
            for layer in self.audio_inject_layers:
                if f"transformer_blocks.{layer}" in name:
                    mapping[layer] = count
                    count += 1
        return count, mapping

    def replace(self, **changes: Any) -> S2VConfig:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ json
    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> S2VConfig:
        """From an official ``WanModel_S2V`` config.json dict; unknown keys are an error."""
        # "_"-keys are diffusers bookkeeping (_class_name, _diffusers_version, _use_default_values)
        raw = {k: v for k, v in raw.items() if not k.startswith("_") and k not in _IGNORED_KEYS}
        s2v_fields = {f.name for f in dataclasses.fields(cls)} - {"dit"}
        s2v = {k: raw.pop(k) for k in list(raw) if k in s2v_fields}
        if "audio_inject_layers" in s2v:
            s2v["audio_inject_layers"] = tuple(s2v["audio_inject_layers"])
        raw.setdefault("model_type", "s2v")
        if raw["model_type"] != "s2v":
            raise ConfigError(f"not an S2V config: model_type {raw['model_type']!r}")
        return cls(dit=DiTConfig.from_dict(raw), **s2v)

    @classmethod
    def from_json(cls, path: str | Path) -> S2VConfig:
        return cls.from_dict(read_config_json(path))

    def to_dict(self) -> dict[str, Any]:
        d = self.dit.to_dict()
        for f in dataclasses.fields(self):
            if f.name != "dit" and not (f.name == "audio_context" and self.audio_context == 0):
                value = getattr(self, f.name)
                d[f.name] = list(value) if isinstance(value, tuple) else value
        return d


WAN22_S2V_14B = S2VConfig(
    dit=DiTConfig(
        model_type="s2v",
        in_dim=16,
        out_dim=16,
        dim=5120,
        ffn_dim=13824,
        num_heads=40,
        num_layers=40,
    ),
    audio_dim=1024,
)
