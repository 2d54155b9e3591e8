"""Differentiable collectives for context parallelism (inference runs them under no_grad).

Each is an ``autograd.Function`` whose backward is the adjoint collective, so the same code
serves the training step: all-to-all <-> the reverse all-to-all, ring shift forward <-> ring
shift backward, all-gather <-> reduce-scatter (sum).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

# torch >= 2.13 names the tensor collectives *_single (the old names warn)
_all_gather = getattr(dist, "all_gather_single", dist.all_gather_into_tensor)
_reduce_scatter = getattr(dist, "reduce_scatter_single", dist.reduce_scatter_tensor)


def _all_to_all(
    x: torch.Tensor, group: dist.ProcessGroup, scatter: int, gather: int
) -> torch.Tensor:
    world = dist.get_world_size(group)
    send = torch.stack(x.chunk(world, dim=scatter)).contiguous()  # [W, ...chunk]: row i -> rank i
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=group)  # row j now came from rank j
    return torch.cat(recv.unbind(0), dim=gather)


class _AllToAll(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, group: dist.ProcessGroup, scatter: int, gather: int
    ) -> torch.Tensor:
        ctx.group, ctx.scatter, ctx.gather = group, scatter, gather
        return _all_to_all(x, group, scatter, gather)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        return _all_to_all(grad, ctx.group, ctx.gather, ctx.scatter), None, None, None


def all_to_all(
    x: torch.Tensor, group: dist.ProcessGroup, scatter: int, gather: int
) -> torch.Tensor:
    """Split ``x`` along ``scatter`` over the group's ranks; concatenate what arrives along ``gather``.

    Ulysses uses it with scatter = heads, gather = sequence (and back).
    """
    if dist.get_world_size(group) == 1:
        return x
    return _AllToAll.apply(x, group, scatter, gather)


class PendingShift:
    """A ring hand-off in flight: ``wait()`` returns the received tensor."""

    def __init__(self, x: torch.Tensor, group: dist.ProcessGroup, step: int) -> None:
        world, me = dist.get_world_size(group), dist.get_rank(group)
        self._send = x.contiguous()  # kept alive until the send completes
        self._recv = torch.empty_like(self._send)
        ops = [
            dist.P2POp(
                dist.isend, self._send, dist.get_global_rank(group, (me + step) % world), group
            ),
            dist.P2POp(
                dist.irecv, self._recv, dist.get_global_rank(group, (me - step) % world), group
            ),
        ]
        self._works = dist.batch_isend_irecv(ops)

    def wait(self) -> torch.Tensor:
        for work in self._works:
            work.wait()
        return self._recv


def start_shift(x: torch.Tensor, group: dist.ProcessGroup) -> PendingShift:
    """Start passing ``x`` to the next rank of the ring (no autograd: inference overlaps the
    hand-off of the next K/V chunk with the attention over the current one)."""
    return PendingShift(x, group, 1)


def _shift(x: torch.Tensor, group: dist.ProcessGroup, step: int) -> torch.Tensor:
    """Send ``x`` to the rank ``step`` places ahead in the group and receive from ``step`` behind."""
    return PendingShift(x, group, step).wait()


class _RingShift(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
        ctx.group = group
        return _shift(x, group, 1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        return _shift(grad, ctx.group, -1), None  # the gradient travels the ring backwards


def ring_shift(x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    """Pass ``x`` to the next rank of the ring; returns the previous rank's tensor."""
    return _RingShift.apply(x, group)


class _GatherSeq(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, group: dist.ProcessGroup, dim: int) -> torch.Tensor:
        ctx.group, ctx.dim = group, dim
        world = dist.get_world_size(group)
        local = x.movedim(dim, 0).contiguous()  # [n, ...]
        out = local.new_empty((world * local.shape[0], *local.shape[1:]))
        _all_gather(out, local, group=group)  # rank order along dim 0
        return out.movedim(0, dim)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        world = dist.get_world_size(ctx.group)
        full = grad.movedim(ctx.dim, 0).contiguous()  # [W * n, ...]
        out = full.new_empty((full.shape[0] // world, *full.shape[1:]))
        # every rank's loss used the whole gathered tensor: the shard's gradient is their sum
        _reduce_scatter(out, full, op=dist.ReduceOp.SUM, group=ctx.group)
        return out.movedim(0, ctx.dim), None, None


def gather_seq(x: torch.Tensor, group: dist.ProcessGroup, dim: int = 1) -> torch.Tensor:
    """Concatenate the group's shards along ``dim`` in group-rank order, on every rank."""
    if dist.get_world_size(group) == 1:
        return x
    return _GatherSeq.apply(x, group, dim)
