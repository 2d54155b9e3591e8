"""The ``openwan`` command. Thin: parse flags, build a request, call a pipeline, write the file."""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from openwan import __version__

log = logging.getLogger("openwan")


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors a user can fix from the message alone: printed as one line, exit code 2."""
    from openwan.checkpoint.io import CheckpointError
    from openwan.io.video import MediaError

    return (ValueError, OSError, CheckpointError, MediaError)


def str2bool(value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "y", "on"):
        return True
    if v in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {value!r}")


def _flag(parser: argparse.ArgumentParser, name: str, **kw: object) -> None:
    """Add ``--name-with-dashes`` plus the official ``--name_with_underscores`` spelling."""
    dashed = "--" + name.replace("_", "-")
    spellings = [dashed] if "_" not in name else [dashed, "--" + name]
    parser.add_argument(*spellings, dest=name, **kw)  # type: ignore[arg-type]


def add_generate_args(p: argparse.ArgumentParser) -> None:
    _flag(
        p,
        "task",
        default=None,
        help="task name, e.g. t2v-1.3B, t2v-14B, t2i-14B, t2v-A14B, ti2v-5B, "
        "t2v-tiny (default: t2v-tiny without --ckpt-dir, else recognised from the checkpoint)",
    )
    _flag(
        p,
        "ckpt_dir",
        default=None,
        help="official or diffusers checkpoint folder (default: the embedded tiny model)",
    )
    _flag(p, "prompt", default=None, help="what the video should show")
    _flag(
        p,
        "negative_prompt",
        default=None,
        help="what to avoid (default: the official negative prompt)",
    )
    p.add_argument("--neg_prompt", dest="negative_prompt", help=argparse.SUPPRESS)
    _flag(
        p,
        "image",
        default=None,
        help="start the video from this image (TI2V-5B: first-frame latent conditioning)",
    )
    _flag(p, "size", default=None, help="WIDTH*HEIGHT, e.g. 832*480 (default: the task's)")
    _flag(p, "frame_num", type=int, default=None, help="number of frames, 4n+1 (1 = an image)")
    _flag(p, "sample_steps", type=int, default=None, help="denoising steps")
    _flag(p, "sample_shift", type=float, default=None, help="timestep shift")
    _flag(p, "sample_guide_scale", type=float, default=None, help="classifier-free guidance scale")
    _flag(p, "sample_solver", default=None, choices=["unipc", "dpm++", "euler"], help="solver")
    _flag(p, "base_seed", type=int, default=-1, help="random seed (< 0: random)")
    p.add_argument("--seed", dest="base_seed", type=int, help="same as --base-seed")
    _flag(
        p,
        "save_file",
        default=None,
        help="output .mp4 (or .png for one frame); default: a "
        "descriptive name in the current folder",
    )
    _flag(
        p,
        "offload_model",
        type=str2bool,
        default=None,
        help="move models to the CPU when idle (default: true on one GPU, false on CPU)",
    )
    _flag(p, "t5_cpu", action="store_true", help="run the text encoder on the CPU")
    _flag(p, "device", default=None, help="cpu or cuda[:N] (default: cuda if available)")
    _flag(
        p,
        "dtype",
        default=None,
        choices=["fp32", "bf16"],
        help="DiT weight dtype (default: fp32 on CPU, bf16 on CUDA)",
    )
    p.add_argument(
        "--convert_model_dtype",
        dest="dtype",
        action="store_const",
        const="bf16",
        help=argparse.SUPPRESS,
    )
    _flag(p, "ulysses_size", type=int, default=1, help=argparse.SUPPRESS)
    _flag(p, "ring_size", type=int, default=1, help=argparse.SUPPRESS)
    _flag(p, "quiet", action="store_true", help="no progress bar")
    from openwan.cli.speed import add_speed_args

    add_speed_args(p, _flag)


def default_output_name(
    task: str, size: tuple[int, int], prompt: str, seed: int, image: bool
) -> str:
    slug = re.sub(r"[^\w]+", "_", prompt.lower(), flags=re.UNICODE).strip("_")[:50] or "video"
    return f"{task}_{size[0]}x{size[1]}_{slug}_{seed}.{'png' if image else 'mp4'}"


def check_writable(path: Path) -> None:
    """Fail before any heavy work if the output cannot be written (probe with a temp file)."""
    import tempfile

    if path.is_dir():
        raise ValueError(f"cannot write {path}: it is a folder; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".openwan-probe-"):
            pass
    except OSError as e:
        raise ValueError(f"cannot write {path}: {e.strerror or e}") from None


def run_generate(args: argparse.Namespace) -> int:
    import torch

    from openwan.cli.speed import apply_speed_options, check_speed_args
    from openwan.configs.tasks import parse_size
    from openwan.io.video import save_image, save_video
    from openwan.pipelines.request import GenerationRequest
    from openwan.pipelines.t2v import WanT2V

    if args.prompt is None:
        raise ValueError(
            "--prompt is required, e.g. --prompt 'a red circle moving from left to right'"
        )
    if args.ulysses_size != 1 or args.ring_size != 1:
        raise ValueError(
            "sequence parallelism (--ulysses-size/--ring-size > 1) is not available yet"
        )
    if args.save_file:
        check_writable(Path(args.save_file))
    image = None
    if args.image is not None:
        from openwan.pipelines.image_cond import load_image

        image = load_image(args.image)  # an unreadable image fails before any model is loaded
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    offload = check_speed_args(args, device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, None: None}[args.dtype]
    request = GenerationRequest(
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        size=parse_size(args.size) if args.size else None,
        frame_num=args.frame_num,
        steps=args.sample_steps,
        shift=args.sample_shift,
        guide_scale=args.sample_guide_scale,
        solver=args.sample_solver,
        seed=args.base_seed,
    )
    t0 = time.perf_counter()
    pipe = WanT2V.from_pretrained(
        args.ckpt_dir,
        task=args.task,
        device=device,
        dtype=dtype,
        offload_model=offload != "none",
        t5_cpu=args.t5_cpu or offload == "block",
    )
    resolved = request.resolve(pipe.task)  # validate before any heavy work
    caches = apply_speed_options(pipe, args, device)
    log.info("loaded %s in %.1fs", pipe.task.name, time.perf_counter() - t0)

    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=resolved.steps, desc="denoising", unit="step", file=sys.stderr)

    def on_step(i: int, total: int) -> None:
        if bar is not None:
            bar.update(1)

    try:
        result = pipe.generate(request, callback=on_step, image=image)
    finally:
        if bar is not None:
            bar.close()
    req = result.request
    out = (
        Path(args.save_file)
        if args.save_file
        else Path(
            default_output_name(pipe.task.name, req.size, req.prompt, req.seed, result.is_image)
        )
    )
    meta = {"openwan": __version__, **req.as_metadata()}
    if caches:
        calls = sum(c.stats.calls for c in caches)
        reused = sum(c.stats.branches_reused for c in caches)
        blocks = sum(c.stats.blocks_run for c in caches) / sum(c.stats.blocks_total for c in caches)
        print(
            f"diffusion cache: {reused} of {calls} model calls reused another CFG branch, "
            f"{blocks:.0%} of the DiT blocks ran",
            file=sys.stderr,
        )
        meta["cache"] = caches[0].spec.describe()
    for name in ("quant", "offload", "compile", "vae_tiling"):
        if getattr(args, name) not in (None, False, "none"):
            meta[name] = getattr(args, name)
    if args.image is not None:
        meta["image"] = str(args.image)
    if result.is_image and out.suffix.lower() != ".mp4":
        save_image(result.video, out, metadata=meta)
    else:
        save_video(result.video, out, fps=result.fps, metadata=meta)
    print(f"saved {out} (seed {req.seed}, {time.perf_counter() - t0:.1f}s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="openwan", description="Wan video models: generate, train, evaluate."
    )
    parser.add_argument("--version", action="version", version=f"openwan {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    gen = sub.add_parser("generate", help="make a video (or image) from a prompt")
    add_generate_args(gen)
    gen.set_defaults(func=run_generate)
    for register in _extra_commands():
        register(sub)
    return parser


def _extra_commands() -> list:
    """Subcommands defined next to their implementations (training, evaluation)."""
    registers = []
    for module in ("openwan.cli.train", "openwan.cli.evaluate"):
        try:
            mod = __import__(module, fromlist=["register"])
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue
        registers.append(mod.register)
    return registers


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("openwan: interrupted", file=sys.stderr)
        return 130
    except user_errors() as e:
        if args.verbose:
            raise
        print(f"openwan: error: {e}", file=sys.stderr)
        return 2
