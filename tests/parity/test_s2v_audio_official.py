"""S2V audio front end against the OFFICIAL Wan2.2 ``AudioEncoder`` (transformers 4.51.3) at a
tiny random 24-layer Wav2Vec2 (tools/make_s2v_fixtures.py). openwan runs the installed
transformers (5.x here), whose last hidden state is recorded before the final LayerNorm."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

from helpers.random_weights import rel_err
from openwan.models.audio import (
    AudioFeatureError,
    Wav2Vec2Features,
    bucket_features,
    clip_features,
    num_clips,
)

PATH = str(Path(__file__).parents[1] / "fixtures/s2v/audio_frontend.safetensors")
FX = load_file(PATH)
with safe_open(PATH, "pt") as f:
    META = f.metadata()


@pytest.fixture(scope="module")
def frontend():
    model = Wav2Vec2ForCTC(Wav2Vec2Config(**json.loads(META["wav2vec2_config"])))
    model.load_state_dict({k[4:]: v for k, v in FX.items() if k.startswith("w2v.")}, strict=True)
    extractor = Wav2Vec2FeatureExtractor(**json.loads(META["feature_extractor"]))
    return Wav2Vec2Features(model, extractor)


def test_features_at_30fps_match_official(frontend):
    feats = frontend.features(FX["in.wave"].numpy())
    ref = FX["out.feat30"]
    assert feats.shape == ref.shape == (25, 38, 32)  # 1.3 s: 64 frames at 50 Hz -> 38 at 30 fps
    assert rel_err(feats, ref) <= 1e-5
    assert rel_err(feats[-1], ref[-1]) <= 1e-5  # the final-LayerNorm state (transformers 5 trap)


@pytest.mark.parametrize("frames", [12, 80])
def test_buckets_match_official(frames):
    bucket, n = bucket_features(FX["out.feat30"], frames)
    assert n == int(FX[f"out.num_clips.{frames}"]) == num_clips(38, frames)
    assert torch.equal(bucket, FX[f"out.bucket.{frames}"])


def test_clip_features_layout():
    bucket, n = bucket_features(FX["out.feat30"], 12)
    clip = clip_features(bucket, 1, 12)
    assert clip.shape == (1, 25, 32, 12)
    assert torch.equal(clip[0, :, :, 3], bucket[15])
    with pytest.raises(AudioFeatureError, match="past the end"):
        clip_features(bucket, n, 12)


def test_too_short_audio_is_an_error(frontend):
    with pytest.raises(AudioFeatureError, match="at least 400"):
        frontend.hidden_states(FX["in.wave"][:100].numpy())
