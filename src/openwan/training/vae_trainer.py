"""Wan-VAE training: L1 + KL + a multi-scale image-gradient loss (no pretrained perceptual net)."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from openwan.configs.vae import VAEConfig
from openwan.data.files import DatasetError, open_dataset
from openwan.data.shapes import ShapesWorld, to_tensor
from openwan.data.talking import FPS, TalkingWorld
from openwan.models.vae import CausalConv3d, Resample, WanVAE
from openwan.training import common

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VAETrainConfig:
    run_dir: str = "runs/vae"
    dataset: str | None = None  # None: the shapes world; else a folder / metadata.csv / .jsonl
    dataset_clips: int = 256  # clips of a dataset on disk held in memory and cycled through
    steps: int = 600  # length of the LR schedule
    stop_at: int | None = None  # end the run early (resume later with the same schedule)
    batch_size: int = 4
    frames: int = 9  # 4n+1: frame 0 plus two causal chunks
    size: int = 64
    two_shapes: float = 0.0  # share of shapes-world clips with two shapes
    talking: float = 0.0  # share of clips from the talking-shapes world (faces for S2V)
    lr: float = 1e-3
    warmup: int = 30
    weight_decay: float = 0.0
    kl_weight: float = 1e-6
    grad_weight: float = 1.0
    sample_posterior: bool = True  # False: decode the mean (a plain autoencoder; KL still logged)
    inflate_at: int | None = None  # the step where image-trained weights are inflated to video
    fg_weight: float = 0.0  # extra L1 weight on pixels that differ from the frame's corner colour
    # L1 between the frame-to-frame changes of the reconstruction and of the clip: the decoder's
    # flicker (its temporal upsampling pairs frames up) shows as changes the clip does not have
    temporal_weight: float = 0.0
    mse_weight: float = 0.0  # an MSE term (what PSNR measures) besides the L1
    ema_decay: float = 0.99
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 100
    # model
    dim: int = 16
    dec_dim: int = 16
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4)
    temperal_downsample: tuple[bool, ...] = (True, True)
    stats_clips: int = 64  # clips used to measure the latent mean/std at export
    # warm start: an exported VAE folder whose weights replace the random init (the model keys
    # above must match it); with train_part = "decoder" only the decoder side (post-quant conv +
    # decoder) learns, so the latents, and a DiT trained on them, stay valid
    init: str | None = None
    train_part: str = "all"  # "all" or "decoder"


def vae_config(cfg: VAETrainConfig) -> VAEConfig:
    return VAEConfig(
        dim=cfg.dim,
        dec_dim=cfg.dec_dim,
        z_dim=cfg.z_dim,
        dim_mult=cfg.dim_mult,
        temperal_downsample=cfg.temperal_downsample,
        latent_mean=(0.0,) * cfg.z_dim,
        latent_std=(1.0,) * cfg.z_dim,
    )


def gradient_loss(x: torch.Tensor, y: torch.Tensor, scales: int = 3) -> torch.Tensor:
    """L1 between spatial finite differences at several scales (sharp edges matter for shapes)."""
    total = x.new_zeros(())
    a = x.flatten(0, 1) if x.ndim == 5 else x  # frames folded into the batch
    b = y.flatten(0, 1) if y.ndim == 5 else y
    for s in range(scales):
        if s:
            a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
        for dim in (-1, -2):
            total = total + (a.diff(dim=dim) - b.diff(dim=dim)).abs().mean()
    return total


def vae_loss(
    vae: WanVAE, video: torch.Tensor, cfg: VAETrainConfig, gen: torch.Generator
) -> tuple[torch.Tensor, dict[str, float]]:
    mu, logvar = vae.encode_moments(video)
    logvar = logvar.clamp(-30.0, 20.0)
    z = (
        mu + torch.randn(mu.shape, generator=gen) * torch.exp(0.5 * logvar)
        if cfg.sample_posterior
        else mu
    )
    recon = vae.decode(z, clamp=False, normalized=False)
    err = (recon - video).abs()
    l1 = err.mean()
    if cfg.fg_weight > 0:
        # small objects on flat backgrounds: without this the VAE first learns the background only
        corner = video[:, :, :, :1, :1]
        fg = ((video - corner).abs().amax(dim=1, keepdim=True) > 0.1).to(err.dtype)
        l1 = l1 + cfg.fg_weight * (err * fg).mean()
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).mean()
    # [B, 3, F, H, W] -> frames as images for the gradient term
    grad = gradient_loss(recon.transpose(1, 2), video.transpose(1, 2))
    loss = l1 + cfg.kl_weight * kl + cfg.grad_weight * grad
    parts = {"l1": l1.detach().item(), "kl": kl.detach().item(), "grad": grad.detach().item()}
    if cfg.temporal_weight > 0 and video.shape[2] > 1:
        temporal = temporal_loss(recon, video)
        loss = loss + cfg.temporal_weight * temporal
        parts["temporal"] = temporal.detach().item()
    if cfg.mse_weight > 0:
        mse = (recon - video).pow(2).mean()
        loss = loss + cfg.mse_weight * mse
        parts["mse"] = mse.detach().item()
    return loss, parts


def temporal_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L1 between the frame-to-frame differences of videos ``[B, C, F, H, W]``."""
    return (x.diff(dim=2) - y.diff(dim=2)).abs().mean()


