"""``openwan generate`` speed / memory switches: --cache, --quant, --offload, --compile, --vae-tiling.

Each maps to one ``runtime.apply_*`` call on the loaded pipeline, in a fixed order: quantize the
DiT, compile its blocks, wrap it in a cache, stream its blocks, tile the VAE decode.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from openwan.runtime.cache import CacheSpec


def add_speed_args(p: argparse.ArgumentParser, flag: Any) -> None:
    flag(
        p,
        "cache",
        default=None,
        help="diffusion cache: off or a comma list of teacache[:THRESHOLD] (skip the deeper DiT "
        "blocks at steps that change little), attn[:INTERVAL] (reuse attention outputs between "
        "steps), cfg[:INTERVAL] (reuse the unconditional branch with residual compensation), "
        "taylor[:INTERVAL] (after 6 full steps, run one step in INTERVAL (default 5) and extrapolate the noise "
        "estimate of the others linearly in t from the last two), e.g. teacache,cfg or taylor:4 "
        "(default: off)",
    )
    flag(p, "cache_threshold", type=float, default=None, help="same as --cache teacache:THRESHOLD")
    flag(
        p,
        "quant",
        default="none",
        choices=["none", "int8", "fp8"],
        help="quantize the DiT block linears: int8 (dynamic, CPU/GPU) or fp8 (GPUs with "
        "compute capability >= 8.9, needs torchao)",
    )
    flag(
        p,
        "offload",
        default=None,
        choices=["none", "model", "block"],
        help="model: models on the CPU when idle (official --offload_model); block: also "
        "stream DiT blocks to the device one at a time with prefetch, and run umT5 on the CPU "
        "reading its weights from the file one block at a time (~1 GB of RAM instead of 11 GB) "
        "(default: from --offload-model)",
    )
    flag(p, "compile", action="store_true", help="torch.compile the DiT blocks (regional)")
    flag(p, "vae_tiling", action="store_true", help="decode the video in blended spatial tiles")


def check_speed_args(
    args: argparse.Namespace, device: torch.device, *, parallel: bool = False
) -> str:
    """Refuse bad combinations before any model is loaded; returns the offload mode (official
    default: model offload on a GPU, except in a ``parallel`` run, which keeps its sharded
    weights on the device unless an offload flag is given)."""
    cache_spec(args)
    if args.offload is not None:
        if args.offload_model is not None:
            raise ValueError("give either --offload or --offload-model, not both")
        return str(args.offload)
    if args.offload_model is not None:
        on = bool(args.offload_model)
    else:
        on = device.type == "cuda" and not parallel
    return "model" if on else "none"


def cache_spec(args: argparse.Namespace) -> CacheSpec:
    """The diffusion cache ``--cache`` / ``--cache-threshold`` ask for."""
    from openwan.runtime.cache import DEFAULT_TEACACHE, CacheSpec

    if args.cache is not None and args.cache_threshold is not None:
        raise ValueError("give either --cache or --cache-threshold, not both")
    text = args.cache or "off"
    if args.cache_threshold is not None:
        text = f"teacache:{args.cache_threshold}"
    return CacheSpec.parse(text, DEFAULT_TEACACHE)


def apply_speed_options(pipe: Any, args: argparse.Namespace, device: torch.device) -> list[Any]:
    """Apply the switches to a loaded pipeline; returns the cache wrappers (for their stats)."""
    from openwan.runtime.cache import apply_cache
    from openwan.runtime.compile import apply_compile
    from openwan.runtime.offload import apply_block_offload
    from openwan.runtime.quant import apply_quant
    from openwan.runtime.vae_tiling import apply_vae_tiling

    spec = cache_spec(args)
    caches = []
    for attr in ("dit", "dit_high"):
        model = getattr(pipe, attr, None)  # S2V has no second expert
        if model is None:
            continue
        apply_quant(model, args.quant, device=device)
        if args.compile:
            apply_compile(model)
        denoiser = model
        if spec.enabled:
            denoiser = apply_cache(model, spec)
            caches.append(denoiser)
        if args.offload == "block":
            denoiser = apply_block_offload(model, device, denoiser=denoiser)
        setattr(pipe, attr, denoiser)
    if args.vae_tiling:
        pipe.vae = apply_vae_tiling(pipe.vae)
    return caches
