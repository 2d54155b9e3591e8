"""Image-to-video (Wan2.1 I2V-14B 480P/720P, Wan2.2 I2V-A14B), first-last-frame-to-video (Wan2.1
FLF2V-14B) and video continuation, composed from the shared stages.

All of them condition the DiT the same way (WAN_SPEC §7.2, §7.3): ``y`` = the mask of the known pixel
frames + the VAE latent of a video holding those frames, and (Wan2.1 only) the CLIP tokens of the
given images as ``clip_fea``. They differ only in which frames are known:
- I2V: frame 0 (the image);
- FLF2V: frames 0 and F-1;
- continuation: frames 0..k-1 = the last k frames of the video so far.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from openwan.configs.tasks import TaskSpec
from openwan.pipelines import stages
from openwan.pipelines.image_cond import (
    FrameCondition,
    encode_frame_condition,
    i2v_output_size,
    image_to_pixels,
    load_image,
    match_frame,
    resize_frame,
)
from openwan.pipelines.loading import load_components
from openwan.pipelines.request import GenerationRequest, RequestError, ResolvedRequest
from openwan.pipelines.t2v import GenerationResult

log = logging.getLogger(__name__)

# Official CLI rule: i2v tasks default to shift 3.0 at the 480P areas (WAN_SPEC §6.8).
SHIFT_480P = {"i2v-14B": 3.0}
AREAS_480P = (832 * 480,)


@dataclass
class ContinuationResult(GenerationResult):
    rounds: int = 1
    cond_frames: int = 1
    joints: tuple[int, ...] = ()  # index of the first new frame after each joint


def blend_joints(video: torch.Tensor, joints: tuple[int, ...] | list[int]) -> torch.Tensor:
    """Soften the joints of a continued video ``[3, F, H, W]``: the last frame before each joint
    and the first after it become 1-2-1 averages of themselves and their two neighbours (read
    from the unblended video). A jump of size s at a joint becomes steps of s/4, s/2 and s/4 over
    three frames; every other frame is kept as it is."""
    out = video.clone()
    last = video.shape[1] - 1
    for j in joints:
        for i in (j - 1, j):
            if 0 < i < last:
                out[:, i] = 0.25 * video[:, i - 1] + 0.5 * video[:, i] + 0.25 * video[:, i + 1]
    return out


class WanI2V:
    """Image-to-video pipeline (and video continuation with :meth:`extend`).

    >>> pipe = WanI2V.from_pretrained("./Wan2.1-I2V-14B-480P")              # doctest: +SKIP
    >>> video = pipe("a cat surfing", image="cat.png", size=(832, 480))      # doctest: +SKIP
    """

    def __init__(
        self,
        task: TaskSpec,
        dit: nn.Module,
        vae: nn.Module,
        text_encoder: nn.Module,
        clip: nn.Module | None = None,
        *,
        dit_high: nn.Module | None = None,
        device: str | torch.device = "cpu",
        offload_model: bool = False,
        t5_cpu: bool = False,
    ) -> None:
        z_dim = vae.config.z_dim
        if dit.config.in_dim != 2 * z_dim + 4:
            raise ValueError(
                f"task {task.name}: the model takes {dit.config.in_dim} input channels, an "
                f"image-to-video model takes {2 * z_dim + 4} (noise + mask + image latent)"
            )
        if dit.config.has_image_embedding and clip is None:
            raise ValueError(f"task {task.name} needs the CLIP image encoder")
        if task.is_moe and dit_high is None:
            raise ValueError(f"task {task.name} needs a high-noise expert (dit_high)")
        self.task = task
        self.dit = dit.eval()
        self.dit_high = dit_high.eval() if dit_high is not None else None
        self.vae = vae.eval()
        self.text_encoder = text_encoder.eval()
        # Wan2.2 I2V-A14B experts have no image embedder: the CLIP tokens would be unused
        self.clip = clip.eval() if clip is not None and dit.config.has_image_embedding else None
        self.device = torch.device(device)
        self.offload_model = offload_model
        self.t5_cpu = t5_cpu
        # pin the leading given frames to their latents while sampling (the task's default;
        # off for the official models, whose reference does not)
        self.anchor_frames = task.anchor_known_frames
        if not offload_model:
            for m in (self.dit, self.dit_high, self.vae, self.clip):
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
        clip_dtype: torch.dtype | None = None,
        text_dtype: torch.dtype | None = None,
        offload_model: bool = False,
        t5_cpu: bool = False,
        text_stream: bool = False,
    ) -> WanI2V:
        """Load from an official or a diffusers checkpoint folder.

        The CLIP encoder is the official ``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth``
        or diffusers' ``image_encoder/``; it runs in fp16 on CUDA (as the official code) unless
        ``clip_dtype`` says otherwise, fp32 on the CPU.
        """
        from openwan.checkpoint.io import CheckpointError
        from openwan.models.image import OFFICIAL_CLIP_FILE, CLIPImageEncoder

        if path is None:  # the embedded tiny I2V model (its DiT beside wan-tiny's)
            from openwan.assets import tiny_model_dir

            if task not in (None, "i2v-tiny"):
                raise ValueError(f"task {task} needs a checkpoint folder: pass --ckpt-dir")
            path, task = tiny_model_dir("t2v"), "i2v-tiny"

        m = load_components(
            path,
            task=task,
            device=device,
            dtype=dtype,
            text_dtype=text_dtype,
            offload_model=offload_model,
            text_stream=text_stream,
        )
        dit, files, dev, load_dev = m.dit, m.files, m.device, m.load_device
        clip = None
        if dit.config.has_image_embedding:
            root = Path(path)
            clip_path = (
                root / "image_encoder" if files.layout == "diffusers" else root / OFFICIAL_CLIP_FILE
            )
            if not clip_path.exists():
                raise CheckpointError(
                    f"CLIP image encoder not found at {clip_path}; the checkpoint folder looks "
                    "incomplete"
                )
            if clip_dtype is None:
                clip_dtype = torch.float16 if dev.type == "cuda" else torch.float32
            clip = CLIPImageEncoder.from_pretrained(clip_path, dtype=clip_dtype, device=load_dev)
        return cls(
            m.spec,
            dit,
            m.vae,
            m.text_encoder,
            clip,
            dit_high=m.dit_high,
            device=dev,
            offload_model=offload_model,
            t5_cpu=t5_cpu,
        )

    # ------------------------------------------------------------ running
    def __call__(
        self,
        prompt: str,
        image: Any,
        negative_prompt: str | None = None,
        size: tuple[int, int] | None = None,
        frame_num: int | None = None,
        steps: int | None = None,
        shift: float | None = None,
        guide_scale: float | tuple[float, float] | None = None,
        solver: str | None = None,
        seed: int = -1,
        callback: stages.StepCallback | None = None,
    ) -> torch.Tensor:
        """A video ``[3, F, H, W]`` in [-1, 1] starting from ``image`` (a path or a PIL image).

        ``size`` sets the maximum area; the output follows the image's aspect ratio.
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
        return self.generate(request, image=image, callback=callback).video

    def generate(
        self,
        request: GenerationRequest,
        *,
        image: Any,
        last_image: Any = None,
        callback: stages.StepCallback | None = None,
        noise: torch.Tensor | None = None,
    ) -> GenerationResult:
        """I2V from ``image``; with ``last_image`` also the last frame is given (FLF2V).

        A last frame of another size than the first is covered and centre-cropped to the first
        frame's size (with a warning) before both are resized to the output size.
        """
        req = self.resolve(request)
        flf2v = self.dit.config.model_type == "flf2v"
        if flf2v and last_image is None:
            raise RequestError(f"task {self.task.name} needs a last frame (--last_frame)")
        if last_image is not None and not flf2v:
            raise RequestError(
                f"task {self.task.name} conditions on one image; use flf2v-14B for a last frame"
            )
        first = image_to_pixels(load_image(image))
        size = self.output_size(first.shape[2], first.shape[1], req.size)
        req = replace(req, size=size)
        frames = {0: resize_frame(first, size)}
        clip_images = [first]
        if last_image is not None:
            if req.frame_num < 5:
                raise RequestError(
                    f"first-last-frame generation needs frame_num >= 5, got {req.frame_num}"
                )
            last = image_to_pixels(load_image(last_image))
            if last.shape != first.shape:
                log.warning(
                    "the last frame is %dx%d, the first %dx%d: scaling the last frame to cover "
                    "the first frame's size and centre-cropping it",
                    last.shape[2],
                    last.shape[1],
                    first.shape[2],
                    first.shape[1],
                )
                last = match_frame(last, (first.shape[2], first.shape[1]))
            frames[req.frame_num - 1] = resize_frame(last, size)
            clip_images.append(last)
        cond = self.condition(frames, req.frame_num, size, clip_images)
        video = self.sample(req, cond, noise=noise, callback=callback)
        return GenerationResult(video=video, request=req, fps=self.task.fps, is_image=False)

    def extend(
        self,
        request: GenerationRequest,
        video: torch.Tensor,
        *,
        num_rounds: int = 1,
        cond_frames: int = 1,
        blend: bool = True,
        callback: stages.StepCallback | None = None,
    ) -> ContinuationResult:
        """Continue ``video`` ``[3, F0, H, W]`` in [-1, 1] for ``num_rounds`` clips.

        Each round conditions on the last ``cond_frames`` frames of the video so far (given as the
        first frames of the new clip, with the mask) and appends the clip without them, so the
        joined video is ``F0 + num_rounds * (frame_num - cond_frames)`` frames long. Round r uses
        seed ``seed + r``. The CLIP tokens (Wan2.1) are those of the first conditioning frame.
        Frames of another size than the output size are resized first (bicubic, as the I2V image).

        With ``blend`` (the default) the two frames either side of each joint are then softened
        by :func:`blend_joints`; without it every conditioning frame is exactly a frame of the
        output. Conditioning always reads the unblended frames.
        """
        req = self.resolve(request)
        if self.dit.config.model_type == "flf2v":
            raise RequestError(
                f"task {self.task.name} needs first and last frames; continue videos with an "
                "I2V model (i2v-14B, i2v-A14B)"
            )
        if video.ndim != 4 or video.shape[0] != 3:
            raise ValueError(f"expected a video [3, F, H, W], got {tuple(video.shape)}")
        if num_rounds < 1:
            raise RequestError(f"num_rounds must be >= 1, got {num_rounds}")
        if not 1 <= cond_frames < req.frame_num or cond_frames > video.shape[1]:
            raise RequestError(
                f"cond_frames must be between 1 and {min(req.frame_num - 1, video.shape[1])} "
                f"(frame_num {req.frame_num}, input video of {video.shape[1]} frames); "
                f"got {cond_frames}"
            )
        size = (int(video.shape[3]), int(video.shape[2]))
        mult = self._size_step()
        if size[0] % mult or size[1] % mult or size[0] * size[1] > req.size[0] * req.size[1]:
            size = self.output_size(size[0], size[1], req.size)
        req = replace(req, size=size)
        out = torch.stack([resize_frame(f, size) for f in video.float().unbind(1)], dim=1)
        joints = []
        for r in range(num_rounds):
            tail = out[:, -cond_frames:]
            frames = {i: tail[:, i] for i in range(cond_frames)}
            cond = self.condition(frames, req.frame_num, size, [tail[:, 0]])
            clip = self.sample(replace(req, seed=req.seed + r), cond, callback=callback)
            joints.append(out.shape[1])
            out = torch.cat([out, clip[:, cond_frames:].to(out.device)], dim=1)
        return ContinuationResult(
            video=blend_joints(out, joints) if blend else out,
            request=req,
            fps=self.task.fps,
            is_image=False,
            rounds=num_rounds,
            cond_frames=cond_frames,
            joints=tuple(joints),
        )

    # ------------------------------------------------------------ stages
    def resolve(self, request: GenerationRequest) -> ResolvedRequest:
        req = request.resolve(self.task)
        area = req.size[0] * req.size[1]
        if request.shift is None and self.task.name in SHIFT_480P and area in AREAS_480P:
            req = replace(req, shift=SHIFT_480P[self.task.name])
        if req.frame_num < 2:
            raise RequestError(f"task {self.task.name} makes videos: frame_num must be >= 5")
        n = self.text_encoder.count_tokens(req.prompt)
        if n > self.task.text_len:
            raise RequestError(
                f"the prompt has {n} tokens; the limit is {self.task.text_len} (including the end token)"
            )
        return req

    def _size_step(self) -> int:
        return int(self.vae.config.stride[1] * self.dit.config.patch_size[1])

    def output_size(self, width: int, height: int, area_size: tuple[int, int]) -> tuple[int, int]:
        """The official (w, h) for a ``width x height`` frame within the area of ``area_size``."""
        _, ph, pw = self.dit.config.patch_size
        stride = self.vae.config.stride
        return i2v_output_size(
            width, height, area_size[0] * area_size[1], (stride[1], stride[2]), (ph, pw)
        )

    def condition(
        self,
        frames: dict[int, torch.Tensor],
        frame_num: int,
        size: tuple[int, int],
        clip_images: list[torch.Tensor],
    ) -> FrameCondition:
        """``y`` from the known frames (at the output size), CLIP tokens from ``clip_images``."""
        if self.offload_model:
            self.vae.to(self.device)
        y = encode_frame_condition(
            self.vae, {i: f.to(self.device) for i, f in frames.items()}, frame_num, size
        )
        clip_fea = None
        if self.clip is not None:
            self.clip.to(self.device)
            # one image at a time: the official CLIP call resizes each image separately
            tokens = [self.clip.encode(im[None].to(self.device)) for im in clip_images]
            clip_fea = torch.cat(tokens, dim=1)  # [1, 257 * n, 1280]
            if self.offload_model:
                self.clip.to("cpu")
        return FrameCondition(y=y, clip_fea=clip_fea)

    def sample(
        self,
        req: ResolvedRequest,
        cond: FrameCondition,
        *,
        noise: torch.Tensor | None = None,
        callback: stages.StepCallback | None = None,
    ) -> torch.Tensor:
        """Text encoding -> noise -> denoising with ``cond`` on both CFG branches -> decode."""
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
        if tuple(cond.y.shape[1:]) != shape[1:]:
            raise ValueError(f"condition y {tuple(cond.y.shape)} does not fit latent {shape}")
        experts, boundary_t = stages.make_experts(
            self.dit,
            self.dit_high,
            req.guide_scale,
            self.task.boundary,
            self.task.num_train_timesteps,
        )
        model_fn = stages.guided_model_fn(
            experts,
            context,
            context_null,
            boundary_t=boundary_t,
            device=self.device,
            offload=self.offload_model,
            extra=cond.model_kwargs(self.device),
        )
        known = stages.leading_known_latents(cond.y, self.vae.config.stride[0])
        if self.anchor_frames and known is not None:
            model_fn = stages.anchor_known_frames(
                model_fn, known.to(self.device), req.solver, req.steps, req.shift
            )
        latent = stages.denoise(
            model_fn, noise.to(self.device), req.solver, req.steps, req.shift, callback=callback
        )
        stages.swap_to_vae((self.dit, self.dit_high), self.vae, self.device, self.offload_model)
        return stages.decode(self.vae, latent)


class WanFLF2V(WanI2V):
    """First-last-frame-to-video (Wan2.1 FLF2V-14B): ``pipe(prompt, first_frame, last_frame)``.

    A last frame of another size than the first is scaled to cover the first frame's size and
    centre-cropped (a warning is logged), then both are resized to the output size.
    """

    def __call__(  # type: ignore[override]
        self,
        prompt: str,
        first_frame: Any,
        last_frame: Any,
        negative_prompt: str | None = None,
        size: tuple[int, int] | None = None,
        frame_num: int | None = None,
        steps: int | None = None,
        shift: float | None = None,
        guide_scale: float | tuple[float, float] | None = None,
        solver: str | None = None,
        seed: int = -1,
        callback: stages.StepCallback | None = None,
    ) -> torch.Tensor:
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
        return self.generate(
            request, image=first_frame, last_image=last_frame, callback=callback
        ).video
