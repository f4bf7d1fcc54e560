"""Give back what a closed WebRTC peer held, promptly, in a process that runs for days.

aiortc's ``RTCPeerConnection`` and its ``RTCRtpSender`` s sit in reference cycles, so when a
peer closes, its codecs are freed only by a generation-2 collection of CPython's cyclic garbage
collector, which a steady server runs rarely (every few tens of minutes in ``facecast bench
soak``). Until then each closed peer keeps its libvpx encoder (frame buffers) and its Opus
encoder, whose PyAV ``AudioResampler`` owns an FFmpeg filter graph with its own slice threads
(two on a 2-core machine, found with ``gdb -batch -ex "thread apply all bt"`` on the server: the
idle threads wait in libavutil's thread pool). Over an hour of reconnects that showed as
16 → 37 threads (most of that hour's RSS climb was a separate PyAV 17.0.1 leak, fixed by
pinning av 17.1.0).

``reclaim()`` runs a full collection and then asks glibc to return free heap pages to the
system (``malloc_trim(0)``, glibc only; elsewhere it is skipped). It is called once after each
session closes, not per frame: a full collection of this process takes a few milliseconds to
tens of milliseconds (``seconds`` in the result), once per disconnect.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import time
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Reclaimed:
    """What one ``reclaim()`` did.

    Attributes:
        unreachable: objects the collector found unreachable (``gc.collect()``'s return value).
        trimmed: True when glibc's ``malloc_trim`` released memory to the system.
        seconds: wall time of the whole call, seconds.
    """

    unreachable: int
    trimmed: bool
    seconds: float


@lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's ``malloc_trim`` as a ctypes function, or None where there is none (musl, macOS,
    Windows)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


def reclaim() -> Reclaimed:
    """Full cyclic garbage collection, then ``malloc_trim(0)`` where glibc has it.

    Runs on the calling thread and holds the GIL for the collection. Never raises.
    """
    t0 = time.perf_counter()
    unreachable = gc.collect()
    trim = _malloc_trim()
    trimmed = bool(trim(0)) if trim is not None else False
    return Reclaimed(unreachable, trimmed, time.perf_counter() - t0)
