import numpy as np
import pytest

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


def test_two_shape_clips_keep_one_shape_clips_and_never_touch():
    one, mixed = shapes.ShapesWorld(seed=5), shapes.ShapesWorld(seed=5, two_shapes=0.5)
    held = shapes.heldout_combos()
    pairs = 0
    for i in range(120):
        v1, c1, s1 = one[i]
        v2, c2, s2 = mixed[i]
        if s2.companion is None:  # the extra draw comes last: one-shape clips are unchanged
            assert np.array_equal(v1, v2) and c1 == c2 and s1 == s2
            continue
        pairs += 1
        first, second = s2.items
        assert first.combo == s1.combo and first.background == s1.background
        assert first.color != second.color and second.combo not in held
        assert shapes.compatible(first.motion, second.motion)
        (x1, y1, r1), (x2, y2, r2) = (shapes.trajectory(it, 17) for it in s2.items)
        for x, y, r in zip(np.stack([x1, x2], 1), np.stack([y1, y2], 1), np.stack([r1, r2], 1)):
            a = shapes.shape_mask(first.shape, x[0], y[0], r[0], 64)
            b = shapes.shape_mask(second.shape, x[1], y[1], r[1], 64)
            grown = a | np.roll(a, 1, 0) | np.roll(a, -1, 0) | np.roll(a, 1, 1) | np.roll(a, -1, 1)
            assert not (grown & b).any(), (i, s2)  # at least a pixel of background between
            for m in (a, b):
                assert not (m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any())
    assert 40 < pairs < 80
    hw = shapes.ShapesWorld(seed=5, split="heldout", two_shapes=1.0)
    assert all(hw[i][2].combo in held and hw[i][2].companion.combo not in held for i in range(30))


def test_two_shape_captions_parse_back_and_scenes_round_trip():
    from dataclasses import asdict

    w = shapes.ShapesWorld(seed=1, two_shapes=1.0)
    for i in range(150):
        _, text, scene = w[i]
        parsed = shapes.parse_prompt(text)
        assert parsed is not None and parsed.companion is not None, text
        assert [it.combo for it in parsed.items] == [it.combo for it in scene.items], text
        assert parsed.background == scene.background, text
        assert shapes.Scene.from_dict(asdict(scene)) == scene
    p = shapes.parse_prompt("a red circle moving up and a blue square shrinking")
    assert [it.combo for it in p.items] == [
        ("red", "circle", "up"),
        ("blue", "square", "shrinking"),
    ]
    p = shapes.parse_prompt("深蓝色背景上，白色的三角形逐渐变小，蓝色的圆形向右移动")
    assert p.background == "navy"
    assert [it.combo for it in p.items] == [
        ("white", "triangle", "shrinking"),
        ("blue", "circle", "right"),
    ]
    assert (
        shapes.parse_prompt("a red circle and a blue square moving up") is None
    )  # no motion for one
    assert (
        shapes.caption(shapes.Scene("red", "circle", "right", "black")) in shapes.caption_corpus()
    )
    pair = shapes.caption(w[0][2], "en", 0)
    assert " and " in pair and pair not in shapes.caption_corpus()
    with pytest.raises(ValueError, match="two_shapes"):
        shapes.ShapesWorld(two_shapes=1.5)
