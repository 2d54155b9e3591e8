"""Wan-S2V diffusion transformer (speech-to-video, WAN_SPEC §7.7) on top of the Wan DiT.

The S2V model is the Wan DiT (same blocks, head, embeddings; ``models/dit.py``) plus:

- ``casual_audio_encoder`` (sic, official key): a learned mix of the 25 Wav2Vec2 hidden states
  and causal 1-D convs that turn audio frames into, per latent frame, 5 local tokens
  (4 + a learned padding token) and 1 global vector;
- ``audio_injector``: after a set of blocks, the noisy tokens of each latent frame cross-attend to
  that frame's audio tokens (segment-wise attention), after an AdaLN driven by the global vector;
- reference-image tokens (RoPE time position 30) and FramePack motion tokens (``frame_packer``:
  the last 19 motion latents compressed 1x/2x/4x, at negative RoPE time positions);
- ``cond_encoder`` (pose latents added to the noisy tokens), ``trainable_cond_mask`` (token type
  embedding: 0 noisy, 1 reference, 2 motion), and a zero-timestep modulation for the
  reference/motion tokens (two-segment modulation, ``TokenLayout.split``).

Attribute paths are the official state-dict keys, so official weights load with ``strict=True``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from openwan.configs.s2v import (
    FRAMEPACK_BUCKETS,
    NUM_AUDIO_LAYERS,
    REF_FRAME_POSITION,
    S2VConfig,
)
from openwan.models.dit import TokenLayout, WanCrossAttention, WanModel
from openwan.ops.rope import rope_angles, rope_angles_at, rope_cos_sin

MOTION_FRAMES = (73, 19)  # pixel / latent motion frames of the official pipeline
# FramePack's 4x bucket patches (4, 8, 8) latents: the latent height and width are multiples of this
FRAMEPACK_LATENT_MULTIPLE = 8


@dataclass
class S2VLayout(TokenLayout):
    """TokenLayout plus the per-latent-frame audio tokens the injectors attend to.

    ``split`` (inherited) is the number of noisy video tokens: they come first, take the
    timestep-t modulation and are the only tokens the audio is injected into.
    """

    audio_local: torch.Tensor | None = None  # [B, T, num_audio_token + 1, dim]
    audio_global: torch.Tensor | None = None  # [B, T, 1, dim]
    # index of the block input's first row among the noisy tokens: 0 for the whole sequence; a
    # runtime that hands the blocks a window of it (context parallelism) sets where it starts
    video_offset: int = 0


def _layer_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), eps=eps)


# ----------------------------------------------------------------------------- audio encoder
class CausalConv1d(nn.Module):
    """Conv1d with ``kernel - 1`` frames of left REPLICATE padding (causal in time)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.pad = kernel - 1
        self.conv = nn.Conv1d(cin, cout, kernel, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (self.pad, 0), mode="replicate"))


