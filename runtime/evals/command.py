"""``facecast eval …``: the sub-commands, their options (defaults read from the evaluation
functions' signatures) and how each is run; ``runtime.cli`` puts ``COMMANDS`` under ``eval``."""

from __future__ import annotations

import argparse
from pathlib import Path

from runtime.cli_args import (
    EXIT_OK,
    Commands,
    add_avatar,
    add_backend,
    add_json,
    add_size,
    backend_errors_as_input_errors,
    param_default,
    print_json,
    quiet_native_logs,
)

SPEECH_DATA = "data/speech"
"""Where ``tools/prepare_speech.py`` writes the speech corpus by default."""


def _face_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", help="the video to judge (one talking face; any format FFmpeg reads)")
    p.add_argument("--sheet", default=None,
                   help="also write a contact sheet PNG here (most open mouth, most closed "
                        "eyes, a neutral frame)")
    add_json(p)
    p.set_defaults(func=_face)


def _face(args: argparse.Namespace) -> int:
    quiet_native_logs()
    from runtime.evals.face import evaluate_face

    return print_json(evaluate_face(Path(args.video), Path(args.sheet) if args.sheet else None),
                      args)


def _lipsync_options(p: argparse.ArgumentParser) -> None:
    from runtime.evals.lipsync import evaluate

    p.add_argument("--data", default=SPEECH_DATA,
                   help="speech corpus from tools/prepare_speech.py (default %(default)s)")
    p.add_argument("--model", default=None, help="motion ONNX file (default: the bundled one)")
    add_avatar(p, param_default(evaluate, "avatar"), help="avatar whose rig judges the mouth")
    p.add_argument("--plot", default=None, help="draw one held-out prompt to this PNG instead")
    p.add_argument("--prompt", default=None, help="with --plot: which held-out prompt")
    add_json(p)
    p.set_defaults(func=_lipsync)


def _lipsync(args: argparse.Namespace) -> int:
    from runtime.evals import lipsync

    data = Path(args.data)
    model = Path(args.model) if args.model else None
    if args.plot:
        print(f"wrote {lipsync.plot(data, Path(args.plot), model, args.prompt)}")
        return EXIT_OK
    return print_json(lipsync.evaluate(data, model, args.avatar), args)


def _renderer_options(p: argparse.ArgumentParser) -> None:
    from runtime.evals.renderer import evaluate as fn

    add_avatar(p, param_default(fn, "avatar_name"), help="avatar that is rendered")
    p.add_argument("--n", type=int, default=param_default(fn, "n"),
                   help="driving poses (default %(default)s)")
    p.add_argument("--seed", type=int, default=param_default(fn, "seed"),
                   help="seed of the driving poses (default %(default)s)")
    add_size(p, param_default(fn, "size"))
    add_backend(p, param_default(fn, "backend"))
    p.add_argument("--sheet", default=None,
                   help="also write a student/teacher contact sheet PNG here (with --heldout: "
                        "a folder, one NAME.png per identity)")
    p.add_argument("--heldout", action="store_true",
                   help="judge every installed held-out portrait (never trained on) instead of "
                        "--avatar, against issue 17's bars")
    p.add_argument("--speech-frames", type=int, default=param_default(fn, "speech_n"),
                   metavar="N", help="also judge N frames of held-out speech (the held-out "
                   "Asterisk prompts, animated as facecast render does); 0 skips "
                   "(default %(default)s)")
    p.add_argument("--zero-shot", action="store_true",
                   help="ignore the avatar's facecast adapt features (if it has some)")
    p.add_argument("--adapt", type=int, default=0, metavar="STEPS",
                   help="with --heldout: adapt each identity first (facecast adapt, STEPS steps, "
                        "about 0.2 s each; needs torch); default 0: zero-shot")
    add_json(p)
    p.set_defaults(func=_renderer)


def _renderer(args: argparse.Namespace) -> int:
    quiet_native_logs()
    from runtime.evals import renderer

    sheet = Path(args.sheet) if args.sheet else None
    with backend_errors_as_input_errors():
        if args.heldout:
            result = renderer.evaluate_heldout(args.n, args.seed, args.size, args.backend, sheet,
                                               adapt_steps=args.adapt,
                                               speech_n=args.speech_frames)
        else:
            if args.adapt:
                raise ValueError("--adapt goes with --heldout; for one avatar run facecast adapt")
            result = renderer.evaluate(args.avatar, args.n, args.seed, args.size, args.backend,
                                       sheet, use_adaptation=not args.zero_shot,
                                       speech_n=args.speech_frames)
    return print_json(result, args)


def _sync_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", help="the video to judge (one face and its voice; MP4)")
    add_json(p)
    p.set_defaults(func=_sync)


def _sync(args: argparse.Namespace) -> int:
    quiet_native_logs()
    from runtime.evals.sync import evaluate_sync

    return print_json(evaluate_sync(Path(args.video)).to_json(), args)


def _webcam_options(p: argparse.ArgumentParser) -> None:
    from runtime.evals.webcam import evaluate_webcam as fn

    add_avatar(p, param_default(fn, "driver"), help="the driver: avatar rendered speaking")
    p.add_argument("--target", default=None,
                   help="avatar the webcam drives (default: the held-out portrait "
                        "grace_hopper, enrolled into a temporary folder)")
    p.add_argument("--text", default=None, help="sentence the driver avatar speaks")
    p.add_argument("--audio", default=None, help="speech file instead of --text")
    p.add_argument("--voice", default=None, help="espeak-ng voice for --text")
    p.add_argument("--calibration", default=param_default(fn, "calibration"),
                   choices=("first", "source"),
                   help="driver neutral from the first tracked frames (as live) or from the "
                        "driver avatar's still image (default %(default)s)")
    p.add_argument("--lead-in", type=float, default=param_default(fn, "lead_in_s"),
                   help="seconds of silence before the speech (default %(default)s)")
    p.add_argument("--out", default=None,
                   help="also render the target avatar driven by the webcam to this MP4")
    p.add_argument("--work-dir", default=None,
                   help="keep the driver video and target bundle here")
    add_size(p, param_default(fn, "size"))
    p.add_argument("--seed", type=int, default=param_default(fn, "seed"),
                   help="seed of the driver's blinks and head motion (default %(default)s)")
    add_backend(p, param_default(fn, "backend"))
    add_json(p)
    p.set_defaults(func=_webcam)


def _webcam(args: argparse.Namespace) -> int:
    quiet_native_logs()
    from runtime.evals.webcam import evaluate_webcam

    with backend_errors_as_input_errors():
        result = evaluate_webcam(args.avatar, args.target, args.text, args.audio, args.voice,
                                 lead_in_s=args.lead_in, size=args.size, seed=args.seed,
                                 backend=args.backend, calibration=args.calibration,
                                 out_video=args.out, work_dir=args.work_dir)
    return print_json(result, args)


COMMANDS: Commands = {
    "face": (("what a viewer sees of a talking face in any video (blinks, mouth interior, "
              "mouth range, flicker), judged by mediapipe"), _face_options),
    "lipsync": ("lip-sync figures of the motion model on held-out speech", _lipsync_options),
    "renderer": ("the renderer against its teacher, judged by mediapipe", _renderer_options),
    "sync": ("lip sync of a rendered video, judged by mediapipe", _sync_options),
    "webcam": (("webcam-driven mode end to end on a rendered clip with known motion: "
                "tracking rate, coefficient and pose errors"), _webcam_options),
}
"""The ``facecast eval`` sub-commands (``runtime.cli_args.Commands``)."""
