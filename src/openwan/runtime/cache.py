"""First-block diffusion cache: skip the DiT's remaining blocks when a step changes little.

At every call the first block runs. Its residual (output minus input) is compared with the
residual of the last call that ran in full; when the relative mean absolute change is below
``threshold`` the other blocks are skipped and their cached residual is added instead
(the first-block cache of ParaAttention / diffusers, a cousin of TeaCache). Conditional and
unconditional CFG passes see different text, so each context keeps its own cache.

The model is changed from outside (``apply_first_block_cache`` returns a handle with ``stats``
and ``remove()``); the DiT code itself knows nothing about caching.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from openwan.models.dit import WanModel


@dataclass
class _Branch:
    first_residual: torch.Tensor | None = None  # of the last call that ran every block
    rest_residual: torch.Tensor | None = None
    last_t: float = float("inf")


@dataclass
class CacheStats:
    calls: int = 0
    skipped: int = 0
    changes: list[float] = field(default_factory=list)  # relative change seen at every call

    @property
    def block_fraction(self) -> float:
        """Fraction of transformer blocks actually run (1.0 without skips)."""
        return 1.0 if not self.calls else 1.0 - self.skipped / self.calls


class FirstBlockCache:
    def __init__(self, model: WanModel, threshold: float) -> None:
        if threshold < 0:
            raise ValueError(f"the cache threshold must be >= 0, got {threshold}")
        if len(model.blocks) < 2:
            raise ValueError("a first-block cache needs a model with at least two blocks")
        if model.config.is_vace:
            # VACE blocks add context hints between blocks; the cached residual would drop them
            raise ValueError(
                "the first-block cache (--cache-threshold) does not support VACE models yet"
            )
        self.model, self.threshold = model, threshold
        self.stats = CacheStats()
        self._branches: dict[tuple[Any, ...], _Branch] = {}
        self._t = 0.0
        model.forward = self._forward  # type: ignore[method-assign]
        model.run_blocks = self._run_blocks  # type: ignore[method-assign]

    def remove(self) -> WanModel:
        """Restore the plain model."""
        del self.model.forward, self.model.run_blocks
        return self.model

    def reset(self) -> None:
        self._branches.clear()

    def _forward(self, x: torch.Tensor, t: torch.Tensor, context: Any, **kw: Any) -> torch.Tensor:
        self._t = float(t.max())
        return type(self.model).forward(self.model, x, t, context, **kw)

    @staticmethod
    def _key(context: torch.Tensor, x: torch.Tensor) -> tuple[Any, ...]:
        # which CFG branch: the (embedded) text is a cheap, exact fingerprint
        return (tuple(x.shape), tuple(context.shape), float(context[:, :4].double().sum()))

    def _run_blocks(
        self, x: torch.Tensor, e0: torch.Tensor, context: torch.Tensor, layout: Any
    ) -> torch.Tensor:
        blocks = self.model.blocks
        branch = self._branches.setdefault(self._key(context, x), _Branch())
        if self._t > branch.last_t:  # time went up: a new generation
            branch.first_residual = branch.rest_residual = None
        branch.last_t = self._t
        h = blocks[0](x, e0, context, layout)
        first = h - x
        self.stats.calls += 1
        if branch.first_residual is not None and branch.rest_residual is not None:
            prev = branch.first_residual
            change = float((first - prev).abs().mean() / prev.abs().mean().clamp_min(1e-12))
            self.stats.changes.append(change)
            if change < self.threshold:
                self.stats.skipped += 1
                return h + branch.rest_residual
        out = h
        for block in blocks[1:]:
            out = block(out, e0, context, layout)
        branch.first_residual, branch.rest_residual = first, out - h
        return out


def apply_first_block_cache(model: WanModel, threshold: float = 0.05) -> FirstBlockCache:
    """Cache ``model`` in place; ``threshold`` 0 never skips (same output as without the cache)."""
    return FirstBlockCache(model, threshold)
