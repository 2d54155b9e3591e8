"""Flow-matching DiT training (with an optionally trained-from-scratch umT5 text encoder).

x_sigma = (1 - sigma) x0 + sigma eps, target v = eps - x0, model time t = 1000 sigma, with sigma
drawn logit-normal and shifted by the inference shift. Latents of the (frozen) VAE are encoded
once and cached on disk; the DiT epochs then cost only DiT compute.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from openwan.checkpoint.dit_format import save_dit
from openwan.checkpoint.io import CheckpointError
from openwan.checkpoint.vae_format import load_vae
from openwan.configs.dit import DiTConfig
from openwan.data.files import open_dataset
from openwan.data.shapes import Scene, ShapesWorld, caption, caption_corpus, to_tensor
from openwan.models.dit import WanModel
from openwan.models.text import T5TextEncoder, tiny_umt5_config, train_tokenizer
from openwan.training import common
from openwan.training.common import sample_sigmas

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiTTrainConfig:
    run_dir: str = "runs/dit"
    vae: str | None = None  # trained VAE folder (diffusers layout)
    # warm start: an exported model folder (transformer/, text_encoder/, tokenizer/) whose DiT,
    # umT5 and tokenizer replace the random init (the architecture keys below must match it)
    init: str | None = None
    # the subfolder of ``init`` that holds its DiT (e.g. "transformer_i2v" in the embedded
    # wan-tiny folder, to warm-start from the shipped I2V model)
    init_transformer: str = "transformer"
    dataset: str | None = None  # None: the shapes world; else a folder / metadata.csv / .jsonl
    steps: int = 2000  # length of the LR schedule
    stop_at: int | None = None  # end the run early (resume later with the same schedule)
    batch_size: int = 16
    lr: float = 5e-4
    warmup: int = 100
    weight_decay: float = 0.01
    ema_decay: float = 0.998
    seed: int = 0
    shift: float = 3.0  # the inference shift
    logit_mean: float = 0.0
    logit_std: float = 1.0
    cfg_dropout: float = 0.1  # empty prompt -> the unconditional branch used by CFG
    image_prob: float = 0.1  # steps trained on single frames (text-to-image)
    frames: int = 17
    size: int = 64
    latent_clips: int = 2048
    two_shapes: float = 0.0  # share of shapes-world clips with two shapes
    grad_checkpointing: bool = False
    # "fp32", or "bf16": bf16 autocast around the forward (fp32 master weights, optimizer and
    # loss); on this project's 2-core CPU it trains the tiny DiT 1.4x faster
    precision: str = "fp32"
    compile: bool = False  # regional torch.compile of the DiT blocks (1.2x more with bf16 here)
    # "t2v", or "i2v": the Wan2.2 I2V layout without CLIP (in_dim 36: the noisy latent, then the
    # 4-channel first-frame mask and the latent of the first frame followed by zeros, as
    # inference builds it); a t2v export given as ``init`` starts it with the extra input
    # channels at zero, i.e. as that t2v model
    model_type: str = "t2v"
    train_text: bool = True  # False: the umT5 stays as initialised (shared with the init model)
    # I2V: the lengths (pixel frames) of the clip prefix a training row is conditioned on, one
    # drawn per row. (1,) is the I2V task, the first frame alone; (1, 5) also trains the
    # continuation layout of ``--cond-frames 5``, whose two leading latent frames are known.
    cond_frames: tuple[int, ...] = (1,)
    log_every: int = 10
    ckpt_every: int = 250
    # DiT
    dim: int = 128
    ffn_dim: int = 512
    num_heads: int = 2
    num_layers: int = 6
    text_len: int = 48
    # text encoder (trained jointly: no pretrained umT5 exists on this machine)
    vocab_size: int = 400
    t5_dim: int = 64
    t5_layers: int = 2
    t5_heads: int = 4
    t5_ff: int = 128


@dataclass
class TrainResult:
    cfg: DiTTrainConfig
    dit: WanModel
    text_encoder: T5TextEncoder
    tokenizer_dir: Path


class Denoiser(nn.Module):
    """The trainable parts together, so one optimizer / EMA / checkpoint covers both."""

    def __init__(self, dit: WanModel, text: nn.Module) -> None:
        super().__init__()
        self.dit = dit
        self.text = text


def dit_config(cfg: DiTTrainConfig) -> DiTConfig:
    if cfg.model_type not in ("t2v", "i2v"):
        raise ValueError(f"model_type must be 't2v' or 'i2v', got {cfg.model_type!r}")
    i2v = cfg.model_type == "i2v"
    return DiTConfig(
        model_type=cfg.model_type,
        dim=cfg.dim,
        ffn_dim=cfg.ffn_dim,
        num_heads=cfg.num_heads,
        num_layers=cfg.num_layers,
        text_dim=cfg.t5_dim,
        text_len=cfg.text_len,
        in_dim=36 if i2v else 16,
        out_dim=16,
        image_embedding=False if i2v else None,
    )


# A clip's caption source: a shapes scene (captioned anew, in either language, at every step)
# or the fixed prompt of a clip from a dataset on disk.
Caption = Scene | str


def _clips(cfg: DiTTrainConfig) -> Iterator[tuple[torch.Tensor, Caption]]:
    if cfg.dataset is None:
        world = ShapesWorld(
            seed=cfg.seed + 1, frames=cfg.frames, size=cfg.size, split="train",
            two_shapes=cfg.two_shapes,
        )  # fmt: skip
        for i in range(cfg.latent_clips):
            video, _, scene = world[i]
            yield to_tensor(video), scene
        return
    data = open_dataset(cfg.dataset, frames=cfg.frames, size=cfg.size)
    for n, clip in enumerate(data):
        if n >= cfg.latent_clips:
            break
        yield clip
    if data.skipped:
        log.warning("%d dataset item(s) skipped (see the warnings above)", len(data.skipped))


@torch.no_grad()
def _in_batches(
    items: Iterator[torch.Tensor], flush: Callable[[list[torch.Tensor]], None], size: int = 8
) -> None:
    """Call ``flush`` on consecutive groups of ``size`` items (the last group may be smaller)."""
    pending: list[torch.Tensor] = []
    for item in items:
        pending.append(item)
        if len(pending) == size:
            flush(pending)
            pending = []
    if pending:
        flush(pending)


def _reusable_rows(cfg: DiTTrainConfig, rows: int) -> int | None:
    """How many rows of an on-disk cache of ``rows`` clips this run reads, None if too few: a
    dataset's cache whole; shapes-world clips are deterministic by index, so the first
    ``latent_clips`` of a larger cache are the ``latent_clips``-clip cache."""
    if cfg.dataset is not None:
        return rows
    return cfg.latent_clips if rows >= cfg.latent_clips else None


def latent_cache(
    cfg: DiTTrainConfig, run_dir: Path, show_progress: bool = True
) -> tuple[torch.Tensor, list[Caption]]:
    """Encode up to ``latent_clips`` clips once (normalised VAE latents) and keep them on disk."""
    path = run_dir / "latents.safetensors"
    if path.is_file():
        data = load_file(str(path))
        meta = json.loads((run_dir / "latents.json").read_text(encoding="utf-8"))
        n = _reusable_rows(cfg, data["latents"].shape[0])
        if n is not None:
            log.info("reusing the latent cache %s (delete it to encode again)", path)
            scenes = [s if isinstance(s, str) else Scene.from_dict(s) for s in meta[:n]]
            return data["latents"][:n], scenes
    if cfg.vae is None:
        raise ValueError(
            "training the DiT needs a trained VAE: pass --vae <folder> (see openwan train-vae)"
        )
    vae = load_vae(cfg.vae)
    latents: list[torch.Tensor] = []
    captions: list[Caption] = []
    bar = common.progress(cfg.latent_clips, 0, "encode latents", show_progress)

    def flush(videos: list[torch.Tensor]) -> None:
        latents.append(vae.encode(torch.stack(videos)))
        bar.update(len(videos))

    def clips() -> Iterator[torch.Tensor]:
        for video, cap in _clips(cfg):
            captions.append(cap)
            yield video

    _in_batches(clips(), flush)
    bar.close()
    lat = torch.cat(latents)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_file({"latents": lat.contiguous()}, str(path))
    meta = [c if isinstance(c, str) else asdict(c) for c in captions]
    (run_dir / "latents.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    return lat, captions


def condition_cache(
    cfg: DiTTrainConfig, run_dir: Path, show_progress: bool = True, prefix: int = 1
) -> torch.Tensor:
    """I2V: the condition ``y [N, 20, T, h, w]`` of every cached clip (same order as the latent
    cache) on its first ``prefix`` frames, built like inference builds it
    (``encode_frame_condition``): the mask of those frames, then the VAE latent of those frames
    followed by black frames. Kept on disk, one file per prefix length."""
    from openwan.pipelines.image_cond import known_frame_mask

    if not 1 <= prefix < cfg.frames:
        raise ValueError(f"cond_frames must lie in 1..{cfg.frames - 1}, got {prefix}")
    path = run_dir / ("conds.safetensors" if prefix == 1 else f"conds_{prefix}.safetensors")
    if path.is_file():
        data = load_file(str(path))["y"]
        n = _reusable_rows(cfg, data.shape[0])
        if n is not None:
            return data[:n]
    if cfg.vae is None:
        raise ValueError("training an I2V DiT needs the VAE: pass --vae <folder>")
    vae = load_vae(cfg.vae)
    out: list[torch.Tensor] = []
    bar = common.progress(cfg.latent_clips, 0, f"encode {prefix}-frame conditions", show_progress)

    def flush(prefixes: list[torch.Tensor]) -> None:
        video = torch.zeros(len(prefixes), 3, cfg.frames, cfg.size, cfg.size)
        video[:, :, :prefix] = torch.stack(prefixes)
        latent = vae.encode(video)
        known = range(prefix)
        mask = known_frame_mask(cfg.frames, known, tuple(latent.shape[3:]), vae.config.stride[0])
        out.append(torch.cat([mask.expand(len(prefixes), *mask.shape), latent], dim=1))
        bar.update(len(prefixes))

    _in_batches((video[:, :prefix] for video, _ in _clips(cfg)), flush)
    bar.close()
    y = torch.cat(out)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_file({"y": y.contiguous()}, str(path))
    return y


def flow_loss(
    dit: nn.Module,
    context: list[torch.Tensor],
    x0: torch.Tensor,
    sigma: torch.Tensor,
    noise: torch.Tensor,
    y: torch.Tensor | None = None,
) -> torch.Tensor:
    s = sigma.view(-1, 1, 1, 1, 1)
    xt = (1 - s) * x0 + s * noise
    v = dit(xt, sigma * 1000, context) if y is None else dit(xt, sigma * 1000, context, y=y)
    return F.mse_loss(v.float(), noise - x0)


@dataclass
class StepBatch:
    """Everything random about one training step (the same for any number of processes)."""

    x0: torch.Tensor  # [B, C, T, h, w] clean latents
    texts: list[str]
    sigma: torch.Tensor  # [B]
    noise: torch.Tensor  # like x0
    y: torch.Tensor | None = None  # I2V: the first-frame conditions [B, 20, T, h, w]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.x0, self.sigma, self.noise

    def rows(self, part: slice) -> StepBatch:
        """The samples of one data-parallel rank."""
        y = None if self.y is None else self.y[part]
        return StepBatch(self.x0[part], self.texts[part], self.sigma[part], self.noise[part], y)


def step_batch(
    cfg: DiTTrainConfig,
    step: int,
    latents: torch.Tensor,
    sources: Sequence[Caption],
    conds: torch.Tensor | None = None,
) -> StepBatch:
    """The batch of ``step``: drawn from a generator seeded with (seed, step) alone. With
    ``conds`` (I2V, ``[K, N, 20, T, h, w]``: the conditions on each of the K prefix lengths of
    ``cfg.cond_frames``) every step is a video step; with K > 1 each row draws its prefix length
    last, so a run with one length draws what it drew before the option existed."""
    gen = common.step_generator(cfg.seed, step)
    idx = torch.randint(0, latents.shape[0], (cfg.batch_size,), generator=gen)
    x0 = latents[idx]
    if torch.rand(1, generator=gen).item() < cfg.image_prob and conds is None:
        x0 = x0[:, :, :1]  # a text-to-image step: the first latent frame alone
    texts = _captions([sources[int(i)] for i in idx], gen, cfg.cfg_dropout)
    sigma = sample_sigmas(cfg, cfg.batch_size, gen)
    noise = torch.randn(x0.shape, generator=gen)
    if conds is None:
        return StepBatch(x0, texts, sigma, noise)
    if conds.shape[0] == 1:
        return StepBatch(x0, texts, sigma, noise, conds[0, idx])
    which = torch.randint(0, conds.shape[0], (cfg.batch_size,), generator=gen)
    return StepBatch(x0, texts, sigma, noise, conds[which, idx])


def encode_texts(encoder: T5TextEncoder, texts: list[str]) -> list[torch.Tensor]:
    """Trainable text features, trimmed to each prompt's tokens."""
    ids, mask = encoder.tokenize(texts)
    hidden = encoder(ids, mask)
    return [h[: int(n)] for h, n in zip(hidden, mask.sum(1))]


