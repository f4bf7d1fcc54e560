"""The ``facecast`` command line.

Subcommands (each prints a one-line reason and exits non-zero on bad input):

* ``facecast enroll IMAGE --name NAME [--consent TEXT] [--out DIR] [--largest] [--force]``
* ``facecast rig-preview --avatar NAME --out preview.png [--size 256]``
* ``facecast avatar-info NAME`` — validate a bundle and print its metadata as JSON
* ``facecast bench rig|motion [--json]`` — rig/retargeting or motion-model speed, as JSON
* ``facecast bench renderer [--backend onnxruntime|cuda|tensorrt|torch|auto] [--size 256|512]
  [--batch N] [--seconds S] [--threads T] [--json]`` — warm renderer speed, as JSON
* ``facecast bench latency [--sessions N] [--seconds S] [--size 256|512] [--json]`` — serve on
  loopback, N aiortc peers pushing real speech; onset-to-mouth latency, A/V offset, fps, CPU, RSS
* ``facecast bench soak [--minutes 60] [--reconnect-every 180] [--json]`` — one session speaking
  and idling in turns with reconnects: frames, stalls, watchdog restarts, A/V offset, RSS, fds,
  threads at start and end
* ``facecast eval lipsync [--json] [--plot out.png]`` — lip-sync figures on held-out speech
* ``facecast eval renderer [--avatar NAME] [--n 200] [--seed 0] [--size 256] [--backend ...]
  [--sheet out.png] [--json]`` — renderer vs teacher judged by mediapipe, as JSON
* ``facecast render --avatar NAME (--audio FILE | --text "…" [--voice V] [--tts SPEC]) --out OUT.mp4
  [--fps 25] [--size 512] [--backend auto|onnxruntime|cuda|tensorrt|torch] [--seed 0] [--json]``
  — speech or text → talking-avatar MP4 (H.264 + AAC); one summary line
* ``facecast eval sync VIDEO.mp4 [--json]`` — lip sync of a rendered video judged by mediapipe
* ``facecast eval webcam [--avatar default] [--target NAME] [--text "…" | --audio FILE]
  [--calibration first|source] [--lead-in 1.0] [--out driven.mp4] [--json]`` — webcam-driven
  mode end to end on a rendered clip with known motion: tracking rate, coefficient and pose errors
* ``facecast serve [--host 127.0.0.1] [--port 8765] [--avatar default] [--size 256] [--fps 25]
  [--backend auto] [--token SECRET | --insecure] [--allowed-origin URL ...] [--max-sessions 4]``
  — the real-time server: WebRTC to the web widget, control over WebSocket (``web/PROTOCOL.md``)
* ``facecast kiosk [--avatar NAME] [--fullscreen] [--port 8765] [--no-browser] [--say TEXT]
  [--log-file F] [--display kiosk]`` — serve and show the avatar full screen in Chromium, page
  reconnecting by itself, pipeline watchdog, rotating log; apps speak via ``/ws?control=kiosk``
* ``facecast token --secret SECRET [--ttl 3600]`` — print a signed, expiring token for ``serve``
* ``facecast devices [--json]`` — the microphones PortAudio sees (index, name, channels, rate)
* ``facecast cam [--avatar NAME] [--device NAME|INDEX] [--vcam] [--preview] [--record OUT.mp4]
  [--seconds S] [--json]`` — the avatar speaks with the microphone, live, to a virtual camera,
  a window and/or an MP4; mic-to-frame latency and fps as JSON at exit
* ``facecast build-engines [ONNX ...] [--max-batch 64]`` — build TensorRT engines (FP16) for this
  GPU, one JSON line per engine
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence

EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_USAGE = 2
RENDER_BACKENDS = ("auto", "onnxruntime", "cuda", "tensorrt", "torch")
"""``engines.renderer.BACKENDS`` (repeated so parsing imports no engine)."""


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
    from runtime.offline.preview import rig_preview

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


@contextlib.contextmanager
def _backend_errors_as_input_errors() -> Iterator[None]:
    """A backend that cannot run here (no CUDA provider, no TensorRT plan, a plan from another
    GPU: ``RuntimeError``) is the user's choice of ``--backend``: report it in one line."""
    try:
        yield
    except RuntimeError as exc:
        raise ValueError(str(exc) or type(exc).__name__) from exc


