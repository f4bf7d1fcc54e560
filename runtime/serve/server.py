"""``facecast serve``: connections, sessions and the dispatch of their control messages.

One asyncio process, one port (``websockets``): ``/ws`` is the control/signaling WebSocket of a
session; every other request goes through websockets' HTTP hook to ``runtime.serve.http``
(``/healthz``, ``/metrics``, the files of ``web/``; the handshake's checks: ``runtime.serve.auth``).
Messages are parsed, validated and serialised by ``runtime.serve.protocol`` (``web/PROTOCOL.md``
is its readable version); speech goes into a session through ``runtime.serve.speech``, media to
its peer through ``runtime.serve.peer`` (aiortc); displays and their controllers (the kiosk) are
kept by ``runtime.serve.displays``. The frame clock and the shared renderer live in
``runtime.live.scheduler``; each session in ``runtime.live.session``. Nothing heavy runs on the
event loop: TTS, avatar loading and every tick run in worker threads; aiortc encodes in its
executor.

Safe by default: binds 127.0.0.1; another address needs a token (``--token``: clients present
an HS256 JWT signed with it, with ``exp``) or an explicit ``--insecure``; every request's
``Host`` must be an IP address, a loopback name or a configured public host (DNS rebinding), and
browser origins are checked on the handshake. Admission counts sessions (including those still
loading their avatar) and controllers, and cannot race; a session must show working media in
time (``runtime.serve.deadlines``) or is closed; limits on message size, text length, buffered
audio and queued utterances are each answered with an ``error`` code, and a malformed message
never ends the session. SIGTERM stops as gracefully as Ctrl-C (clients see 1001).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import signal
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from engines.audio import OUTPUT_SAMPLE_RATE
from runtime.audio.tts import MAX_TEXT_CHARS
from runtime.clock import as_fps, wire_fps
from runtime.live.events import SessionEvent, SpeechStarted
from runtime.live.speech import MAX_UTTERANCES
from runtime.provenance.disclosure import Badge
from runtime.serve.auth import LOOPBACK_HOSTS, check_secret
from runtime.serve.deadlines import MediaDeadlines, watch_media
from runtime.serve.displays import Displays
from runtime.serve.http import WEB_DIR, HttpRoutes
from runtime.serve.logs import quiet_library_logs
from runtime.serve.pacing import MessagePacer
from runtime.serve.peer import answer_offer
from runtime.serve.protocol import (
    MAX_MESSAGE_BYTES,
    Answer,
    Audio,
    AudioEnd,
    BadAvatar,
    ControllerReady,
    ErrorReply,
    InternalError,
    Interrupt,
    Limits,
    MediaTimeout,
    NoDisplay,
    NoPeer,
    Offer,
    Ping,
    Pong,
    ProtocolError,
    Ready,
    ServerMessage,
    Speak,
    TooManyControllers,
    TooManySessions,
    encode,
    first_line,
    parse_connect,
    parse_message,
)
from runtime.serve.speech import SpeechInput, queue_speech

log = logging.getLogger("facecast.server")

RECLAIM_DELAY_S = 1.0
"""Seconds after a session closes before ``runtime.serve.reclaim.reclaim`` frees what its peer
left."""


@dataclass(frozen=True)
class ServerConfig:
    """Server settings (see ``facecast serve --help``).

    Attributes:
        host, port: bind address (port 0 picks a free one).
        avatar: default avatar name when a client names none.
        web_dir: folder of the static widget files.
        size: renderer crop side R (256 or 512). fps: video frame rate, exact
            (``runtime.clock.as_fps``: 25, "30000/1001", …; 1–240).
        backend, threads: renderer backend and ONNX Runtime threads.
        token: shared secret the handshake's JWTs are signed with (None: no token; at least
            ``runtime.serve.auth.MIN_SECRET_BYTES`` bytes).
        insecure: allow a non-loopback bind without a token.
        allowed_origins: browser origins allowed besides the server's own pages.
        public_hosts: host names clients reach the server by (``Host`` header; IP addresses and
            loopback names are always allowed).
        max_sessions: concurrent sessions (counting those still loading their avatar), or
            "auto": the capacity measured for this machine, backend, size and fps by
            ``facecast bench capacity`` (``runtime.bench.capacity``; measured once at start-up
            and stored when no figure exists yet; at least 1).
        max_controllers: concurrent ``?control=`` connections, over every display.
        max_avatars: avatars kept loaded (by content hash) for new sessions.
        max_message_bytes: largest control message, UTF-8 bytes.
        max_text_chars: longest ``speak`` text. max_buffer_s: most speech audio queued per
        session, seconds. max_utterances: most utterances queued per session.
        deadlines: the media deadlines (``runtime.serve.deadlines.MediaDeadlines``).
        tts: TTS spec (``runtime.audio.tts.make_tts``). seed: behaviour seed base.
        allow_unconsented: serve avatars whose bundle states no consent (each logged once);
            else the default avatar stops start-up and a client's gets ``bad_avatar``.
        badge: the disclosure badge in every frame (``runtime.provenance.disclosure.Badge``); None only
            when the operator turned it off (``--no-badge``, logged).
        watermark: add the invisible watermark to every frame (``runtime.provenance.watermark``;
            False only when the operator turned it off, ``--no-watermark``, logged).
    """

    host: str = "127.0.0.1"
    port: int = 8765
    avatar: str = "default"
    web_dir: Path = WEB_DIR
    size: int = 256
    fps: int | str | Fraction = 25
    backend: str = "auto"
    threads: int | None = None
    token: str | None = None
    insecure: bool = False
    allowed_origins: tuple[str, ...] = ()
    public_hosts: tuple[str, ...] = ()
    max_sessions: int | str = 4
    max_controllers: int = 16
    max_avatars: int = 8
    max_message_bytes: int = MAX_MESSAGE_BYTES
    max_text_chars: int = MAX_TEXT_CHARS
    max_buffer_s: float = 60.0
    max_utterances: int = MAX_UTTERANCES
    deadlines: MediaDeadlines = field(default_factory=MediaDeadlines)
    tts: str | None = None
    seed: int = 0
    allow_unconsented: bool = False
    badge: Badge | None = field(default_factory=Badge)
    watermark: bool = True

    def check(self) -> None:
        """Raises ValueError for an unsafe or impossible configuration (one line saying which
        setting and why)."""
        if self.host not in LOOPBACK_HOSTS and not self.token and not self.insecure:
            raise ValueError(f"binding to {self.host} exposes the server beyond this machine: "
                             "give --token SECRET (or --insecure to allow anyone)")
        if self.token:
            check_secret(self.token)
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be 0–65535, got {self.port}")
        as_fps(self.fps)  # raises ValueError with the reason
        if self.max_sessions != "auto" and (not isinstance(self.max_sessions, int)
                                            or self.max_sessions < 1):
            raise ValueError(f"--max-sessions must be a number ≥ 1 or 'auto', got "
                             f"{self.max_sessions!r}")
        for name in ("max_controllers", "max_avatars", "max_utterances"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
        if not 0 < self.max_buffer_s <= 3600:
            raise ValueError("the speech buffer must be 0–3600 s")
        self.deadlines.check()

    @property
    def limits(self) -> Limits:
        """What the protocol parser accepts under this configuration."""
        return Limits(self.max_message_bytes, self.max_text_chars)


@dataclass
class Connection:
    """Per-connection state kept by the handler: the session its speech goes to (a
    controller's: its display's current one, None while none is connected), its peer
    connection, the display it controls (None for a session of its own), its speech input."""

    session: object
    speech: SpeechInput
    pc: object = None
    control: str | None = None
    tasks: set[asyncio.Task] = field(default_factory=set)
    """Its requests still running (synthesis of ``speak`` s); cancelled when it closes."""


class Server:
    """A running facecast server; ``await start()``, ``await stop()``.

    Attributes:
        sessions: session id → ``runtime.live.session.Session``, every open one.
        displays: the named displays and their controllers (``runtime.serve.displays``).
        port: the port it listens on (the real one once started, when configured as 0).
    """

    def __init__(self, config: ServerConfig) -> None:
        from engines.motion import MotionEngine
        from engines.renderer import NeuralRenderer
        from runtime.audio.tts import make_tts
        from runtime.live.scheduler import Scheduler
        from runtime.serve.metrics import Metrics

        config.check()
        self.config = config
        self.limits = config.limits
        self.metrics = Metrics()
        self.renderer = NeuralRenderer(config.size, config.backend, threads=config.threads)
        self.motion = MotionEngine()
        self.tts = make_tts(config.tts)
        self.scheduler = Scheduler(self.renderer, as_fps(config.fps), self.metrics)
        self.metrics.watch_stages(self.scheduler.stages)
        self.http = HttpRoutes(config.web_dir, config.token, config.allowed_origins,
                               self.health, self.metrics, public_hosts=config.public_hosts)
        self.avatars: OrderedDict[str, object] = OrderedDict()  # content hash → AvatarState
        self._avatar_names: dict[str, str] = {}  # name or path → content hash
        self.sessions: dict[str, object] = {}
        self.max_sessions = config.max_sessions if config.max_sessions != "auto" else 1
        self.capacity: dict | None = None  # the measured capacity report (--max-sessions auto)
        self.metrics.set_sessions(0, self.max_sessions)
        self._admitting = 0  # sessions admitted and still loading their avatar
        self._controllers = 0  # open ?control= connections
        self.displays = Displays(self._send_soon)
        self._ids = itertools.count(1)
        self._ws_server = None
        self.port = config.port
        self.started = time.monotonic()
        self._avatar_lock = asyncio.Lock()
        self._reclaim_handle: asyncio.TimerHandle | None = None
        self._sends: set[asyncio.Task] = set()  # event messages on their way (owned here)

    # --- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the default avatar, warm up, listen, start the frame clock. Raises what avatar
        loading raises (``BundleError``, OSError) and OSError when the port is taken."""
        from websockets.asyncio.server import serve

        await self._avatar(self.config.avatar)  # fail at start-up, not at the first client
        if self.config.max_sessions == "auto":
            await self._measured_capacity()
        from runtime.audio.prosody import warm_up  # Praat's one-off cost, before the first client

        await asyncio.get_running_loop().run_in_executor(None, warm_up)
        self._ws_server = await serve(
            self._handle, self.config.host, self.config.port,
            process_request=self.http.process_request,
            max_size=self.config.max_message_bytes * 2 + 4096,  # refuse politely below this
            ping_interval=5, ping_timeout=10, close_timeout=2,
            server_header="facecast",
        )
        self.port = self._ws_server.sockets[0].getsockname()[1]
        self.scheduler.start()
        log.info("serving on http://%s:%d", self.config.host, self.port)
        if self.config.badge is None:
            log.warning("the AI-generated disclosure badge is off (--no-badge)")
        if not self.config.watermark:
            log.warning("the invisible watermark is off (--no-watermark)")

    async def stop(self) -> None:
        """Close every connection, stop listening and the frame clock."""
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
        """The loaded ``AvatarState`` of avatar ``name`` (a path only from the command line):
        one per bundle content hash, at most ``max_avatars`` kept (least recently used dropped;
        sessions keep theirs). Raises BundleError, ValueError, OSError."""
        import avatars
        from runtime.live.scheduler import AvatarState

        async with self._avatar_lock:
            key = self._avatar_names.get(name)
            if key is None or key not in self.avatars:
                loop = asyncio.get_running_loop()
                avatar = await loop.run_in_executor(None, avatars.load, name)
                if not avatars.bundle.require_consent(avatar, self.config.allow_unconsented):
                    log.warning("avatar %r states no consent; serving it because "
                                "--allow-unconsented-avatar was given", avatar.name)
                key = avatar.metadata["content_hash"]
                if key not in self.avatars:
                    self.avatars[key] = await loop.run_in_executor(
                        None, AvatarState.build, avatar.name, avatar, self.renderer,
                        self.config.badge, self.config.watermark)
                self._avatar_names[name] = key
            self.avatars.move_to_end(key)
            while len(self.avatars) > self.config.max_avatars:
                dropped, _ = self.avatars.popitem(last=False)
                for alias in [n for n, k in self._avatar_names.items() if k == dropped]:
                    del self._avatar_names[alias]
            return self.avatars[key]

    async def _measured_capacity(self) -> None:
        """``--max-sessions auto``: the stored capacity for this machine (``machine_key``), or
        a measurement now (logged; stored for the next start)."""
        from runtime.bench.capacity import (
            load_capacity,
            machine_key,
            measure_capacity,
            save_capacity,
        )

        key = machine_key(self.renderer.backend, self.config.size, self.config.fps)
        report = load_capacity(key)
        if report is None:
            log.info("no capacity measured for %s yet: measuring (facecast bench capacity)", key)
            report = await measure_capacity(self.config.backend, self.config.size,
                                            self.config.fps)
            path = save_capacity(key, report)
            log.info("capacity %d sessions, stored in %s", report["capacity"], path)
        self.capacity = report
        self.max_sessions = max(1, int(report["capacity"]))
        if report["capacity"] < 1:
            log.warning("this machine did not hold one session at %s fps; admitting one anyway",
                        wire_fps(self.config.fps))
        self.metrics.set_sessions(len(self.sessions), self.max_sessions)
        log.info("--max-sessions auto: %d (measured %s)", self.max_sessions,
                 report.get("measured_at", "now"))

    def health(self) -> dict:
        """What ``/healthz`` reports: ``status`` ("ok", or "stalled" when sessions exist and no
        frame was produced for 2 s, or the watchdog gave up), ``sessions``, ``capacity`` (the
        session limit: configured, or measured with ``--max-sessions auto``; ``capacity_source``
        says which), ``load`` (sessions / capacity, for a load balancer), ``ticks``,
        ``late_ticks``, ``watchdog_restarts``, ``stuck_workers`` (abandoned tick threads still
        hung), ``displays`` (names of connected displays), ``seconds_since_frame``, ``backend``,
        ``size``, ``fps``, ``uptime_s``."""
        sched = self.scheduler
        stalled = sched.stalled()
        return {"status": "stalled" if stalled else "ok", "sessions": len(self.sessions),
                "capacity": self.max_sessions,
                "capacity_source": "measured" if self.capacity is not None else "configured",
                "load": round(len(self.sessions) / self.max_sessions, 3),
                "ticks": sched.ticks, "late_ticks": sched.late_ticks,
                "watchdog_restarts": sched.restarts, "stuck_workers": sched.abandoned_alive,
                "displays": sorted(self.displays),
                "seconds_since_frame": round(time.monotonic() - sched.last_progress, 2),
                "backend": self.renderer.backend, "size": self.config.size,
                "fps": wire_fps(self.config.fps), "uptime_s": round(time.monotonic() - self.started, 1)}

    # --- sending --------------------------------------------------------------------------
    async def _send(self, ws, message: ServerMessage) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            await ws.send(encode(message))
        except ConnectionClosed:
            pass

    async def _error(self, ws, exc: ProtocolError) -> None:
        self.metrics.errors.labels(exc.code).inc()
        await self._send(ws, ErrorReply.of(exc))

    def _send_soon(self, ws, message: ServerMessage) -> None:
        """Send ``message`` from synchronous code on the loop (session events): a task the
        server keeps until it is done (``stop`` cancels what is left), in creation order."""
        task = asyncio.get_running_loop().create_task(self._send(ws, message))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    def _event_sender(self, ws, display: str | None = None):
        def on_event(event: SessionEvent) -> None:
            if isinstance(event, SpeechStarted):
                self.metrics.speech_latency.observe(max(0.0, time.monotonic() - event.first_audio))
            self._send_soon(ws, event)
            for controller in self.displays.controllers(display):
                self._send_soon(controller, event)

        return on_event

    # --- the kiosk's own speech -----------------------------------------------------------
    async def speak_on_display(self, name: str, text: str, voice: str | None = None,
                               utt_id: str | None = None) -> str:
        """Say ``text`` on display ``name``'s current session (the kiosk's typed text). Returns
        the utterance id. Raises ProtocolError (``NoDisplay``, ``EmptyText``, ``TTSFailed`` …)."""
        session = self.displays.session(name)
        speech = SpeechInput(self.tts, prefix="text")
        uid = utt_id or f"{speech.new_id()}-{next(self._ids)}"
        msg = Speak.from_wire({"text": text, "voice": voice, "id": uid}, self.limits)
        return await speech.speak(session, msg)

    def display_audio(self, name: str, samples48k: np.ndarray, utt_id: str,
                      done: bool = False) -> None:
        """Queue float32 [n] 48 kHz mono samples as utterance ``utt_id`` on display ``name``'s
        current session, ``done`` with the last chunk (the hook for a local microphone). On the
        event loop. Raises ProtocolError (``NoDisplay``, ``AudioBufferFull``)."""
        queue_speech(self.displays.session(name), utt_id, samples48k, done=done)

    # --- connections ----------------------------------------------------------------------
    async def _handle(self, ws) -> None:
        from avatars.bundle import BundleError
        from runtime.live.session import Session

        try:
            request = parse_connect(ws.request.path, self.config.avatar)
        except ProtocolError as exc:
            await self._error(ws, exc)
            await ws.close(1008, "bad avatar" if isinstance(exc, BadAvatar) else "bad name")
            return
        if request.control is not None:
            await self._handle_controller(ws, request.control)
            return
        # admission is decided and counted before the first await: concurrent connects
        # cannot all pass while an avatar loads
        if len(self.sessions) + self._admitting >= self.max_sessions:
            await self._error(ws, TooManySessions(
                f"the server holds {self.max_sessions} sessions; try later"))
            await ws.close(1013, "too many sessions")
            return
        name, display = request.avatar, request.display
        self._admitting += 1
        try:
            state = await self._avatar(name)
        except (BundleError, ValueError, OSError) as exc:
            log.warning("avatar %r does not load: %s", name, first_line(exc))
            # the same words for a missing and a broken bundle: nothing about the server's disk
            await self._error(ws, BadAvatar(f"no usable avatar named {name!r}"))
            await ws.close(1008, "bad avatar")
            return
        finally:
            self._admitting -= 1
        sid = f"s{next(self._ids)}"
        session = Session(sid, state, self.motion, as_fps(self.config.fps),
                          seed=self.config.seed + len(self.sessions),
                          max_buffer_s=self.config.max_buffer_s,
                          max_utterances=self.config.max_utterances,
                          on_event=self._event_sender(ws, display))
        client = Connection(session, SpeechInput(self.tts))
        self.sessions[sid] = session
        if display is not None:
            self.displays.show(display, session)
        self.scheduler.add(session)
        self.metrics.set_sessions(len(self.sessions), self.max_sessions)
        log.info("session %s opened (avatar %s)", sid, name)
        watch = asyncio.create_task(self._watch_media(ws, client))
        try:
            badge = self.config.badge
            await self._send(ws, Ready(sid, name, wire_fps(self.config.fps), OUTPUT_SAMPLE_RATE,
                                       badge.text if badge is not None else Badge.text,
                                       badge is not None))
            await self._receive(ws, client, f"session {sid}")
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
            await self._close_session(client)

    async def _watch_media(self, ws, client: Connection) -> None:
        """Close the session when a media deadline passes, and render its video only while
        its peer receives it (``runtime.serve.deadlines``)."""
        def on_watched(watched: bool) -> None:
            client.session.render_video = watched

        reason = await watch_media(lambda: client.pc, self.config.deadlines, on_watched)
        log.info("session %s: %s; closing it", client.session.id, reason)
        await self._error(ws, MediaTimeout(reason))
        await ws.close(1008, reason[:120])

    async def _handle_controller(self, ws, name: str) -> None:
        """A ``?control=NAME`` connection: its speech goes to display NAME's current session."""
        if self._controllers >= self.config.max_controllers:
            await self._error(ws, TooManyControllers(
                f"the server holds {self.config.max_controllers} controllers; try later"))
            await ws.close(1013, "too many controllers")
            return
        self._controllers += 1
        self.displays.attach(name, ws)
        client = Connection(None, SpeechInput(self.tts), control=name)
        log.info("controller of display %r connected", name)
        try:
            display = self.displays.get(name)
            await self._send(ws, ControllerReady(name, display is not None,
                                                 getattr(display, "id", None)))
            await self._receive(ws, client, f"controller of {name!r}")
        finally:
            self._controllers -= 1
            self.displays.detach(name, ws)
            log.info("controller of display %r disconnected", name)

    async def _receive(self, ws, client: Connection, who: str) -> None:
        """Dispatch every message until the connection closes; a refused or failed message is
        answered with an ``error`` and the connection goes on. Messages beyond the connection's
        sustained rate are delayed (``runtime.serve.pacing``). A connection that ends without a
        closing handshake (the client vanished) ends it quietly."""
        from websockets.exceptions import ConnectionClosed

        pacer = MessagePacer()
        try:
            async for raw in ws:
                if (wait := pacer.delay()) > 0:  # a flood waits in its own TCP window
                    await asyncio.sleep(wait)
                try:
                    await self._dispatch(ws, client, raw)
                except ProtocolError as exc:
                    await self._error(ws, exc)
                except Exception as exc:  # a bug must not end the session
                    log.exception("%s: message failed", who)
                    await self._error(ws, InternalError(f"internal error: {type(exc).__name__}"))
        except ConnectionClosed as exc:
            log.info("%s: connection lost (%s)", who, exc.rcvd.code if exc.rcvd else "no close")
        finally:
            for task in client.tasks:
                task.cancel()
            await asyncio.gather(*client.tasks, return_exceptions=True)

    def _spawn(self, ws, client: Connection, request) -> None:
        """Run coroutine ``request`` of ``client`` without holding up its next messages; a
        ``ProtocolError`` it raises is answered with an ``error``."""
        async def run() -> None:
            try:
                await request
            except ProtocolError as exc:
                await self._error(ws, exc)
            except Exception as exc:  # a bug must not end the session
                log.exception("request failed")
                await self._error(ws, InternalError(f"internal error: {type(exc).__name__}"))

        task = asyncio.get_running_loop().create_task(run())
        client.tasks.add(task)
        task.add_done_callback(client.tasks.discard)

    async def _close_session(self, client: Connection) -> None:
        session = client.session
        self.scheduler.remove(session)
        session.close()
        self.displays.forget(session)
        if client.pc is not None:
            await client.pc.close()
        self.sessions.pop(session.id, None)
        self.metrics.set_sessions(len(self.sessions), self.max_sessions)
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

    # --- messages -------------------------------------------------------------------------
    async def _dispatch(self, ws, client: Connection, raw: str | bytes) -> None:
        if client.control is not None:  # a controller follows its display's current session
            session = self.displays.get(client.control)
            if session is not client.session:  # the display reconnected meanwhile
                client.session = session
                client.speech.reset()
        msg = parse_message(raw, self.limits)
        match msg:
            case Ping():
                await self._send(ws, Pong())
            case Offer():
                await self._on_offer(ws, client, msg)
            case Interrupt():
                self._on_interrupt(client)
            case Speak():  # queued in order now, synthesised while later messages go on
                target = self._target(client)
                pending = client.speech.begin_speak(target, msg)
                self._spawn(ws, client, client.speech.fill_speak(target, pending))
            case Audio():
                client.speech.audio(self._target(client), msg)
            case AudioEnd():
                client.speech.audio_end(self._target(client), msg)

    @staticmethod
    def _target(client: Connection):
        """The session the connection's speech goes to. Raises NoDisplay for a controller whose
        display is not connected."""
        if client.session is None:
            raise NoDisplay(f"no display {client.control!r} is connected")
        return client.session

    async def _on_offer(self, ws, client: Connection, msg: Offer) -> None:
        if client.control is not None:
            raise NoPeer("a control connection carries no media")
        if client.pc is not None:
            raise NoPeer("this session already has a peer connection")

        async def ended(pc, state: str) -> None:
            if client.pc is pc:
                log.info("session %s: peer connection %s", client.session.id, state)
                await ws.close(1000, f"peer connection {state}")

        client.pc = await answer_offer(client.session, msg.sdp, ended)
        await self._send(ws, Answer(client.pc.localDescription.sdp))

    def _on_interrupt(self, client: Connection) -> None:
        client.speech.reset()
        session = self._target(client)
        for event in session.interrupt():
            session.on_event(event)  # the session's own peer and its display controllers


def run(config: ServerConfig) -> None:
    """Run a server until Ctrl-C (SIGINT) or SIGTERM (what systemd, Docker and Kubernetes send),
    both graceful: every client is closed with 1001, the frame clock stopped. Raises what
    ``Server`` raises at start-up."""
    quiet_library_logs()

    async def main() -> None:
        server = Server(config)
        await server.start()
        print(f"facecast serving on http://{config.host}:{server.port}/ "
              f"(WebSocket /ws, /healthz, /metrics)", flush=True)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stopping.set)
        try:
            await stopping.wait()
            log.info("SIGTERM: stopping")
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
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
        """``http://host:port`` of the server."""
        return f"http://{self.server.config.host}:{self.server.port}"

    @property
    def ws_url(self) -> str:
        """``ws://host:port/ws``, its control WebSocket."""
        return f"ws://{self.server.config.host}:{self.server.port}/ws"

    def stop(self) -> None:
        """Stop the server and its thread (waits up to 25 s)."""
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def serve_in_thread(config: ServerConfig) -> ServerHandle:
    """Start a server on its own event loop in a daemon thread; returns once it listens.
    Raises what ``Server`` raises at start-up, RuntimeError if it is not up within 60 s."""
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
