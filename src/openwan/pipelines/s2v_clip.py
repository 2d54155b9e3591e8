"""Sampling one Wan-S2V clip: the zero-audio CFG wrapper and the solver loop (WAN_SPEC §7.7).

The unconditional branch differs from the conditional one in two things only: the negative prompt
and audio features multiplied by 0 (reference, motion and pose conditions stay the same).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from openwan.models.s2v import MOTION_FRAMES, WanModelS2V
from openwan.sampling.schedules import Schedule, make_schedule
from openwan.sampling.solvers import SOLVERS, ModelFn

S2V_STEPS, S2V_SHIFT, S2V_GUIDE = 40, 3.0, 4.5  # official S2V-14B defaults


@dataclass
class ClipConditions:
    """Everything but the noisy latent that one clip's forward passes take (batch of 1)."""

    ref_latents: torch.Tensor  # [1, 16, 1, h, w]
    motion_latents: torch.Tensor  # [1, 16, T_m, h, w]
    cond_states: torch.Tensor  # [1, 16, T, h, w] pose latents (zeros without pose)
    audio: torch.Tensor  # [1, 25, C, 4T] this clip's Wav2Vec2 features
    drop_motion_frames: bool  # first clip: no motion tokens
    motion_frames: tuple[int, int] = MOTION_FRAMES
    # [1, 25, C, K] the audio before the clip (S2VConfig.audio_context); None: official
    audio_context: torch.Tensor | None = None


def s2v_model_fn(
    model: WanModelS2V,
    cond: ClipConditions,
    context: torch.Tensor,
    context_null: torch.Tensor,
    guide_scale: float,
) -> ModelFn:
    """``model_fn(x [16, T, h, w], t, i)`` with CFG against the zero-audio, negative-prompt branch.

    The unconditional pass is skipped when ``guide_scale <= 1`` (official).
    """
    common = dict(
        ref_latents=cond.ref_latents,
        motion_latents=cond.motion_latents,
        cond_states=cond.cond_states,
        motion_frames=cond.motion_frames,
        drop_motion_frames=cond.drop_motion_frames,
    )

    def model_fn(x: torch.Tensor, t: torch.Tensor, i: int) -> torch.Tensor:
        xb, tb = x.unsqueeze(0), t.reshape(1)
        v_cond = model(
            xb, tb, [context], audio_input=cond.audio, audio_context=cond.audio_context, **common
        )[0].float()
        if guide_scale <= 1:
            return v_cond
        silent = None if cond.audio_context is None else torch.zeros_like(cond.audio_context)
        v_uncond = model(
            xb,
            tb,
            [context_null],
            audio_input=torch.zeros_like(cond.audio),
            audio_context=silent,
            **common,
        )[0].float()
        return v_uncond + guide_scale * (v_cond - v_uncond)

    return model_fn


@dataclass
class ClipEdit:
    """Re-generate part of an existing clip (lip-sync editing, ``pipelines/s2v_lipsync.py``).

    Sampling starts at the step where ``strength`` of the schedule is left, from the source
    latent noised to that step's sigma (SDEdit). Where ``keep`` is true the velocity is replaced
    by the one that points at the source, ``(x - source) / sigma``: its clean-latent prediction
    is the source at every step, which every solver here integrates exactly, so the kept latents
    end equal to the source while the rest is sampled in their context.
    """

    source: torch.Tensor  # [16, T, h, w] the source clip's latent
    keep: torch.Tensor  # [1, T, h, w] bool: latents that stay the source's
    strength: float = 1.0  # (0, 1]: 1 starts from (almost) pure noise


def _edited(
    model_fn: ModelFn, source: torch.Tensor, keep: torch.Tensor, sigmas: torch.Tensor
) -> ModelFn:
    """``model_fn`` with the velocity pointing at ``source`` where ``keep`` (both already on the
    latent's device)."""

    def fn(x: torch.Tensor, t: torch.Tensor, i: int) -> torch.Tensor:
        v = model_fn(x, t, i)
        return torch.where(keep, (x.float() - source) / sigmas[i], v)

    return fn


def sample_clip(
    model: WanModelS2V,
    noise: torch.Tensor,
    cond: ClipConditions,
    context: torch.Tensor,
    context_null: torch.Tensor,
    *,
    steps: int = S2V_STEPS,
    shift: float = S2V_SHIFT,
    guide_scale: float = S2V_GUIDE,
    solver: str = "unipc",
    callback: Callable[[int, int], None] | None = None,
    edit: ClipEdit | None = None,
) -> torch.Tensor:
    """Denoise one clip's latent ``[16, T, h, w]`` from ``noise`` (a fresh schedule per clip),
    or edit a source clip (``edit``; then fewer steps run when ``edit.strength < 1``).

    ``callback(step, steps)`` after every solver step (progress).
    """
    model_fn = s2v_model_fn(model, cond, context, context_null, guide_scale)
    schedule = make_schedule(solver, steps, shift)
    x = noise
    if edit is not None:
        if not 0 < edit.strength <= 1:
            raise ValueError(f"edit strength must be in (0, 1], got {edit.strength}")
        start = steps - max(1, round(steps * edit.strength))
        schedule = Schedule(schedule.sigmas[start:], schedule.timesteps[start:])
        source = edit.source.to(noise)
        sigma = schedule.sigmas[0]
        x = (1 - sigma) * source + sigma * noise
        model_fn = _edited(model_fn, source, edit.keep.to(noise.device), schedule.sigmas)
    total = schedule.steps

    def on_step(i: int, x: torch.Tensor) -> None:
        if callback is not None:
            callback(i, total)

    with torch.no_grad():
        return SOLVERS[solver](model_fn, x, schedule, callback=on_step)
