"""``facecast serve``: WebSocket control + WebRTC media + static widget + health and metrics.

One asyncio process, one port (``websockets``): ``/ws`` is the control/signaling WebSocket of a
session (protocol: ``web/PROTOCOL.md``); other GET paths go through websockets' HTTP hook
(``process_request``) to ``/healthz``, ``/metrics`` (Prometheus text) and the files of ``web/``.
Media goes to each peer over aiortc. The frame clock and the shared renderer live in
``runtime.live.scheduler``; each session in ``runtime.live.session``. Nothing heavy runs on the event loop:
TTS, avatar loading and every tick run in worker threads; aiortc encodes in its executor.

**Displays and controllers** (the kiosk): a session opened with ``?display=NAME`` is the display
``NAME`` (the latest such session wins); a connection opened with ``?control=NAME`` carries no
media and its ``speak`` / ``audio`` / ``audio_end`` / ``interrupt`` act on that display's session,
whichever it currently is (it survives the display page reconnecting); it also receives the
display's events, and ``display`` messages when a display connects or goes.

Safe by default: binds 127.0.0.1; another address needs a token (``--token``: the secret itself
or an HS256 JWT signed with it, with ``exp``) or an explicit ``--insecure``; browser origins are
checked on the handshake; limits on sessions, message size, text length and buffered audio are
each answered with an ``error`` code, and a malformed message never ends the session.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import http
import itertools
import json
import logging
import mimetypes
import threading
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np

from engines.audio import OUTPUT_SAMPLE_RATE

log = logging.getLogger("facecast.server")

WEB_DIR = Path(str(resources.files("web")))
"""The widget, demo and kiosk pages: package data of ``web`` (so a wheel install serves them)."""
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_OPEN_STREAMS = 8
"""Audio streams (``audio`` ids without ``audio_end``) one connection may hold open: each holds a
resampler (an FFmpeg filter graph with its own threads) until its ``audio_end``."""
RECLAIM_DELAY_S = 1.0
"""Seconds after a session closes before ``runtime.serve.reclaim.reclaim`` frees what its peer left."""
MIN_PCM_RATE, MAX_PCM_RATE = 8000, 96000
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
_QUIET_HTTP = ("connection open", "connection rejected (%d %s)", "HTTP response sent (%d %s)")


class _QuietWebsockets(logging.Filter):
    """Drops websockets' INFO line for every HTTP request answered below 400 (``/healthz`` polled
    every few seconds by a supervisor would fill a log) and for every WebSocket opened; errors
    and refusals (4xx/5xx) still pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO or record.msg not in _QUIET_HTTP:
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        return bool(args) and isinstance(args[0], int) and args[0] >= 400


def quiet_library_logs() -> None:
    """Tame chatty library loggers for long-running servers: websockets' per-request INFO lines
    (``_QuietWebsockets``) and aioice's per-candidate-pair INFO lines (raised to WARNING).
    Idempotent."""
    ws_log = logging.getLogger("websockets.server")
    if not any(isinstance(f, _QuietWebsockets) for f in ws_log.filters):
        ws_log.addFilter(_QuietWebsockets())
    logging.getLogger("aioice").setLevel(logging.WARNING)


def _check_name(value: str | None, what: str) -> str | None:
    """A display name from the URL: 1–64 letters, digits, '_' or '-'; raises ProtocolError."""
    if value is None:
        return None
    if not 1 <= len(value) <= 64 or not set(value) <= _NAME_CHARS:
        raise ProtocolError("bad_message", f"'{what}' must be 1–64 letters, digits, '_' or '-'")
    return value


