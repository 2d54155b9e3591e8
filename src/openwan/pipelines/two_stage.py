"""Text-to-video in two stages: a text-to-image DiT draws the first frame, an image-to-video DiT
animates it (the factorised text-to-video of Emu Video, with Wan DiTs for both stages).

The embedded tiny model makes its videos this way (task ``t2v-tiny``: ``t2i-tiny`` then
``i2v-tiny``, three DiTs of one architecture in one folder). Its one-stage t2v DiT, which must
infer from pure noise where the shape is at every frame, learned colour and background but
hardly any motion; the I2V DiT, given a first frame, moves it as its prompt says. The stages are
the ordinary pipelines: a frame of the first is handed to the second as an image would be.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from openwan.configs.tasks import TaskSpec, get_task
from openwan.io.video import to_uint8_frames
from openwan.pipelines.i2v import WanI2V
from openwan.pipelines.request import GenerationRequest, RequestError
from openwan.pipelines.stages import StepCallback
from openwan.pipelines.t2v import GenerationResult, WanT2V


def missing_stages(path: str | Path | None, task: TaskSpec) -> list[str]:
    """The stage DiT folders (e.g. ``transformer_t2i/``) a model folder lacks for ``task``
    (default folder: the embedded tiny model)."""
    if task.two_stage is None:
        raise ValueError(f"task {task.name} is not made in two stages")
    if path is None:
        from openwan.assets import tiny_model_dir

        path = tiny_model_dir("t2v")
    dirs = [get_task(name).dit_dir for name in task.two_stage]
    return [
        f"{d}/" for d in dirs if d is not None and not (Path(path) / d / "config.json").is_file()
    ]


def wants_two_stage(path: str | Path | None, task: str | None, switch: str | None = None) -> bool:
    """Whether text-to-video goes through :class:`WanTwoStageT2V`: the task (default without a
    folder: t2v-tiny) has two stages, ``switch`` (``--two-stage``) is not "off", and the folder
    holds both stages' DiTs ("on" insists on them)."""
    name = task or ("t2v-tiny" if path is None else None)
    spec = get_task(name) if name is not None else None
    if switch == "off" or spec is None or spec.two_stage is None:
        return False
    missing = missing_stages(path, spec)
    if missing and switch == "on":
        raise ValueError(
            f"--two-stage on: the model folder has no {' or '.join(missing)}; pass --two-stage off"
        )
    return not missing


class WanTwoStageT2V:
    """Text-to-video as text-to-image, then image-to-video.

    >>> pipe = WanTwoStageT2V.from_pretrained()      # the embedded tiny model  # doctest: +SKIP
    >>> video = pipe("a red circle moving from left to right", seed=0)          # doctest: +SKIP
    """

    def __init__(self, task: TaskSpec, image_stage: WanT2V, video_stage: WanI2V) -> None:
        if not image_stage.task.image_output:
            raise ValueError(
                f"the first stage must be a text-to-image task, got {image_stage.task.name}"
            )
        self.task = task
        self.image_stage = image_stage
        self.video_stage = video_stage

    @property
    def stages(self) -> tuple[WanT2V, WanI2V]:
        """Both pipelines (speed options, parallelism and caches apply to each)."""
        return (self.image_stage, self.video_stage)

    @property
    def dit(self) -> torch.nn.Module:
        """The video stage's DiT (the one that makes the frames after the first)."""
        return self.video_stage.dit

    @classmethod
    def from_pretrained(
        cls, path: str | Path | None = None, *, task: str | None = None, **kwargs: Any
    ) -> WanTwoStageT2V:
        """Both stages from one folder (default: the embedded tiny model); ``kwargs`` go to both
        stages' ``from_pretrained``."""
        spec = get_task(task or "t2v-tiny")
        if path is None:
            from openwan.assets import tiny_model_dir

            path = tiny_model_dir("t2v")
        missing = missing_stages(path, spec)
        if missing:
            from openwan.checkpoint.io import CheckpointError

            raise CheckpointError(f"{path} has no {' or '.join(missing)} for task {spec.name}")
        assert spec.two_stage is not None
        first, second = spec.two_stage
        image_stage = WanT2V.from_pretrained(path, task=first, **kwargs)
        video_stage = WanI2V.from_pretrained(path, task=second, **kwargs)
        return cls(spec, image_stage, video_stage)

    def __call__(self, prompt: str, *, seed: int = -1, **kwargs: Any) -> torch.Tensor:
        """A video ``[3, F, H, W]`` in [-1, 1] (``kwargs``: the fields of GenerationRequest)."""
        return self.generate(GenerationRequest(prompt=prompt, seed=seed, **kwargs)).video

    def generate(
        self,
        request: GenerationRequest,
        *,
        callback: StepCallback | None = None,
        image: Any = None,
    ) -> GenerationResult:
        """One frame: the first stage alone. A video: the first stage's frame, animated by the
        second stage with the same prompt, seed, steps and (if given) guide scale; each stage
        otherwise keeps its own task's defaults. ``image`` skips the first stage."""
        req = request.resolve(self.task)
        if req.frame_num == 1:
            if image is not None:
                raise RequestError("an image with frame_num 1 would be the output itself")
            out = self.image_stage.generate(replace(request, seed=req.seed), callback=callback)
            return replace(out, request=replace(out.request, task=self.task.name))
        if image is None:
            first = self.image_stage.generate(
                replace(request, frame_num=1, seed=req.seed), callback=callback
            )
            from PIL import Image

            image = Image.fromarray(to_uint8_frames(first.video)[0])
        out = self.video_stage.generate(
            replace(request, seed=req.seed), image=image, callback=callback
        )
        # the output's metadata: this task, with the video stage's settings
        return replace(out, request=replace(out.request, task=self.task.name))
