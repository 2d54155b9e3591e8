"""``openwan generate --task s2v-14B``: speech-to-video from the official flags.

    openwan generate --task s2v-14B --ckpt-dir ./Wan2.2-S2V-14B --image ref.png \\
        --audio speech.wav --prompt "a woman singing on a stage" [--pose_video pose.mp4] \\
        [--num_clip N] [--infer_frames 80] [--size 1024*704] [--start_from_ref]
    openwan generate --task s2v-tiny --audio speech.wav --save_file out.mp4   # embedded model

``s2v-tiny`` is the embedded talking-shapes model (64x64, 16-frame clips). A folder written by
``openwan train-s2v --ship`` (the embedded one is) proposes a default character, prompt, size and
clip length for whatever of ``--image``, ``--prompt``, ``--size``, ``--infer_frames`` is not given
(:func:`openwan.pipelines.s2v.folder_defaults`).

Lip-sync editing: ``--lipsync-video talk.mp4 --audio new.wav [--lipsync-mask mouth.png]``
re-generates the video's masked region (white in the mask image) to follow the new audio and
keeps every other pixel (``pipelines/s2v_lipsync.py``); ``--image`` is then optional.

``--size`` only sets the maximum pixel area (official); the output keeps the reference image's
aspect ratio in multiples of 64 (8x the VAE stride). A rerun after an interruption resumes from
the clips already written to ``<save_file>.parts/``.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

S2V_TASKS = ("s2v-14B", "s2v-tiny")
S2V_ONLY_FLAGS = (
    "audio",
    "pose_video",
    "num_clip",
    "infer_frames",
    "lipsync_video",
    "lipsync_mask",
    "lipsync_strength",
)


def is_s2v(args: argparse.Namespace) -> bool:
    return (args.task or "") in S2V_TASKS


def reject_s2v_flags(args: argparse.Namespace) -> None:
    """S2V flags given to another task would be silently ignored: say so instead."""
    given = [f"--{name}" for name in S2V_ONLY_FLAGS if getattr(args, name, None) is not None]
    if given:
        raise ValueError(f"{', '.join(given)} only apply to --task {' or '.join(S2V_TASKS)}")


def run_s2v(args: argparse.Namespace, session: Any = None) -> int:
    """Run under a :class:`~openwan.runtime.parallel.session.ParallelSession` when given
    (torchrun with --ulysses-size/--ring-size/--dit-fsdp/--t5-fsdp)."""
    import torch

    from openwan import __version__
    from openwan.cli.main import check_writable
    from openwan.cli.speed import apply_speed_options, cache_spec, check_speed_args
    from openwan.configs.tasks import parse_size
    from openwan.io.audio import read_audio
    from openwan.pipelines.image_cond import load_image
    from openwan.pipelines.s2v import FolderDefaults, S2VRequest, WanS2V, folder_defaults

    if args.task == "s2v-tiny" and args.ckpt_dir is None:
        from openwan.assets import tiny_model_dir

        args.ckpt_dir = str(tiny_model_dir("s2v"))
    # what the folder proposes (an export made with --ship: the default character, its size and
    # clip length); an official folder proposes nothing and the official defaults apply
    defaults = folder_defaults(args.ckpt_dir) if args.ckpt_dir else FolderDefaults()
    if args.image is None and args.lipsync_video is None and defaults.image is not None:
        args.image = str(defaults.image)
    if args.prompt is None:
        args.prompt = defaults.prompt
    for flag, value in (("--ckpt-dir", args.ckpt_dir), ("--audio", args.audio)):
        if value is None:
            raise ValueError(
                f"--task {args.task} needs {flag} (e.g. --ckpt-dir ./Wan2.2-S2V-14B --audio speech.wav)"
            )
    lipsync = args.lipsync_video is not None
    if not lipsync and (args.lipsync_mask is not None or args.lipsync_strength is not None):
        raise ValueError("--lipsync-mask/--lipsync-strength need --lipsync-video")
    if args.image is None and not lipsync:
        raise ValueError(
            f"--task {args.task} needs --image (the reference picture of the character), or "
            "--lipsync-video to edit an existing video"
        )
    if lipsync and (args.pose_video or args.start_from_ref):
        raise ValueError("--pose_video/--start_from_ref do not apply to lip-sync editing")
    if args.prompt is None:
        raise ValueError("--prompt is required, e.g. --prompt 'a man talking to the camera'")
    cache = cache_spec(args)
    if cache.teacache is not None:
        raise ValueError(
            "--cache teacache does not apply to s2v (its audio injectors sit between the DiT "
            "blocks); use taylor, cfg or attn"
        )
    default_size = defaults.size or (1280, 720)
    width, height = parse_size(args.size) if args.size else default_size
    request = S2VRequest(
        prompt=args.prompt,
        audio=Path(args.audio),
        image=Path(args.image or args.lipsync_video),
        negative_prompt=args.negative_prompt,
        pose_video=Path(args.pose_video) if args.pose_video else None,
        max_area=width * height,
        infer_frames=args.infer_frames or defaults.infer_frames or 80,
        num_clip=args.num_clip,
        seed=args.base_seed,
        start_from_ref=args.start_from_ref,
        **{
            k: v
            for k, v in (
                ("steps", args.sample_steps),
                ("shift", args.sample_shift),
                ("guide_scale", args.sample_guide_scale),
                ("solver", args.sample_solver),
            )
            if v is not None
        },
    ).validated()
    slug = re.sub(r"[^\w]+", "_", request.prompt.lower()).strip("_")[:50] or "video"
    out = Path(args.save_file or f"{args.task}_{slug}_{request.seed}.mp4")
    if out.suffix.lower() != ".mp4":
        raise ValueError(f"--save_file must end in .mp4 (video with sound), got {out.name}")
    if session is None:
        check_writable(out)
    else:
        session.agree(lambda: check_writable(out))
    # unreadable inputs fail before any model is loaded
    read_audio(request.audio)
    if lipsync:
        from openwan.io.video import read_video
        from openwan.pipelines.s2v_lipsync import VIDEO_SUFFIXES, LipSyncRequest

        read_video(args.lipsync_video, max_frames=1)
        mask = args.lipsync_mask
        if mask is not None and Path(mask).suffix.lower() in VIDEO_SUFFIXES:
            read_video(mask, max_frames=1)
        elif mask is not None:
            load_image(mask)
        if args.image is not None:
            load_image(args.image)
        edit = LipSyncRequest(
            request,
            Path(args.lipsync_video),
            mask=Path(args.lipsync_mask) if args.lipsync_mask else None,
            reference=Path(args.image) if args.image else None,
            strength=args.lipsync_strength,
        ).validated()
    else:
        load_image(request.image)
    if args.quiet:
        import transformers

        transformers.utils.logging.disable_progress_bar()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, None: None}[args.dtype]
    t0 = time.perf_counter()
    offload = check_speed_args(args, device, parallel=session is not None)
    # block offload loads the DiT on the CPU (as model offload does) and streams its blocks and
    # audio injectors from there; the model's whole-DiT moves then leave its placement alone
    pipe = WanS2V.from_pretrained(
        args.ckpt_dir, device=device, dtype=dtype, offload_model=offload != "none"
    )
    if session is not None:
        session.apply(pipe, cache=cache.enabled)
    apply_speed_options(pipe, args, device)  # --quant and --cache on the DiT
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=request.steps, desc="clip 1", unit="step", file=sys.stderr)

    def on_step(i: int, total: int) -> None:
        if bar is not None:
            bar.total = total  # lip-sync at strength < 1 runs the last steps only
            bar.update(1)

    def on_clip(r: int, clips: int) -> None:
        if bar is not None:
            bar.reset()
            bar.set_description(f"clip {min(r + 2, clips)}/{clips}")

    try:
        if lipsync:
            from openwan.pipelines.s2v_lipsync import lipsync as run_lipsync

            run_lipsync(pipe, edit, out, callback=on_step, on_clip=on_clip)
        else:
            pipe.generate(request, out, callback=on_step, on_clip=on_clip)
    finally:
        if bar is not None:
            bar.close()
    if session is not None and not session.rank0:
        return 0  # rank 0 wrote the file
    print(
        f"saved {out} (seed {request.seed}, openwan {__version__}, {time.perf_counter() - t0:.1f}s)"
    )
    return 0