@dataclass(frozen=True)
class ServerConfig:
    """Server settings (see ``facecast serve --help``).

    Attributes:
        host, port: bind address (port 0 picks a free one).
        avatar: default avatar name when a client names none.
        web_dir: folder of the static widget files.
        size: renderer crop side R (256 or 512). fps: video frame rate (must divide 48000).
        backend, threads: renderer backend and ONNX Runtime threads.
        token: shared secret required on the handshake (None: no token).
        insecure: allow a non-loopback bind without a token.
        allowed_origins: browser origins allowed besides the server's own pages.
        max_sessions: concurrent sessions. max_message_bytes: largest control message.
        max_text_chars: longest ``speak`` text. max_buffer_s: most speech audio queued per
        session, seconds. tts: TTS spec (``runtime.audio.tts.make_tts``). seed: behaviour seed base.
    """

    host: str = "127.0.0.1"
    port: int = 8765
    avatar: str = "default"
    web_dir: Path = WEB_DIR
    size: int = 256
    fps: int = 25
    backend: str = "auto"
    threads: int | None = None
    token: str | None = None
    insecure: bool = False
    allowed_origins: tuple[str, ...] = ()
    max_sessions: int = 4
    max_message_bytes: int = 1 << 20
    max_text_chars: int = 5000
    max_buffer_s: float = 60.0
    tts: str | None = None
    seed: int = 0

    def check(self) -> None:
        """Raises ValueError for an unsafe or impossible configuration."""
        if self.host not in LOOPBACK_HOSTS and not self.token and not self.insecure:
            raise ValueError(f"binding to {self.host} exposes the server beyond this machine: "
                             "give --token SECRET (or --insecure to allow anyone)")
        if OUTPUT_SAMPLE_RATE % self.fps:
            raise ValueError(f"--fps must divide {OUTPUT_SAMPLE_RATE} (24, 25, 30, 50, 60 …)")
        if self.max_sessions < 1:
            raise ValueError("--max-sessions must be at least 1")


def check_token(token: str | None, secret: str | None) -> bool:
    """True if ``secret`` is None, or ``token`` equals it, or is an HS256 JWT signed with it
    that has not expired (PyJWT; ``exp`` required)."""
    if not secret:
        return True
    if not token:
        return False
    if hmac.compare_digest(token.encode(), secret.encode()):
        return True
    import jwt

    try:
        jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["exp"]})
        return True
    except jwt.PyJWTError:
        return False


def issue_token(secret: str, ttl_s: float = 3600.0, subject: str = "facecast") -> str:
    """An HS256 JWT for ``check_token``, expiring after ``ttl_s`` seconds."""
    import jwt

    now = int(time.time())
    return jwt.encode({"sub": subject, "iat": now, "exp": now + int(ttl_s)}, secret,
                      algorithm="HS256")


