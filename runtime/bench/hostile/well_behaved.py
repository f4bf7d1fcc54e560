"""The one session that behaves while the cases run, and what it received: the campaign's
measure of whether hostile clients cost anyone else anything."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import numpy as np

from runtime.bench.harness import Prompt, speak_prompts
from runtime.bench.hostile.clients import err
from runtime.bench.hostile.model import TARGET_FPS, WINDOW_S

SPEAK_SENTENCES = ("Hello, I am the well behaved session and I keep talking.",
                   "Nothing you send to this server should stop me from speaking.",
                   "The quick brown fox jumps over the lazy dog.")
"""What the well-behaved session says through ``speak`` when no Asterisk prompts are installed."""


class WellBehaved:
    """The one session that behaves: media up, speaking the whole campaign, on its own thread
    and event loop (the campaign's own work cannot delay what it receives).

    Args:
        ws_url: the server's ``/ws``. prompts: Asterisk prompts to push in real time (empty:
            ``speak`` ``SPEAK_SENTENCES`` through the server's TTS instead).
    """

    def __init__(self, ws_url: str, prompts: list[Prompt]) -> None:
        self.url = ws_url
        self.prompts = prompts
        self.client = None
        self.speak_error: str | None = None
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="hostile-well-behaved")
        self._speaker: asyncio.Task | None = None

    async def _on_loop(self, coro, timeout: float):
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return await asyncio.wait_for(asyncio.wrap_future(fut), timeout)

    async def start(self) -> None:
        """Connect, start media, wait for video, start speaking. Raises RuntimeError when the
        session does not come up."""
        self.thread.start()
        try:
            await self._on_loop(self._start(), 90)
        except (OSError, TimeoutError, ConnectionError) as exc:
            raise RuntimeError(f"the well-behaved session did not start: {exc}") from exc

    async def _start(self) -> None:
        from runtime.serve.client import AvatarClient

        self.client = AvatarClient(self.url)
        await self.client.__aenter__()
        if self.client.ready.get("type") != "ready":
            raise ConnectionError(f"refused: {self.client.ready}")
        await self.client.start_media()
        await self.client.wait_video(10, 60)
        self._speaker = asyncio.get_running_loop().create_task(self._speak())

    async def _speak(self) -> None:
        rng = np.random.default_rng(0)
        try:
            if self.prompts:
                while True:
                    await speak_prompts(self.client, self.prompts, 30.0, rng, [])
            for k in range(1 << 30):
                await self.client.speak(SPEAK_SENTENCES[k % len(SPEAK_SENTENCES)])
                await asyncio.sleep(4.0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            self.speak_error = f"{type(exc).__name__}: {str(exc)[:200]}"

    async def stop_speaking(self) -> None:
        """Stop pushing speech (the session stays connected)."""
        async def stop() -> None:
            if self._speaker is not None:
                self._speaker.cancel()
                with contextlib.suppress(BaseException):
                    await self._speaker
        await self._on_loop(stop(), 10)

    def connected(self) -> bool:
        """Is the session's WebSocket still open?"""
        from websockets.protocol import State

        ws = getattr(self.client, "ws", None)
        return ws is not None and ws.state is State.OPEN

    async def close_code(self, timeout: float) -> int | None:
        """The close code the server sent the session, waiting up to ``timeout`` seconds for
        it; None if still open."""
        async def wait() -> int | None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.client.ws.wait_closed(), timeout)
            return None if self.connected() else self.client.ws.close_code
        return await self._on_loop(wait(), timeout + 5)

    async def close(self) -> None:
        """Close the client, stop the thread."""
        async def close() -> None:
            if self.client is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.client.close(), 10)
            rest = [x for x in asyncio.all_tasks() if x is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)
        if self.thread.is_alive():
            with contextlib.suppress(Exception):
                await self._on_loop(close(), 20)
            self.loop.call_soon_threadsafe(self.loop.stop)
            await asyncio.to_thread(self.thread.join, 5)

    def arrivals(self) -> np.ndarray:
        """When each video frame arrived (monotonic s), so far."""
        video = list(self.client.received.video) if self.client else []
        return np.array([a for a, _p, _tb in video], dtype=float)

    def fps(self, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
        """Frames received per ``WINDOW_S`` window over [t0, t1) (at least one window): (fps of
        each window, the windows' edges)."""
        n = max(1, int((t1 - t0) // WINDOW_S))
        edges = t0 + np.arange(n + 1) * WINDOW_S
        return np.histogram(self.arrivals(), bins=edges)[0] / WINDOW_S, edges

    def figures(self, t0: float, t1: float, spans: list[tuple[str, float, float]]) -> dict:
        """What the session received: frames in all, frames per ``WINDOW_S`` window over
        [t0, t1) (min, mean), the windows under ``TARGET_FPS`` with the cases that ran then
        (``spans``: (name, start, end) monotonic s), the errors the server sent it."""
        fps, edges = self.fps(t0, t1)
        low = []
        for i in np.flatnonzero(fps < TARGET_FPS):
            lo, hi = edges[i], edges[i + 1]
            low.append({"t_s": round(float(lo - t0), 1), "fps": float(fps[i]),
                        "cases": [name for name, a, b in spans if a < hi and b > lo]})
        events = list(self.client.received.events) if self.client else []
        return {"frames": len(self.arrivals()), "frames_measured": int(fps.sum() * WINDOW_S),
                "windows": len(fps), "window_s": WINDOW_S, "target_fps": TARGET_FPS,
                "fps_min": float(fps.min()), "fps_mean": round(float(fps.mean()), 2),
                "windows_below_target": len(low), "below_target": low[:40],
                "errors": [err(m) for _t, m in events if m.get("type") == "error"][:20],
                "speech": "asterisk prompts (audio)" if self.prompts else "speak (server TTS)",
                "speak_error": self.speak_error}
