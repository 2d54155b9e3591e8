import numpy as np
import pytest

from helpers.tiny_s2v import speech_like, write_wav
from openwan.io.audio import AudioError, read_audio, save_video_with_audio, stream_durations


def test_16k_mono_wav_reads_back(tmp_path):
    wave = speech_like(0.5, 16000)
    out = read_audio(write_wav(tmp_path / "a.wav", wave, 16000))
    assert out.dtype == np.float32 and out.shape == wave.shape
    np.testing.assert_allclose(out, wave, atol=2 / 32767)  # int16 quantisation only


def test_stereo_44k_is_averaged_and_resampled(tmp_path):
    tone = speech_like(1.0, 44100)
    out = read_audio(write_wav(tmp_path / "s.wav", np.stack([tone, np.zeros_like(tone)]), 44100))
    assert abs(out.shape[0] - 16000) <= 32
    ref = read_audio(write_wav(tmp_path / "m.wav", tone / 2, 44100))  # the channel mean
    n = min(out.shape[0], ref.shape[0])
    np.testing.assert_allclose(out[:n], ref[:n], atol=2e-4)


@pytest.mark.parametrize(
    "kind,match",
    [
        ("silent", "silent"),
        ("short", "too short"),
        ("corrupt", "cannot decode"),
        ("missing", "not found"),
        ("low_rate", "not supported"),
    ],
)
def test_bad_audio_is_a_clear_error(tmp_path, kind, match):
    path = tmp_path / "bad.wav"
    if kind == "silent":
        write_wav(path, np.zeros(16000, np.float32), 16000)
    elif kind == "short":
        write_wav(path, speech_like(0.05, 16000), 16000)
    elif kind == "corrupt":
        path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage" * 10)
    elif kind == "low_rate":
        write_wav(path, speech_like(1.0, 4000), 4000)
    with pytest.raises(AudioError, match=match):
        read_audio(path)


def test_muxed_audio_matches_the_video_duration(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (37, 32, 48, 3), dtype=np.uint8)
    out = save_video_with_audio(frames, tmp_path / "v.mp4", speech_like(3.0, 16000), fps=16)
    video_s, audio_s = stream_durations(out)
    assert video_s == pytest.approx(37 / 16)
    assert abs(audio_s - video_s) <= 1 / 16  # within one frame
    assert read_audio(out).shape[0] >= 37 / 16 * 16000 - 1  # the AAC track decodes


@pytest.mark.parametrize("ext,codec", [("mp3", "libmp3lame"), ("m4a", "aac"), ("flac", "flac")])
def test_compressed_formats_decode(tmp_path, ext, codec):
    import av

    wave = speech_like(1.0, 24000)
    path = tmp_path / f"a.{ext}"
    with av.open(str(path), "w") as c:
        stream = c.add_stream(codec, rate=24000)
        stream.layout = "mono"
        fmt = stream.codec_context.codec.audio_formats[0].name
        for start in range(0, wave.size, 1152):
            chunk = wave[start : start + 1152]
            data = chunk[None] if fmt.endswith("p") else chunk.reshape(1, -1)
            if fmt.startswith("s16"):
                data = (data * 32767).astype(np.int16)
            elif fmt.startswith("s32"):
                data = (data * 2**31).astype(np.int32)
            frame = av.AudioFrame.from_ndarray(data, format=fmt, layout="mono")
            frame.sample_rate, frame.pts = 24000, start
            for packet in stream.encode(frame):
                c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)
    out = read_audio(path)
    assert abs(out.shape[0] - 16000) <= 0.08 * 16000  # encoder delay/padding at most ~80 ms
    assert 0.1 < np.abs(out).max() < 0.5  # the tone survived, at its level