class ProtocolError(Exception):
    """A request refused with an ``error`` reply; the session goes on."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class _Client:
    """Per-connection state kept by the handler."""

    session: object
    pc: object = None
    control: str | None = None  # a controller of this display (no media of its own)
    resamplers: dict = field(default_factory=dict)
    counter: itertools.count = field(default_factory=lambda: itertools.count(1))
    current_stream: str | None = None


class Server:
    """A running facecast server; ``await start()``, ``await stop()``."""

    def __init__(self, config: ServerConfig) -> None:
        from engines.motion import MotionEngine
        from engines.renderer import NeuralRenderer
        from runtime.serve.metrics import Metrics
        from runtime.live.scheduler import Scheduler
        from runtime.audio.tts import make_tts

        config.check()
        self.config = config
        self.metrics = Metrics()
        self.renderer = NeuralRenderer(config.size, config.backend, threads=config.threads)
        self.motion = MotionEngine()
        self.tts = make_tts(config.tts)
        self.scheduler = Scheduler(self.renderer, config.fps, self.metrics)
        self.avatars: dict[str, object] = {}
        self.sessions: dict[str, object] = {}
        self.displays: dict[str, object] = {}  # display name → its current session
        self.controllers: dict[str, set] = {}  # display name → controller WebSockets
        self._ids = itertools.count(1)
        self._ws_server = None
        self.port = config.port
        self.started = time.monotonic()
        self._avatar_lock = asyncio.Lock()
        self._reclaim_handle: asyncio.TimerHandle | None = None
        self._sends: set[asyncio.Task] = set()  # event messages on their way (owned here)

    # --- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        from websockets.asyncio.server import serve

        await self._avatar(self.config.avatar)  # fail at start-up, not at the first client
        from runtime.audio.prosody import warm_up  # Praat's one-off cost, before the first client

        await asyncio.get_running_loop().run_in_executor(None, warm_up)
        self._ws_server = await serve(
            self._handle, self.config.host, self.config.port,
            process_request=self._process_request,
            max_size=self.config.max_message_bytes * 2 + 4096,  # refuse politely below this
            ping_interval=5, ping_timeout=10, close_timeout=2,
            server_header="facecast",
        )
        self.port = self._ws_server.sockets[0].getsockname()[1]
        self.scheduler.start()
        log.info("serving on http://%s:%d", self.config.host, self.port)

    async def stop(self) -> None:
        if self._reclaim_handle is not None:
            self._reclaim_handle.cancel()
            self._reclaim_handle = None
        for client_ws in list(getattr(self._ws_server, "connections", [])):
            await client_ws.close(1001, "server shutting down")
        if self._ws_server is not None:
            self._ws_server.close()
            await self._ws_server.wait_closed()
        await self.scheduler.stop()
        for task in list(self._sends):
            task.cancel()
        await asyncio.gather(*self._sends, return_exceptions=True)

    async def _avatar(self, name: str):
        import avatars
        from runtime.live.scheduler import AvatarState

        async with self._avatar_lock:
            if name not in self.avatars:
                loop = asyncio.get_running_loop()
                avatar = await loop.run_in_executor(None, avatars.load, name)
                self.avatars[name] = await loop.run_in_executor(
                    None, AvatarState.build, name, avatar, self.renderer)
            return self.avatars[name]

    # --- HTTP -----------------------------------------------------------------------------
    def _response(self, status: int, body: bytes, content_type: str):
        from websockets.datastructures import Headers
        from websockets.http11 import Response

        headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                           ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff")])
        return Response(status, http.HTTPStatus(status).phrase, headers, body)

    def _origin_ok(self, request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:  # not a browser (aiortc clients, voice agents)
            return True
        if origin in self.config.allowed_origins or "*" in self.config.allowed_origins:
            return True
        host = request.headers.get("Host", "")
        return origin in (f"http://{host}", f"https://{host}")

    def health(self) -> dict:
        """What ``/healthz`` reports: ``status`` ("ok", or "stalled" when sessions exist and no
        frame was produced for 2 s, or the watchdog gave up), ``sessions``, ``ticks``,
        ``late_ticks``, ``watchdog_restarts``, ``stuck_workers`` (abandoned tick threads still
        hung), ``displays`` (names of connected displays), ``seconds_since_frame``, ``backend``, ``size``, ``fps``, ``uptime_s``."""
        sched = self.scheduler
        stalled = sched.stalled()
        return {"status": "stalled" if stalled else "ok", "sessions": len(self.sessions),
                "ticks": sched.ticks, "late_ticks": sched.late_ticks,
                "watchdog_restarts": sched.restarts, "stuck_workers": sched.abandoned_alive,
                "displays": sorted(self.displays),
                "seconds_since_frame": round(time.monotonic() - sched.last_progress, 2),
                "backend": self.renderer.backend, "size": self.config.size,
                "fps": self.config.fps, "uptime_s": round(time.monotonic() - self.started, 1)}

    def _process_request(self, connection, request):
        path = urlsplit(request.path).path
        if path == "/ws":
            if not self._origin_ok(request):
                self.metrics.errors.labels("forbidden_origin").inc()
                return self._response(403, b"origin not allowed\n", "text/plain")
            token = parse_qs(urlsplit(request.path).query).get("token", [None])[0]
            if not check_token(token, self.config.token):
                self.metrics.errors.labels("unauthorized").inc()
                return self._response(401, b"missing or invalid token\n", "text/plain")
            return None  # go on with the WebSocket handshake
        if path == "/healthz":
            health = self.health()
            status = 200 if health["status"] == "ok" else 503
            return self._response(status, json.dumps(health).encode(), "application/json")
        if path == "/metrics":
            return self._response(200, self.metrics.text(),
                                  "text/plain; version=0.0.4; charset=utf-8")
        return self._static(path)

    def _static(self, path: str):
        root = self.config.web_dir.resolve()
        rel = "index.html" if path in ("", "/") else path.lstrip("/")
        target = (root / rel).resolve()
        if root not in target.parents or not target.is_file() or target.name.startswith("."):
            return self._response(404, b"not found\n", "text/plain")
        kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if target.suffix == ".js":
            kind = "text/javascript"
        if kind.startswith("text/"):
            kind += "; charset=utf-8"
        return self._response(200, target.read_bytes(), kind)

    # --- WebSocket ------------------------------------------------------------------------
    async def _send(self, ws, message: dict) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            await ws.send(json.dumps(message))
        except ConnectionClosed:
            pass

    async def _error(self, ws, code: str, message: str) -> None:
        self.metrics.errors.labels(code).inc()
        await self._send(ws, {"type": "error", "code": code, "message": message})

    def _send_soon(self, ws, message: dict) -> None:
        """Send ``message`` from synchronous code on the loop (session events): a task the
        server keeps until it is done (``stop`` cancels what is left), in creation order."""
        task = asyncio.get_running_loop().create_task(self._send(ws, message))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    def _event_sender(self, ws, display: str | None = None):
        def on_event(event: dict) -> None:
            first_audio = event.pop("_first_audio", None)
            if first_audio is not None:
                self.metrics.speech_latency.observe(max(0.0, time.monotonic() - first_audio))
            self._send_soon(ws, event)
            if display is not None:
                for controller in list(self.controllers.get(display, ())):
                    self._send_soon(controller, event)

        return on_event

    def _announce_display(self, name: str, session) -> None:
        message = {"type": "display", "display": name, "connected": session is not None,
                   "session": getattr(session, "id", None)}
        for controller in list(self.controllers.get(name, ())):
            self._send_soon(controller, message)

    async def _handle_controller(self, ws, name: str) -> None:
        """A ``?control=NAME`` connection: its speech goes to display NAME's current session."""
        self.controllers.setdefault(name, set()).add(ws)
        client = _Client(session=None, control=name)
        log.info("controller of display %r connected", name)
        try:
            display = self.displays.get(name)
            await self._send(ws, {"type": "ready", "control": name,
                                  "display_connected": display is not None,
                                  "session": getattr(display, "id", None)})
            async for message in ws:
                try:
                    session = self.displays.get(name)
                    if session is not client.session:  # the display reconnected meanwhile
                        client.session = session
                        client.resamplers.clear()
                        client.current_stream = None
                    await self._on_message(ws, client, message)
                except ProtocolError as exc:
                    await self._error(ws, exc.code, str(exc))
                except Exception as exc:  # noqa: BLE001 - a bug must not end the connection
                    log.exception("controller of %r: message failed", name)
                    await self._error(ws, "internal", f"internal error: {type(exc).__name__}")
        finally:
            self.controllers.get(name, set()).discard(ws)
            log.info("controller of display %r disconnected", name)

    async def speak_on_display(self, name: str, text: str, voice: str | None = None,
                               utt_id: str | None = None) -> str:
        """Say ``text`` on display ``name``'s current session (the kiosk's typed text). Returns
        the utterance id. Raises ProtocolError (``no_display``, ``empty_text``, ``tts_failed`` …)."""
        client = _Client(self._display_session(name))
        uid = utt_id or f"text{next(client.counter)}-{next(self._ids)}"
        await self._on_speak(None, client, {"type": "speak", "text": text, "voice": voice,
                                            "id": uid})
        return uid

    def display_audio(self, name: str, samples48k: np.ndarray, utt_id: str,
                      done: bool = False) -> None:
        """Queue float32 [n] 48 kHz mono samples as utterance ``utt_id`` on display ``name``'s
        current session, ``done`` with the last chunk (the hook for a local microphone). On the
        event loop. Raises ProtocolError (``no_display``, ``audio_buffer_full``)."""
        from runtime.live.session import BufferFull

        try:
            self._display_session(name).queue.add(utt_id, samples48k, done=done)
        except BufferFull as exc:
            raise ProtocolError("audio_buffer_full", str(exc)) from exc

    def _display_session(self, name: str):
        session = self.displays.get(name)
        if session is None or session.closed:
            raise ProtocolError("no_display", f"no display {name!r} is connected")
        return session

    async def _handle(self, ws) -> None:
        from avatars.bundle import BundleError
        from runtime.live.session import Session

        query = parse_qs(urlsplit(ws.request.path).query)
        name = query.get("avatar", [self.config.avatar])[0] or self.config.avatar
        try:
            display = _check_name(query.get("display", [None])[0], "display")
            control = _check_name(query.get("control", [None])[0], "control")
        except ProtocolError as exc:
            await self._error(ws, exc.code, str(exc))
            await ws.close(1008, "bad display name")
            return
        if control is not None:
            await self._handle_controller(ws, control)
            return
        if len(self.sessions) >= self.config.max_sessions:
            await self._error(ws, "too_many_sessions",
                              f"the server holds {self.config.max_sessions} sessions; try later")
            await ws.close(1013, "too many sessions")
            return
        try:
            state = await self._avatar(name)
        except (BundleError, ValueError, OSError) as exc:
            await self._error(ws, "bad_avatar", str(exc).splitlines()[0])
            await ws.close(1008, "bad avatar")
            return
        sid = f"s{next(self._ids)}"
        session = Session(sid, state, self.motion, self.config.fps,
                          seed=self.config.seed + len(self.sessions),
                          max_buffer_s=self.config.max_buffer_s,
                          on_event=self._event_sender(ws, display))
        client = _Client(session)
        self.sessions[sid] = session
        if display is not None:
            self.displays[display] = session
            self._announce_display(display, session)
        self.scheduler.add(session)
        self.metrics.sessions.set(len(self.sessions))
        log.info("session %s opened (avatar %s)", sid, name)
        try:
            await self._send(ws, {"type": "ready", "session": sid, "avatar": name,
                                  "fps": self.config.fps, "sample_rate": OUTPUT_SAMPLE_RATE})
            async for message in ws:
                try:
                    await self._on_message(ws, client, message)
                except ProtocolError as exc:
                    await self._error(ws, exc.code, str(exc))
                except Exception as exc:  # noqa: BLE001 - a bug must not end the session
                    log.exception("session %s: message failed", sid)
                    await self._error(ws, "internal", f"internal error: {type(exc).__name__}")
        finally:
            await self._close_session(client)

    async def _close_session(self, client: _Client) -> None:
        session = client.session
        self.scheduler.remove(session)
        session.close()
        for name, shown in list(self.displays.items()):
            if shown is session:
                del self.displays[name]
                self._announce_display(name, None)
        if client.pc is not None:
            await client.pc.close()
        self.sessions.pop(session.id, None)
        self.metrics.sessions.set(len(self.sessions))
        log.info("session %s closed", session.id)
        if self._reclaim_handle is None:  # one reclaim for closes that come together
            self._reclaim_handle = asyncio.get_running_loop().call_later(
                RECLAIM_DELAY_S, self._reclaim)

    def _reclaim(self) -> None:
        """Free what closed peers left in reference cycles (see ``runtime.serve.reclaim``)."""
        from runtime.serve.reclaim import reclaim

        self._reclaim_handle = None
        done = reclaim()
        log.debug("reclaimed %d objects in %.1f ms (malloc_trim %s)", done.unreachable,
                  done.seconds * 1000, done.trimmed)

    async def _on_message(self, ws, client: _Client, message) -> None:
        if isinstance(message, bytes):
            raise ProtocolError("binary_not_supported", "send JSON text messages")
        if len(message) > self.config.max_message_bytes:
            raise ProtocolError("message_too_large",
                                f"message is {len(message)} bytes; the limit is "
                                f"{self.config.max_message_bytes}")
        try:
            msg = json.loads(message)
        except json.JSONDecodeError as exc:
            raise ProtocolError("bad_json", f"not JSON: {exc.msg}") from exc
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            raise ProtocolError("bad_message", "a message is a JSON object with a string 'type'")
        kind = msg["type"]
        handler = {"offer": self._on_offer, "speak": self._on_speak, "audio": self._on_audio,
                   "audio_end": self._on_audio_end, "interrupt": self._on_interrupt,
                   "ping": self._on_ping}.get(kind)
        if handler is None:
            raise ProtocolError("bad_message", f"unknown message type {kind[:40]!r}")
        await handler(ws, client, msg)

    @staticmethod
    def _utterance_id(client: _Client, msg: dict) -> str:
        uid = msg.get("id")
        if uid is None:
            return f"u{next(client.counter)}"
        if not isinstance(uid, (str, int)) or len(str(uid)) > 64:
            raise ProtocolError("bad_message", "'id' must be a string or number (≤ 64 chars)")
        return str(uid)

    async def _on_ping(self, ws, client: _Client, msg: dict) -> None:
        await self._send(ws, {"type": "pong"})

    async def _on_offer(self, ws, client: _Client, msg: dict) -> None:
        from aiortc import RTCPeerConnection, RTCSessionDescription

        sdp = msg.get("sdp")
        if not isinstance(sdp, str) or not sdp.strip():
            raise ProtocolError("bad_message", "'offer' needs an 'sdp' string")
        if msg.get("sdp_type", "offer") != "offer":
            raise ProtocolError("bad_message", "'sdp_type' must be 'offer'")
        if client.control is not None:
            raise ProtocolError("no_peer", "a control connection carries no media")
        if client.pc is not None:
            raise ProtocolError("no_peer", "this session already has a peer connection")
        pc = RTCPeerConnection()
        client.pc = pc
        session = client.session

        @pc.on("connectionstatechange")
        async def _on_state() -> None:
            if client.pc is pc and pc.connectionState in ("failed", "closed"):
                log.info("session %s: peer connection %s", session.id, pc.connectionState)
                await ws.close(1000, f"peer connection {pc.connectionState}")

        try:
            pc.addTrack(session.audio_track)
            pc.addTrack(session.video_track)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except Exception as exc:  # noqa: BLE001 - aiortc raises many kinds on a bad SDP
            client.pc = None
            await pc.close()
            raise ProtocolError("webrtc_failed",
                                f"cannot answer the offer: {str(exc).splitlines()[0][:200]}"
                                ) from exc
        await self._send(ws, {"type": "answer", "sdp": pc.localDescription.sdp,
                              "sdp_type": "answer"})

    async def _on_speak(self, ws, client: _Client, msg: dict) -> None:
        from runtime.audio.decode import resample
        from runtime.audio.espeak import EspeakError
        from runtime.live.session import BufferFull
        from runtime.audio.tts import TTSError

        if client.session is None:
            raise ProtocolError("no_display", f"no display {client.control!r} is connected")
        text, voice = msg.get("text"), msg.get("voice")
        if not isinstance(text, str):
            raise ProtocolError("bad_message", "'speak' needs a 'text' string")
        if not text.strip():
            raise ProtocolError("empty_text", "nothing to say")
        if len(text) > self.config.max_text_chars:
            raise ProtocolError("text_too_long", f"text is {len(text)} characters; the limit "
                                f"is {self.config.max_text_chars}")
        if voice is not None and not isinstance(voice, str):
            raise ProtocolError("bad_message", "'voice' must be a string")
        uid = self._utterance_id(client, msg)
        loop = asyncio.get_running_loop()
        try:
            speech = await loop.run_in_executor(None, self.tts.synthesize, text, voice)
        except ValueError as exc:
            code = "bad_voice" if "voice" in str(exc) else "bad_message"
            raise ProtocolError(code, str(exc).splitlines()[0]) from exc
        except (TTSError, EspeakError) as exc:
            raise ProtocolError("tts_failed", str(exc).splitlines()[0]) from exc
        audio = await loop.run_in_executor(None, resample, speech.audio, speech.sample_rate,
                                           OUTPUT_SAMPLE_RATE)
        try:
            client.session.queue.add(uid, audio, done=True)
        except BufferFull as exc:
            raise ProtocolError("audio_buffer_full", str(exc)) from exc

    async def _on_audio(self, ws, client: _Client, msg: dict) -> None:
        import av

        from runtime.live.session import BufferFull

        if client.session is None:
            raise ProtocolError("no_display", f"no display {client.control!r} is connected")

        pcm, rate = msg.get("pcm16"), msg.get("sample_rate")
        if not isinstance(pcm, str):
            raise ProtocolError("bad_audio", "'audio' needs 'pcm16': base64 of int16 samples")
        if isinstance(rate, bool) or not isinstance(rate, int) or \
                not MIN_PCM_RATE <= rate <= MAX_PCM_RATE:
            raise ProtocolError("bad_audio", f"'sample_rate' must be an integer in "
                                f"[{MIN_PCM_RATE}, {MAX_PCM_RATE}], got {rate!r}")
        try:
            raw = base64.b64decode(pcm, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ProtocolError("bad_audio", "'pcm16' is not valid base64") from exc
        if len(raw) % 2:
            raise ProtocolError("bad_audio", "'pcm16' has an odd number of bytes")
        uid = msg.get("id")
        uid = client.current_stream if uid is None else self._utterance_id(client, msg)
        if uid is None:
            uid = f"u{next(client.counter)}"
        client.current_stream = uid
        x = (np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0)
        res = client.resamplers.get(uid)
        if res is None and len(client.resamplers) >= MAX_OPEN_STREAMS:
            raise ProtocolError("too_many_streams",
                                f"{len(client.resamplers)} audio streams are open; end one with "
                                f"'audio_end' (or 'interrupt') before starting another")
        if res is None or res[1] != rate:
            res = (av.AudioResampler(format="flt", layout="mono", rate=OUTPUT_SAMPLE_RATE), rate)
            client.resamplers[uid] = res
        out = np.zeros(0, np.float32)
        if len(x):
            frame = av.AudioFrame.from_ndarray(x[None], format="flt", layout="mono")
            frame.sample_rate = rate
            parts = [f.to_ndarray()[0] for f in res[0].resample(frame)]
            out = np.concatenate(parts).astype(np.float32) if parts else out
        try:
            client.session.queue.add(uid, out)
        except BufferFull as exc:
            raise ProtocolError("audio_buffer_full", str(exc)) from exc

    async def _on_audio_end(self, ws, client: _Client, msg: dict) -> None:
        if client.session is None:
            raise ProtocolError("no_display", f"no display {client.control!r} is connected")
        uid = msg.get("id")
        uid = client.current_stream if uid is None else self._utterance_id(client, msg)
        if uid is None:
            raise ProtocolError("bad_message", "'audio_end' without an open audio stream")
        res = client.resamplers.pop(uid, None)
        tail = np.zeros(0, np.float32)
        if res is not None:
            parts = [f.to_ndarray()[0] for f in res[0].resample(None)]
            tail = np.concatenate(parts).astype(np.float32) if parts else tail
        client.session.queue.add(uid, tail, done=True)
        if client.current_stream == uid:
            client.current_stream = None

    async def _on_interrupt(self, ws, client: _Client, msg: dict) -> None:
        client.resamplers.clear()
        client.current_stream = None
        if client.control is not None and client.session is None:
            raise ProtocolError("no_display", f"no display {client.control!r} is connected")
        for event in client.session.interrupt():
            client.session.on_event(event)  # the session's own peer and its display controllers


def run(config: ServerConfig) -> None:
    """Run a server until interrupted (Ctrl-C)."""
    quiet_library_logs()

    async def main() -> None:
        server = Server(config)
        await server.start()
        print(f"facecast serving on http://{config.host}:{server.port}/ "
              f"(WebSocket /ws, /healthz, /metrics)", flush=True)
        try:
            await asyncio.Future()
        finally:
            await server.stop()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


@dataclass
class ServerHandle:
    """A server running in a background thread (tests, benchmarks, the kiosk)."""

    server: Server
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://{self.server.config.host}:{self.server.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.server.config.host}:{self.server.port}/ws"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def serve_in_thread(config: ServerConfig) -> ServerHandle:
    """Start a server on its own event loop in a daemon thread; returns once it listens.
    Raises what ``Server`` raises at start-up."""
    loop = asyncio.new_event_loop()
    box: dict = {}
    ready = threading.Event()

    def main() -> None:
        asyncio.set_event_loop(loop)

        async def start() -> None:
            try:
                box["server"] = Server(config)
                await box["server"].start()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                box["error"] = exc
            finally:
                ready.set()

        loop.run_until_complete(start())
        if "error" not in box:
            loop.run_forever()

    thread = threading.Thread(target=main, name="facecast-server", daemon=True)
    thread.start()
    ready.wait(60)
    if "error" in box:
        raise box["error"]
    if "server" not in box:
        raise RuntimeError("server did not start within 60 s")
    return ServerHandle(box["server"], loop, thread)
