"""Wan-S2V speech-to-video: reference image + speech + prompt -> a talking video of any length.

Clip by clip (WAN_SPEC §7.7): the audio features are cut into clips of ``infer_frames`` video
frames; each clip is sampled conditioned on the reference latent, the FramePack-compressed motion
latents of the last 73 generated frames (none on the first clip) and that clip's audio, then
decoded and appended. The video is trimmed to the audio length and the audio muxed in (AAC).

Resumable: every finished clip's latent is written to ``<output>.parts/`` (with the request it
belongs to) before the next starts. A rerun of the same request replays the finished clips (VAE
decode + motion re-encode, deterministic) and continues with the first missing one; the parts
folder is removed once the mp4 is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import random
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from openwan.checkpoint.io import atomic_path
from openwan.io.audio import SPEECH_RATE, read_audio, save_video_with_audio
from openwan.io.video import read_video
from openwan.models.audio import (
    Wav2Vec2Features,
    bucket_features,
    clip_audio_context,
    clip_features,
)
from openwan.models.s2v import FRAMEPACK_LATENT_MULTIPLE, MOTION_FRAMES, WanModelS2V
from openwan.pipelines import stages
from openwan.pipelines.image_cond import fit_image, load_image
from openwan.pipelines.request import RequestError
from openwan.pipelines.s2v_clip import (
    S2V_GUIDE,
    S2V_SHIFT,
    S2V_STEPS,
    ClipConditions,
    ClipEdit,
    sample_clip,
)
from openwan.sampling.solvers import SOLVERS

log = logging.getLogger(__name__)

S2V_FPS = 16
S2V_NEGATIVE_PROMPT = (
    "画面模糊，最差质量，画面模糊，细节模糊不清，情绪激动剧烈，手快速抖动，字幕，丑陋的，残缺的，"
    "多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，"
    "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
WAV2VEC_DIR = "wav2vec2-large-xlsr-53-english"


DEFAULTS_FILE = "defaults.json"  # the size and clip length an S2V folder was trained at


@dataclass(frozen=True)
class FolderDefaults:
    """What an S2V folder proposes for what the caller leaves out (written by ``openwan
    train-s2v --ship``; an official folder has none of it): ``reference.png`` (a default
    character), ``prompt.txt`` (its caption) and ``defaults.json`` (``size`` as [width, height],
    ``infer_frames``)."""

    image: Path | None = None
    prompt: str | None = None
    size: tuple[int, int] | None = None
    infer_frames: int | None = None


def folder_defaults(folder: str | Path) -> FolderDefaults:
    """Read :class:`FolderDefaults` from an S2V folder (missing files: ``None``)."""
    folder = Path(folder)
    image = folder / "reference.png"
    caption = folder / "prompt.txt"
    prompt = caption.read_text(encoding="utf-8").strip() if caption.is_file() else None
    size = frames = None
    path = folder / DEFAULTS_FILE
    if path.is_file():
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            width, height = (int(v) for v in raw["size"])
            frames = int(raw["infer_frames"])
        except (ValueError, KeyError, TypeError) as e:
            raise RequestError(
                f"{path} is not a valid defaults file ({e}); expected "
                '{"size": [width, height], "infer_frames": n}'
            ) from None
        size = (width, height)
    return FolderDefaults(image if image.is_file() else None, prompt or None, size, frames)


def write_folder_defaults(
    folder: str | Path, reference: np.ndarray, prompt: str, size: tuple[int, int], infer_frames: int
) -> None:
    """Write the files :func:`folder_defaults` reads (``reference``: uint8 ``[H, W, 3]``)."""
    from PIL import Image

    folder = Path(folder)
    with atomic_path(folder / "reference.png") as tmp:
        Image.fromarray(reference).save(tmp, format="PNG")
    with atomic_path(folder / "prompt.txt") as tmp:
        tmp.write_text(prompt + "\n", encoding="utf-8")
    with atomic_path(folder / DEFAULTS_FILE) as tmp:
        record = {"size": list(size), "infer_frames": infer_frames}
        tmp.write_text(json.dumps(record) + "\n", encoding="utf-8")


class AudioFeatures(Protocol):
    """What the pipeline needs of the audio encoder (:class:`Wav2Vec2Features`)."""

    def features(self, wave: np.ndarray) -> torch.Tensor: ...


ClipCallback = Callable[[int, int], None]  # (finished clip index, number of clips)


@dataclass(frozen=True)
class S2VRequest:
    prompt: str
    audio: str | Path
    image: str | Path
    negative_prompt: str | None = None  # None/"" -> the official S2V negative prompt
    pose_video: str | Path | None = None
    max_area: int = 1280 * 720
    infer_frames: int = 80  # video frames per clip (4n)
    num_clip: int | None = None  # None -> as many clips as the audio needs
    steps: int = S2V_STEPS
    shift: float = S2V_SHIFT
    guide_scale: float = S2V_GUIDE
    solver: str = "unipc"
    seed: int = -1
    start_from_ref: bool = False  # official --start_from_ref: motion history = the reference

    def validated(self) -> S2VRequest:
        if not self.prompt.strip():
            raise RequestError(
                "the prompt is empty; describe the video, e.g. --prompt 'a woman singing'"
            )
        if self.infer_frames < 4 or self.infer_frames % 4:
            raise RequestError(
                f"infer_frames must be a positive multiple of 4, got {self.infer_frames}"
            )
        if self.num_clip is not None and self.num_clip < 1:
            raise RequestError(f"num_clip must be >= 1, got {self.num_clip}")
        if self.steps < 1 or self.shift <= 0:
            raise RequestError(f"need steps >= 1 and shift > 0, got {self.steps}, {self.shift}")
        if self.solver not in SOLVERS:
            raise RequestError(
                f"unknown solver {self.solver!r}; choose one of {', '.join(SOLVERS)}"
            )
        if self.max_area < 64 * 64:
            raise RequestError(f"max_area {self.max_area} is below one 64x64 tile")
        seed = self.seed if self.seed >= 0 else random.randint(0, sys.maxsize)
        return dataclasses.replace(self, seed=seed)

    def fingerprint(self, audio: np.ndarray, model: str = "") -> dict[str, Any]:
        """What the stored clips depend on: the settings, the decoded audio, the contents of the
        image and pose files, and the model (``model``: its checkpoint path)."""
        d = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}
        d.pop("num_clip")  # more or fewer clips reuse the same finished ones
        d["audio_sha1"] = hashlib.sha1(audio.tobytes()).hexdigest()
        d |= file_digests(self, ("image", "pose_video"))
        d["model"] = model
        return d


def file_digests(obj: object, keys: tuple[str, ...]) -> dict[str, str]:
    """``{key}_sha1`` of the contents of each file named by ``obj.<key>`` (absent ones skipped)."""
    out = {}
    for key in keys:
        path = getattr(obj, key)
        if path is not None and Path(path).is_file():
            out[f"{key}_sha1"] = hashlib.sha1(Path(path).read_bytes()).hexdigest()
    return out


def size_within_area(height: int, width: int, area: int, divisor: int = 64) -> tuple[int, int]:
    """Official S2V output size: the largest scale of (height, width), sides rounded UP to a
    multiple of ``divisor``, whose area fits ``area`` (100 scales scanned), else an aspect-ratio
    fallback. Returns (height, width)."""
    if height * width <= area:
        lo, hi = 0.1, 1.0
    else:
        d = divisor - 1
        b, a, c = d * (height + width), height * width, d**2 - area
        lo = (-b + math.sqrt(b**2 - 2 * a * c)) / (2 * a)  # scale at worst-case padding
        hi = math.sqrt(area / (height * width))
    for i in range(100):
        scale = hi - (hi - lo) * i / 100
        h = int(height * scale) + (-int(height * scale)) % divisor
        w = int(width * scale) + (-int(width * scale)) % divisor
        if h * w <= area:
            return h, w
    ratio = width / height
    tw = int((area * ratio) ** 0.5 // divisor * divisor)
    th = int((area / ratio) ** 0.5 // divisor * divisor)
    if tw >= width or th >= height:
        tw, th = int(width // divisor * divisor), int(height // divisor * divisor)
    return th, tw


class WanS2V:
    """Speech-to-video pipeline.

    >>> pipe = WanS2V.from_pretrained("./Wan2.2-S2V-14B")                          # doctest: +SKIP
    >>> pipe.generate(S2VRequest("a woman singing", "song.wav", "singer.png"), "out.mp4")  # doctest: +SKIP
    """

    def __init__(
        self,
        dit: WanModelS2V,
        vae: nn.Module,
        text_encoder: nn.Module,
        audio_encoder: AudioFeatures,
        *,
        device: str | torch.device = "cpu",
        offload_model: bool = False,
    ) -> None:
        self.dit = dit.eval()
        self.vae = vae.eval()
        self.text_encoder = text_encoder.eval()
        self.audio_encoder = audio_encoder
        # audio frames a later clip reads from before its start (0: the official layout)
        self.audio_context = dit.s2v_config.audio_context
        self.device = torch.device(device)
        self.model_id = ""  # the checkpoint folder, when loaded from one (resume fingerprint)
        # the store of finished clips; a multi-process run (runtime/parallel/session.py) swaps in
        # one where rank 0 alone reads and writes files and the other ranks get its answers
        self.parts_factory: Callable[[Path, dict[str, Any]], ClipParts] = ClipParts
        # official --offload_model: the DiT is on the device only while it samples a clip, the
        # text encoder only while it encodes (the VAE, small, stays); on the CPU nothing moves
        self.offload_model = offload_model
        self.dit.to("cpu" if offload_model else self.device)
        self.vae.to(self.device)

    @property
    def resume_key(self) -> str:
        """What identifies the model in a resume folder's fingerprint: ``model_id``, plus each
        runtime option that changes the clips it makes: the diffusion cache around the DiT, the
        quantization of its linears and the tiling of the VAE's decode (which also feeds the next
        clip's motion history). Read by duck typing, so the pipeline needs no runtime import."""
        dit = getattr(self.dit, "denoiser", self.dit)  # inside a runtime.offload.BlockOffload
        spec = getattr(dit, "spec", None)  # runtime.cache.CachedDiT
        model = getattr(dit, "model", dit)
        quant = getattr(model, "quant_mode", None)  # set by runtime.quant.apply_quant
        tile = getattr(self.vae, "tile", None)  # runtime.vae_tiling.TiledVAE
        parts = [self.model_id]
        parts += [f"cache:{spec.describe()}"] if spec is not None else []
        parts += [f"quant:{quant}"] if quant is not None else []
        parts += [f"vae-tiles:{tile}/{self.vae.overlap}"] if tile is not None else []
        return "|".join(parts)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        offload_model: bool = False,
    ) -> WanS2V:
        """An official ``Wan2.2-S2V-14B`` folder: DiT (``WanModel_S2V``) at the root,
        ``Wan2.1_VAE.pth``, umT5, ``wav2vec2-large-xlsr-53-english/``. An ``openwan train-s2v``
        export (the embedded ``s2v-tiny``) has ``vae/`` (diffusers layout) instead of the .pth,
        and may name the folder holding its text encoder in ``text.json`` (``{"text": "../"}``,
        relative to the root) instead of holding one."""
        from openwan.checkpoint.io import CheckpointError
        from openwan.checkpoint.s2v_format import load_s2v_dit
        from openwan.checkpoint.vae_format import load_vae
        from openwan.models.text import T5TextEncoder

        root = Path(path)
        vae_path = root / "Wan2.1_VAE.pth"
        if not vae_path.exists() and (root / "vae").is_dir():
            vae_path = root / "vae"
        for need in (root / "config.json", vae_path, root / WAV2VEC_DIR):
            if not need.exists():
                raise CheckpointError(f"{need} not found; is {root} a Wan2.2-S2V checkpoint?")
        text_root = root
        if (root / "text.json").is_file():
            text_root = root / json.loads((root / "text.json").read_text(encoding="utf-8"))["text"]
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if dtype is None:
            dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
        dit = load_s2v_dit(root, dtype=dtype, device=torch.device("cpu") if offload_model else dev)
        vae = load_vae(vae_path, dtype=torch.float32, device=dev)
        text = T5TextEncoder.from_pretrained(
            text_root, dtype=torch.bfloat16 if dev.type == "cuda" else torch.float32
        )
        audio = Wav2Vec2Features.from_folder(root / WAV2VEC_DIR)  # fp32 on the CPU (official)
        pipe = cls(dit, vae, text, audio, device=dev, offload_model=offload_model)
        pipe.model_id = f"{root.resolve()}:{dtype}"
        return pipe

    # ------------------------------------------------------------ geometry
    @property
    def size_divisor(self) -> int:
        """Output sizes are multiples of this: the latent grid must be a multiple of FramePack's
        patch (8 latents: 64 px with the Wan2.1 VAE's stride 8)."""
        return FRAMEPACK_LATENT_MULTIPLE * max(self.vae.config.stride[1:])

    def latent_grid(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """Latent (T, H, W) of ``frames`` new frames at ``height`` x ``width`` pixels."""
        st, sh, sw = self.vae.config.stride
        return frames // st, height // sh, width // sw

    # ------------------------------------------------------------ stages
    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels ``[1, 3, 4n+1, H, W]`` in [-1, 1] -> normalised latents ``[1, 16, n+1, h, w]``."""
        param = next(self.vae.parameters())
        with torch.no_grad():
            return self.vae.encode(pixels.to(param.device, param.dtype)).float()

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        param = next(self.vae.parameters())
        with torch.no_grad():
            return self.vae.decode(latents.to(param.device, param.dtype)).float()

    def _pose_latents(
        self, path: str | Path, size: tuple[int, int], clips: int, frames: int
    ) -> list[torch.Tensor]:
        """Pose video -> per clip ``[1, 16, frames/4, h, w]`` (official: sampled at 16 fps from the
        start, padded with -1 frames, each clip's first frame prepended, latent 0 dropped)."""
        from PIL import Image

        video, fps = read_video(path)
        stride = max(1, round(fps / S2V_FPS))
        height, width = size
        picked = [
            fit_image(Image.fromarray(f), (width, height))[:, 0] for f in video[::stride]
        ]  # each [3, H, W]
        need = clips * frames
        if len(picked) < need:
            log.info(
                "pose video covers %d of %d frames; padding with blank pose", len(picked), need
            )
        pose = torch.full((3, need, height, width), -1.0)
        n = min(need, len(picked))
        pose[:, :n] = torch.stack(picked[:n], dim=1)
        out = []
        for r in range(clips):
            part = pose[:, r * frames : (r + 1) * frames]
            part = torch.cat([part[:, :1], part], dim=1).unsqueeze(0)  # [1, 3, frames+1, H, W]
            out.append(self._encode(part)[:, :, 1:])
        return out

    # ------------------------------------------------------------ running
    def generate(
        self,
        request: S2VRequest,
        output: str | Path,
        *,
        callback: stages.StepCallback | None = None,
        on_clip: ClipCallback | None = None,
    ) -> Path:
        """Generate ``output`` (.mp4 with the audio); resumes from ``<output>.parts/`` if present."""
        req = request.validated()
        output = Path(output)
        if output.suffix.lower() != ".mp4":
            raise RequestError(f"S2V output must end in .mp4, got {output.name}")
        wave = read_audio(req.audio)
        feats = self.audio_encoder.features(wave).cpu()  # [25, T30, C]
        bucket, available = bucket_features(feats, req.infer_frames, S2V_FPS)
        clips = available if req.num_clip is None else min(req.num_clip, available)
        image = load_image(req.image)
        div = self.size_divisor
        height, width = size_within_area(image.height, image.width, req.max_area, div)
        if height < div or width < div:
            raise RequestError(
                f"the reference image ({image.width}x{image.height}) is too elongated for an "
                f"area of {req.max_area} px; crop it closer to the output aspect"
            )
        ref_pixels = fit_image(image, (width, height)).unsqueeze(0)  # [1, 3, 1, H, W]
        ref_latents = self._encode(ref_pixels)
        history = torch.zeros(1, 3, MOTION_FRAMES[0], height, width)  # mid-grey frames
        drop_first = not req.start_from_ref
        if req.start_from_ref:
            history[:, :, -6:] = ref_pixels
        motion_latents = self._encode(history)
        t_lat, lat_h, lat_w = self.latent_grid(req.infer_frames, height, width)
        poses = (
            self._pose_latents(req.pose_video, (height, width), clips, req.infer_frames)
            if req.pose_video is not None
            else None
        )
        context, context_null = stages.encode_prompts(
            self.text_encoder,
            [req.prompt, req.negative_prompt or S2V_NEGATIVE_PROMPT],
            self.device,
            offload=self.offload_model,
        )
        parts = self.parts_factory(
            output.with_name(output.name + ".parts"), req.fingerprint(wave, self.resume_key)
        )
        videos = []
        for r in range(clips):
            first = drop_first and r == 0
            latent = parts.load(r)
            if latent is None:
                cond = ClipConditions(
                    ref_latents=ref_latents.to(self.device),
                    motion_latents=motion_latents.to(self.device),
                    cond_states=(
                        poses[r] if poses is not None else torch.zeros(1, 16, t_lat, lat_h, lat_w)
                    ).to(self.device),
                    audio=clip_features(bucket, r, req.infer_frames).to(self.device),
                    drop_motion_frames=first,
                    audio_context=clip_audio_context(
                        bucket, r, req.infer_frames, self.audio_context, self.device
                    ),
                )
                noise = stages.initial_noise((16, t_lat, lat_h, lat_w), req.seed + r, self.device)
                latent = self._sample(noise, cond, context, context_null, req, callback)
                parts.save(r, latent)
            else:
                log.info("clip %d/%d: reusing %s", r + 1, clips, parts.path(r))
            prefix = ref_latents if first else motion_latents
            clip = self._decode(torch.cat([prefix, latent.unsqueeze(0).cpu()], dim=2))
            clip = clip[:, :, -req.infer_frames :]
            if first:
                clip = clip[:, :, 3:]  # the first clip starts from the reference frame
            videos.append(clip[0].cpu())
            if r + 1 < clips:  # roll the 73-frame history and re-encode it for the next clip
                keep = min(MOTION_FRAMES[0], clip.shape[2])
                history = torch.cat([history[:, :, keep:], clip[:, :, -keep:]], dim=2)
                motion_latents = self._encode(history)
            if on_clip is not None:
                on_clip(r, clips)
        video = torch.cat(videos, dim=1)  # [3, F, H, W]
        frames = min(video.shape[1], max(1, round(wave.shape[0] / SPEECH_RATE * S2V_FPS)))
        meta = {"task": "s2v", **parts.fingerprint, "clips": clips}
        if parts.writes:
            save_video_with_audio(video[:, :frames], output, wave, fps=S2V_FPS, metadata=meta)
        parts.remove()
        return output

    def _sample(
        self,
        noise: torch.Tensor,
        cond: ClipConditions,
        context: torch.Tensor,
        context_null: torch.Tensor,
        req: S2VRequest,
        callback: stages.StepCallback | None,
        edit: ClipEdit | None = None,
    ) -> torch.Tensor:
        stages.ensure_on(self.dit, self.device)
        try:
            return sample_clip(
                self.dit,
                noise,
                cond,
                context,
                context_null,
                steps=req.steps,
                shift=req.shift,
                guide_scale=req.guide_scale,
                solver=req.solver,
                callback=callback,
                edit=edit,
            )
        finally:
            if self.offload_model:  # the decode and the next clip's history need the room
                self.dit.to("cpu")
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()


class ClipParts:
    """Finished clip latents of one request, in ``<output>.parts/`` (atomic writes)."""

    writes = True  # this process writes the output files (a multi-process run: rank 0 only)

    def __init__(self, folder: Path, fingerprint: dict[str, Any]) -> None:
        self.folder = folder
        self.fingerprint = fingerprint
        stamp = folder / "request.json"
        if folder.is_dir() and stamp.is_file():
            stored = json.loads(stamp.read_text(encoding="utf-8"))
            if stored != fingerprint:
                raise RequestError(
                    f"{folder} holds clips of a different request; delete it or choose another "
                    "output file"
                )

    def path(self, r: int) -> Path:
        return self.folder / f"clip_{r:04d}.safetensors"

    def load(self, r: int) -> torch.Tensor | None:
        p = self.path(r)
        return load_file(str(p))["latent"] if p.is_file() else None

    def save(self, r: int, latent: torch.Tensor) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = self.folder / "request.json"
        if not stamp.is_file():
            with atomic_path(stamp) as tmp:
                tmp.write_text(json.dumps(self.fingerprint), encoding="utf-8")
        with atomic_path(self.path(r)) as tmp:
            save_file({"latent": latent.detach().float().cpu().contiguous()}, str(tmp))

    def remove(self) -> None:
        if self.folder.is_dir():
            shutil.rmtree(self.folder)
