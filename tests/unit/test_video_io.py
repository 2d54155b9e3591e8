import numpy as np
import pytest
import torch

from openwan.io import video as vio


def _clip(frames=9, h=32, w=48):
    v = torch.full((3, frames, h, w), -1.0)
    for f in range(frames):
        v[0, f, 8:24, 2 + 4 * f : 14 + 4 * f] = 1.0  # a red square moving right
    return v


def test_uint8_conversion_matches_official_truncation():
    v = torch.tensor([-1.0, -0.5, 0.0, 0.999, 1.0, 2.0]).view(1, 1, 1, 6).expand(3, 1, 1, 6)
    out = vio.to_uint8_frames(v)[0, 0, :, 0]
    # (x + 1) / 2 * 255 truncated; values outside [-1, 1] clamped first
    assert out.tolist() == [0, 63, 127, 254, 255, 255]


def test_mp4_round_trip_keeps_content_and_metadata(tmp_path):
    path = vio.save_video(_clip(), tmp_path / "a.mp4", fps=16, metadata={"prompt": "红色 square"})
    frames, fps = vio.read_video(path)
    assert frames.shape == (9, 32, 48, 3) and fps == 16
    # the square is red where it should be and the background dark (lossy codec: loose bounds)
    assert frames[4, 16, 24, 0] > 200 and frames[4, 16, 24, 1] < 60
    assert frames[4, 2, 2].max() < 40
    assert vio.read_metadata(path) == {"prompt": "红色 square"}
    assert [p.name for p in tmp_path.iterdir()] == ["a.mp4"]


def test_png_for_a_single_frame(tmp_path):
    path = vio.save_image(_clip(frames=1), tmp_path / "a.png", metadata={"seed": 3})
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im)
    assert arr.shape == (32, 48, 3) and arr[16, 8, 0] == 255 and arr[16, 8, 1] == 0
    assert vio.read_metadata(path) == {"seed": 3}


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    import av

    real_from_ndarray = av.VideoFrame.from_ndarray
    calls = {"n": 0}

    def flaky(arr, format):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(28, "No space left on device")
        return real_from_ndarray(arr, format=format)

    monkeypatch.setattr(av.VideoFrame, "from_ndarray", flaky)
    target = tmp_path / "out.mp4"
    target.write_bytes(b"previous result")
    with pytest.raises(vio.MediaError, match="No space left on device"):
        vio.save_video(_clip(), target)
    # the previous file is untouched and no temp file is left behind
    assert target.read_bytes() == b"previous result"
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"\[3, F, H, W\]"):
        vio.save_video(torch.zeros(4, 2, 8, 8), tmp_path / "x.mp4")
    with pytest.raises(ValueError, match="must end in .mp4"):
        vio.save_video(_clip(), tmp_path / "x.avi")
    with pytest.raises(vio.MediaError, match="not found"):
        vio.read_video(tmp_path / "missing.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(vio.MediaError, match="cannot decode|no video stream|no decodable"):
        vio.read_video(bad)
