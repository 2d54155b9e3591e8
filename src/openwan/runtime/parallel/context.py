"""Context parallelism for the Wan DiT: Ulysses (heads all-to-all) x Ring (K/V passed around).

Applied from outside the model: :class:`ContextParallelDiT` holds a :class:`WanModel` and runs
its three seams itself. ``embed`` runs replicated on every CP rank (it is cheap and its inputs
are replicated); the token sequence is then padded to a multiple of the CP size and each rank
keeps one contiguous shard, with the matching rows of the RoPE tables and of per-token
modulation; ``run_blocks`` runs on the shard with a :class:`TokenLayout` whose self-attention
leaf is the CP attention below. The head is per token, so it runs on the shard too and only its
narrow output (``prod(patch) * out_dim`` channels, 80x fewer than ``dim`` for 14B) is gathered.

Self-attention of a block on CP rank (r, u), holding shard ``r * U + u`` of length ``Ls``:

1. Ulysses: all-to-all inside the Ulysses group turns q/k/v ``[B, Ls, H, D]`` into
   ``[B, U * Ls, H / U, D]``: the whole ring chunk ``r`` for ``H / U`` heads.
2. Ring: with R > 1, K/V chunks travel around the ring group; each step attends to one chunk and
   merges the partial result by log-sum-exp (flash-attention's online softmax), so no rank ever
   holds more than one K/V chunk. With R = 1 the plain attention leaf runs on the whole sequence.
3. The reverse all-to-all gives back ``[B, Ls, H, D]``.

Padding keys (the model's own ``seq_len`` padding and the CP padding) are masked by their
global position; padded query rows are computed and dropped at the gather. Cross-attention is
local: the text (and CLIP) keys are replicated on every rank.

Extra token streams: VACE context tokens (one per video token) are split exactly like the
tokens (:class:`ContextParallelVace`); S2V's reference and motion tokens are part of the sequence
and sharded with it, the per-frame audio tokens are replicated (:class:`ContextParallelS2V`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from openwan.configs.dit import DiTConfig
from openwan.models.dit import TokenLayout, WanModel
from openwan.models.s2v import S2VLayout, WanModelS2V
from openwan.models.vace import VaceWanModel
from openwan.ops.attention import attention
from openwan.runtime.parallel.comm import (
    PendingShift,
    all_to_all,
    gather_seq,
    ring_shift,
    start_shift,
)
from openwan.runtime.parallel.mesh import ParallelMesh

# Query rows per score block at inference (training keeps whole blocks: autograd saves them anyway)
QUERY_CHUNK = 2048
# A finite "minus infinity": a chunk made only of padding keys gets weight exactly 0 in the merge
# without any inf - inf (NaN) in the forward or the backward pass.
MASKED = -1e30


def block_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_valid: torch.Tensor | None,
    q_chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention of q ``[B, Lq, H, D]`` over one K/V chunk ``[B, Lk, H, D]``, in fp32.

    Returns the normalised output ``[B, Lq, H, D]`` and the log-sum-exp ``[B, H, Lq]`` of the
    scaled scores (what the merge needs). ``key_valid`` ``[B, Lk]`` masks padding keys.
    ``q_chunk`` bounds the score block to ``H x q_chunk x Lk`` (query rows are independent).
    """
    if q_chunk is not None and q.shape[1] > q_chunk:
        parts = [block_attention(qc, k, v, key_valid) for qc in q.split(q_chunk, dim=1)]
        return torch.cat([o for o, _ in parts], dim=1), torch.cat([l for _, l in parts], dim=2)
    scores = torch.einsum("bqhd,bkhd->bhqk", q.float(), k.float()) * q.shape[-1] ** -0.5
    if key_valid is not None:
        scores = scores.masked_fill(~key_valid[:, None, None, :], MASKED)
    lse = torch.logsumexp(scores, dim=-1)  # [B, H, Lq]
    probs = torch.exp(scores - lse[..., None])
    return torch.einsum("bhqk,bkhd->bqhd", probs, v.float()), lse


