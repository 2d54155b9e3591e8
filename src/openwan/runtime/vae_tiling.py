"""Tiled spatial VAE decode with blended seams, on top of the VAE's causal temporal chunking.

The latent is cut into overlapping spatial tiles; each tile is decoded by the VAE's own
``decode`` (which streams the frames through a :class:`~openwan.models.vae.CausalCache`), so
peak memory follows the tile, not the frame. Tiles are blended with linear ramps across their
overlaps (weights normalised per pixel), which hides the seams left by the decoder's zero
padding and per-tile attention. One tile covering the latent gives the untiled result exactly.

``apply_vae_tiling(vae)`` returns a VAE whose ``decode`` tiles; everything else is the VAE's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def tile_spans(n: int, tile: int, overlap: int) -> tuple[int, list[int]]:
    """The tile length and start offsets that cover ``n`` with tiles of at most ``tile``.

    The fewest tiles that fit are used, each shrunk to the shortest length that still covers
    ``n`` with at least ``overlap`` in common between neighbours, and spread evenly: at 480P
    (60 latent rows, tile 32, overlap 8) three rows of 26 instead of 32 + 32 + 32 rows, two of
    them nearly on top of each other, cut the decode's work by a fifth.
    """
    if n <= tile:
        return n, [0]
    count = -(-(n - overlap) // (tile - overlap))  # fewest tiles
    size = max(-(-(n + (count - 1) * overlap) // count), 2 * overlap + 1)  # <= tile
    return size, [i * (n - size) // (count - 1) for i in range(count)]


def _ramp(length: int, start: int, end: int, total: int, overlap: int) -> torch.Tensor:
    """Blend weights along one axis of a tile covering pixels [start, end) of ``total``."""
    w = torch.ones(length, dtype=torch.float64)
    ramp = (torch.arange(overlap, dtype=torch.float64) + 0.5) / overlap  # never 0: no 0/0
    if start > 0:
        w[:overlap] = ramp
    if end < total:
        w[length - overlap :] = ramp.flip(0)
    return w


def _check(tile: int, overlap: int) -> None:
    if overlap < 1 or 2 * overlap >= tile:
        raise ValueError(
            f"VAE tiles need 1 <= overlap < tile / 2, got tile {tile}, overlap {overlap}"
        )


def tiled_decode(vae: nn.Module, z: torch.Tensor, tile: int = 32, overlap: int = 8) -> torch.Tensor:
    """Decode latent ``z`` ``[B, C, T, h, w]`` in spatial tiles of ``tile`` latent pixels."""
    _check(tile, overlap)
    h, w = z.shape[-2:]
    (th, ys), (tw, xs) = tile_spans(h, tile, overlap), tile_spans(w, tile, overlap)
    out = weight = torch.empty(0)
    for k, (y0, x0) in enumerate((y, x) for y in ys for x in xs):
        piece = vae.decode(z[..., y0 : y0 + th, x0 : x0 + tw], clamp=False)
        s = piece.shape[-1] // tw  # pixels per latent pixel
        if k == 0:
            size = (*piece.shape[:-2], h * s, w * s)
            out = torch.zeros(size, dtype=piece.dtype, device=piece.device)
            weight = torch.zeros((h * s, w * s), dtype=piece.dtype, device=piece.device)
        wy = _ramp(th * s, y0 * s, (y0 + th) * s, h * s, overlap * s)
        wx = _ramp(tw * s, x0 * s, (x0 + tw) * s, w * s, overlap * s)
        mask = (wy[:, None] * wx[None, :]).to(piece)  # [th*s, tw*s]
        rows, cols = slice(y0 * s, (y0 + th) * s), slice(x0 * s, (x0 + tw) * s)
        out[..., rows, cols] += piece * mask
        weight[rows, cols] += mask
    return (out / weight).clamp(-1, 1)


class TiledVAE(nn.Module):
    """A VAE whose ``decode`` runs in blended spatial tiles; ``remove()`` gives the VAE back."""

    def __init__(self, vae: nn.Module, tile: int, overlap: int) -> None:
        super().__init__()
        self.vae, self.config, self.tile, self.overlap = vae, vae.config, tile, overlap

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(video)

    def decode(self, z: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        if kwargs:
            raise ValueError("tiled decode always returns the clamped, normalised-input video")
        return tiled_decode(self.vae, z, self.tile, self.overlap)

    def remove(self) -> nn.Module:
        return self.vae


def apply_vae_tiling(vae: nn.Module, tile: int = 32, overlap: int = 8) -> TiledVAE:
    """Tile ``vae``'s decode (``tile`` / ``overlap`` in latent pixels; 32 = 256 px at stride 8)."""
    _check(tile, overlap)
    return TiledVAE(vae, tile, overlap)
