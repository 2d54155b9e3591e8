"""Training stack: flow-matching math, bit-exact resume, a loss that really drops, checkpoints."""

import dataclasses
import json
import shutil

import pytest
import torch

from openwan.checkpoint.io import CheckpointError
from openwan.training import common
from openwan.training.flow import DiTTrainConfig, flow_loss, sample_sigmas
from openwan.training.vae_trainer import VAETrainConfig, gradient_loss, train_vae

TINY_VAE = VAETrainConfig(
    steps=6, batch_size=1, frames=5, size=16, dim=4, dec_dim=4, warmup=2, log_every=1, ckpt_every=3
)


def test_flow_loss_equals_hand_computed_mse():
    class Const(torch.nn.Module):
        def forward(self, x, t, context):
            return torch.full_like(x, 0.5) + t.view(-1, 1, 1, 1, 1) / 1000

    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 16, 1, 2, 2, generator=g)
    noise = torch.randn(2, 16, 1, 2, 2, generator=g)
    sigma = torch.tensor([0.25, 0.8])
    loss = flow_loss(Const(), [], x0, sigma, noise)
    pred = 0.5 + sigma.view(-1, 1, 1, 1, 1)  # the model saw t = 1000 sigma
    assert torch.allclose(loss, ((pred - (noise - x0)) ** 2).mean())


def test_logit_normal_sigmas_are_shifted():
    cfg = DiTTrainConfig(shift=3.0)
    s = sample_sigmas(cfg, 20000, torch.Generator().manual_seed(0))
    # median of sigmoid(N(0, 1)) is 0.5; shifted by 3 -> 3*0.5 / (1 + 2*0.5) = 0.75
    assert abs(float(s.median()) - 0.75) < 0.01
    assert float(s.min()) > 0 and float(s.max()) < 1


def test_lr_schedule():
    assert common.lr_at(0, 1.0, 10, 100) == pytest.approx(0.1)
    assert common.lr_at(9, 1.0, 10, 100) == pytest.approx(1.0)
    assert common.lr_at(100, 1.0, 10, 100) == pytest.approx(0.1)


def test_vae_resume_is_bit_exact(tmp_path):
    full = train_vae(
        dataclasses.replace(TINY_VAE, run_dir=str(tmp_path / "a")), show_progress=False
    )
    half = dataclasses.replace(TINY_VAE, run_dir=str(tmp_path / "b"), stop_at=3)
    train_vae(half, show_progress=False)
    resumed = train_vae(
        dataclasses.replace(half, stop_at=None), resume="latest", show_progress=False
    )
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # two checkpoints kept, metrics and the loss curve written
    assert sorted(p.name for p in (tmp_path / "b").glob("ckpt_*.pt")) == [
        "ckpt_0000003.pt",
        "ckpt_0000006.pt",
    ]
    assert len(list(common.MetricsLog(tmp_path / "b").records())) == 6
    assert (tmp_path / "b" / "loss.png").stat().st_size > 1000


def test_vae_loss_drops_on_a_learnable_world(tmp_path):
    cfg = dataclasses.replace(TINY_VAE, run_dir=str(tmp_path), steps=50, lr=3e-3, ckpt_every=50)
    train_vae(cfg, show_progress=False)
    rows = list(common.MetricsLog(tmp_path).records())
    first = sum(r["l1"] for r in rows[:10]) / 10  # batch 1: average out the clip-to-clip noise
    last = sum(r["l1"] for r in rows[-10:]) / 10
    assert last < 0.75 * first


def test_corrupt_checkpoint_is_refused_and_the_previous_kept(tmp_path):
    common.save_checkpoint(tmp_path, 1, {"model": {"w": torch.ones(2)}})
    bad = tmp_path / "ckpt_0000002.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt.*previous checkpoint"):
        common.load_checkpoint("latest", tmp_path)
    good = common.load_checkpoint(tmp_path / "ckpt_0000001.pt", tmp_path)
    assert torch.equal(good["model"]["w"], torch.ones(2))


def test_gradient_loss_sees_edges():
    a = torch.zeros(1, 3, 8, 8)
    b = a.clone()
    b[..., 4:] = 1.0
    assert float(gradient_loss(a, a)) == 0.0
    assert float(gradient_loss(a, b)) > 0.0


