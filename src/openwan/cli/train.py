"""``openwan train-vae``, ``openwan train`` (DiT) and ``openwan train-s2v``."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("train-vae", help="train a Wan-VAE (default: the tiny shapes-world VAE)")
    p.add_argument("--config", default=None, help="TOML/JSON file with VAETrainConfig keys")
    p.add_argument(
        "--run-dir", default=None, help="where checkpoints, metrics.jsonl and loss.png go"
    )
    p.add_argument("--steps", type=int, default=None)
    p.add_argument(
        "--dataset",
        default=None,
        help="train on your clips: a folder of video+.txt, a metadata.csv (video,prompt) or a "
        ".jsonl; default: the procedural shapes world",
    )
    p.add_argument("--resume", default=None, help="checkpoint path, or 'latest' in the run dir")
    p.add_argument("--export", default=None, help="write the EMA VAE here (diffusers vae/ folder)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run_train_vae)

    d = sub.add_parser(
        "train", help="train a DiT with flow matching (default: the tiny shapes model)"
    )
    d.add_argument("--config", default=None, help="TOML/JSON file with DiTTrainConfig keys")
    d.add_argument("--run-dir", default=None)
    d.add_argument("--steps", type=int, default=None)
    d.add_argument(
        "--dataset",
        default=None,
        help="train on your clips: a folder of video+.txt, a metadata.csv (video,prompt) or a "
        ".jsonl; default: the procedural shapes world",
    )
    d.add_argument("--vae", default=None, help="trained VAE folder (diffusers layout)")
    d.add_argument(
        "--init",
        default=None,
        help="warm start: an exported model folder whose DiT, umT5 and tokenizer replace the "
        "random init (e.g. the shipped src/openwan/assets/wan-tiny)",
    )
    d.add_argument("--resume", default=None, help="checkpoint path, or 'latest' in the run dir")
    d.add_argument(
        "--export",
        default=None,
        help="write the whole EMA model here (transformer/, vae/, text_encoder/, tokenizer/)",
    )
    d.add_argument(
        "--ulysses-size",
        "--ulysses_size",
        dest="ulysses_size",
        type=int,
        default=1,
        help="under torchrun: context parallel over attention heads (FSDP2 always on)",
    )
    d.add_argument(
        "--ring-size",
        "--ring_size",
        dest="ring_size",
        type=int,
        default=1,
        help="under torchrun: ring attention over sequence chunks; the world size must be a "
        "multiple of ulysses x ring (the rest is data parallel)",
    )
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=run_train_dit)

    s = sub.add_parser(
        "train-s2v", help="train a speech-to-video DiT on the talking-shapes world (s2v-tiny)"
    )
    s.add_argument("--config", default=None, help="TOML/JSON file with S2VTrainConfig keys")
    s.add_argument("--run-dir", default=None)
    s.add_argument("--steps", type=int, default=None)
    s.add_argument("--vae", default=None, help="the VAE folder that encodes the face clips")
    s.add_argument(
        "--init",
        default=None,
        help="warm start: an exported S2V folder whose DiT replaces the random init (e.g. the "
        "shipped src/openwan/assets/wan-tiny/s2v)",
    )
    s.add_argument("--resume", default=None, help="checkpoint path, or 'latest' in the run dir")
    s.add_argument(
        "--export",
        default=None,
        help="write the EMA S2V model here (DiT at the root, vae/, wav2vec2-large-xlsr-53-english/)",
    )
    s.add_argument(
        "--ship",
        action="store_true",
        help="export as the package ships it: fp16 DiT, int8-packed VAE, reference.png + prompt.txt",
    )
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=run_train_s2v)


def run_train_vae(args: argparse.Namespace) -> int:
    from openwan.checkpoint.vae_format import save_vae
    from openwan.training.common import load_config
    from openwan.training.vae_trainer import VAETrainConfig, train_vae, with_latent_stats

    cfg = load_config(
        VAETrainConfig,
        args.config,
        {"run_dir": args.run_dir, "steps": args.steps, "dataset": args.dataset},
    )
    vae = train_vae(cfg, resume=args.resume, show_progress=not args.quiet)
    if args.export:
        if cfg.train_part != "decoder":  # a frozen encoder keeps the init's latent statistics
            vae = with_latent_stats(vae, cfg.stats_clips, size=cfg.size)
        save_vae(vae, Path(args.export), format="diffusers")
        print(f"saved VAE to {args.export}")
    return 0


def run_train_dit(args: argparse.Namespace) -> int:
    from openwan.training.common import load_config
    from openwan.training.flow import DiTTrainConfig, export_model, train_dit

    cfg = load_config(
        DiTTrainConfig,
        args.config,
        {
            "run_dir": args.run_dir,
            "steps": args.steps,
            "vae": args.vae,
            "init": args.init,
            "dataset": args.dataset,
        },
    )
    from openwan.runtime.parallel import ParallelConfigError, ParallelPlan, init_distributed

    plan = ParallelPlan(ulysses=args.ulysses_size, ring=args.ring_size)
    if init_distributed():
        return _train_dit_distributed(args, cfg, plan)
    if plan.cp > 1:
        raise ParallelConfigError(
            f"--ulysses-size/--ring-size need torchrun: torchrun --nproc_per_node {plan.cp} "
            "-m openwan train ..."
        )
    result = train_dit(cfg, resume=args.resume, show_progress=not args.quiet)
    if args.export:
        export_model(result, Path(args.export))
        print(f"saved model to {args.export}")
    return 0


def run_train_s2v(args: argparse.Namespace) -> int:
    from openwan.training.common import load_config
    from openwan.training.s2v_trainer import S2VTrainConfig, export_s2v, ship_s2v, train_s2v

    overrides = {"run_dir": args.run_dir, "steps": args.steps, "vae": args.vae, "init": args.init}
    cfg = load_config(S2VTrainConfig, args.config, overrides)
    result = train_s2v(cfg, resume=args.resume, show_progress=not args.quiet)
    if args.export:
        if args.ship:
            ship_s2v(result, Path(args.export))
        else:
            export_s2v(result, Path(args.export))
        print(f"saved S2V model to {args.export}")
    return 0


def _train_dit_distributed(args: argparse.Namespace, cfg: object, plan: object) -> int:
    import torch.distributed as dist

    from openwan.cli.main import user_errors
    from openwan.training.distributed import train_dit_distributed
    from openwan.training.flow import export_model

    try:
        result = train_dit_distributed(
            cfg,  # type: ignore[arg-type]
            plan,  # type: ignore[arg-type]
            resume=args.resume,
            show_progress=not args.quiet,
        )
        if result is not None and args.export:
            export_model(result, Path(args.export))
            print(f"saved model to {args.export}")
        return 0
    except user_errors():
        if dist.get_rank() == 0:
            raise
        return 2  # rank 0 reports it
    finally:
        dist.destroy_process_group()
