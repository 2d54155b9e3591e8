"""``openwan train-s2v``: flow-matching training of a Wan-S2V DiT on the talking-shapes world.

Each training sample is one clip exactly as :class:`openwan.pipelines.s2v.WanS2V` generates it:

- **clip 0** (no motion history): the latents that follow the reference latent, i.e. the clip
  ``[ref, f(-3), f(-2), f(-1), f(0), ..., f(12)]`` encoded, its first latent dropped. The
  pipeline decodes ``[ref_latents, z]`` and drops the first 3 decoded frames (official), so these
  3 pre-roll frames (the reference face, mouth closed, before the audio starts) land in the part
  it drops, and output frame k shows the mouth of audio frame k: the A/V sync is exact.
- **clip r >= 1**: the 16 frames from ``16 r - 3`` (the pipeline has output ``16 r - 3`` frames
  by then), encoded after the 73-frame motion history the pipeline holds at that point: mid-grey
  frames (zeros) where nothing was generated yet, then the video so far. The history's 19
  latents are the motion latents and the next 4 the target, exactly what the causal VAE gives
  the pipeline (``encode(history)`` is a prefix of ``encode(history + clip)``).

The audio input is the clip's slice of the pipeline's own audio features (Wav2Vec2 hidden
states at 30 fps, one per video frame: ``models/audio.py``) of the whole item's audio. The
Wav2Vec2 is a tiny 24-layer model with random, frozen weights (shipped with the DiT): its
hidden states keep the loudness envelope linearly readable (r = 0.79 per frame on held-out
items) and the learned layer mix and the causal audio encoder of the DiT do the rest. The
unconditional branch of S2V's CFG (the negative prompt with zero audio) is trained on a
``uncond_prob`` share of the samples. With ``audio_context`` K > 0 each sample also carries the K
audio frames before its clip (``audio_ctx``; clip 0: its first frame repeated), which the model
reads in place of the official repeated first frame (``S2VConfig.audio_context``).

Everything random is drawn from (seed, step) like the other trainers, so ``--resume`` is
bit-exact.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from openwan.checkpoint.io import (
    CheckpointError,
    atomic_path,
    find_weights,
    load_state_dict,
    pack_int8,
    save_state_dict,
)
from openwan.configs.dit import DiTConfig
from openwan.configs.s2v import S2VConfig
from openwan.data.shapes import to_tensor
from openwan.data.talking import FPS, Face, TalkingWorld, face_caption, face_labels, render_face
from openwan.models.audio import (
    Wav2Vec2Features,
    bucket_features,
    clip_audio_context,
    clip_features,
)
from openwan.models.s2v import MOTION_FRAMES, WanModelS2V
from openwan.training import common

WAV2VEC_DIR = "wav2vec2-large-xlsr-53-english"  # the official S2V folder name
PRE_ROLL = 3  # decoded frames the pipeline drops from clip 0 (official)


@dataclass(frozen=True)
class S2VTrainConfig:
    run_dir: str = "runs/s2v"
    vae: str | None = None  # the VAE folder the latents come from (a face-trained one)
    text: str | None = None  # umT5 + tokenizer (frozen), diffusers layout; None: wan-tiny's
    items: int = 512  # talking-world items; each gives `clips` training samples
    clips: int = 3  # clip 0, 1, 2 of each item (clip 0 has no motion history)
    infer_frames: int = 16  # video frames per clip (4n)
    size: int = 64
    steps: int = 3000
    stop_at: int | None = None
    batch_size: int = 8
    lr: float = 3e-4
    warmup: int = 100
    weight_decay: float = 0.0
    ema_decay: float = 0.995
    shift: float = 3.0
    logit_mean: float = 0.0
    logit_std: float = 1.0
    uncond_prob: float = 0.1  # samples trained as CFG's unconditional branch
    # extra loss weight on the latent pixels the mouth covers in some frame of the item (the
    # mouth is ~1% of the frame: unweighted, the loss barely sees what the audio drives)
    mouth_weight: float = 0.0
    # exposure bias of clip-by-clip generation: at inference a clip's motion history is the
    # model's own output, whose mouth moves less than the ground truth's. ``history_gain``
    # (lo, hi): each item's history frames are rendered with its mouth opening scaled by a gain
    # drawn from U(lo, hi) (the target clip keeps the true opening), so the model learns to follow
    # the audio rather than carry the history's mouth forward; (1, 1): the true history.
    history_gain: tuple[float, float] = (1.0, 1.0)
    # Gaussian noise on the motion latents of each history row, std U(0, motion_noise) per row
    motion_noise: float = 0.0
    # S2VConfig.audio_context: audio frames a clip r >= 1 reads from before its start (0: the
    # official repeated first frame)
    audio_context: int = 0
    # an S2V folder (openwan train-s2v --export) whose DiT weights start the run (step 0, a fresh
    # optimizer); its architecture keys must match the ones below
    init: str | None = None
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 250
    # DiT
    dim: int = 64
    ffn_dim: int = 256
    num_heads: int = 2
    num_layers: int = 4
    text_len: int = 48
    audio_inject_layers: tuple[int, ...] = (0, 1, 2, 3)
    # Wav2Vec2 (random, frozen; 24 layers as S2V needs)
    w2v_hidden: int = 32
    w2v_conv: int = 32
    w2v_heads: int = 2
    w2v_ff: int = 64


def text_folder(cfg: S2VTrainConfig) -> Path:
    """The frozen text encoder's folder (default: the embedded wan-tiny's umT5)."""
    from openwan.assets import ASSETS_DIR

    return Path(cfg.text) if cfg.text else ASSETS_DIR / "wan-tiny"


def s2v_config(cfg: S2VTrainConfig, text_dim: int) -> S2VConfig:
    dit = DiTConfig(
        model_type="s2v",
        dim=cfg.dim,
        ffn_dim=cfg.ffn_dim,
        num_heads=cfg.num_heads,
        num_layers=cfg.num_layers,
        text_dim=text_dim,
        text_len=cfg.text_len,
    )
    return S2VConfig(
        dit=dit,
        audio_dim=cfg.w2v_hidden,
        audio_inject_layers=cfg.audio_inject_layers,
        audio_context=cfg.audio_context,
    )


def build_wav2vec(cfg: S2VTrainConfig) -> tuple[Wav2Vec2Features, nn.Module]:
    """The tiny random Wav2Vec2, seeded: (its features, the ``Wav2Vec2ForCTC`` to export: the
    official folder's class, CTC head included)."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

    config = Wav2Vec2Config(
        vocab_size=8,
        hidden_size=cfg.w2v_hidden,
        num_hidden_layers=24,
        num_attention_heads=cfg.w2v_heads,
        intermediate_size=cfg.w2v_ff,
        conv_dim=[cfg.w2v_conv] * 7,
        conv_bias=True,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    )
    torch.manual_seed(cfg.seed + 17)
    model = Wav2Vec2ForCTC(config)
    extractor = Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True
    )
    return Wav2Vec2Features(model, extractor), model


