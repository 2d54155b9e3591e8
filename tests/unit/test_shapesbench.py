import numpy as np
import pytest

from openwan.data import shapes
from openwan.eval.shapesbench import analyze, run_shapesbench, score


def _render(prompt, seed):
    s = shapes.parse_prompt(prompt)
    rng = np.random.default_rng(seed)
    return shapes.render(
        shapes.Scene(s.color, s.shape, s.motion, s.background, x0=float(rng.uniform(0.4, 0.6)),
                     y0=float(rng.uniform(0.4, 0.6)), radius=float(rng.uniform(0.12, 0.17)))
    )  # fmt: skip


def test_analyzer_scores_ground_truth_near_perfectly():
    report = run_shapesbench(_render, n_prompts_per_split=12)
    assert report["groups"]["all"]["n"] == 48
    assert report["groups"]["all"]["all"] >= 0.98
    assert report["groups"]["heldout/zh"]["all"] >= 0.98


@pytest.mark.parametrize(
    "wrong, field",
    [
        (shapes.Scene("blue", "circle", "right", "black"), "color"),
        (shapes.Scene("red", "triangle", "right", "black"), "shape"),
        (shapes.Scene("red", "circle", "up", "black"), "motion"),
        (shapes.Scene("red", "circle", "growing", "black"), "motion"),
        (shapes.Scene("red", "circle", "right", "gray"), "background"),
    ],
)
def test_analyzer_fails_the_wrong_video(wrong, field):
    asked = shapes.Scene("red", "circle", "right", "black")
    s = score(asked, analyze(shapes.render(wrong)))
    assert not s[field] and not s["all"]
    others = [k for k in ("color", "shape", "motion", "background") if k != field]
    assert all(s[k] for k in others)


def test_empty_and_noisy_videos():
    black = np.zeros((17, 64, 64, 3), np.uint8)
    det = analyze(black)
    assert det.count == 0 and det.color is None
    noisy = np.random.default_rng(0).integers(0, 255, (17, 64, 64, 3), dtype=np.uint8)
    assert analyze(noisy).flicker > 50
