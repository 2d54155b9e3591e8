"""WanS2V end to end on a tiny random checkpoint: clip-by-clip generation, trim to the audio,
AAC mux, resume after an interruption, bad inputs."""

import json

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
from openwan.io.audio import AudioError, read_audio, stream_durations
from openwan.io.video import read_video
from openwan.pipelines.request import RequestError
from openwan.pipelines.s2v import S2VRequest, WanS2V, size_within_area


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("s2v")
    ckpt = write_s2v_checkpoint(root / "ckpt")
    img = np.zeros((80, 64, 3), np.uint8)
    img[:, :32] = (200, 40, 40)
    Image.fromarray(img).save(root / "ref.png")
    # 1.3 s of 22.05 kHz stereo: resampled and averaged to 16 kHz mono on reading
    tone = speech_like(1.3, 22050)
    write_wav(root / "speech.wav", np.stack([tone, 0.5 * tone]), 22050)
    pipe = WanS2V.from_pretrained(ckpt, device="cpu")
    return root, pipe


@pytest.fixture(scope="module")
def full_run(setup, tmp_path_factory):
    root, pipe = setup
    clips = []
    out = tmp_path_factory.mktemp("full") / "a.mp4"
    pipe.generate(_request(root), out, on_clip=lambda r, n: clips.append(n))
    return out, clips


def _request(root, **kw):
    args = dict(
        prompt="a red face talking",
        audio=root / "speech.wav",
        image=root / "ref.png",
        max_area=64 * 64,
        infer_frames=8,
        steps=2,
        seed=7,
    )
    args.update(kw)
    return S2VRequest(**args)


def test_size_rule_matches_the_official_examples():
    # fits already: the first scale (1.0) rounded up to multiples of 64
    assert size_within_area(480, 832, 1280 * 720) == (512, 832)
    # too large: scaled down, rounded up, area within the limit
    h, w = size_within_area(1080, 1920, 1024 * 704)
    assert h % 64 == 0 and w % 64 == 0 and h * w <= 1024 * 704 and w > h


def test_generates_all_clips_trimmed_to_the_audio_with_sound(full_run):
    out, clips = full_run
    # 1.3 s -> 38 feature frames at 30 fps -> int(38 / 15) + 1 = 3 clips of 8 frames
    assert clips == [3, 3, 3]
    frames, fps = read_video(out)
    # 5 + 8 + 8 = 21 generated frames (the first clip drops 3); the audio is 20.8 frames long
    assert frames.shape == (21, 64, 64, 3) and fps == 16
    video_s, audio_s = stream_durations(out)
    assert abs(video_s - audio_s) <= 1 / 16
    assert not out.with_name("a.mp4.parts").exists()


def test_resume_after_an_interruption_reuses_finished_clips(setup, full_run, tmp_path):
    root, pipe = setup
    req = _request(root)
    full = full_run[0]

    out = tmp_path / "resumed.mp4"
    with pytest.raises(StopAfterFirstClip):
        pipe.generate(req, out, on_clip=stop_after_first_clip)
    assert not out.exists() and (tmp_path / "resumed.mp4.parts" / "clip_0000.safetensors").is_file()
    with counted_calls(pipe.dit) as calls:
        pipe.generate(req, out)
    assert len(calls) == 2 * 2 * 2  # clips 1 and 2 only: 2 steps x (cond + uncond)
    a, b = read_video(full)[0].astype(float), read_video(out)[0].astype(float)
    assert np.abs(a - b).mean() < 1.0  # same frames (up to the lossy encode)


def test_parts_of_another_request_are_refused(setup, tmp_path):
    root, pipe = setup
    parts = tmp_path / "x.mp4.parts"
    parts.mkdir()
    wave = read_audio(root / "speech.wav")
    stamp = _request(root, seed=1).fingerprint(wave, pipe.model_id)  # differs only in the seed
    (parts / "request.json").write_text(json.dumps(stamp))
    with pytest.raises(RequestError, match="different request"):
        pipe.generate(_request(root, seed=2), tmp_path / "x.mp4")


def test_clips_made_with_another_cache_are_refused(setup, tmp_path):
    from openwan.runtime.cache import CacheSpec, apply_cache
    from openwan.runtime.offload import apply_block_offload

    root, pipe = setup
    out = tmp_path / "c.mp4"
    with pytest.raises(StopAfterFirstClip):
        pipe.generate(_request(root), out, on_clip=stop_after_first_clip)
    plain = pipe.dit
    pipe.dit = apply_cache(plain, CacheSpec(taylor=True, taylor_interval=2, taylor_warmup=0))
    try:
        assert pipe.resume_key == pipe.model_id + "|cache:taylor:2"
        with pytest.raises(RequestError, match="different request"):
            pipe.generate(_request(root), out)
        # block offload changes no value: the key sees the cache through it, and nothing else
        pipe.dit = apply_block_offload(plain, "cpu", denoiser=pipe.dit)
        assert pipe.resume_key == pipe.model_id + "|cache:taylor:2"
        pipe.dit = pipe.dit.remove()
    finally:
        pipe.dit = pipe.dit.remove()
    assert pipe.resume_key == pipe.model_id