class AudioMotionEncoder(nn.Module):
    """Audio frames ``[B, T, C]`` -> global ``[B, T', 1, dim]``, local ``[B, T', n+1, dim]``.

    Two stride-2 causal convs give T' = ceil(ceil(T/2)/2). The local branch splits its first conv
    into ``num_tokens`` streams; both branches share conv2/conv3 (official).
    """

    def __init__(self, in_dim: int, dim: int, num_tokens: int) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.conv1_local = CausalConv1d(in_dim, dim // 4 * num_tokens)
        self.conv1_global = CausalConv1d(in_dim, dim // 4)
        self.conv2 = CausalConv1d(dim // 4, dim // 2, stride=2)
        self.conv3 = CausalConv1d(dim // 2, dim, stride=2)
        self.final_linear = nn.Linear(dim, dim)
        self.padding_tokens = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, T]`` after conv1 -> ``[N, T', dim]``: (LN, SiLU, conv) x2, LN, SiLU."""
        x = F.silu(_layer_norm(x.transpose(1, 2), 1e-6))  # [N, T, C]
        x = F.silu(_layer_norm(self.conv2(x.transpose(1, 2)).transpose(1, 2), 1e-6))
        return F.silu(_layer_norm(self.conv3(x.transpose(1, 2)).transpose(1, 2), 1e-6))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = x.shape[0]
        xc = x.transpose(1, 2)  # [B, C, T]
        local = self.conv1_local(xc).unflatten(1, (self.num_tokens, -1))  # [B, n, C', T]
        local = self._trunk(local.flatten(0, 1))  # [B*n, T', dim]
        local = local.unflatten(0, (b, self.num_tokens)).transpose(1, 2)  # [B, T', n, dim]
        pad = self.padding_tokens.to(local.dtype).expand(b, local.shape[1], 1, -1)
        local = torch.cat([local, pad], dim=2)  # [B, T', n+1, dim]
        glob = self.final_linear(self._trunk(self.conv1_global(xc)))  # [B, T', dim]
        return glob.unsqueeze(2), local


class CausalAudioEncoder(nn.Module):
    """Learned mix of the 25 Wav2Vec2 layers, then :class:`AudioMotionEncoder` (fp32 island)."""

    def __init__(self, audio_dim: int, dim: int, num_tokens: int) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.full((1, NUM_AUDIO_LAYERS, 1, 1), 0.01))
        self.encoder = AudioMotionEncoder(audio_dim, dim, num_tokens)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features ``[B, 25, audio_dim, T]`` -> (global ``[B, T', 1, dim]``, local)."""
        if features.ndim != 4 or features.shape[1] != NUM_AUDIO_LAYERS:
            raise ValueError(
                f"audio features must be [B, {NUM_AUDIO_LAYERS}, C, T] (all Wav2Vec2 hidden "
                f"states), got {tuple(features.shape)}"
            )
        # normalised SiLU weights, not a softmax (official)
        w = F.silu(self.weights.float())
        mixed = ((features.float() * w) / w.sum(dim=1, keepdim=True)).sum(dim=1)  # [B, C, T]
        wdt = self.encoder.conv2.conv.weight.dtype
        return self.encoder(mixed.transpose(1, 2).to(wdt))  # [B, T, C] in


# ----------------------------------------------------------------------------- injector
class AudioAdaLN(nn.Module):
    """diffusers ``AdaLayerNorm(chunk_dim=1)``: LN (eps 1e-5, no affine), SHIFT then SCALE."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, 2 * dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x ``[N, L, dim]``, cond ``[N, dim]``."""
        w = self.linear.weight
        shift, scale = self.linear(F.silu(cond).to(w.dtype)).float().chunk(2, dim=-1)  # [N, dim]
        # fp32 island (autocast runs layer_norm in fp32 in the official model)
        return _layer_norm(x.float(), 1e-5) * (1 + scale[:, None]) + shift[:, None]


class AudioInjector(nn.Module):
    def __init__(self, dim: int, num_heads: int, count: int, eps: float) -> None:
        super().__init__()
        self.injector = nn.ModuleList(
            WanCrossAttention(dim, num_heads, qk_norm=True, eps=eps) for _ in range(count)
        )
        self.injector_adain_layers = nn.ModuleList(AudioAdaLN(dim) for _ in range(count))

    def forward(self, index: int, x: torch.Tensor, layout: S2VLayout) -> torch.Tensor:
        """Add injector ``index``'s output to the noisy tokens of x ``[B, L, dim]``.

        Segment-wise attention: the tokens of latent frame t attend only to the audio tokens of
        frame t (frames are folded into the batch). x may be a window of the sequence that starts
        or ends mid-frame (``layout.video_offset``): its partial frames are zero-padded to whole
        ones and the padding rows dropped again; rows are independent (a per-row norm, per-query
        attention), so the real rows are unchanged by it.
        """
        local, glob, n = layout.audio_local, layout.audio_global, layout.split
        assert local is not None and glob is not None and n is not None
        if n == 0:  # a window without noisy tokens
            return x
        b, hw = x.shape[0], layout.grid[1] * layout.grid[2]
        lead, first = layout.video_offset % hw, layout.video_offset // hw
        frames = -(-(lead + n) // hw)  # the latent frames the window touches
        h = F.pad(x[:, :n], (0, 0, lead, frames * hw - lead - n))  # [B, frames*hw, dim]
        h = h.reshape(b * frames, hw, x.shape[-1])  # [B*frames, h*w, dim]
        h = self.injector_adain_layers[index](
            h, glob[:, first : first + frames].flatten(0, 1)[:, 0]
        )
        audio = local[:, first : first + frames].flatten(0, 1)  # [B*frames, n_audio, dim]
        out = self.injector[index](h, audio, audio.shape[1]).float()  # [B*frames, h*w, dim]
        out = out.reshape(b, frames * hw, -1)[:, lead : lead + n]  # [B, n, dim]
        return torch.cat([x[:, :n] + out, x[:, n:]], dim=1)


# ----------------------------------------------------------------------------- FramePack
def _spread(start: int, stop: int, n: int) -> torch.Tensor:
    """``int(linspace(start, stop, n))`` with numpy's rounding (what the official positions use)."""
    return torch.from_numpy(np.linspace(start, stop, n).astype(np.int64))


class FramePack(nn.Module):
    """The last 19 motion latents as tokens: newest frame 1x, next 2 frames 2x, oldest 16 4x.

    Compression is by patch size: (1,2,2), (2,4,4) and (4,8,8) convs, so latent H and W must be
    multiples of 8. Token order newest, 2x, 4x.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv3d(16, dim, kernel_size=(1, 2, 2), stride=(1, 2, 2))
        self.proj_2x = nn.Conv3d(16, dim, kernel_size=(2, 4, 4), stride=(2, 4, 4))
        self.proj_4x = nn.Conv3d(16, dim, kernel_size=(4, 8, 8), stride=(4, 8, 8))

    def forward(self, motion: torch.Tensor, add_last_motion: int = 2) -> torch.Tensor:
        """motion ``[B, 16, T_m, H, W]`` (any T_m) -> tokens ``[B, n, dim]``.

        ``add_last_motion`` 2 uses all buckets; 1 zeroes the newest frame, 0 the newest three
        ("padd" mode: the tokens stay, their content is zero).
        """
        b, c, tm, lat_h, lat_w = motion.shape
        m = FRAMEPACK_LATENT_MULTIPLE
        if lat_h % m or lat_w % m:
            raise ValueError(
                f"S2V latent height/width must be multiples of {m} (FramePack 4x patches), got "
                f"{lat_h}x{lat_w}: use pixel sizes divisible by {m}x the VAE stride (64 for the Wan2.1 VAE)"
            )
        total = sum(FRAMEPACK_BUCKETS)
        buf = motion.new_zeros(b, c, total, lat_h, lat_w)
        keep = min(total, tm)
        if keep:
            buf[:, :, total - keep :] = motion[:, :, tm - keep :]  # right-aligned
        if add_last_motion < 2:
            buf[:, :, total - sum(FRAMEPACK_BUCKETS[: 2 - add_last_motion]) :] = 0
        oldest, middle, newest = buf.split(list(FRAMEPACK_BUCKETS[::-1]), dim=2)  # 16, 2, 1
        wdt = self.proj.weight.dtype
        parts = [
            conv(part.to(wdt)).flatten(2).transpose(1, 2)  # [B, tokens, dim]
            for conv, part in ((self.proj, newest), (self.proj_2x, middle), (self.proj_4x, oldest))
        ]
        return torch.cat(parts, dim=1)

    @staticmethod
    def rope_angles(lat_h: int, lat_w: int, head_dim: int) -> torch.Tensor:
        """RoPE angles ``[n, head_dim/2]`` of the motion tokens, in token order.

        Bucket j covers the time positions just before the clip (newest at -1); its compressed
        frames sit at spread (truncated linspace) positions, spatially spread over the full
        1x token grid ``(lat_h/2, lat_w/2)``.
        """
        gh, gw = lat_h // 2, lat_w // 2
        parts = []
        end = 0
        for bucket, factor in zip(FRAMEPACK_BUCKETS, (1, 2, 4)):
            start = end + bucket  # this bucket spans time positions -start .. -(end+1)
            times = -_spread(start, end + 1, bucket // factor)
            hs, ws = _spread(0, gh - 1, gh // factor), _spread(0, gw - 1, gw // factor)
            parts.append(rope_angles_at((times, hs, ws), head_dim))
            end = start
        return torch.cat(parts)


# ----------------------------------------------------------------------------- model
class WanModelS2V(WanModel):
    def __init__(self, config: S2VConfig) -> None:
        super().__init__(config.dit)
        self.s2v_config = config
        d = config.dit
        self.cond_encoder = nn.Conv3d(
            config.cond_dim, d.dim, kernel_size=d.patch_size, stride=d.patch_size
        )
        self.casual_audio_encoder = CausalAudioEncoder(
            config.audio_dim, d.dim, config.num_audio_token
        )
        count, self.injected = config.injector_map()
        self.audio_injector = AudioInjector(d.dim, d.num_heads, count, d.eps)
        self.trainable_cond_mask = nn.Embedding(3, d.dim)
        self.frame_packer = FramePack(d.dim)

    # -- audio -----------------------------------------------------------------------------
    def encode_audio(
        self,
        audio: torch.Tensor,
        motion_frames: tuple[int, int] = MOTION_FRAMES,
        audio_context: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One clip's features ``[B, 25, C, A]`` -> (local ``[B, T, 5, dim]``, global ``[B, T, 1, dim]``).

        The first audio frame is repeated for the ``motion_frames[0]`` pixel frames of motion
        history (official), the encoder downsamples 4x in time, and the ``motion_frames[1]``
        outputs that belong to the history are dropped, leaving one audio frame per latent frame.
        ``audio_context`` ``[B, 25, C, K]`` (openwan, ``S2VConfig.audio_context``): the K audio
        frames just before the clip take the last K places of that history instead, the first of
        them repeated over the rest, so the causal encoder sees the speech that leads into it.
        """
        n_hist = motion_frames[0]
        if audio_context is None or audio_context.shape[-1] == 0:
            history = audio[..., :1].expand(*audio.shape[:-1], n_hist)
        else:
            lead = audio_context[..., -n_hist:].to(audio.dtype)
            fill = lead[..., :1].expand(*lead.shape[:-1], n_hist - lead.shape[-1])
            history = torch.cat([fill, lead], dim=-1)
        glob, local = self.casual_audio_encoder(torch.cat([history, audio], dim=-1))
        return local[:, motion_frames[1] :], glob[:, motion_frames[1] :]

    # -- stage 1: inputs -> tokens ---------------------------------------------------------
    def embed_s2v(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor | list[torch.Tensor],
        *,
        ref_latents: torch.Tensor,
        motion_latents: torch.Tensor,
        cond_states: torch.Tensor,
        audio_input: torch.Tensor,
        motion_frames: tuple[int, int] = MOTION_FRAMES,
        add_last_motion: int = 2,
        drop_motion_frames: bool = False,
        audio_context: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, S2VLayout]:
        """Returns (tokens fp32 [B, S, dim], e [B, 1, dim], e0 [B, 2, 6, dim], context, layout)."""
        cfg = self.config
        b = x.shape[0]
        if x.ndim != 5 or x.shape[1] != cfg.in_dim:
            raise ValueError(
                f"expected x of shape [B, {cfg.in_dim}, F, H, W], got {tuple(x.shape)}"
            )
        spatial = tuple(x.shape[3:])
        for name, lat in (("ref_latents", ref_latents), ("motion_latents", motion_latents)):
            if lat.ndim != 5 or lat.shape[0] != b or tuple(lat.shape[3:]) != spatial:
                raise ValueError(
                    f"{name} must be [{b}, 16, T, {spatial[0]}, {spatial[1]}], got {tuple(lat.shape)}"
                )
        if cond_states.shape[:1] + cond_states.shape[2:] != x.shape[:1] + x.shape[2:]:
            raise ValueError(
                f"cond_states {tuple(cond_states.shape)} must match x {tuple(x.shape)} except channels"
            )
        wdt = self.patch_embedding.weight.dtype
        noisy = self.patch_embedding(x.to(wdt)) + self.cond_encoder(cond_states.to(wdt))
        grid = (noisy.shape[2], noisy.shape[3], noisy.shape[4])
        audio_local, audio_global = self.encode_audio(audio_input, motion_frames, audio_context)
        if audio_local.shape[1] != grid[0]:
            raise ValueError(
                f"audio_input has {audio_input.shape[-1]} frames for {grid[0]} latent frames; "
                f"pass 4 per latent frame ({4 * grid[0]})"
            )
        ref = self.patch_embedding(ref_latents.to(wdt)).flatten(2).transpose(1, 2)  # [B, hw, dim]
        parts = [noisy.flatten(2).transpose(1, 2), ref]  # [B, f*h*w, dim], [B, h*w, dim]
        head_dim = cfg.head_dim
        dev = x.device
        ref_pos = (
            torch.tensor([REF_FRAME_POSITION], device=dev),
            torch.arange(grid[1], device=dev),
            torch.arange(grid[2], device=dev),
        )
        angles = [rope_angles(grid, head_dim, device=dev), rope_angles_at(ref_pos, head_dim)]
        if not drop_motion_frames:
            add_last = int(self.s2v_config.add_last_motion) * add_last_motion
            parts.append(self.frame_packer(motion_latents, add_last))
            lat_h, lat_w = spatial
            angles.append(FramePack.rope_angles(lat_h, lat_w, head_dim).to(dev))
        sizes = [p.shape[1] for p in parts]
        kinds = torch.repeat_interleave(
            torch.arange(len(parts), device=dev), torch.tensor(sizes, device=dev)
        )
        tokens = torch.cat(parts, dim=1).float() + self.trainable_cond_mask(kinds).float()

        # zero timestep for the reference/motion tokens: a second modulation row (fp32 island)
        e, e0 = self.time_embed(t, b, 1)
        _, e0_zero = self.time_embed(torch.zeros(1, device=dev), b, 1)
        e0 = torch.cat([e0, e0_zero], dim=1)  # [B, 2, 6, dim]
        ctx = self.embed_context(context, None)
        cos, sin = rope_cos_sin(torch.cat(angles))
        layout = S2VLayout(
            grid=grid,
            k_lens=None,
            cos=cos,
            sin=sin,
            split=sizes[0],
            audio_local=audio_local,
            audio_global=audio_global,
        )
        return tokens, e, e0, ctx, layout

    # -- stage 2: the blocks, with audio injection -------------------------------------------
    def run_blocks(
        self, x: torch.Tensor, e0: torch.Tensor, context: torch.Tensor, layout: TokenLayout
    ) -> torch.Tensor:
        if not isinstance(layout, S2VLayout):
            raise TypeError("WanModelS2V.run_blocks needs the S2VLayout made by embed_s2v")
        for i, block in enumerate(self.blocks):
            x = block(x, e0, context, layout)
            if i in self.injected:
                x = self.audio_injector(self.injected[i], x, layout)
        return x

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor | list[torch.Tensor],
        *,
        ref_latents: torch.Tensor,
        motion_latents: torch.Tensor,
        cond_states: torch.Tensor,
        audio_input: torch.Tensor,
        motion_frames: tuple[int, int] = MOTION_FRAMES,
        add_last_motion: int = 2,
        drop_motion_frames: bool = False,
        audio_context: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Velocity ``[B, 16, T, H, W]`` for one clip.

        x ``[B, 16, T, H, W]`` noisy latents; t ``[B]``; ref_latents ``[B, 16, 1, H, W]``;
        motion_latents ``[B, 16, T_m, H, W]`` (the last <= 19 are used); cond_states (pose
        latents, zeros without pose) like x; audio_input ``[B, 25, C, 4T]``;
        ``drop_motion_frames`` (first clip) leaves out the motion tokens; ``audio_context``
        ``[B, 25, C, K]``: the audio just before the clip (see :meth:`encode_audio`).
        """
        tokens, e, e0, ctx, layout = self.embed_s2v(
            x,
            t,
            context,
            ref_latents=ref_latents,
            motion_latents=motion_latents,
            cond_states=cond_states,
            audio_input=audio_input,
            motion_frames=motion_frames,
            add_last_motion=add_last_motion,
            drop_motion_frames=drop_motion_frames,
            audio_context=audio_context,
        )
        tokens = self.run_blocks(tokens, e0, ctx, layout)
        n = layout.split
        out = self.head(tokens[:, :n], e)  # [B, N, prod(patch) * out_dim] fp32
        return self.unpatchify(out, layout.grid)