def training_world(cfg: S2VTrainConfig) -> TalkingWorld:
    """The talking world the samples come from: items long enough for ``clips`` clips (the last
    clip's new frames included)."""
    seconds = (cfg.clips * cfg.infer_frames) / FPS
    return TalkingWorld(seed=cfg.seed, seconds=seconds, size=cfg.size, split="train")


def item_samples(
    item: Any,
    clips: int,
    infer_frames: int,
    vae: nn.Module,
    audio: Wav2Vec2Features,
    history_gain: float = 1.0,
    context: int = 0,
) -> list[dict[str, torch.Tensor]]:
    """The ``clips`` training samples of one talking-world item (see the module docstring); the
    motion history of clips >= 1 shows the mouth opened ``history_gain`` times as wide."""
    size = item.video.shape[1]
    ref = to_tensor(render_face(item.face, np.zeros(1, np.float32), size))  # [3, 1, H, W]
    video = to_tensor(item.video)  # [3, F, H, W]
    history = video
    if history_gain != 1.0:
        history = to_tensor(render_face(item.face, item.opening * history_gain, size))
    bucket, available = bucket_features(audio.features(item.audio).cpu(), infer_frames, FPS)
    history_len = MOTION_FRAMES[0]
    out = []
    with torch.no_grad():
        ref_lat = vae.encode(ref.unsqueeze(0))[0]
        for r in sample_clips(clips, available, infer_frames, video.shape[1]):
            if r == 0:
                pixels = torch.cat(
                    [ref, ref.expand(-1, PRE_ROLL, -1, -1), video[:, : infer_frames - PRE_ROLL]], 1
                )
                lat = vae.encode(pixels.unsqueeze(0))[0]
                motion, z = torch.zeros_like(lat[:, :1]), lat[:, 1:]
            else:
                start = infer_frames * r - PRE_ROLL
                past = history[:, max(0, start - history_len) : start]
                grey = torch.zeros(3, history_len - past.shape[1], size, size)
                clip = video[:, start : start + infer_frames]
                lat = vae.encode(torch.cat([grey, past, clip], 1).unsqueeze(0))[0]
                n_hist = MOTION_FRAMES[1]
                motion, z = lat[:, :n_hist], lat[:, n_hist:]
            row = {
                "z": z.float(),
                "ref": ref_lat.float(),
                "motion": motion.float(),
                "audio": clip_features(bucket, r, infer_frames)[0],
                "first": torch.tensor(r == 0),
                "caption": torch.tensor(0),  # filled in by the caller
            }
            if context:
                row["audio_ctx"] = context_rows(bucket, r, infer_frames, context)
            out.append(row)
    return out


