"""openwan eval s2v's scoring, on ground-truth talking videos written as the pipeline writes them."""

import numpy as np
import pytest

from openwan.data.talking import TalkingWorld
from openwan.eval.talking import score_video
from openwan.io.audio import save_video_with_audio

CLIP = 16


@pytest.fixture(scope="module")
def item():
    return TalkingWorld(seconds=3.0, size=64, split="heldout")[2]


def _write(path, video, audio):
    save_video_with_audio(video, path, audio, fps=16)
    return path


def test_ground_truth_scores_well(tmp_path, item):
    path = _write(tmp_path / "gt.mp4", item.video[:48], item.audio[:48000])
    s = score_video(path, item, CLIP)
    assert s.frames == 48
    assert s.sync >= 0.9
    assert s.identity >= 0.95
    assert len(s.joint_ratios) == 2 and max(s.joint_ratios) <= 2.0
    assert abs(s.av_offset_frames) <= 1.0


def test_each_score_catches_its_fault(tmp_path, item):
    # mouth out of step with the audio: the frames in a shuffled order
    order = np.random.default_rng(0).permutation(48)
    shuffled = score_video(
        _write(tmp_path / "shuf.mp4", item.video[:48][order], item.audio[:48000]), item, CLIP
    )
    assert shuffled.sync < 0.5
    # a jump at the second joint: the third clip taken from later in the talk, shifted sideways
    jumped = item.video[:48].copy()
    jumped[32:] = np.roll(item.video[:48][32:], 12, axis=2)
    s = score_video(_write(tmp_path / "jump.mp4", jumped, item.audio[:48000]), item, CLIP)
    assert s.joint_ratios[1] > 2.0 >= s.joint_ratios[0]
    # another face colour: identity lost in every frame
    from openwan.data.talking import Face, render_face
    from openwan.eval.talking import face_caption

    other = Face(
        "cyan" if item.face.color != "cyan" else "red", item.face.shape, item.face.background
    )
    wrong = render_face(other, np.zeros(48, np.float32), 64)
    s = score_video(_write(tmp_path / "other.mp4", wrong, item.audio[:48000]), item, CLIP)
    assert s.identity == 0.0
    assert face_caption(other) != face_caption(item.face)