def test_clips_made_with_another_quantization_or_vae_tiling_are_refused(setup, tmp_path):
    import copy

    from openwan.runtime.quant import apply_quant
    from openwan.runtime.vae_tiling import apply_vae_tiling

    root, pipe = setup
    out = tmp_path / "q.mp4"
    with pytest.raises(StopAfterFirstClip):
        pipe.generate(_request(root), out, on_clip=stop_after_first_clip)
    plain_dit, plain_vae = pipe.dit, pipe.vae
    try:
        pipe.dit = apply_quant(copy.deepcopy(plain_dit), "int8")
        assert pipe.resume_key == pipe.model_id + "|quant:int8"
        with pytest.raises(RequestError, match="different request"):
            pipe.generate(_request(root), out)
        pipe.dit, pipe.vae = plain_dit, apply_vae_tiling(plain_vae, tile=8, overlap=2)
        assert pipe.resume_key == pipe.model_id + "|vae-tiles:8/2"
        with pytest.raises(RequestError, match="different request"):
            pipe.generate(_request(root), out)
    finally:
        pipe.dit, pipe.vae = plain_dit, plain_vae
    assert pipe.resume_key == pipe.model_id


def test_model_offload_takes_the_dit_off_the_device_after_every_clip(
    setup, full_run, tmp_path, monkeypatch
):
    root, plain = setup
    pipe = WanS2V(plain.dit, plain.vae, plain.text_encoder, plain.audio_encoder, offload_model=True)
    events = []

    def spy(name, method):
        def call(*args, **kwargs):
            events.append(f"{name}:{args[0]}" if name.endswith(".to") else name)
            return method(*args, **kwargs)

        return call

    monkeypatch.setattr(pipe.dit, "to", spy("dit.to", pipe.dit.to))
    monkeypatch.setattr(pipe.vae, "decode", spy("decode", pipe.vae.decode))
    monkeypatch.setattr(pipe.text_encoder, "to", spy("text.to", pipe.text_encoder.to))
    hook = pipe.dit.register_forward_hook(lambda *a: events.append("dit"))
    try:
        out = pipe.generate(_request(root), tmp_path / "off.mp4")
    finally:
        hook.remove()
    # the text encoder: to the device, encode, back to the CPU; then per clip the DiT's steps,
    # the DiT off the device, the decode
    assert events[:2] == ["text.to:cpu", "text.to:cpu"] and "text.to:cpu" not in events[2:]
    runs = [e for k, e in enumerate(events[2:]) if k == 0 or events[k + 1] != e]
    assert runs == ["dit", "dit.to:cpu", "decode"] * len(full_run[1])
    # where the device is the CPU, offloading changes nothing in the video
    assert np.array_equal(read_video(out)[0], read_video(full_run[0])[0])


def test_num_clip_limits_and_guidance_one_skips_the_uncond_pass(setup, tmp_path):
    root, pipe = setup
    calls = []
    hook = pipe.dit.register_forward_hook(lambda *a: calls.append(1))
    try:
        out = pipe.generate(_request(root, num_clip=1, guide_scale=1.0), tmp_path / "one.mp4")
    finally:
        hook.remove()
    assert len(calls) == 2  # one clip, two steps, no unconditional branch
    assert read_video(out)[0].shape[0] == 5


def test_bad_inputs(setup, tmp_path):
    root, pipe = setup
    write_wav(tmp_path / "silent.wav", np.zeros(16000, np.float32), 16000)
    with pytest.raises(AudioError, match="silent"):
        pipe.generate(_request(root, audio=tmp_path / "silent.wav"), tmp_path / "o.mp4")
    with pytest.raises(RequestError, match="multiple of 4"):
        pipe.generate(_request(root, infer_frames=6), tmp_path / "o.mp4")
    with pytest.raises(RequestError, match=".mp4"):
        pipe.generate(_request(root), tmp_path / "o.gif")
    assert not any(tmp_path.glob("o.*"))
    assert torch.is_grad_enabled()  # sampling does not leave autograd switched off


