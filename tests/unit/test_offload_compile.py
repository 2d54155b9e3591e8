"""Block offload streams blocks (and S2V's audio injectors) in order with a one-module prefetch and
changes no value, compiled or not;
regional compile matches eager, and falls back (saying why) when the compiler cannot run."""

import pytest
import torch
import torch.nn.functional as F

from helpers.random_weights import randomize_
from openwan.configs.dit import DiTConfig
from openwan.models.dit import WanModel
from openwan.runtime.compile import apply_compile, compile_unavailable, is_compiled
from openwan.runtime.offload import apply_block_offload, stream_order

CFG = DiTConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=3, text_dim=16, text_len=32)


needs_compile = pytest.mark.skipif(
    compile_unavailable("aot_eager") is not None, reason="torch.compile unavailable"
)


def model_and_inputs():
    model = randomize_(WanModel(CFG).eval(), seed=1, scale=0.1)
    g = torch.Generator().manual_seed(2)
    return model, (
        torch.randn(1, 16, 2, 4, 4, generator=g),
        torch.tensor([600.0]),
        [torch.randn(5, 16, generator=g)],
    )


@torch.no_grad()
def test_block_offload_prefetches_the_next_block_and_keeps_the_output():
    model, args = model_and_inputs()
    ref = model(*args)
    offload = apply_block_offload(model, "cpu")
    assert offload.to("meta") is offload  # placement belongs to the offloader
    assert torch.equal(offload(*args), ref)
    assert offload.events == [
        ("load", 0), ("load", 1), ("evict", 0), ("load", 2), ("evict", 1), ("evict", 2),
    ]  # fmt: skip
    offload.events.clear()
    offload(*args)
    assert [e for e in offload.events if e[0] == "load"] == [("load", 0), ("load", 1), ("load", 2)]
    assert offload.remove() is model
    offload.events.clear()
    assert torch.equal(model(*args), ref) and offload.events == []


@torch.no_grad()
def test_s2v_block_offload_streams_each_audio_injector_after_its_block():
    from helpers.tiny_s2v import s2v_kwargs, s2v_model
    from openwan.runtime.cache import CacheSpec, apply_cache

    model = s2v_model()
    x, kw, cond, _ = s2v_kwargs(5, first=False)
    t = torch.tensor([700.0])
    ref = model(x, t, [cond], **kw)
    inj = model.audio_injector
    assert model.injected == {0: 0, 1: 1}
    order = [model.blocks[0], inj.injector_adain_layers[0], inj.injector[0],
             model.blocks[1], inj.injector_adain_layers[1], inj.injector[1]]  # fmt: skip
    assert [id(m) for m in stream_order(model)] == [id(m) for m in order]
    # around a cache wrapper (as the CLI stacks them): same values, every unit loaded once
    # with the next one prefetched, and evicted after it ran
    offload = apply_block_offload(model, "cpu", denoiser=apply_cache(model, CacheSpec(cfg=True)))
    assert torch.equal(offload(x, t, [cond], **kw), ref)
    loads = [i for e, i in offload.events if e == "load"]
    evicts = [i for e, i in offload.events if e == "evict"]
    assert loads == list(range(6)) and evicts == list(range(6))
    assert offload.events.index(("load", 3)) < offload.events.index(("evict", 2))
    offload.remove().remove()
    offload.events.clear()
    assert torch.equal(model(x, t, [cond], **kw), ref) and offload.events == []
    # placement (no forward on "meta"): the streamed modules wait on the CPU, the rest moves
    apply_block_offload(other := s2v_model(), "meta")
    assert {
        p.device.type for p in [*other.blocks.parameters(), *other.audio_injector.parameters()]
    } == {"cpu"}
    assert {p.device.type for n, p in other.named_parameters()
            if not n.startswith(("blocks.", "audio_injector."))} == {"meta"}  # fmt: skip


def compiled_model_inputs_and_eager_output():
    """The test model compiled (aot_eager), its inputs, and its eager output before compiling."""
    model, args = model_and_inputs()
    ref = model(*args)
    assert apply_compile(model, backend="aot_eager") is None
    return model, args, ref


@needs_compile
@torch.no_grad()
def test_regional_compile_matches_eager():
    model, args, ref = compiled_model_inputs_and_eager_output()
    assert all(is_compiled(b) for b in model.blocks)
    assert torch.allclose(model(*args), ref, rtol=1e-5, atol=1e-6)
    # weights re-pointed at other tensors (what block offload does on a GPU) are read at the
    # next call, not baked into the graph
    for p in model.blocks.parameters():
        p.data = p.data * 1.5
    eager = WanModel(CFG).eval()
    eager.load_state_dict(model.state_dict())
    scaled = eager(*args)
    assert not torch.allclose(scaled, ref, atol=1e-3)
    assert torch.allclose(model(*args), scaled, rtol=1e-5, atol=1e-6)


@needs_compile
@torch.no_grad()
def test_compiled_blocks_stream_under_block_offload():
    model, args, ref = compiled_model_inputs_and_eager_output()
    offload = apply_block_offload(model, "cpu")
    assert torch.allclose(offload(*args), ref, rtol=1e-5, atol=1e-6)
    # the hooks run around the compiled forwards, in order, one block prefetched
    assert offload.events == [
        ("load", 0), ("load", 1), ("evict", 0), ("load", 2), ("evict", 1), ("evict", 2),
    ]  # fmt: skip


def test_compile_falls_back_with_the_reason(caplog):
    model, _ = model_and_inputs()
    reason = apply_compile(model, backend="no-such-backend")
    assert reason is not None and "no-such-backend" in reason
    assert not any(is_compiled(b) for b in model.blocks)
    assert "staying eager" in caplog.text


@pytest.mark.skipif(compile_unavailable("inductor") is not None, reason="no inductor here")
def test_inductor_compiles_the_linear_leaf_with_its_own_gemm():
    # eager CPU inference calls oneDNN's linear op on plain weights; inductor cannot lower that op
    # (it expects weights it prepacked itself), so traced code must take F.linear instead
    from openwan.ops.linear import linear

    g = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(*s, generator=g) for s in ((1, 20, 64), (48, 64), (48,)))
    with torch.no_grad():
        got = torch.compile(lambda a: linear(a, w, b, gelu_tanh=True), backend="inductor")(x)
        want = F.gelu(F.linear(x, w, b), approximate="tanh")
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)