def test_config_file_rejects_unknown_keys(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("steps = 5\nbatchsize = 2\n")
    with pytest.raises(ValueError, match="unknown VAETrainConfig keys \\['batchsize'\\]"):
        common.load_config(VAETrainConfig, p)
    p.write_text("steps = 5\ndim_mult = [1, 2]\n")
    cfg = common.load_config(VAETrainConfig, p, {"run_dir": "x"})
    assert cfg.steps == 5 and cfg.dim_mult == (1, 2) and cfg.run_dir == "x"


TINY_DIT = DiTTrainConfig(
    steps=4, batch_size=2, frames=5, size=16, latent_clips=4, warmup=1, log_every=1,
    ckpt_every=2, dim=32, ffn_dim=64, num_heads=2, num_layers=2, text_len=16,
    t5_dim=16, t5_layers=1, t5_heads=2, t5_ff=32, image_prob=0.5,
)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_vae_dir(tmp_path_factory):
    from openwan.checkpoint.vae_format import save_vae
    from openwan.models.vae import WanVAE
    from openwan.training.vae_trainer import vae_config

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vae") / "vae"
    save_vae(WanVAE(vae_config(dataclasses.replace(TINY_VAE, dim=4))), path, format="diffusers")
    return str(path)


def _weights(result):
    sd = {f"dit.{k}": v for k, v in result.dit.state_dict().items()}
    sd.update({f"t5.{k}": v for k, v in result.text_encoder.model.state_dict().items()})
    return sd


def test_dit_resume_is_bit_exact_and_checkpointing_changes_nothing(tmp_path, tiny_vae_dir):
    from openwan.training.flow import build, train_dit

    cfg = dataclasses.replace(TINY_DIT, vae=tiny_vae_dir)
    full = _weights(
        train_dit(dataclasses.replace(cfg, run_dir=str(tmp_path / "a")), show_progress=False)
    )
    half = dataclasses.replace(cfg, run_dir=str(tmp_path / "b"), stop_at=2)
    train_dit(half, show_progress=False)
    resumed = _weights(
        train_dit(dataclasses.replace(half, stop_at=None), resume="latest", show_progress=False)
    )
    assert full.keys() == resumed.keys() and all(torch.equal(full[k], resumed[k]) for k in full)
    init, _, _ = build(cfg, tmp_path / "init")  # the same seed: the weights before step 1
    moved = [k for k, v in init.dit.state_dict().items() if not torch.equal(v, full[f"dit.{k}"])]
    assert len(moved) > 10  # training really changed the model

    ckpt = _weights(
        train_dit(
            dataclasses.replace(cfg, run_dir=str(tmp_path / "d"), grad_checkpointing=True),
            show_progress=False,
        )
    )
    for k in full:  # activation checkpointing recomputes the same graph: same updates
        assert torch.allclose(ckpt[k], full[k], rtol=1e-5, atol=1e-6), k


def test_inflated_image_vae_treats_every_frame_as_the_image():
    from openwan.models.vae import WanVAE
    from openwan.training.vae_trainer import inflate_to_video, vae_config

    torch.manual_seed(0)
    vae = WanVAE(vae_config(dataclasses.replace(TINY_VAE, dim=4))).eval()
    vae.init_weights()
    for p in vae.parameters():  # residual branches are zero at init: give them weights
        p.data.add_(torch.randn_like(p) * 0.05)
    image = torch.rand(1, 3, 1, 16, 16) * 2 - 1
    static = image.expand(1, 3, 9, 16, 16).contiguous()

    def recon(x):
        with torch.no_grad():
            return vae.decode(vae.encode_moments(x)[0], clamp=False, normalized=False)

    assert not torch.allclose(recon(static)[:, :, 5], recon(image)[:, :, 0], atol=1e-3)
    shadow = {k: v.clone() for k, v in vae.state_dict().items()}
    inflate_to_video(vae, shadow)
    assert all(torch.equal(shadow[k], v) for k, v in vae.state_dict().items())
    out, ref = recon(static), recon(image)[:, :, 0]
    for f in range(9):  # a still clip decodes to the image reconstruction in every frame
        assert torch.allclose(out[:, :, f], ref, atol=1e-5), f


def test_dit_warm_start_from_an_export_begins_at_the_exported_weights(tmp_path, tiny_vae_dir):
    from openwan.training.flow import build, export_model, train_dit

    cfg = dataclasses.replace(TINY_DIT, vae=tiny_vae_dir, run_dir=str(tmp_path / "a"))
    result = train_dit(cfg, show_progress=False)
    trained = _weights(result)
    export = export_model(result, tmp_path / "export")
    # another seed and vocabulary size: neither the random init nor a new tokenizer may leak in
    warm = dataclasses.replace(cfg, init=str(export), seed=5, vocab_size=300)
    model, encoder, tok_dir = build(warm, tmp_path / "b")
    got = {f"dit.{k}": v for k, v in model.dit.state_dict().items()}
    got.update({f"t5.{k}": v for k, v in model.text.state_dict().items()})
    assert got.keys() == trained.keys() and all(torch.equal(got[k], trained[k]) for k in got)
    assert all(p.requires_grad for p in model.parameters())
    exported_vocab = (export / "tokenizer" / "tokenizer.json").read_text(encoding="utf-8")
    assert (tok_dir / "tokenizer.json").read_text(encoding="utf-8") == exported_vocab
    prompt = ["a red circle moving up on a black background"]
    assert torch.equal(encoder.tokenize(prompt)[0], result.text_encoder.tokenize(prompt)[0])
    cold, _, _ = build(dataclasses.replace(warm, init=None), tmp_path / "c")
    assert not torch.equal(cold.dit.patch_embedding.weight, model.dit.patch_embedding.weight)


def test_dit_warm_start_refuses_a_different_architecture(tmp_path, tiny_vae_dir):
    from openwan.training.flow import build, export_model, train_dit

    cfg = dataclasses.replace(TINY_DIT, vae=tiny_vae_dir, run_dir=str(tmp_path / "a"), steps=1)
    export = export_model(train_dit(cfg, show_progress=False), tmp_path / "export")
    with pytest.raises(ValueError, match="different DiT"):
        build(dataclasses.replace(cfg, init=str(export), num_layers=3), tmp_path / "b")
    with pytest.raises(ValueError, match="different text encoder"):
        build(dataclasses.replace(cfg, init=str(export), t5_ff=48), tmp_path / "c")
    with pytest.raises(ValueError, match="no transformer/config.json"):
        build(dataclasses.replace(cfg, init=str(tmp_path)), tmp_path / "d")


def test_train_cli_passes_init_through_and_reports_a_bad_folder(tmp_path, tiny_vae_dir, capsys):
    from openwan.cli.main import main

    fields = dataclasses.asdict(dataclasses.replace(TINY_DIT, run_dir=str(tmp_path / "run")))
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({k: v for k, v in fields.items() if v is not None}))
    argv = ["train", "--config", str(config), "--vae", tiny_vae_dir, "--quiet"]
    assert main([*argv, "--init", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    # refused before the latent encoding (nothing written), in one line
    assert err.strip() == (
        f"openwan: error: init model {tmp_path / 'nothing'} has no transformer/config.json: "
        "give a folder written by openwan train --export"
    )
    assert not (tmp_path / "run").exists()


def test_quiet_training_prints_no_progress_bars(tmp_path, tiny_vae_dir, capsys):
    from openwan.training.flow import train_dit

    cfg = dataclasses.replace(TINY_DIT, vae=tiny_vae_dir, run_dir=str(tmp_path / "q"), steps=1)
    train_dit(cfg, show_progress=False)
    err = capsys.readouterr().err
    assert "encode latents" not in err and "train" not in err
    train_dit(dataclasses.replace(cfg, run_dir=str(tmp_path / "p")), show_progress=True)
    assert "encode latents" in capsys.readouterr().err


def test_bf16_training_follows_fp32_and_resumes_bit_exactly(tmp_path, tiny_vae_dir):
    from openwan.training.flow import build, train_dit

    cfg = dataclasses.replace(TINY_DIT, vae=tiny_vae_dir)
    init = {f"dit.{k}": v for k, v in build(cfg, tmp_path / "init")[0].dit.state_dict().items()}
    fp32 = _weights(
        train_dit(dataclasses.replace(cfg, run_dir=str(tmp_path / "a")), show_progress=False)
    )
    bf16_cfg = dataclasses.replace(cfg, run_dir=str(tmp_path / "b"), precision="bf16")
    bf16 = _weights(train_dit(bf16_cfg, show_progress=False))
    assert all(v.dtype == torch.float32 for v in bf16.values())  # fp32 master weights
    assert any(not torch.equal(fp32[k], bf16[k]) for k in fp32)  # autocast really ran
    step32 = torch.cat([(fp32[k] - init[k]).flatten() for k in init])
    step16 = torch.cat([(bf16[k] - init[k]).flatten() for k in init])
    cos = torch.nn.functional.cosine_similarity(step32, step16, dim=0)
    assert cos > 0.9, cos  # the same descent direction, up to bf16 rounding

    half = dataclasses.replace(bf16_cfg, run_dir=str(tmp_path / "c"), stop_at=2)
    train_dit(half, show_progress=False)
    resumed = _weights(
        train_dit(dataclasses.replace(half, stop_at=None), resume="latest", show_progress=False)
    )
    assert all(torch.equal(bf16[k], resumed[k]) for k in bf16)
    with pytest.raises(ValueError, match="precision"):
        train_dit(dataclasses.replace(cfg, run_dir=str(tmp_path / "d"), precision="fp16"))
    assert not (tmp_path / "d").exists()  # refused before any work


def test_compiled_training_matches_eager(tmp_path, tiny_vae_dir):
    from openwan.runtime.compile import compile_unavailable
    from openwan.training.flow import train_dit

    if compile_unavailable("inductor"):
        pytest.skip("torch.compile cannot run here")
    cfg = dataclasses.replace(TINY_DIT, vae=tiny_vae_dir, steps=2, ckpt_every=2)
    eager = _weights(
        train_dit(dataclasses.replace(cfg, run_dir=str(tmp_path / "a")), show_progress=False)
    )
    compiled = _weights(
        train_dit(
            dataclasses.replace(cfg, run_dir=str(tmp_path / "b"), compile=True), show_progress=False
        )
    )
    for k in eager:  # the same updates, up to the compiled kernels' summation order
        assert torch.allclose(compiled[k], eager[k], rtol=1e-4, atol=1e-5), k


def test_decoder_only_vae_fine_tune_keeps_the_latents(tmp_path, capsys):
    from openwan.checkpoint.vae_format import load_vae
    from openwan.cli.main import main
    from openwan.training.vae_trainer import with_latent_stats

    base = train_vae(
        dataclasses.replace(TINY_VAE, run_dir=str(tmp_path / "a")), show_progress=False
    )
    init = with_latent_stats(base, 8, size=16)
    from openwan.checkpoint.vae_format import save_vae

    save_vae(init, tmp_path / "init", format="diffusers")
    cfg = tmp_path / "ft.json"
    fields = {k: v for k, v in dataclasses.asdict(TINY_VAE).items() if k != "run_dir"}
    cfg.write_text(
        json.dumps(
            {**fields, "init": str(tmp_path / "init"), "train_part": "decoder", "two_shapes": 0.5}
        )
    )
    args = ["train-vae", "--config", str(cfg), "--run-dir", str(tmp_path / "ft"), "--quiet"]
    assert main([*args, "--export", str(tmp_path / "out")]) == 0
    tuned = load_vae(tmp_path / "out")
    a, b = init.state_dict(), tuned.state_dict()
    encoder_side = [k for k in a if k.startswith(("encoder.", "conv1."))]
    decoder_side = [k for k in a if k.startswith(("decoder.", "conv2."))]
    assert encoder_side and all(torch.equal(a[k], b[k]) for k in encoder_side)
    assert sum(not torch.equal(a[k], b[k]) for k in decoder_side) > len(decoder_side) // 2
    assert tuned.config.latent_mean == init.config.latent_mean  # the latents did not move
    assert tuned.config.latent_std == init.config.latent_std
    clip = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(init.encode(clip), tuned.encode(clip))

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**fields, "init": str(tmp_path / "init"), "dim": 8}))
    assert (
        main(["train-vae", "--config", str(bad), "--run-dir", str(tmp_path / "b"), "--quiet"]) == 2
    )
    assert "--init" in capsys.readouterr().err
    with pytest.raises(ValueError, match="train_part"):
        train_vae(dataclasses.replace(TINY_VAE, run_dir=str(tmp_path / "c"), train_part="encoder"))


