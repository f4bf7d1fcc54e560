"""``facecast livekit``: a LiveKit Agents worker that is the avatar participant of any voice
agent's room (extra ``facecast[livekit]``).

The worker registers with a LiveKit server (LiveKit Cloud or a self-hosted ``livekit-server``)
under ``--agent-name`` (explicit dispatch). An agent asks for an avatar with
``runtime.integrations.livekit_avatar.FacecastAvatarSession``, which creates a dispatch whose
metadata is an ``AvatarDispatch``; LiveKit's dispatcher offers the job to a worker with room
left, and the worker's job

1. joins the room as ``avatar_identity`` with the ``lk.publish_on_behalf`` attribute set to the
   agent's identity (so front ends show the avatar as the agent's video);
2. receives the agent's speech on ``lk.audio_stream`` byte streams and answers ``lk.clear_buffer``
   (the SDK's ``DataStreamAudioReceiver``);
3. turns it into paired video and audio with a ``FacecastVideoGenerator`` and publishes both
   through the SDK's ``AvatarRunner`` (``rtc.AVSynchronizer``), which sends
   ``lk.playback_started`` and ``lk.playback_finished`` with the playback position and
   ``interrupted``;
4. ends when the agent leaves or the room closes.

**One engine per worker.** Every job of the worker runs in a thread of the worker's process
(``JobExecutorType.THREAD``, each job on its own event loop) and uses the one ``AvatarEngine``
on the worker's main loop through a ``StreamPort``: one renderer, one batched tick for all of
the worker's rooms, as ``facecast serve`` does for its sessions.

**Load.** The worker reports ``sessions / capacity`` as its load (``SessionLoad``), capacity
being what ``facecast bench capacity`` measured for this machine, backend, size and fps
(``runtime.bench.capacity``, the figure ``facecast serve --max-sessions auto`` reads; measured
at start-up when none is stored), or ``--max-sessions N``. Its load threshold is set between
capacity − 1 and capacity sessions, so the worker reports itself full — and LiveKit stops
offering it rooms — exactly when it holds ``capacity`` avatars, whatever its CPU percent. (On
LiveKit Cloud's *hosted* agents the SDK replaces a custom load function by its CPU-based one;
self-hosted workers connected to LiveKit Cloud keep it.)

URL and credentials: ``--url`` / ``--api-key`` / ``--api-secret`` or the usual ``LIVEKIT_URL``,
``LIVEKIT_API_KEY``, ``LIVEKIT_API_SECRET``; a missing one is a one-line error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("facecast.integrations.livekit")

AGENT_NAME = "facecast-avatar"
"""The agent name a worker registers under by default (explicit dispatch: LiveKit sends it only
rooms it is dispatched to by that name, e.g. by ``livekit_avatar.FacecastAvatarSession``)."""
ENV_URL, ENV_KEY, ENV_SECRET = "LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"
"""The environment variables LiveKit's own tools read the server URL and API key pair from."""
HTTP_PORT = 8081
"""Port of the worker's health endpoint (``/`` and ``/worker``, the SDK's), as LiveKit's own
workers use in production; 0: any free port (several workers on one machine)."""
DRAIN_S = 600
"""Seconds a stopping worker waits for its rooms to end before it closes them."""
MAX_IDLE_RUNNERS = 8
"""Job threads kept warm at most (one per session of capacity, up to this)."""
AGENT_WAIT_S = 60.0
"""Seconds a job waits for its agent to be in the room before it gives up."""


@dataclass(frozen=True)
class Credentials:
    """Where the LiveKit server is and the API key pair to register with (``url``: ws(s):// or
    http(s)://)."""

    url: str
    api_key: str = field(repr=False)
    api_secret: str = field(repr=False)


