"""The typed request shared by the CLI, the Python API and (later) the server.

Validation happens once, here, with messages a user can act on.
"""

from __future__ import annotations

import dataclasses
import random
import sys
from dataclasses import dataclass

from openwan.configs.tasks import TaskSpec, parse_size
from openwan.sampling.solvers import SOLVERS


class RequestError(ValueError):
    """A generation request that cannot be run as given."""


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    negative_prompt: str | None = None  # None or "" -> the task's default negative prompt
    size: tuple[int, int] | None = None  # (width, height); None -> task default
    frame_num: int | None = None
    steps: int | None = None
    shift: float | None = None
    guide_scale: float | tuple[float, float] | None = None
    solver: str | None = None
    seed: int = -1  # < 0 -> random

    def resolve(self, task: TaskSpec) -> ResolvedRequest:
        """Fill defaults from the task and validate everything."""
        prompt = (self.prompt or "").strip()
        if not prompt:
            raise RequestError(
                "the prompt is empty; describe the video, e.g. --prompt 'a red circle moving from left to right'"
            )
        negative = self.negative_prompt or task.negative_prompt
        size = self.size if self.size is not None else parse_size(task.default_size)
        frame_num = task.frame_num if self.frame_num is None else int(self.frame_num)
        steps = task.steps if self.steps is None else int(self.steps)
        shift = task.shift if self.shift is None else float(self.shift)
        solver = task.solver if self.solver is None else self.solver
        guide = task.guide_scale if self.guide_scale is None else self.guide_scale
        if isinstance(guide, (int, float)):
            guide_pair = (float(guide), float(guide))
        else:
            guide_pair = (float(guide[0]), float(guide[1]))

        if frame_num < 1 or (frame_num - 1) % 4 != 0:
            lo = max(1, (frame_num - 1) // 4 * 4 + 1)
            raise RequestError(
                f"frame_num must be 4n+1 (1, 5, 9, ..., 81); got {frame_num}, try {lo} or {lo + 4}"
            )
        if task.image_output and frame_num != 1:
            raise RequestError(f"task {task.name} makes a single image; use frame_num 1")
        width, height = size
        size_key = f"{width}*{height}"
        if task.sizes and size_key not in task.sizes:
            raise RequestError(
                f"size {size_key} is not supported by {task.name}; supported: {', '.join(task.sizes)}"
            )
        mult = task.size_multiple
        if width <= 0 or height <= 0 or width % mult or height % mult:
            raise RequestError(
                f"size {size_key}: width and height must be positive multiples of {mult} for {task.name}"
            )
        if steps < 1:
            raise RequestError(f"steps must be >= 1, got {steps}")
        if shift <= 0:
            raise RequestError(f"shift must be > 0, got {shift}")
        if solver not in SOLVERS:
            raise RequestError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
        seed = self.seed if self.seed >= 0 else random.randint(0, sys.maxsize)
        return ResolvedRequest(
            task=task.name,
            prompt=prompt,
            negative_prompt=negative,
            size=(width, height),
            frame_num=frame_num,
            steps=steps,
            shift=shift,
            guide_scale=guide_pair,
            solver=solver,
            seed=seed,
        )


@dataclass(frozen=True)
class ResolvedRequest:
    """A validated request with every default filled in (what is stored in output metadata)."""

    task: str
    prompt: str
    negative_prompt: str
    size: tuple[int, int]
    frame_num: int
    steps: int
    shift: float
    guide_scale: tuple[float, float]  # (low-noise / single model, high-noise expert)
    solver: str
    seed: int

    def as_metadata(self) -> dict[str, object]:
        d = dataclasses.asdict(self)
        d["size"] = f"{self.size[0]}*{self.size[1]}"
        return d
