"""The continuation seam measure: a smooth video has none, a jump at a joint is one."""

import pytest
import torch

from openwan.data import shapes
from openwan.eval.metrics import continuation_joints, seam_ratios
from openwan.pipelines.i2v import blend_joints


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


def test_blending_spreads_a_joint_jump_over_three_frames_and_keeps_the_rest():
    still = _video(shapes.Scene("red", "circle", "static", "black", radius=0.1), 33)
    jump = still.clone()
    jump[:, 17:] = torch.roll(jump[:, 17:], shifts=2, dims=3)  # a 2 px jump at the joint
    blended = blend_joints(jump, [17])
    other = [i for i in range(33) if i not in (16, 17)]
    assert torch.equal(blended[:, other], jump[:, other])
    expect = 0.25 * jump[:, 15] + 0.5 * jump[:, 16] + 0.25 * jump[:, 17]
    assert torch.allclose(blended[:, 16], expect)
    # the static video's frame changes are 0 except at the joint: blended, the jump is split
    # into changes of 1/4, 1/2 and 1/4 of it
    d = lambda v: (v[:, 1:] - v[:, :-1]).abs().mean(dim=(0, 2, 3))  # noqa: E731
    s = d(jump)[16]
    assert torch.allclose(d(blended)[15:18], torch.stack([s / 4, s / 2, s / 4]), rtol=1e-5)
    # the window looks at the neighbouring changes too: with window 1 the largest of the three
    moving = _video(shapes.Scene("red", "circle", "right", "black", radius=0.1), 33)
    moving[:, 17:] = torch.roll(moving[:, 17:], shifts=6, dims=3)
    ratio = seam_ratios(moving, [17])[0]
    assert seam_ratios(moving, [17], window=1)[0] == pytest.approx(ratio)  # the jump is largest
    assert seam_ratios(blend_joints(moving, [17]), [17], window=1)[0] < ratio
