"""Pieces shared by the trainers: config files, LR schedule, EMA, atomic checkpoints, metrics log.

Resume is bit-exact by construction: every random draw of step ``i`` comes from a generator
seeded with ``(seed, i)`` and batch ``i`` is a fixed slice of a deterministic dataset, so a
checkpoint only needs the weights, the optimizer, the EMA and the step.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from openwan.checkpoint.io import CheckpointError, atomic_path

log = logging.getLogger(__name__)
T = TypeVar("T")
KEEP_CHECKPOINTS = 2


def load_config(
    cls: type[T], path: str | Path | None, overrides: dict[str, Any] | None = None
) -> T:
    """A dataclass from a TOML or JSON file (unknown keys are an error) plus overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"config file not found: {p}")
        text = p.read_text(encoding="utf-8")
        if p.suffix == ".toml":
            import tomllib

            raw = tomllib.loads(text)
        else:
            raw = json.loads(text)
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys {unknown}; known: {sorted(known)}")
    for key, value in list(raw.items()):
        if isinstance(value, list):
            raw[key] = tuple(value)
    return cls(**raw)


def autocast(precision: str, device: str = "cpu") -> contextlib.AbstractContextManager[Any]:
    """The forward's autocast for a training ``precision`` ("fp32" or "bf16")."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    return torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16")


def lr_at(step: int, base: float, warmup: int, total: int, min_ratio: float = 0.1) -> float:
    """Linear warm-up, then cosine decay to ``min_ratio * base``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def step_generator(seed: int, step: int, salt: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 7919 + salt) % (2**63))


class EMA:
    """Exponential moving average of the trainable parameters."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                self.shadow[k].lerp_(v, 1 - self.decay)
            else:
                self.shadow[k].copy_(v)

    def copy_to(self, model: nn.Module) -> None:
        model.load_state_dict(self.shadow, strict=True)


def optimizer_step(
    model: nn.Module, opt: torch.optim.Optimizer, ema: EMA, loss: torch.Tensor, bar: Any
) -> None:
    """Backward, clip the gradient norm to 1, step, update the EMA and the progress bar."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    ema.update(model)
    bar.update(1)
    bar.set_postfix(loss=f"{loss.item():.4f}")


def save_checkpoint(run_dir: Path, step: int, state: dict[str, Any]) -> Path:
    """Write ``ckpt_{step}.pt`` atomically and keep the newest ``KEEP_CHECKPOINTS``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / f"ckpt_{step:07d}.pt"
    with atomic_path(path) as tmp:
        torch.save({"step": step, **state}, tmp)
    for old in sorted(run_dir.glob("ckpt_*.pt"))[:-KEEP_CHECKPOINTS]:
        old.unlink()
    return path


def load_checkpoint(path: str | Path, run_dir: Path) -> dict[str, Any]:
    """Load a checkpoint (``latest`` = newest in the run dir), safely (weights only)."""
    if str(path) == "latest":
        found = sorted(run_dir.glob("ckpt_*.pt"))
        if not found:
            raise CheckpointError(f"--resume latest: no checkpoint in {run_dir}")
        path = found[-1]
    path = Path(path)
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"cannot resume from {path} ({type(e).__name__}: {e}); the file is corrupt — resume from "
            f"the previous checkpoint in {path.parent} instead (they are kept in pairs)"
        ) from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{path} is not an openwan training checkpoint")
    return state


def optimizer_and_ema(
    model: nn.Module, *, lr: float, weight_decay: float, ema_decay: float
) -> tuple[torch.optim.Optimizer, EMA]:
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.99))
    return opt, EMA(model, ema_decay)


def restore(
    resume: str | None, run_dir: Path, model: nn.Module, opt: torch.optim.Optimizer, ema: EMA
) -> int:
    """Load a checkpoint into model / optimizer / EMA; return the step to continue from (0 if none)."""
    if not resume:
        return 0
    state = load_checkpoint(resume, run_dir)
    model.load_state_dict(state["model"], strict=True)
    opt.load_state_dict(state["optimizer"])
    ema.shadow = state["ema"]
    return int(state["step"])


class MetricsLog:
    """JSONL metrics plus a loss-curve PNG (matplotlib, imported only when plotting)."""

    def __init__(self, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / "metrics.jsonl"
        self.png = run_dir / "loss.png"

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def records(self) -> Iterator[dict[str, Any]]:
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    yield json.loads(line)

    def plot(self) -> None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            log.warning("matplotlib is not installed: no loss curve")
            return
        rows = list(self.records())
        if not rows:
            return
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([r["step"] for r in rows], [r["loss"] for r in rows])
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        with atomic_path(self.png) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)


def progress(total: int, initial: int, desc: str, enabled: bool = True):  # type: ignore[no-untyped-def]
    from tqdm import tqdm

    return tqdm(
        total=total, initial=initial, desc=desc, unit="step", file=sys.stderr, disable=not enabled
    )


def sample_sigmas(cfg: Any, n: int, gen: torch.Generator) -> torch.Tensor:
    """Logit-normal sigmas (``cfg.logit_mean``, ``cfg.logit_std``), shifted like the inference
    schedule (``cfg.shift``)."""
    from openwan.sampling.schedules import shift_sigmas

    sigma = torch.sigmoid(torch.randn(n, generator=gen) * cfg.logit_std + cfg.logit_mean)
    return shift_sigmas(sigma, cfg.shift)  # type: ignore[return-value]


def log_and_checkpoint(
    cfg: Any,
    step: int,
    end: int,
    loss: torch.Tensor,
    t0: float,
    metrics: MetricsLog,
    run_dir: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    ema: EMA,
) -> None:
    """After step ``step``: a metrics line every ``cfg.log_every`` steps, and a checkpoint (model,
    optimizer, EMA, config) every ``cfg.ckpt_every`` steps and at ``end``."""
    import dataclasses
    import time

    if (step + 1) % cfg.log_every == 0:
        metrics.write({"step": step + 1, "loss": loss.item(), "time": time.perf_counter() - t0})
    if (step + 1) % cfg.ckpt_every == 0 or step + 1 == end:
        state = {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "ema": ema.shadow,
            "config": json.dumps(dataclasses.asdict(cfg)),
        }
        save_checkpoint(run_dir, step + 1, state)
        metrics.plot()
