"""``facecast bench …``: the sub-commands, their options (defaults read from the bench
functions' signatures) and how each is run; ``runtime.cli`` puts ``COMMANDS`` under ``bench``."""

from __future__ import annotations

import argparse

from runtime.cli_args import (
    Commands,
    add_avatar,
    add_backend,
    add_json,
    add_size,
    backend_errors_as_input_errors,
    param_default,
    print_json,
)


def _rig_options(p: argparse.ArgumentParser) -> None:
    from runtime.bench.components import bench_rig

    add_avatar(p, param_default(bench_rig, "avatar_name"))
    add_json(p)
    p.set_defaults(func=_rig)


def _rig(args: argparse.Namespace) -> int:
    from runtime.bench.components import bench_rig

    return print_json(bench_rig(args.avatar), args)


def _motion_options(p: argparse.ArgumentParser) -> None:
    add_json(p)
    p.set_defaults(func=_motion)


def _motion(args: argparse.Namespace) -> int:
    from runtime.bench.components import bench_motion

    return print_json(bench_motion(), args)


def _renderer_options(p: argparse.ArgumentParser) -> None:
    from runtime.bench.components import bench_renderer as fn

    add_backend(p, param_default(fn, "backend"))
    add_size(p, param_default(fn, "size"))
    p.add_argument("--batch", type=int, default=param_default(fn, "batch"),
                   help="frames per call (default %(default)s)")
    p.add_argument("--seconds", type=float, default=param_default(fn, "seconds"),
                   help="seconds of timed calls after warm-up (default %(default)s)")
    p.add_argument("--threads", type=int, default=param_default(fn, "threads"),
                   help="ONNX Runtime intra-op threads (default: its own choice)")
    add_avatar(p, param_default(fn, "avatar"))
    add_json(p)
    p.set_defaults(func=_renderer)


def _renderer(args: argparse.Namespace) -> int:
    from runtime.bench.components import bench_renderer

    with backend_errors_as_input_errors():
        result = bench_renderer(args.backend, args.size, args.batch, args.seconds,
                                avatar=args.avatar, threads=args.threads)
    return print_json(result, args)


def _latency_options(p: argparse.ArgumentParser) -> None:
    from runtime.bench.latency import bench_latency as fn

    p.add_argument("--sessions", type=int, default=param_default(fn, "sessions"),
                   help="concurrent client peers (default %(default)s)")
    p.add_argument("--seconds", type=float, default=param_default(fn, "seconds"),
                   help="seconds of speech pushed, after the warm-up (default %(default)s)")
    add_size(p, param_default(fn, "size"))
    add_avatar(p, param_default(fn, "avatar"))
    add_backend(p, param_default(fn, "backend"))
    p.add_argument("--no-watermark", action="store_true",
                   help="serve without the invisible watermark (A/B of its cost)")
    add_json(p)
    p.set_defaults(func=_latency)


def _latency(args: argparse.Namespace) -> int:
    from runtime.bench.latency import bench_latency

    with backend_errors_as_input_errors():
        result = bench_latency(args.sessions, args.seconds, args.size, args.avatar, args.backend,
                               watermark=not args.no_watermark)
    return print_json(result, args)


def _soak_options(p: argparse.ArgumentParser) -> None:
    from runtime.bench.soak import bench_soak as fn

    p.add_argument("--minutes", type=float, default=param_default(fn, "minutes"),
                   help="minutes to run (default %(default)s; fractions allowed)")
    p.add_argument("--reconnect-every", type=float, default=param_default(fn, "reconnect_every"),
                   help="seconds between reconnects (default %(default)s)")
    add_size(p, param_default(fn, "size"))
    add_avatar(p, param_default(fn, "avatar"))
    add_backend(p, param_default(fn, "backend"))
    add_json(p)
    p.set_defaults(func=_soak)


def _soak(args: argparse.Namespace) -> int:
    from runtime.bench.soak import bench_soak

    with backend_errors_as_input_errors():
        result = bench_soak(args.minutes, args.reconnect_every, args.size, args.avatar,
                            args.backend)
    return print_json(result, args)


def _hostile_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=None,
                   help="port of the server under attack (default: a free one)")
    p.add_argument("--quick", action="store_true",
                   help="a short subset of the cases (about 25, under a minute)")
    p.add_argument("--case", action="append", default=None, metavar="NAME",
                   help="run only this case (repeatable; names as in the report)")
    add_json(p)
    p.set_defaults(func=_hostile)


