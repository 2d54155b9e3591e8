"""VACE and S2V generations under context parallelism (+ FSDP) equal one process (gloo, 2 ranks).

Their DiT forwards on every layout are in test_dit_parallel.py (same spawns as T2V / I2V).
"""

import json

import numpy as np
import pytest
from PIL import Image

from safetensors.torch import load_file

from helpers import dist_launch, dist_tasks
from helpers.random_weights import rel_err
from helpers.tiny_s2v import speech_like, write_s2v_checkpoint, write_wav
from openwan.io.video import read_video

pytestmark = pytest.mark.dist


def _s2v_setup(tmp_path):
    ckpt = write_s2v_checkpoint(tmp_path / "ckpt")
    img = np.zeros((64, 64, 3), np.uint8)
    img[:, :32] = (200, 40, 40)
    Image.fromarray(img).save(tmp_path / "ref.png")
    write_wav(tmp_path / "speech.wav", speech_like(0.8, 16000), 16000)
    # 2 clips of 8 frames: the second one has FramePack motion tokens
    request = dict(prompt="a red face talking", audio=str(tmp_path / "speech.wav"))
    request |= dict(image=str(tmp_path / "ref.png"), max_area=64 * 64, infer_frames=8)
    request |= dict(num_clip=2, steps=2, seed=4)
    cli = ["generate", "--task", "s2v-14B", "--ckpt-dir", str(ckpt), "--device", "cpu"]
    cli += ["--image", request["image"], "--audio", request["audio"]]
    cli += ["--prompt", request["prompt"]]
    cli += ["--size", "64*64", "--infer_frames", "8", "--num_clip", "2", "--sample_steps", "2"]
    return str(ckpt), request, [*cli, "--base_seed", "4", "--quiet"]


def _clips(path):
    return [load_file(str(path / f"clip_{r:04d}.safetensors"))["latent"] for r in range(2)]


def test_vace_and_s2v_generations_on_two_processes(tmp_path, capfd):
    ckpt, request, cli = _s2v_setup(tmp_path)
    dist_tasks.s2v_clip_latents(ckpt, request, str(tmp_path / "one.mp4"))  # the same request
    s2v = dict(ckpt=ckpt, request=request, out=str(tmp_path / "two.mp4"))
    s2v["cli"] = [*cli, "--ring_size", "2", "--dit_fsdp", "--save_file", str(tmp_path / "two_cli.mp4")]
    out = tmp_path / "vace.json"
    dist_launch.run(dist_tasks.generations, 2, str(out), s2v, timeout=90)
    res = json.loads(out.read_text())
    vace = res["vace"]
    assert res["resumed_steps"] == [0, 0]  # the rerun took every clip from rank 0's store
    # S2V clip by clip under Ring 2 + FSDP (the second clip has motion tokens)
    one, two = _clips(tmp_path / "one.mp4.parts"), _clips(tmp_path / "two.mp4.parts")
    s2v_errors = [rel_err(b, a) for a, b in zip(one, two)]
    with capfd.disabled():
        print("vace generation:", vace, "s2v generation, per clip:", s2v_errors)
    assert vace < 1e-4  # a full tiny VACE generation (source video + mask + reference image)
    assert max(s2v_errors) < 1e-4, s2v_errors
    # and through the command line: rank 0 alone writes the mp4 and removes the resume folder
    assert capfd.readouterr().out.count("saved") == 1
    a, _ = read_video(tmp_path / "one.mp4")
    b, _ = read_video(tmp_path / "two_cli.mp4")
    assert a.shape == b.shape and a.std() > 10  # a real (random-weight) video
    # lossy h264 of nearly equal frames: a flipped rounding can move a few pixels further
    assert np.abs(a.astype(np.int16) - b.astype(np.int16)).mean() < 0.1
    assert not (tmp_path / "two_cli.mp4.parts").exists()