def sample_clips(clips: int, available: int, infer_frames: int, frames: int) -> range:
    """The clips r of an item of ``frames`` video frames that give training samples: the first
    ``clips`` the audio covers (``available``) whose frames lie inside the video (clip r >= 1
    runs from frame ``infer_frames * r - PRE_ROLL``; clip 0 always fits)."""
    return range(min(clips, available, max(1, (frames + PRE_ROLL) // infer_frames)))


def context_rows(bucket: torch.Tensor, clip: int, infer_frames: int, frames: int) -> torch.Tensor:
    """``[25, C, frames]``: the ``audio_context`` of clip ``clip`` at a fixed length, its first
    frame repeated in front where fewer came before (what the model's fill does anyway); for the
    first clip its own first audio frame repeated, which the model reads as no context."""
    ctx = clip_audio_context(bucket, clip, infer_frames, frames)
    lead = clip_features(bucket, clip, infer_frames)[0, ..., :1] if ctx is None else ctx[0]
    fill = lead[..., :1].expand(*lead.shape[:-1], frames - lead.shape[-1])
    return torch.cat([fill, lead], -1).contiguous()


def sample_cache(
    cfg: S2VTrainConfig, vae: nn.Module, audio: Wav2Vec2Features, run_dir: Path, show: bool
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """All samples, stacked, cached in ``run_dir/samples.safetensors`` (+ captions json)."""
    from safetensors.torch import load_file, save_file

    path, cap_path = run_dir / "samples.safetensors", run_dir / "captions.json"
    if path.is_file() and cap_path.is_file():
        samples = load_file(str(path))
        have = samples.pop("audio_ctx", None)
        if cfg.audio_context:
            fits = have is not None and have.shape[-1] == cfg.audio_context
            samples["audio_ctx"] = (
                have if fits else audio_context_cache(cfg, audio, samples["audio"])
            )
        return samples, json.loads(cap_path.read_text(encoding="utf-8"))
    world = training_world(cfg)
    captions: list[str] = []
    rows: list[dict[str, torch.Tensor]] = []
    bar = common.progress(cfg.items, 0, "encode clips", show)
    lo, hi = cfg.history_gain
    for i in range(cfg.items):
        item = world[i]
        text = face_caption(item.face)
        if text not in captions:
            captions.append(text)
        # its own generator per item: the other draws stay as they are; U(1, 1) gives 1.0
        gain = float(np.random.default_rng([cfg.seed, i, 7]).uniform(lo, hi))
        mouth = None
        for s in item_samples(
            item, cfg.clips, cfg.infer_frames, vae, audio, gain, cfg.audio_context
        ):
            s["caption"] = torch.tensor(captions.index(text))
            if mouth is None:  # the item's mouth region on the latent grid (loss weights)
                mouth = mouth_region(item, cfg.size // s["z"].shape[-1])
            s["mouth"] = mouth
            rows.append(s)
        bar.update(1)
    bar.close()
    # clip 0 has 1 motion latent (unused), the others 19: pad to one shape, keep the flag
    n_motion = MOTION_FRAMES[1]
    for s in rows:
        m = s["motion"]
        s["motion"] = F.pad(m, (0, 0, 0, 0, n_motion - m.shape[1], 0))
    samples = {k: torch.stack([s[k] for s in rows]).contiguous() for k in rows[0]}
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(samples, str(tmp))
    with atomic_path(cap_path) as tmp:
        tmp.write_text(json.dumps(captions, ensure_ascii=False), encoding="utf-8")
    return samples, captions


def audio_context_cache(
    cfg: S2VTrainConfig, audio: Wav2Vec2Features, cached_audio: torch.Tensor
) -> torch.Tensor:
    """The ``audio_ctx`` rows of a sample cache written without them (audio features only, no
    VAE work), in the cache's row order; each row's clip audio is checked against the cached one."""
    world = training_world(cfg)
    rows: list[torch.Tensor] = []
    for i in range(cfg.items):
        bucket, available = bucket_features(
            audio.features(world[i].audio).cpu(), cfg.infer_frames, FPS
        )
        for r in sample_clips(cfg.clips, available, cfg.infer_frames, world.frames):
            k = len(rows)
            if k >= len(cached_audio) or not torch.equal(
                clip_features(bucket, r, cfg.infer_frames)[0], cached_audio[k]
            ):
                raise CheckpointError(
                    "the sample cache does not match this config: delete it to encode again"
                )
            rows.append(context_rows(bucket, r, cfg.infer_frames, cfg.audio_context))
    if len(rows) != len(cached_audio):
        raise CheckpointError(
            "the sample cache does not match this config: delete it to encode again"
        )
    return torch.stack(rows)


def mouth_region(item: Any, stride: int) -> torch.Tensor:
    """``[h, w]`` float mask on the latent grid (``stride`` pixels a latent pixel): 1 where the
    item's mouth covers a pixel in any frame, grown by one latent pixel; 0 elsewhere."""
    union = np.zeros(item.video.shape[1:3], bool)
    for frame in item.video:
        union |= face_labels(frame, item.face) == 3
    mask = torch.from_numpy(union).float()[None, None]
    mask = F.max_pool2d(mask, stride)  # any mouth pixel inside the latent pixel
    return F.max_pool2d(mask, 3, stride=1, padding=1)[0, 0]


def mouth_weights(
    cfg: S2VTrainConfig, samples: dict[str, torch.Tensor], stride: int
) -> torch.Tensor:
    """Per-sample loss weights ``[N, 1, 1, h, w]``: ``1 + mouth_weight`` on the mouth region of
    the sample's item, 1 elsewhere (the samples of an item are consecutive, ``clips`` or fewer).
    The regions come from the sample cache; a cache written before it stored them has the items
    rendered again."""
    if "mouth" in samples:
        return 1.0 + cfg.mouth_weight * samples["mouth"][:, None, None]
    world = training_world(cfg)
    per_item = [mouth_region(world[i], stride) for i in range(cfg.items)]
    first = samples["first"].tolist()
    rows, item = [], -1
    for f in first:
        item += bool(f)  # every item's samples start with its clip 0
        rows.append(per_item[item])
    return 1.0 + cfg.mouth_weight * torch.stack(rows)[:, None, None]


@dataclass
class S2VTrainResult:
    cfg: S2VTrainConfig
    dit: WanModelS2V
    audio: Wav2Vec2Features
    wav2vec: nn.Module  # the Wav2Vec2ForCTC behind ``audio``


def s2v_loss(
    dit: WanModelS2V,
    samples: dict[str, torch.Tensor],
    idx: torch.Tensor,
    contexts: list[torch.Tensor],
    sigma: torch.Tensor,
    noise: torch.Tensor,
    uncond: torch.Tensor,
    weight: torch.Tensor | None = None,
    motion: torch.Tensor | None = None,
) -> torch.Tensor:
    """Flow-matching MSE over one batch (``weight``: per-row loss weights ``[B, 1, 1, h, w]``;
    ``motion``: the batch's motion latents, default the cached ones); clip-0 rows and later rows
    run as two forwards (the model drops the motion tokens per call)."""
    z = samples["z"][idx]
    motion = samples["motion"][idx] if motion is None else motion
    s = sigma.view(-1, 1, 1, 1, 1)
    xt = (1 - s) * z + s * noise
    keep = (~uncond).float().view(-1, 1, 1, 1)
    audio = samples["audio"][idx] * keep
    ctx = samples["audio_ctx"][idx] * keep if "audio_ctx" in samples else None
    first = samples["first"][idx]
    total = z.new_zeros(())
    for flag in (True, False):
        rows = torch.nonzero(first == flag).flatten()
        if rows.numel() == 0:
            continue
        v = dit(
            xt[rows],
            sigma[rows] * 1000,
            [contexts[int(i)] for i in rows],
            ref_latents=samples["ref"][idx][rows],
            motion_latents=motion[rows],
            cond_states=torch.zeros_like(z[rows]),
            audio_input=audio[rows],
            drop_motion_frames=flag,
            audio_context=None if ctx is None else ctx[rows],
        )
        err = (v.float() - (noise - z)[rows]) ** 2
        total = total + (err if weight is None else err * weight[rows]).sum()
    return total / z.numel()


def train_s2v(
    cfg: S2VTrainConfig, resume: str | None = None, show_progress: bool = True
) -> S2VTrainResult:
    from openwan.checkpoint.vae_format import load_vae
    from openwan.models.text import T5TextEncoder
    from openwan.pipelines.s2v import S2V_NEGATIVE_PROMPT

    if cfg.vae is None:
        raise ValueError("train-s2v needs the VAE folder to encode the clips with (--vae)")
    if cfg.infer_frames % 4 or cfg.infer_frames <= PRE_ROLL:
        raise ValueError(f"infer_frames must be a multiple of 4 above 3, got {cfg.infer_frames}")
    run_dir = Path(cfg.run_dir)
    vae = load_vae(cfg.vae).eval()  # a missing or corrupt folder raises CheckpointError
    text = T5TextEncoder.from_pretrained(text_folder(cfg), text_len=cfg.text_len).eval()
    audio, wav2vec = build_wav2vec(cfg)
    samples, captions = sample_cache(cfg, vae, audio, run_dir, show_progress)
    with torch.no_grad():
        ctx = text.encode([*captions, S2V_NEGATIVE_PROMPT])
    contexts, negative = [c.float() for c in ctx[:-1]], ctx[-1].float()
    torch.manual_seed(cfg.seed)
    dit = WanModelS2V(s2v_config(cfg, text.dim))
    if cfg.init is not None:
        _load_init(Path(cfg.init), dit)
    opt, ema = common.optimizer_and_ema(
        dit, lr=cfg.lr, weight_decay=cfg.weight_decay, ema_decay=cfg.ema_decay
    )
    start = common.restore(resume, run_dir, dit, opt, ema)
    metrics = common.MetricsLog(run_dir)
    bar = common.progress(cfg.steps, start, "train-s2v", show_progress)
    n = samples["z"].shape[0]
    stride = cfg.size // samples["z"].shape[-1]
    weights = mouth_weights(cfg, samples, stride) if cfg.mouth_weight > 0 else None
    t0 = time.perf_counter()
    dit.train()
    end = cfg.stop_at or cfg.steps
    for step in range(start, end):
        for group in opt.param_groups:
            group["lr"] = common.lr_at(step, cfg.lr, cfg.warmup, cfg.steps)
        gen = common.step_generator(cfg.seed, step)
        idx = torch.randint(0, n, (cfg.batch_size,), generator=gen)
        sigma = common.sample_sigmas(cfg, cfg.batch_size, gen)
        noise = torch.randn(samples["z"][idx].shape, generator=gen)
        uncond = torch.rand(cfg.batch_size, generator=gen) < cfg.uncond_prob
        row_ctx = [
            negative if u else contexts[int(samples["caption"][i])] for i, u in zip(idx, uncond)
        ]
        w = weights[idx] if weights is not None else None
        motion = None
        if cfg.motion_noise > 0:  # drawn last: runs without it keep their draws
            motion = samples["motion"][idx]
            std = torch.rand(cfg.batch_size, generator=gen) * cfg.motion_noise
            jitter = torch.randn(motion.shape, generator=gen)
            motion = motion + std.view(-1, 1, 1, 1, 1) * jitter
        loss = s2v_loss(dit, samples, idx, row_ctx, sigma, noise, uncond, w, motion)
        common.optimizer_step(dit, opt, ema, loss, bar)
        common.log_and_checkpoint(cfg, step, end, loss, t0, metrics, run_dir, dit, opt, ema)
    bar.close()
    ema.copy_to(dit)
    return S2VTrainResult(cfg, dit.eval(), audio, wav2vec)


def _load_init(folder: Path, dit: WanModelS2V) -> None:
    """``cfg.init``: the DiT weights of an exported S2V folder (cast to fp32) into ``dit``."""
    from openwan.checkpoint.s2v_format import load_s2v_dit

    if not (folder / "config.json").is_file():
        raise CheckpointError(f"init model {folder} has no config.json: give an S2V folder")
    src = load_s2v_dit(folder)
    # audio_context changes what the audio encoder reads, not the weights: either way round
    if src.s2v_config.replace(audio_context=dit.s2v_config.audio_context) != dit.s2v_config:
        raise CheckpointError(
            f"init model {folder} has another architecture than this config: {src.s2v_config} vs "
            f"{dit.s2v_config}"
        )
    dit.load_state_dict(src.state_dict(), strict=True)


def export_s2v(
    result: S2VTrainResult,
    out: Path,
    dtype: torch.dtype = torch.float32,
    pack_vae: bool = False,
) -> Path:
    """An S2V folder :meth:`WanS2V.from_pretrained` loads: the DiT at the root (official
    ``WanModel_S2V`` config.json + weights), ``vae/``, ``wav2vec2-large-xlsr-53-english/``. The
    text encoder stays where the config's ``text`` points (``text.json`` records it). ``dtype``
    casts the DiT's stored weights; ``pack_vae`` stores the VAE as int8 + per-channel scales
    (:func:`openwan.checkpoint.io.pack_int8`, fp32 again on load): the shipped model's budget."""
    from openwan.checkpoint.s2v_format import save_s2v_dit

    cfg = result.cfg
    if cfg.vae is None:
        raise CheckpointError("export needs the VAE folder the S2V DiT was trained with")
    out.mkdir(parents=True, exist_ok=True)
    dit = result.dit if dtype == torch.float32 else _cast_copy(result.dit, dtype)
    save_s2v_dit(dit, out)
    if (out / "vae").resolve() != Path(cfg.vae).resolve():
        shutil.copytree(cfg.vae, out / "vae", dirs_exist_ok=True)
    if pack_vae:
        weights = find_weights(out / "vae")
        packed = pack_int8(load_state_dict(weights))
        for w in weights:
            w.unlink()
        save_state_dict(packed, out / "vae" / "diffusion_pytorch_model.safetensors")
    text = os.path.relpath(text_folder(cfg).resolve(), out.resolve())
    with atomic_path(out / "text.json") as tmp:
        tmp.write_text(json.dumps({"text": text}) + "\n", encoding="utf-8")
    w2v = out / WAV2VEC_DIR
    result.wav2vec.save_pretrained(str(w2v))
    result.audio.extractor.save_pretrained(str(w2v))
    return out


# the default character of the shipped s2v-tiny (``--image``/``--prompt`` not given): a face the
# training world draws (colour, shape and background from its lists), mouth closed, centred
DEFAULT_FACE = Face(color="yellow", shape="circle", background="navy")


def write_default_character(out: Path, size: int, infer_frames: int) -> None:
    """``reference.png``, ``prompt.txt`` and ``defaults.json`` in an S2V folder: what the CLI
    uses when ``--image``, ``--prompt``, ``--size`` or ``--infer_frames`` is not given."""
    from openwan.pipelines.s2v import write_folder_defaults

    frame = render_face(DEFAULT_FACE, np.zeros(1, np.float32), size)[0]
    write_folder_defaults(out, frame, face_caption(DEFAULT_FACE), (size, size), infer_frames)


def ship_s2v(result: S2VTrainResult, out: Path) -> Path:
    """The folder that ships as ``wan-tiny/s2v``: fp16 DiT, int8-packed VAE, the default
    character."""
    export_s2v(result, out, dtype=torch.float16, pack_vae=True)
    write_default_character(out, result.cfg.size, result.cfg.infer_frames)
    return out


def _cast_copy(model: WanModelS2V, dtype: torch.dtype) -> WanModelS2V:
    import copy

    return copy.deepcopy(model).to(dtype)
