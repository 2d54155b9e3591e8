"""Wan-S2V DiT checkpoints: the official ``WanModel_S2V`` folder (config.json + safetensors shards).

Only the official layout exists (diffusers has no S2V), so the keys load as they are.
"""

from __future__ import annotations

import json
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
from openwan.configs.dit import ConfigError
from openwan.configs.s2v import S2VConfig
from openwan.models.s2v import WanModelS2V


def load_s2v_dit(
    path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> WanModelS2V:
    folder = Path(path)
    try:
        config = S2VConfig.from_json(folder / "config.json")
    except ConfigError as e:
        raise CheckpointError(f"{folder}: {e}") from None
    sd = load_state_dict(find_weights(folder))
    with torch.device("meta"):
        model = WanModelS2V(config)
    what = f"{folder} does not match its S2V config (dim {config.dit.dim}, {config.dit.num_layers} layers)"
    assign_strict(model, sd, what=what, dtype=dtype, device=device)
    return model.eval()


def save_s2v_dit(model: WanModelS2V, folder: str | Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_state_dict(dict(model.state_dict()), folder / "diffusion_pytorch_model.safetensors")
    config = {"_class_name": "WanModel_S2V", **model.s2v_config.to_dict()}
    with atomic_path(folder / "config.json") as tmp:
        tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return folder
