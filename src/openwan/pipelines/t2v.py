"""Text-to-video / text-to-image (Wan2.1 T2V 1.3B/14B, T2I-14B, Wan2.2 TI2V-5B text path, T2V-A14B)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from openwan.configs.tasks import TaskSpec
from openwan.pipelines import stages
from openwan.pipelines.image_cond import FirstFrame, best_output_size, fit_image, load_image
from openwan.pipelines.loading import load_components
from openwan.pipelines.request import GenerationRequest, ResolvedRequest

log = logging.getLogger(__name__)


@dataclass
class GenerationResult:
    video: torch.Tensor  # [3, F, H, W] in [-1, 1]
    request: ResolvedRequest
    fps: int
    is_image: bool


class WanT2V:
    """Text-to-video pipeline.

    >>> pipe = WanT2V.from_pretrained("./Wan2.1-T2V-1.3B")           # doctest: +SKIP
    >>> video = pipe("a cat surfing", size=(832, 480), seed=42)      # doctest: +SKIP
    >>> openwan.save_video(video, "cat.mp4", fps=pipe.task.fps)      # doctest: +SKIP
    """

    def __init__(
        self,
        task: TaskSpec,
        dit: nn.Module,
        vae: nn.Module,
        text_encoder: nn.Module,
        *,
        dit_high: nn.Module | None = None,
        device: str | torch.device = "cpu",
        offload_model: bool = False,
        t5_cpu: bool = False,
    ) -> None:
        if task.is_moe and dit_high is None:
            raise ValueError(f"task {task.name} needs a high-noise expert (dit_high)")
        self.task = task
        self.dit = dit.eval()
        self.dit_high = dit_high.eval() if dit_high is not None else None
        self.vae = vae.eval()
        self.text_encoder = text_encoder.eval()
        self.device = torch.device(device)
        self.offload_model = offload_model
        self.t5_cpu = t5_cpu
        if not offload_model:
            for m in (self.dit, self.dit_high, self.vae):
                if m is not None:
                    m.to(self.device)

    # ------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        path: str | Path | None = None,
        *,
        task: str | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        text_dtype: torch.dtype | None = None,
        offload_model: bool = False,
        t5_cpu: bool = False,
        text_stream: bool = False,
    ) -> WanT2V:
        """Load from an official or a diffusers checkpoint folder (or the embedded tiny model).

        ``dtype`` is the DiT weight dtype (fp32 on CPU by default, bf16 on CUDA); the VAE runs in fp32
        and the text encoder in ``text_dtype`` (bf16 for the official umT5-XXL, as the reference).
        ``text_stream`` leaves the text encoder's weights in their file, read one block at a time
        per prompt (what ``--offload block`` does; see :meth:`T5TextEncoder.from_pretrained`).
        """
        if path is None:
            from openwan.assets import tiny_model_dir

            path = tiny_model_dir("t2v")
            task = task or "t2v-tiny"
        m = load_components(
            path,
            task=task,
            device=device,
            dtype=dtype,
            text_dtype=text_dtype,
            offload_model=offload_model,
            text_stream=text_stream,
        )
        return cls(
            m.spec,
            m.dit,
            m.vae,
            m.text_encoder,
            dit_high=m.dit_high,
            device=m.device,
            offload_model=offload_model,
            t5_cpu=t5_cpu,
        )

    # ------------------------------------------------------------ running
    def __call__(
        self,
        prompt: str,
        negative_prompt: str | None = None,
        size: tuple[int, int] | None = None,
        frame_num: int | None = None,
        steps: int | None = None,
        shift: float | None = None,
        guide_scale: float | tuple[float, float] | None = None,
        solver: str | None = None,
        seed: int = -1,
        callback: stages.StepCallback | None = None,
        image: Any = None,
    ) -> torch.Tensor:
        """Generate a video ``[3, F, H, W]`` in [-1, 1]; ``None`` arguments take the task defaults.

        ``image`` (a path or PIL image; TI2V-5B) starts the video from that picture: the output
        size then follows the image's aspect ratio with the area of ``size``.
        """
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
        return self.generate(request, callback=callback, image=image).video

    def generate(
        self,
        request: GenerationRequest,
        *,
        callback: stages.StepCallback | None = None,
        noise: torch.Tensor | None = None,
        image: Any = None,
    ) -> GenerationResult:
        req = request.resolve(self.task)
        self.check_prompt_length(req.prompt)
        first = None
        if image is not None:
            req, first = self._first_frame(req, image)
        context, context_null = stages.encode_prompts(
            self.text_encoder,
            [req.prompt, req.negative_prompt],
            self.device,
            run_on_cpu=self.t5_cpu,
            offload=self.offload_model,
        )
        shape = stages.latent_shape(
            self.vae.config.z_dim, self.vae.config.stride, req.frame_num, req.size
        )
        if noise is None:
            noise = stages.initial_noise(shape, req.seed, self.device)
        elif tuple(noise.shape) != shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)}, expected {shape}")

        low_guide, high_guide = req.guide_scale
        experts = [stages.Expert(self.dit, low_guide)]
        boundary_t = None
        if self.dit_high is not None:
            experts.append(stages.Expert(self.dit_high, high_guide))
            boundary_t = (self.task.boundary or 0.0) * self.task.num_train_timesteps
        noise = noise.to(self.device)
        post_step = None
        timesteps = None
        if first is not None:
            noise = first.impose(noise)
            post_step = lambda i, x: first.impose(x)  # noqa: E731
            timesteps = lambda t: first.token_timesteps(t, shape)  # noqa: E731
        model_fn = stages.guided_model_fn(
            experts,
            context,
            context_null,
            boundary_t=boundary_t,
            device=self.device,
            offload=self.offload_model,
            timesteps=timesteps,
        )
        latent = stages.denoise(
            model_fn,
            noise,
            req.solver,
            req.steps,
            req.shift,
            callback=callback,
            post_step=post_step,
        )
        stages.swap_to_vae((self.dit, self.dit_high), self.vae, self.device, self.offload_model)
        video = stages.decode(self.vae, latent)
        return GenerationResult(
            video=video, request=req, fps=self.task.fps, is_image=req.frame_num == 1
        )

    def _first_frame(self, req: ResolvedRequest, image: Any) -> tuple[ResolvedRequest, FirstFrame]:
        """TI2V: size the image to the request's area and encode it as the clean latent frame 0."""
        if self.dit.config.in_dim != self.vae.config.z_dim:
            raise ValueError(
                f"task {self.task.name}: this model takes extra input channels (I2V/FLF2V); "
                "first-frame latent conditioning needs a TI2V/T2V model"
            )
        if self.task.name != "ti2v-5B":
            log.warning(
                "task %s was not trained for image conditioning (TI2V-5B is)", self.task.name
            )
        pil = load_image(image)
        _, ph, pw = self.dit.config.patch_size
        stride = self.vae.config.stride
        size = best_output_size(
            pil.width, pil.height, pw * stride[2], ph * stride[1], req.size[0] * req.size[1]
        )
        pixels = fit_image(pil, size).to(self.device)
        with torch.no_grad():
            param = next(self.vae.parameters())
            latent = self.vae.encode(pixels.unsqueeze(0).to(param.device, param.dtype))[0]
        return replace(req, size=size), FirstFrame(
            latent.float(), tuple(self.dit.config.patch_size)
        )

    def check_prompt_length(self, prompt: str) -> None:
        """Refuse prompts the text encoder would silently truncate."""
        n = self.text_encoder.count_tokens(prompt)
        if n > self.task.text_len:
            raise ValueError(
                f"the prompt has {n} tokens; the limit is {self.task.text_len} (including the end token)"
            )
