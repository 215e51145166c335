#!/usr/bin/env python3
"""ffdt-boss: transcode one video with workers from the tracker (the command line only).

The job itself, stage by stage, is client/job.py: probe -> split -> hand chunks to workers ->
check each result -> concat + mux with the source's audio, subtitles, chapters and metadata.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):      # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from ffdt.common import environment
    environment.ensure("ffdt-boss")      # any python3: the checkout's .venv, or one line on what to run

from ffdt.client import batch, media
from ffdt.client.batch import VIDEO_EXTENSIONS
from ffdt.client.streams import StreamOptions
from ffdt.client.job import check_report_path, run_boss
from ffdt.client.progress import bars_wanted
from ffdt.common import ffmpeg
from ffdt.common.tls import ClientTls
from ffdt.common.cli import (PASSWORD_HELP, ArgumentParser, add_common_options, add_config_option, add_ffmpeg_options,
                             add_password_option, add_tls_client_options, client_tls, read_password, run_main,
                             setup_logging)
from ffdt.common.config import DEFAULT_VERIFY_FRACTION, WORKER_SILENCE_TIMEOUT
from ffdt.common.errors import UsageError
from ffdt.common.net import parse_host_port
from ffdt.common.encoders import ENCODERS
from ffdt.common.settings import Settings, parse_codec_params, parse_rate, parse_scale, whole

log = logging.getLogger("boss")


@dataclass(frozen=True)
class BossConfig:
    input: Path
    output: Path
    settings: Settings
    acodec: str
    abitrate: int | None
    tools: ffmpeg.Tools
    ffmpeg_args: list[str]          # passed on to --local workers
    tracker: tuple[str, int] | None
    user: str
    password: str = field(repr=False)
    workers: int
    local: int
    chunk_seconds: float | None
    wait_workers: float
    silence_timeout: float
    work_dir: Path | None
    keep_work: bool
    restart: bool
    allow_mixed: bool
    bars: bool
    report: Path | None
    verify_fraction: float = DEFAULT_VERIFY_FRACTION
    recheck_fraction: float = 0.0
    samples: str = "auto"                   # auto (not from workers on this machine), always, never
    progress: str = "bar"                   # bar (on a terminal), json (lines on stdout), none
    overwrite: bool = False                 # -y: replace an existing OUTPUT
    streams: StreamOptions = StreamOptions()    # which of the input's streams (ffmpeg's defaults)
    tls: ClientTls = ClientTls(None)        # to the tracker; workers are pinned to the keys they registered


# ---------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="ffdt-boss",
        description="Transcode INPUT into OUTPUT with workers from a tracker (or --local N workers on this "
        "machine). The container follows OUTPUT's extension (.mp4 .mov .mkv .webm); defaults: H.264 + AAC, "
        "or VP9 + Opus for .webm. ffmpeg's own spellings work too: -i IN, -c:v, -c:a, -crf, -preset, "
        "-b:v, -b:a, -pix_fmt, -r, -y, -n.",
        epilog=PASSWORD_HELP + ". Environment: FFDT_PASSWORD, FFMPEG_PATH.")
    p.add_argument("input", type=Path, metavar="INPUT", nargs="*",
                   help="the video to transcode (with -i INPUT, this place is the OUTPUT, as in ffmpeg); "
                   "several, or folders, make a queue written to -o OUTDIR/")
    p.add_argument("-i", dest="input_option", type=Path, metavar="INPUT", help="the input, as ffmpeg takes it")
    # a str, not a Path: Path("out/") drops the slash that says "a folder" (a queue's OUTDIR)
    p.add_argument("-o", "--output", metavar="OUTPUT",
                   help="the file to write; for a queue, the folder (made if missing) its outputs go to")
    clobber = p.add_mutually_exclusive_group()
    clobber.add_argument("-y", "--overwrite", action="store_true", help="replace OUTPUT if it exists")
    clobber.add_argument("-n", "--no-overwrite", action="store_true",
                         help="never replace OUTPUT (the default: an existing OUTPUT is an error without -y)")
    where = p.add_argument_group("workers")
    where.add_argument("--tracker", help="tracker HOST:PORT")
    where.add_argument("--user", help="tracker user with the boss role")
    where.add_argument("--local", type=int, default=0, metavar="N",
                       help="no tracker: start N workers on this machine")
    where.add_argument("--workers", type=int, default=16, help="use up to this many workers")
    where.add_argument("--wait-workers", type=float, default=60.0,
                       help="if every worker is lost, wait this long for new ones")
    where.add_argument("--worker-timeout", type=float, default=WORKER_SILENCE_TIMEOUT,
                       help="seconds of silence after which a worker counts as lost")
    enc = p.add_argument_group("encoding")
    enc.add_argument("--vcodec", "-c:v", "-vcodec", help=f"{', '.join(ENCODERS)} (default: libx264; "
                     "libvpx-vp9 for .webm)")
    enc.add_argument("--crf", "-crf", type=float, help="constant quality on the encoder's scale (default: the "
                     "encoder's own: " + ", ".join(f"{e.default_quality} for {e.name}" for e in ENCODERS.values()) +
                     "; x264/x265 take fractions such as 22.5)")
    enc.add_argument("--vbitrate", "-b:v", help="target video bit rate, e.g. 2500k, instead of --crf")
    enc.add_argument("--maxrate", "-maxrate", help="maximum video bit rate")
    enc.add_argument("--bufsize", "-bufsize", help="rate-control buffer size")
    enc.add_argument("--preset", "-preset", help="encoder preset: x264/x265 names, a number for VP9/AV1 "
                     "(default: the encoder's own: medium for x264/x265)")
    enc.add_argument("--pix-fmt", "-pix_fmt", help="output pixel format, e.g. yuv420p (default: the source's, "
                     "as one ffmpeg run picks it)")
    enc.add_argument("--scale", help="W:H, e.g. 1280:-2 (default: the source's size)")
    enc.add_argument("--fps", "-r", help="output frame rate (default: keep the source's timestamps)")
    enc.add_argument("--tune", "-tune", help="encoder tuning: film, animation, grain, ... for x264/x265; hq, ll, ull "
                     "for NVENC (default: none)")
    enc.add_argument("--profile", "-profile:v", help="H.264/HEVC profile, e.g. high, main10 (default: the encoder's "
                     "choice)")
    enc.add_argument("--level", "-level", help="H.264/HEVC level, e.g. 4.1 (default: the encoder's choice)")
    enc.add_argument("--x264-params", "-x264-params", metavar="K=V:K=V", help="x264 parameters from a safe list "
                     "(keyint, bframes, ref, aq-mode, psy, deblock, me, subme, ...; a key outside it is refused "
                     "with the list)")
    enc.add_argument("--x265-params", "-x265-params", metavar="K=V:K=V", help="x265 parameters from a safe list "
                     "(bframes, ref, aq-mode, psy-rd, rd, sao, ctu, ...)")
    enc.add_argument("--acodec", "-c:a", "-acodec", help="audio encoder, or copy (default: aac; libopus for .webm)")
    enc.add_argument("--abitrate", "-b:a", help="audio bit rate, e.g. 160k (default: the encoder's own: "
                     "128k for aac)")
    many = p.add_argument_group("queue", "several INPUTs or folders, one farm: each file in turn, a failed one "
                                "reported without stopping the rest; an existing output counts as done and is "
                                "skipped (-y to redo it), so the same command again resumes the queue")
    many.add_argument("--recursive", action="store_true", help="also the files in a folder's sub-folders "
                      "(their paths are mirrored under OUTDIR)")
    many.add_argument("--extensions", default=",".join(VIDEO_EXTENSIONS), metavar="LIST",
                      help="the files of a folder to take, by extension (default: %(default)s)")
    many.add_argument("--container", default="mp4", choices=sorted(e.lstrip(".") for e in media.CONTAINERS),
                      help="the queue's output container (default: %(default)s)")
    pick = p.add_argument_group("streams", "by default, as ffmpeg picks them: the video with the largest "
                                "picture that decodes, and every decodable audio stream of its program")
    pick.add_argument("--video-stream", type=int, metavar="N", help="transcode the video stream with index N")
    pick.add_argument("--program", type=int, metavar="N", help="take the streams of program N (MPEG-TS)")
    pick.add_argument("--audio-streams", default="all", metavar="all|first|none|N,M",
                      help="which audio streams to carry, by stream index in the order given")
    p.add_argument("--chunk-seconds", type=float, help="target chunk length (default: whole rounds of one chunk per worker, up to 3, "
                   "chunks of 10 s or more where the input allows, 5 s for dense video)")
    p.add_argument("--work-dir", type=Path, help="where chunks are kept (default: beside OUTPUT)")
    p.add_argument("--keep-work", action="store_true", help="keep the work directory after success")
    p.add_argument("--restart", action="store_true",
                   help="throw away an interrupted run's work instead of resuming it")
    p.add_argument("--allow-mixed-encoders", action="store_true",
                   help="also use workers whose ffmpeg build differs from the others' (chunks may differ)")
    p.add_argument("--report", type=Path, metavar="FILE", help="write the job summary as JSON")
    p.add_argument("--progress", choices=("bar", "json", "none"), default="bar",
                   help="bar: a progress bar on a terminal; json: one JSON object a line on stdout (phases, "
                   "frames, chunks, fps, ETA, per worker), for scripts; none (default: %(default)s)")
    p.add_argument("--verify-fraction", type=float, default=DEFAULT_VERIFY_FRACTION, metavar="F",
                   help="decode this random fraction of results in full (every result gets the packet-level "
                   "checks, each ffmpeg build's first result a decode of its start; 1 decodes all)")
    p.add_argument("--recheck-fraction", type=float, default=0.0, metavar="F",
                   help="have this random fraction of chunks encoded again by a second worker with the same "
                   "ffmpeg build, settings and threads, and the two results compared bit for bit (a third "
                   "settles a mismatch; the one that differs is dropped); costs that fraction of the encode "
                   "again (default: %(default)s, off)")
    p.add_argument("--samples", choices=("auto", "always", "never"), default="auto",
                   help="have workers send the start of each result while they encode it, and check that, "
                   "so that the last results' checks do not delay the output; a sample's check costs the "
                   "boss 2-3 times the result's own, so it checks only those of results that may come last; "
                   "auto (default) asks none of workers on this machine (a loopback address), whose encodes "
                   "would pay for them; always: ask those too; never: ask none")
    add_ffmpeg_options(p, quiet_help="no progress bar, warnings and errors only")
    add_tls_client_options(p)
    add_password_option(p)
    add_config_option(p)
    add_common_options(p)
    return p


def inputs_and_output(args: argparse.Namespace) -> tuple[list[Path], Path, bool]:
    """The inputs, the output, and whether the output was written as a folder (OUTDIR/)."""
    sources, output = list(args.input), None if args.output is None else Path(args.output)
    if args.input_option is not None:            # ffmpeg's order: -i INPUT ... OUTPUT
        if len(sources) > 1 or (sources and output is not None):
            raise UsageError("give the input once: as INPUT or with -i")
        sources, output = [args.input_option], output or (sources[0] if sources else None)
    if not sources:
        raise UsageError("no INPUT: give the video to transcode")
    if output is None:
        raise UsageError("no OUTPUT: give it with -o OUTPUT (or as ffmpeg takes it: -i INPUT OUTPUT)")
    return sources, output, bool(args.output and args.output.endswith(("/", os.sep)))


def config_from_args(args: argparse.Namespace, sources: list[Path], output: Path, queue: bool) -> BossConfig:
    # a queue's outputs take --container; the settings' defaults (VP9 for .webm) follow it
    container = media.container_for(Path(f"queue.{args.container}") if queue else output)
    if args.local < 0 or args.local > 64:
        raise UsageError("--local takes 1..64 workers")
    if not args.local and not (args.tracker and args.user):
        raise UsageError("give --tracker HOST:PORT and --user NAME, or --local N")
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    if not 0.0 <= args.verify_fraction <= 1.0:
        raise UsageError("--verify-fraction must be between 0 and 1")
    if not 0.0 <= args.recheck_fraction <= 1.0:
        raise UsageError("--recheck-fraction must be between 0 and 1")
    if args.chunk_seconds is not None and not 0.5 <= args.chunk_seconds <= 3600:
        raise UsageError("--chunk-seconds must be between 0.5 and 3600")
    scale = parse_scale(args.scale) if args.scale else (None, None)
    settings = Settings(vcodec=args.vcodec or container.default_vcodec,
                        crf=None if args.crf is None else whole(args.crf),
                        vbitrate=parse_rate(args.vbitrate) if args.vbitrate else None,
                        maxrate=parse_rate(args.maxrate) if args.maxrate else None,
                        bufsize=parse_rate(args.bufsize) if args.bufsize else None,
                        preset=args.preset, pix_fmt=args.pix_fmt, scale_w=scale[0], scale_h=scale[1], fps=args.fps,
                        tune=args.tune, profile=args.profile, level=args.level,
                        codec_params=codec_params(args, args.vcodec or container.default_vcodec))
    if args.recheck_fraction and not ENCODERS[settings.vcodec].deterministic:
        raise UsageError(f"--recheck-fraction needs libx264 or libx265: {settings.vcodec}'s bytes are not the same "
                         "on every machine alike")
    acodec = args.acodec or container.default_acodec
    if acodec != "copy" and acodec not in media.AUDIO_ENCODER_CODEC:
        raise UsageError(f"unsupported --acodec {acodec!r}; choose from copy, {', '.join(media.AUDIO_ENCODER_CODEC)}")
    tools = ffmpeg.find_tools(args.ffmpeg, args.use_global)
    ffmpeg_args = (["--ffmpeg", args.ffmpeg] if args.ffmpeg else []) + (["--use-global"] if args.use_global else [])
    return BossConfig(
        input=sources[0], output=output, overwrite=args.overwrite, settings=settings, acodec=acodec,
        abitrate=parse_rate(args.abitrate) if args.abitrate else None, tools=tools, ffmpeg_args=ffmpeg_args,
        tracker=parse_host_port(args.tracker) if args.tracker and not args.local else None,
        user=args.user or "", password="" if args.local else read_password(args.password_file),
        workers=args.local or args.workers, local=args.local, chunk_seconds=args.chunk_seconds,
        wait_workers=max(0.0, args.wait_workers), silence_timeout=max(1.0, args.worker_timeout),
        tls=ClientTls(None) if args.local else client_tls(args),
        work_dir=args.work_dir, keep_work=args.keep_work, restart=args.restart,
        allow_mixed=args.allow_mixed_encoders, bars=bars_wanted(args.quiet) and args.progress == "bar", report=args.report,
        verify_fraction=args.verify_fraction, recheck_fraction=args.recheck_fraction, samples=args.samples,
        progress=args.progress,
        streams=StreamOptions(video=args.video_stream, program=args.program,
                              audio=StreamOptions.parse_audio(args.audio_streams)))


def codec_params(args: argparse.Namespace, vcodec: str) -> tuple[tuple[str, str], ...]:
    """--x264-params / --x265-params, for the encoder they belong to."""
    for option, encoder in (("x264_params", "libx264"), ("x265_params", "libx265")):
        text = getattr(args, option)
        if text is not None and vcodec != encoder:
            raise UsageError(f"--{option.replace('_', '-')} is for {encoder}, not {vcodec}")
        if text is not None:
            return parse_codec_params(text)
    return ()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_with_config(argv, "boss")
    setup_logging("boss", verbose=args.verbose, quiet=args.quiet)
    # `kill` stops the boss the way Ctrl-C does: workers told, children ended, work kept. SIGINT
    # too, even when the parent left it ignored (Python then keeps it ignored): `kill -INT` must
    # stop a boss started in the background of a script
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return run_main("boss", lambda: run(args))


def run(args: argparse.Namespace) -> int:
    sources, output, as_folder = inputs_and_output(args)
    queue = batch.is_queue(sources, output, as_folder)
    cfg = config_from_args(args, sources, output, queue)
    if not queue:
        return run_boss(cfg)
    if (output.exists() and not output.is_dir()) or (not output.exists() and output.suffix.lower() in media.CONTAINERS):
        raise UsageError(f"{output} is not a folder: a queue of several inputs writes to -o OUTDIR/")
    check_report_path(cfg.report)
    entries = batch.plan(sources, output, f".{args.container}", recursive=args.recursive,
                         extensions=batch.parse_extensions(args.extensions), work_dir=cfg.work_dir)
    return batch.run_queue(cfg, entries)


if __name__ == "__main__":
    sys.exit(main())
