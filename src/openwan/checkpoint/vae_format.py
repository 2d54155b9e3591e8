"""Wan-VAE checkpoints: official ``Wan2.x_VAE.pth`` <-> diffusers ``AutoencoderKLWan`` (WAN_SPEC §8.2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from openwan.checkpoint.io import (
    CheckpointError,
    assign_strict,
    atomic_path,
    find_weights,
    load_state_dict,
    save_state_dict,
)
from openwan.configs.vae import WAN21_VAE, WAN22_VAE, VAEConfig
from openwan.models.vae import WanVAE
from openwan.ops.conv import channels_last_weights

_RESIDUAL = [
    ("residual.0.gamma", "norm1.gamma"),
    ("residual.2.", "conv1."),
    ("residual.3.gamma", "norm2.gamma"),
    ("residual.6.", "conv2."),
    ("shortcut.", "conv_shortcut."),
]


def _stage_prefixes(cfg: VAEConfig) -> list[tuple[str, str]]:
    """(official prefix, diffusers prefix) pairs for the down/up stacks of this config."""
    pairs: list[tuple[str, str]] = []
    n_stages = len(cfg.dim_mult)
    if cfg.version == "2.2":
        for i in range(n_stages):
            for j in range(cfg.num_res_blocks):
                pairs.append(
                    (
                        f"encoder.downsamples.{i}.downsamples.{j}.",
                        f"encoder.down_blocks.{i}.resnets.{j}.",
                    )
                )
            pairs.append(
                (
                    f"encoder.downsamples.{i}.downsamples.{cfg.num_res_blocks}.",
                    f"encoder.down_blocks.{i}.downsampler.",
                )
            )
            for j in range(cfg.num_res_blocks + 1):
                pairs.append(
                    (f"decoder.upsamples.{i}.upsamples.{j}.", f"decoder.up_blocks.{i}.resnets.{j}.")
                )
            pairs.append(
                (
                    f"decoder.upsamples.{i}.upsamples.{cfg.num_res_blocks + 1}.",
                    f"decoder.up_blocks.{i}.upsampler.",
                )
            )
        return pairs
    enc_layers = n_stages * cfg.num_res_blocks + (n_stages - 1)
    pairs += [(f"encoder.downsamples.{k}.", f"encoder.down_blocks.{k}.") for k in range(enc_layers)]
    k = 0
    for i in range(n_stages):
        for j in range(cfg.num_res_blocks + 1):
            pairs.append((f"decoder.upsamples.{k}.", f"decoder.up_blocks.{i}.resnets.{j}."))
            k += 1
        if i != n_stages - 1:
            pairs.append((f"decoder.upsamples.{k}.", f"decoder.up_blocks.{i}.upsamplers.0."))
            k += 1
    return pairs


def _fixed_prefixes() -> list[tuple[str, str]]:
    pairs = [("conv1.", "quant_conv."), ("conv2.", "post_quant_conv.")]
    for part in ("encoder", "decoder"):
        pairs += [
            (f"{part}.conv1.", f"{part}.conv_in."),
            (f"{part}.middle.0.", f"{part}.mid_block.resnets.0."),
            (f"{part}.middle.1.", f"{part}.mid_block.attentions.0."),
            (f"{part}.middle.2.", f"{part}.mid_block.resnets.1."),
            (f"{part}.head.0.", f"{part}.norm_out."),
            (f"{part}.head.2.", f"{part}.conv_out."),
        ]
    return pairs


def key_map(cfg: VAEConfig) -> dict[str, str]:
    """Official key -> diffusers key for every tensor of a VAE with this config."""
    with torch.device("meta"):
        keys = list(WanVAE(cfg).state_dict())
    prefixes = sorted(_fixed_prefixes() + _stage_prefixes(cfg), key=lambda p: -len(p[0]))
    out = {}
    for key in keys:
        official, diffusers = next(((a, b) for a, b in prefixes if key.startswith(a)), (None, None))
        if official is None or diffusers is None:
            raise CheckpointError(f"no diffusers name for VAE key {key}")
        rest = key[len(official) :]
        if rest.startswith(("residual.", "shortcut.")):
            rest = next(b + rest[len(a) :] for a, b in _RESIDUAL if rest.startswith(a))
        out[key] = diffusers + rest
    return out


def official_to_diffusers(sd: dict[str, torch.Tensor], cfg: VAEConfig) -> dict[str, torch.Tensor]:
    mapping = key_map(cfg)
    unknown = sorted(set(sd) - set(mapping))
    if unknown:
        raise CheckpointError(f"unexpected keys in an official Wan VAE checkpoint: {unknown[:5]}")
    return {mapping[k]: v for k, v in sd.items()}


def diffusers_to_official(sd: dict[str, torch.Tensor], cfg: VAEConfig) -> dict[str, torch.Tensor]:
    inverse = {v: k for k, v in key_map(cfg).items()}
    unknown = sorted(set(sd) - set(inverse))
    if unknown:
        raise CheckpointError(
            f"unexpected keys in a diffusers AutoencoderKLWan checkpoint: {unknown[:5]}"
        )
    return {inverse[k]: v for k, v in sd.items()}


# ------------------------------------------------------------------------- configs
def config_to_diffusers(cfg: VAEConfig) -> dict[str, Any]:
    d: dict[str, Any] = {
        "_class_name": "AutoencoderKLWan",
        "base_dim": cfg.dim,
        "decoder_base_dim": cfg.dec_dim if cfg.dec_dim != cfg.dim else None,
        "z_dim": cfg.z_dim,
        "dim_mult": list(cfg.dim_mult),
        "num_res_blocks": cfg.num_res_blocks,
        "attn_scales": list(cfg.attn_scales),
        "temperal_downsample": list(cfg.temperal_downsample),
        "dropout": cfg.dropout,
        "latents_mean": list(cfg.latent_mean),
        "latents_std": list(cfg.latent_std),
        "is_residual": cfg.version == "2.2",
        "in_channels": 3 * cfg.patch_size**2,
        "out_channels": 3 * cfg.patch_size**2,
        "patch_size": cfg.patch_size if cfg.version == "2.2" else None,
        "scale_factor_temporal": cfg.stride[0],
        "scale_factor_spatial": cfg.stride[1],
    }
    if cfg.version == "2.2":
        d["clip_output"] = False
    return d


def config_from_diffusers(raw: dict[str, Any]) -> VAEConfig:
    version = "2.2" if raw.get("is_residual") else "2.1"
    dim = int(raw.get("base_dim", 96))
    z = int(raw.get("z_dim", 16))
    base = WAN22_VAE if version == "2.2" else WAN21_VAE
    return VAEConfig(
        version=version,
        dim=dim,
        dec_dim=int(raw.get("decoder_base_dim") or dim),
        z_dim=z,
        dim_mult=tuple(raw.get("dim_mult", base.dim_mult)),
        num_res_blocks=int(raw.get("num_res_blocks", 2)),
        attn_scales=tuple(raw.get("attn_scales", ())),
        temperal_downsample=tuple(raw.get("temperal_downsample", base.temperal_downsample)),
        dropout=float(raw.get("dropout", 0.0)),
        latent_mean=tuple(raw.get("latents_mean", base.latent_mean)),
        latent_std=tuple(raw.get("latents_std", base.latent_std)),
    )


def config_from_official(sd: dict[str, torch.Tensor]) -> VAEConfig:
    """Recognise an official VAE file from its tensors (2.2 has nested residual stages)."""
    try:
        z = sd["conv2.weight"].shape[0]
        dim = sd["encoder.conv1.weight"].shape[0]
        dec_dim = sd["decoder.head.2.weight"].shape[1]
    except KeyError as e:
        raise CheckpointError(f"not a Wan VAE checkpoint (missing {e})") from None
    version = (
        "2.2" if any(k.startswith("encoder.downsamples.0.downsamples.") for k in sd) else "2.1"
    )
    base = WAN22_VAE if version == "2.2" else WAN21_VAE
    stats = {} if z == base.z_dim else {"latent_mean": (0.0,) * z, "latent_std": (1.0,) * z}
    return base.replace(dim=int(dim), dec_dim=int(dec_dim), z_dim=int(z), **stats)


# ------------------------------------------------------------------------- load / save
def load_vae(
    path: str | Path,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    config: VAEConfig | None = None,
) -> WanVAE:
    """Load an official ``Wan2.1_VAE.pth``/``Wan2.2_VAE.pth`` file or a diffusers ``vae/`` folder."""
    path = Path(path)
    if path.is_dir():
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise CheckpointError(
                f"{path} has no config.json (expected a diffusers AutoencoderKLWan folder)"
            )
        raw = json.loads(cfg_file.read_text(encoding="utf-8"))
        cfg = config or config_from_diffusers(raw)
        sd = load_state_dict(find_weights(path))
        if any(k.startswith("quant_conv.") for k in sd):
            sd = diffusers_to_official(sd, cfg)
    else:
        sd = load_state_dict(path)
        cfg = config or config_from_official(sd)
    with torch.device("meta"):
        vae = WanVAE(cfg)
    what = f"{path} does not match a Wan VAE {cfg.version} (dim {cfg.dim})"
    assign_strict(vae, sd, what=what, dtype=dtype, device=device)
    return channels_last_weights(vae).eval()  # assigning replaced the weights' layout


def save_vae(vae: WanVAE, path: str | Path, format: str = "official") -> Path:
    """official: one ``.pth``-compatible safetensors/pth file at ``path``; diffusers: a folder."""
    path = Path(path)
    sd = {k: v.detach().cpu().contiguous() for k, v in vae.state_dict().items()}
    if format == "official":
        if path.suffix == ".safetensors":
            save_state_dict(sd, path)
        else:
            with atomic_path(path) as tmp:
                torch.save(sd, tmp)
        return path
    if format != "diffusers":
        raise ValueError(f"unknown checkpoint format {format!r}; use 'official' or 'diffusers'")
    path.mkdir(parents=True, exist_ok=True)
    save_state_dict(
        official_to_diffusers(sd, vae.config), path / "diffusion_pytorch_model.safetensors"
    )
    with atomic_path(path / "config.json") as tmp:
        tmp.write_text(
            json.dumps(config_to_diffusers(vae.config), indent=2) + "\n", encoding="utf-8"
        )
    return path


__all__ = [
    "load_vae",
    "save_vae",
    "official_to_diffusers",
    "diffusers_to_official",
    "config_to_diffusers",
    "config_from_diffusers",
    "key_map",
]