def livekit_credentials(url: str | None = None, api_key: str | None = None,
                        api_secret: str | None = None,
                        env: Mapping[str, str] = os.environ) -> Credentials:
    """The server URL and key pair: each argument, else its environment variable (``ENV_URL``,
    ``ENV_KEY``, ``ENV_SECRET``). Raises ValueError (one line naming what is missing) when
    any is missing or the URL is not ws://, wss://, http:// or https://."""
    values = {ENV_URL: url or env.get(ENV_URL, ""), ENV_KEY: api_key or env.get(ENV_KEY, ""),
              ENV_SECRET: api_secret or env.get(ENV_SECRET, "")}
    missing = [name for name, value in values.items() if not value.strip()]
    if missing:
        raise ValueError(f"no LiveKit server given: set {', '.join(missing)} (or --url, "
                         "--api-key, --api-secret)")
    if not values[ENV_URL].startswith(("ws://", "wss://", "http://", "https://")):
        raise ValueError(f"{ENV_URL} must start with ws://, wss://, http:// or https://, got "
                         f"{values[ENV_URL]!r}")
    return Credentials(values[ENV_URL], values[ENV_KEY], values[ENV_SECRET])


# --- load ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SessionLoad:
    """The worker's load from its session capacity: ``load(server)`` = sessions / ``capacity``,
    sessions being the larger of the engine's open streams (``sessions()``) and the server's
    running jobs (a job counts from its start, before its stream opens). ``threshold`` lies
    between (capacity − 1) / capacity and 1, so the SDK marks the worker full at ``capacity``
    sessions. ``load`` is called in an executor thread (the SDK's); it only reads counters.

    Attributes:
        capacity: sessions this worker holds (≥ 1). sessions: open streams now (callable).
        source: "measured" (``runtime.bench.capacity``) or "configured" (``--max-sessions``).
    """

    capacity: int
    sessions: Callable[[], int]
    source: str = "configured"

    def __post_init__(self) -> None:
        if isinstance(self.capacity, bool) or not isinstance(self.capacity, int) \
                or self.capacity < 1:
            raise ValueError(f"capacity must be a whole number of sessions ≥ 1, got "
                             f"{self.capacity!r}")

    @property
    def threshold(self) -> float:
        """The SDK's ``load_threshold``: (capacity − ½) / capacity."""
        return (self.capacity - 0.5) / self.capacity

    def load(self, server: Any = None) -> float:
        """sessions / capacity (0.0 idle, 1.0 full; above 1 only if more were admitted).
        ``server``: the ``AgentServer`` (its ``active_jobs``), or None."""
        jobs = len(server.active_jobs) if server is not None else 0
        return max(jobs, self.sessions()) / self.capacity

    @property
    def idle_runners(self) -> int:
        """Job threads to keep warm: the capacity, at most ``MAX_IDLE_RUNNERS``."""
        return min(self.capacity, MAX_IDLE_RUNNERS)


async def session_capacity(engine: Any, max_sessions: int | str, fps: int | str) -> SessionLoad:
    """The ``SessionLoad`` of ``engine`` (an ``AvatarEngine``): ``max_sessions`` sessions, or
    with "auto" the capacity stored for this machine (``engine.capacity``,
    ``runtime.bench.capacity``), measured now and stored when there is none (as ``facecast
    serve --max-sessions auto`` does; minutes). A machine that did not hold one session still
    gets 1 (logged). Raises ValueError for another ``max_sessions``."""
    if max_sessions != "auto":
        return SessionLoad(int(max_sessions), lambda: engine.sessions, "configured")
    capacity = engine.capacity
    if capacity is None:
        from runtime.bench.capacity import machine_key, measure_capacity, save_capacity

        key = machine_key(engine.renderer.backend, engine.size, fps)
        log.info("no capacity measured for %s yet: measuring (facecast bench capacity)", key)
        report = await measure_capacity(engine.renderer.backend, engine.size, fps)
        path = save_capacity(key, report)
        capacity = int(report["capacity"])
        log.info("capacity %d sessions, stored in %s", capacity, path)
    if capacity < 1:
        log.warning("this machine did not hold one session at full frame rate; taking one")
    return SessionLoad(max(1, capacity), lambda: engine.sessions, "measured")