def test_i2v_training_starts_as_its_t2v_init_and_conditions_on_the_first_frame(
    tmp_path, tiny_vae_dir
):
    from openwan.checkpoint.vae_format import load_vae
    from openwan.data.shapes import ShapesWorld, to_tensor
    from openwan.pipelines.image_cond import encode_frame_condition
    from openwan.training.flow import build, condition_cache, export_model, train_dit

    t2v_cfg = dataclasses.replace(TINY_DIT, vae=tiny_vae_dir, run_dir=str(tmp_path / "a"))
    t2v = train_dit(t2v_cfg, show_progress=False)
    export_model(t2v, tmp_path / "t2v")
    i2v_cfg = dataclasses.replace(
        t2v_cfg, run_dir=str(tmp_path / "b"), model_type="i2v", init=str(tmp_path / "t2v"),
        train_text=False, image_prob=1.0,
    )  # fmt: skip
    start, _, _ = build(i2v_cfg, tmp_path / "b")
    assert start.dit.config.in_dim == 36 and not start.dit.config.has_image_embedding
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(1, 16, 2, 4, 4, generator=g), torch.randn(1, 20, 2, 4, 4, generator=g)
    ctx, t = [torch.randn(5, 16, generator=g)], torch.tensor([500.0])
    with torch.no_grad():  # zero condition channels: the I2V model starts as the t2v model
        assert torch.allclose(start.dit(x, t, ctx, y=y), t2v.dit(x, t, ctx), rtol=0, atol=1e-6)

    conds = condition_cache(i2v_cfg, tmp_path / "b", show_progress=False)
    vae = load_vae(tiny_vae_dir)
    world = ShapesWorld(seed=i2v_cfg.seed + 1, frames=5, size=16, split="train")
    assert conds.shape == (4, 20, 2, 4, 4)
    for i in range(4):  # what inference builds from the same first frame
        want = encode_frame_condition(vae, {0: to_tensor(world[i][0])[:, 0]}, 5, (16, 16))
        assert torch.allclose(conds[i], want, atol=1e-5), i

    result = train_dit(i2v_cfg, show_progress=False)  # image_prob is ignored: I2V steps are videos
    w = result.dit.patch_embedding.weight
    assert w[:, 16:].abs().sum() > 0  # the condition channels learned something
    before = t2v.text_encoder.model.state_dict()
    after = result.text_encoder.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # train_text = False

    # the embedded layout: the I2V DiT in transformer_i2v/ beside the t2v one; init_transformer
    # warm-starts from it (the default subfolder would give the t2v DiT instead)
    both = export_model(result, tmp_path / "both")
    (both / "transformer").rename(both / "transformer_i2v")
    shutil.copytree(tmp_path / "t2v" / "transformer", both / "transformer")
    again, _, _ = build(
        dataclasses.replace(i2v_cfg, init=str(both), init_transformer="transformer_i2v"),
        tmp_path / "d",
    )
    trained = result.dit.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in again.dit.state_dict().items())
    with pytest.raises(ValueError, match="no transformer_x/config.json"):
        build(dataclasses.replace(i2v_cfg, init=str(both), init_transformer="transformer_x"),
              tmp_path / "e")  # fmt: skip
    with pytest.raises(ValueError, match="model_type"):
        train_dit(dataclasses.replace(t2v_cfg, run_dir=str(tmp_path / "c"), model_type="flf2v"))


