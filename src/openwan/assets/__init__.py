"""Weights shipped inside the package (the embedded tiny models)."""

from __future__ import annotations

from pathlib import Path

from openwan.checkpoint.io import CheckpointError

ASSETS_DIR = Path(__file__).resolve().parent

# kind -> (folder of the embedded model, the file inside it that must be there)
TINY_MODELS = {
    "t2v": ("wan-tiny", Path("transformer") / "config.json"),
    "s2v": ("wan-tiny/s2v", Path("config.json")),
}


def tiny_model_dir(kind: str = "t2v") -> Path:
    """Folder of an embedded tiny model: ``t2v`` (diffusers-style layout: transformer/, vae/,
    text_encoder/, tokenizer/) or ``s2v`` (the S2V layout of ``openwan train-s2v --export``)."""
    try:
        name, marker = TINY_MODELS[kind]
    except KeyError:
        raise ValueError(
            f"no embedded tiny model of kind {kind!r}; known: {sorted(TINY_MODELS)}"
        ) from None
    path = ASSETS_DIR / name
    if not (path / marker).is_file():
        raise CheckpointError(
            f"the embedded model {name} is missing from this installation ({path}); "
            "reinstall openwan or pass --ckpt-dir"
        )
    return path