def test_pose_video_conditions_the_clip_and_short_pose_is_padded(setup, tmp_path):
    from openwan.io.video import save_video

    root, pipe = setup
    # 3 pose frames at 8 fps (sampled at stride 1) for an 8-frame clip: padded with blank pose
    pose = np.zeros((3, 64, 64, 3), np.uint8)
    pose[:, 20:40, 20:40] = 255
    save_video(pose, tmp_path / "pose.mp4", fps=8)
    req = _request(root, num_clip=1, guide_scale=1.0, steps=1)
    plain = read_video(pipe.generate(req, tmp_path / "plain.mp4"))[0].astype(float)
    posed = pipe.generate(
        _request(root, num_clip=1, guide_scale=1.0, steps=1, pose_video=tmp_path / "pose.mp4"),
        tmp_path / "posed.mp4",
    )
    assert np.abs(read_video(posed)[0].astype(float) - plain).mean() > 1.0


def test_cli_s2v(setup, tmp_path, capsys):
    from openwan.cli.main import main

    root, _ = setup
    out = tmp_path / "cli.mp4"
    common = [
        "generate",
        "--task",
        "s2v-14B",
        "--ckpt-dir",
        str(root / "ckpt"),
        "--image",
        str(root / "ref.png"),
        "--prompt",
        "a red face talking",
        "--size",
        "64*64",
        "--infer_frames",
        "8",
        "--num_clip",
        "1",
        "--sample_steps",
        "1",
        "--device",
        "cpu",
        "--quiet",
    ]
    assert main([*common, "--audio", str(root / "speech.wav"), "--save_file", str(out)]) == 0
    video_s, audio_s = stream_durations(out)
    # the container rounds the H.264 track length to its time base (x264 frame-type choices move
    # it by under a millisecond): within half a frame of 5 frames, audio within one frame
    assert abs(video_s - 5 / 16) < 0.5 / 16 and abs(audio_s - video_s) <= 1 / 16
    (tmp_path / "broken.wav").write_bytes(b"not audio at all" * 50)
    code = main(
        [*common, "--audio", str(tmp_path / "broken.wav"), "--save_file", str(tmp_path / "b.mp4")]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot decode audio" in err[0]
    assert main(["generate", "--prompt", "x", "--audio", "a.wav"]) == 2
    assert "only apply to --task s2v-14B" in capsys.readouterr().err


def test_a_stride_4_vae_sizes_the_output_by_its_own_latent_grid(setup, tmp_path):
    # the embedded tiny VAE (3 levels) has spatial stride 4: sizes come in multiples of 32
    # (FramePack's 8-latent patches), not the 64 of the Wan2.1 VAE, and the latent grid follows
    from PIL import Image

    from helpers.random_weights import randomize_
    from helpers.tiny_s2v import VAE
    from openwan.models.vae import WanVAE

    root, pipe = setup
    vae4 = randomize_(WanVAE(VAE.replace(dim_mult=(1, 2, 4), temperal_downsample=(True, True))))
    small = WanS2V(pipe.dit, vae4, pipe.text_encoder, pipe.audio_encoder, device="cpu")
    assert small.size_divisor == 32 and pipe.size_divisor == 64
    assert small.latent_grid(8, 64, 96) == (2, 16, 24)
    img = np.zeros((64, 96, 3), np.uint8)
    img[:, 48:] = (40, 200, 40)
    Image.fromarray(img).save(tmp_path / "wide.png")
    out = small.generate(
        _request(root, image=tmp_path / "wide.png", max_area=96 * 64, num_clip=1),
        tmp_path / "wide.mp4",
    )
    frames, _ = read_video(out)
    assert frames.shape[1:] == (64, 96, 3)  # the Wan2.1 VAE's 64 px rule would give 64x64
    assert size_within_area(64, 96, 96 * 64) == (64, 64)


def test_audio_context_hands_each_later_clip_the_audio_before_it(setup, tmp_path, monkeypatch):
    from openwan.models.audio import bucket_features

    root, pipe = setup
    seen = []
    sample = pipe._sample
    monkeypatch.setattr(pipe, "audio_context", 6)
    monkeypatch.setattr(
        pipe, "_sample", lambda noise, cond, *a: seen.append(cond) or sample(noise, cond, *a)
    )
    pipe.generate(_request(root, num_clip=3), tmp_path / "ctx.mp4")
    wave = read_audio(root / "speech.wav")
    bucket, _ = bucket_features(pipe.audio_encoder.features(wave).cpu(), 8, 16)
    assert len(seen) == 3 and seen[0].audio_context is None  # the first clip: official layout
    for r in (1, 2):
        want = bucket[8 * r - 6 : 8 * r].permute(1, 2, 0).unsqueeze(0)
        torch.testing.assert_close(seen[r].audio_context, want, rtol=0, atol=0)
