"""Lip-sync editing on a tiny random S2V checkpoint: the kept region is the source's exactly
(latents and pixels), the masked region is re-generated, lengths follow the shorter input."""

import numpy as np
import pytest
import torch

from helpers.tiny_s2v import (
    StopAfterFirstClip,
    counted_calls,
    speech_like,
    stop_after_first_clip,
    write_s2v_checkpoint,
    write_wav,
)
from openwan.io.audio import stream_durations
from openwan.io.video import save_video
from openwan.pipelines import s2v_lipsync
from openwan.pipelines.request import RequestError
from openwan.pipelines.s2v import WanS2V
from openwan.pipelines.s2v_clip import ClipConditions, ClipEdit, sample_clip
from openwan.pipelines.s2v_lipsync import lipsync, lipsync_request


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("lipsync")
    pipe = WanS2V.from_pretrained(write_s2v_checkpoint(root / "ckpt"), device="cpu")
    g = np.random.default_rng(0)
    frames = np.zeros((14, 64, 64, 3), np.uint8)  # 14 frames at 16 fps: a moving block
    for i in range(14):
        frames[i, 8:40, 2 * i : 2 * i + 24] = (220, 60, 40)
    frames += g.integers(0, 20, frames.shape, dtype=np.uint8)
    save_video(frames, root / "talk.mp4", fps=16)
    write_wav(root / "new.wav", speech_like(1.5, 16000, seed=3)[None], 16000)
    mask = np.zeros((64, 64), np.uint8)
    mask[40:56, 16:48] = 255  # the "mouth": 2 x 4 latent cells
    Image.fromarray(mask).save(root / "mouth.png")
    return root, pipe


def _conditions(pipe, t_lat=2, hw=(8, 8)):
    g = torch.Generator().manual_seed(0)
    lat = lambda t: torch.randn(1, 16, t, *hw, generator=g)  # noqa: E731
    cond = ClipConditions(
        lat(1),
        lat(19),
        torch.zeros(1, 16, t_lat, *hw),
        torch.randn(1, 25, 32, 4 * t_lat, generator=g) * 0.1,
        False,
    )
    ctx = torch.randn(5, pipe.dit.config.text_dim, generator=g)
    return cond, ctx, lat(t_lat)[0], torch.randn(16, t_lat, *hw, generator=g)


@pytest.mark.parametrize("solver", ["unipc", "dpm++", "euler"])
def test_clip_edit_ends_on_the_source_where_kept(setup, solver):
    _, pipe = setup
    cond, ctx, source, noise = _conditions(pipe)
    keep = torch.zeros(1, 2, 8, 8, dtype=torch.bool)
    keep[..., :5, :] = True
    steps = []
    out = sample_clip(
        pipe.dit,
        noise,
        cond,
        ctx,
        ctx * 0,
        steps=6,
        guide_scale=2.0,
        solver=solver,
        edit=ClipEdit(source, keep, strength=0.5),
        callback=lambda i, n: steps.append(n),
    )
    k = keep.expand_as(out)
    assert torch.allclose(out[k], source[k], atol=1e-5)
    assert float((out[~k] - source[~k]).abs().mean()) > 0.05  # the masked part was sampled
    assert steps == [3, 3, 3]  # strength 0.5 of 6 steps


def _run(pipe, root, out, monkeypatch, audio=None, **kw):
    saved = {}
    real = s2v_lipsync.save_video_with_audio

    def capture(video, path, wave, **k):
        saved["video"] = video.clone()
        return real(video, path, wave, **k)

    monkeypatch.setattr(s2v_lipsync, "save_video_with_audio", capture)
    req = lipsync_request(
        "a face talking",
        audio or root / "new.wav",
        root / "talk.mp4",
        max_area=64 * 64,
        infer_frames=8,
        steps=2,
        seed=1,
        **kw,
    )
    lipsync(pipe, req, out)
    return saved["video"]


def test_masked_lipsync_keeps_every_pixel_outside_the_mask(setup, tmp_path, monkeypatch):
    root, pipe = setup
    video = _run(pipe, root, tmp_path / "o.mp4", monkeypatch, mask=root / "mouth.png")
    source, _ = s2v_lipsync._source_frames(root / "talk.mp4", 64 * 64, pipe.size_divisor)
    assert video.shape == (3, 14, 64, 64)  # video 14 frames < audio 24 frames: 2 clips, trimmed
    inside = torch.zeros(64, 64, dtype=torch.bool)
    inside[40:56, 16:48] = True
    assert torch.equal(video[:, :, ~inside], source[:, :, ~inside])
    assert float((video[:, :, inside] - source[:, :, inside]).abs().mean()) > 0.05
    video_s, audio_s = stream_durations(tmp_path / "o.mp4")
    assert abs(video_s - 14 / 16) < 1 / 16 and abs(audio_s - video_s) < 1 / 16  # A/V in sync


