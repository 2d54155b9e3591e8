"""openwan: an open PyTorch implementation of the Wan video foundation models."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# Public names resolve lazily so that `import openwan` stays cheap (no torch model code at import).
_LAZY = {
    "load_dit": "openwan.checkpoint.dit_format",
    "load_vae": "openwan.checkpoint.vae_format",
    "WanT2V": "openwan.pipelines.t2v",
    "WanTwoStageT2V": "openwan.pipelines.two_stage",
    "WanVACE": "openwan.pipelines.vace",
    "WanI2V": "openwan.pipelines.i2v",
    "WanFLF2V": "openwan.pipelines.i2v",
    "save_video": "openwan.io.video",
    "save_image": "openwan.io.video",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'openwan' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
