"""The wall clock the scheduler paces itself by, behind a small interface, so tests can run on
virtual time (``STYLE.md`` item 5).

``MonotonicClock`` is two calls: ``now()`` (seconds, monotonic) and ``await sleep(seconds)``.
``SystemClock`` is the real one (``time.monotonic`` and ``asyncio.sleep``: the same clock as the
event loop's ``loop.time()``); ``VirtualClock`` is a test clock whose time moves only when a test
calls ``advance``. Only pacing and stall detection read this clock; media timestamps never do:
they come from the sample counter (``runtime.clock.AvClock``).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from typing import Protocol


class MonotonicClock(Protocol):
    """What the scheduler needs of a clock.

    ``now()``: seconds (float) on a monotonic scale whose origin is arbitrary.
    ``sleep(seconds)``: return once ``now()`` has moved on by ``seconds`` (≤ 0: just yield to the
    event loop).
    """

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: ``time.monotonic()`` seconds and ``asyncio.sleep``."""

    def now(self) -> float:
        """``time.monotonic()``, seconds."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """``asyncio.sleep(max(seconds, 0))``."""
        await asyncio.sleep(max(seconds, 0.0))


class VirtualClock:
    """A clock for tests: time stands still until ``advance`` moves it, so a scheduler's hundred
    ticks run in milliseconds and a "2 s stall" takes no real time.

    Tasks that ``sleep`` on it wake in deadline order as ``advance`` passes their deadlines. After
    each wake-up ``advance`` lets the event loop run until every task that uses this clock (has
    read ``now()`` or slept on it), other than the one advancing, is asleep on it again or done
    (a task waiting for a worker thread is waited for too), so what happens between two
    deadlines happens before time moves on. A task that stays busy for ``idle_s`` real seconds
    without sleeping (one waiting for a worker thread that hangs on purpose) is left behind and
    time moves on without it. ``spend`` moves time from any thread without waking anyone: work
    that takes virtual time (a slow tick). Use one instance within one event loop.

    Args:
        start: the initial ``now()``, seconds.
        idle_s: real seconds ``advance`` waits for a busy task before moving on.
    """

    def __init__(self, start: float = 0.0, idle_s: float = 1.0) -> None:
        self.idle_s = idle_s
        self._now = float(start)
        self._lock = threading.Lock()  # spend() may be called from a worker thread
        self._seq = itertools.count()
        self._sleepers: list[tuple[float, int, asyncio.Future, asyncio.Task]] = []
        self._tasks: set[asyncio.Task] = set()
        self._asleep: set[asyncio.Task] = set()
        self._changed = asyncio.Event()

    def now(self) -> float:
        """Virtual seconds. Callable from any thread."""
        self._join()
        with self._lock:
            return self._now

    def _join(self) -> asyncio.Task | None:
        """Count the calling task (if on an event loop) among those ``advance`` waits for."""
        try:
            task = asyncio.current_task()
        except RuntimeError:  # a worker thread: no loop
            return None
        if task is not None and task not in self._tasks:
            self._tasks.add(task)
            task.add_done_callback(self._task_done)
        return task

    def spend(self, seconds: float) -> None:
        """Move time forward by ``seconds`` without waking sleepers (the next ``advance`` wakes
        those now due). Thread-safe; raises ValueError for negative ``seconds``."""
        if seconds < 0:
            raise ValueError(f"time cannot go back ({seconds} s)")
        with self._lock:
            self._now += seconds

    async def sleep(self, seconds: float) -> None:
        """Wait until ``advance`` passes now() + ``seconds``; ≤ 0 yields to the loop once."""
        task = self._join()
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now() + seconds, next(self._seq), fut, task))
        if task is not None:
            self._asleep.add(task)
        self._changed.set()
        try:
            await fut
        finally:
            self._asleep.discard(task)

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking every sleeper whose deadline passes, in
        order, and letting the loop run what each wake-up starts. Raises ValueError for
        negative ``seconds``."""
        if seconds < 0:
            raise ValueError(f"time cannot go back ({seconds} s)")
        target = self.now() + seconds
        await self._settle()
        while True:
            while self._sleepers and self._sleepers[0][2].done():  # cancelled sleeps
                heapq.heappop(self._sleepers)
            if not self._sleepers or self._sleepers[0][0] > max(target, self.now()):
                break
            deadline, _, fut, task = heapq.heappop(self._sleepers)
            with self._lock:
                self._now = max(self._now, deadline)
            self._asleep.discard(task)
            fut.set_result(None)
            await self._settle()
        with self._lock:
            self._now = max(self._now, target)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self._asleep.discard(task)
        self._changed.set()

    async def _settle(self) -> None:
        """Run the loop until every task of this clock sleeps on it or is done (or one stays
        busy for ``idle_s`` real seconds)."""
        me = asyncio.current_task()
        while True:
            self._changed.clear()
            await asyncio.sleep(0)
            busy = [t for t in self._tasks if t is not me and t not in self._asleep]
            if not busy:
                return
            if not self._changed.is_set():
                try:
                    await asyncio.wait_for(self._changed.wait(), self.idle_s)
                except TimeoutError:
                    return