def test_masked_lipsync_with_a_stride_4_vae_keeps_its_own_latent_cells(
    setup, tmp_path, monkeypatch
):
    """s2v-tiny's VAE has spatial stride 4: the kept latents are its 4 x 4 cells (8 x 8 cells
    of the Wan2.1 VAE's stride would not even match its latent grid)."""
    from helpers.random_weights import randomize_
    from helpers.tiny_s2v import VAE
    from openwan.models.vae import WanVAE

    root, pipe = setup
    vae4 = randomize_(WanVAE(VAE.replace(dim_mult=(1, 2, 4), temperal_downsample=(True, True))))
    small = WanS2V(pipe.dit, vae4, pipe.text_encoder, pipe.audio_encoder, device="cpu")
    video = _run(small, root, tmp_path / "o4.mp4", monkeypatch, mask=root / "mouth.png")
    source, _ = s2v_lipsync._source_frames(root / "talk.mp4", 64 * 64, small.size_divisor)
    inside = torch.zeros(64, 64, dtype=torch.bool)
    inside[40:56, 16:48] = True
    assert video.shape == (3, 14, 64, 64)
    assert torch.equal(video[:, :, ~inside], source[:, :, ~inside])
    assert float((video[:, :, inside] - source[:, :, inside]).abs().mean()) > 0.05


def test_whole_frame_edit_and_audio_shorter_than_video(setup, tmp_path, monkeypatch):
    root, pipe = setup
    write_wav(tmp_path / "short.wav", speech_like(0.5, 16000, seed=4)[None], 16000)
    video = _run(pipe, root, tmp_path / "o.mp4", monkeypatch, tmp_path / "short.wav", strength=0.5)
    source, _ = s2v_lipsync._source_frames(root / "talk.mp4", 64 * 64, pipe.size_divisor)
    assert video.shape[1] == 8  # 0.5 s of audio = 8 frames: one clip
    assert float((video - source[:, :8]).abs().mean()) > 0.01  # no mask: every pixel re-made


def _req(root, **kw):
    return lipsync_request(
        "a face talking", root / "new.wav", root / "talk.mp4", max_area=64 * 64,
        infer_frames=8, steps=2, seed=1, **kw,
    )  # fmt: skip


def test_interrupted_lipsync_resumes_after_the_last_finished_clip(setup, tmp_path, monkeypatch):
    root, pipe = setup
    full = _run(pipe, root, tmp_path / "full.mp4", monkeypatch, mask=root / "mouth.png")
    assert not (tmp_path / "full.mp4.parts").exists()  # removed once the output is written

    out = tmp_path / "cut.mp4"
    with pytest.raises(StopAfterFirstClip):
        lipsync(pipe, _req(root, mask=root / "mouth.png"), out, on_clip=stop_after_first_clip)
    assert not out.exists() and (tmp_path / "cut.mp4.parts" / "clip_0000.safetensors").is_file()
    with counted_calls(pipe.dit) as calls:
        resumed = _run(pipe, root, out, monkeypatch, mask=root / "mouth.png")
    assert len(calls) == 2 * 2  # clip 1 only: 2 steps x (cond + uncond)
    assert torch.equal(resumed, full)
    # a different edit (here: the strength) of the same output refuses the stored clips
    with pytest.raises(StopAfterFirstClip):
        lipsync(pipe, _req(root, mask=root / "mouth.png"), out, on_clip=stop_after_first_clip)
    with pytest.raises(RequestError, match="different request"):
        lipsync(pipe, _req(root, mask=root / "mouth.png", strength=0.5), out)


