"""The continuation seam measure: a smooth video has none, a jump at a joint is one."""

import pytest
import torch

from openwan.data import shapes
from openwan.eval.metrics import continuation_joints, seam_ratios


def _video(scene, frames):
    return shapes.to_tensor(shapes.render(scene, frames=frames))


def test_a_continuous_motion_shows_no_seam_and_a_jump_does():
    moving = _video(shapes.Scene("red", "circle", "right", "black", radius=0.1), 49)
    assert max(seam_ratios(moving, [17, 33])) < 1.5
    jump = moving.clone()
    jump[:, 33:] = torch.roll(jump[:, 33:], shifts=12, dims=3)  # the clip starts 12 px off
    ratios = seam_ratios(jump, [17, 33])
    assert ratios[0] < 1.5 and ratios[1] > 2.0
    with pytest.raises(ValueError, match="joints"):
        seam_ratios(moving, [49])


def test_continuation_joints_follow_the_appended_lengths():
    # 17-frame clips continued 3 times on the last 5 frames: 17 + 3 * 12 frames, joints after
    # the first clip and after each appended 12
    assert continuation_joints(17, 3, 5) == [17, 29, 41]
    assert continuation_joints(17, 2) == [17, 33]
    with pytest.raises(ValueError, match="cond_frames"):
        continuation_joints(17, 1, 17)