def test_i2v_prefix_conditions_match_inference_and_are_drawn_per_row(tmp_path, tiny_vae_dir):
    from openwan.checkpoint.vae_format import load_vae
    from openwan.data.shapes import ShapesWorld, to_tensor
    from openwan.pipelines.image_cond import encode_frame_condition
    from openwan.training.flow import condition_cache, latent_cache, step_batch

    cfg = dataclasses.replace(
        TINY_DIT, vae=tiny_vae_dir, run_dir=str(tmp_path), model_type="i2v", cond_frames=(1, 3)
    )
    three = condition_cache(cfg, tmp_path, show_progress=False, prefix=3)
    assert (tmp_path / "conds_3.safetensors").is_file()
    vae = load_vae(tiny_vae_dir)
    world = ShapesWorld(seed=cfg.seed + 1, frames=5, size=16, split="train")
    for i in range(4):  # what continuation with cond_frames=3 builds from the same frames
        video = to_tensor(world[i][0])
        frames = {k: video[:, k] for k in range(3)}
        want = encode_frame_condition(vae, frames, 5, (16, 16))
        assert torch.allclose(three[i], want, atol=1e-5), i
    one = condition_cache(cfg, tmp_path, show_progress=False)
    assert not torch.equal(one[:, :4], three[:, :4])  # the masks differ (frames 1, 2 known)
    with pytest.raises(ValueError, match="cond_frames must lie in 1..4"):
        condition_cache(cfg, tmp_path, show_progress=False, prefix=5)

    latents, sources = latent_cache(cfg, tmp_path, show_progress=False)
    both = torch.stack([one, three])
    seen = set()
    for step in range(6):
        batch = step_batch(cfg, step, latents, sources, both)
        alone = step_batch(cfg, step, latents, sources, both[:1])  # the draws of (1,) alone
        assert torch.equal(batch.x0, alone.x0) and torch.equal(batch.noise, alone.noise)
        assert batch.texts == alone.texts and torch.equal(batch.sigma, alone.sigma)
        for row in batch.y:  # each row is one of the cached conditions of its clip
            match = [k for k, c in enumerate(both) if any(torch.equal(row, r) for r in c)]
            seen.update(match)
        assert alone.y is not None and all(any(torch.equal(r, c) for c in one) for r in alone.y)
    assert seen == {0, 1}  # both prefix lengths were drawn


