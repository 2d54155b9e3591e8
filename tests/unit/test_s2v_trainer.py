"""openwan train-s2v: training samples built as the pipeline consumes them, bit-exact resume,
the exported folder loading in WanS2V, the int8-packed storage of shipped weights."""

import dataclasses

import numpy as np
import pytest
import torch

from helpers.random_weights import randomize_
from helpers.tiny_s2v import VAE
from openwan.checkpoint.io import (
    INT8_SCALE_SUFFIX,
    CheckpointError,
    load_state_dict,
    pack_int8,
    save_state_dict,
)
from openwan.checkpoint.vae_format import load_vae, save_vae
from openwan.data.shapes import to_tensor
from openwan.data.talking import TalkingWorld, render_face
from openwan.models.audio import bucket_features, clip_features
from openwan.models.s2v import MOTION_FRAMES
from openwan.models.vae import WanVAE
from openwan.training.s2v_trainer import (
    PRE_ROLL,
    S2VTrainConfig,
    build_wav2vec,
    export_s2v,
    item_samples,
    ship_s2v,
    train_s2v,
)

SIZE, FRAMES = 64, 8


def tiny_cfg(tmp_path, vae_dir, **kw) -> S2VTrainConfig:
    base = dict(
        run_dir=str(tmp_path / "run"),
        vae=str(vae_dir),
        items=2,
        clips=2,
        infer_frames=FRAMES,
        size=SIZE,
        steps=4,
        batch_size=2,
        warmup=1,
        num_layers=2,
        audio_inject_layers=(0, 1),
        ffn_dim=96,
        ckpt_every=100,
        log_every=1,
        w2v_conv=8,
    )
    return S2VTrainConfig(**(base | kw))


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("vae") / "vae"
    save_vae(randomize_(WanVAE(VAE), seed=1), path, format="diffusers")
    return path