def merge_partials(
    out_a: torch.Tensor, lse_a: torch.Tensor, out_b: torch.Tensor, lse_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Combine two normalised partial attentions over disjoint key sets (stable log-sum-exp)."""
    lse = torch.logaddexp(lse_a, lse_b)  # [B, H, Lq]
    w_a = torch.exp(lse_a - lse).transpose(1, 2)[..., None]  # [B, Lq, H, 1]
    w_b = torch.exp(lse_b - lse).transpose(1, 2)[..., None]
    return out_a * w_a + out_b * w_b, lse


@dataclass
class ContextParallelAttention:
    """The self-attention leaf of one CP forward pass (k_lens are global key positions)."""

    mesh: ParallelMesh
    chunk: int  # tokens per ring chunk: U * Ls

    def __call__(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        k_lens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        group = self.mesh.ulysses_group
        # [B, Ls, H, D] -> [B, U*Ls, H/U, D]: this rank's ring chunk, for a slice of the heads
        q, k, v = (all_to_all(z, group, scatter=2, gather=1) for z in (q, k, v))
        if self.mesh.plan.ring == 1:
            out = attention(q, k, v, k_lens=k_lens)
        else:
            out = self._ring(q, k, v, k_lens).to(q.dtype)
        return all_to_all(out, group, scatter=1, gather=2)  # [B, U*Ls, H/U, D] -> [B, Ls, H, D]

    def _ring(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_lens: torch.Tensor | None
    ) -> torch.Tensor:
        group, ring = self.mesh.ring_group, self.mesh.plan.ring
        me = self.mesh.grid.get_local_rank("ring")
        kv = torch.stack([k, v])  # [2, B, C, h, D]: one message per ring step
        grad = torch.is_grad_enabled()
        out: torch.Tensor | None = None
        lse: torch.Tensor | None = None
        pending: PendingShift | None = None
        for step in range(ring):
            if step and grad:
                kv = ring_shift(kv, group)  # now holds the chunk of ring rank me - step
            elif pending is not None:
                kv = pending.wait()
            # inference: the next hand-off runs while this step's attention is computed
            pending = start_shift(kv, group) if not grad and step + 1 < ring else None
            src = (me - step) % ring
            valid = None
            if k_lens is not None:
                pos = torch.arange(src * self.chunk, (src + 1) * self.chunk, device=q.device)
                valid = pos[None, :] < k_lens[:, None].to(q.device)  # [B, C]
            chunk = None if grad else QUERY_CHUNK
            o, l = block_attention(q, kv[0], kv[1], valid, chunk)
            if out is None or lse is None:
                out, lse = o, l
            else:
                out, lse = merge_partials(out, lse, o, l)
        assert out is not None
        return out


@dataclass
class TokenSharder:
    """Pads a ``[B, S, ...]`` sequence to ``cp * Ls`` and keeps this rank's rows ``[lo, lo + Ls)``."""

    length: int  # true sequence length S (before CP padding)
    shard: int  # Ls
    lo: int  # first global position of this rank's shard

    @classmethod
    def for_length(cls, length: int, cp: int, cp_rank: int) -> TokenSharder:
        shard = math.ceil(length / cp)
        return cls(length, shard, cp_rank * shard)

    def split(self, x: torch.Tensor, total: int) -> torch.Tensor:
        """This rank's rows of ``x`` (dim 1 of length ``length``), zero-padded to ``total``."""
        pad = total - x.shape[1]
        if pad:
            x = F.pad(x, (0, 0) * (x.ndim - 2) + (0, pad))
        return x[:, self.lo : self.lo + self.shard]

    def rope(self, table: torch.Tensor) -> torch.Tensor:
        """RoPE rows of this shard: the table covers the first ``table.shape[0]`` positions only."""
        n = table.shape[0]
        return table[min(self.lo, n) : min(self.lo + self.shard, n)]


@dataclass
class LocalTokens:
    """One rank's part of a forward pass: its token rows and the matching per-token tensors."""

    sharder: TokenSharder
    total: int  # padded sequence length cp * Ls
    tokens: torch.Tensor  # [B, Ls, dim]
    e: torch.Tensor  # head modulation, [B, 1|Ls, dim]
    e0: torch.Tensor  # block modulation, [B, 1|Ls|2, 6, dim]
    layout: TokenLayout  # RoPE rows, global k_lens, local split, the CP attention

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's rows of another tensor aligned with the tokens (``[B, S, ...]``)."""
        return self.sharder.split(x, self.total)


class ContextParallelDiT(nn.Module):
    """A :class:`WanModel` run with its token sequence split over the CP ranks of ``mesh``.

    Same call signature and output as the model (the full velocity on every rank).
    """

    def __init__(self, model: WanModel, mesh: ParallelMesh) -> None:
        super().__init__()
        mesh.plan.check_heads(model.config.num_heads)
        self.module = model
        self.mesh = mesh

    @property
    def config(self) -> DiTConfig:
        return self.module.config

    def shard(
        self, tokens: torch.Tensor, e: torch.Tensor, e0: torch.Tensor, layout: TokenLayout
    ) -> LocalTokens:
        """This rank's shard of the embedded sequence and a layout for it."""
        cp = self.mesh.plan.cp
        length = tokens.shape[1]
        sharder = TokenSharder.for_length(length, cp, self.mesh.cp_rank)
        total = sharder.shard * cp
        k_lens = layout.k_lens
        if k_lens is None and total != length:  # the CP padding must be masked as keys
            k_lens = torch.full((tokens.shape[0],), length, dtype=torch.long, device=tokens.device)
        split = layout.split
        if split is not None:  # two-segment modulation: the shard's own segment boundary
            split = min(max(split - sharder.lo, 0), sharder.shard)
        local_layout = replace(
            layout,
            k_lens=k_lens,
            cos=sharder.rope(layout.cos),
            sin=sharder.rope(layout.sin),
            split=split,
            self_attention=ContextParallelAttention(
                self.mesh, sharder.shard * self.mesh.plan.ulysses
            ),
        )

        def per_token(z: torch.Tensor) -> torch.Tensor:  # per-token t (TI2V): split too
            return z if z.shape[1] == 1 else sharder.split(z, total)

        # with segments (S2V) the rows of e0 are the two segments' modulations, not tokens
        local_e0 = e0 if layout.split is not None else per_token(e0)
        return LocalTokens(
            sharder, total, sharder.split(tokens, total), per_token(e), local_e0, local_layout
        )

    def output(
        self, h: torch.Tensor, local: LocalTokens, grid: tuple[int, int, int]
    ) -> torch.Tensor:
        """Head on the shard, gather its narrow output (prod(patch) * out_dim = 64 channels for
        14B instead of dim = 5120), unpatchify the video tokens (they come first)."""
        m = self.module
        out = gather_seq(m.head(h, local.e), self.mesh.cp_group, dim=1)  # [B, cp * Ls, C]
        return m.unpatchify(out, grid)  # [B, C, F, H, W]

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor | list[torch.Tensor],
        *,
        y: torch.Tensor | None = None,
        clip_fea: torch.Tensor | None = None,
        seq_len: int | None = None,
    ) -> torch.Tensor:
        m = self.module
        tokens, e, e0, ctx, layout = m.embed(x, t, context, y=y, clip_fea=clip_fea, seq_len=seq_len)
        local = self.shard(tokens, e, e0, layout)
        h = m.run_blocks(local.tokens, local.e0, ctx, local.layout)
        return self.output(h, local, layout.grid)


