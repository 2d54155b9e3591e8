"""Wan-S2V audio front end: Wav2Vec2 hidden states at the video frame rate (WAN_SPEC §7.7).

16 kHz mono samples -> ``Wav2Vec2FeatureExtractor`` (zero-mean/unit-variance) -> Wav2Vec2
(``wav2vec2-large-xlsr-53-english`` in the official checkpoint) -> ALL 25 hidden states at 50 Hz
-> linear interpolation (align_corners) to 30 fps -> one feature per 16-fps video frame, grouped
into clips of ``infer_frames``. The learned mix of the 25 layers is part of the DiT
(``casual_audio_encoder.weights``, models/s2v.py), so it is applied there, not here.

transformers 5 records the stable-layer-norm models' 25th hidden state BEFORE the final encoder
LayerNorm (4.x, which the official code pins, records it after). The last state is therefore taken
from ``last_hidden_state`` (post-norm in every version), which reproduces 4.x exactly.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC, Wav2Vec2Model

SAMPLE_RATE = 16000
WAV2VEC_FPS = 50  # one feature per 320 samples
FEATURE_FPS = 30  # the official code resamples to 30 fps before picking video frames
VIDEO_FPS = 16


class AudioFeatureError(ValueError):
    """Audio that cannot drive a clip (too short, silent, wrong shape)."""


class Wav2Vec2Features:
    """Wav2Vec2 + its feature extractor, loaded from a local folder of the official layout."""

    def __init__(
        self, model: Wav2Vec2Model | Wav2Vec2ForCTC, extractor: Wav2Vec2FeatureExtractor
    ) -> None:
        # the CTC head is never used: keep the encoder only
        self.model = (model.wav2vec2 if isinstance(model, Wav2Vec2ForCTC) else model).eval()
        self.extractor = extractor
        if self.model.config.num_hidden_layers != 24:
            raise AudioFeatureError(
                f"S2V needs a 24-layer Wav2Vec2 (25 hidden states), got "
                f"{self.model.config.num_hidden_layers} layers"
            )

    @classmethod
    def from_folder(
        cls, folder: str | Path, device: str | torch.device = "cpu"
    ) -> Wav2Vec2Features:
        """``<ckpt>/wav2vec2-large-xlsr-53-english`` (config, weights, preprocessor_config.json)."""
        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"no Wav2Vec2 config.json in {folder}")
        model = Wav2Vec2ForCTC.from_pretrained(folder, local_files_only=True)
        extractor = Wav2Vec2FeatureExtractor.from_pretrained(folder, local_files_only=True)
        return cls(model.to(device), extractor)

    @torch.no_grad()
    def hidden_states(self, wave: np.ndarray) -> torch.Tensor:
        """16 kHz mono samples ``[n]`` -> ``[25, T50, C]`` (fp32, on the model's device)."""
        if wave.ndim != 1:
            raise AudioFeatureError(f"expected mono samples [n], got shape {wave.shape}")
        if wave.shape[0] < 400:
            raise AudioFeatureError(
                f"audio has {wave.shape[0]} samples; Wav2Vec2 needs at least 400 (25 ms at 16 kHz)"
            )
        values = self.extractor(
            wave.astype(np.float32), sampling_rate=SAMPLE_RATE, return_tensors="pt"
        ).input_values
        param = next(self.model.parameters())
        out = self.model(values.to(param.device, param.dtype), output_hidden_states=True)
        states = [*out.hidden_states[:-1], out.last_hidden_state]  # post-norm last state (4.x)
        return torch.cat(states).float()  # [25, T50, C]

    def features(self, wave: np.ndarray) -> torch.Tensor:
        """16 kHz samples -> ``[25, T30, C]`` at 30 fps."""
        return to_30fps(self.hidden_states(wave))


def to_30fps(states: torch.Tensor) -> torch.Tensor:
    """``[L, T50, C]`` -> ``[L, int(T50 / 50 * 30), C]``, linear with align_corners (official)."""
    length = int(states.shape[1] / float(WAV2VEC_FPS) * FEATURE_FPS)
    out = F.interpolate(states.transpose(1, 2), size=length, mode="linear", align_corners=True)
    return out.transpose(1, 2)  # [L, T30, C]


def num_clips(frames30: int, infer_frames: int, fps: int = VIDEO_FPS) -> int:
    """How many clips of ``infer_frames`` video frames the audio covers (official: always +1)."""
    return int(frames30 / (infer_frames * (FEATURE_FPS / fps))) + 1


def frame_indices(frames30: int, infer_frames: int, fps: int = VIDEO_FPS) -> np.ndarray:
    """30-fps feature index of every video frame of all clips (may point past the audio).

    Video frame k sits at time k/fps and takes feature ``round(k/fps * 30)`` (numpy rounding,
    half to even, as the official sampler).
    """
    count = num_clips(frames30, infer_frames, fps) * infer_frames
    total = math.ceil(count / fps * FEATURE_FPS)  # feature frames the clips span
    times = np.linspace(0.0, count / fps, count, endpoint=False)
    return np.clip(np.round(times * FEATURE_FPS).astype(int), 0, total - 1)


def bucket_features(
    feats30: torch.Tensor, infer_frames: int, fps: int = VIDEO_FPS
) -> tuple[torch.Tensor, int]:
    """``[25, T30, C]`` -> (``[N * infer_frames, 25, C]`` one feature per video frame, N clips).

    Frames after the end of the audio get zero features.
    """
    layers, frames30, dim = feats30.shape
    idx = frame_indices(frames30, infer_frames, fps)
    out = feats30.new_zeros(len(idx), layers, dim)
    inside = idx < frames30
    out[torch.from_numpy(inside)] = feats30[:, idx[inside]].transpose(0, 1)
    return out, len(idx) // infer_frames


def clip_features(bucket: torch.Tensor, clip: int, infer_frames: int) -> torch.Tensor:
    """Clip ``clip``'s DiT audio input ``[1, 25, C, infer_frames]`` from :func:`bucket_features`."""
    part = bucket[clip * infer_frames : (clip + 1) * infer_frames]  # [F, 25, C]
    if part.shape[0] != infer_frames:
        raise AudioFeatureError(f"clip {clip} is past the end of the audio features")
    return part.permute(1, 2, 0).unsqueeze(0)


def clip_audio_context(
    bucket: torch.Tensor,
    clip: int,
    infer_frames: int,
    frames: int,
    device: torch.device | str | None = None,
) -> torch.Tensor | None:
    """The up to ``frames`` audio frames before clip ``clip`` (``[1, 25, C, K]``), the
    ``audio_context`` of :meth:`WanModelS2V.encode_audio`; None for the first clip or
    ``frames == 0``, where the official repeated first frame stands."""
    start = clip * infer_frames
    if clip == 0 or frames == 0:
        return None
    part = bucket[max(0, start - frames) : start]  # [K, 25, C]
    return part.permute(1, 2, 0).unsqueeze(0).to(device)
