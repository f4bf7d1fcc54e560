"""Microphone input through PyAudio (PortAudio): device listing, selection and live capture.

``Microphone`` opens one input device at its own default (native) rate, mono float32. Its
PortAudio callback hands each fixed 20 ms chunk, stamped with ``time.monotonic()`` when PortAudio
handed it over, to an asyncio event loop (``loop.call_soon_threadsafe``), into a bounded queue:
when the consumer falls behind, the oldest chunk is dropped and counted (``dropped``), so capture
never blocks and latency never grows without bound. The consumer awaits ``get()``; nothing
polls. Chunks stay at the device's rate: consumers resample with the project's one resampler
(``runtime.audio.resample.RateFollower``).

Errors are ``MicError`` (an ``OSError``, so the CLI prints it in one line): no such device (name
or index), a device without input channels, a device PortAudio cannot open (busy, unplugged,
sound server gone), and PyAudio itself missing. Each message names the device asked for and lists
the input devices that exist.

PortAudio and ALSA print start-up chatter straight to file descriptor 2 (probing JACK, missing
sound cards); it is silenced while PortAudio initialises and opens a stream. Debian's PortAudio
(19.6) reaches PulseAudio and PipeWire through ALSA's ``pulse`` / ``default`` devices.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Self

import numpy as np

CHUNK_SECONDS = 0.020
"""Duration of one captured chunk (20 ms)."""
QUEUE_CHUNKS = 50
"""Chunks held for the consumer (1 s); beyond it the oldest is dropped."""
STALL_S = 1.0
"""A consumer waiting this long for a chunk checks that the stream still runs (PortAudio tells
no one when a device goes away: its callback simply stops)."""
_PA_INVALID_CHANNELS = -9998


class MicError(OSError):
    """A microphone that cannot be found, has no input, or cannot be opened."""


@dataclass(frozen=True)
class InputDevice:
    """One PortAudio input device.

    Attributes:
        index: PortAudio device index (valid until the device list changes).
        name: the device's name as PortAudio reports it.
        channels: most input channels.
        default_rate: the device's default (native) sample rate, Hz.
        host_api: PortAudio host API (ALSA, PulseAudio, Core Audio, WASAPI, MME …).
        is_default: True for the host's default input device.
    """

    index: int
    name: str
    channels: int
    default_rate: float
    host_api: str
    is_default: bool = False

    def to_json(self) -> dict:
        return {"index": self.index, "name": self.name, "channels": self.channels,
                "default_rate": self.default_rate, "host_api": self.host_api,
                "default": self.is_default}


@dataclass(frozen=True)
class Chunk:
    """One captured chunk.

    Attributes:
        samples: float32 [n] mono in [-1, 1] at ``rate`` (n = 20 ms of samples).
        rate: sample rate, Hz.
        index: position of the chunk's first sample in the stream, samples at ``rate``.
        t_capture: ``time.monotonic()`` when PortAudio handed the chunk over (its last sample
            had just been captured, plus the device's input latency).
        overflow: PortAudio reported an input overflow before this chunk (samples lost in the
            driver, not in our queue).
    """

    samples: np.ndarray
    rate: int
    index: int
    t_capture: float
    overflow: bool = False


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """fd 2 to /dev/null for the duration (ALSA/JACK probing chatter from C). Python exceptions
    are unaffected; ``sys.stderr`` is flushed first."""
    from avatars.enroll import native_stderr_silenced

    os.environ.setdefault("JACK_NO_START_SERVER", "1")  # never spawn a JACK server by probing
    with native_stderr_silenced():
        yield


def _pyaudio():
    try:
        import pyaudio
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise MicError("microphone input needs PyAudio: pip install pyaudio==0.2.14 (on Linux "
                       "first: sudo apt install portaudio19-dev python3-dev gcc)") from exc
    return pyaudio


def open_portaudio():
    """A ``pyaudio.PyAudio`` (PortAudio initialised, start-up chatter silenced); the caller
    calls its ``terminate()``. Raises MicError if PyAudio is not installed."""
    pyaudio = _pyaudio()
    with _native_stderr_silenced():
        return pyaudio.PyAudio()


def _devices(pa) -> list[InputDevice]:
    try:
        default = pa.get_default_input_device_info()["index"]
    except OSError:
        default = -1
    out = []
    for i in range(pa.get_device_count()):
        info = pa.get_device_info_by_index(i)
        if int(info.get("maxInputChannels", 0)) < 1:
            continue
        api = pa.get_host_api_info_by_index(info["hostApi"])["name"]
        out.append(InputDevice(i, str(info["name"]), int(info["maxInputChannels"]),
                               float(info["defaultSampleRate"]), str(api), i == default))
    return out


def list_devices() -> list[InputDevice]:
    """The input devices PortAudio sees now (devices with no input channels are left out).

    Raises MicError if PyAudio is not installed."""
    pa = open_portaudio()
    try:
        return _devices(pa)
    finally:
        pa.terminate()


def find_device(spec: str | int | None) -> InputDevice:
    """``select_device`` on a PortAudio opened for the purpose (to fail on a bad device before
    anything heavy is loaded). Raises MicError as ``select_device``."""
    pa = open_portaudio()
    try:
        return select_device(pa, spec)
    finally:
        pa.terminate()


def describe(devices: list[InputDevice]) -> str:
    """``0 'name', 3 'pulse'`` — or a hint when there is none, for error messages."""
    if not devices:
        return ("no input devices at all (no sound card, or no access to one; on Linux check "
                "`arecord -l`, that the user is in the 'audio' group, and that PulseAudio or "
                "PipeWire runs)")
    return "input devices: " + ", ".join(f"{d.index} {d.name!r}" for d in devices)


def _all_names(pa) -> dict[int, dict]:
    return {i: pa.get_device_info_by_index(i) for i in range(pa.get_device_count())}


def select_device(pa, spec: str | int | None) -> InputDevice:
    """The input device named by ``spec`` among what ``pa`` (a ``pyaudio.PyAudio``) sees.

    Args:
        spec: None (the default input device), a device index (int, or a string of digits), or
            a case-insensitive substring of the name; an exact name wins over substrings.

    Raises MicError: no default device, index out of range, an index or name of a device
    without input channels, no name matching, or a name matching several devices.
    """
    devices = _devices(pa)
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        for d in devices:
            if d.is_default:
                return d
        if devices:
            return devices[0]
        raise MicError(f"no default input device: {describe(devices)}")
    if isinstance(spec, int) or str(spec).strip().isdigit():
        index = int(spec)
        for d in devices:
            if d.index == index:
                return d
        everything = _all_names(pa)
        if index in everything:
            raise MicError(f"device {index} {everything[index]['name']!r} has no input channels "
                           f"(an output device?); {describe(devices)}")
        raise MicError(f"no audio device with index {index}; {describe(devices)}")
    want = str(spec).strip().lower()
    exact = [d for d in devices if d.name.lower() == want]
    if exact:
        return exact[0]
    found = [d for d in devices if want in d.name.lower()]
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        matches = ", ".join(f"{d.index} {d.name!r}" for d in found)
        raise MicError(f"{spec!r} matches several input devices ({matches}): give more of the "
                       f"name or the index; {describe(devices)}")
    outputs = [str(info["name"]) for info in _all_names(pa).values()
               if want in str(info["name"]).lower()]
    if outputs:
        raise MicError(f"device {outputs[0]!r} has no input channels (an output device?); "
                       f"{describe(devices)}")
    raise MicError(f"no input device named like {spec!r}; {describe(devices)}")


class Microphone:
    """Live capture from one input device: 20 ms float32 mono chunks, pushed into the event loop.

    Capture runs at the device's default sample rate (``InputDevice.default_rate``) in
    PortAudio's callback thread, which hands each chunk to ``loop`` with
    ``call_soon_threadsafe`` into a bounded ``asyncio.Queue``; a device that refuses mono is
    opened with its channels and mixed down. ``start(loop)`` / ``close()``, or ``async with``.

    Args:
        device: see ``select_device`` (None: the default input).
        queue_chunks: chunks held for the consumer; the oldest is dropped beyond it.

    Attributes (after ``start``): ``device`` (``InputDevice``), ``rate`` (Hz),
    ``chunk_samples``, ``captured`` (chunks captured), ``dropped`` (chunks dropped because the
    consumer fell behind), ``overflows`` (chunks PortAudio flagged as preceded by lost input),
    ``input_latency_s`` (PortAudio's estimate for the open stream).

    Raises MicError from ``start`` (see ``select_device``; and a device PortAudio cannot open:
    busy, gone, unsupported format).
    """

    def __init__(self, device: str | int | None = None, queue_chunks: int = QUEUE_CHUNKS) -> None:
        if queue_chunks < 1:
            raise ValueError(f"queue_chunks must be at least 1, got {queue_chunks}")
        self.spec = device
        self.queue_chunks = queue_chunks
        self.device: InputDevice | None = None
        self.rate = 0
        self.chunk_samples = 0
        self.channels = 1
        self.captured = 0
        self.dropped = 0
        self.overflows = 0
        self.input_latency_s = 0.0
        self._pa = None
        self._stream = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # one slot more than the chunks kept: room for the end-of-stream marker (None)
        self._queue: asyncio.Queue[Chunk | None] = asyncio.Queue(queue_chunks + 1)
        self._ended = False
        self._next_index = 0
        self._pending_overflow = False

    # --- lifecycle ------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> Microphone:
        """Pick and open the device and start capturing into ``loop`` (None: the running loop;
        pass it when starting from another thread, e.g. an executor). Returns self."""
        self._loop = loop or asyncio.get_running_loop()
        pyaudio = _pyaudio()
        self._pa = open_portaudio()
        try:
            self.device = select_device(self._pa, self.spec)
            self.rate = round(self.device.default_rate)
            self.chunk_samples = max(1, round(self.rate * CHUNK_SECONDS))
            for channels in dict.fromkeys((1, min(2, self.device.channels),
                                           self.device.channels)):
                try:
                    with _native_stderr_silenced():
                        self._stream = self._pa.open(
                            format=pyaudio.paFloat32, channels=channels, rate=self.rate,
                            input=True, input_device_index=self.device.index,
                            frames_per_buffer=self.chunk_samples,
                            stream_callback=self._callback, start=False)
                    self.channels = channels
                    break
                except (OSError, ValueError) as exc:
                    if _pa_code(exc) == _PA_INVALID_CHANNELS and \
                            channels != self.device.channels:
                        continue
                    raise MicError(
                        f"cannot open input device {self.device.index} {self.device.name!r} at "
                        f"{self.rate} Hz: {_pa_reason(exc)} (busy, unplugged, or its sound "
                        f"server stopped?); {describe(_devices(self._pa))}") from exc
            with _native_stderr_silenced():
                self._stream.start_stream()
            self.input_latency_s = float(self._stream.get_input_latency())
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop capturing and release the device (safe to call twice, from any thread); a
        consumer's ``get()`` returns None once the queued chunks are taken."""
        stream, self._stream = self._stream, None
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.stop_stream()
            with contextlib.suppress(OSError):
                stream.close()
        pa, self._pa = self._pa, None
        if pa is not None:
            pa.terminate()
        self._hand_over(None)

    async def __aenter__(self) -> Self:
        return self.start()

    async def __aexit__(self, *exc) -> None:
        self.close()

    @property
    def active(self) -> bool:
        """True while the stream is open and running."""
        s = self._stream
        return s is not None and s.is_active()

    # --- PortAudio thread -------------------------------------------------------------------
    def _callback(self, data, frame_count, time_info, status):
        import pyaudio

        now = time.monotonic()
        x = np.frombuffer(data, np.float32)
        if self.channels > 1:
            x = x.reshape(-1, self.channels).mean(axis=1)
        chunk = Chunk(x.astype(np.float32, copy=True), self.rate, self._next_index, now,
                      bool(status & pyaudio.paInputOverflow) or self._pending_overflow)
        self._pending_overflow = False
        self._next_index += len(x)
        self.captured += 1
        if chunk.overflow:
            self.overflows += 1
        self._hand_over(chunk)
        return (None, pyaudio.paContinue)

    def _hand_over(self, item: Chunk | None) -> None:
        """Any thread: queue ``item`` on the loop (None: the end of the stream)."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is listening
            loop.call_soon_threadsafe(self._put, item)

    # --- event loop -------------------------------------------------------------------------
    def _put(self, item: Chunk | None) -> None:
        if item is None:
            if not self._queue.full():
                self._queue.put_nowait(None)
            return
        if self._queue.qsize() >= self.queue_chunks:
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(item)

    async def get(self) -> Chunk | None:
        """The oldest queued chunk, waiting for one. None once the microphone is closed (after
        the chunks queued before), or when no chunk came for ``STALL_S`` and the stream no
        longer runs (a device unplugged, its sound server gone). Event loop only."""
        while not self._ended:
            try:
                item = await asyncio.wait_for(self._queue.get(), STALL_S)
            except TimeoutError:
                if self.active:
                    continue
                item = None
            if item is not None:
                return item
            self._ended = True
        return None

    def drain(self) -> list[Chunk]:
        """Every chunk queued now, oldest first, without waiting (event loop only)."""
        out = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is None:
                self._ended = True
                break
            out.append(item)
        return out


def _pa_code(exc: BaseException) -> int | None:
    """PortAudio's error code in a PyAudio ``OSError`` (args are (code, text))."""
    return next((a for a in exc.args if isinstance(a, int)), None)


def _pa_reason(exc: BaseException) -> str:
    code = _pa_code(exc)
    text = next((a for a in exc.args if isinstance(a, str)), "") or type(exc).__name__
    return f"{text} (PortAudio error {code})" if code is not None else text


def format_table(devices: list[InputDevice]) -> str:
    """The devices as an aligned text table (``facecast devices``), or a hint when none."""
    if not devices:
        return describe(devices)
    rows = [("index", "name", "channels", "rate", "host API", "")]
    rows += [(str(d.index), d.name, str(d.channels), f"{d.default_rate:g}", d.host_api,
              "default" if d.is_default else "") for d in devices]
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
