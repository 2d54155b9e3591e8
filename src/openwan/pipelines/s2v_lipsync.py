"""Lip-sync editing with Wan-S2V: an existing video + new audio -> the same video, with the
masked region (the mouth) re-generated to follow the new audio.

Method. The Wan-S2V paper presents precise lip-sync editing as an application of the S2V model
but gives no procedure to follow, so this is our choice: the S2V model as trained, with no
extra weights, run clip by clip like generation:

- The source video is resampled to 16 fps and fitted to the S2V size rule; each clip of
  ``infer_frames`` frames is encoded together with its 73-frame motion history, so its latent
  sits exactly where the decoder will put the re-generated clip.
- Each clip is sampled with the new audio's features as the condition (its window starting 3
  frames after the clip's first frame: ``AUDIO_LEAD``, S2V's clip layout) and the reference image
  (default: the first source frame) as identity, starting from the source latent noised to the
  step where ``strength`` of the schedule is left (SDEdit). Outside the mask the velocity is the
  one whose clean prediction is the source (:class:`~openwan.pipelines.s2v_clip.ClipEdit`), so
  those latents end as the source's and the mask is filled in their context.
- The decoded clip is composited onto the source frames with the pixel mask, so pixels outside
  the mask are the source's exactly. The motion history of the next clip is the edited video.

The mask is an image (white = re-generate) used for every frame, or a video with one mask per
frame (taken at 16 fps like the source; it must cover the edited frames). Without one the whole
frame is re-generated from the noised source (strength 0.6 by default: motion and layout are
kept).

Like generation, each finished clip's latent is stored in ``<output>.parts/`` (with a stamp of
the request: settings, model, and the contents of the audio, video, mask and reference), so a
rerun of an interrupted edit resumes after the last finished clip.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from openwan.io.audio import SPEECH_RATE, read_audio, save_video_with_audio
from openwan.io.video import read_video
from openwan.models.audio import bucket_features, clip_audio_context, clip_features
from openwan.models.s2v import MOTION_FRAMES
from openwan.pipelines import stages
from openwan.pipelines.image_cond import fit_image, load_image
from openwan.pipelines.request import RequestError
from openwan.pipelines.s2v import (
    S2V_FPS,
    S2V_NEGATIVE_PROMPT,
    S2VRequest,
    WanS2V,
    file_digests,
    size_within_area,
)
from openwan.pipelines.s2v_clip import ClipConditions, ClipEdit

log = logging.getLogger(__name__)

STRENGTH_MASKED, STRENGTH_WHOLE_FRAME = 1.0, 0.6
# S2V's clip layout, as generation runs it and the model learned it: a clip's latent frame j
# decodes to the 4 frames that end at the clip's audio frame 4j (generation's 3 pre-roll frames
# come before the audio), so decoded frame i shows the mouth of audio frame i - 3. An edited
# clip is the source's frames from its own first one: its audio window starts 3 frames later,
# or every edited mouth would lag its audio by 3 frames (measured on s2v-tiny: the best lag was
# 3 frames, correlation 0.59 there against -0.26 in step).
AUDIO_LEAD = 3


@dataclass(frozen=True)
class LipSyncRequest:
    """``settings`` carries the prompt, the new audio, the size and the sampling settings (its
    ``image`` is unused); ``reference`` is the identity image (None: the first source frame)."""

    settings: S2VRequest
    video: str | Path
    mask: str | Path | None = None
    reference: str | Path | None = None
    strength: float | None = None  # None: 1.0 with a mask, 0.6 without

    def validated(self) -> LipSyncRequest:
        s = self.strength
        if s is not None and not 0 < s <= 1:
            raise RequestError(f"strength must be in (0, 1], got {s}")
        if s is None:
            s = STRENGTH_MASKED if self.mask is not None else STRENGTH_WHOLE_FRAME
        return dataclasses.replace(self, settings=self.settings.validated(), strength=s)


def lipsync_request(
    prompt: str,
    audio: str | Path,
    video: str | Path,
    *,
    mask: str | Path | None = None,
    image: str | Path | None = None,
    strength: float | None = None,
    **settings: object,
) -> LipSyncRequest:
    """The request with S2V settings as keywords (``steps=``, ``max_area=``, ``seed=``, ...)."""
    s2v = S2VRequest(prompt, audio, video, **settings)  # type: ignore[arg-type]
    return LipSyncRequest(s2v, video, mask, image, strength)


VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")


def _at_s2v_rate(path: str | Path) -> np.ndarray:
    """A video's frames resampled to 16 fps (every k-th frame), uint8 ``[N, H, W, 3]``."""
    video, fps = read_video(path)
    if len(video) == 0:
        raise RequestError(f"{path} has no frames")
    return video[:: max(1, round(fps / S2V_FPS))]