def _cmd_bench(args: argparse.Namespace) -> int:
    from runtime.bench.components import bench_motion, bench_renderer, bench_rig

    if args.what == "latency":
        from runtime.bench.latency import bench_latency

        with _backend_errors_as_input_errors():
            result = bench_latency(args.sessions, 30.0 if args.seconds is None else args.seconds,
                                   args.size, args.avatar, args.backend or "auto")
        print(json.dumps(result, indent=None if args.json else 2))
        return EXIT_OK
    if args.what == "soak":
        from runtime.bench.soak import DEFAULT_RECONNECT_S, bench_soak

        with _backend_errors_as_input_errors():
            result = bench_soak(60.0 if args.minutes is None else args.minutes,
                                args.reconnect_every or DEFAULT_RECONNECT_S, args.size,
                                args.avatar, args.backend or "auto")
        print(json.dumps(result, indent=None if args.json else 2))
        return EXIT_OK
    if args.what == "renderer":
        with _backend_errors_as_input_errors():
            result = bench_renderer(args.backend or "onnxruntime", args.size, args.batch,
                                    5.0 if args.seconds is None else args.seconds,
                                    avatar=args.avatar, threads=args.threads)
    elif args.what == "rig":
        result = bench_rig(args.avatar)
    else:
        result = bench_motion()
    print(json.dumps(result, indent=None if args.json else 2))
    return EXIT_OK


def _cmd_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    if args.what == "sync":
        _quiet_native_logs()
        from runtime.evals.sync import evaluate_sync

        if not args.video:
            raise ValueError("eval sync needs a video: facecast eval sync OUT.mp4")
        report = evaluate_sync(Path(args.video))
        print(json.dumps(report.to_json(), indent=None if args.json else 2))
        return EXIT_OK
    if args.what == "webcam":
        _quiet_native_logs()
        from runtime.evals.webcam import evaluate_webcam

        with _backend_errors_as_input_errors():
            result = evaluate_webcam(args.avatar, args.target, args.text, args.audio, args.voice,
                                     args.lead_in, 25, args.size, args.seed,
                                     args.backend or "auto", args.calibration,
                                     out_video=args.out, work_dir=args.work_dir)
        print(json.dumps(result, indent=None if args.json else 2))
        return EXIT_OK
    if args.what == "renderer":
        _quiet_native_logs()
        from runtime.evals import renderer as renderer_eval
        with _backend_errors_as_input_errors():
            result = renderer_eval.evaluate(args.avatar, args.n, args.seed, args.size,
                                            args.backend or "auto",
                                            Path(args.sheet) if args.sheet else None)
        print(json.dumps(result, indent=None if args.json else 2))
        return EXIT_OK

    from runtime.evals import lipsync as lipsync_eval
    data = Path(args.data)
    model = Path(args.model) if args.model else None
    if args.plot:
        print(f"wrote {lipsync_eval.plot(data, Path(args.plot), model, args.prompt)}")
        return EXIT_OK
    result = lipsync_eval.evaluate(data, model, args.avatar)
    print(json.dumps(result, indent=None if args.json else 2))
    return EXIT_OK


def _cmd_render(args: argparse.Namespace) -> int:
    import avatars
    from runtime.audio.decode import load_audio
    from runtime.audio.espeak import EspeakError
    from runtime.offline.render import RenderOptions, render_audio, render_text, terminal_progress
    from runtime.audio.tts import TTSError, check_text, make_tts

    avatar = avatars.load(args.avatar)
    options = RenderOptions(fps=args.fps, size=args.size, backend=args.backend, seed=args.seed)
    update, close = terminal_progress("render")
    try:
        with _backend_errors_as_input_errors():
            if args.audio is not None:
                audio, rate = load_audio(args.audio)
                result = render_audio(avatar, audio, rate, args.out, options, update)
            else:
                check_text(args.text)
                try:
                    result = render_text(avatar, args.text, args.out, make_tts(args.tts),
                                         args.voice, options, update)
                except (TTSError, EspeakError) as exc:
                    raise ValueError(f"text to speech failed: {exc}") from exc
    finally:
        close()
    print(json.dumps(result.to_json()) if args.json else result.summary())
    return EXIT_OK


def _cmd_serve(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from runtime.serve.server import ServerConfig, run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = ServerConfig(host=args.host, port=args.port, avatar=args.avatar, size=args.size,
                          fps=args.fps, backend=args.backend, threads=args.threads,
                          token=args.token or os.environ.get("FACECAST_TOKEN") or None,
                          insecure=args.insecure, allowed_origins=tuple(args.allowed_origin),
                          max_sessions=args.max_sessions, tts=args.tts,
                          web_dir=Path(args.web_dir) if args.web_dir else
                          ServerConfig().web_dir)
    config.check()
    with _backend_errors_as_input_errors():
        run(config)
    return EXIT_OK


def _cmd_kiosk(args: argparse.Namespace) -> int:
    from pathlib import Path

    from runtime.local.kiosk import KioskOptions, run_kiosk

    options = KioskOptions(avatar=args.avatar, port=args.port, size=args.size,
                           backend=args.backend, fullscreen=args.fullscreen,
                           browser=not args.no_browser, browser_path=args.browser,
                           display=args.display,
                           log_file=Path(args.log_file) if args.log_file else None,
                           log_max_bytes=int(args.log_max_mb * 1024 * 1024),
                           log_backups=args.log_backups, say=args.say, mic=args.mic)
    with _backend_errors_as_input_errors():
        return run_kiosk(options)


def _cmd_token(args: argparse.Namespace) -> int:
    from runtime.serve.server import issue_token

    if not args.secret:
        raise ValueError("--secret must not be empty")
    print(issue_token(args.secret, args.ttl))
    return EXIT_OK


def _cmd_build_engines(args: argparse.Namespace) -> int:
    from pathlib import Path

    from engines.tensorrt.build import build_engines_main

    from engines.renderer import PACKAGE_MODELS_DIR

    paths = [Path(p) for p in args.onnx] or sorted(PACKAGE_MODELS_DIR.glob("*.onnx"))
    return build_engines_main(paths, args.max_batch)


def _cmd_devices(args: argparse.Namespace) -> int:
    from runtime.local.mic import format_table, list_devices

    devices = list_devices()
    if args.json:
        print(json.dumps([d.to_json() for d in devices]))
    else:
        print(format_table(devices))
    return EXIT_OK


def _cmd_cam(args: argparse.Namespace) -> int:
    from runtime.local.cam import CamOptions, describe_outputs, run_cam

    options = CamOptions(avatar=args.avatar, device=args.device, vcam=args.vcam,
                         preview=args.preview, record=args.record, seconds=args.seconds,
                         size=args.size, fps=args.fps, backend=args.backend,
                         threads=args.threads, seed=args.seed, vcam_device=args.vcam_device)
    drive = None
    if args.drive == "webcam":  # head, blinks and expression from the camera; mouth from the mic
        import avatars
        from runtime.webcam.drive import open_webcam_drive

        camera = int(args.camera) if args.camera.isdigit() else args.camera
        drive = open_webcam_drive(camera, avatars.load(args.avatar), size=args.size,
                                  fps=args.fps)
    try:
        with _backend_errors_as_input_errors():
            result = run_cam(options, drive=drive,
                             on_started=lambda info: print(describe_outputs(info),
                                                           file=sys.stderr, flush=True))
    finally:
        if drive is not None:
            drive.close()
    if not args.json:
        print(result.summary(), file=sys.stderr)
    report = result.to_json()
    if drive is not None:  # frames whose head, blinks and expression came from the camera
        report["drive"] = {"mode": "webcam", "camera": args.camera,
                           "frames_output": drive.frames_output,
                           "frames_tracked": drive.frames_tracked,
                           "error": None if drive.error is None else str(drive.error)}
    print(json.dumps(report, indent=None if args.json else 2))
    if result.errors:
        print(f"facecast cam: error: {'; '.join(result.errors.values())}", file=sys.stderr)
        return EXIT_BAD_INPUT
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
    p.add_argument("what", choices=("rig", "motion", "renderer", "latency", "soak"),
                   help="what to measure")
    p.add_argument("--sessions", type=int, default=1,
                   help="latency: concurrent client peers (default 1)")
    p.add_argument("--avatar", default="default")
    p.add_argument("--backend", default=None, choices=RENDER_BACKENDS,
                   help="renderer: backend (default onnxruntime, i.e. CPU)")
    p.add_argument("--size", type=int, default=256, choices=(256, 512),
                   help="renderer: output crop side")
    p.add_argument("--batch", type=int, default=1, help="renderer: frames per call")
    p.add_argument("--seconds", type=float, default=None,
                   help="renderer: seconds of timed calls after warm-up (default 5)")
    p.add_argument("--threads", type=int, default=None,
                   help="renderer: ONNX Runtime intra-op threads (default: its own choice)")
    p.add_argument("--minutes", type=float, default=None,
                   help="soak: minutes to run (default 60; fractions allowed)")
    p.add_argument("--reconnect-every", type=float, default=None,
                   help="soak: seconds between reconnects (default 180)")
    p.add_argument("--json", action="store_true", help="one line of JSON")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("eval", help="quality figures that print JSON")
    p.add_argument("what", choices=("lipsync", "renderer", "sync", "webcam"),
                   help="what to evaluate")
    p.add_argument("video", nargs="?", default=None, help="sync: the MP4 to judge")
    p.add_argument("--data", default="data/speech",
                   help="speech corpus from tools/prepare_speech.py (default data/speech)")
    p.add_argument("--model", default=None, help="motion ONNX file (default: the bundled one)")
    p.add_argument("--avatar", default="default",
                   help="avatar whose rig judges the mouth (lipsync) or that is rendered")
    p.add_argument("--plot", default=None, help="draw one held-out prompt to this PNG instead")
    p.add_argument("--prompt", default=None, help="with --plot: which held-out prompt")
    p.add_argument("--n", type=int, default=200, help="renderer: driving poses (default 200)")
    p.add_argument("--seed", type=int, default=0, help="renderer: seed of the driving poses")
    p.add_argument("--size", type=int, default=256, choices=(256, 512),
                   help="renderer: output crop side")
    p.add_argument("--backend", default=None, choices=RENDER_BACKENDS,
                   help="renderer: backend (default auto)")
    p.add_argument("--sheet", default=None,
                   help="renderer: also write a student/teacher contact sheet PNG here")
    p.add_argument("--target", default=None,
                   help="webcam: avatar the webcam drives (default: the held-out portrait "
                        "grace_hopper, enrolled into a temporary folder)")
    p.add_argument("--text", default=None, help="webcam: sentence the driver avatar speaks")
    p.add_argument("--audio", default=None, help="webcam: speech file instead of --text")
    p.add_argument("--voice", default=None, help="webcam: espeak-ng voice for --text")
    p.add_argument("--calibration", default="first", choices=("first", "source"),
                   help="webcam: driver neutral from the first tracked frames (as live) or "
                        "from the driver avatar's still image")
    p.add_argument("--lead-in", type=float, default=1.0,
                   help="webcam: seconds of silence before the speech (default 1.0)")
    p.add_argument("--out", default=None,
                   help="webcam: also render the target avatar driven by the webcam to this MP4")
    p.add_argument("--work-dir", default=None,
                   help="webcam: keep the driver video and target bundle here")
    p.add_argument("--json", action="store_true", help="one line of JSON")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("render", help="speech or text -> talking-avatar MP4")
    p.add_argument("--avatar", default="default", help="avatar name or bundle folder")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--audio", default=None,
                     help="speech file, any format FFmpeg reads (wav, mp3, m4a, g722, ...), "
                          "at most one hour")
    src.add_argument("--text", default=None, help="text to speak (at most 5000 characters)")
    p.add_argument("--voice", default=None, help="TTS voice (espeak-ng: en-us, de, en-us+f3, ...)")
    p.add_argument("--tts", default=None,
                   help="TTS engine: espeak (default; or $FACECAST_TTS), piper:VOICE.onnx, "
                        "command:TEMPLATE")
    p.add_argument("--out", required=True, help="output MP4")
    p.add_argument("--fps", default="25", help="video frame rate (default 25; 30000/1001 ok)")
    p.add_argument("--size", type=int, default=512, choices=(256, 512),
                   help="renderer face crop side in pixels (default 512)")
    p.add_argument("--backend", default="auto", choices=RENDER_BACKENDS,
                   help="renderer backend (default auto)")
    p.add_argument("--seed", type=int, default=0, help="seed of blinks and head motion")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    p.set_defaults(func=_cmd_render)

    p = sub.add_parser("serve", help="the real-time server: WebRTC avatar + web widget")
    p.add_argument("--host", default="127.0.0.1",
                   help="bind address (default 127.0.0.1; others need --token or --insecure)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 = any free)")
    p.add_argument("--avatar", default="default", help="default avatar for clients naming none")
    p.add_argument("--size", type=int, default=256, choices=(256, 512),
                   help="renderer face crop side (default 256)")
    p.add_argument("--fps", type=int, default=25, help="video frame rate (default 25)")
    p.add_argument("--backend", default="auto", choices=RENDER_BACKENDS)
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads")
    p.add_argument("--token", default=None,
                   help="shared secret clients must present (or $FACECAST_TOKEN)")
    p.add_argument("--insecure", action="store_true",
                   help="allow binding beyond loopback without a token")
    p.add_argument("--allowed-origin", action="append", default=[],
                   help="browser origin allowed to connect (repeatable; the server's own pages "
                        "always are)")
    p.add_argument("--max-sessions", type=int, default=4, help="concurrent sessions")
    p.add_argument("--tts", default=None, help="TTS engine (see facecast render --help)")
    p.add_argument("--web-dir", default=None, help="serve the widget from this folder")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("kiosk", help="serve and show the avatar full screen in Chromium, "
                                     "reconnecting by itself; for screens that run for days")
    p.add_argument("--avatar", default="default", help="avatar name or bundle folder")
    p.add_argument("--fullscreen", action="store_true",
                   help="Chromium --kiosk: locked full screen (default: a maximised app window)")
    p.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (default 8765)")
    p.add_argument("--no-browser", action="store_true",
                   help="only serve; open the printed URL yourself")
    p.add_argument("--browser", default=None, help="browser executable (default: chromium on PATH)")
    p.add_argument("--display", default="kiosk",
                   help="display name apps speak through: /ws?control=NAME (default kiosk)")
    p.add_argument("--say", default=None, help="say this once the page is connected")
    p.add_argument("--mic", nargs="?", const="default", default=None, metavar="DEVICE",
                   help="speak with the local microphone (device name or index; the default "
                        "input without a value)")
    p.add_argument("--log-file", default=None,
                   help="rotating log file (default ~/.local/state/facecast/kiosk.log)")
    p.add_argument("--log-max-mb", type=float, default=5.0, help="rotate at this size (MiB)")
    p.add_argument("--log-backups", type=int, default=5, help="rotated files kept (default 5)")
    p.add_argument("--size", type=int, default=256, choices=(256, 512),
                   help="renderer face crop side (default 256)")
    p.add_argument("--backend", default="auto", choices=RENDER_BACKENDS)
    p.set_defaults(func=_cmd_kiosk)

    p = sub.add_parser("token", help="print a signed, expiring token for serve --token")
    p.add_argument("--secret", required=True, help="the server's --token secret")
    p.add_argument("--ttl", type=float, default=3600.0, help="seconds until it expires")
    p.set_defaults(func=_cmd_token)

    p = sub.add_parser("build-engines",
                       help="build TensorRT engines (FP16) for this GPU; one JSON line per engine")
    p.add_argument("onnx", nargs="*", help="ONNX files (default: engines/models/*.onnx)")
    p.add_argument("--max-batch", type=int, default=64, help="largest batch of the engines")
    p.set_defaults(func=_cmd_build_engines)

    p = sub.add_parser("devices", help="list microphones (PortAudio input devices)")
    p.add_argument("--json", action="store_true", help="one line of JSON")
    p.set_defaults(func=_cmd_devices)

    p = sub.add_parser("cam", help="the avatar speaks with your microphone, live: virtual "
                                   "camera, preview window, MP4")
    p.add_argument("--avatar", default="default", help="avatar name or bundle folder")
    p.add_argument("--device", default=None,
                   help="microphone: index or part of the name (facecast devices; default: the "
                        "system's default input)")
    p.add_argument("--vcam", action="store_true",
                   help="send frames to a virtual camera (v4l2loopback / OBS) for call apps")
    p.add_argument("--vcam-device", default=None, help="virtual camera device, e.g. /dev/video2")
    p.add_argument("--preview", action="store_true", help="show the avatar in a window")
    p.add_argument("--record", default=None, metavar="OUT.mp4",
                   help="write video + your voice to this MP4 (H.264 + AAC)")
    p.add_argument("--seconds", type=float, default=None,
                   help="stop after this many seconds (default: Ctrl-C)")
    p.add_argument("--size", type=int, default=256, choices=(256, 512),
                   help="renderer face crop side (default 256)")
    p.add_argument("--fps", type=int, default=25, help="video frame rate (default 25)")
    p.add_argument("--backend", default="auto", choices=RENDER_BACKENDS)
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads")
    p.add_argument("--seed", type=int, default=0, help="seed of blinks and head motion")
    p.add_argument("--drive", default="audio", choices=("audio", "webcam"),
                   help="audio: the voice drives the face (default); webcam: your tracked face "
                        "drives head, blinks and expression, the voice takes the mouth over "
                        "when your face is lost")
    p.add_argument("--camera", default="0",
                   help="--drive webcam: camera index, /dev/videoN, or a video file (default 0)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON line")
    p.set_defaults(func=_cmd_cam)

    p = sub.add_parser("avatar-info", help="validate an avatar bundle and print its metadata")
    p.add_argument("avatar", help="avatar name or bundle folder")
    p.set_defaults(func=_cmd_avatar_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``facecast`` console script. Returns the process exit status."""
    args = build_parser().parse_args(argv)
    from avatars.bundle import BundleError
    from engines.tensorrt.build import TensorRTUnavailable

    try:
        return int(args.func(args))
    except (BundleError, ValueError, OSError, KeyError, TensorRTUnavailable) as exc:
        # EnrollError is a ValueError; TensorRTUnavailable says how to install TensorRT
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"facecast {args.command}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
