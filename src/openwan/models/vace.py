"""VACE (Wan2.1 VACE 1.3B / 14B): context blocks on top of the T2V DiT.

A second, shorter stack of ordinary DiT blocks (``vace_blocks``) reads the VACE context (frame
latents + mask channels, ``vace_in_dim`` = 96) and emits one "hint" per entry of
``config.vace_layers``; the hint of entry n is added (times ``vace_context_scale``) to the residual
stream right after main block ``vace_layers[n]``. The main blocks, head, time and text paths are
the unchanged :class:`~openwan.models.dit.WanModel`. Attribute paths equal the official keys
(``vace_patch_embedding``, ``vace_blocks.{n}.before_proj`` / ``after_proj``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from openwan.configs.dit import DiTConfig
from openwan.models.dit import TokenLayout, WanAttentionBlock, WanModel


class VaceBlock(WanAttentionBlock):
    """A DiT block on the context stream plus the hint projection.

    Block 0 first mixes the embedded noisy tokens in: ``c = before_proj(c) + x``.
    """

    def __init__(self, config: DiTConfig, first: bool) -> None:
        super().__init__(config)
        dim = config.dim
        self.before_proj = nn.Linear(dim, dim) if first else None
        self.after_proj = nn.Linear(dim, dim)

    def forward(  # type: ignore[override]
        self,
        c: torch.Tensor,
        x: torch.Tensor,
        e0: torch.Tensor,
        context: torch.Tensor,
        layout: TokenLayout,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (next context stream fp32 ``[B, S, dim]``, hint ``[B, S, dim]`` fp32)."""
        if self.before_proj is not None:
            w = self.before_proj.weight
            c = self.before_proj(c.to(w.dtype)).float() + x
        c = super().forward(c, e0, context, layout)
        hint = self.after_proj(c.to(self.after_proj.weight.dtype)).float()
        return c, hint


class VaceWanModel(WanModel):
    """``model(x, t, context, vace_context=[B, 96, F, H, W], vace_context_scale=1.0)``."""

    def __init__(self, config: DiTConfig) -> None:
        layers = config.vace_layers
        if layers is None or config.vace_in_dim is None:
            raise ValueError("a VACE model needs vace_layers and vace_in_dim in its config")
        if layers[0] != 0 or list(layers) != sorted(set(layers)) or layers[-1] >= config.num_layers:
            raise ValueError(
                f"vace_layers {list(layers)} must be increasing block indices below "
                f"{config.num_layers} starting at 0"
            )
        super().__init__(config)
        self.vace_blocks = nn.ModuleList(
            VaceBlock(config, first=n == 0) for n in range(len(layers))
        )
        self.vace_patch_embedding = nn.Conv3d(
            config.vace_in_dim, config.dim, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.hint_index = {layer: n for n, layer in enumerate(layers)}  # main block -> hint

    def vace_hints(
        self,
        tokens: torch.Tensor,
        vace_context: torch.Tensor,
        e0: torch.Tensor,
        context: torch.Tensor,
        layout: TokenLayout,
    ) -> list[torch.Tensor]:
        """Run the context stack; one hint ``[B, S, dim]`` per VACE block (all before the main stack)."""
        c = self.embed_vace(tokens, vace_context, layout)
        return self.run_vace_blocks(c, tokens, e0, context, layout)

    def embed_vace(
        self, tokens: torch.Tensor, vace_context: torch.Tensor, layout: TokenLayout
    ) -> torch.Tensor:
        """``vace_context`` ``[B, vace_in_dim, F, H, W]`` -> context tokens fp32 shaped like the
        embedded ``tokens`` ``[B, S, dim]``: one per video token, zero tokens up to ``seq_len``."""
        cfg = self.config
        want = (
            tokens.shape[0],
            cfg.vace_in_dim,
            *(g * p for g, p in zip(layout.grid, cfg.patch_size)),
        )
        if vace_context.ndim != 5 or tuple(vace_context.shape) != want:
            raise ValueError(
                f"expected vace_context of shape {list(want)} (batch, vace_in_dim, and the latent "
                f"frames/height/width of x), got {list(vace_context.shape)}"
            )
        w = self.vace_patch_embedding.weight
        c = self.vace_patch_embedding(vace_context.to(w.dtype))  # [B, dim, f, h, w]
        c = c.flatten(2).transpose(1, 2).float()  # [B, f*h*w, dim]
        return F.pad(c, (0, 0, 0, tokens.shape[1] - c.shape[1]))

    def run_vace_blocks(
        self,
        c: torch.Tensor,
        tokens: torch.Tensor,
        e0: torch.Tensor,
        context: torch.Tensor,
        layout: TokenLayout,
    ) -> list[torch.Tensor]:
        """The context stack on context tokens ``c`` aligned row for row with ``tokens`` (the whole
        sequence, or one shard of both with the layout of that shard)."""
        hints = []
        for block in self.vace_blocks:
            c, hint = block(c, tokens, e0, context, layout)
            hints.append(hint)
        return hints

    def run_blocks(
        self,
        x: torch.Tensor,
        e0: torch.Tensor,
        context: torch.Tensor,
        layout: TokenLayout,
        *,
        hints: list[torch.Tensor] | None = None,
        context_scale: float = 1.0,
    ) -> torch.Tensor:
        if hints is None or len(hints) != len(self.vace_blocks):
            raise ValueError("the blocks of a VACE model need one hint per VACE block (vace_hints)")
        for i, block in enumerate(self.blocks):
            x = block(x, e0, context, layout)
            n = self.hint_index.get(i)
            if n is not None:
                x = x + hints[n] * context_scale
        return x

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
        """Velocity ``[B, out_dim, F, H, W]`` (fp32); ``vace_context`` ``[B, vace_in_dim, F, H, W]``."""
        tokens, e, e0, ctx, layout = self.embed(x, t, context, seq_len=seq_len)
        hints = self.vace_hints(tokens, vace_context, e0, ctx, layout)
        tokens = self.run_blocks(
            tokens, e0, ctx, layout, hints=hints, context_scale=vace_context_scale
        )
        out = self.head(tokens, e)  # [B, S, prod(patch) * out_dim] fp32
        return self.unpatchify(out, layout.grid)
