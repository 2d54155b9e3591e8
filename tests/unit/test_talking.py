"""The talking-shapes world (for the tiny S2V model) and its sync / identity analyzer, validated
on ground truth before it scores any model."""

import numpy as np
import pytest

from openwan.data import talking
from openwan.data.talking import TalkingWorld


def test_items_are_deterministic_and_held_out_audio_is_its_own():
    train, held = TalkingWorld(seed=3), TalkingWorld(seed=3, split="heldout")
    a, b = train[5], train[5]
    assert np.array_equal(a.audio, b.audio) and np.array_equal(a.video, b.video)
    assert a.face == held[5].face  # same faces ...
    assert not np.allclose(a.audio, held[5].audio)  # ... driven by audio training never hears
    assert a.video.shape == (33, 64, 64, 3) and a.video.dtype == np.uint8
    assert a.audio.shape == (33 * talking.RATE // talking.FPS,) and a.audio.dtype == np.float32
    assert 0.49 < float(np.abs(a.audio).max()) <= 0.5
    with pytest.raises(ValueError, match="split"):
        TalkingWorld(split="test")


def test_measured_mouth_grows_with_the_opening():
    face = talking.Face("yellow", "circle", "navy")
    video = talking.render_face(face, np.array([0.0, 0.25, 0.5, 1.0]))
    opening = talking.measure_mouth(video, face)
    assert np.all(np.diff(opening) > 0) and opening[0] > 0  # a closed mouth is still a line


def test_ground_truth_scores_in_sync_and_other_audio_does_not():
    world = TalkingWorld(seed=0, split="heldout")
    sync, other, ident = [], [], []
    for i in range(8):
        item = world[i]
        opening = talking.measure_mouth(item.video, item.face)
        frames = len(item.video)
        sync.append(talking.sync_score(opening, talking.audio_envelope(item.audio, frames)))
        wrong = world[i + 50].audio
        other.append(talking.sync_score(opening, talking.audio_envelope(wrong, frames)))
        ident.append(talking.identity_kept(item.video, item.face))
    assert min(sync) >= 0.98, sync  # measured 0.996 mean, 0.992 worst on 20 held-out clips
    assert np.mean(other) < 0.3, other  # measured 0.05: the score is not high by construction
    assert min(ident) == 1.0


def test_identity_notices_another_face():
    face = talking.Face("cyan", "square", "gray")
    video = talking.render_face(face, np.zeros(3))
    assert talking.identity_kept(video, face) == 1.0
    assert talking.identity_kept(video, talking.Face("green", "square", "gray")) == 0.0
    assert talking.identity_kept(video, talking.Face("cyan", "circle", "gray")) == 0.0


def test_sync_score_of_a_constant_is_zero():
    assert talking.sync_score(np.ones(5), np.arange(5.0)) == 0.0
    assert talking.sync_score(np.arange(5.0), 2 * np.arange(5.0) + 1) == pytest.approx(1.0)
