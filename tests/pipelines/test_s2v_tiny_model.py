"""The embedded talking-shapes S2V model (s2v-tiny): loads with no download, follows held-out
speech with the mouth, keeps the reference face, and the CLI's defaults work with --audio alone."""

import numpy as np
import pytest
import torch

from openwan.assets import tiny_model_dir
from openwan.data.talking import TalkingWorld
from openwan.eval.talking import write_wav
from openwan.io.audio import stream_durations
from openwan.io.video import read_video

STEPS = 10  # fewer than the CLI's default, to keep the suite short
# measured at these settings (stop 27, audio_context 16): sync 0.89 / 0.53 on held-out items 0 / 1
# (the model before it: 0.53 / 0.32), item 0's video against 5 other items' audio 0.03 on average;
# 8 items at 20 steps: 0.74 (issue target 0.8)
SYNC_MIN = 0.5


@pytest.fixture(scope="module")
def pipe():
    from openwan.pipelines.s2v import WanS2V

    return WanS2V.from_pretrained(tiny_model_dir("s2v"), device="cpu")


def test_the_shipped_folder_fits_the_budget_and_holds_the_default_character():
    total = sum(p.stat().st_size for p in tiny_model_dir().rglob("*") if p.is_file())
    assert total <= 30_000_000
    s2v = tiny_model_dir("s2v")
    assert (s2v / "reference.png").is_file() and (s2v / "prompt.txt").is_file()
    from openwan.pipelines.s2v import folder_defaults

    # the size and clip length it was trained at (what the CLI uses without --size/--infer_frames)
    d = folder_defaults(s2v)
    assert (d.size, d.infer_frames) == ((64, 64), 16) and d.image == s2v / "reference.png"
    assert d.prompt == (s2v / "prompt.txt").read_text(encoding="utf-8").strip()


def test_mouth_follows_held_out_speech(pipe, tmp_path):
    import dataclasses

    from openwan.eval.talking import evaluate_s2v, score_video

    report = evaluate_s2v(
        pipe, items=2, clips=3, steps=STEPS, seed=0, keep_dir=tmp_path, progress=False
    )
    assert pipe.audio_context == 16  # later clips read the audio before them (config.json)
    assert [r["frames"] for r in report["items"]] == [45, 45]  # clip 0 drops 3 pre-roll frames
    assert report["sync_mean"] >= SYNC_MIN
    assert report["identity_mean"] >= 0.9
    assert report["max_av_offset_frames"] <= 1.0
    # scored against other held-out items' speech, the same video is out of sync: the mouth
    # follows its own audio, not a rhythm it would have anyway
    world = TalkingWorld(seconds=3.0, size=64, split="heldout")
    own = report["items"][0]["sync"]
    others = [
        score_video(tmp_path / "s2v_0.mp4", dataclasses.replace(world[j], face=world[0].face), 16)
        for j in range(3, 8)
    ]
    assert own >= 0.4 and float(np.mean([o.sync for o in others])) < 0.3


def test_cli_needs_only_the_audio(tmp_path):
    from openwan.cli.main import main

    item = TalkingWorld(seconds=1.0, size=64, split="heldout")[1]
    wav = tmp_path / "speech.wav"
    write_wav(wav, item.audio)
    out = tmp_path / "talk.mp4"
    argv = ["generate", "--task", "s2v-tiny", "--audio", str(wav), "--save_file", str(out)]
    assert main([*argv, "--sample_steps", "4", "--quiet"]) == 0
    frames, _ = read_video(out)
    assert frames.shape[1:] == (64, 64, 3)
    video_s, audio_s = stream_durations(out)
    assert abs(audio_s - video_s) <= 1 / 16


def test_missing_embedded_s2v_model_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    import openwan.assets as assets
    from openwan.cli.main import main

    monkeypatch.setattr(assets, "ASSETS_DIR", tmp_path)
    code = main(["generate", "--task", "s2v-tiny", "--audio", "x.wav"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "wan-tiny/s2v is missing" in err[0]


def test_cli_speed_switches_on_s2v_change_the_video_a_little_and_teacache_is_refused(
    tmp_path, capsys
):
    from openwan.cli.main import main

    item = TalkingWorld(seconds=1.0, size=64, split="heldout")[2]
    wav = tmp_path / "speech.wav"
    write_wav(wav, item.audio)
    base = ["generate", "--task", "s2v-tiny", "--audio", str(wav), "--sample_steps", "9", "--quiet"]
    base += ["--base_seed", "3"]
    code = main([*base, "--cache", "teacache", "--save_file", str(tmp_path / "t.mp4")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "does not apply to s2v" in err[0]
    assert not (tmp_path / "t.mp4").exists()
    videos = []
    modes = (("plain", []), ("tiled", ["--vae-tiling"]), ("compiled", ["--compile"]),
             ("offload", ["--offload", "model"]), ("blocks", ["--offload", "block"]),
             ("taylor", ["--cache", "taylor:2"]), ("int8", ["--quant", "int8"]))  # fmt: skip
    for name, extra in modes:
        out = tmp_path / f"{name}.mp4"
        assert main([*base, *extra, "--save_file", str(out)]) == 0
        videos.append(read_video(out)[0].astype(np.float64))
    # --vae-tiling: the 16x16 latent is one 32-latent tile, so the decode is the untiled one;
    # --offload model / block on the CPU: the same weights on the same device
    np.testing.assert_array_equal(videos[1], videos[0])
    np.testing.assert_array_equal(videos[3], videos[0])
    np.testing.assert_array_equal(videos[4], videos[0])
    # --compile: inductor's kernels for the blocks, the same video up to float rounding
    mse = float(((videos[0] - videos[2]) ** 2).mean())
    assert mse == 0 or 10 * np.log10(255.0**2 / mse) > 40
    # taylor: 6 full warm-up steps, then one in two counted back from the last (step 8 of 9
    # extrapolated); int8: the block linears
    # quantized. Each close to, not equal to, the plain video
    for other in videos[5:]:
        mse = float(((videos[0] - other) ** 2).mean())
        # (another seed gives ~27 dB: the face is the same, the mouth is not)
        assert mse > 0 and 10 * np.log10(255.0**2 / mse) > 30


def test_tiled_vae_decode_serves_every_s2v_clip(pipe, tmp_path):
    from openwan.data.shapes import to_tensor
    from openwan.eval.metrics import psnr
    from openwan.eval.talking import evaluate_s2v
    from openwan.runtime.vae_tiling import apply_vae_tiling

    def video(folder):
        evaluate_s2v(pipe, items=1, clips=2, steps=4, keep_dir=folder, progress=False)
        return to_tensor(read_video(folder / "s2v_0.mp4")[0])

    plain = video(tmp_path / "plain")
    untiled = pipe.vae
    pipe.vae = apply_vae_tiling(untiled, tile=8, overlap=2)  # the 16x16 latent in 3 x 3 tiles
    try:
        tiled = video(tmp_path / "tiled")
    finally:
        pipe.vae = untiled
    # both clips decoded in tiles (and clip 1's motion history encoded from them): the same
    # video up to the blended seams
    assert tiled.shape == plain.shape and not torch.equal(tiled, plain)
    assert psnr(plain, tiled) > 30
