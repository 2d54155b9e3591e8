"""VACE (Wan2.1 VACE 1.3B / 14B): video creation and editing from a prompt plus any of
reference images (R2V), a control video (pose / depth / flow / gray / scribble, given as a video),
and a masked video (inpainting / outpainting, MV2V).

The T2V stages are reused as they are; only the conditions differ: the 96-channel VACE context
(see :mod:`openwan.pipelines.vace_inputs`) is passed to every model call, the noise has one extra
latent frame in front per reference image, and those frames are dropped before decoding.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from openwan.configs.tasks import TaskSpec
from openwan.models.vace import VaceWanModel
from openwan.pipelines import stages
from openwan.pipelines.request import GenerationRequest
from openwan.pipelines.t2v import GenerationResult, WanT2V
from openwan.pipelines.vace_inputs import (
    VaceSources,
    encode_context,
    prepare_frames,
    read_sources,
)


class WanVACE(WanT2V):
    """VACE pipeline (loading and the T2V stages are shared with :class:`WanT2V`).

    >>> pipe = WanVACE.from_pretrained("./Wan2.1-VACE-1.3B")                # doctest: +SKIP
    >>> video = pipe("a dancer", src_video="pose.mp4", src_ref_images="dancer.png")  # doctest: +SKIP
    """

    def __init__(
        self, task: TaskSpec, dit: nn.Module, vae: nn.Module, text_encoder: nn.Module, **kw: Any
    ) -> None:
        if not isinstance(dit, VaceWanModel):
            raise ValueError(
                "this checkpoint is not a VACE model (no vace_layers); use WanT2V / a t2v task"
            )
        super().__init__(task, dit, vae, text_encoder, **kw)

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, **kwargs: Any) -> WanVACE:
        """Load an official or diffusers VACE checkpoint folder (see :meth:`WanT2V.from_pretrained`)."""
        if path is None:
            raise ValueError("WanVACE needs a VACE checkpoint folder (there is no embedded one)")
        return cast(WanVACE, super().from_pretrained(path, **kwargs))  # built through cls(...)

    def __call__(  # type: ignore[override]
        self,
        prompt: str,
        negative_prompt: str | None = None,
        size: tuple[int, int] | None = None,
        frame_num: int | None = None,
        steps: int | None = None,
        shift: float | None = None,
        guide_scale: float | None = None,
        solver: str | None = None,
        seed: int = -1,
        callback: stages.StepCallback | None = None,
        *,
        src_video: Any = None,
        src_mask: Any = None,
        src_ref_images: Any = None,
        context_scale: float = 1.0,
    ) -> torch.Tensor:
        """Generate ``[3, F, H, W]`` in [-1, 1]. With ``src_video`` the video's length and aspect
        ratio set the output (within the token budget of ``size`` x ``frame_num``)."""
        request = GenerationRequest(
            prompt=prompt,
            negative_prompt=negative_prompt,
            size=size,
            frame_num=frame_num,
            steps=steps,
            shift=shift,
            guide_scale=guide_scale,
            solver=solver,
            seed=seed,
        )
        sources = read_sources(src_video, src_mask, src_ref_images)
        return self.generate(
            request, sources=sources, context_scale=context_scale, callback=callback
        ).video

    def generate(  # type: ignore[override]
        self,
        request: GenerationRequest,
        *,
        sources: VaceSources | None = None,
        context_scale: float = 1.0,
        callback: stages.StepCallback | None = None,
        noise: torch.Tensor | None = None,
    ) -> GenerationResult:
        req = request.resolve(self.task)
        self.check_prompt_length(req.prompt)
        cond = prepare_frames(
            sources or VaceSources(),
            req.size,
            req.frame_num,
            self.vae.config.stride,
            tuple(self.dit.config.patch_size),
        )
        req = replace(req, size=cond.size, frame_num=cond.frame_num)
        context, context_null = stages.encode_prompts(
            self.text_encoder,
            [req.prompt, req.negative_prompt],
            self.device,
            run_on_cpu=self.t5_cpu,
            offload=self.offload_model,
        )
        self.vae.to(self.device)
        vace_context = encode_context(self.vae, cond).to(self.device)  # [96, n_ref + T, h, w]
        shape = (self.vae.config.z_dim, *vace_context.shape[1:])
        if noise is None:
            noise = stages.initial_noise(shape, req.seed, self.device)
        elif tuple(noise.shape) != shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)}, expected {shape}")
        model_fn = stages.guided_model_fn(
            [stages.Expert(self.dit, req.guide_scale[0])],
            context,
            context_null,
            device=self.device,
            extra={"vace_context": vace_context[None], "vace_context_scale": context_scale},
        )
        latent = stages.denoise(
            model_fn, noise.to(self.device), req.solver, req.steps, req.shift, callback=callback
        )
        if self.offload_model:
            self.dit.to("cpu")
        video = stages.decode(self.vae, latent[:, len(cond.refs) :])  # drop the reference frames
        return GenerationResult(video=video, request=req, fps=self.task.fps, is_image=False)


def as_vace(pipe: WanT2V) -> WanVACE:
    """The VACE pipeline over the models an already loaded pipeline holds (no reloading)."""
    if isinstance(pipe, WanVACE):
        return pipe
    return WanVACE(
        pipe.task,
        pipe.dit,
        pipe.vae,
        pipe.text_encoder,
        device=pipe.device,
        offload_model=pipe.offload_model,
        t5_cpu=pipe.t5_cpu,
    )