class ContextParallelVace(ContextParallelDiT):
    """A :class:`VaceWanModel` under CP: the VACE context tokens are one per video token, so they
    are sharded exactly like the tokens (same padding); the context blocks run on the shard with
    the same CP layout and give hints for the shard's rows only."""

    module: VaceWanModel

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor | list[torch.Tensor],
        *,
        vace_context: torch.Tensor,
        vace_context_scale: float = 1.0,
        seq_len: int | None = None,
    ) -> torch.Tensor:
        m = self.module
        tokens, e, e0, ctx, layout = m.embed(x, t, context, seq_len=seq_len)
        c = m.embed_vace(tokens, vace_context, layout)  # [B, S, dim], replicated like tokens
        local = self.shard(tokens, e, e0, layout)
        hints = m.run_vace_blocks(local.split(c), local.tokens, local.e0, ctx, local.layout)
        h = m.run_blocks(
            local.tokens, local.e0, ctx, local.layout, hints=hints, context_scale=vace_context_scale
        )
        return self.output(h, local, layout.grid)


class ContextParallelS2V(ContextParallelDiT):
    """A :class:`WanModelS2V` under CP: the whole sequence (noisy video tokens, then reference,
    then FramePack motion tokens) is sharded as one. Each rank gets its rows of the concatenated
    RoPE table (each segment has its own positions), the segment boundary of its shard for the
    two-segment modulation, and ``video_offset`` so the audio injector can regroup the shard's
    noisy tokens by latent frame (a shard may start and end mid-frame; the per-frame audio tokens
    are replicated). Self-attention spans all tokens, so it is the CP attention as for T2V."""

    module: WanModelS2V

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor | list[torch.Tensor],
        **conditions: Any,
    ) -> torch.Tensor:
        """Same arguments as :meth:`WanModelS2V.forward` (ref/motion latents, audio, ...)."""
        m = self.module
        tokens, e, e0, ctx, layout = m.embed_s2v(x, t, context, **conditions)
        assert layout.split is not None
        local = self.shard(tokens, e, e0, layout)
        assert isinstance(local.layout, S2VLayout)  # shard() keeps the layout's type
        local.layout = replace(local.layout, video_offset=min(local.sharder.lo, layout.split))
        h = m.run_blocks(local.tokens, local.e0, ctx, local.layout)
        return self.output(h, local, layout.grid)


def apply_context_parallel(model: WanModel, mesh: ParallelMesh) -> nn.Module:
    """Wrap ``model`` for the plan of ``mesh`` (the model itself when the CP size is 1)."""
    if mesh.plan.cp == 1:
        return model
    if isinstance(model, VaceWanModel):
        return ContextParallelVace(model, mesh)
    if isinstance(model, WanModelS2V):
        return ContextParallelS2V(model, mesh)
    return ContextParallelDiT(model, mesh)
