"""What ``facecast bench latency`` and ``facecast bench soak`` share: a ``facecast serve`` child
process on loopback, the held-out speech they push into it in real time, and the readings of
what their aiortc client peers (``runtime.serve.client.AvatarClient``) received: the wire clock,
the voice laid out on its pts, the darkness of the mouth, and the A/V offset and clock drift
between the two tracks.

Everything is measured on the received side or from ``/proc``; nothing here asserts a timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import numpy as np

ASTERISK_DIR = Path("/usr/share/asterisk/sounds/en")
"""Where ``asterisk-core-sounds-en-g722`` installs its prompts."""
HELDOUT = resources.files("runtime.evals") / "heldout.txt"
"""The held-out Asterisk prompt list (package data; the same file training excludes)."""
CHUNK_S = 0.02
"""Seconds of speech per ``audio`` message pushed to the server."""
WARMUP_S = 3.0
"""Seconds of idle received before speech starts (the baseline of the mouth-motion detector)."""
VIDEO_RTP_RATE = 90000.0
"""RTP clock of the received video pts, Hz."""
AUDIO_RTP_RATE = 48000.0
"""RTP clock of the received audio pts (Opus), Hz; also the received audio's sample rate."""

Prompt = tuple[str, np.ndarray, int]
"""(name, float32 [n] mono samples in [-1, 1], sample rate Hz) of one spoken prompt."""
Onset = tuple[float, float, str]
"""(onset send time s, prompt end time s, prompt name), ``time.monotonic`` seconds."""


def heldout_prompts(limit: int | None = None) -> list[Path]:
    """Held-out Asterisk prompts (``runtime/evals/heldout.txt``) that exist on this machine,
    skipping single digits/letters; raises FileNotFoundError if there are none."""
    names: list[str] = []
    if HELDOUT.is_file():
        names = [ln.strip() for ln in HELDOUT.read_text().splitlines()
                 if ln.strip() and not ln.startswith("#")]
    paths = [ASTERISK_DIR / f"{n}.g722" for n in names
             if not n.startswith(("digits/", "letters/", "phonetic/"))]
    paths = [p for p in paths if p.is_file()]
    if not paths:
        raise FileNotFoundError("no held-out Asterisk prompts found: apt-get install "
                                "asterisk-core-sounds-en-g722")
    return paths[:limit] if limit else paths


def sentence_prompts(limit: int = 24) -> list[Prompt]:
    """The held-out prompts of 1–5 s (sentences), decoded, at most ``limit`` of them.

    Raises:
        FileNotFoundError: no held-out Asterisk prompts (``heldout_prompts``).
    """
    from runtime.audio.decode import load_audio

    prompts = [(p.stem, *load_audio(p)) for p in heldout_prompts()]
    return [(n, a, r) for n, a, r in prompts if 1.0 <= len(a) / r <= 5.0][:limit]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_stats(pid: int) -> tuple[float, float]:
    """(CPU seconds utime+stime, RSS MiB) of a process, from /proc.

    Raises:
        FileNotFoundError: no such process (or not Linux).
    """
    ticks = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return cpu, rss


def get_json(url: str) -> dict:
    """GET ``url`` (5 s timeout) and parse its JSON body.

    Raises:
        OSError: unreachable, or an HTTP error status (``urllib.error.HTTPError``).
    """
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


@contextlib.contextmanager
def serve_process(port: int, size: int = 256, avatar: str = "default", backend: str = "auto",
                  extra: tuple[str, ...] = (), log_path: Path | None = None,
                  timeout: float = 60.0) -> Iterator[subprocess.Popen]:
    """Run ``facecast serve`` on 127.0.0.1:``port`` as a child process until the block ends
    (the one way the benches start a server).

    Yields the ``Popen`` once ``/healthz`` answers; terminates it (then kills it) on exit.
    ``extra``: more ``facecast serve`` arguments. ``log_path``: where its stderr goes
    (None: discarded).

    Raises:
        RuntimeError: the server exited or did not answer within ``timeout`` seconds.
    """
    cmd = [sys.executable, "-m", "runtime.cli", "serve", "--port", str(port), "--size", str(size),
           "--avatar", avatar, "--backend", backend, *extra]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))  # our own imports
    err = open(log_path, "ab") if log_path is not None else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                get_json(f"http://127.0.0.1:{port}/healthz")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("facecast serve did not start") from None
                time.sleep(0.2)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if log_path is not None:
            err.close()


