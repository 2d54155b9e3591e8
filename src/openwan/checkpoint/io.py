"""Reading and writing state dicts: safetensors (single or sharded) and ``.pth`` (weights only).

Every failure is a :class:`CheckpointError` whose message names the file and says what to do.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, truncated or does not match the model."""


SAFETENSORS_INDEX_SUFFIX = ".safetensors.index.json"


def find_weights(directory: str | Path, stem: str = "diffusion_pytorch_model") -> list[Path]:
    """Weight files of a model folder: a sharded index, one safetensors file, or ``.pth``/``.bin``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {directory}")
    index = directory / f"{stem}{SAFETENSORS_INDEX_SUFFIX}"
    if index.is_file():
        return _shards_from_index(index)
    single = directory / f"{stem}.safetensors"
    if single.is_file():
        return [single]
    candidates = sorted(directory.glob("*.safetensors"))
    indexes = sorted(directory.glob(f"*{SAFETENSORS_INDEX_SUFFIX}"))
    if len(indexes) == 1:
        return _shards_from_index(indexes[0])
    if candidates:
        return candidates
    for ext in (".pth", ".bin", ".pt"):
        other = sorted(directory.glob(f"*{ext}"))
        if len(other) == 1:
            return other
    raise CheckpointError(
        f"no weights found in {directory}: expected {stem}.safetensors, a sharded "
        f"{stem}{SAFETENSORS_INDEX_SUFFIX}, or a single .pth file"
    )


def _shards_from_index(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (json.JSONDecodeError, KeyError) as e:
        raise CheckpointError(
            f"shard index {index} is not a valid safetensors index ({e})"
        ) from None
    shards = sorted({index.parent / name for name in weight_map.values()})
    missing = [p.name for p in shards if not p.is_file()]
    if missing:
        raise CheckpointError(
            f"shard index {index} lists files that are missing: {missing}; re-download the checkpoint"
        )
    return shards


def load_state_dict(paths: str | Path | list[Path], device: str = "cpu") -> dict[str, torch.Tensor]:
    """Load and merge one or several weight files (safetensors, or ``.pth`` with weights_only)."""
    if isinstance(paths, (str, Path)):
        paths = [Path(paths)]
    merged: dict[str, torch.Tensor] = {}
    for path in paths:
        part = _load_one(Path(path), device)
        dup = set(part) & set(merged)
        if dup:
            raise CheckpointError(
                f"{path} repeats keys already loaded from another shard: {sorted(dup)[:3]}"
            )
        merged.update(part)
    return merged


def _load_one(path: Path, device: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint file is empty: {path}; re-download it")
    if path.suffix == ".safetensors":
        try:
            return unpack_int8(load_file(str(path), device=device))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(
                f"cannot read {path} ({e}); the file is probably truncated or corrupt, re-download it"
            ) from None
    try:
        try:
            obj = torch.load(str(path), map_location=device, weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            # legacy (non-zip) serialisation cannot be memory-mapped
            obj = torch.load(str(path), map_location=device, weights_only=True)
    except Exception as e:  # torch raises several unrelated types for a bad pickle/zip
        raise CheckpointError(
            f"cannot read {path} ({type(e).__name__}: {e}); the file is probably truncated or "
            "corrupt, re-download it"
        ) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a flat state dict of tensors")
    return obj


INT8_SCALE_SUFFIX = ".__int8_scale__"


def pack_int8(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A smaller copy of ``sd`` for storage: every float weight of 2+ dims becomes int8 with one
    fp32 scale per output channel (``absmax / 127``, key ``<name>.__int8_scale__``); the rest
    (biases, norms, scalars) is kept as fp32. :func:`load_state_dict` undoes it on load (to
    fp32), so a packed file loads wherever an unpacked one does. Used for the shipped tiny
    models' storage budget; the rounding error is at most half a step per channel."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key.endswith(INT8_SCALE_SUFFIX):
            raise ValueError(f"{key} already looks packed")
        if value.is_floating_point() and value.dim() >= 2:
            w = value.detach().float()
            absmax = w.abs().flatten(1).amax(1).clamp_min(1e-12)
            scale = absmax / 127.0
            shape = (-1,) + (1,) * (w.dim() - 1)
            out[key] = torch.round(w / scale.view(shape)).clamp(-127, 127).to(torch.int8)
            out[key + INT8_SCALE_SUFFIX] = scale.contiguous()
        else:
            out[key] = value.detach().float() if value.is_floating_point() else value.detach()
    return out


def unpack_int8(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Undo :func:`pack_int8` (fp32 weights); a state dict with no packed keys comes back as is."""
    scales = [k for k in sd if k.endswith(INT8_SCALE_SUFFIX)]
    if not scales:
        return sd
    out = dict(sd)
    for skey in scales:
        key = skey[: -len(INT8_SCALE_SUFFIX)]
        q = out.get(key)
        if q is None or q.dtype != torch.int8:
            raise ValueError(f"{skey} has no int8 tensor {key} beside it")
        scale = out.pop(skey).float()
        out[key] = q.float() * scale.view((-1,) + (1,) * (q.dim() - 1))
    return out


def assign_strict(
    model: torch.nn.Module,
    sd: dict[str, torch.Tensor],
    *,
    what: str,
    dtype: torch.dtype,
    device: str | torch.device,
) -> None:
    """Load ``sd`` into a model built on ``meta`` (assign), naming any key or shape mismatch."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if missing or unexpected:
        more = lambda keys: "..." if len(keys) > 5 else ""  # noqa: E731
        raise CheckpointError(
            f"{what}: missing keys {missing[:5]}{more(missing)}, "
            f"unexpected keys {unexpected[:5]}{more(unexpected)}"
        )
    for key, tensor in expected.items():
        if tuple(sd[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{what}: {key} has shape {tuple(sd[key].shape)} in the checkpoint but "
                f"{tuple(tensor.shape)} in the model built from its config"
            )
    cast = {k: v.to(device=device, dtype=dtype) for k, v in sd.items()}
    model.load_state_dict(cast, strict=True, assign=True)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp_path
        # mkstemp creates 0600 files, and so do some writers (safetensors replaces the file):
        # give the result the permissions a plain open() would, once it is written
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def save_state_dict(
    state: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None
) -> None:
    """Write a safetensors file atomically (temp file + rename)."""
    contiguous = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata=metadata)
