"""The openwan command: official flag spellings, one-line errors, no partial outputs."""

import pytest

from openwan.cli.main import build_parser, default_output_name, main


def test_official_spellings_parse_to_the_same_request():
    p = build_parser()
    official = p.parse_args(
        "generate --task t2v-1.3B --size 832*480 --ckpt_dir ./w --frame_num 81 --sample_steps 50 "
        "--sample_shift 5 --sample_guide_scale 6 --sample_solver dpm++ --base_seed 42 "
        "--offload_model False --t5_cpu --save_file o.mp4 --prompt cat".split()
    )
    dashed = p.parse_args(
        "generate --task t2v-1.3B --size 832*480 --ckpt-dir ./w --frame-num 81 --sample-steps 50 "
        "--sample-shift 5 --sample-guide-scale 6 --sample-solver dpm++ --seed 42 "
        "--offload-model false --t5-cpu --save-file o.mp4 --prompt cat".split()
    )
    assert vars(official) == vars(dashed)
    assert official.offload_model is False and official.base_seed == 42


def test_default_name_is_descriptive():
    name = default_output_name("t2v-tiny", (64, 64), "A red circle, moving!", 7, image=False)
    assert name == "t2v-tiny_64x64_a_red_circle_moving_7.mp4"
    assert default_output_name("t2i-14B", (8, 8), "x", 1, image=True).endswith(".png")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "--task", "t2v-9B", "--prompt", "x"], "unknown task 't2v-9B'"),
        (
            ["generate", "--prompt", "x", "--ckpt-dir", "/nonexistent/w"],
            "checkpoint folder not found",
        ),
        (["generate"], "--prompt is required"),
        (["generate", "--prompt", "x", "--save-file", "/proc/x/y.mp4"], "cannot write"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("openwan: error:") and message in err
    assert len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_truncated_checkpoint_is_named(tmp_path, capsys):
    from helpers.tiny_ckpt import write_checkpoints

    official, _ = write_checkpoints(tmp_path)
    weights = official / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    out = tmp_path / "out.mp4"
    code = main(["generate", "--ckpt-dir", str(official), "--prompt", "x", "--size", "32*32",
                 "--frame-num", "5", "--sample-steps", "1", "--save-file", str(out)])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "truncated or corrupt" in err and "diffusion_pytorch_model.safetensors" in err
    assert not out.exists()


def test_generate_on_a_random_checkpoint_writes_mp4_and_png(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from helpers.tiny_ckpt import write_checkpoints
    from openwan.io.video import read_metadata, read_video

    official, _ = write_checkpoints(tmp_path)
    out = tmp_path / "v.mp4"
    args = ["generate", "--ckpt-dir", str(official), "--prompt", "a red circle", "--size", "32*32",
            "--sample-steps", "2", "--seed", "3", "--quiet"]  # fmt: skip
    assert main([*args, "--frame-num", "5", "--save-file", str(out)]) == 0
    frames, fps = read_video(out)
    assert frames.shape == (5, 32, 32, 3) and fps == 16
    meta = read_metadata(out)
    assert meta["prompt"] == "a red circle" and meta["seed"] == 3 and meta["steps"] == 2
    png = tmp_path / "i.png"
    assert main([*args, "--frame-num", "1", "--save-file", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit):
        main([*args, "--frame-num", "5", "--sample-solver", "ddim"])
    # the diffusion cache is reported and recorded; threshold 0 changes no pixel (compared on
    # lossless PNGs: libx264's output for the same frames can differ between encodes in a process)
    cached = tmp_path / "c.png"
    capsys.readouterr()
    assert (
        main([*args, "--frame-num", "1", "--save-file", str(cached), "--cache-threshold", "0"]) == 0
    )
    assert "0 of 4 model calls reused another CFG branch, 100% of the DiT blocks ran" in (
        capsys.readouterr().err
    )
    assert read_metadata(cached)["cache"] == "teacache:0"
    assert np.array_equal(np.asarray(Image.open(cached)), np.asarray(Image.open(png)))
    # taylor: 8 steps of 1 frame: 6 warm-up + 1 full, then (interval 2) one extrapolated per branch
    guessed = tmp_path / "t.png"
    run = [*args, "--frame-num", "1", "--save-file", str(guessed), "--sample-steps", "8"]
    assert main([*run, "--cache", "taylor:2"]) == 0
    assert "0 of 16 model calls reused another CFG branch, 2 were extrapolated" in (
        capsys.readouterr().err
    )
    assert read_metadata(guessed)["cache"] == "taylor:2"
    assert main([*args, "--cache", "teacache:0.1", "--cache-threshold", "0.1"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main([*args, "--cache", "fast"]) == 2
    assert "unknown cache mode 'fast'" in capsys.readouterr().err
    # an image: the TI2V first-frame path through the CLI
    Image.new("RGB", (40, 40), (200, 20, 20)).save(tmp_path / "red.png")
    img_out = tmp_path / "from_image.mp4"
    assert (
        main(
            [
                *args,
                "--frame-num",
                "5",
                "--image",
                str(tmp_path / "red.png"),
                "--save-file",
                str(img_out),
            ]
        )
        == 0
    )
    assert read_metadata(img_out)["image"].endswith("red.png")
    assert main([*args, "--image", str(tmp_path / "missing.png")]) == 2
    assert "image file not found" in capsys.readouterr().err


def test_speed_switches_on_a_random_checkpoint(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from helpers.tiny_ckpt import write_checkpoints
    from openwan.io.video import read_metadata

    official, _ = write_checkpoints(tmp_path)
    args = ["generate", "--ckpt-dir", str(official), "--prompt", "a red circle", "--size", "32*32",
            "--sample-steps", "2", "--seed", "3", "--quiet", "--frame-num", "1"]  # fmt: skip
    plain, fast = tmp_path / "p.png", tmp_path / "f.png"
    assert main([*args, "--save-file", str(plain)]) == 0
    capsys.readouterr()
    speed = ["--cache", "teacache:0", "--offload", "block", "--vae-tiling", "--quant", "int8"]
    assert main([*args, "--save-file", str(fast), *speed]) == 0
    assert "100% of the DiT blocks ran" in capsys.readouterr().err
    meta = read_metadata(fast)
    assert meta["quant"] == "int8" and meta["offload"] == "block" and meta["vae_tiling"] is True
    a, b = (np.asarray(Image.open(p), dtype=np.float64) for p in (plain, fast))
    assert 0 < np.abs(a - b).mean() < 4.0  # int8 moves pixels a little, nothing else does
    assert main([*args, "--quant", "fp8"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
    assert main([*args, "--offload", "block", "--offload-model", "true"]) == 2
