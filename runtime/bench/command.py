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
    add_json(p)
    p.set_defaults(func=_latency)


def _latency(args: argparse.Namespace) -> int:
    from runtime.bench.latency import bench_latency

    with backend_errors_as_input_errors():
        result = bench_latency(args.sessions, args.seconds, args.size, args.avatar, args.backend)
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


COMMANDS: Commands = {
    "rig": ("rig evaluation and retargeting speed", _rig_options),
    "motion": ("motion-model speed on CPU, streaming and offline", _motion_options),
    "renderer": ("warm renderer speed", _renderer_options),
    "latency": (("serve on loopback, N aiortc peers pushing real speech: onset-to-mouth "
                 "latency, A/V offset, fps, CPU, RSS"), _latency_options),
    "soak": (("one session speaking and idling in turns with reconnects: frames, stalls, "
              "watchdog restarts, A/V offset, RSS, fds, threads"), _soak_options),
}
"""The ``facecast bench`` sub-commands (``runtime.cli_args.Commands``)."""
