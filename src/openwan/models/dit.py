"""The Wan diffusion transformer (WanModel): T2V, TI2V (per-token timesteps), I2V and FLF2V.

Read top to bottom: helpers, attention modules, the block, the head, the model. Attribute paths
equal the official state-dict keys (``blocks.0.self_attn.q``, ``time_projection.1``,
``head.modulation``), so an official checkpoint loads with ``strict=True`` and no mapping.

Precision follows the official model, which runs the linears in bf16 under autocast but keeps
fp32 "islands": the timestep sinusoid and MLPs, modulation arithmetic, norms, RoPE and the gated
residual adds, and the head. The residual stream is therefore fp32 after the first block.

Every matrix multiply goes through the linear leaf (``ops/linear.py``: ``Linear``, ``GeluFFN``)
and every attention through the attention leaf (``ops/attention.py``), so kernels are chosen
in one place.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from openwan.configs.dit import DiTConfig
from openwan.ops.attention import attention
from openwan.ops.embeddings import sinusoidal_embedding
from openwan.ops.linear import GeluFFN, Linear, linear
from openwan.ops.norms import FP32LayerNorm, RMSNorm
from openwan.ops.rope import apply_rope, rope_angles, rope_cos_sin

IMAGE_TOKEN_DIM = 1280  # CLIP ViT-H/14 width
FLF2V_IMAGE_TOKENS = 514  # 2 x 257 CLIP tokens


def compute_dtype(layer: nn.Module) -> torch.dtype:
    """The dtype a linear computes in: its weight's, unless a converted layer (e.g. int8) says."""
    declared = getattr(layer, "compute_dtype", None)
    return declared if isinstance(declared, torch.dtype) else layer.weight.dtype