async def speak_prompts(client, prompts: list[Prompt], seconds: float,
                        rng: np.random.Generator, onsets: list[Onset]) -> None:
    """Push prompts through ``client`` (an ``AvatarClient``) in real time, ``CHUNK_S`` per
    ``audio`` message and 0.6–1.2 s of silence between prompts, until ``seconds`` have passed.

    Appends one ``Onset`` per prompt to ``onsets``: when the chunk holding the prompt's speech
    onset (first 10 ms window within 30 dB of its peak) was sent.
    """
    end = time.monotonic() + seconds
    k = 0
    while time.monotonic() < end:
        name, audio, rate = prompts[k % len(prompts)]
        k += 1
        step = int(CHUNK_S * rate)
        env = np.array([np.sqrt(np.mean(audio[i:i + rate // 100] ** 2) + 1e-12)
                        for i in range(0, len(audio), rate // 100)])
        onset = int(np.argmax(20 * np.log10(env) > 20 * np.log10(env.max()) - 30)) * (rate // 100)
        start = time.monotonic()
        uid = f"p{k}"
        for n, i in enumerate(range(0, len(audio), step)):
            due = start + n * CHUNK_S
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if i <= onset < i + step:
                onsets.append((time.monotonic(), start + len(audio) / rate + 0.5, name))
            await client.send_audio(audio[i:i + step], rate, uid)
        await client.send({"type": "audio_end", "id": uid})
        await asyncio.sleep(len(audio) / rate - (time.monotonic() - start) + rng.uniform(0.6, 1.2))


def mouth_box(avatar_name: str = "default") -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) full-image pixels around the avatar's lips, extended down by 0.25 IOD
    for the opening jaw (the crop the clients keep of each received frame)."""
    import avatars
    from avatars import topology as T
    from avatars.rig import Rig
    from runtime.compositor import Compositor

    av_ = avatars.load(avatar_name)
    rig = Rig.for_avatar(av_, 256)
    lips = sorted({i for pair in T.CENTRAL_INNER_LIP_PAIRS for i in pair} | {61, 291})
    pts = Compositor(av_, 256).crop_to_image(rig.neutral[lips, :2])
    iod = rig.iod * av_.crop_box[2] / 256
    x0, y0 = pts.min(axis=0) - np.array([0.05, 0.08]) * iod
    x1, y1 = pts.max(axis=0) + np.array([0.05, 0.25]) * iod
    return int(x0), int(y0), int(np.ceil(x1)), int(np.ceil(y1))


def darkness(frame: np.ndarray) -> float:
    """Mean darkness of an RGB image (uint8 [h, w, 3], a mouth-box crop): 255 − mean luma
    (BT.601), grey levels 0–255. The open mouth shows the dark cavity."""
    grey = frame[..., 0] * 0.299 + frame[..., 1] * 0.587 + frame[..., 2] * 0.114
    return float(255.0 - grey.mean())


def wire_arrivals(received) -> tuple[list[tuple[float, int]], list[tuple[float, int]]]:
    """(video, audio): (wire arrival s, pts) per received frame of a ``Received``, in its order.

    The wire clock is when a frame's last RTP packet arrived (``Received.wire``): what the
    server sent, before the aiortc receiver's unequal audio/video buffering; a frame missing
    from ``wire`` keeps its release time.
    """
    video = [(received.wire.get(("video", p), t), p) for t, p, _tb in received.video]
    audio = [(received.wire.get(("audio", p), t), p) for t, p, _x in received.audio]
    return video, audio


def pts_timeline(entries: list[tuple[float, int]], rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Map pts to arrival time through a least-squares line (removes network and decoder
    jitter, keeps the stream's timing as sent).

    Args:
        entries: (arrival s, pts in 1/``rate`` s) per frame, at least two.
        rate: the pts clock, Hz (``VIDEO_RTP_RATE``, ``AUDIO_RTP_RATE``).

    Returns:
        (float64 [n] pts in seconds, float64 [n] mapped arrival time s).
    """
    arrival = np.array([e[0] for e in entries])
    pts = np.array([float(e[1]) for e in entries]) / rate
    a, b = np.polyfit(pts, arrival, 1)
    return pts, a * pts + b


def audio_on_pts(audio: list) -> tuple[np.ndarray, int]:
    """Received audio frames laid out on their own pts, so a lost or dropped frame leaves a gap
    instead of pulling everything after it earlier (concatenating frames would shift the voice
    20 ms per missing frame and read as the mouth lagging by as much).

    Args:
        audio: (arrival s, pts in 1/48000 s, float32 [n] samples at 48 kHz) per received
            frame, in arrival order (``Received.audio``; Opus's RTP clock is 48 kHz).

    Returns:
        (float32 [N] samples from the first frame's pts on, zeros where nothing arrived; the
        number of samples missing inside that span). A frame whose pts repeats an earlier
        one's overwrites it.
    """
    if not audio:
        return np.zeros(0, np.float32), 0
    first = int(audio[0][1])
    end = max(int(p) - first + len(x) for _t, p, x in audio)
    out = np.zeros(end, np.float32)
    filled = np.zeros(end, bool)
    for _t, p, x in audio:
        i = int(p) - first
        if i < 0:
            continue
        out[i:i + len(x)] = x
        filled[i:i + len(x)] = True
    return out, int(end - filled.sum())


def av_offset(video_t: np.ndarray, mouth: np.ndarray, audio_t: np.ndarray,
              audio: np.ndarray, t0: float, t1: float) -> tuple[float, float]:
    """Offset of the mouth's darkness against the voice's envelope by cross-correlation
    (``runtime.evals.sync``) in the window [t0, t1), on a 10 ms grid, searched from −400 ms
    to +1000 ms.

    Args:
        video_t: float64 [n] time of each video frame (monotonic s), mouth: float [n] its
            mouth-box darkness.
        audio_t: float64 [m] time of each received audio frame; only ``audio_t[0]`` is used:
            ``audio`` starts there, one sample per 1/48000 s (``audio_on_pts``).
        audio: float32 [N] the received voice at 48 kHz, laid out on its pts.
        t0, t1: the window, monotonic s.

    Returns:
        (offset ms, positive = the mouth lags the voice; correlation at that lag), both
        rounded; (NaN, NaN) when the window holds nothing to correlate.
    """
    from runtime.evals.sync import audio_envelope, lagged_correlation, parabolic_peak

    hop = 0.01
    grid = np.arange(t0, t1, hop)
    env_all = audio_envelope(audio, 48000, hop)
    env = np.interp(grid, audio_t[0] + np.arange(len(env_all)) * hop, env_all,
                    left=np.nan, right=np.nan)
    gap = np.interp(grid, video_t, mouth, left=np.nan, right=np.nan)
    c = lagged_correlation(gap, env, 40, 100)
    if not np.isfinite(c).any():
        return float("nan"), float("nan")
    i = int(np.nanargmax(c))
    frac = parabolic_peak(c[i - 1], c[i], c[i + 1]) if 0 < i < len(c) - 1 else 0.0
    return round((i - 40 + frac) * hop * 1000, 1), round(float(c[i]), 3)


def clock_drift_ms(video: list[tuple[float, int]], audio: list[tuple[float, int]],
                   t0: float, t1: float, window: float = 60.0) -> float:
    """Change of the video track's timing against the audio track's between the first and the
    last ``window`` seconds of [t0, t1), ms (positive: video fell behind).

    Each track's lag is wire arrival − pts time (video pts at 90 kHz, audio at 48 kHz, as RTP
    carries them); the median of (video lag − audio lag) is taken in each window. The tracks'
    RTP origins are arbitrary, so only the change means anything: how far one stream's clock
    drifted from the other's. Content-free, unlike the cross-correlation offsets. NaN when a
    window holds no frame of one track.

    Args:
        video, audio: (wire arrival s, pts) per received frame.
    """
    v = np.array([(t, p / VIDEO_RTP_RATE) for t, p in video])
    a = np.array([(t, p / AUDIO_RTP_RATE) for t, p in audio])
    w = min(window, (t1 - t0) / 2)

    def rel(lo: float, hi: float) -> float:
        vs = v[(v[:, 0] >= lo) & (v[:, 0] < hi)]
        as_ = a[(a[:, 0] >= lo) & (a[:, 0] < hi)]
        if not len(vs) or not len(as_):
            return float("nan")
        return float(np.median(vs[:, 0] - vs[:, 1]) - np.median(as_[:, 0] - as_[:, 1]))

    return round((rel(t1 - w, t1) - rel(t0, t0 + w)) * 1000, 1)
