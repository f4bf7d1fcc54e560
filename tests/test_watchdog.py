"""The pipeline watchdog (``runtime.live.scheduler``): a renderer call that hangs for 3 s in the middle of
an utterance is detected after 2 s, the worker and the clock are restarted, frames resume, and
the queued speech plays to its end (``speech_ended`` with the full ``played_ms``); restarts show
in ``/healthz`` and ``/metrics``. Also the worker thread and a clock that dies, without a server."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from runtime.live.monotonic import VirtualClock
from runtime.live.scheduler import MAX_ABANDONED, Scheduler, Worker
from runtime.serve.client import AvatarClient
from runtime.serve.server import ServerConfig, serve_in_thread

PROMPT = Path("/usr/share/asterisk/sounds/en/demo-enterkeywords.g722")


class HangOnce:
    """Wraps a renderer: once ``arm()`` is called, the next ``render`` blocks for ``seconds``."""

    def __init__(self, renderer, seconds: float) -> None:
        self.inner = renderer
        self.seconds = seconds
        self.armed = threading.Event()
        self.hung_at: float | None = None
        self.resumed_at: float | None = None

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def arm(self) -> None:
        self.armed.set()

    def render(self, sources, keypoints):
        if self.armed.is_set():
            self.armed.clear()
            self.hung_at = time.monotonic()
            time.sleep(self.seconds)
            self.resumed_at = time.monotonic()
        return self.inner.render(sources, keypoints)


def _get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.read()
    except urllib.error.HTTPError as e:  # 503 while stalled
        return e.read()


def test_a_hung_render_is_restarted_and_queued_speech_plays_to_the_end() -> None:
    from runtime.audio.decode import load_audio

    if not PROMPT.is_file():
        pytest.skip("asterisk-core-sounds-en-g722 is not installed")
    speech, rate = load_audio(PROMPT)
    handle = serve_in_thread(ServerConfig(port=0, size=256))
    hang = HangOnce(handle.server.scheduler.renderer, 3.0)
    handle.server.scheduler.renderer = hang
    health_during: list[dict] = []

    async def main():
        async with AvatarClient(handle.ws_url) as c:
            await c.start_media()
            await c.wait_video(10)
            step = rate // 25
            for i in range(0, len(speech), step):  # all queued at once, faster than real time
                await c.send_audio(speech[i:i + step], rate, utt_id="queued")
            await c.send({"type": "audio_end", "id": "queued"})
            await c.wait_for(lambda m: m["type"] == "speech_started", 10)
            await asyncio.sleep(0.5)
            hang.arm()
            t_arm = time.monotonic()
            while time.monotonic() - t_arm < 2.6:  # watch /healthz through the stall
                health_during.append(json.loads(
                    await asyncio.to_thread(_get, handle.url + "/healthz")))
                await asyncio.sleep(0.2)
            ended = await c.wait_for(lambda m: m["type"] == "speech_ended", 20)
            await asyncio.sleep(1.0)
            return c, ended

    try:
        c, ended = asyncio.run(asyncio.wait_for(main(), 90))
        health = json.loads(_get(handle.url + "/healthz"))
        metrics = _get(handle.url + "/metrics").decode()
    finally:
        handle.stop()

    assert hang.hung_at is not None and hang.resumed_at is not None
    # the queued utterance played to its end, not cut by the restart
    assert ended["id"] == "queued" and not ended["interrupted"]
    assert abs(ended["played_ms"] - ended["duration_ms"]) <= 1
    assert abs(ended["duration_ms"] - len(speech) / rate * 1000) < 30
    # the stall was seen and the pipeline restarted once
    assert any(h["status"] == "stalled" for h in health_during) or \
        any(h["seconds_since_frame"] > 1.5 for h in health_during), health_during
    assert health["watchdog_restarts"] == 1 and health["status"] == "ok", health
    assert "facecast_watchdog_restarts_total 1.0" in metrics
    # frames resumed after the restart, before the hung call returned (restart at ~2 s, not 3 s)
    arrivals = np.array([t for t, _p, _tb in c.received.video])
    after = arrivals[arrivals > hang.hung_at + 2.0]
    assert len(after) > 25, "video did not resume"
    assert after[0] < hang.resumed_at, (after[0] - hang.hung_at, hang.resumed_at - hang.hung_at)
    # the received video has a single gap (the stall), about 2 s, not 3 s
    gaps = np.diff(arrivals)
    assert gaps.max() < 2.9, gaps.max()
    # audio resumed too: the voice kept coming after the stall
    loud_after = [t for t, _p, x in c.received.audio
                  if t > hang.hung_at + 2.0 and np.sqrt(np.mean(x.astype(np.float64) ** 2)) > 0.01]
    assert loud_after, "no voice after the restart"


def test_worker_runs_calls_in_order_and_reports_errors() -> None:
    w = Worker("test-worker")
    out: list[int] = []
    futs = [w.submit(out.append, i) for i in range(5)]
    for f in futs:
        f.result(5)
    assert out == [0, 1, 2, 3, 4]
    bad = w.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        bad.result(5)
    assert w.submit(lambda: 7).result(5) == 7  # still alive after an error
    assert w.thread.daemon
    w.shutdown()
    w.thread.join(5)
    assert not w.thread.is_alive()


class _FakeSession:
    closed = False
    id = "fake"


def test_watchdog_restarts_a_dead_clock_and_gives_up_on_stuck_workers() -> None:
    """Without a server, on virtual time: every tick hangs, so the watchdog restarts the
    pipeline every 0.75 s (stall_s 0.5, a look every 0.25 s) until MAX_ABANDONED workers are
    stuck; then it stops restarting and the scheduler reports gave_up / stalled. Once the stuck
    threads return it is no longer given up, and a clock task that dies is restarted too."""

    async def main():
        clock = VirtualClock(idle_s=0.1)  # a hung tick holds time up 0.1 s (real) per look
        s = Scheduler(renderer=None, fps=25, stall_s=0.5, clock=clock)
        s.sessions.append(_FakeSession())
        release = threading.Event()
        # every tick hangs until released: each restart abandons one more stuck worker
        s._tick = lambda sessions, render: release.wait(30) and []  # type: ignore[method-assign]
        s.start()
        await clock.advance(0.75 * MAX_ABANDONED + 0.5)
        gave_up, restarts, stalled = s.gave_up, s.restarts, s.stalled()
        release.set()
        stuck = list(s._abandoned)
        await asyncio.gather(*(asyncio.to_thread(w.thread.join, 5) for w in stuck))
        await clock.advance(0.1)
        recovered = not s.gave_up
        # a clock that dies is restarted too
        s._task.cancel()
        await clock.advance(0.5)
        alive = s._task is not None and not s._task.done()
        await s.stop()
        return gave_up, restarts, stalled, recovered, alive, s.restarts

    gave_up, restarts, stalled, recovered, alive, total = asyncio.run(main())
    assert gave_up and stalled
    assert restarts == MAX_ABANDONED
    assert recovered  # the stuck threads returned: no longer given up
    assert alive and total == restarts + 1