def test_mask_video_gives_every_frame_its_own_region(setup, tmp_path, monkeypatch):
    root, pipe = setup
    masks = np.zeros((14, 64, 64, 3), np.uint8)
    boxes = [(40, 56, 16, 48) if i < 7 else (8, 24, 8, 40) for i in range(14)]
    for i, (y0, y1, x0, x1) in enumerate(boxes):
        masks[i, y0:y1, x0:x1] = 255
    save_video(masks, tmp_path / "masks.mp4", fps=16)
    video = _run(pipe, root, tmp_path / "o.mp4", monkeypatch, mask=tmp_path / "masks.mp4")
    source, _ = s2v_lipsync._source_frames(root / "talk.mp4", 64 * 64, pipe.size_divisor)
    decoded = s2v_lipsync._mask(tmp_path / "masks.mp4", (64, 64), 14)[0, 0] > 0.5  # [14, H, W]
    assert decoded.shape == (14, 64, 64) and not torch.equal(decoded[0], decoded[13])
    for f in range(14):
        inside = decoded[f]
        assert torch.equal(video[:, f, ~inside], source[:, f, ~inside]), f
        assert float((video[:, f, inside] - source[:, f, inside]).abs().mean()) > 0.02, f
    save_video(masks[:5], tmp_path / "short.mp4", fps=16)
    with pytest.raises(RequestError, match="has 5 frames"):
        lipsync(pipe, _req(root, mask=tmp_path / "short.mp4"), tmp_path / "x.mp4")
    assert not list(tmp_path.glob("x.mp4*"))


def test_bad_lipsync_inputs(setup, tmp_path):
    from PIL import Image

    root, pipe = setup
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "black.png")
    with pytest.raises(RequestError, match="no white pixels"):
        lipsync(
            pipe,
            lipsync_request(
                "a",
                root / "new.wav",
                root / "talk.mp4",
                mask=tmp_path / "black.png",
                max_area=4096,
                infer_frames=8,
                steps=1,
            ),
            tmp_path / "o.mp4",
        )
    with pytest.raises(RequestError, match="strength"):
        lipsync(
            pipe,
            lipsync_request("a", root / "new.wav", root / "talk.mp4", strength=1.5),
            tmp_path / "o.mp4",
        )
    with pytest.raises(RequestError, match=".mp4"):
        lipsync(pipe, lipsync_request("a", root / "new.wav", root / "talk.mp4"), tmp_path / "o.gif")
    assert not list(tmp_path.glob("o.*"))


def test_cli_lipsync(setup, tmp_path, capsys):
    from openwan.cli.main import main

    root, _ = setup
    common = [
        "generate",
        "--task",
        "s2v-14B",
        "--ckpt-dir",
        str(root / "ckpt"),
        "--prompt",
        "a face talking",
        "--audio",
        str(root / "new.wav"),
        "--size",
        "64*64",
        "--infer_frames",
        "8",
        "--sample_steps",
        "2",
        "--device",
        "cpu",
        "--quiet",
    ]
    out = tmp_path / "cli.mp4"
    args = ["--lipsync-video", str(root / "talk.mp4"), "--lipsync-mask", str(root / "mouth.png")]
    assert main([*common, *args, "--save_file", str(out)]) == 0
    video_s, _ = stream_durations(out)
    assert abs(video_s - 14 / 16) < 1 / 16
    assert main([*common, "--lipsync-mask", str(root / "mouth.png")]) == 2
    assert "need --lipsync-video" in capsys.readouterr().err
    bad = [
        *common,
        "--lipsync-video",
        str(tmp_path / "missing.mp4"),
        "--save_file",
        str(tmp_path / "m.mp4"),
    ]
    assert main(bad) == 2 and not (tmp_path / "m.mp4").exists()
    assert "not found" in capsys.readouterr().err


def test_each_clip_reads_the_audio_three_frames_on(setup, tmp_path, monkeypatch):
    """S2V's layout shows audio frame i - 3 at a clip's decoded frame i (generation's pre-roll):
    an edited clip, which starts at its own first frame, gets the audio from 3 frames on, the
    frames past the audio's end silent (zero features)."""
    from openwan.io.audio import read_audio
    from openwan.models.audio import bucket_features

    root, pipe = setup
    seen = []
    sample = pipe._sample
    monkeypatch.setattr(
        pipe, "_sample", lambda noise, cond, *a: seen.append(cond) or sample(noise, cond, *a)
    )
    _run(pipe, root, tmp_path / "lead.mp4", monkeypatch, mask=root / "mouth.png")
    feats = pipe.audio_encoder.features(read_audio(root / "new.wav")).cpu()
    bucket, _ = bucket_features(feats, 8)
    assert len(seen) == 2 and bucket.shape[0] == 24  # 1.5 s of audio: 3 clips' worth
    for r, cond in enumerate(seen):
        want = bucket[8 * r + 3 : 8 * r + 11].permute(1, 2, 0).unsqueeze(0)
        torch.testing.assert_close(cond.audio, want, rtol=0, atol=0)
