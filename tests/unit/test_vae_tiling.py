"""Tiled VAE decode: one tile is the untiled decode exactly; several blended tiles stay close."""

import pytest
import torch

from helpers.random_weights import randomize_
from openwan.assets import tiny_model_dir
from openwan.checkpoint.layout import locate
from openwan.checkpoint.vae_format import load_vae
from openwan.configs.vae import WAN21_VAE
from openwan.eval.metrics import psnr
from openwan.models.vae import WanVAE
from openwan.runtime.vae_tiling import apply_vae_tiling, tile_spans, tiled_decode


@pytest.fixture(scope="module")
def vae():
    return randomize_(WanVAE(WAN21_VAE.replace(dim=8, dec_dim=8)).eval(), seed=3, scale=0.05)


def test_tile_spans_cover_with_overlap():
    assert tile_spans(10, 16, 4)[1] == [0]
    assert tile_spans(20, 8, 2)[1] == [0, 6, 12]
    assert tile_spans(60, 32, 8) == (26, [0, 17, 34])  # 480P rows: 78 decoded, not 96
    assert tile_spans(104, 32, 8) == (32, [0, 24, 48, 72])  # 480P columns: already even
    for n, tile, ov in ((20, 8, 2), (33, 12, 3), (9, 8, 1), (60, 32, 8), (61, 32, 8), (90, 20, 6)):
        size, s = tile_spans(n, tile, ov)
        assert 2 * ov < size <= tile and s[0] == 0 and s[-1] + size == n
        assert all(ov <= size - (b - a) for a, b in zip(s, s[1:]))  # neighbours overlap enough
        fewer = len(s) - 1  # and no fewer tiles of the full length would cover n
        assert fewer * tile - (fewer - 1) * ov < n


@torch.no_grad()
def test_one_tile_equals_the_untiled_decode_exactly(vae):
    z = torch.randn(1, 16, 2, 6, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(tiled_decode(vae, z, tile=8, overlap=2), vae.decode(z))


@torch.no_grad()
def test_blended_tiles_are_close_to_the_untiled_decode(vae):
    # the shipped (trained) tiny VAE: with random weights the decoder's per-frame attention is a
    # global effect that no tiling preserves (35 dB at these sizes), trained weights are local
    shipped = load_vae(locate(tiny_model_dir("t2v"), None).vae, dtype=torch.float32, device="cpu")
    z = torch.randn(1, 16, 2, 20, 20, generator=torch.Generator().manual_seed(1))
    ref = shipped.decode(z)[0]
    tiled = apply_vae_tiling(shipped, tile=12, overlap=4)
    got = tiled.decode(z)[0]
    assert tile_spans(20, 12, 4)[1] == [0, 8]  # 2 x 2 tiles
    assert psnr(got, ref) >= 40.0  # measured 48.2 dB
    hard = tiled_decode(shipped, z, tile=12, overlap=1)[0]  # same tiles, almost no blending
    assert psnr(hard, ref) < psnr(got, ref)
    assert tiled.remove() is shipped and tiled.config is shipped.config
    with pytest.raises(ValueError, match="overlap < tile / 2"):
        apply_vae_tiling(vae, tile=8, overlap=4)
