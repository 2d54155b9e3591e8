"""Diffusion caches applied from outside the DiT: step skipping, attention reuse, CFG reuse.

``apply_cache(model, spec)`` returns a :class:`CachedDiT`, a denoiser with the model's call
signature that composes the model's public seams (``embed`` -> blocks -> ``head`` ->
``unpatchify``) and decides per call what to recompute. Any pipeline that calls the DiT as
``model(x, t, [context], ...)`` can use it; the DiT itself knows nothing about caching.

Four modes, combinable:

- ``teacache`` (first-block cache, the TeaCache family): the first block always runs. The
  residual of the deeper blocks is extrapolated linearly in t from the last two calls that ran
  every block (TaylorSeer-style, first order), and the same extrapolation of the first block's
  residual is checked against the one just computed: when it is off by less than ``threshold``
  (mean absolute error relative to the residual's mean magnitude), the other blocks are skipped
  and their extrapolated residual added instead. ``extrapolate=False`` holds the last residual
  instead (the plain first-block cache). ``teacache_warmup`` steps always run in full. On the
  tiny model the extrapolation predicts the deeper residual 3-5x better than holding it in the
  middle steps (0.01-0.02 vs 0.04-0.08 relative error one step ahead). Threshold 0 never skips.
- ``attn`` (the Wan report's attention cache): after ``warmup`` steps, the self- and cross-attention
  outputs of every block are recomputed only every ``attn_interval`` steps and reused in between
  (attention outputs of neighbouring steps are nearly equal); the FFNs still run.
- ``cfg`` (the Wan report's CFG cache with residual compensation): in a CFG step the second
  branch called with the same latent and timestep (the unconditional one in every Wan pipeline)
  is recomputed only every ``cfg_interval`` steps after ``warmup``; in between it is estimated as
  the first branch's fresh output plus the last measured difference between the branches.
  With ``taylor`` the interval counts the steps the DiT runs (taylor's full steps), the
  difference is measured only when both branches ran in full, and a compensated estimate is
  also the branch's point for taylor's extrapolation.

- ``taylor`` (step skipping with first-order extrapolation, the TaylorSeer family): after
  ``taylor_warmup`` full steps, one step in ``taylor_interval`` runs the DiT and the others
  answer from the last two full outputs of the same branch (no block runs at all): their noise
  estimates ``eps = x + (1 - sigma) v`` (the flow is ``x = (1 - sigma) x0 + sigma eps``, its
  velocity ``v = eps - x0``) are extrapolated linearly in t and turned back into a velocity at
  the current latent, ``v = (eps - x) / (1 - sigma)``; ``taylor_space="v"`` extrapolates the
  output itself. The noise estimate is the smoother of the two and the current latent enters
  every answer: on the tiny model (bench_cache.py, two prompt sets of 16 videos) ``taylor,cfg``
  is 30.8 / 28.7 dB from the uncached video instead of 28.9 / 27.9 at the same speed, ``taylor``
  alone 27.9 dB on average instead of 27.3, though not on every video (at ``taylor:5``, 9 of 16
  closer by 0.3-8 dB, 7 further by 0.2-14 dB); other weightings of v (``x + (1 - sigma + a) v``,
  ``x + k (1 - sigma) v``) and the clean estimate ``x - sigma v`` were all worse.
  Inside a solver (which announces its step count, see
  :func:`~openwan.sampling.solvers.planned_steps`) the full steps are counted back from the last
  one, so the final step always runs and no step is extrapolated from far behind; outside one
  they are counted forward from the warm-up. On the tiny model a second-order fit through the
  last three full outputs overshoots (13 dB instead of 27.6 dB at ``taylor:5``), so the fit is
  linear. Counting back from the end (two prompt sets of bench_cache.py, against counting
  forward; both extrapolating v): ``taylor:4,cfg`` 29.4 / 29.2 dB (was 28.8 / 27.7),
  ``taylor,cfg`` 28.9 / 27.9 (26.6 / 26.3), ``taylor`` alone 28.4 / 26.2 (28.6 / 28.2); a shorter
  warm-up than 6 steps loses 2-8 dB.

S2V (:class:`~openwan.models.s2v.WanModelS2V`) takes ``attn``, ``cfg`` and ``taylor``; its audio
injectors sit between the blocks, so ``teacache`` (which runs the first block alone) refuses it.
Each S2V clip is a new generation (its timesteps start again from the top).

Branches (CFG conditional / unconditional) are told apart by their text embedding, each keeps
its own state, and everything resets when the timestep goes up (a new generation).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from openwan.models.dit import WanModel
from openwan.models.s2v import WanModelS2V
from openwan.sampling.schedules import NUM_TRAIN_TIMESTEPS
from openwan.sampling.solvers import planned_steps, solver_step

MODES = ("teacache", "attn", "cfg", "taylor")
TAYLOR_SPACES = ("eps", "v")
DEFAULT_TEACACHE = 0.1  # `--cache teacache`: 1.71x DiT at 31.0 dB on wan-tiny (0.2: 1.84x, 25.3 dB)


@dataclass(frozen=True)
class CacheSpec:
    """What to cache. ``CacheSpec()`` caches nothing (the output equals the plain model's)."""

    teacache: float | None = None  # first-block threshold; None = off
    attn: bool = False
    cfg: bool = False
    attn_interval: int = 2  # recompute attention every this many steps
    cfg_interval: int = 2  # recompute the second CFG branch every this many steps
    warmup: int = 3  # steps that always run in full for attn / cfg (structure forms early)
    extrapolate: bool = True  # teacache: skipped steps extrapolate the last two residuals in t
    teacache_warmup: int = 5  # teacache: steps that always run in full (the layout forms early)
    taylor: bool = False  # whole calls extrapolated from the last two full outputs
    taylor_interval: int = 5  # taylor: after warm-up, one step in this many runs in full
    taylor_warmup: int = 6  # taylor: steps that always run in full
    taylor_space: str = "eps"  # taylor: what is extrapolated, the noise estimate or the output "v"

    def __post_init__(self) -> None:
        if self.teacache is not None and self.teacache < 0:
            raise ValueError(f"the teacache threshold must be >= 0, got {self.teacache}")
        if (
            min(self.attn_interval, self.cfg_interval, self.taylor_interval) < 1
            or min(self.warmup, self.teacache_warmup, self.taylor_warmup) < 0
        ):
            raise ValueError("cache intervals must be >= 1 and warmup >= 0")
        if self.taylor_space not in TAYLOR_SPACES:
            raise ValueError(
                f"taylor_space must be one of {TAYLOR_SPACES}, got {self.taylor_space!r}"
            )

    @property
    def enabled(self) -> bool:
        return self.teacache is not None or self.attn or self.cfg or self.taylor

    def describe(self) -> str:
        """The ``--cache`` text that gives this spec back."""
        parts = [f"teacache:{self.teacache:g}"] if self.teacache is not None else []
        parts += [f"attn:{self.attn_interval}"] if self.attn else []
        parts += [f"cfg:{self.cfg_interval}"] if self.cfg else []
        parts += [f"taylor:{self.taylor_interval}"] if self.taylor else []
        return ",".join(parts) or "off"

    @classmethod
    def parse(cls, text: str, default_threshold: float) -> CacheSpec:
        """``off`` or comma-separated ``teacache[:THRESHOLD]``, ``attn[:INTERVAL]``,
        ``cfg[:INTERVAL]``, ``taylor[:INTERVAL]``."""
        fields: dict[str, Any] = {}
        for part in (p.strip() for p in text.split(",")):
            name, _, value = part.partition(":")
            name = name.strip().lower()
            if name == "off" and text.strip().lower() == "off":
                return cls()
            if name not in MODES:
                raise ValueError(
                    f"unknown cache mode {part!r}; use off or a comma list of "
                    "teacache[:THRESHOLD], attn[:INTERVAL], cfg[:INTERVAL], taylor[:INTERVAL]"
                )
            try:
                if name == "teacache":
                    fields["teacache"] = float(value) if value else default_threshold
                elif value:
                    fields[f"{name}_interval"] = int(value)
            except ValueError:
                raise ValueError(f"bad value in cache mode {part!r}") from None
            if name != "teacache":
                fields[name] = True
        return cls(**fields)


@dataclass
class CacheStats:
    calls: int = 0  # model calls
    branches_reused: int = 0  # calls answered by the CFG cache without running the DiT
    calls_extrapolated: int = 0  # calls answered by the taylor cache without running the DiT
    blocks_run: int = 0
    blocks_total: int = 0
    attn_run: int = 0  # attention modules computed (self + cross, per block)
    attn_total: int = 0
    changes: list[float] = field(default_factory=list)  # teacache: relative change per call

    @property
    def block_fraction(self) -> float:
        """Fraction of transformer blocks actually run (1.0 without any reuse)."""
        return 1.0 if not self.blocks_total else self.blocks_run / self.blocks_total


@dataclass
class _Branch:
    step: int = -1  # steps seen in this generation, minus one
    last_t: float = float("inf")
    # (t, value) of the last full calls, newest last: teacache's block-0 and deeper residuals,
    # taylor's outputs; :func:`_extrapolate` predicts from them
    firsts: list[tuple[float, torch.Tensor]] = field(default_factory=list)
    rests: list[tuple[float, torch.Tensor]] = field(default_factory=list)
    outs: list[tuple[float, torch.Tensor]] = field(default_factory=list)
    delta: torch.Tensor | None = None  # cfg: this branch minus the lead branch, last measured
    answered: int = 0  # cfg: steps since warm-up this branch answered without extrapolating
    dtype: torch.dtype = torch.float32  # taylor: the dtype of this branch's outputs


class _Reusable(nn.Module):
    """Wraps an attention module; the owning :class:`CachedDiT` says when to reuse its output."""

    def __init__(self, inner: nn.Module, stats: CacheStats) -> None:
        super().__init__()
        self.inner, self.stats = inner, stats
        self.saved: dict[tuple[Any, ...], torch.Tensor] = {}  # last output per CFG branch
        self.key: tuple[Any, ...] = ()  # the branch of the current call
        self.reuse = False

    def forward(self, *args: Any) -> torch.Tensor:
        self.stats.attn_total += 1
        if self.reuse and self.key in self.saved:
            return self.saved[self.key]
        out = self.inner(*args)
        self.stats.attn_run += 1
        self.saved[self.key] = out
        return out


def _fingerprint(t: torch.Tensor, x: torch.Tensor) -> tuple[Any, ...]:
    # the same solver state seen by two CFG branches: same latent storage, shape and timestep
    return (x.data_ptr(), x._version, tuple(x.shape), tuple(t.reshape(-1)[:1].tolist()))


class CachedDiT(nn.Module):
    """A DiT with a diffusion cache; call it like the model. ``remove()`` gives the model back."""

    def __init__(self, model: WanModel, spec: CacheSpec) -> None:
        super().__init__()
        if spec.teacache is not None and len(model.blocks) < 2:
            raise ValueError("a first-block cache needs a model with at least two blocks")
        if model.config.is_vace:
            # VACE blocks add context hints between blocks; the cached residual would drop them
            raise ValueError(
                "the diffusion cache (--cache, --cache-threshold) does not support VACE models yet"
            )
        if spec.teacache is not None and isinstance(model, WanModelS2V):
            raise ValueError(
                "the first-block cache (teacache) does not support S2V models (their audio "
                "injectors sit between the blocks); use taylor, cfg or attn"
            )
        self.model = model
        self.config = model.config
        self.spec = spec
        self.stats = CacheStats()
        self._branches: dict[tuple[Any, ...], _Branch] = {}
        self._lead: tuple[tuple[Any, ...], torch.Tensor] | None = None  # (fingerprint, output)
        self._attn: list[_Reusable] = []
        if spec.attn:
            for block in model.blocks:
                for name in ("self_attn", "cross_attn"):
                    wrapper = _Reusable(getattr(block, name), self.stats)
                    setattr(block, name, wrapper)  # a module swap, undone by remove()
                    self._attn.append(wrapper)

    def remove(self) -> WanModel:
        """Restore the plain model (attention modules unwrapped)."""
        for block in self.model.blocks:
            for name in ("self_attn", "cross_attn"):
                module = getattr(block, name)
                if isinstance(module, _Reusable):
                    setattr(block, name, module.inner)
        self._attn.clear()
        return self.model

    def _branch(self, context: Any, x: torch.Tensor, t: float) -> _Branch:
        # which CFG branch: the text embedding (a list of [L, C] or a [B, L, C] tensor) is a
        # cheap, exact fingerprint, read before the DiT embeds anything
        texts = list(context) if isinstance(context, (list, tuple)) else [context]
        key = (
            tuple(x.shape),
            tuple(tuple(c.shape) for c in texts),
            sum(float(c[..., :4].double().sum()) for c in texts),
        )
        branch = self._branches.setdefault(key, _Branch())
        if t > branch.last_t:  # time went up: a new generation
            self._branches[key] = branch = _Branch()
            for wrapper in self._attn:
                wrapper.saved.pop(key, None)
        if t != branch.last_t:
            branch.step += 1
        branch.last_t = t
        for wrapper in self._attn:
            wrapper.key = key
        return branch

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, context: Any, **kwargs: Any
    ) -> torch.Tensor:
        model, spec = self.model, self.spec
        self.stats.calls += 1
        fp = _fingerprint(t, x)
        lead = self._lead if self._lead is not None and self._lead[0] == fp else None
        branch = self._branch(context, x, float(t.max()))
        if spec.taylor and self._extrapolates(branch):
            self.stats.calls_extrapolated += 1
            self.stats.blocks_total += len(model.blocks)
            line = _extrapolate(branch.outs, branch.last_t)
            out = _from_space(spec.taylor_space, line, x, t, branch.dtype)
            if lead is None:
                self._lead = (fp, out)
            return out
        if spec.cfg and lead is not None and branch.delta is not None and self._cfg_reuses(branch):
            self.stats.branches_reused += 1
            self.stats.blocks_total += len(model.blocks)
            out = lead[1] + branch.delta
        else:  # the answers above need no embedding: skipped calls cost next to nothing
            embed = model.embed_s2v if isinstance(model, WanModelS2V) else model.embed
            tokens, e, e0, ctx, layout = embed(x, t, context, **kwargs)  # type: ignore[operator]
            with self._attention_reuse(spec.attn and self._reuses(branch, spec.attn_interval)):
                tokens = self._run_blocks(branch, tokens, e0, ctx, layout)
            # the head sees the noisy tokens: the first ``split`` (S2V), or all (split None)
            out = model.unpatchify(model.head(tokens[:, : layout.split], e), layout.grid)
            if lead is None:
                self._lead = (fp, out)
            elif spec.cfg:  # measured on full runs of both branches only
                branch.delta = out - lead[1]
        if spec.taylor:  # a compensated estimate is this branch's best answer at this step too
            branch.outs = _remember(
                branch.outs, branch.last_t, _to_space(spec.taylor_space, out, x, t), 2
            )
            branch.dtype = out.dtype
        return out

    def _extrapolates(self, branch: _Branch) -> bool:
        """taylor: after warm-up, all but every ``taylor_interval``-th step."""
        spec = self.spec
        k = branch.step - spec.taylor_warmup
        if not branch.outs or k < 0:
            return False
        n, i = planned_steps(), solver_step()
        if n is not None and i is not None:  # inside a solve: count back from its last step
            # (the solve's own step index: an A14B expert that takes over mid-solve keeps the
            # phase, while its warm-up above counts its own calls)
            return (n - 1 - i) % spec.taylor_interval != 0
        return k % spec.taylor_interval != 0

    def _reuses(self, branch: _Branch, interval: int) -> bool:
        """After warm-up, steps reuse except every ``interval``-th one, which recomputes."""
        k = branch.step - self.spec.warmup
        return k >= 0 and (k + 1) % interval != 0

    def _cfg_reuses(self, branch: _Branch) -> bool:
        """cfg: as :meth:`_reuses`, counted over the steps this branch answers without
        extrapolating (all steps, unless taylor skips some), so that with taylor the second branch
        still runs in full at every ``cfg_interval``-th of the steps the DiT runs."""
        if branch.step < self.spec.warmup:
            return False
        k, branch.answered = branch.answered, branch.answered + 1
        return (k + 1) % self.spec.cfg_interval != 0

    @contextmanager
    def _attention_reuse(self, reuse: bool) -> Iterator[None]:
        for wrapper in self._attn:
            wrapper.reuse = reuse
        try:
            yield
        finally:
            for wrapper in self._attn:
                wrapper.reuse = False

    def _run_blocks(
        self, branch: _Branch, x: torch.Tensor, e0: torch.Tensor, ctx: torch.Tensor, layout: Any
    ) -> torch.Tensor:
        blocks, threshold = self.model.blocks, self.spec.teacache
        self.stats.blocks_total += len(blocks)
        if threshold is None:
            self.stats.blocks_run += len(blocks)
            return self.model.run_blocks(x, e0, ctx, layout)
        h = blocks[0](x, e0, ctx, layout)
        self.stats.blocks_run += 1
        first, t = h - x, branch.last_t
        if branch.rests:
            prev = branch.firsts[-1][1]
            # how well the last full runs predict block 0 now: the same guess made for the rest
            guess = _extrapolate(branch.firsts, t)
            change = float((first - guess).abs().mean() / prev.abs().mean().clamp_min(1e-12))
            self.stats.changes.append(change)
            if change < threshold and branch.step >= self.spec.teacache_warmup:
                return h + _extrapolate(branch.rests, t)
        out = h
        for block in blocks[1:]:
            out = block(out, e0, ctx, layout)
        self.stats.blocks_run += len(blocks) - 1
        keep = 2 if self.spec.extrapolate else 1  # one point: the value is held
        branch.firsts = _remember(branch.firsts, t, first, keep)
        branch.rests = _remember(branch.rests, t, out - h, keep)
        return out


