"""VACE condition preprocessing: geometry, frame selection, mask folding, references, bad input."""

import numpy as np
import pytest
import torch
from PIL import Image

from openwan.io.video import MediaError
from openwan.pipelines.vace_inputs import (
    VaceSources,
    fit_reference,
    keep_last_frame_ids,
    keep_last_geometry,
    mask_channels,
    prepare_frames,
    read_image,
    read_sources,
)

STRIDE, PATCH = (4, 8, 8), (1, 2, 2)


def test_geometry_of_official_sizes():
    # 480P budget 32760 tokens (WAN_SPEC §7.4): a long 832x480 video is cut to 81 frames
    assert keep_last_geometry(120, 480, 832, 32760, 832 * 480, (4, 16, 16)) == (81, 480, 832)
    # a short one keeps its length (frames rounded down to 4n+1)
    assert keep_last_geometry(40, 480, 832, 32760, 832 * 480, (4, 16, 16)) == (37, 480, 832)
    # 720P budget 75600 with a 1280x720 video; a 640x360 video is not upscaled beyond its tokens
    assert keep_last_geometry(81, 720, 1280, 75600, 1280 * 720, (4, 16, 16)) == (81, 720, 1280)
    assert keep_last_geometry(81, 360, 640, 75600, 1280 * 720, (4, 16, 16)) == (81, 352, 640)


def test_frame_ids_follow_the_official_timestamp_rule():
    # official: frame i spans [i/fps, (i+1)/fps]; duration = middle of the last frame; samples at
    # linspace(0, duration, n_out); each takes the first frame whose span contains it
    for n_src, n_out in [(120, 81), (81, 81), (40, 37), (7, 5), (100, 9)]:
        fps = 24.0
        spans = np.stack([np.arange(n_src), np.arange(1, n_src + 1)], axis=1) / fps
        ts = np.linspace(0.0, spans[-1].mean(), n_out)
        inside = (ts[:, None] >= spans[None, :, 0]) & (ts[:, None] <= spans[None, :, 1])
        assert keep_last_frame_ids(n_src, n_out) == np.argmax(inside, axis=1).tolist()


def test_mask_channels_fold_each_8x8_cell():
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(1, 5, 32, 48, generator=g)
    out = mask_channels(mask, STRIDE, n_refs=2)
    assert out.shape == (64, 2 + 2, 4, 6)
    assert out[:, :2].abs().sum() == 0  # reference frames are unmasked
    # channel 8*dy + dx of cell (y, x) is pixel (8y + dy, 8x + dx); nearest-exact from 5 frames
    # to 2 picks frames 1 and 3 (source index floor((i + 0.5) * 5 / 2))
    for c, (dy, dx) in [(0, (0, 0)), (9, (1, 1)), (23, (2, 7)), (63, (7, 7))]:
        for k, f in [(0, 1), (1, 3)]:
            assert torch.equal(out[c, 2 + k], mask[0, f, dy::8, dx::8])


def test_reference_is_fitted_on_a_white_canvas():
    img = Image.fromarray(np.zeros((24, 40, 3), np.uint8))  # black 40x24
    ref = fit_reference(img, 32, 32)
    assert ref.shape == (3, 1, 32, 32)
    # scale min(32/24, 32/40) = 0.8 -> 19x32, centred: rows 6..24 black, the rest white
    assert ref[:, 0, 6:25].max() == -1 and ref[:, 0, :6].min() == 1 and ref[:, 0, 25:].min() == 1
    same = fit_reference(Image.fromarray(np.full((32, 32, 3), 255, np.uint8)), 32, 32)
    assert torch.equal(same, torch.ones(3, 1, 32, 32))


def test_reference_modes_are_converted(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:4, ..., 3] = 255  # top half opaque red, bottom half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    Image.fromarray(np.full((8, 8), 90, np.uint8), "L").save(tmp_path / "g.png")
    a = np.asarray(read_image(tmp_path / "a.png"))
    assert a.shape == (8, 8, 3)
    assert (a[:4] == [200, 0, 0]).all() and (a[4:] == 255).all()  # transparent -> white
    assert (np.asarray(read_image(tmp_path / "g.png")) == 90).all()


def _video(n=5, h=32, w=32):
    return np.zeros((n, h, w, 3), np.uint8)


def test_bad_input_is_refused_with_clear_messages(tmp_path):
    with pytest.raises(ValueError, match="same length and size"):
        read_sources(_video(5), _video(9))
    with pytest.raises(ValueError, match="same length and size"):
        read_sources(_video(5), _video(5, 32, 48))
    with pytest.raises(ValueError, match="needs the source video"):
        read_sources(None, _video())
    with pytest.raises(MediaError, match="reference image not found"):
        read_sources(src_ref_images=f"{tmp_path / 'missing.png'}")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(MediaError, match="cannot read reference image"):
        read_sources(src_ref_images=str(tmp_path / "bad.png"))
    with pytest.raises(MediaError, match="video file not found"):
        read_sources(tmp_path / "missing.mp4")
    with pytest.raises(ValueError, match="uint8 frames"):
        read_sources(np.zeros((5, 32, 32, 3), np.float32))
    img = Image.new("RGB", (32, 32))
    sources = VaceSources(refs=(img, img, img))
    with pytest.raises(ValueError, match="3 reference images given; at most 2 fit a 5-frame"):
        prepare_frames(sources, (32, 32), 5, STRIDE, PATCH)


def test_comma_separated_references_and_mask_values(tmp_path):
    for name in ("a.png", "b.png"):
        Image.new("RGB", (16, 16), (255, 0, 0)).save(tmp_path / name)
    sources = read_sources(
        _video(),
        np.full((5, 32, 32, 3), 255, np.uint8),
        f"{tmp_path / 'a.png'},{tmp_path / 'b.png'}",
    )
    assert len(sources.refs) == 2
    cond = prepare_frames(sources, (32, 32), 5, STRIDE, PATCH)
    assert cond.size == (32, 32) and cond.frame_num == 5
    assert torch.equal(cond.mask, torch.ones(1, 5, 32, 32))  # white mask = regenerate everything
    assert torch.equal(cond.frames, -torch.ones(3, 5, 32, 32))  # black frames in [-1, 1]
    assert cond.refs[0][0, 0, 0, 0] == 1 and cond.refs[0][1, 0, 16, 16] == -1  # canvas, red fit
