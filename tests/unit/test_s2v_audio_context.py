"""``S2VConfig.audio_context`` (openwan): a later clip's audio encoder reads the audio before the
clip instead of the clip's first frame repeated over the motion history (the official layout)."""

import torch

from helpers.tiny_s2v import s2v_kwargs, s2v_model
from openwan.models.audio import clip_audio_context


def test_context_of_the_first_frame_repeated_is_the_official_encoding():
    model = s2v_model()
    _, kw, _, _ = s2v_kwargs(0, first=False)
    audio = kw["audio_input"]  # [1, 25, 32, 8]: 2 latent frames
    want = model.encode_audio(audio)
    same = model.encode_audio(audio, audio_context=audio[..., :1].expand(-1, -1, -1, 16))
    for a, b in zip(want, same):
        assert torch.equal(a, b)


def test_context_changes_only_the_latent_frames_whose_window_reaches_before_the_clip():
    """The encoder is causal with a 9-frame window ending at frame 4m of the clip (m the latent
    frame): with 4 latent frames, m = 0 and 1 see the context, m = 2 and 3 only the clip."""
    model = s2v_model()
    g = torch.Generator().manual_seed(1)
    audio = torch.randn(1, 25, 32, 16, generator=g)
    ctx = torch.randn(1, 25, 32, 16, generator=g)
    local0, glob0 = model.encode_audio(audio)
    local1, glob1 = model.encode_audio(audio, audio_context=ctx)
    for a, b in ((local0, local1), (glob0, glob1)):
        assert a.shape[1] == 4
        assert not torch.allclose(a[:, :2], b[:, :2])
        torch.testing.assert_close(a[:, 2:], b[:, 2:], rtol=0, atol=1e-6)
    # a context longer than the 73-frame history: its last 73 frames
    long = torch.cat([torch.randn(1, 25, 32, 70, generator=g), ctx], -1)  # 86 frames
    for a, b in zip(
        model.encode_audio(audio, audio_context=long),
        model.encode_audio(audio, audio_context=long[..., -73:]),
    ):
        assert torch.equal(a, b)


def test_forward_passes_the_context_to_the_audio_encoder():
    model = s2v_model()
    x, kw, ctx_text, _ = s2v_kwargs(2, first=False)
    t = torch.tensor([500.0])
    ctx = torch.randn(1, 25, 32, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        plain = model(x, t, [ctx_text], **kw)
        same = model(
            x, t, [ctx_text], **kw, audio_context=kw["audio_input"][..., :1].expand(-1, -1, -1, 5)
        )
        other = model(x, t, [ctx_text], **kw, audio_context=ctx)
    assert torch.equal(plain, same)
    assert (plain - other).abs().max() > 1e-4


def test_clip_audio_context_is_the_audio_just_before_the_clip():
    bucket = torch.arange(40.0).view(40, 1, 1).expand(40, 25, 3)  # frame index as the value
    assert clip_audio_context(bucket, 0, 8, 16) is None
    assert clip_audio_context(bucket, 2, 8, 0) is None
    one = clip_audio_context(bucket, 1, 8, 16)  # only 8 frames exist before clip 1
    assert one.shape == (1, 25, 3, 8) and one[0, 0, 0].tolist() == list(range(8))
    three = clip_audio_context(bucket, 3, 8, 16)
    assert three[0, 0, 0].tolist() == list(range(8, 24))
