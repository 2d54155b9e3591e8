"""``openwan generate`` with image-conditioned tasks: flags, runs on tiny random I2V/FLF2V
checkpoints, continuation rounds, one-line errors with no partial outputs."""

import numpy as np
import pytest
from PIL import Image

from helpers.tiny_i2v import write_i2v_checkpoints
from openwan.cli.main import build_parser, main
from openwan.io.video import read_metadata, read_video


def test_official_and_dashed_image_flags_agree():
    p = build_parser()
    official = p.parse_args(
        "generate --task flf2v-14B --first_frame a.png --last_frame b.png --num_rounds 2 "
        "--cond_frames 5 --prompt x".split()
    )
    dashed = p.parse_args(
        "generate --task flf2v-14B --first-frame a.png --last-frame b.png --num-rounds 2 "
        "--cond-frames 5 --prompt x".split()
    )
    assert vars(official) == vars(dashed)
    assert official.last_frame == "b.png" and official.num_rounds == 2
    ev = p.parse_args("generate --extend_video v.mp4 --prompt x".split())
    assert ev.extend_video == "v.mp4"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_i2v")
    Image.new("RGB", (48, 32), (200, 20, 20)).save(root / "red.png")
    Image.new("RGBA", (48, 32), (20, 20, 200, 128)).save(root / "blue_rgba.png")
    Image.new("L", (96, 64), 90).save(root / "gray_large.png")
    (root / "bad.png").write_bytes(b"not a png")
    official, _ = write_i2v_checkpoints(root / "i2v", "i2v")
    return root, official


def _args(official, *more):
    return ["generate", "--ckpt-dir", str(official), "--prompt", "a red circle", "--size",
            "48*32", "--frame-num", "5", "--sample-steps", "1", "--seed", "3", "--quiet",
            *more]  # fmt: skip


def test_i2v_and_continuation_rounds_through_the_cli(ckpt):
    root, official = ckpt
    out = root / "i2v.mp4"
    assert main(_args(official, "--image", str(root / "red.png"), "--save-file", str(out))) == 0
    frames, _ = read_video(out)
    assert frames.shape == (5, 32, 48, 3)
    assert read_metadata(out)["image"].endswith("red.png")
    # 3 rounds: 5 frames, then 2 x (5 - 1) more, each round starting from the last frame so far
    long = root / "long.mp4"
    argv = _args(official, "--image", str(root / "blue_rgba.png"), "--num-rounds", "3")
    assert main([*argv, "--save-file", str(long)]) == 0
    assert read_video(long)[0].shape == (13, 32, 48, 3)
    assert read_metadata(long)["num_rounds"] == "3"
    assert read_metadata(long)["blend_joints"] == "on"
    # --blend-joints off: the same rounds without the joint blend; the frames either side of the
    # joints (after frames 5 and 9) differ, the others only by what H.264 carries over
    raw = root / "raw.mp4"
    assert main([*argv, "--blend-joints", "off", "--save-file", str(raw)]) == 0
    assert read_metadata(raw)["blend_joints"] == "off"
    change = np.abs(read_video(long)[0].astype(float) - read_video(raw)[0]).mean(axis=(1, 2, 3))
    assert change[[4, 5, 8, 9]].min() > 3 * change[[0, 1, 2, 3, 6, 7, 10, 11, 12]].max()
    # continue an existing video by one clip of 5 frames conditioned on its last 1 frame
    ext = root / "ext.mp4"
    assert main(_args(official, "--extend-video", str(out), "--save-file", str(ext))) == 0
    assert read_video(ext)[0].shape == (9, 32, 48, 3)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--image", "bad.png"], "cannot read image"),
        (["--image", "missing.png"], "image file not found"),
        ([], "pass --image FILE"),
        (["--image", "red.png", "--last-frame", "gray_large.png"], "use flf2v-14B"),
        (["--extend-video", "missing.mp4"], "video file not found"),
        (["--image", "red.png", "--num-rounds", "0"], "--num-rounds must be >= 1"),
        (["--image", "red.png", "--first-frame", "red.png"], "not both"),
        (["--image", "red.png", "--num-rounds", "2", "--cond-frames", "5"], "cond_frames"),
    ],
)
def test_bad_image_inputs_are_one_line_errors_without_output(ckpt, extra, message, capsys):
    root, official = ckpt
    extra = [str(root / e) if e.endswith((".png", ".mp4")) else e for e in extra]
    out = root / "never.mp4"
    assert main(_args(official, *extra, "--save-file", str(out))) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("openwan: error:") and message in err, err
    assert len(err.splitlines()) == 1
    assert not out.exists()


def test_flf2v_with_a_last_frame_of_another_size_warns_and_runs(ckpt, tmp_path, caplog):
    root, _ = ckpt
    official, _ = write_i2v_checkpoints(tmp_path, "flf2v")
    out = tmp_path / "flf.mp4"
    argv = _args(official, "--first-frame", str(root / "red.png"), "--last-frame",
                 str(root / "gray_large.png"), "--save-file", str(out))  # fmt: skip
    with caplog.at_level("WARNING", logger="openwan"):
        assert main(argv) == 0
    assert "centre-cropping" in caplog.text
    assert read_video(out)[0].shape == (5, 32, 48, 3)
    meta = read_metadata(out)
    assert meta["first_frame"].endswith("red.png") and meta["last_frame"].endswith("large.png")


def test_anchor_frames_flag_switches_the_pinning_of_the_given_frame(ckpt, monkeypatch):
    from openwan.pipelines import stages

    calls = []
    real = stages.anchor_known_frames

    def spy(model_fn, known, *rest):
        calls.append(tuple(known.shape))
        return real(model_fn, known, *rest)

    monkeypatch.setattr(stages, "anchor_known_frames", spy)
    root, official = ckpt
    image = ["--image", str(root / "red.png")]
    assert main(_args(official, *image, "--save-file", str(root / "a.mp4"))) == 0
    assert calls == []  # an official-layout I2V model: off by default, like the reference
    argv = _args(official, *image, "--anchor-frames", "on", "--save-file", str(root / "b.mp4"))
    assert main(argv) == 0
    assert len(calls) == 1 and calls[0][1] == 1  # the first latent frame, pinned
