"""Flow-matching ODE solvers as pure functions (WAN_SPEC §6.4, §6.5).

All share one signature::

    solve(model_fn, x, schedule, *, callback=None, post_step=None) -> x0

``model_fn(x, t, i)`` returns the velocity ``v = eps - x0`` at sample ``x``, model timestep ``t``
(shape [1]) and step index ``i``. The solver state lives inside the call. Scalar coefficients are
computed in fp32 from the fp32 sigma table, as the reference schedulers do, so infinite log-SNR at
sigma 0 (and at sigma 1 for DPM++) resolves through IEEE arithmetic exactly as it does there.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextvars import ContextVar

import torch

from openwan.sampling.schedules import Schedule

ModelFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
Callback = Callable[[int, torch.Tensor], None]
PostStep = Callable[[int, torch.Tensor], torch.Tensor]

_PLANNED_STEPS: ContextVar[int | None] = ContextVar("openwan_planned_steps", default=None)
_SOLVER_STEP: ContextVar[int | None] = ContextVar("openwan_solver_step", default=None)


def planned_steps() -> int | None:
    """The step count of the solve running now (None outside one). A denoiser that plans its
    work over a generation, such as a step-skipping cache, reads it; the call signature of the
    DiT stays the official one."""
    return _PLANNED_STEPS.get()


def solver_step() -> int | None:
    """The index of the solver step whose model call is running (None outside a solve)."""
    return _SOLVER_STEP.get()


def _announces_steps(solve: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    @functools.wraps(solve)
    def run(
        model_fn: ModelFn, x: torch.Tensor, schedule: Schedule, **kwargs: object
    ) -> torch.Tensor:
        def announced(x: torch.Tensor, t: torch.Tensor, i: int) -> torch.Tensor:
            token = _SOLVER_STEP.set(i)
            try:
                return model_fn(x, t, i)
            finally:
                _SOLVER_STEP.reset(token)

        token = _PLANNED_STEPS.set(schedule.steps)
        try:
            return solve(announced, x, schedule, **kwargs)
        finally:
            _PLANNED_STEPS.reset(token)

    return run


def _lam(sigma: torch.Tensor) -> torch.Tensor:
    """log-SNR ``ln(alpha / sigma)`` with ``alpha = 1 - sigma``."""
    return torch.log(1 - sigma) - torch.log(sigma)


def _finish_step(
    i: int,
    x: torch.Tensor,
    dtype: torch.dtype,
    callback: Callback | None,
    post_step: PostStep | None,
) -> torch.Tensor:
    x = x.to(dtype)
    if post_step is not None:
        x = post_step(i, x)
    if callback is not None:
        callback(i, x)
    return x


def euler_solve(
    model_fn: ModelFn,
    x: torch.Tensor,
    schedule: Schedule,
    *,
    callback: Callback | None = None,
    post_step: PostStep | None = None,
) -> torch.Tensor:
    """First-order flow Euler: ``x <- x + (sigma_{i+1} - sigma_i) v``."""
    sig = schedule.sigmas
    dtype = x.dtype
    for i in range(schedule.steps):
        v = model_fn(x, schedule.timesteps[i : i + 1], i).float()
        x = _finish_step(i, x.float() + (sig[i + 1] - sig[i]) * v, dtype, callback, post_step)
    return x


def dpmpp_solve(
    model_fn: ModelFn,
    x: torch.Tensor,
    schedule: Schedule,
    *,
    callback: Callback | None = None,
    post_step: PostStep | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M), midpoint variant, first order on the first and the final step."""
    sig = schedule.sigmas
    n = schedule.steps
    dtype = x.dtype
    m_prev: torch.Tensor | None = None
    for i in range(n):
        v = model_fn(x, schedule.timesteps[i : i + 1], i).float()
        xf = x.float()
        m = xf - sig[i] * v  # data prediction x0
        s_t, s_0 = sig[i + 1], sig[i]
        h = _lam(s_t) - _lam(s_0)
        a_t = 1 - s_t
        phi = torch.exp(-h) - 1.0
        if m_prev is None or i == n - 1:
            x_next = (s_t / s_0) * xf - (a_t * phi) * m
        else:
            r0 = (_lam(s_0) - _lam(sig[i - 1])) / h
            d1 = (1.0 / r0) * (m - m_prev)
            x_next = (s_t / s_0) * xf - (a_t * phi) * m - 0.5 * (a_t * phi) * d1
        m_prev = m
        x = _finish_step(i, x_next, dtype, callback, post_step)
    return x