def _captions(sources: list[Caption], gen: torch.Generator, dropout: float) -> list[str]:
    out = []
    for src in sources:
        r = torch.rand(3, generator=gen)
        if r[0] < dropout:
            out.append("")
        elif isinstance(src, str):
            out.append(src)
        else:
            out.append(caption(src, "en" if r[1] < 0.5 else "zh", int(r[2] * 9)))
    return out


def _forward_blocks_checkpointed(dit: WanModel) -> None:
    """Wrap the DiT blocks with activation checkpointing (from outside the model)."""
    from torch.utils.checkpoint import checkpoint

    for block in dit.blocks:
        forward = block.forward
        block.forward = lambda *a, _f=forward: checkpoint(_f, *a, use_reentrant=False)  # type: ignore[method-assign]


def build(
    cfg: DiTTrainConfig, run_dir: Path, extra_text: Sequence[str] = ()
) -> tuple[Denoiser, T5TextEncoder, Path]:
    tok_dir = run_dir / "tokenizer"
    if cfg.init is not None:
        _copy_init_tokenizer(Path(cfg.init), tok_dir, cfg.init_transformer)
    elif not (tok_dir / "tokenizer.json").is_file():
        corpus = caption_corpus(pairs=cfg.two_shapes > 0) + list(extra_text)
        train_tokenizer(corpus, tok_dir, vocab_size=cfg.vocab_size)
    from transformers import AutoTokenizer, UMT5EncoderModel

    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    torch.manual_seed(cfg.seed)
    t5 = UMT5EncoderModel(
        tiny_umt5_config(
            len(tokenizer), cfg.t5_dim, cfg.t5_layers, cfg.t5_heads, cfg.t5_ff, cfg.text_len
        )
    )
    dit = WanModel(dit_config(cfg))
    dit.init_weights()
    if cfg.init is not None:
        _load_init_weights(Path(cfg.init), dit, t5, cfg.init_transformer)
    if cfg.grad_checkpointing:
        _forward_blocks_checkpointed(dit)
    if not cfg.train_text:
        t5.requires_grad_(False)
    if cfg.compile:
        from openwan.runtime.compile import apply_compile

        apply_compile(dit)  # logs why when it stays eager
    encoder = T5TextEncoder(t5, tokenizer, cfg.text_len)
    return Denoiser(dit, t5), encoder, tok_dir


