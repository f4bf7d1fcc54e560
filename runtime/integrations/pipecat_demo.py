"""``facecast pipecat-demo``: a Pipecat bot with a facecast face, in a browser, no cloud keys.

    facecast pipecat-demo          # then open http://127.0.0.1:7860/ and press Start

The bot greets you, then says whatever you type (an Asterisk-style prompt, a sentence…); Stop
interrupts it. Everything runs here: the page talks WebRTC to Pipecat's ``SmallWebRTCTransport``
(its offer goes to ``POST /api/offer`` on a small aiohttp server bound to loopback), the speech
is espeak-ng (``runtime.audio.tts`` as a Pipecat TTS service, ``FacecastTTSService``) and the
face is ``FacecastVideoService``::

    transport.input() → FacecastTTSService → FacecastVideoService → transport.output()

A real agent puts its STT and LLM before the TTS; the face does not change. Typed text and Stop
travel as data-channel messages ``{"type": "say", "text": …}`` and ``{"type": "interrupt"}``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field

from aiohttp import web
from pipecat.frames.frames import InterruptionFrame, TTSSpeakFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport
from pipecat.workers.runner import WorkerRunner

from engines.audio import OUTPUT_SAMPLE_RATE
from runtime.integrations.pipecat_service import FacecastTTSService, FacecastVideoService
from runtime.integrations.stream import AvatarEngine
from runtime.provenance.disclosure import Badge
from runtime.serve.auth import LOOPBACK_HOSTS

log = logging.getLogger("facecast.pipecat_demo")

GREETING = "Hello! I am a facecast avatar in a Pipecat pipeline. Type something and I will say it."
MAX_SAY_CHARS = 500
"""Longest text one message may ask the bot to say."""


@dataclass(frozen=True)
class DemoOptions:
    """``facecast pipecat-demo`` settings (see its ``--help``).

    Attributes:
        host, port: where the page and the offer endpoint listen (0: any free port); a host
            beyond loopback needs ``insecure`` (no authentication here).
        avatar, size, fps, backend: the face (``AvatarEngine``). voice: the espeak-ng voice.
        tts: TTS spec (``runtime.audio.tts.make_tts``: espeak, piper:…, command:…).
        max_bots: browsers served at once; more get HTTP 503.
        badge, watermark, allow_unconsented: as ``facecast serve``.
    """

    host: str = "127.0.0.1"
    port: int = 7860
    avatar: str = "default"
    size: int = 256
    fps: int = 25
    backend: str = "auto"
    voice: str = "en-us"
    tts: str | None = None
    max_bots: int = 2
    insecure: bool = False
    allow_unconsented: bool = False
    badge: Badge | None = field(default_factory=Badge)
    watermark: bool = True


def build_bot(connection: SmallWebRTCConnection, engine: AvatarEngine, options: DemoOptions,
              frame_size: tuple[int, int]) -> PipelineWorker:
    """The bot of one browser: its transport (video ``frame_size`` (w, h) at the avatar's
    rate), TTS and face; it greets on connect, says what the page sends, ends when the page
    goes."""
    transport = SmallWebRTCTransport(connection, TransportParams(
        audio_out_enabled=True, audio_out_sample_rate=OUTPUT_SAMPLE_RATE,
        video_out_enabled=True, video_out_is_live=True, video_out_width=frame_size[0],
        video_out_height=frame_size[1], video_out_framerate=int(options.fps)))
    face = FacecastVideoService(engine=engine, avatar=options.avatar, badge=options.badge,
                                watermark=options.watermark,
                                allow_unconsented=options.allow_unconsented)
    tts = FacecastTTSService(voice=options.voice, tts=options.tts)
    worker = PipelineWorker(
        Pipeline([transport.input(), tts, face, transport.output()]),
        params=PipelineParams(audio_out_sample_rate=OUTPUT_SAMPLE_RATE), enable_rtvi=False)

    @transport.event_handler("on_client_connected")
    async def greet(transport, client):
        await worker.queue_frame(TTSSpeakFrame(GREETING))

    @transport.event_handler("on_client_disconnected")
    async def leave(transport, client):
        await worker.cancel()

    @transport.event_handler("on_app_message")
    async def on_message(transport, message, sender):
        if not isinstance(message, dict):
            return
        if message.get("type") == "interrupt":
            await worker.queue_frame(InterruptionFrame())
        elif message.get("type") == "say" and str(message.get("text", "")).strip():
            await worker.queue_frame(TTSSpeakFrame(str(message["text"])[:MAX_SAY_CHARS]))

    return worker


class DemoServer:
    """The page and the offer endpoint; one bot per browser on a shared ``AvatarEngine``.
    ``await start()`` (returns the port), ``await stop()``."""

    def __init__(self, options: DemoOptions) -> None:
        if options.host not in LOOPBACK_HOSTS and not options.insecure:
            raise ValueError(f"binding to {options.host} lets anyone reach the bot: pass "
                             "--insecure to allow it")
        self.options = options
        self.engine: AvatarEngine | None = None
        self.frame_size = (0, 0)
        self.bots: set[asyncio.Task] = set()
        self._admitting = 0  # offers being answered (counted before their first await)
        self._runner: web.AppRunner | None = None
        self.port = options.port

    async def start(self) -> int:
        """Start the engine (and check the avatar), then listen. Returns the port."""
        o = self.options
        self.engine = await AvatarEngine.start(o.size, o.fps, o.backend)
        self.frame_size = await self.engine.prepare(o.avatar, badge=o.badge,
                                                    watermark=o.watermark,
                                                    allow_unconsented=o.allow_unconsented)
        app = web.Application(client_max_size=256 * 1024)
        app.router.add_get("/", self._page)
        app.router.add_post("/api/offer", self._offer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, o.host, o.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        log.info("open http://%s:%d/", o.host, self.port)
        return self.port

    async def stop(self) -> None:
        """Stop the bots, the server and the engine."""
        for task in list(self.bots):
            task.cancel()
        await asyncio.gather(*self.bots, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        if self.engine is not None:
            await self.engine.aclose()

    async def _page(self, request: web.Request) -> web.Response:
        """``GET /``: the demo page."""
        return web.Response(text=PAGE, content_type="text/html")

    async def _offer(self, request: web.Request) -> web.Response:
        """SDP offer in, answer out (JSON ``{sdp, type}`` → ``{sdp, type, pc_id}``); the bot
        starts. 503 when ``max_bots`` are running or being admitted (decided before the first
        await, so concurrent offers cannot all pass), 400 for a malformed offer."""
        if len(self.bots) + self._admitting >= self.options.max_bots:
            return web.json_response({"error": "too many bots; try later"}, status=503)
        self._admitting += 1
        try:
            try:
                body = await request.json()
                sdp, kind = str(body["sdp"]), str(body["type"])
            except (ValueError, KeyError, TypeError):
                return web.json_response({"error": "expected JSON {sdp, type}"}, status=400)
            connection = SmallWebRTCConnection()
            try:
                await connection.initialize(sdp=sdp, type=kind)
            except ValueError as exc:  # aiortc's parser on a malformed SDP
                await connection.disconnect()
                return web.json_response({"error": f"bad offer: {exc}"}, status=400)
            task = asyncio.create_task(self._run_bot(connection), name="pipecat-bot")
            self.bots.add(task)
            task.add_done_callback(self.bots.discard)
        finally:
            self._admitting -= 1
        return web.json_response(connection.get_answer())

    async def _run_bot(self, connection: SmallWebRTCConnection) -> None:
        """One browser's bot, until it leaves (or the server stops: then it is cancelled)."""
        worker = build_bot(connection, self.engine, self.options, self.frame_size)
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        try:
            await runner.run()
        except asyncio.CancelledError:  # the server stops: hang up properly
            await runner.cancel()
            raise