def _source_frames(
    path: str | Path, max_area: int, divisor: int
) -> tuple[torch.Tensor, tuple[int, int]]:
    """The source video at 16 fps, fitted to the S2V size (multiples of ``divisor``, the
    pipeline's :attr:`WanS2V.size_divisor`): ``[3, N, H, W]`` in [-1, 1]."""
    from PIL import Image

    video = _at_s2v_rate(path)
    height, width = size_within_area(video.shape[1], video.shape[2], max_area, divisor)
    frames = [fit_image(Image.fromarray(f), (width, height))[:, 0] for f in video]
    return torch.stack(frames, dim=1), (height, width)


def _mask(path: str | Path | None, size: tuple[int, int], frames: int) -> torch.Tensor:
    """Pixel mask ``[1, 1, N, H, W]``, 1 = re-generate (white): an image gives one mask for every
    frame (N = 1), a video one per source frame (N = ``frames``, at 16 fps like the source)."""
    height, width = size
    if path is None:
        return torch.ones(1, 1, 1, height, width)
    from PIL import Image

    if Path(path).suffix.lower() in VIDEO_SUFFIXES:
        video = _at_s2v_rate(path)
        if len(video) < frames:
            raise RequestError(
                f"the mask video {path} has {len(video)} frames at 16 fps, the edit needs {frames}"
            )
        images = [Image.fromarray(f) for f in video[:frames]]
    else:
        images = [load_image(path)]
    planes = [
        np.asarray(im.convert("L").resize((width, height), Image.Resampling.NEAREST)) > 127
        for im in images
    ]
    mask = torch.from_numpy(np.stack(planes)).float()[None, None]
    if not mask.any():
        raise RequestError(f"the mask {path} has no white pixels: nothing to re-generate")
    return mask


def _fingerprint(pipe: WanS2V, req: LipSyncRequest, wave: np.ndarray) -> dict[str, object]:
    """What the stored clips of a lip-sync run depend on (see ``S2VRequest.fingerprint``)."""
    # the settings' image slot is unused by the edit: it carries the source video, so the
    # settings fingerprint hashes the video once (``image_sha1``)
    settings = dataclasses.replace(req.settings, image=req.video)
    d = {"task": "s2v-lipsync", **settings.fingerprint(wave, pipe.resume_key)}
    d["strength"] = req.strength
    for key in ("mask", "reference"):
        path = getattr(req, key)
        d[key] = None if path is None else str(path)
    return d | file_digests(req, ("mask", "reference"))