# --- the job -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WorkerConfig:
    """What ``facecast livekit`` runs (the command's options; defaults written here).

    Attributes:
        agent_name: the name agents dispatch the avatar by. avatar: the default avatar, loaded
            at start-up (a dispatch may name another bundle the worker has). size, fps,
            backend, threads: the renderer's (as ``facecast serve``). max_sessions: rooms at
            once, or "auto" (measured capacity). badge: the disclosure badge
            (``runtime.provenance.disclosure.Badge``; None: none, logged). watermark: the
            invisible mark (``runtime.provenance.watermark``; False logged). allow_unconsented:
            run avatars whose bundle states no consent (logged). http_port: the health
            endpoint's port. max_retry: connection attempts to the server before the worker
            gives up (the SDK's; about 2 minutes at 16). url, api_key, api_secret: the server
            (else the environment).
    """

    agent_name: str = AGENT_NAME
    avatar: str = "default"
    size: int = 256
    fps: int | str = 25
    backend: str = "auto"
    threads: int | None = None
    max_sessions: int | str = "auto"
    badge: Any = True
    watermark: bool = True
    allow_unconsented: bool = False
    http_port: int = HTTP_PORT
    max_retry: int = 16
    url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    api_secret: str | None = field(default=None, repr=False)

    def check(self) -> None:
        """Raises ValueError for a bad agent name, session count or port."""
        if not self.agent_name.strip():
            raise ValueError("--agent-name must not be empty")
        if self.max_sessions != "auto" and (isinstance(self.max_sessions, bool)
                                            or not isinstance(self.max_sessions, int)
                                            or self.max_sessions < 1):
            raise ValueError(f"--max-sessions must be a number ≥ 1 or 'auto', got "
                             f"{self.max_sessions!r}")
        if not 0 <= self.http_port <= 65535:
            raise ValueError(f"--http-port must be 0–65535, got {self.http_port}")
        if self.max_retry < 0:
            raise ValueError(f"--max-retry must be ≥ 0, got {self.max_retry}")


@dataclass(frozen=True)
class EngineHost:
    """The worker's engine and the loop it runs on, for jobs running on other loops."""

    engine: Any
    loop: asyncio.AbstractEventLoop
    config: WorkerConfig


async def accept_request(request: Any) -> None:
    """The worker's ``on_request``: accept a dispatch whose metadata is an ``AvatarDispatch``,
    joining as its ``avatar_identity`` with ``lk.publish_on_behalf`` = its ``agent_identity``;
    reject (logged, one line) any other."""
    from livekit.agents.types import ATTRIBUTE_PUBLISH_ON_BEHALF

    from runtime.integrations.livekit_avatar import AvatarDispatch

    try:
        dispatch = AvatarDispatch.from_metadata(request.job.metadata)
    except ValueError as exc:
        log.warning("room %s: dispatch rejected: %s", request.room.name, exc)
        await request.reject()
        return
    await request.accept(name="facecast avatar", identity=dispatch.avatar_identity,
                         attributes={ATTRIBUTE_PUBLISH_ON_BEHALF: dispatch.agent_identity})


