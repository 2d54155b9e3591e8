"""`openwan generate` with VACE inputs: official flags, the Python API, one-line errors, no output on
bad input."""

import numpy as np
import pytest
import torch
from PIL import Image

from openwan.cli.main import build_parser, main
from openwan.configs.tasks import get_task, infer_task
from openwan.io.video import read_metadata, save_video

ARGS = ["--size", "32*32", "--frame-num", "5", "--sample-steps", "2", "--quiet"]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    from helpers.tiny_ckpt import DIT, write_checkpoints

    root = tmp_path_factory.mktemp("vace_cli")
    official, _ = write_checkpoints(root, dit_config=DIT.replace(vace_layers=(0,), vace_in_dim=96))
    g = torch.Generator().manual_seed(0)
    video = torch.rand(3, 5, 32, 32, generator=g) * 2 - 1
    mask = -torch.ones(3, 5, 32, 32)
    mask[:, :, 8:24, 8:24] = 1
    save_video(video, root / "src.mp4", fps=16)
    save_video(mask, root / "mask.mp4", fps=16)
    save_video(mask[:, :1].expand(3, 9, 32, 32), root / "mask9.mp4", fps=16)
    rgba = np.zeros((20, 28, 4), np.uint8)
    rgba[..., 1] = 255
    rgba[:10, :, 3] = 255
    Image.fromarray(rgba, "RGBA").save(root / "ref_rgba.png")
    Image.fromarray(np.full((32, 32), 128, np.uint8), "L").save(root / "ref_gray.png")
    (root / "broken.png").write_bytes(b"\x89PNG broken")
    return official, root


def test_official_and_dashed_vace_flags_parse_alike():
    p = build_parser()
    a = p.parse_args(
        "generate --task vace-1.3B --src_video v.mp4 --src_mask m.mp4 "
        "--src_ref_images a.png,b.png --context_scale 0.5 --prompt x".split()
    )
    b = p.parse_args(
        "generate --task vace-1.3B --src-video v.mp4 --src-mask m.mp4 "
        "--src-ref-images a.png,b.png --context-scale 0.5 --prompt x".split()
    )
    assert vars(a) == vars(b) and a.src_ref_images == "a.png,b.png" and a.context_scale == 0.5


def test_vace_tasks_have_the_official_defaults():
    from openwan.configs import dit as dit_cfg
    from openwan.configs.vae import WAN21_VAE

    small, big = get_task("vace-1.3B"), get_task("vace-14B")
    assert (small.steps, small.shift, small.guide_scale, small.frame_num) == (50, 16.0, 5.0, 81)
    assert small.sizes == ("480*832", "832*480") and len(big.sizes) == 4 and big.shift == 16.0
    assert infer_task(dit_cfg.WAN21_VACE_14B, WAN21_VAE).name == "vace-14B"


def test_mv2v_with_references_writes_a_video(media, tmp_path):
    official, root = media
    out = tmp_path / "out.mp4"
    refs = f"{root / 'ref_rgba.png'},{root / 'ref_gray.png'}"
    code = main(["generate", "--ckpt_dir", str(official), "--prompt", "a red circle",
                 "--src_video", str(root / "src.mp4"), "--src_mask", str(root / "mask.mp4"),
                 "--src_ref_images", refs, "--context-scale", "0.8", "--save-file", str(out),
                 *ARGS])  # fmt: skip
    assert code == 0 and out.is_file()
    meta = read_metadata(out)
    assert meta["src_ref_images"] == refs and meta["context_scale"] == 0.8
    assert meta["size"] == "32*32" and meta["frame_num"] == 5


def test_python_api(media):
    import openwan

    official, root = media
    pipe = openwan.WanVACE.from_pretrained(official, device="cpu")
    video = pipe(
        "a red circle", size=(32, 32), frame_num=5, steps=1, seed=1,
        src_ref_images=[Image.open(root / "ref_gray.png")],
    )  # fmt: skip
    assert video.shape == (3, 5, 32, 32) and video.abs().max() <= 1


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--src_mask", "mask9.mp4", "--src_video", "src.mp4"], "same length and size"),
        (["--src_mask", "mask.mp4"], "needs the source video"),
        (["--src_ref_images", "broken.png"], "cannot read reference image"),
        (["--src_ref_images", "nope.png"], "reference image not found"),
        (["--src_video", "nope.mp4"], "video file not found"),
        (["--src_ref_images", "ref_gray.png,ref_gray.png,ref_gray.png"], "at most 2 fit"),
        (["--src_ref_images", "ref_gray.png", "--cache-threshold", "0.1"], "cache-threshold"),
    ],
)
def test_bad_vace_input_is_one_line_with_no_output(media, tmp_path, capsys, extra, message):
    official, root = media
    extra = [str(root / a) if a.endswith((".mp4", ".png")) else a for a in extra]
    if "--src_ref_images" in extra:  # comma-separated: prefix every entry
        i = extra.index("--src_ref_images") + 1
        extra[i] = ",".join(str(root / p.rsplit("/", 1)[-1]) for p in extra[i].split(","))
    out = tmp_path / "o.mp4"
    code = main(["generate", "--ckpt-dir", str(official), "--prompt", "x", "--save-file",
                 str(out), *extra, *ARGS])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("openwan: error:") and message in err
    assert len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_vace_inputs_need_a_vace_checkpoint(tmp_path, capsys, media, monkeypatch):
    _, root = media
    monkeypatch.chdir(tmp_path)
    code = main(["generate", "--prompt", "x", "--src_ref_images", str(root / "ref_gray.png"),
                 *ARGS])  # fmt: skip
    assert code == 2 and "not a VACE model" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
