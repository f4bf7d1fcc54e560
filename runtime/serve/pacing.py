"""Flow control of one connection's control messages: a token bucket that delays (never
refuses) messages beyond a sustained rate.

Parsing, base64 decoding and resampling run on the event loop, in the process whose tick thread
renders every session; a client that floods messages (10,000 ``audio_end`` s at once) would take
that time from everyone's frames. Delaying its next read is backpressure: its messages wait in
its own TCP window, and a well-behaved client never notices (streaming audio in 20 ms chunks is
50 messages a second).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

MESSAGES_PER_S = 200.0
"""Sustained messages a second one connection is served at."""
MESSAGE_BURST = 400.0
"""Messages one connection may send at once before pacing starts."""


@dataclass
class MessagePacer:
    """Token bucket (``rate`` tokens a second, at most ``burst`` held; one token a message).

    Attributes:
        rate: sustained messages per second. burst: bucket size, messages.
        clock: monotonic seconds (injected by tests).
    """

    rate: float = MESSAGES_PER_S
    burst: float = MESSAGE_BURST
    clock: Callable[[], float] = time.monotonic
    _tokens: float | None = field(default=None, repr=False)
    _last: float = field(default=0.0, repr=False)

    def delay(self) -> float:
        """Take one message's token; returns the seconds to wait before handling that message
        (0 while within the burst). The wait is already accounted: call once per message."""
        now = self.clock()
        if self._tokens is None:  # first message: a full bucket
            self._tokens, self._last = self.burst, now
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate) - 1.0
        self._last = now
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate
