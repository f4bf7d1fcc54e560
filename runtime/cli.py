"""The ``facecast`` command line: builds the argument parsers and dispatches to the code that
runs each command. ``facecast COMMAND --help`` lists a command's options and their defaults.

* ``facecast enroll IMAGE --name NAME`` — make an avatar bundle from a portrait photo
* ``facecast rig-preview --out preview.png`` — draw rig keypoints for a few poses on an avatar
* ``facecast avatar-info NAME`` — validate a bundle and print its metadata as JSON
* ``facecast render (--audio FILE | --text "…") --out OUT.mp4`` — speech or text → MP4
* ``facecast serve`` — the real-time server: WebRTC to the web widget, control over WebSocket
  (``web/PROTOCOL.md``)
* ``facecast token --secret SECRET`` — a signed, expiring token for ``serve --token``
* ``facecast verify FILE`` — the invisible watermark and the C2PA credentials of a video or image
* ``facecast kiosk`` — serve and show the avatar full screen in Chromium, for screens that run
  for days; apps speak via ``/ws?control=kiosk``
* ``facecast devices`` — the microphones PortAudio sees
* ``facecast cam`` — the avatar speaks with the microphone, live, to a virtual camera, a window
  and/or an MP4
* ``facecast build-engines [ONNX ...]`` — build TensorRT engines (FP16) for this GPU
* ``facecast bench rig|motion|renderer|latency|soak|hostile|capacity`` — speed of the parts, end-to-end latency
  over WebRTC on loopback, and the long soak, as JSON (``runtime.bench``)
* ``facecast eval lipsync|renderer|sync|webcam|face`` — quality figures as JSON (``runtime.evals``)
* ``facecast livekit`` — a LiveKit Agents worker: the avatar of voice agents' rooms, dispatched
  by LiveKit to workers with room left (``runtime.integrations.livekit_worker``)
* ``facecast pipecat-demo`` — an example Pipecat bot whose face is facecast, in a browser over
  Pipecat's SmallWebRTCTransport, no cloud keys (``runtime.integrations.pipecat_demo``)

Each default is written once, where the code that runs the command keeps it: a field of its
options dataclass (``ServerConfig``, ``RenderOptions``, ``CamOptions``, ``KioskOptions``,
``EnrollOptions``) or a parameter default of the function it calls; the parser reads it from
there. Reading it imports that module, so ``main`` adds the options of the command named on
the command line only (the others are listed by name).

Bad input (an unknown avatar, a backend that cannot run here, a file that cannot be read): one
line on stderr and exit status 1. A malformed command line: argparse's usage message, status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from runtime.bench.command import COMMANDS as BENCH_COMMANDS
from runtime.cli_args import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    Commands,
    add_allow_unconsented,
    add_avatar,
    add_backend,
    add_badge,
    add_c2pa,
    add_json,
    add_size,
    backend_errors_as_input_errors,
    badge_from,
    c2pa_identity_from,
    note_signer,
    param_default,
    quiet_native_logs,
    sessions_arg,
)
from runtime.evals.command import COMMANDS as EVAL_COMMANDS

DEFAULT_AVATAR = "default"
"""The avatar of commands that take no options dataclass (the shipped ``avatars/default``)."""


# --- avatars -------------------------------------------------------------------------------------

def _enroll_options(p: argparse.ArgumentParser) -> None:
    from avatars.enroll import MAX_PIXELS, EnrollOptions

    p.add_argument("image", help="portrait image file (PNG, JPEG, WebP, ...), at most "
                                 f"{MAX_PIXELS / 1e6:g} MP")
    p.add_argument("--name", required=True, help="avatar name: letters, digits, '_' or '-'")
    p.add_argument("--consent", required=True,
                   help="consent statement recorded in the bundle: who agreed, to what, when "
                        "(required; serve, cam, kiosk and render refuse bundles without one)")
    p.add_argument("--out", default=None,
                   help="parent folder for the bundle (default: $FACECAST_AVATAR_DIR or "
                        "~/.local/share/facecast/avatars)")
    p.add_argument("--source", default=EnrollOptions.source,
                   help="where the image came from (default: file name)")
    p.add_argument("--licence", default=EnrollOptions.licence, help="the image's licence")
    p.add_argument("--attribution", default=EnrollOptions.attribution,
                   help="credit line for the image")
    p.add_argument("--largest", action="store_true", help="with several faces, use the largest")
    p.add_argument("--force", action="store_true", help="replace an existing bundle")
    p.set_defaults(func=_enroll)


def _enroll(args: argparse.Namespace) -> int:
    quiet_native_logs()
    from avatars.enroll import EnrollOptions, enroll

    options = EnrollOptions(consent=args.consent, source=args.source, licence=args.licence,
                            attribution=args.attribution, largest=args.largest,
                            overwrite=args.force)
    folder = enroll(args.image, args.name, args.out, options)
    print(f"enrolled {args.name!r} -> {folder}")
    return EXIT_OK


def _rig_preview_options(p: argparse.ArgumentParser) -> None:
    from runtime.offline.preview import rig_preview

    add_avatar(p, DEFAULT_AVATAR)
    p.add_argument("--out", required=True, help="output PNG")
    add_size(p, param_default(rig_preview, "size"), help="render crop side")
    p.set_defaults(func=_rig_preview)


def _rig_preview(args: argparse.Namespace) -> int:
    import avatars
    from runtime.offline.preview import rig_preview

    path = rig_preview(avatars.load(args.avatar), args.out, size=args.size)
    print(f"wrote {path}")
    return EXIT_OK


def _avatar_info_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("avatar", help="avatar name or bundle folder")
    p.set_defaults(func=_avatar_info)


def _avatar_info(args: argparse.Namespace) -> int:
    import avatars
    from avatars.adaptation import read_adaptation
    from avatars.bundle import BundleError

    avatar = avatars.load(args.avatar)
    info = dict(avatar.metadata)
    info["path"] = str(avatar.path)
    try:
        stored = read_adaptation(avatar.path)
        info["adaptation"] = None if stored is None else {
            k: v for k, v in stored.meta.items() if k not in ("format", "version")}
    except BundleError as exc:
        info["adaptation"] = {"error": str(exc)}
    print(json.dumps(info, indent=2, sort_keys=True))
    return EXIT_OK


# --- adapt ---------------------------------------------------------------------------------------

def _adapt_options(p: argparse.ArgumentParser) -> None:
    from avatars.adaptation import AdaptOptions

    d = AdaptOptions()
    p.add_argument("avatar", help="avatar name or bundle folder")
    p.add_argument("--steps", type=int, default=d.steps,
                   help=f"optimiser steps, about 0.2 s each on 2 CPU cores (default {d.steps})")
    p.add_argument("--minutes", type=float, default=d.minutes,
                   help=f"stop after this long (default {d.minutes:g})")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the driving poses")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--force", action="store_true",
                   help="store the result even if it does not lower the validation loss")
    p.add_argument("--remove", action="store_true",
                   help="delete the avatar's adaptation (back to zero-shot) and stop")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=_adapt)


def _adapt(args: argparse.Namespace) -> int:
    import avatars
    from avatars.adaptation import AdaptOptions, remove_adaptation

    avatar = avatars.load(args.avatar)
    if args.remove:
        gone = remove_adaptation(avatar.path)
        print(json.dumps({"avatar": avatar.name, "removed": gone}))
        return EXIT_OK
    try:
        from engines.training.adapt import adapt_and_store
    except ImportError as exc:
        raise ValueError(f"facecast adapt needs torch ({exc}): pip install 'facecast[train]'") \
            from None
    options = AdaptOptions(steps=args.steps, minutes=args.minutes, seed=args.seed,
                           threads=args.threads)

    def progress(rec: dict) -> None:
        if not args.quiet:
            print(json.dumps(rec), file=sys.stderr, flush=True)

    result, path = adapt_and_store(avatar, options, progress, force=args.force)
    print(json.dumps({"avatar": avatar.name, "stored": None if path is None else str(path),
                      "improved": result.improved, **result.figures()}))
    return EXIT_OK


# --- render --------------------------------------------------------------------------------------

def _render_options(p: argparse.ArgumentParser) -> None:
    from runtime.audio.decode import MAX_AUDIO_SECONDS
    from runtime.audio.tts import MAX_TEXT_CHARS
    from runtime.offline.render import RenderOptions

    add_avatar(p, DEFAULT_AVATAR)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--audio", default=None,
                     help="speech file, any format FFmpeg reads (wav, mp3, m4a, g722, ...), "
                          f"at most {MAX_AUDIO_SECONDS / 60:g} minutes")
    src.add_argument("--text", default=None,
                     help=f"text to speak (at most {MAX_TEXT_CHARS} characters)")
    p.add_argument("--voice", default=None, help="TTS voice (espeak-ng: en-us, de, en-us+f3, ...)")
    p.add_argument("--tts", default=None,
                   help="TTS engine: espeak (default; or $FACECAST_TTS), piper:VOICE.onnx, "
                        "command:TEMPLATE")
    p.add_argument("--out", required=True, help="output MP4")
    p.add_argument("--fps", default=RenderOptions.fps,
                   help="video frame rate (default %(default)s; 30000/1001 ok)")
    add_size(p, RenderOptions.size)
    add_backend(p, RenderOptions.backend)
    p.add_argument("--seed", type=int, default=RenderOptions.seed,
                   help="seed of blinks and head motion (default %(default)s)")
    add_allow_unconsented(p)
    add_badge(p)
    add_c2pa(p)
    add_json(p, "print the summary as one JSON line")
    p.set_defaults(func=_render)


def _render(args: argparse.Namespace) -> int:
    import avatars
    from runtime.audio.decode import load_audio
    from runtime.audio.espeak import EspeakError
    from runtime.audio.tts import TTSError, check_text, make_tts
    from runtime.offline.render import RenderOptions, render_audio, render_text, terminal_progress

    avatar = avatars.load(args.avatar)
    if not avatars.bundle.require_consent(avatar, args.allow_unconsented_avatar):
        print(f"warning: avatar {avatar.name!r} states no consent; rendering it because "
              "--allow-unconsented-avatar was given", file=sys.stderr)
    options = RenderOptions(fps=args.fps, size=args.size, backend=args.backend, seed=args.seed,
                            badge=badge_from(args), watermark=not args.no_watermark,
                            c2pa_identity=c2pa_identity_from(args),
                            speech=f"audio:{os.path.basename(args.audio)}" if args.audio else "audio")
    if options.badge is None:
        print("warning: the AI-generated disclosure badge is off (--no-badge)", file=sys.stderr)
    if not options.watermark:
        print("warning: the invisible watermark is off (--no-watermark)", file=sys.stderr)
    update, close = terminal_progress("render")
    try:
        with backend_errors_as_input_errors():
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
    note_signer(options.c2pa_identity)
    return EXIT_OK


# --- serving -------------------------------------------------------------------------------------

def _serve_options(p: argparse.ArgumentParser) -> None:
    from pathlib import Path

    from runtime.serve.deadlines import MediaDeadlines
    from runtime.serve.server import ServerConfig as C

    p.add_argument("--host", default=C.host,
                   help="bind address (default %(default)s; others need --token or --insecure)")
    p.add_argument("--port", type=int, default=C.port,
                   help="port (default %(default)s; 0 = any free)")
    add_avatar(p, C.avatar, help="default avatar for clients naming none")
    add_size(p, C.size)
    p.add_argument("--fps", default=C.fps,
                   help="video frame rate, exact: 25, 30000/1001 … (default %(default)s)")
    add_backend(p, C.backend)
    p.add_argument("--threads", type=int, default=C.threads, help="ONNX Runtime threads")
    p.add_argument("--token", default=C.token,
                   help="secret (≥ 32 bytes) the clients' tokens are signed with; see facecast "
                        "token (or $FACECAST_TOKEN)")
    p.add_argument("--insecure", action="store_true",
                   help="allow binding beyond loopback without a token")
    p.add_argument("--allowed-origin", action="append", default=list(C.allowed_origins),
                   help="browser origin allowed to connect (repeatable; the server's own pages "
                        "always are)")
    p.add_argument("--public-host", action="append", default=list(C.public_hosts),
                   help="host name clients reach the server by (repeatable; IP addresses, "
                        "localhost and the --allowed-origin hosts always are)")
    p.add_argument("--max-sessions", type=sessions_arg, default=C.max_sessions,
                   help="concurrent sessions, or 'auto': the capacity facecast bench capacity "
                        "measured on this machine (measured at start-up if none is stored) "
                        "(default %(default)s)")
    p.add_argument("--max-controllers", type=int, default=C.max_controllers,
                   help="concurrent ?control= connections (default %(default)s)")
    p.add_argument("--offer-timeout", type=float, default=MediaDeadlines.offer_s,
                   help="seconds a session may wait for its offer (default %(default)s)")
    p.add_argument("--connect-timeout", type=float, default=MediaDeadlines.connect_s,
                   help="seconds from the answer until the peer must be connected "
                        "(default %(default)s)")
    p.add_argument("--tts", default=C.tts, help="TTS engine (see facecast render --help)")
    p.add_argument("--web-dir", type=Path, default=C.web_dir,
                   help="serve the widget from this folder (default: the packaged one)")
    add_allow_unconsented(p)
    add_badge(p)
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    import logging

    from runtime.serve.deadlines import MediaDeadlines
    from runtime.serve.server import ServerConfig, run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    deadlines = MediaDeadlines(offer_s=args.offer_timeout, connect_s=args.connect_timeout)
    config = ServerConfig(host=args.host, port=args.port, avatar=args.avatar, size=args.size,
                          fps=args.fps, backend=args.backend, threads=args.threads,
                          token=args.token or os.environ.get("FACECAST_TOKEN") or None,
                          insecure=args.insecure, allowed_origins=tuple(args.allowed_origin),
                          public_hosts=tuple(args.public_host),
                          max_sessions=args.max_sessions, max_controllers=args.max_controllers,
                          deadlines=deadlines, tts=args.tts, web_dir=args.web_dir,
                          allow_unconsented=args.allow_unconsented_avatar,
                          badge=badge_from(args), watermark=not args.no_watermark)
    config.check()
    with backend_errors_as_input_errors():
        run(config)
    return EXIT_OK


def _token_options(p: argparse.ArgumentParser) -> None:
    from runtime.serve.auth import issue_token

    p.add_argument("--secret", required=True, help="the server's --token secret")
    p.add_argument("--ttl", type=float, default=param_default(issue_token, "ttl_s"),
                   help="seconds until it expires (default %(default)s)")
    p.set_defaults(func=_token)


def _token(args: argparse.Namespace) -> int:
    from runtime.serve.auth import issue_token

    if not args.secret:
        raise ValueError("--secret must not be empty")
    print(issue_token(args.secret, args.ttl))
    return EXIT_OK


def _verify_options(p: argparse.ArgumentParser) -> None:
    from runtime.provenance.verify import MAX_FRAMES

    p.add_argument("file", help="a video or an image")
    p.add_argument("--frames", type=int, default=MAX_FRAMES,
                   help="most video frames decoded, spread over the file (default %(default)s)")
    add_json(p, "print the report as one JSON line")
    p.set_defaults(func=_verify)


def _verify(args: argparse.Namespace) -> int:
    from runtime.provenance.verify import verify

    if args.frames < 1:
        raise ValueError("--frames must be at least 1")
    report = verify(args.file, args.frames)
    print(json.dumps(report.to_json()) if args.json else report.summary())
    return EXIT_OK


def _kiosk_options(p: argparse.ArgumentParser) -> None:
    from runtime.local.kiosk import KioskOptions as K

    add_avatar(p, K.avatar)
    p.add_argument("--fullscreen", action="store_true",
                   help="Chromium --kiosk: locked full screen (default: a maximised app window)")
    p.add_argument("--port", type=int, default=K.port,
                   help="port on 127.0.0.1 (default %(default)s)")
    p.add_argument("--no-browser", action="store_true",
                   help="only serve; open the printed URL yourself")
    p.add_argument("--browser", default=K.browser_path,
                   help="browser executable (default: chromium on PATH)")
    p.add_argument("--display", default=K.display,
                   help="display name apps speak through: /ws?control=NAME (default %(default)s)")
    p.add_argument("--say", default=K.say, help="say this once the page is connected")
    p.add_argument("--mic", nargs="?", const="default", default=K.mic, metavar="DEVICE",
                   help="speak with the local microphone (device name or index; the default "
                        "input without a value)")
    p.add_argument("--log-file", default=K.log_file,
                   help="rotating log file (default ~/.local/state/facecast/kiosk.log)")
    p.add_argument("--log-max-mb", type=float, default=K.log_max_bytes / (1024 * 1024),
                   help="rotate at this size, MiB (default %(default)s)")
    p.add_argument("--log-backups", type=int, default=K.log_backups,
                   help="rotated files kept (default %(default)s)")
    add_size(p, K.size)
    add_backend(p, K.backend)
    add_allow_unconsented(p)
    add_badge(p)
    p.set_defaults(func=_kiosk)


def _kiosk(args: argparse.Namespace) -> int:
    from pathlib import Path

    from runtime.local.kiosk import KioskOptions, run_kiosk

    options = KioskOptions(avatar=args.avatar, port=args.port, size=args.size,
                           backend=args.backend, fullscreen=args.fullscreen,
                           browser=not args.no_browser, browser_path=args.browser,
                           display=args.display,
                           log_file=Path(args.log_file) if args.log_file else None,
                           log_max_bytes=int(args.log_max_mb * 1024 * 1024),
                           log_backups=args.log_backups, say=args.say, mic=args.mic,
                           allow_unconsented=args.allow_unconsented_avatar,
                           badge=badge_from(args), watermark=not args.no_watermark)
    with backend_errors_as_input_errors():
        return run_kiosk(options)


# --- this machine --------------------------------------------------------------------------------

def _devices_options(p: argparse.ArgumentParser) -> None:
    add_json(p)
    p.set_defaults(func=_devices)


def _devices(args: argparse.Namespace) -> int:
    from runtime.local.mic import format_table, list_devices

    devices = list_devices()
    if args.json:
        print(json.dumps([d.to_json() for d in devices]))
    else:
        print(format_table(devices))
    return EXIT_OK


def _cam_options(p: argparse.ArgumentParser) -> None:
    from runtime.local.cam import CamOptions as C

    add_avatar(p, C.avatar)
    p.add_argument("--device", default=C.device,
                   help="microphone: index or part of the name (facecast devices; default: the "
                        "system's default input)")
    p.add_argument("--vcam", action="store_true",
                   help="send frames to a virtual camera (v4l2loopback / OBS) for call apps")
    p.add_argument("--vcam-device", default=C.vcam_device,
                   help="virtual camera device, e.g. /dev/video2")
    p.add_argument("--preview", action="store_true", help="show the avatar in a window")
    p.add_argument("--record", default=C.record, metavar="OUT.mp4",
                   help="write video + your voice to this MP4 (H.264 + AAC)")
    p.add_argument("--seconds", type=float, default=C.seconds,
                   help="stop after this many seconds (default: Ctrl-C)")
    add_size(p, C.size)
    p.add_argument("--fps", type=int, default=C.fps, help="video frame rate (default %(default)s)")
    add_backend(p, C.backend)
    p.add_argument("--threads", type=int, default=C.threads, help="ONNX Runtime threads")
    p.add_argument("--seed", type=int, default=C.seed,
                   help="seed of blinks and head motion (default %(default)s)")
    p.add_argument("--drive", default="audio", choices=("audio", "webcam"),
                   help="audio: the voice drives the face (default); webcam: your tracked face "
                        "drives head, blinks and expression, the voice takes the mouth over "
                        "when your face is lost")
    p.add_argument("--camera", default="0",
                   help="--drive webcam: camera index, /dev/videoN, or a video file "
                        "(default %(default)s)")
    add_json(p, "print the report as one JSON line")
    add_allow_unconsented(p)
    add_badge(p)
    add_c2pa(p)
    p.set_defaults(func=_cam)


def _cam(args: argparse.Namespace) -> int:
    from runtime.local.cam import CamOptions, describe_outputs, run_cam

    options = CamOptions(avatar=args.avatar, device=args.device, vcam=args.vcam,
                         preview=args.preview, record=args.record, seconds=args.seconds,
                         size=args.size, fps=args.fps, backend=args.backend,
                         threads=args.threads, seed=args.seed, vcam_device=args.vcam_device,
                         allow_unconsented=args.allow_unconsented_avatar,
                         badge=badge_from(args), watermark=not args.no_watermark,
                         c2pa_identity=c2pa_identity_from(args) if args.record else None)
    drive = None
    if args.drive == "webcam":  # head, blinks and expression from the camera; mouth from the mic
        import avatars
        from runtime.webcam.driver import open_webcam_drive

        camera = int(args.camera) if args.camera.isdigit() else args.camera
        drive = open_webcam_drive(camera, avatars.load(args.avatar), size=args.size,
                                  fps=args.fps)
    try:
        with backend_errors_as_input_errors():
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
    note_signer(options.c2pa_identity)
    return EXIT_OK


def _build_engines_options(p: argparse.ArgumentParser) -> None:
    from engines.tensorrt.build import build_engine

    p.add_argument("onnx", nargs="*", help="ONNX files (default: engines/models/*.onnx)")
    p.add_argument("--max-batch", type=int, default=param_default(build_engine, "max_batch"),
                   help="largest batch of the engines (default %(default)s)")
    p.set_defaults(func=_build_engines)


def _build_engines(args: argparse.Namespace) -> int:
    from pathlib import Path

    from engines.renderer import PACKAGE_MODELS_DIR
    from engines.tensorrt.build import build_engines_main

    paths = [Path(p) for p in args.onnx] or sorted(PACKAGE_MODELS_DIR.glob("*.onnx"))
    return build_engines_main(paths, args.max_batch)


# --- LiveKit Agents ----------------------------------------------------------------------------

def _livekit_options(p: argparse.ArgumentParser) -> None:
    from runtime.integrations.livekit_worker import add_options

    add_options(p)
    p.set_defaults(func=_livekit)


def _livekit(args: argparse.Namespace) -> int:
    from runtime.integrations.livekit_worker import run_command

    return run_command(args)


# --- Pipecat -------------------------------------------------------------------------------------

def _pipecat_demo_options(p: argparse.ArgumentParser) -> None:
    from runtime.integrations.pipecat_demo import DemoOptions as D

    p.add_argument("--host", default=D.host,
                   help="bind address of the page and offer endpoint (default %(default)s; "
                        "others need --insecure)")
    p.add_argument("--port", type=int, default=D.port, help="port (default %(default)s)")
    p.add_argument("--insecure", action="store_true",
                   help="allow a bind beyond loopback (no authentication)")
    add_avatar(p, D.avatar)
    add_size(p, D.size)
    add_backend(p, D.backend)
    p.add_argument("--voice", default=D.voice, help="TTS voice (default %(default)s)")
    p.add_argument("--tts", default=D.tts, help="TTS engine (see facecast render --help)")
    p.add_argument("--max-bots", type=int, default=D.max_bots,
                   help="browsers served at once (default %(default)s)")
    add_allow_unconsented(p)
    add_badge(p)
    p.set_defaults(func=_pipecat_demo)


def _pipecat_demo(args: argparse.Namespace) -> int:
    import logging

    from runtime.integrations.pipecat_demo import DemoOptions, run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with backend_errors_as_input_errors():
        run(DemoOptions(host=args.host, port=args.port, insecure=args.insecure,
                        avatar=args.avatar, size=args.size, backend=args.backend,
                        voice=args.voice, tts=args.tts, max_bots=args.max_bots,
                        allow_unconsented=args.allow_unconsented_avatar,
                        badge=badge_from(args), watermark=not args.no_watermark))
    return EXIT_OK


# --- the command tree ----------------------------------------------------------------------------

COMMANDS: Commands = {
    "enroll": ("make an avatar bundle from a portrait photo", _enroll_options),
    "rig-preview": ("draw rig keypoints for a few poses on an avatar", _rig_preview_options),
    "bench": ("benchmarks that print JSON", BENCH_COMMANDS),
    "eval": ("quality figures that print JSON", EVAL_COMMANDS),
    "render": ("speech or text -> talking-avatar MP4", _render_options),
    "serve": ("the real-time server: WebRTC avatar + web widget", _serve_options),
    "kiosk": (("serve and show the avatar full screen in Chromium, reconnecting by itself; "
               "for screens that run for days"), _kiosk_options),
    "token": ("print a signed, expiring token for serve --token", _token_options),
    "verify": ("is this file facecast's? its invisible watermark and C2PA credentials",
               _verify_options),
    "build-engines": ("build TensorRT engines (FP16) for this GPU; one JSON line per engine",
                      _build_engines_options),
    "devices": ("list microphones (PortAudio input devices)", _devices_options),
    "cam": ("the avatar speaks with your microphone, live: virtual camera, preview window, MP4",
            _cam_options),
    "avatar-info": ("validate an avatar bundle and print its metadata", _avatar_info_options),
    "adapt": (("fit the renderer to one avatar (minutes on CPU; stored in the bundle, used "
               "wherever the avatar is rendered)"), _adapt_options),
    "livekit": (("a LiveKit Agents worker: the avatar participant of voice agents' rooms "
                 "(extra facecast[livekit])"), _livekit_options),
    "pipecat-demo": (("an example Pipecat bot with a facecast face, in your browser, no cloud "
                      "keys (extra facecast[pipecat])"), _pipecat_demo_options),
}
"""Every ``facecast`` command, in the order ``facecast --help`` lists them."""


def _add_commands(parser: argparse.ArgumentParser, commands: Commands, dest: str,
                  argv: Sequence[str] | None) -> None:
    """Sub-parsers of ``parser`` for ``commands``; with ``argv`` (the words from this level on),
    only the command it names gets its options."""
    sub = parser.add_subparsers(dest=dest, required=True)
    for name, (help_, options) in commands.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if argv is not None and argv[:1] != [name]:
            continue
        if isinstance(options, dict):
            _add_commands(p, options, "what", None if argv is None else argv[1:])
        else:
            options(p)
            p.set_defaults(prog=p.prog)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser of ``facecast``.

    Args:
        argv: the command line to be parsed (without the program name); only the command it
            names gets its options, so that only that command's module is imported. None: every
            command gets its options (imports them all).
    """
    parser = argparse.ArgumentParser(prog="facecast", description="real-time talking avatars")
    _add_commands(parser, COMMANDS, "command", None if argv is None else list(argv))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``facecast`` console script. Returns the process exit status: 0, or
    1 with one line on stderr for bad input (argparse exits with 2 on a malformed command
    line)."""
    from avatars.enroll import use_python_protobuf

    use_python_protobuf()  # before anything imports protobuf: mediapipe beside livekit/pipecat
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    from avatars.bundle import BundleError
    from engines.tensorrt.build import TensorRTUnavailable
    from runtime.provenance.c2pa import C2paFailure

    try:
        return int(args.func(args))
    except (BundleError, ValueError, OSError, KeyError, TensorRTUnavailable, C2paFailure) as exc:
        # EnrollError is a ValueError; TensorRTUnavailable says how to install TensorRT
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"{args.prog}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