def _unipc_coeffs(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """bh2 variant with data prediction: ``hh = -h``; returns (phi_1, B_h, g1, g2)."""
    hh = -h
    phi_1 = torch.expm1(hh)
    g1 = phi_1 / hh - 1
    g2 = g1 / hh - 0.5
    return phi_1, torch.expm1(hh), g1, g2


def unipc_solve(
    model_fn: ModelFn,
    x: torch.Tensor,
    schedule: Schedule,
    *,
    callback: Callback | None = None,
    post_step: PostStep | None = None,
) -> torch.Tensor:
    """UniPC (order 2, bh2, data prediction) with the UniC corrector after every step but the first.

    Predictor order warms up (1, 2, 2, ...) and drops to 1 on the final step (lower_order_final).
    """
    sig = schedule.sigmas
    n = schedule.steps
    dtype = x.dtype
    ms: list[torch.Tensor] = []  # data predictions of the last two steps, newest last
    x_last: torch.Tensor | None = None  # (corrected) sample of the previous step
    order_last = 0
    for k in range(n):
        v = model_fn(x, schedule.timesteps[k : k + 1], k).float()
        xf = x.float()
        m = xf - sig[k] * v
        if k > 0 and x_last is not None:
            xf = _unic(xf, x_last, m, ms, sig, k, order_last)
        ms = [*ms[-1:], m]
        order = min(2, n - k, k + 1)
        x_last = xf
        x_pred = _unip(xf, ms, sig, k, order)
        order_last = order
        x = _finish_step(k, x_pred, dtype, callback, post_step)
    return x


def _unip(
    x: torch.Tensor, ms: list[torch.Tensor], sig: torch.Tensor, k: int, order: int
) -> torch.Tensor:
    """Predictor from sigma_k to sigma_{k+1}."""
    s_t, s_0 = sig[k + 1], sig[k]
    h = _lam(s_t) - _lam(s_0)
    a_t = 1 - s_t
    phi_1, b_h, _, _ = _unipc_coeffs(h)
    m0 = ms[-1]
    x_t = (s_t / s_0) * x - a_t * phi_1 * m0
    if order == 2:
        rk = (_lam(sig[k - 1]) - _lam(s_0)) / h
        d1 = (ms[-2] - m0) / rk
        x_t = x_t - a_t * b_h * (0.5 * d1)
    return x_t


def _unic(
    x_t: torch.Tensor,
    x_prev: torch.Tensor,
    m_t: torch.Tensor,
    ms: list[torch.Tensor],
    sig: torch.Tensor,
    k: int,
    order: int,
) -> torch.Tensor:
    """Corrector of the step sigma_{k-1} -> sigma_k, using the new data prediction ``m_t``."""
    s_t, s_0 = sig[k], sig[k - 1]
    h = _lam(s_t) - _lam(s_0)
    a_t = 1 - s_t
    phi_1, b_h, g1, g2 = _unipc_coeffs(h)
    m0 = ms[-1]
    base = (s_t / s_0) * x_prev - a_t * phi_1 * m0
    d1_t = m_t - m0
    if order == 1:
        return base - a_t * b_h * (0.5 * d1_t)
    # order 2: solve [[1, 1], [r, 1]] rho = [g1 / B, 2 g2 / B]
    rk = (_lam(sig[k - 2]) - _lam(s_0)) / h
    d1 = (ms[-2] - m0) / rk
    rks = torch.stack([rk, torch.ones_like(rk)])
    r_mat = torch.stack([torch.ones_like(rks), rks])
    b = torch.stack([g1 / b_h, g2 * 2 / b_h])
    rho = torch.linalg.solve(r_mat, b)
    return base - a_t * b_h * (rho[0] * d1 + rho[1] * d1_t)


SOLVERS: dict[str, Callable[..., torch.Tensor]] = {
    name: _announces_steps(solve)
    for name, solve in (("unipc", unipc_solve), ("dpm++", dpmpp_solve), ("euler", euler_solve))
}