@torch.no_grad()
def inflate_to_video(vae: WanVAE, shadow: dict[str, torch.Tensor] | None = None) -> None:
    """Turn a VAE trained on single frames into a good starting point for clips.

    On single frames the causal 3x3x3 convs only ever see zero padding in their two past-frame
    kernel slices, and the temporal resampling convs never run: all of those still hold their
    random init. Zero the past slices (each frame is first processed like an image) and make the
    temporal convs pick the newest frame (encoder) or repeat it (decoder), so the clip path starts
    as the trained image path. ``shadow`` (an EMA state dict) gets the same edits.
    """
    edits: list[tuple[str, nn.Module]] = [(n, m) for n, m in vae.named_modules()]
    time_convs = {f"{n}.time_conv" for n, m in edits if isinstance(m, Resample)}
    for name, m in edits:
        if not isinstance(m, CausalConv3d) or m.weight.shape[2] == 1:
            continue
        targets = [m.weight] + ([shadow[f"{name}.weight"]] if shadow is not None else [])
        biases = [m.bias] + ([shadow[f"{name}.bias"]] if shadow is not None else [])
        for w in targets:
            if name in time_convs:
                w.zero_()
                c_out, c_in = w.shape[:2]
                eye = torch.eye(c_in, dtype=w.dtype)
                for k in range(c_out // c_in):  # 1 (downsample) or 2 (upsample: frames A, B)
                    w[k * c_in : (k + 1) * c_in, :, -1, 0, 0] = eye
            else:
                w[:, :, :-1] = 0
        if name in time_convs:
            for b in biases:
                if b is not None:
                    b.zero_()


def batch(
    world: ShapesWorld,
    step: int,
    size: int,
    talking: TalkingWorld | None = None,
    share: float = 0.0,
) -> torch.Tensor:
    """Clips ``step * size ...`` of the shapes world; with ``talking``, a ``share`` of them (drawn
    per clip index) are talking-face clips cut to the same frame count."""
    clips = []
    for i in range(step * size, (step + 1) * size):
        if talking is not None and np.random.default_rng([world.seed, i, 7]).random() < share:
            clips.append(to_tensor(talking[i].video[: world.frames]))
        else:
            clips.append(to_tensor(world[i][0]))
    return torch.stack(clips)


def clip_source(cfg: VAETrainConfig) -> Callable[[int], torch.Tensor]:
    """``step -> batch``: the shapes world, or clips of a dataset on disk taken in turn."""
    if cfg.dataset is None:
        world = ShapesWorld(
            seed=cfg.seed, frames=cfg.frames, size=cfg.size, split="train",
            two_shapes=cfg.two_shapes,
        )  # fmt: skip
        if not 0.0 <= cfg.talking <= 1.0:
            raise ValueError(f"talking is a share of the clips in [0, 1], got {cfg.talking}")
        talk = None
        if cfg.talking > 0:
            seconds = (cfg.frames - 1) / FPS
            talk = TalkingWorld(seed=cfg.seed + 2, seconds=max(seconds, 1 / FPS), size=cfg.size)
        return lambda step: batch(world, step, cfg.batch_size, talk, cfg.talking)
    data = open_dataset(cfg.dataset, frames=cfg.frames, size=cfg.size)
    clips = [clip for clip, _ in itertools.islice(data, cfg.dataset_clips)]
    if not clips:
        raise DatasetError(f"{cfg.dataset}: none of the videos could be read")
    if data.skipped:
        log.warning("%d dataset item(s) skipped (see the warnings above)", len(data.skipped))
    n = len(clips)
    return lambda step: torch.stack(
        [clips[(step * cfg.batch_size + i) % n] for i in range(cfg.batch_size)]
    )


def _warm_start(cfg: VAETrainConfig) -> WanVAE:
    """The VAE of ``cfg.init`` (its latent statistics included), checked against ``cfg``."""
    from openwan.checkpoint.vae_format import load_vae

    assert cfg.init is not None
    init = load_vae(cfg.init)  # a missing or corrupt folder raises CheckpointError here
    want = vae_config(cfg)
    keys = ("dim", "dec_dim", "z_dim", "dim_mult", "temperal_downsample")
    odd = [k for k in keys if getattr(init.config, k) != getattr(want, k)]
    if odd:
        got = {k: getattr(init.config, k) for k in odd}
        raise ValueError(f"--init {cfg.init} has {got}, the config asks for "
                         f"{ {k: getattr(want, k) for k in odd} }")  # fmt: skip
    return init.train()


def trainable_part(vae: WanVAE, part: str) -> None:
    """Freeze everything outside ``part`` ("all" or "decoder": post-quant conv + decoder)."""
    if part not in ("all", "decoder"):
        raise ValueError(f"train_part must be 'all' or 'decoder', got {part!r}")
    learn = (vae,) if part == "all" else (vae.conv2, vae.decoder)
    for p in vae.parameters():
        p.requires_grad_(False)
    for m in learn:
        for p in m.parameters():
            p.requires_grad_(True)


def train_vae(cfg: VAETrainConfig, resume: str | None = None, show_progress: bool = True) -> WanVAE:
    run_dir = Path(cfg.run_dir)
    torch.manual_seed(cfg.seed)
    if cfg.init is not None:
        vae = _warm_start(cfg)
    else:
        vae = WanVAE(vae_config(cfg))
        vae.init_weights()
    trainable_part(vae, cfg.train_part)
    opt, ema = common.optimizer_and_ema(
        vae, lr=cfg.lr, weight_decay=cfg.weight_decay, ema_decay=cfg.ema_decay
    )
    start = common.restore(resume, run_dir, vae, opt, ema)
    if cfg.inflate_at is not None and start == cfg.inflate_at:
        log.info("step %d: inflating the image-trained weights for video clips", start)
        inflate_to_video(vae, ema.shadow)
    next_batch = clip_source(cfg)
    metrics = common.MetricsLog(run_dir)
    bar = common.progress(cfg.steps, start, "train-vae", show_progress)
    t0 = time.perf_counter()
    end = cfg.stop_at or cfg.steps
    for step in range(start, end):
        for group in opt.param_groups:
            group["lr"] = common.lr_at(step, cfg.lr, cfg.warmup, cfg.steps)
        loss, parts = vae_loss(vae, next_batch(step), cfg, common.step_generator(cfg.seed, step))
        common.optimizer_step(vae, opt, ema, loss, bar)
        if (step + 1) % cfg.log_every == 0:
            metrics.write(
                {"step": step + 1, "loss": loss.item(), **parts, "time": time.perf_counter() - t0}
            )
        if (step + 1) % cfg.ckpt_every == 0 or step + 1 == end:
            common.save_checkpoint(
                run_dir,
                step + 1,
                {
                    "model": vae.state_dict(),
                    "optimizer": opt.state_dict(),
                    "ema": ema.shadow,
                    "config": asdict(cfg),
                },
            )
            metrics.plot()
    bar.close()
    ema.copy_to(vae)
    return vae.eval()


@torch.no_grad()
def with_latent_stats(
    vae: WanVAE, clips: int, frames: int = 17, size: int = 64, seed: int = 123
) -> WanVAE:
    """Return the VAE with its config's per-channel latent mean/std measured on shapes clips
    (what the official latent normalisation constants are)."""
    world = ShapesWorld(seed=seed, frames=frames, size=size, split="train")
    mus = []
    for i in range(0, clips, 8):
        video = torch.stack([to_tensor(world[j][0]) for j in range(i, min(clips, i + 8))])
        mus.append(vae.encode_moments(video)[0].transpose(0, 1).flatten(1))  # [z, N]
    mu = torch.cat(mus, dim=1)
    cfg = vae.config.replace(
        latent_mean=tuple(round(float(v), 4) for v in mu.mean(1)),
        latent_std=tuple(round(float(v), 4) for v in mu.std(1)),
    )
    out = WanVAE(cfg)
    out.load_state_dict(vae.state_dict(), strict=True)
    return out.eval()