@pytest.mark.parametrize(
    "change, named",
    [({"model_type": "i2v"}, "model_type"), ({"precision": "bf16"}, "precision"),
     ({"compile": True}, "compile")],
)  # fmt: skip
def test_distributed_training_refuses_settings_it_would_ignore(change, named):
    from openwan.training.distributed import train_dit_distributed

    # refused before any process group is touched (none exists here)
    with pytest.raises(ValueError, match=named):
        train_dit_distributed(dataclasses.replace(TINY_DIT, **change), plan=None)


def test_vae_batches_mix_in_talking_faces_by_share():
    from openwan.data.talking import MOUTH, TalkingWorld
    from openwan.training.vae_trainer import clip_source

    def mouths(cfg, steps=6):
        source = clip_source(cfg)
        mouth = torch.tensor(MOUTH, dtype=torch.float32).div(127.5).sub(1).view(3, 1, 1, 1)
        out = []
        for step in range(steps):
            for clip in source(step):  # [3, F, H, W]
                out.append(bool(((clip - mouth).abs().max(0).values < 0.02).any()))
        return out

    cfg = VAETrainConfig(frames=5, size=32, batch_size=4)
    assert not any(mouths(cfg))  # the shapes world has no mouths
    half = mouths(dataclasses.replace(cfg, talking=0.5))
    assert 6 <= sum(half) <= 18  # about half of 24 clips
    every = clip_source(dataclasses.replace(cfg, talking=1.0))(0)
    world = TalkingWorld(seed=cfg.seed + 2, seconds=4 / 16, size=32)
    from openwan.data.shapes import to_tensor

    assert torch.equal(every[1], to_tensor(world[1].video[:5]))
    with pytest.raises(ValueError, match="talking"):
        clip_source(dataclasses.replace(cfg, talking=1.5))


def test_temporal_and_mse_terms_join_the_vae_loss_only_when_asked():
    from openwan.models.vae import WanVAE
    from openwan.training.vae_trainer import temporal_loss, vae_config, vae_loss

    x = torch.zeros(1, 3, 3, 2, 2)
    y = x.clone()
    y[:, :, 1] = 1.0  # a flash in the middle frame: changes +1 then -1
    assert float(temporal_loss(x, y)) == pytest.approx(1.0)
    assert float(temporal_loss(y + 0.3, y)) < 1e-6  # a constant offset does not flicker
    torch.manual_seed(0)
    vae = WanVAE(vae_config(TINY_VAE))
    video = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    base, parts = vae_loss(vae, video, TINY_VAE, gen())
    assert "temporal" not in parts and "mse" not in parts
    cfg = dataclasses.replace(TINY_VAE, temporal_weight=2.0, mse_weight=3.0)
    both, parts = vae_loss(vae, video, cfg, gen())
    extra = 2.0 * parts["temporal"] + 3.0 * parts["mse"]
    assert both.item() == pytest.approx(base.item() + extra, rel=1e-5)
    assert parts["temporal"] > 0 and parts["mse"] > 0
