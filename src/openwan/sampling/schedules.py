"""Flow-matching noise schedules (WAN_SPEC §6.2, §6.3).

A schedule is the sigma table a solver walks (fp32, ending at 0) plus the timesteps the
official pipelines feed the model: ``int64(sigma * 1000)``, truncated toward zero, computed
from the float64 sigmas before the fp32 cast.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

NUM_TRAIN_TIMESTEPS = 1000


@dataclass(frozen=True)
class Schedule:
    sigmas: torch.Tensor  # [N + 1] fp32, sigmas[N] == 0
    timesteps: torch.Tensor  # [N] fp32 holding the integer model timesteps

    @property
    def steps(self) -> int:
        return int(self.timesteps.numel())


def shift_sigmas(sigmas: np.ndarray | torch.Tensor, shift: float) -> np.ndarray | torch.Tensor:
    """``s * sigma / (1 + (s - 1) * sigma)``: spends more steps at high noise for s > 1."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def _finish(sigmas64: np.ndarray) -> Schedule:
    timesteps = torch.from_numpy(sigmas64 * NUM_TRAIN_TIMESTEPS).to(torch.int64)
    table = np.concatenate([sigmas64, [0.0]]).astype(np.float32)
    return Schedule(sigmas=torch.from_numpy(table), timesteps=timesteps.to(torch.float32))


def _train_sigma_max() -> float:
    # The official UniPC scheduler starts from the largest sigma of its 1000-step training table,
    # 1 - 1/1000 stored in fp32 (0.999000012...), not from 1.0.
    return float(np.float32(1.0 - 1.0 / NUM_TRAIN_TIMESTEPS))


def unipc_schedule(steps: int, shift: float) -> Schedule:
    """Official ``FlowUniPCMultistepScheduler`` table: ``shift(linspace(0.999, 0, N+1)[:-1])``."""
    _check(steps, shift)
    base = np.linspace(_train_sigma_max(), 0.0, steps + 1)[:-1]
    return _finish(shift_sigmas(base, shift))  # type: ignore[arg-type]


def dpmpp_schedule(steps: int, shift: float) -> Schedule:
    """Official DPM++ table: ``shift(linspace(1, 0, N+1)[:N])``, starting at exactly 1."""
    _check(steps, shift)
    base = np.linspace(1.0, 0.0, steps + 1)[:steps]
    return _finish(shift_sigmas(base, shift))  # type: ignore[arg-type]


# Euler walks the same table as DPM++ (from pure noise at sigma 1 down to 0).
euler_schedule = dpmpp_schedule

SCHEDULES = {"unipc": unipc_schedule, "dpm++": dpmpp_schedule, "euler": euler_schedule}


def make_schedule(solver: str, steps: int, shift: float) -> Schedule:
    try:
        fn = SCHEDULES[solver]
    except KeyError:
        raise ValueError(
            f"unknown solver {solver!r}; choose one of {', '.join(SCHEDULES)}"
        ) from None
    return fn(steps, shift)


def _check(steps: int, shift: float) -> None:
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