def _remember(
    points: list[tuple[float, torch.Tensor]], t: float, value: torch.Tensor, keep: int
) -> list[tuple[float, torch.Tensor]]:
    """``points`` with ``(t, value)`` added as the newest (replacing one at the same t), the
    last ``keep`` kept."""
    return [*(p for p in points if p[0] != t), (t, value)][-keep:]


def _extrapolate(points: list[tuple[float, torch.Tensor]], t: float) -> torch.Tensor:
    """The line in t through the last two ``points`` at ``t`` (one point: its value)."""
    if len(points) == 1:
        return points[0][1]
    (t0, a), (t1, b) = points[-2:]
    return b + (b - a) / (t1 - t0) * (t - t1)


def _noise_weight(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``1 - sigma`` of the flow ``x = (1 - sigma) x0 + sigma eps`` at the model's timestep ``t``
    (``sigma * 1000``; a scalar, or one per token of each frame as in TI2V), shaped to broadcast
    over ``x`` ``[B, C, T, H, W]``; kept away from 0 (sigma 1 is never extrapolated to)."""
    sigma = (t.float() / NUM_TRAIN_TIMESTEPS).reshape(x.shape[0], -1)
    frames = x.shape[2]
    if sigma.shape[1] > 1:  # per token: one sigma per latent frame (the frame's largest)
        sigma = sigma.reshape(x.shape[0], frames, -1) if sigma.shape[1] % frames == 0 else sigma
        sigma = sigma.amax(dim=-1)
    sigma = sigma.reshape(x.shape[0], 1, -1, 1, 1)
    return (1.0 - sigma).clamp_min(1e-3).to(x.device)


def _to_space(space: str, out: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The point taylor keeps for an output ``v``: ``v`` itself, or the noise estimate
    ``eps = x + (1 - sigma) v`` (the velocity of the flow is ``eps - x0``), in fp32 whatever the
    model's dtype (mapping back divides by ``1 - sigma``, which would magnify bf16 rounding)."""
    if space == "v":
        return out
    return x.float() + _noise_weight(x, t) * out.float()


def _from_space(
    space: str, point: torch.Tensor, x: torch.Tensor, t: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """The inverse of :func:`_to_space` at the current latent ``x`` and timestep ``t``, as
    ``dtype`` (the model's output dtype)."""
    if space == "v":
        return point
    return ((point - x.float()) / _noise_weight(x, t)).to(dtype)


def apply_cache(model: WanModel, spec: CacheSpec) -> CachedDiT:
    """Wrap ``model`` in a diffusion cache; ``CacheSpec(teacache=0.0)`` equals the plain model."""
    return CachedDiT(model, spec)