def _hostile(args: argparse.Namespace) -> int:
    import json

    from runtime.bench.hostile import CASES, run_campaign, summary

    unknown = sorted(set(args.case or ()) - {c.name for c in CASES})
    if unknown:
        raise ValueError(f"no such case: {', '.join(unknown)}")
    with backend_errors_as_input_errors():
        result = run_campaign(quick=args.quick, port=args.port,
                              names=set(args.case) if args.case else None)
    print(json.dumps(result) if args.json else summary(result))
    return 0 if result["ok"] else 1


def _capacity_options(p: argparse.ArgumentParser) -> None:
    from runtime.bench.capacity import measure_capacity as fn

    add_backend(p, param_default(fn, "backend"))
    add_size(p, param_default(fn, "size"))
    p.add_argument("--max-sessions", type=int, default=param_default(fn, "max_sessions"),
                   help="most sessions tried (default %(default)s)")
    p.add_argument("--sessions", type=_counts, default=None, metavar="N,N,...",
                   help="session counts to try instead of 1, 2, … --max-sessions "
                        "(e.g. 1,8,16,32,64 on a GPU)")
    p.add_argument("--seconds", type=float, default=param_default(fn, "seconds"),
                   help="seconds measured per step, after a 2 s warm-up (default %(default)s)")
    p.add_argument("--fps", default=param_default(fn, "fps"),
                   help="video frame rate, exact: 25, 30000/1001 … (default %(default)s)")
    p.add_argument("--threads", type=int, default=param_default(fn, "threads"),
                   help="ONNX Runtime intra-op threads (default: its own choice)")
    add_avatar(p, param_default(fn, "avatar"))
    p.add_argument("--no-save", action="store_true",
                   help="do not keep the result for `facecast serve --max-sessions auto`")
    add_json(p)
    p.set_defaults(func=_capacity)


def _counts(text: str) -> list[int]:
    """``--sessions``: comma-separated increasing positive integers."""
    try:
        counts = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated numbers, not {text!r}") from None
    if not counts or min(counts) < 1 or counts != sorted(set(counts)):
        raise argparse.ArgumentTypeError("increasing counts of at least 1")
    return counts


def _capacity(args: argparse.Namespace) -> int:
    import json
    import sys

    from runtime.bench.capacity import run_capacity, save_capacity, table

    def progress(step: dict) -> None:
        if not args.json:
            print(f"{step['sessions']} session(s): {step['fps_min']:.2f} fps min, tick p95 "
                  f"{step['tick_p95_ms']:.1f} ms, {step['late_ticks']} late"
                  f"{'' if step['holds'] else ' - does not hold'}", file=sys.stderr)

    if args.max_sessions < 1:
        raise ValueError("--max-sessions must be at least 1")
    if args.seconds <= 0:
        raise ValueError("--seconds must be positive")
    with backend_errors_as_input_errors():
        result = run_capacity(args.backend, args.size, args.fps, args.max_sessions,
                              args.seconds, avatar=args.avatar, threads=args.threads,
                              on_step=progress, sessions=args.sessions)
    result["saved_to"] = None if args.no_save else str(save_capacity(result["key"], result))
    print(json.dumps(result) if args.json else table(result))
    return 0


COMMANDS: Commands = {
    "rig": ("rig evaluation and retargeting speed", _rig_options),
    "motion": ("motion-model speed on CPU, streaming and offline", _motion_options),
    "renderer": ("warm renderer speed", _renderer_options),
    "latency": (("serve on loopback, N aiortc peers pushing real speech: onset-to-mouth "
                 "latency, A/V offset, fps, CPU, RSS"), _latency_options),
    "soak": (("one session speaking and idling in turns with reconnects: frames, stalls, "
              "watchdog restarts, A/V offset, RSS, fds, threads"), _soak_options),
    "hostile": (("fuzz campaign against serve while one session keeps talking: every case "
                 "handled, the session's fps, fds/threads/RSS, SIGTERM; exit 1 if not"),
                _hostile_options),
    "capacity": (("N synthetic sessions on the real scheduler with VP8/Opus encoding, no "
                  "network: the most sessions at full fps, per-stage ms, CPU, RSS/session"),
                 _capacity_options),
}
"""The ``facecast bench`` sub-commands (``runtime.cli_args.Commands``)."""
