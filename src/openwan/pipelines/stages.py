"""Stages shared by every task pipeline: encode text -> noise -> denoise -> decode.

A task pipeline composes these; tasks differ only in how they prepare conditions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from openwan.sampling.schedules import Schedule, make_schedule
from openwan.sampling.solvers import SOLVERS

ModelFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
StepCallback = Callable[[int, int], None]  # (step index, total steps)


def encode_prompts(
    text_encoder: nn.Module,
    prompts: Sequence[str],
    device: torch.device,
    *,
    run_on_cpu: bool = False,
    offload: bool = False,
) -> list[torch.Tensor]:
    """Encode prompts (one at a time, as the official pipeline does) and move them to ``device``.

    ``run_on_cpu`` keeps the encoder on the CPU (official ``--t5_cpu``); ``offload`` moves it back to
    the CPU after use (official ``--offload_model``).
    """
    where = torch.device("cpu") if run_on_cpu else device
    text_encoder.to(where)
    out = [text_encoder.encode([p])[0].to(device) for p in prompts]
    if offload and not run_on_cpu:
        text_encoder.to("cpu")
    return out


def latent_shape(
    z_dim: int, vae_stride: tuple[int, int, int], frame_num: int, size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """``[C, T, H/s, W/s]`` of the latent for a (width, height) video of ``frame_num`` frames."""
    width, height = size
    return (
        z_dim,
        (frame_num - 1) // vae_stride[0] + 1,
        height // vae_stride[1],
        width // vae_stride[2],
    )


def initial_noise(
    shape: Sequence[int], seed: int, device: torch.device, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The first draw of a generator seeded with ``seed`` (the official noise convention)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return torch.randn(tuple(shape), generator=gen, device=device, dtype=dtype)


@dataclass
class Expert:
    """One denoiser with its CFG scale and the contexts it is conditioned on."""

    model: nn.Module
    guide_scale: float


def ensure_on(model: nn.Module, device: torch.device) -> None:
    """``model.to(device)`` unless its first parameter is already there: ``Module.to`` walks every
    submodule, a few ms per call on the tiny DiT (~10% of a 30-step CPU generation when done at
    every step)."""
    first = next(model.parameters(), None)
    where = None if first is None else first.device
    if where is not None and where.type == device.type and device.index in (None, where.index):
        return
    model.to(device)


def guided_model_fn(
    experts: Sequence[Expert],
    context: torch.Tensor,
    context_null: torch.Tensor,
    *,
    boundary_t: float | None = None,
    device: torch.device,
    offload: bool = False,
    extra: dict[str, object] | None = None,
    timesteps: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> ModelFn:
    """Turn one model (or the A14B pair: ``experts = [low_noise, high_noise]``) into ``model_fn``.

    CFG: ``v = v_u + g (v_c - v_u)`` in fp32, skipping the unconditional pass when g == 1.
    MoE: the high-noise expert runs while ``t >= boundary_t`` (official rule on the integer t);
    with ``offload`` only the active expert stays on ``device``. ``timesteps`` maps the solver's
    scalar t to what the model is given (TI2V: per-token t, 0 on the clean first frame).
    """
    kwargs = extra or {}

    def pick(t: torch.Tensor) -> Expert:
        if len(experts) == 1 or boundary_t is None:
            return experts[0]
        return experts[1] if float(t.reshape(-1)[0]) >= boundary_t else experts[0]

    def model_fn(x: torch.Tensor, t: torch.Tensor, i: int) -> torch.Tensor:
        expert = pick(t)
        if offload and len(experts) > 1:
            for other in experts:
                if other is not expert:
                    ensure_on(other.model, torch.device("cpu"))
        ensure_on(expert.model, device)
        xb = x.unsqueeze(0)  # [1, C, T, H, W]
        tb = (timesteps(t) if timesteps is not None else t.reshape(1)).to(device)
        v_cond = expert.model(xb, tb, [context], **kwargs)[0].float()
        if expert.guide_scale == 1.0:
            return v_cond
        v_uncond = expert.model(xb, tb, [context_null], **kwargs)[0].float()
        return v_uncond + expert.guide_scale * (v_cond - v_uncond)

    return model_fn


def leading_known_latents(y: torch.Tensor, mask_channels: int) -> torch.Tensor | None:
    """The latents ``[C, n, h, w]`` of the leading latent frames of an I2V condition ``y`` whose
    whole causal history is given (mask 1 everywhere up to them), None if there is none. The
    causal VAE encodes those frames as it encodes them in a full clip, so they are the clean
    latents of the known pixels; a later known frame (FLF2V's last) is not."""
    mask = y[:mask_channels]
    full = (mask == 1).flatten(2).all(dim=2).all(dim=0)  # [T]
    n = int(torch.cumprod(full.to(torch.int64), 0).sum())
    return None if n == 0 else y[mask_channels:, :n]


def anchor_known_frames(
    model_fn: ModelFn, known: torch.Tensor, solver: str, steps: int, shift: float
) -> ModelFn:
    """Pin the leading latent frames to ``known`` (``[C, n, h, w]``): their velocity is replaced
    by the one whose clean estimate ``x - sigma v`` is ``known``, so those frames follow the
    straight path from their noise to ``known`` (as in training, where every frame is noised
    alike) and end on it; the other frames see them at every step."""
    sigmas = make_schedule(solver, steps, shift).sigmas
    n = known.shape[1]
    target = known.float()  # converted once, not at every step

    def pinned(x: torch.Tensor, t: torch.Tensor, i: int) -> torch.Tensor:
        v = model_fn(x, t, i)
        sigma = float(sigmas[i])
        if sigma > 0:
            v = v.clone()
            v[:, :n] = (x[:, :n].float() - target.to(x.device)) / sigma
        return v

    return pinned


def denoise(
    model_fn: ModelFn,
    noise: torch.Tensor,
    solver: str,
    steps: int,
    shift: float,
    *,
    callback: StepCallback | None = None,
    post_step: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Run a flow-matching solver from ``noise`` to a clean latent."""
    schedule: Schedule = make_schedule(solver, steps, shift)
    solve = SOLVERS[solver]

    def on_step(i: int, x: torch.Tensor) -> None:
        if callback is not None:
            callback(i, steps)

    with torch.no_grad():
        return solve(model_fn, noise, schedule, callback=on_step, post_step=post_step)


def swap_to_vae(
    dits: Sequence[nn.Module | None], vae: nn.Module, device: torch.device, offload: bool
) -> None:
    """With model offload, move the DiT(s) off the device and the VAE onto it before decoding."""
    if not offload:
        return
    for m in dits:
        if m is not None:
            m.to("cpu")
    vae.to(device)


def decode(vae: nn.Module, latent: torch.Tensor) -> torch.Tensor:
    """Latent ``[C, T, h, w]`` -> video ``[3, F, H, W]`` in [-1, 1] (fp32)."""
    with torch.no_grad():
        param = next(vae.parameters())
        video = vae.decode(latent.unsqueeze(0).to(param.device, param.dtype))
    return video[0].float()


def make_experts(
    dit: nn.Module,
    dit_high: nn.Module | None,
    guide_scale: tuple[float, float],
    boundary: float | None,
    num_train_timesteps: int,
) -> tuple[list[Expert], float | None]:
    """``[low_noise (or the only model), high_noise]`` with their CFG scales, and ``boundary_t``
    (the A14B switch on the integer t; None for a single model)."""
    low, high = guide_scale
    experts = [Expert(dit, low)]
    if dit_high is None:
        return experts, None
    experts.append(Expert(dit_high, high))
    return experts, (boundary or 0.0) * num_train_timesteps