def test_samples_are_what_the_pipeline_sees(vae_dir):
    vae = load_vae(vae_dir).eval()
    cfg = S2VTrainConfig(w2v_conv=8)
    audio, _ = build_wav2vec(cfg)
    item = TalkingWorld(seconds=2 * FRAMES / 16, size=SIZE)[3]
    samples = item_samples(item, 2, FRAMES, vae, audio)
    assert [bool(s["first"]) for s in samples] == [True, False]
    ref = to_tensor(render_face(item.face, np.zeros(1, np.float32), SIZE))
    video = to_tensor(item.video)
    with torch.no_grad():
        # clip 0: the latents after the reference's of [ref, 3 x ref, frames 0..4]
        clip0 = torch.cat([ref, ref.expand(-1, PRE_ROLL, -1, -1), video[:, : FRAMES - PRE_ROLL]], 1)
        want0 = vae.encode(clip0.unsqueeze(0))[0][:, 1:]
        # clip 1: the pipeline's 73-frame history (grey, then the 5 frames output so far) encoded
        # on its own gives the motion latents; the clip's 8 frames from frame 5 the target
        start = FRAMES - PRE_ROLL
        history = torch.zeros(3, MOTION_FRAMES[0], SIZE, SIZE)
        history[:, -start:] = video[:, :start]
        motion = vae.encode(history.unsqueeze(0))[0]
        both = vae.encode(torch.cat([history, video[:, start : start + FRAMES]], 1).unsqueeze(0))
    torch.testing.assert_close(samples[0]["z"], want0, rtol=0, atol=1e-6)
    torch.testing.assert_close(samples[1]["motion"], motion, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(samples[1]["z"], both[0][:, MOTION_FRAMES[1] :], rtol=0, atol=1e-6)
    torch.testing.assert_close(samples[0]["ref"], vae.encode(ref.unsqueeze(0))[0])
    bucket, _ = bucket_features(audio.features(item.audio).cpu(), FRAMES, 16)
    for r, s in enumerate(samples):
        torch.testing.assert_close(s["audio"], clip_features(bucket, r, FRAMES)[0])


def test_resume_is_bit_exact(tmp_path, vae_dir):
    whole = train_s2v(tiny_cfg(tmp_path / "a", vae_dir), show_progress=False)
    cut = tiny_cfg(tmp_path / "b", vae_dir, stop_at=2)
    train_s2v(cut, show_progress=False)
    resumed = train_s2v(
        dataclasses.replace(cut, stop_at=None), resume="latest", show_progress=False
    )
    a, b = whole.dit.state_dict(), resumed.dit.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # and training moved the weights (the comparison above is not between two untouched models)
    fresh = train_s2v(tiny_cfg(tmp_path / "c", vae_dir, steps=1, lr=0.0), show_progress=False)
    assert any(not torch.equal(a[k], v) for k, v in fresh.dit.state_dict().items())


def test_pack_int8_round_trip(tmp_path):
    torch.manual_seed(0)
    sd = {
        "conv.weight": torch.randn(6, 4, 3, 3, 3),
        "lin.weight": torch.randn(5, 7) * torch.arange(1, 6).view(5, 1),
        "lin.bias": torch.randn(5),
        "gamma": torch.randn(4, 1, 1),  # 3-d but one column per channel: still packed
    }
    packed = pack_int8(sd)
    assert packed["conv.weight"].dtype == torch.int8
    assert packed["lin.bias"].dtype == torch.float32
    save_state_dict(packed, tmp_path / "p.safetensors")
    back = load_state_dict(tmp_path / "p.safetensors")
    assert set(back) == set(sd)
    for k, v in sd.items():
        if v.dim() < 2:
            assert torch.equal(back[k], v)
            continue
        step = v.abs().flatten(1).amax(1) / 127  # one int8 step per output channel
        err = (back[k] - v).abs().flatten(1).amax(1)
        assert bool((err <= step / 2 + 1e-7).all()), k
        if v[0].numel() > 1:
            assert float(err.max()) > 0  # it is quantised, not stored as is
    with pytest.raises(ValueError, match="already looks packed"):
        pack_int8(packed)
    broken = dict(packed)
    broken.pop("lin.weight")
    save_state_dict(broken, tmp_path / "bad.safetensors")
    with pytest.raises(Exception, match=f"lin.weight{INT8_SCALE_SUFFIX}.*no int8"):
        load_state_dict(tmp_path / "bad.safetensors")


def test_shipped_export_loads_and_generates(tmp_path, vae_dir):
    from openwan.io.audio import stream_durations
    from openwan.pipelines.s2v import S2VRequest, WanS2V

    cfg = tiny_cfg(tmp_path, vae_dir, steps=1)
    result = train_s2v(cfg, show_progress=False)
    # the sample cache holds each sample's mouth region: the weights rendering the items again
    # gives (the path of caches written before the regions were stored) are the same
    from safetensors.torch import load_file

    from openwan.training.s2v_trainer import mouth_weights

    samples = load_file(str(tmp_path / "run" / "samples.safetensors"))
    weighted = dataclasses.replace(cfg, mouth_weight=4.0)
    stride = SIZE // samples["z"].shape[-1]
    cached = mouth_weights(weighted, samples, stride)
    assert float(cached.max()) == 5.0
    torch.testing.assert_close(
        cached, mouth_weights(weighted, {"first": samples["first"]}, stride), rtol=0, atol=0
    )
    plain = export_s2v(result, tmp_path / "plain")
    out = ship_s2v(result, tmp_path / "ship")
    assert (out / "vae" / "diffusion_pytorch_model.safetensors").stat().st_size < 0.4 * (
        plain / "vae" / "diffusion_pytorch_model.safetensors"
    ).stat().st_size
    pipe = WanS2V.from_pretrained(out, device="cpu")
    for k, v in result.dit.state_dict().items():
        torch.testing.assert_close(pipe.dit.state_dict()[k], v.half().float(), rtol=0, atol=0)
    ref_vae = load_vae(plain / "vae")
    for k, v in ref_vae.state_dict().items():
        scale = v.abs().max() / 127 if v.dim() >= 2 else 0.0
        assert float((pipe.vae.state_dict()[k] - v).abs().max()) <= scale / 2 + 1e-7, k
    prompt = (out / "prompt.txt").read_text(encoding="utf-8").strip()
    assert "face talking" in prompt
    from openwan.pipelines.s2v import folder_defaults

    d = folder_defaults(out)
    assert (d.size, d.infer_frames, d.prompt) == ((SIZE, SIZE), FRAMES, prompt)
    assert folder_defaults(plain).size is None  # a plain export proposes nothing
    from helpers.tiny_s2v import write_wav

    wav = write_wav(tmp_path / "a.wav", 0.3 * np.sin(np.linspace(0, 900, 16000)), 16000)
    request = S2VRequest(
        prompt=prompt,
        audio=wav,
        image=out / "reference.png",
        max_area=SIZE * SIZE,
        infer_frames=FRAMES,
        num_clip=1,
        steps=2,
        seed=0,
    )
    mp4 = pipe.generate(request, tmp_path / "o.mp4")
    video_s, audio_s = stream_durations(mp4)
    assert abs(video_s - (FRAMES - PRE_ROLL) / 16) < 1e-6
    assert abs(audio_s - video_s) <= 1 / 16


def test_mouth_weights_cover_the_mouth_of_each_samples_item():
    from openwan.data.talking import face_labels
    from openwan.training.s2v_trainer import mouth_region, mouth_weights

    cfg = S2VTrainConfig(items=3, clips=2, infer_frames=FRAMES, size=SIZE, mouth_weight=4.0)
    world = TalkingWorld(seconds=2 * FRAMES / 16, size=SIZE)
    for i in range(3):
        item = world[i]
        mask = mouth_region(item, 4)
        assert mask.shape == (SIZE // 4, SIZE // 4)
        ys, xs = np.nonzero(face_labels(item.video[-1], item.face) == 3)
        assert ys.size and bool((mask[ys // 4, xs // 4] == 1).all())
        assert 0 < float(mask.mean()) < 0.3 and mask[0, 0] == 0
    # item 1 gives a single sample (say its audio ran short): weights follow the items anyway
    first = torch.tensor([True, False, True, True, False])
    w = mouth_weights(cfg, {"first": first}, 4)
    assert w.shape == (5, 1, 1, SIZE // 4, SIZE // 4)
    want = [0, 0, 1, 2, 2]
    for row, i in enumerate(want):
        torch.testing.assert_close(w[row, 0, 0], 1 + 4.0 * mouth_region(world[i], 4))


def test_history_gain_damps_the_mouth_of_the_history_only(vae_dir):
    from openwan.data.talking import frame_envelope, openness_from_envelope

    vae = load_vae(vae_dir).eval()
    audio, _ = build_wav2vec(S2VTrainConfig(w2v_conv=8))
    item = TalkingWorld(seconds=2 * FRAMES / 16, size=SIZE)[3]
    true = item_samples(item, 2, FRAMES, vae, audio)
    damped = item_samples(item, 2, FRAMES, vae, audio, history_gain=0.25)
    # clip 0 has no history: unchanged
    for k in ("z", "motion", "ref", "audio"):
        assert torch.equal(true[0][k], damped[0][k]), k
    # clip 1: the history is the video re-rendered with the mouth opened a quarter as wide
    start = FRAMES - PRE_ROLL
    opening = openness_from_envelope(frame_envelope(item.envelope, item.video.shape[0]))
    quiet = to_tensor(render_face(item.face, 0.25 * opening, SIZE))
    history = torch.zeros(3, MOTION_FRAMES[0], SIZE, SIZE)
    history[:, -start:] = quiet[:, :start]
    with torch.no_grad():
        motion = vae.encode(history.unsqueeze(0))[0]
    torch.testing.assert_close(damped[1]["motion"], motion, rtol=1e-5, atol=1e-5)
    # (a random VAE: the mouth moves its latents little, yet far beyond the tolerance above)
    assert float((damped[1]["motion"] - true[1]["motion"]).abs().max()) > 1e-4
    torch.testing.assert_close(damped[1]["audio"], true[1]["audio"], rtol=0, atol=0)


def test_motion_noise_off_keeps_the_run_and_on_changes_it(tmp_path, vae_dir):
    base = train_s2v(tiny_cfg(tmp_path / "a", vae_dir, steps=2), show_progress=False)
    off = train_s2v(
        tiny_cfg(tmp_path / "b", vae_dir, steps=2, motion_noise=0.0), show_progress=False
    )
    on = train_s2v(
        tiny_cfg(tmp_path / "c", vae_dir, steps=2, motion_noise=0.5), show_progress=False
    )
    a, b, c = (r.dit.state_dict() for r in (base, off, on))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_init_starts_from_an_exported_dit(tmp_path, vae_dir):
    from openwan.checkpoint.io import CheckpointError

    first = train_s2v(tiny_cfg(tmp_path / "a", vae_dir, steps=2), show_progress=False)
    folder = export_s2v(first, tmp_path / "export")
    # lr 0 and EMA of identical weights: the warm-started model is the exported one exactly
    warm = train_s2v(
        tiny_cfg(tmp_path / "b", vae_dir, steps=1, lr=0.0, init=str(folder)), show_progress=False
    )
    for k, v in first.dit.state_dict().items():
        assert torch.equal(warm.dit.state_dict()[k], v), k
    with pytest.raises(CheckpointError, match="another architecture"):
        train_s2v(
            tiny_cfg(
                tmp_path / "c", vae_dir, num_layers=1, audio_inject_layers=(0,), init=str(folder)
            ),
            show_progress=False,
        )
    with pytest.raises(CheckpointError, match="no config.json"):
        train_s2v(tiny_cfg(tmp_path / "d", vae_dir, init=str(tmp_path)), show_progress=False)


def test_a_corrupt_defaults_file_is_a_clear_error(tmp_path):
    from openwan.pipelines.request import RequestError
    from openwan.pipelines.s2v import DEFAULTS_FILE, folder_defaults

    (tmp_path / DEFAULTS_FILE).write_text('{"size": [64]}')
    with pytest.raises(RequestError, match="not a valid defaults file"):
        folder_defaults(tmp_path)


def test_audio_context_rows_are_the_audio_before_each_clip(tmp_path, vae_dir):
    """``audio_context``: clip r >= 1 carries the audio frames just before its start (first
    frame repeated in front where fewer exist), clip 0 its own first frame repeated; a cache
    written without them is back-filled with exactly what a fresh encoding stores."""
    from openwan.training.s2v_trainer import audio_context_cache, sample_cache

    vae = load_vae(vae_dir).eval()
    k = 12  # more than one clip of 8 frames: clip 1 has only 8 frames before it
    cfg = tiny_cfg(tmp_path, vae_dir, audio_context=k)
    audio, _ = build_wav2vec(cfg)
    item = TalkingWorld(seconds=2 * FRAMES / 16, size=SIZE)[3]
    rows = item_samples(item, 2, FRAMES, vae, audio, context=k)
    bucket, _ = bucket_features(audio.features(item.audio).cpu(), FRAMES, 16)
    per_frame = bucket.permute(1, 2, 0)  # [25, C, frames]
    assert rows[0]["audio_ctx"].shape == (*per_frame.shape[:2], k)
    torch.testing.assert_close(rows[0]["audio_ctx"], per_frame[..., :1].expand(-1, -1, k))
    want = torch.cat([per_frame[..., :1].expand(-1, -1, k - FRAMES), per_frame[..., :FRAMES]], -1)
    torch.testing.assert_close(rows[1]["audio_ctx"], want, rtol=0, atol=0)
    # the cache: built with the rows, then back-filled from a copy stripped of them
    fresh, _ = sample_cache(cfg, vae, audio, tmp_path / "run", False)
    assert fresh["audio_ctx"].shape[0] == fresh["audio"].shape[0] == cfg.items * cfg.clips
    torch.testing.assert_close(audio_context_cache(cfg, audio, fresh["audio"]), fresh["audio_ctx"])
    with pytest.raises(CheckpointError, match="does not match"):
        audio_context_cache(cfg, audio, fresh["audio"][:-1])


def test_audio_context_trains_and_exports_and_init_accepts_either_setting(tmp_path, vae_dir):
    from openwan.configs.s2v import S2VConfig

    plain = train_s2v(tiny_cfg(tmp_path / "a", vae_dir, steps=2), show_progress=False)
    folder = export_s2v(plain, tmp_path / "plain")
    # the same weights warm-start a run that reads audio context; its export records the setting
    warm = train_s2v(
        tiny_cfg(tmp_path / "b", vae_dir, steps=2, audio_context=8, init=str(folder)),
        show_progress=False,
    )
    assert warm.dit.s2v_config.audio_context == 8
    out = export_s2v(warm, tmp_path / "ctx")
    assert S2VConfig.from_json(out / "config.json").audio_context == 8
    # and the training run differs from one without context (clip 1's audio tokens change)
    same = train_s2v(
        tiny_cfg(tmp_path / "c", vae_dir, steps=2, init=str(folder)), show_progress=False
    )
    a, b = warm.dit.state_dict(), same.dit.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)
