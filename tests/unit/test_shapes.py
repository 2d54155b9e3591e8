import numpy as np

from openwan.data import shapes


def test_world_is_deterministic_and_avoids_heldout():
    w = shapes.ShapesWorld(seed=3)
    v1, c1, s1 = w[11]
    v2, c2, s2 = w[11]
    assert np.array_equal(v1, v2) and c1 == c2 and s1 == s2
    held = shapes.heldout_combos()
    assert len(held) >= 10
    assert all(w[i][2].combo not in held for i in range(300))
    hw = shapes.ShapesWorld(seed=3, split="heldout")
    assert all(hw[i][2].combo in held for i in range(50))


def test_every_attribute_still_trains():
    held = shapes.heldout_combos()
    train = {
        (c, s, m)
        for c in shapes.COLORS
        for s in shapes.SHAPES
        for m in shapes.MOTIONS
        if (c, s, m) not in held
    }
    assert {c for c, _, _ in train} == set(shapes.COLORS)
    assert {s for _, s, _ in train} == set(shapes.SHAPES)
    assert {m for _, _, m in train} == set(shapes.MOTIONS)


def test_render_moves_the_shape():
    scene = shapes.Scene("red", "circle", "right", "black")
    video = shapes.render(scene, frames=17, size=64)
    assert video.shape == (17, 64, 64, 3) and video.dtype == np.uint8

    def cx(frame):
        ys, xs = np.nonzero(frame[..., 0] > 128)
        return xs.mean()

    assert cx(video[-1]) - cx(video[0]) > 25  # about half the frame, left to right
    assert tuple(video[0, 0, 0]) == shapes.BACKGROUNDS["black"]
    grow = shapes.render(shapes.Scene("blue", "square", "growing", "gray"))
    area = (grow != np.array(shapes.BACKGROUNDS["gray"])).any(-1).sum((1, 2))
    assert area[-1] > 2 * area[0]


def test_captions_parse_back_in_both_languages():
    w = shapes.ShapesWorld(seed=0)
    for i in range(200):
        _, text, scene = w[i]
        parsed = shapes.parse_prompt(text)
        assert parsed is not None and parsed.combo == scene.combo, text
        assert parsed.background == scene.background, text
    p = shapes.parse_prompt("红色的圆形在黑色背景上从左向右移动")
    assert p is not None and (p.combo, p.background) == (("red", "circle", "right"), "black")
    p = shapes.parse_prompt("a red circle moving from left to right")
    assert p is not None and p.combo == ("red", "circle", "right") and p.background is None
    assert shapes.parse_prompt("a cat surfing") is None


def test_white_only_on_dark_backgrounds():
    w = shapes.ShapesWorld(seed=1)
    for i in range(300):
        s = w[i][2]
        assert s.color != "white" or s.background in shapes.DARK_BACKGROUNDS
