"""Audio files through PyAV: reading speech for S2V and muxing it into the output mp4.

Reading (:func:`read_audio`): any container/codec FFmpeg decodes (wav, mp3, m4a/aac, flac, ogg);
several channels are averaged to mono (as librosa's ``mono=True`` in the official code), any
sample rate >= 8 kHz is resampled to 16 kHz (FFmpeg's resampler; the official code uses soxr, so
16 kHz input is the bit-exact case). Silent, too short, unreadable or audio-less files are errors.

Writing (:func:`save_video_with_audio`): H.264 video plus AAC audio (192 kb/s, as the official
ffmpeg call), the audio trimmed or zero-padded to exactly the video's duration so the two streams
end together; written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from openwan.checkpoint.io import atomic_path
from openwan.io.video import MediaError, add_h264_stream, mp4_frames, mux_h264

SPEECH_RATE = 16000
MIN_SOURCE_RATE = 8000
MIN_SECONDS = 0.1
SILENCE_PEAK = 1e-4  # |sample| below this everywhere: nothing to lip-sync to


class AudioError(MediaError):
    """Audio input that cannot drive a speech-to-video generation."""


def read_audio(path: str | Path, rate: int = SPEECH_RATE) -> np.ndarray:
    """Decode ``path`` to mono float32 samples at ``rate`` Hz (see the module notes)."""
    import av

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    chunks: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioError(f"{path} has no audio stream")
            stream = container.streams.audio[0]
            source_rate = stream.codec_context.sample_rate or stream.rate
            if not source_rate or source_rate < MIN_SOURCE_RATE:
                raise AudioError(
                    f"{path}: sample rate {source_rate} Hz is not supported (need >= "
                    f"{MIN_SOURCE_RATE} Hz; 16 kHz or more is best for speech)"
                )
            to_mono_float = av.AudioResampler(format="fltp", layout=None, rate=source_rate)
            to_rate = av.AudioResampler(format="flt", layout="mono", rate=rate)
            for frame in container.decode(stream):
                for planar in to_mono_float.resample(frame):
                    chunks.extend(_resample(to_rate, _average_channels(planar)))
            chunks.extend(_resample(to_rate, None))
    except av.error.FFmpegError as e:
        raise AudioError(f"cannot decode audio {path}: {e}") from None
    wave = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if wave.shape[0] < MIN_SECONDS * rate:
        raise AudioError(
            f"{path}: {wave.shape[0] / rate:.3f} s of audio is too short (need >= {MIN_SECONDS} s)"
        )
    if float(np.abs(wave).max()) < SILENCE_PEAK:
        raise AudioError(
            f"{path} is silent (peak below {SILENCE_PEAK}); nothing to drive the video"
        )
    return wave.astype(np.float32)


def _average_channels(frame: Any) -> Any:
    """A planar float frame -> a mono frame of the channel mean (librosa's mono=True)."""
    import av

    planes = frame.to_ndarray()  # [channels, n]
    mono = planes.mean(axis=0, keepdims=True).astype(np.float32)
    out = av.AudioFrame.from_ndarray(mono, format="fltp", layout="mono")
    out.sample_rate = frame.sample_rate
    out.pts = None
    return out


def _resample(resampler: Any, frame: Any) -> list[np.ndarray]:
    return [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]


def save_video_with_audio(
    video: torch.Tensor | np.ndarray,
    path: str | Path,
    audio: np.ndarray,
    *,
    fps: int = 16,
    audio_rate: int = SPEECH_RATE,
    crf: int = 18,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write H.264 + AAC mp4 atomically; ``audio`` (mono float) is fitted to the video length."""
    import av

    frames, path = mp4_frames(video, path)
    n_audio = round(frames.shape[0] / fps * audio_rate)
    track = np.zeros(n_audio, np.float32)
    track[: min(n_audio, audio.shape[0])] = audio[:n_audio]
    try:
        with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format="mp4") as container:
            vstream = add_h264_stream(container, frames, fps, crf, metadata)
            astream = container.add_stream("aac", rate=audio_rate)
            astream.layout = "mono"
            astream.bit_rate = 192_000
            mux_h264(container, vstream, frames)
            block = 1024  # AAC frame size
            for start in range(0, n_audio, block):
                chunk = track[start : start + block][None]  # [1, n]
                aframe = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                aframe.sample_rate = audio_rate
                aframe.pts = start
                container.mux(astream.encode(aframe))
            container.mux(astream.encode())
    except OSError as e:
        raise MediaError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def stream_durations(path: str | Path) -> tuple[float, float]:
    """(video seconds, audio seconds) of an mp4 as the container declares them (what players use;
    decoding AAC also yields the encoder's priming samples, which the edit list hides)."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.video or not container.streams.audio:
            raise MediaError(f"{path} lacks a video or an audio stream")
        v, a = container.streams.video[0], container.streams.audio[0]
        if v.duration is None or a.duration is None:
            raise MediaError(f"{path} does not declare its stream durations")
        return float(v.duration * v.time_base), float(a.duration * a.time_base)