def require_export(init: Path, transformer: str = "transformer") -> None:
    """Fail fast (before the latent encoding) on a warm-start folder that is not an export."""
    for part in (
        f"{transformer}/config.json",
        "text_encoder/config.json",
        "tokenizer/tokenizer.json",
    ):
        if not (init / part).is_file():
            raise ValueError(
                f"init model {init} has no {part}: give a folder written by openwan train --export"
            )


def _copy_init_tokenizer(init: Path, tok_dir: Path, transformer: str) -> None:
    """The warm start's tokenizer (its token ids are what the exported umT5 was trained on)."""
    require_export(init, transformer)
    shutil.copytree(init / "tokenizer", tok_dir, dirs_exist_ok=True)


def _load_init_weights(init: Path, dit: WanModel, t5: nn.Module, transformer: str) -> None:
    """Copy an exported model's DiT (from its ``transformer`` subfolder) and umT5 weights into
    the freshly built (trainable) ones."""
    from openwan.checkpoint.dit_format import load_dit

    try:
        exported = load_dit(init / transformer)
        text = T5TextEncoder.from_pretrained(init).model
    except (CheckpointError, OSError) as e:
        raise ValueError(f"cannot warm-start from {init}: {e}") from None
    if dit.config.model_type == "i2v" and exported.config == dit.config.replace(
        model_type="t2v", in_dim=16, image_embedding=None
    ):
        exported = _as_i2v(exported, dit)
    if exported.config != dit.config:
        raise ValueError(
            f"init model {init} has a different DiT ({exported.config}) from the training config "
            f"({dit.config}): set dim/ffn_dim/num_heads/num_layers/t5_dim/text_len to match it"
        )
    ours, theirs = t5.state_dict(), text.state_dict()
    shapes = {k: tuple(v.shape) for k, v in ours.items()}
    if shapes != {k: tuple(v.shape) for k, v in theirs.items()}:
        raise ValueError(
            f"init model {init} has a different text encoder from the training config: "
            "set t5_dim/t5_layers/t5_heads/t5_ff to match its text_encoder/config.json"
        )
    with torch.no_grad():
        dit.load_state_dict(exported.state_dict(), strict=True)
        t5.load_state_dict(theirs, strict=True)