def run(options: DemoOptions) -> None:
    """Serve until Ctrl-C or SIGTERM (the ``facecast pipecat-demo`` command), then hang up
    every bot. Pipecat's own log (loguru, DEBUG by default) is cut to INFO and above. Raises
    what ``DemoServer`` raises at start-up."""
    import sys

    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="INFO")

    async def main() -> None:
        server = DemoServer(options)
        await server.start()
        print(f"facecast pipecat-demo: open http://{options.host}:{server.port}/", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await server.stop()

    asyncio.run(main())


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>facecast × Pipecat</title>
<style>body{font:16px system-ui;max-width:560px;margin:2em auto}video{width:100%;
background:#222}input{width:70%}</style></head><body>
<h1>facecast × Pipecat</h1>
<video id="video" autoplay playsinline aria-label="AI-generated avatar"></video>
<p><button id="start">Start</button> <input id="text" placeholder="Type something to say">
<button id="say">Say</button> <button id="stop">Stop</button></p>
<p id="status">idle</p>
<script type="module">
const $ = (id) => document.getElementById(id);
let pc, channel;
async function start() {
  pc = new RTCPeerConnection();
  window.demo = {pc, video: $("video")};
  pc.addTransceiver("audio", {direction: "sendrecv"});  // Pipecat: audio first, then video
  pc.addTransceiver("video", {direction: "sendrecv"});
  channel = pc.createDataChannel("chat");
  const stream = new MediaStream();
  pc.ontrack = (e) => { stream.addTrack(e.track); $("video").srcObject = stream; };
  pc.onconnectionstatechange = () => { $("status").textContent = pc.connectionState; };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((ok) => {
    if (pc.iceGatheringState === "complete") return ok();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && ok();
  });
  const res = await fetch("/api/offer", {method: "POST", headers: {"Content-Type":
    "application/json"}, body: JSON.stringify({sdp: pc.localDescription.sdp, type: "offer"})});
  if (!res.ok) { $("status").textContent = (await res.json()).error; return; }
  await pc.setRemoteDescription(await res.json());
}
const send = (m) => channel && channel.readyState === "open" && channel.send(JSON.stringify(m));
$("start").onclick = start;
$("say").onclick = () => { send({type: "say", text: $("text").value}); $("text").value = ""; };
$("stop").onclick = () => send({type: "interrupt"});
</script></body></html>
"""
"""The demo page: Start connects, Say sends typed text, Stop interrupts."""