def lipsync(
    pipe: WanS2V,
    request: LipSyncRequest,
    output: str | Path,
    *,
    callback: stages.StepCallback | None = None,
    on_clip: stages.StepCallback | None = None,
) -> Path:
    """Write ``output`` (.mp4): the source video with the masked region following the new audio,
    trimmed to the shorter of the video and the audio, the new audio muxed in."""
    req = request.validated()
    s = req.settings
    assert req.strength is not None
    output = Path(output)
    if output.suffix.lower() != ".mp4":
        raise RequestError(f"the output must end in .mp4, got {output.name}")
    wave = read_audio(s.audio)
    bucket, available = bucket_features(pipe.audio_encoder.features(wave).cpu(), s.infer_frames)
    # each clip's audio window starts AUDIO_LEAD frames after its first frame (silence past the end)
    bucket = torch.cat([bucket, bucket.new_zeros(AUDIO_LEAD, *bucket.shape[1:])])[AUDIO_LEAD:]
    source, (height, width) = _source_frames(req.video, s.max_area, pipe.size_divisor)
    frames = min(source.shape[1], max(1, round(wave.shape[0] / SPEECH_RATE * S2V_FPS)))
    n = s.infer_frames
    clips = min(available, math.ceil(frames / n))
    if s.num_clip is not None:
        clips = min(clips, s.num_clip)
    short = clips * n - source.shape[1]
    if short > 0:  # the last clip runs past the video: hold its last frame
        source = torch.cat([source, source[:, -1:].expand(-1, short, -1, -1)], dim=1)
    if req.reference is None:
        ref_pixels = source[:, :1].unsqueeze(0)  # [1, 3, 1, H, W]
    else:
        ref_pixels = fit_image(load_image(req.reference), (width, height)).unsqueeze(0)
    ref_latents = pipe._encode(ref_pixels)
    mask = _mask(req.mask, (height, width), frames)  # [1, 1, 1 or frames, H, W]
    if mask.shape[2] > 1 and short > 0:  # past the video's end: hold its last mask too
        mask = torch.cat([mask, mask[:, :, -1:].expand(-1, -1, short, -1, -1)], dim=2)
    t_lat, lat_h, lat_w = pipe.latent_grid(n, height, width)
    context, context_null = stages.encode_prompts(
        pipe.text_encoder,
        [s.prompt, s.negative_prompt or S2V_NEGATIVE_PROMPT],
        pipe.device,
        offload=pipe.offload_model,
    )
    parts = pipe.parts_factory(
        output.with_name(output.name + ".parts"), _fingerprint(pipe, req, wave)
    )
    history = torch.zeros(1, 3, MOTION_FRAMES[0], height, width)  # mid-grey, as generation
    videos = []
    for r in range(clips):
        src = source[:, r * n : (r + 1) * n].unsqueeze(0)  # [1, 3, n, H, W]
        m = mask if mask.shape[2] == 1 else mask[:, :, r * n : (r + 1) * n]  # [1, 1, 1|n, H, W]
        both = pipe._encode(torch.cat([history, src], dim=2))  # causal: history latents first
        motion_latents = both[:, :, :-t_lat]
        latent = parts.load(r)
        if latent is None:
            # a latent is kept when no masked pixel falls in its cell (the VAE's stride: 4 x 8 x 8
            # pixels for the official VAE, 4 x 4 x 4 for s2v-tiny's) in any of its frames
            pooled = F.max_pool3d(m.expand(-1, -1, n, -1, -1), pipe.vae.config.stride)[0]
            edit = ClipEdit(source=both[0, :, -t_lat:], keep=pooled == 0, strength=req.strength)
            cond = ClipConditions(
                ref_latents=ref_latents.to(pipe.device),
                motion_latents=motion_latents.to(pipe.device),
                cond_states=torch.zeros(1, 16, t_lat, lat_h, lat_w, device=pipe.device),
                audio=clip_features(bucket, r, n).to(pipe.device),
                drop_motion_frames=r == 0,
                audio_context=clip_audio_context(bucket, r, n, pipe.audio_context, pipe.device),
            )
            noise = stages.initial_noise((16, t_lat, lat_h, lat_w), s.seed + r, pipe.device)
            latent = pipe._sample(noise, cond, context, context_null, s, callback, edit)
            parts.save(r, latent)
        else:
            log.info("clip %d/%d: reusing %s", r + 1, clips, parts.path(r))
        clip = pipe._decode(torch.cat([motion_latents, latent.unsqueeze(0).cpu()], dim=2))
        clip = m * clip[:, :, -n:] + (1 - m) * src  # outside the mask: the source pixels
        videos.append(clip[0])
        history = torch.cat([history, clip], dim=2)[:, :, -MOTION_FRAMES[0] :]
        if on_clip is not None:
            on_clip(r, clips)
    video = torch.cat(videos, dim=1)[:, :frames]  # [3, F, H, W]
    meta = {
        "task": "s2v-lipsync",
        "prompt": s.prompt,
        "seed": s.seed,
        "strength": req.strength,
        "video": str(req.video),
        "audio": str(s.audio),
    }
    if parts.writes:
        save_video_with_audio(video, output, wave, fps=S2V_FPS, metadata=meta)
    parts.remove()
    return output