async def run_avatar_job(ctx: Any, host: EngineHost) -> None:
    """A job's entrypoint (on the job's own loop): be the avatar of the dispatching agent until
    it leaves or the room closes (module docstring). Raises what opening the stream raises (a
    bad avatar name, no consent): the job then fails and is logged by the SDK."""
    from livekit import rtc
    from livekit.agents import AutoSubscribe
    from livekit.agents.voice.avatar import AvatarRunner, DataStreamAudioReceiver

    from runtime.integrations.livekit_avatar import (
        AvatarDispatch,
        FacecastVideoGenerator,
        StreamPort,
    )

    dispatch = AvatarDispatch.from_metadata(ctx.job.metadata)
    await ctx.connect(auto_subscribe=AutoSubscribe.SUBSCRIBE_NONE)
    gone = asyncio.Event()

    def on_left(participant: rtc.RemoteParticipant) -> None:
        if participant.identity == dispatch.agent_identity:
            gone.set()

    ctx.room.on("participant_disconnected", on_left)
    ctx.room.on("disconnected", lambda *_: gone.set())
    generator = receiver = None
    started = False
    try:
        avatar = dispatch.avatar or host.config.avatar
        port = await StreamPort.open(host.engine, host.loop, avatar=avatar,
                                     seed=dispatch.seed, badge=host.config.badge,
                                     watermark=host.config.watermark,
                                     allow_unconsented=host.config.allow_unconsented)
        generator = FacecastVideoGenerator(port)
        receiver = DataStreamAudioReceiver(ctx.room, sender_identity=dispatch.agent_identity)
        runner = AvatarRunner(ctx.room, audio_recv=receiver, video_gen=generator,
                              options=generator.options)
        try:  # the receiver waits for the agent participant
            await asyncio.wait_for(runner.start(), AGENT_WAIT_S)
        except TimeoutError:
            log.warning("room %s: agent %s not in the room after %.0f s; leaving",
                        ctx.room.name, dispatch.agent_identity, AGENT_WAIT_S)
            return
        started = True
        log.info("room %s: avatar %s for %s", ctx.room.name, avatar,
                 dispatch.agent_identity)
        await _first_of(runner.wait_for_complete(), gone.wait())
    finally:
        if started:
            await runner.aclose()  # closes the receiver too
        elif receiver is not None:
            await receiver.aclose()
        if generator is not None:
            await generator.aclose()
        ctx.shutdown("the avatar's agent left" if gone.is_set() else "the avatar stopped")


async def _first_of(*aws: Any) -> None:
    """Wait until the first of ``aws`` is done; cancel the others (their errors are the SDK
    runner's to log)."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


# --- the worker ----------------------------------------------------------------------------------
def build_server(host: EngineHost, load: SessionLoad, credentials: Credentials) -> Any:
    """The ``livekit.agents.AgentServer`` of a worker: jobs in threads of this process on
    ``host``'s engine, load and threshold from ``load``, registered as
    ``host.config.agent_name``."""
    import functools

    from livekit.agents import AgentServer, JobExecutorType

    server = AgentServer(job_executor_type=JobExecutorType.THREAD, load_fnc=load.load,
                         load_threshold=load.threshold, num_idle_processes=load.idle_runners,
                         drain_timeout=DRAIN_S, port=host.config.http_port,
                         max_retry=host.config.max_retry,
                         ws_url=credentials.url, api_key=credentials.api_key,
                         api_secret=credentials.api_secret)
    server.rtc_session(functools.partial(run_avatar_job, host=host),
                       agent_name=host.config.agent_name, on_request=accept_request)
    return server


async def serve_worker(config: WorkerConfig, stop: asyncio.Event | None = None, *,
                       register: bool = True,
                       on_ready: Callable[[Any, EngineHost, SessionLoad], Any] | None = None,
                       ) -> None:
    """Run a worker until ``stop`` is set (or SIGINT / SIGTERM when ``stop`` is None), then
    drain its rooms (up to ``DRAIN_S``) and close.

    Args:
        config: what to run (``WorkerConfig``; checked). register: False starts the server
            without registering with LiveKit (the SDK's ``unregistered``; for checks: no room
            is ever offered). on_ready: called with the ``AgentServer``, the ``EngineHost``
            and the ``SessionLoad`` once the server runs.

    Raises ValueError for missing credentials (before anything loads), a bad config, or what
    starting the engine raises (a bad avatar, a backend that cannot run here).
    """
    config.check()
    credentials = livekit_credentials(config.url, config.api_key, config.api_secret) \
        if register else Credentials(config.url or "", config.api_key or "",
                                     config.api_secret or "")
    from runtime.integrations.stream import AvatarEngine

    engine = await AvatarEngine.start(config.size, config.fps, config.backend,
                                      threads=config.threads)
    try:
        await engine.prepare(config.avatar, badge=config.badge, watermark=config.watermark,
                             allow_unconsented=config.allow_unconsented)
        load = await session_capacity(engine, config.max_sessions, config.fps)
        host = EngineHost(engine, asyncio.get_running_loop(), config)
        server = build_server(host, load, credentials)
        log.info("worker %s: capacity %d sessions (%s), load threshold %.3f",
                 config.agent_name, load.capacity, load.source, load.threshold)
        await _run_until_stopped(server, stop, register,
                                 lambda: on_ready and on_ready(server, host, load))
    finally:
        await engine.aclose()


async def _run_until_stopped(server: Any, stop: asyncio.Event | None, register: bool,
                             ready: Callable[[], Any]) -> None:
    """Run ``server`` until ``stop`` (or a signal) is set or it fails; then drain (when it
    still runs) and close it. Raises what ``server.run`` raised (the SDK's RuntimeError when
    it could not connect)."""
    stop = stop or _signal_event()
    run = asyncio.ensure_future(server.run(devmode=False, unregistered=not register))
    server.once("worker_started", lambda *_: ready())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({run, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not run.done():
            with contextlib.suppress(asyncio.TimeoutError):
                await server.drain(timeout=DRAIN_S)
    finally:
        stopped.cancel()
        await server.aclose()  # also after a failed run: its HTTP session and job threads
    await run


def _signal_event() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM (on the running loop; Unix)."""
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, event.set)
    return event


