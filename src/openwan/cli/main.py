"""The ``openwan`` command. Thin: parse flags, build a request, call a pipeline, write the file."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
        help="task name, e.g. t2v-1.3B, t2v-14B, t2i-14B, t2v-A14B, ti2v-5B, i2v-14B, flf2v-14B, "
        "i2v-A14B, vace-1.3B, vace-14B, s2v-14B, s2v-tiny, i2v-tiny, "
        "t2v-tiny, t2i-tiny (default: t2v-tiny without --ckpt-dir, else recognised from the "
        "checkpoint)",
    )
    _flag(
        p,
        "two_stage",
        choices=("on", "off"),
        default=None,
        help="t2v-tiny: make the video in two stages (first frame by the text-to-image DiT, then "
        "the image-to-video DiT animates it; the default where the model folder has both) or with "
        "its text-to-video DiT alone (off)",
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
        help="start the video from this image (I2V tasks; TI2V-5B: first-frame latent conditioning)",
    )
    _flag(p, "src_video", default=None, help="VACE: source / control video (pose, depth, ...)")
    _flag(p, "src_mask", default=None, help="VACE: mask video, white = regenerate (MV2V)")
    _flag(p, "src_ref_images", default=None, help="VACE: reference images, comma-separated")
    _flag(p, "context_scale", type=float, default=1.0, help="VACE: strength of the context")
    from openwan.cli.image_tasks import add_image_args

    add_image_args(p, _flag)
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
    _flag(
        p,
        "ulysses_size",
        type=int,
        default=1,
        help="context parallel: split attention heads over this many ranks (all-to-all; "
        "must divide the head count); run under torchrun",
    )
    _flag(
        p,
        "ring_size",
        type=int,
        default=1,
        help="context parallel: pass K/V around a ring of this many ranks; "
        "ulysses x ring = the number of processes",
    )
    _flag(p, "dit_fsdp", action="store_true", help="shard the DiT weights over the ranks (FSDP2)")
    _flag(p, "t5_fsdp", action="store_true", help="shard the umT5 weights over the ranks (FSDP2)")
    _flag(p, "quiet", action="store_true", help="no progress bar")
    # speech-to-video (--task s2v-14B), official spellings
    _flag(p, "audio", default=None, help="s2v: speech/song driving the video (wav, mp3, m4a)")
    _flag(p, "pose_video", default=None, help="s2v: optional pose video driving the motion")
    _flag(p, "num_clip", type=int, default=None, help="s2v: at most this many clips")
    _flag(p, "infer_frames", type=int, default=None, help="s2v: frames per clip, 4n (80)")
    _flag(p, "start_from_ref", action="store_true", help="s2v: first frame = the reference image")
    _flag(
        p,
        "lipsync_video",
        default=None,
        help="s2v lip-sync editing: re-generate this video so it follows --audio",
    )
    _flag(
        p,
        "lipsync_mask",
        default=None,
        help="lip-sync: image, or video of per-frame masks, white = the region to re-generate "
        "(the mouth); default: all",
    )
    _flag(
        p,
        "lipsync_strength",
        type=float,
        default=None,
        help="lip-sync: share of the schedule re-run, (0, 1] (1.0 with a mask, else 0.6)",
    )
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
    from openwan.cli.s2v import is_s2v

    # an S2V folder may propose a prompt (its default character): run_s2v checks it there
    if args.prompt is None and not is_s2v(args):
        raise ValueError(
            "--prompt is required, e.g. --prompt 'a red circle moving from left to right'"
        )
    from openwan.runtime.parallel.session import ParallelSession

    session = ParallelSession.start(
        ulysses=args.ulysses_size,
        ring=args.ring_size,
        dit_fsdp=args.dit_fsdp,
        t5_fsdp=args.t5_fsdp,
    )
    if session is None:
        return _generate(args, None)
    try:
        if not session.rank0:
            args.quiet = True
        args.base_seed = session.shared_seed(args.base_seed)
        return _generate(args, session)
    except user_errors():
        if session.rank0:
            raise
        return 2  # rank 0 reports it
    finally:
        session.close()


def _generate(args: argparse.Namespace, session: Any) -> int:
    import torch

    from openwan.cli.s2v import is_s2v, reject_s2v_flags, run_s2v
    from openwan.cli.speed import apply_speed_options, check_speed_args
    from openwan.configs.tasks import parse_size
    from openwan.io.video import save_image, save_video
    from openwan.pipelines.request import GenerationRequest
    from openwan.pipelines.t2v import WanT2V

    if is_s2v(args):
        return run_s2v(args, session)
    reject_s2v_flags(args)
    if args.save_file:
        if session is None:
            check_writable(Path(args.save_file))
        else:
            session.agree(lambda: check_writable(Path(args.save_file)))
    from openwan.cli.image_tasks import read_inputs, run_image_task, wants_image_pipeline

    image_task = wants_image_pipeline(args)
    inputs = read_inputs(args) if image_task else {}
    image = None
    if args.image is not None and not image_task:
        from openwan.pipelines.image_cond import load_image

        image = load_image(args.image)  # an unreadable image fails before any model is loaded
    vace_inputs = (args.src_video, args.src_mask, args.src_ref_images)
    sources = None
    if any(v is not None for v in vace_inputs):
        from openwan.pipelines.vace_inputs import read_sources

        sources = read_sources(*vace_inputs)  # unreadable / mismatched inputs fail here
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    offload = check_speed_args(args, device, parallel=session is not None)
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
    pipe_cls: Any = WanT2V
    from openwan.pipelines.two_stage import WanTwoStageT2V, wants_two_stage

    if (
        not image_task
        and sources is None
        and wants_two_stage(args.ckpt_dir, args.task, args.two_stage)
    ):
        pipe_cls = WanTwoStageT2V
    elif args.two_stage == "on":
        raise ValueError("--two-stage on is for text-to-video with t2v-tiny")
    if image_task:
        from openwan.pipelines.i2v import WanI2V

        if args.ckpt_dir is None and args.task != "i2v-tiny":
            raise ValueError(
                "image-to-video needs a checkpoint: pass --ckpt-dir FOLDER (or --task i2v-tiny "
                "for the embedded tiny model)"
            )
        pipe_cls = WanI2V
    pipe = pipe_cls.from_pretrained(
        args.ckpt_dir,
        task=args.task,
        device=device,
        dtype=dtype,
        offload_model=offload != "none",
        t5_cpu=args.t5_cpu or offload == "block",
        text_stream=offload == "block",
    )
    vace_pipe = None
    if pipe.dit.config.is_vace or sources is not None:
        from openwan.pipelines.vace import as_vace

        if image is not None:
            raise ValueError("--image is not a VACE input; use --src_ref_images or --src_video")
        pipe = vace_pipe = as_vace(pipe)
    resolved = request.resolve(pipe.task)  # validate before any heavy work
    stages = getattr(pipe, "stages", (pipe,))  # a two-stage pipeline: options apply to both
    if session is not None:
        speed = [
            n
            for n in ("quant", "compile", "offload")
            if getattr(args, n) not in (None, False, "none")
        ]
        if speed:
            raise ValueError(
                f"--{speed[0]} cannot be combined with --ulysses-size/--ring-size/--dit-fsdp yet"
            )
        for stage in stages:
            session.apply(
                stage, cache=args.cache not in (None, "off") or args.cache_threshold is not None
            )
    caches = [c for stage in stages for c in apply_speed_options(stage, args, device)]
    log.info("loaded %s in %.1fs", pipe.task.name, time.perf_counter() - t0)

    bar = None
    if not args.quiet:
        from tqdm import tqdm

        stage_count = len(stages) if resolved.frame_num > 1 else 1
        bar = tqdm(
            total=resolved.steps * args.num_rounds * stage_count,
            desc="denoising",
            unit="step",
            file=sys.stderr,
        )

    def on_step(i: int, total: int) -> None:
        if bar is not None:
            bar.update(1)

    try:
        if vace_pipe is not None:
            result = vace_pipe.generate(
                request, sources=sources, context_scale=args.context_scale, callback=on_step
            )
        elif image_task:
            result = run_image_task(pipe, args, request, inputs, on_step)
        else:
            result = pipe.generate(request, callback=on_step, image=image)
    finally:
        if bar is not None:
            bar.close()
    req = result.request
    if session is not None and not session.rank0:
        return 0  # rank 0 writes the output
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
        guessed = sum(c.stats.calls_extrapolated for c in caches)
        blocks = sum(c.stats.blocks_run for c in caches) / sum(c.stats.blocks_total for c in caches)
        extrapolated = f", {guessed} were extrapolated" if guessed else ""
        print(
            f"diffusion cache: {reused} of {calls} model calls reused another CFG branch"
            f"{extrapolated}, {blocks:.0%} of the DiT blocks ran",
            file=sys.stderr,
        )
        meta["cache"] = caches[0].spec.describe()
    for name in ("quant", "offload", "compile", "vae_tiling"):
        if getattr(args, name) not in (None, False, "none"):
            meta[name] = getattr(args, name)
    if image_task:
        from openwan.cli.image_tasks import input_metadata

        meta |= input_metadata(args)
    elif args.image is not None:
        meta["image"] = str(args.image)
    if vace_pipe is not None:
        vace_meta = zip(("src_video", "src_mask", "src_ref_images"), vace_inputs)
        meta.update({k: str(v) for k, v in vace_meta if v is not None})
        meta["context_scale"] = args.context_scale
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
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank fails alike: say it once
            print(f"openwan: error: {e}", file=sys.stderr)
        return 2
