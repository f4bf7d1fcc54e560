"""The ``facecast`` command line.

Subcommands (each prints a one-line reason and exits non-zero on bad input):

* ``facecast enroll IMAGE --name NAME [--consent TEXT] [--out DIR] [--largest] [--force]``
* ``facecast rig-preview --avatar NAME --out preview.png [--size 256]``
* ``facecast avatar-info NAME`` — validate a bundle and print its metadata as JSON
* ``facecast bench rig|motion [--json]`` — rig/retargeting or motion-model speed, as JSON
* ``facecast eval lipsync [--json] [--plot out.png]`` — lip-sync figures on held-out speech
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_USAGE = 2


def _quiet_native_logs() -> None:
    """Keep mediapipe's glog/TFLite start-up chatter off the terminal (errors still show)."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _cmd_enroll(args: argparse.Namespace) -> int:
    _quiet_native_logs()
    from avatars.enroll import EnrollOptions, enroll

    options = EnrollOptions(
        consent=args.consent,
        source=args.source,
        licence=args.licence,
        attribution=args.attribution,
        largest=args.largest,
        overwrite=args.force,
    )
    folder = enroll(args.image, args.name, args.out, options)
    print(f"enrolled {args.name!r} -> {folder}")
    if args.consent == "not stated":
        print("note: no --consent given; enroll only faces whose owner agreed", file=sys.stderr)
    return EXIT_OK


def _cmd_rig_preview(args: argparse.Namespace) -> int:
    import avatars
    from runtime.preview import rig_preview

    avatar = avatars.load(args.avatar)
    path = rig_preview(avatar, args.out, size=args.size)
    print(f"wrote {path}")
    return EXIT_OK


def _cmd_avatar_info(args: argparse.Namespace) -> int:
    import avatars

    avatar = avatars.load(args.avatar)
    info = dict(avatar.metadata)
    info["path"] = str(avatar.path)
    print(json.dumps(info, indent=2, sort_keys=True))
    return EXIT_OK


def _cmd_bench(args: argparse.Namespace) -> int:
    from runtime.bench import bench_motion, bench_rig

    result = bench_rig(args.avatar) if args.what == "rig" else bench_motion()
    print(json.dumps(result, indent=None if args.json else 2))
    return EXIT_OK


def _cmd_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from runtime import lipsync_eval

    data = Path(args.data)
    model = Path(args.model) if args.model else None
    if args.plot:
        print(f"wrote {lipsync_eval.plot(data, Path(args.plot), model, args.prompt)}")
        return EXIT_OK
    result = lipsync_eval.evaluate(data, model, args.avatar)
    print(json.dumps(result, indent=None if args.json else 2))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``facecast`` with all subcommands."""
    parser = argparse.ArgumentParser(prog="facecast", description="real-time talking avatars")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("enroll", help="make an avatar bundle from a portrait photo")
    p.add_argument("image", help="portrait image file (PNG, JPEG, WebP, ...), at most 40 MP")
    p.add_argument("--name", required=True, help="avatar name: letters, digits, '_' or '-'")
    p.add_argument("--consent", default="not stated",
                   help="consent statement recorded in the bundle (who agreed to what)")
    p.add_argument("--out", default=None,
                   help="parent folder for the bundle (default: $FACECAST_AVATAR_DIR or "
                        "~/.local/share/facecast/avatars)")
    p.add_argument("--source", default=None, help="where the image came from (default: file name)")
    p.add_argument("--licence", default="unknown", help="the image's licence")
    p.add_argument("--attribution", default="", help="credit line for the image")
    p.add_argument("--largest", action="store_true", help="with several faces, use the largest")
    p.add_argument("--force", action="store_true", help="replace an existing bundle")
    p.set_defaults(func=_cmd_enroll)

    p = sub.add_parser("rig-preview", help="draw rig keypoints for a few poses on an avatar")
    p.add_argument("--avatar", default="default", help="avatar name or bundle folder")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--size", type=int, default=256, choices=(256, 512), help="render crop side")
    p.set_defaults(func=_cmd_rig_preview)

    p = sub.add_parser("bench", help="benchmarks that print JSON")
    p.add_argument("what", choices=("rig", "motion"), help="what to measure")
    p.add_argument("--avatar", default="default")
    p.add_argument("--json", action="store_true", help="one line of JSON")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("eval", help="quality figures that print JSON")
    p.add_argument("what", choices=("lipsync",), help="what to evaluate")
    p.add_argument("--data", default="data/speech",
                   help="speech corpus from tools/prepare_speech.py (default data/speech)")
    p.add_argument("--model", default=None, help="motion ONNX file (default: the bundled one)")
    p.add_argument("--avatar", default="default", help="avatar whose rig judges the mouth")
    p.add_argument("--plot", default=None, help="draw one held-out prompt to this PNG instead")
    p.add_argument("--prompt", default=None, help="with --plot: which held-out prompt")
    p.add_argument("--json", action="store_true", help="one line of JSON")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("avatar-info", help="validate an avatar bundle and print its metadata")
    p.add_argument("avatar", help="avatar name or bundle folder")
    p.set_defaults(func=_cmd_avatar_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``facecast`` console script. Returns the process exit status."""
    args = build_parser().parse_args(argv)
    from avatars.bundle import BundleError

    try:
        return int(args.func(args))
    except (BundleError, ValueError, OSError, KeyError) as exc:  # EnrollError: ValueError
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"facecast {args.command}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