def _as_i2v(t2v: WanModel, like: WanModel) -> WanModel:
    """A t2v DiT as an I2V one of the same width: the 20 condition input channels of the patch
    embedding start at zero, so the I2V model computes exactly what the t2v model did."""
    sd = t2v.state_dict()
    w = sd["patch_embedding.weight"]  # [dim, 16, pt, ph, pw]
    extra = like.config.in_dim - w.shape[1]
    sd["patch_embedding.weight"] = torch.cat([w, w.new_zeros(w.shape[0], extra, *w.shape[2:])], 1)
    out = WanModel(like.config)
    out.load_state_dict(sd, strict=True)
    return out


def train_dit(
    cfg: DiTTrainConfig, resume: str | None = None, show_progress: bool = True
) -> TrainResult:
    run_dir = Path(cfg.run_dir)
    common.autocast(cfg.precision)  # a bad value fails here, before any work
    if cfg.init is not None:
        require_export(Path(cfg.init), cfg.init_transformer)
    dit_config(cfg)  # a bad model_type fails here, before any work
    latents, sources = latent_cache(cfg, run_dir, show_progress)
    conds = None
    if cfg.model_type == "i2v":
        conds = torch.stack(
            [condition_cache(cfg, run_dir, show_progress, k) for k in cfg.cond_frames]
        )
    model, encoder, tok_dir = build(cfg, run_dir, [s for s in sources if isinstance(s, str)])
    opt, ema = common.optimizer_and_ema(
        model, lr=cfg.lr, weight_decay=cfg.weight_decay, ema_decay=cfg.ema_decay
    )
    start = common.restore(resume, run_dir, model, opt, ema)
    metrics = common.MetricsLog(run_dir)
    bar = common.progress(cfg.steps, start, "train", show_progress)
    t0 = time.perf_counter()
    model.train()
    end = cfg.stop_at or cfg.steps
    for step in range(start, end):
        for group in opt.param_groups:
            group["lr"] = common.lr_at(step, cfg.lr, cfg.warmup, cfg.steps)
        batch = step_batch(cfg, step, latents, sources, conds)
        with common.autocast(cfg.precision):
            context = encode_texts(encoder, batch.texts)
            loss = flow_loss(model.dit, context, *batch.tensors(), y=batch.y)
        common.optimizer_step(model, opt, ema, loss, bar)
        common.log_and_checkpoint(cfg, step, end, loss, t0, metrics, run_dir, model, opt, ema)
    bar.close()
    ema.copy_to(model)
    model.eval()
    return TrainResult(cfg, model.dit, encoder, tok_dir)


def export_model(result: TrainResult, out: Path) -> Path:
    """The layout the inference pipeline loads: transformer/, vae/, text_encoder/, tokenizer/."""
    if result.cfg.vae is None:
        raise ValueError("export needs the VAE folder the DiT was trained with")
    out.mkdir(parents=True, exist_ok=True)
    # official key layout keeps text_len in config.json (the diffusers config has no such key)
    save_dit(result.dit, out / "transformer", format="official")
    if (out / "vae").resolve() != Path(result.cfg.vae).resolve():
        shutil.copytree(result.cfg.vae, out / "vae", dirs_exist_ok=True)
    t5 = result.text_encoder.model
    t5.config.openwan_text_len = result.cfg.text_len
    t5.save_pretrained(str(out / "text_encoder"))
    shutil.copytree(result.tokenizer_dir, out / "tokenizer", dirs_exist_ok=True)
    (out / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}) + "\n")
    return out