def in_weight_dtype(seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Run a Linear-first stack in its weight dtype (what bf16 autocast does in the official model)."""
    return seq(x.to(compute_dtype(seq[0])))


def linear_fp32(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """Run a linear in fp32 whatever the weight dtype (an official fp32 island)."""
    bias = layer.bias.float() if layer.bias is not None else None
    return linear(x.float(), layer.weight.float(), bias)


@dataclass
class TokenLayout:
    """What every block needs to know about the token sequence of one forward pass."""

    grid: tuple[int, int, int]  # (f, h, w) patch grid
    k_lens: torch.Tensor | None  # true lengths when padded to seq_len, else None
    cos: torch.Tensor  # RoPE tables [f*h*w, 1, head_dim/2]
    sin: torch.Tensor
    # Two-segment modulation (S2V): e0 is [B, 2, 6, dim]; tokens before ``split`` take row 0,
    # the rest row 1. None: e0 is [B, 1 or L, 6, dim] and broadcasts over the tokens.
    split: int | None = None
    # the self-attention leaf, (q, k, v, k_lens) -> out: a seam for runtimes that replace it for
    # one forward pass (context parallelism gives each rank a layout of its own token shard)
    self_attention: Callable[..., torch.Tensor] = attention


def modulate(
    h: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, split: int | None
) -> torch.Tensor:
    """``h * (1 + scale) + shift`` (fp32), segment-wise when ``split`` is set (see TokenLayout)."""
    if split is None:
        return torch.addcmul(shift, h, 1 + scale)  # one pass over h
    head = h[:, :split] * (1 + scale[:, :1]) + shift[:, :1]
    tail = h[:, split:] * (1 + scale[:, 1:2]) + shift[:, 1:2]
    return torch.cat([head, tail], dim=1)


def add_gated(
    x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor, split: int | None
) -> torch.Tensor:
    """The gated residual add ``x + y * gate`` in fp32 (x fp32; y in any float dtype, promoted
    inside the kernel), segment-wise when ``split`` is set."""
    if split is None:
        return torch.addcmul(x, y, gate)  # one pass, no fp32 copy of y
    y = y.float()
    return x + torch.cat([y[:, :split] * gate[:, :1], y[:, split:] * gate[:, 1:2]], dim=1)


# ----------------------------------------------------------------------------- attention
class WanSelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = Linear(dim, dim)
        self.k = Linear(dim, dim)
        self.v = Linear(dim, dim)
        self.o = Linear(dim, dim)
        # RMS norm over all heads jointly (weight [dim]), before the split into heads
        self.norm_q = RMSNorm(dim, eps) if qk_norm else nn.Identity()
        self.norm_k = RMSNorm(dim, eps) if qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        x = x.to(compute_dtype(self.q))
        q = self.norm_q(self.q(x)).unflatten(-1, (self.num_heads, -1))  # [B, L, H, D]
        k = self.norm_k(self.k(x)).unflatten(-1, (self.num_heads, -1))
        v = self.v(x).unflatten(-1, (self.num_heads, -1))
        q = apply_rope(q, layout.cos, layout.sin).to(v.dtype)
        k = apply_rope(k, layout.cos, layout.sin).to(v.dtype)
        out = layout.self_attention(q, k, v, k_lens=layout.k_lens)  # [B, L, H, D]
        return self.o(out.flatten(2))


class WanCrossAttention(nn.Module):
    """Video tokens attend to the text tokens; with ``image_tokens`` also (separately) to CLIP tokens."""

    def __init__(
        self, dim: int, num_heads: int, qk_norm: bool = True, eps: float = 1e-6, image: bool = False
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = Linear(dim, dim)
        self.k = Linear(dim, dim)
        self.v = Linear(dim, dim)
        self.o = Linear(dim, dim)
        self.norm_q = RMSNorm(dim, eps) if qk_norm else nn.Identity()
        self.norm_k = RMSNorm(dim, eps) if qk_norm else nn.Identity()
        self.has_image = image
        if image:
            self.k_img = Linear(dim, dim)
            self.v_img = Linear(dim, dim)
            self.norm_k_img = RMSNorm(dim, eps) if qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor, context: torch.Tensor, text_len: int) -> torch.Tensor:
        x = x.to(compute_dtype(self.q))
        context = context.to(compute_dtype(self.q))
        heads = self.num_heads
        q = self.norm_q(self.q(x)).unflatten(-1, (heads, -1))  # [B, L, H, D]
        text = context[:, -text_len:] if self.has_image else context
        k = self.norm_k(self.k(text)).unflatten(-1, (heads, -1))
        v = self.v(text).unflatten(-1, (heads, -1))
        out = attention(q, k, v)  # unmasked: padded text rows take part (official)
        if self.has_image:
            img = context[:, :-text_len]  # image tokens come first
            k_img = self.norm_k_img(self.k_img(img)).unflatten(-1, (heads, -1))
            v_img = self.v_img(img).unflatten(-1, (heads, -1))
            out = out + attention(q, k_img, v_img)
        return self.o(out.flatten(2))


# ----------------------------------------------------------------------------- block
class WanAttentionBlock(nn.Module):
    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        dim, eps = config.dim, config.eps
        self.norm1 = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.self_attn = WanSelfAttention(dim, config.num_heads, config.qk_norm, eps)
        self.norm3 = (
            FP32LayerNorm(dim, eps, elementwise_affine=True)
            if config.cross_attn_norm
            else nn.Identity()
        )
        self.cross_attn = WanCrossAttention(
            dim, config.num_heads, config.qk_norm, eps, image=config.has_image_embedding
        )
        self.norm2 = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.ffn = GeluFFN(dim, config.ffn_dim)
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)
        self.text_len = config.text_len

    def forward(
        self, x: torch.Tensor, e0: torch.Tensor, context: torch.Tensor, layout: TokenLayout
    ) -> torch.Tensor:
        """x ``[B, L, dim]`` fp32 residual stream; e0 ``[B, 1|L|2, 6, dim]`` fp32 (see TokenLayout)."""
        mod = (self.modulation.float().unsqueeze(0) + e0).unbind(dim=2)  # 6 x [B, 1|L|2, dim]
        shift1, scale1, gate1, shift2, scale2, gate2 = mod
        split = layout.split
        # fp32 island: modulated norm and gated residual add
        h = modulate(self.norm1(x).float(), shift1, scale1, split)
        x = add_gated(x, self.self_attn(h, layout), gate1, split)
        x = x + self.cross_attn(self.norm3(x), context, self.text_len)  # promoted to fp32
        h = modulate(self.norm2(x).float(), shift2, scale2, split)
        return add_gated(x, in_weight_dtype(self.ffn, h), gate2, split)


# ----------------------------------------------------------------------------- head
class Head(nn.Module):
    def __init__(
        self, dim: int, out_dim: int, patch_size: tuple[int, int, int], eps: float
    ) -> None:
        super().__init__()
        self.norm = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.head = Linear(dim, math.prod(patch_size) * out_dim)
        self.modulation = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """x ``[B, L, dim]``, e ``[B, 1 or L, dim]`` (the time embedding, not e0); all fp32."""
        shift, scale = (self.modulation.float().unsqueeze(0) + e.unsqueeze(2)).unbind(dim=2)
        return linear_fp32(self.head, self.norm(x) * (1 + scale) + shift)


class MLPProj(nn.Module):
    """CLIP image tokens -> DiT width (Wan2.1 I2V/FLF2V); FLF2V adds a learned position table."""

    def __init__(self, in_dim: int, out_dim: int, flf2v: bool = False) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            FP32LayerNorm(in_dim, eps=1e-5),
            Linear(in_dim, in_dim),
            nn.GELU(),
            Linear(in_dim, out_dim),
            FP32LayerNorm(out_dim, eps=1e-5),
        )
        self.emb_pos = nn.Parameter(torch.zeros(1, FLF2V_IMAGE_TOKENS, in_dim)) if flf2v else None

    def forward(self, image_tokens: torch.Tensor) -> torch.Tensor:
        if self.emb_pos is not None:
            image_tokens = image_tokens + self.emb_pos.to(image_tokens.dtype)
        return self.proj(image_tokens.to(self.proj[1].weight.dtype))


# ----------------------------------------------------------------------------- model
class WanModel(nn.Module):
    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.dim
        self.patch_embedding = nn.Conv3d(
            config.in_dim, dim, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.text_embedding = GeluFFN(config.text_dim, dim, dim)
        self.time_embedding = nn.Sequential(
            Linear(config.freq_dim, dim), nn.SiLU(), Linear(dim, dim)
        )
        self.time_projection = nn.Sequential(nn.SiLU(), Linear(dim, 6 * dim))
        self.blocks = nn.ModuleList(WanAttentionBlock(config) for _ in range(config.num_layers))
        self.head = Head(dim, config.out_dim, config.patch_size, config.eps)
        if config.has_image_embedding:
            self.img_emb = MLPProj(IMAGE_TOKEN_DIM, dim, flf2v=config.model_type == "flf2v")

    # -- stage 1: inputs -> tokens ---------------------------------------------------------
    def embed(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor | list[torch.Tensor],
        *,
        y: torch.Tensor | None = None,
        clip_fea: torch.Tensor | None = None,
        seq_len: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, TokenLayout]:
        """Returns (tokens fp32 [B, S, dim], e [B, 1|S, dim], e0 [B, 1|S, 6, dim], context, layout)."""
        cfg = self.config
        if y is not None:
            x = torch.cat([x, y.to(x.dtype)], dim=1)  # noise channels first, then the condition
        if x.ndim != 5 or x.shape[1] != cfg.in_dim:
            raise ValueError(
                f"expected x of shape [B, {cfg.in_dim}, F, H, W], got {tuple(x.shape)}"
            )
        pt, ph, pw = cfg.patch_size
        if x.shape[2] % pt or x.shape[3] % ph or x.shape[4] % pw:
            raise ValueError(
                f"latent frames/height/width {tuple(x.shape[2:])} must be divisible by the patch size "
                f"{cfg.patch_size}"
            )
        w = self.patch_embedding.weight
        tokens = self.patch_embedding(x.to(w.dtype))  # [B, dim, f, h, w]
        grid = (tokens.shape[2], tokens.shape[3], tokens.shape[4])
        tokens = tokens.flatten(2).transpose(1, 2).float()  # [B, f*h*w, dim]
        n = tokens.shape[1]
        if seq_len is None and t.ndim == 2:
            seq_len = t.shape[1]
        k_lens = None
        if seq_len is not None and seq_len != n:
            if seq_len < n:
                raise ValueError(f"seq_len {seq_len} is shorter than the {n} video tokens")
            tokens = F.pad(tokens, (0, 0, 0, seq_len - n))  # zero tokens, masked as keys
            k_lens = torch.full((tokens.shape[0],), n, dtype=torch.long, device=tokens.device)
        e, e0 = self.time_embed(t, tokens.shape[0], tokens.shape[1])
        ctx = self.embed_context(context, clip_fea)
        angles = rope_angles(grid, cfg.head_dim, device=tokens.device)
        cos, sin = rope_cos_sin(angles)
        return tokens, e, e0, ctx, TokenLayout(grid=grid, k_lens=k_lens, cos=cos, sin=sin)

    def time_embed(
        self, t: torch.Tensor, batch: int, length: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """t ``[B]`` (one timestep per sample) or ``[B, L]`` (per token, Wan2.2 TI2V).

        fp32 island: sinusoid, time MLP and projection all in fp32.
        """
        if t.ndim == 0:
            t = t.reshape(1)
        if t.ndim == 1:
            t = t.expand(batch) if t.shape[0] == 1 else t
            t = t[:, None]  # [B, 1]
        if t.shape[0] != batch or t.shape[1] not in (1, length):
            raise ValueError(
                f"timesteps of shape {tuple(t.shape)} do not fit {batch} x {length} tokens"
            )
        sin = sinusoidal_embedding(t, self.config.freq_dim)  # [B, 1|L, freq_dim]
        e = linear_fp32(self.time_embedding[2], F.silu(linear_fp32(self.time_embedding[0], sin)))
        e0 = linear_fp32(self.time_projection[1], F.silu(e)).unflatten(
            -1, (6, -1)
        )  # [B, 1|L, 6, dim]
        return e, e0

    def embed_context(
        self, context: torch.Tensor | list[torch.Tensor], clip_fea: torch.Tensor | None
    ) -> torch.Tensor:
        """Zero-pad each prompt to text_len, project; prepend projected CLIP tokens if any."""
        cfg = self.config
        rows = list(context) if isinstance(context, (list, tuple)) else list(context.unbind(0))
        padded = []
        for c in rows:
            if c.ndim != 2 or c.shape[1] != cfg.text_dim:
                raise ValueError(f"context rows must be [L, {cfg.text_dim}], got {tuple(c.shape)}")
            if c.shape[0] > cfg.text_len:
                raise ValueError(
                    f"context has {c.shape[0]} tokens; the model takes at most {cfg.text_len}"
                )
            padded.append(F.pad(c, (0, 0, 0, cfg.text_len - c.shape[0])))
        ctx = in_weight_dtype(self.text_embedding, torch.stack(padded))  # [B, text_len, dim]
        if cfg.has_image_embedding:
            if clip_fea is None:
                raise ValueError(f"a {cfg.model_type} model needs clip_fea (CLIP image tokens)")
            ctx = torch.cat([self.img_emb(clip_fea).to(ctx.dtype), ctx], dim=1)
        elif clip_fea is not None:
            raise ValueError("this model has no image embedder; do not pass clip_fea")
        return ctx

    # -- stage 2: the blocks ---------------------------------------------------------------
    def run_blocks(
        self, x: torch.Tensor, e0: torch.Tensor, context: torch.Tensor, layout: TokenLayout
    ) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, e0, context, layout)
        return x

    # -- stage 3: tokens -> velocity -------------------------------------------------------
    def unpatchify(self, tokens: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        f, h, w = grid
        pt, ph, pw = self.config.patch_size
        n = f * h * w
        x = tokens[:, :n].reshape(tokens.shape[0], f, h, w, pt, ph, pw, -1)  # [B,f,h,w,p,q,r,C]
        x = torch.einsum("bfhwpqrc->bcfphqwr", x)
        return x.reshape(x.shape[0], x.shape[1], f * pt, h * ph, w * pw)  # [B, C, F, H, W]

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
        """Velocity ``[B, out_dim, F, H, W]`` (fp32) for latents x ``[B, in_dim(-cond), F, H, W]``.

        t is used as given (0..1000 scale, fractional values allowed).
        """
        tokens, e, e0, ctx, layout = self.embed(
            x, t, context, y=y, clip_fea=clip_fea, seq_len=seq_len
        )
        tokens = self.run_blocks(tokens, e0, ctx, layout)
        out = self.head(tokens, e)  # [B, S, prod(patch) * out_dim] fp32
        return self.unpatchify(out, layout.grid)

    # -- training init (official recipe) -----------------------------------------------------
    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.xavier_uniform_(self.patch_embedding.weight.flatten(1))
        for seq in (self.text_embedding, self.time_embedding):
            for m in seq.modules():
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, std=0.02)
        nn.init.zeros_(self.head.head.weight)
