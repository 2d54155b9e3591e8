"""Single-process pieces of context parallelism: the ring merge and the layout checks."""

import pytest
import torch
import torch.nn.functional as F

from helpers.random_weights import rel_err
from openwan.runtime.parallel import ParallelConfigError, ParallelPlan
from openwan.runtime.parallel.context import TokenSharder, block_attention, merge_partials


def test_chunked_lse_merge_equals_full_attention_with_padding():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 12, 3, 8, generator=g) for _ in range(3))
    k_lens = torch.tensor([12, 7])  # row 1: the last chunk is padding only
    mask = (torch.arange(12)[None] < k_lens[:, None])[:, None, None, :]
    ref = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask
    ).transpose(1, 2)
    out = lse = None
    for lo in (8, 0, 4):  # chunks in ring order, not position order
        valid = torch.arange(lo, lo + 4)[None] < k_lens[:, None]
        o, l = block_attention(q, k[:, lo : lo + 4], v[:, lo : lo + 4], valid)
        out, lse = (o, l) if out is None else merge_partials(out, lse, o, l)
    assert rel_err(out, ref) < 1e-6
    assert torch.isfinite(lse).all()
    chunked = block_attention(q, k, v, None, q_chunk=5)  # 5 + 5 + 2 query rows
    whole = block_attention(q, k, v, None)
    assert chunked[0].shape == whole[0].shape and chunked[1].shape == whole[1].shape
    assert rel_err(chunked[0], whole[0]) < 1e-6 and rel_err(chunked[1], whole[1]) < 1e-6


def test_sharder_pads_and_slices_rope_rows():
    sh = TokenSharder.for_length(27, 4, 3)  # 7 per rank, the last shard has 6 real tokens
    assert (sh.shard, sh.lo) == (7, 21)
    x = torch.arange(27.0)[None, :, None]
    assert sh.split(x, 28)[0, :, 0].tolist() == [21, 22, 23, 24, 25, 26, 0]
    assert sh.rope(torch.arange(27.0)).tolist() == [21, 22, 23, 24, 25, 26]
    assert TokenSharder.for_length(27, 4, 3).rope(torch.arange(20.0)).numel() == 0


def test_layout_errors_say_what_to_do():
    with pytest.raises(ParallelConfigError, match="not a multiple of ulysses x ring"):
        ParallelPlan(ulysses=2, ring=2).data_parallel(6)
    assert ParallelPlan(ulysses=2, ring=2).data_parallel(8) == 2
    with pytest.raises(ParallelConfigError, match="must divide the model's 12 attention heads"):
        ParallelPlan(ulysses=8).check_heads(12)
    with pytest.raises(ParallelConfigError, match=">= 1"):
        ParallelPlan(ulysses=0).data_parallel(4)


def test_parallel_flags_without_torchrun_are_a_clear_error(capsys, monkeypatch):
    from openwan.cli.main import main

    for var in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    assert main(["generate", "--prompt", "x", "--ulysses_size", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "torchrun --nproc_per_node 2 -m openwan generate" in err
    assert main(["generate", "--prompt", "x", "--dit-fsdp"]) == 2
    assert "need several processes" in capsys.readouterr().err