# --- the command ---------------------------------------------------------------------------------
def add_options(p: argparse.ArgumentParser) -> None:
    """The options of ``facecast livekit`` (defaults from ``WorkerConfig``)."""
    from runtime.cli_args import (
        add_allow_unconsented,
        add_avatar,
        add_backend,
        add_badge,
        add_size,
        sessions_arg,
    )

    c = WorkerConfig
    p.add_argument("--agent-name", default=c.agent_name,
                   help="the name agents dispatch the avatar by (default %(default)s)")
    add_avatar(p, c.avatar, help="avatar loaded at start-up (a dispatch may name another)")
    add_size(p, c.size)
    p.add_argument("--fps", default=c.fps, help="video frame rate (default %(default)s)")
    add_backend(p, c.backend)
    p.add_argument("--threads", type=int, default=c.threads, help="ONNX Runtime threads")
    p.add_argument("--max-sessions", type=sessions_arg, default=c.max_sessions,
                   help="rooms at once, or 'auto': the capacity facecast bench capacity "
                        "measured on this machine (measured at start-up if none is stored); "
                        "the worker reports sessions / capacity as its load (default "
                        "%(default)s)")
    p.add_argument("--http-port", type=int, default=c.http_port,
                   help="health endpoint port, 0 = any free (default %(default)s)")
    p.add_argument("--max-retry", type=int, default=c.max_retry,
                   help="connection attempts to the LiveKit server before giving up "
                        "(default %(default)s)")
    p.add_argument("--url", default=None, help=f"LiveKit server URL (default ${ENV_URL})")
    p.add_argument("--api-key", default=None, help=f"API key (default ${ENV_KEY})")
    p.add_argument("--api-secret", default=None, help=f"API secret (default ${ENV_SECRET})")
    add_allow_unconsented(p)
    add_badge(p)


def run_command(args: argparse.Namespace) -> int:
    """``facecast livekit``: run a worker until SIGINT / SIGTERM. Returns 0. Raises ValueError
    (one line) for missing credentials, the livekit extra not installed, or a server the
    worker could not connect to (after ``--max-retry`` attempts)."""
    from runtime.cli_args import EXIT_OK, backend_errors_as_input_errors, badge_from

    try:
        import livekit.agents  # noqa: F401
    except ImportError as exc:
        raise ValueError(f"facecast livekit needs the livekit extra (pip install "
                         f"'facecast[livekit]'): {exc}") from None
    config = WorkerConfig(agent_name=args.agent_name, avatar=args.avatar, size=args.size,
                          fps=args.fps, backend=args.backend, threads=args.threads,
                          max_sessions=args.max_sessions,
                          badge=badge_from(args), watermark=not args.no_watermark,
                          allow_unconsented=args.allow_unconsented_avatar,
                          http_port=args.http_port, max_retry=args.max_retry, url=args.url,
                          api_key=args.api_key,
                          api_secret=args.api_secret)
    config.check()
    livekit_credentials(config.url, config.api_key, config.api_secret)  # fail before loading
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with backend_errors_as_input_errors():  # no server / refused: the SDK's RuntimeError
        asyncio.run(serve_worker(config))
    return EXIT_OK
