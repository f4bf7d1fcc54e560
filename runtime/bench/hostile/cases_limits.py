"""Limits cases: what the server holds against a client that asks for too much (long text,
utterance and stream caps, a paced flood of messages, admission and controller bursts, avatar
spellings that could grow a cache, an interrupt during synthesis)."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import quote

import numpy as np

from runtime.bench.hostile.clients import (
    Probe,
    audio_msg,
    connected,
    err,
    health,
    open_stream,
    pcm,
    resources,
    settled,
    speak_msg,
)
from runtime.bench.hostile.model import Case, Outcome, Target, case_of

FLOOD_MESSAGES = 2000
"""``audio_end`` messages the pacing case sends at once."""
PACED_SLACK = 0.8
"""The pacing case's flood must take at least this share of the time pacing allows."""


async def _speak_5000_chars(t: Target) -> Outcome:
    """A 5,000-character ``speak`` is refused with ``audio_buffer_full`` within 1 s, before
    synthesis, and the server's RSS does not jump by over 100 MB."""
    text = ("The quick brown fox jumps over the lazy dog. " * 120)[:5000]
    rss0 = resources(t)["rss_mb"]
    async with connected(t) as (p, _ready):
        t0 = time.monotonic()
        reply = await p.ask(speak_msg(text), ("error",), 2.5)
        dt = time.monotonic() - t0
        peak = rss0
        for _ in range(8):
            peak = max(peak, resources(t)["rss_mb"])
            await asyncio.sleep(0.1)
        alive = await p.alive()
    ok = (reply or {}).get("code") == "audio_buffer_full" and dt < 1.0 and peak - rss0 <= 100
    return ok, (f"{err(reply)} in {dt * 1000:.0f} ms; RSS +{peak - rss0:.0f} MB; "
                f"{'ping answered' if alive else 'no pong'}")


async def _utterance_cap_audio_end(t: Target) -> Outcome:
    """40 ``audio_end`` with fresh ids behind an open stream: at most ``max_utterances`` are
    accepted (the rest ``bad_message`` or ``too_many_utterances``)."""
    n = t.flags.max_utterances + 8
    async with connected(t) as (p, _ready):
        mark = len(p.messages)
        await open_stream(p)
        for k in range(n):
            await p.send({"type": "audio_end", "id": f"fresh{k}"})
        errors, pong = await p.errors_until_pong(mark)
    codes = {e.get("code") for e in errors}
    accepted = n - len(errors)
    ok = pong and accepted <= t.flags.max_utterances and codes <= {"bad_message",
                                                                   "too_many_utterances"}
    return ok, f"{accepted} of {n} accepted; codes {sorted(map(str, codes))}; pong {pong}"


async def _utterance_cap_streams(t: Target) -> Outcome:
    """40 short utterances (``audio`` + ``audio_end``, fresh ids) behind an open stream:
    ``too_many_utterances`` once ``max_utterances`` are queued."""
    n, cap = t.flags.max_utterances + 8, t.flags.max_utterances
    async with connected(t) as (p, _ready):
        mark = len(p.messages)
        await open_stream(p)
        for k in range(n):
            await p.send(audio_msg(pcm(), 16000, id=f"u{k}"))
            await p.send({"type": "audio_end", "id": f"u{k}"})
        errors, pong = await p.errors_until_pong(mark)
    codes = [e.get("code") for e in errors]
    ok = pong and "too_many_utterances" in codes and len(errors) >= 2 * (n - cap) and \
        set(codes) <= {"too_many_utterances", "bad_message"}
    return ok, f"{len(errors)} errors for {2 * n} messages ({sorted(set(map(str, codes)))})"


async def _too_many_streams(t: Target) -> Outcome:
    """Nine audio streams open at once: the ninth is refused with ``too_many_streams``."""
    async with connected(t) as (p, _ready):
        for k in range(8):
            await p.send(audio_msg(pcm(), 16000, id=f"s{k}"))
        reply = await p.ask(audio_msg(pcm(), 16000, id="s8"), ("error",), 3)
        alive = await p.alive()
    return (reply or {}).get("code") == "too_many_streams" and alive, err(reply)


async def _burst_2000_paced(t: Target) -> Outcome:
    """The server paces a flood instead of choking on it: ``FLOOD_MESSAGES`` ``audio_end`` with
    fresh ids (each refused with ``bad_message``: no such stream) sent as fast as the socket
    takes them behind an open stream, then a ``ping``, on a session with no offer (the flood
    drains well within the offer timeout). Handled when every ``audio_end`` is answered before
    the ``pong``, none with another code, and the whole takes at least ``PACED_SLACK`` of the
    time pacing allows (``ServerFlags.paced_seconds``: the burst at once, the rest at
    ``messages_per_s``). The well-behaved session's fps during the flood is reported (and
    judged with the campaign's windows)."""
    f, n = t.flags, FLOOD_MESSAGES
    expected = f.paced_seconds(n + 2)  # the open stream, the audio_ends, the ping
    async with connected(t) as (p, _ready):
        mark = len(p.messages)
        t0 = time.monotonic()
        await open_stream(p)
        for k in range(n):
            await p.send({"type": "audio_end", "id": f"b{k}"})
        sent_s = time.monotonic() - t0
        pong = await p.ask({"type": "ping"}, ("pong",), 2 * expected + 5)
        total = time.monotonic() - t0
        replies, arrivals = p.messages[mark:], p.arrivals[mark:]
        end = next((i for i, m in enumerate(replies) if m.get("type") == "pong"), len(replies))
        answers = [(m, a) for m, a in zip(replies[:end], arrivals[:end]) if m.get("type") == "error"]
        close = p.close_code
    codes = sorted({str(m.get("code")) for m, _a in answers})
    times = [a - t0 for _m, a in answers]
    burst = min(f.message_burst, len(times)) - 1
    paced = (len(times) - 1 - burst) / (times[-1] - times[burst]) \
        if len(times) > burst + 1 and times[-1] > times[burst] else float("nan")
    fps = t.well.fps(t0, t0 + total)[0] if t.well is not None else np.array([np.nan])
    ok = pong is not None and len(answers) == n and codes == ["bad_message"] and \
        total >= PACED_SLACK * expected
    what = (f"{len(answers)} of {n} answered before the pong ({codes})" if pong is not None else
            f"no pong; {len(answers)} of {n} answered (close {close})")
    return ok, (f"{what}; sent in {sent_s:.2f} s, pong after {total:.2f} s (pacing allows "
                f"{expected:.2f} s, at least {PACED_SLACK * expected:.2f} s needed); first "
                f"{burst + 1} answered within {times[burst] if times else float('nan'):.2f} s, "
                f"the rest at {paced:.0f}/s (pacing {f.messages_per_s:g}/s); well-behaved "
                f"session meanwhile min {np.min(fps):.0f} fps")


async def _wrong_refusals(refused: list[tuple[Probe, object]], code: str) -> list[str]:
    """What is wrong with connections that did not get ``ready``: each must have been refused
    with ``error`` ``code`` and closed with 1013 (an exception is wrong too)."""
    bad = []
    for p, first in refused:
        if not isinstance(first, dict):
            bad.append(f"{type(first).__name__}: {str(first)[:80]}")
            continue
        closed = await p.wait_closed(3)
        if first.get("code") != code or closed != 1013:
            bad.append(f"{err(first)} close {closed}")
    return bad


async def _admission_burst(t: Target) -> Outcome:
    """10 concurrent connects while K slots are free: at most K get ``ready``, the others
    ``too_many_sessions`` and close 1013; afterwards the slots are free again."""
    h = await health(t)
    free = t.flags.max_sessions - int(h.get("sessions", 0))
    probes = [Probe(t.ws) for _ in range(10)]
    try:
        firsts = await asyncio.gather(*(p.open() for p in probes), return_exceptions=True)
        ready = [p for p, f in zip(probes, firsts)
                 if isinstance(f, dict) and f.get("type") == "ready"]
        refused = [(p, f) for p, f in zip(probes, firsts) if p not in ready]
        bad = await _wrong_refusals(refused, "too_many_sessions")
    finally:
        await asyncio.gather(*(p.close() for p in probes))
    freed, h2 = await settled(t)
    again = False
    if freed:
        async with connected(t, expect=None) as (_p, first):
            again = (first or {}).get("type") == "ready"
    ok = 1 <= len(ready) <= free and not bad and freed and again
    return ok, (f"{len(ready)} ready of 10 with {free} free; refusals wrong: {bad[:3]}; "
                f"slots {'freed' if freed else 'held'} (sessions {h2.get('sessions')}); "
                f"a new session {'gets' if again else 'does not get'} ready")


async def _controller_burst(t: Target) -> Outcome:
    """12 ``?control=`` connections with ``max_controllers`` 8: 8 ``ready``, 4
    ``too_many_controllers`` and close 1013; fds back to where they were once they go."""
    cap = t.flags.max_controllers
    fds0 = resources(t)["fds"]
    probes = [Probe(t.ws + "?control=hostile") for _ in range(cap + 4)]
    try:
        firsts = await asyncio.gather(*(p.open() for p in probes), return_exceptions=True)
        ready = sum(isinstance(f, dict) and f.get("type") == "ready" for f in firsts)
        refused = [(p, f) for p, f in zip(probes, firsts)
                   if not (isinstance(f, dict) and f.get("type") == "ready")]
        bad = await _wrong_refusals(refused, "too_many_controllers")
    finally:
        await asyncio.gather(*(p.close() for p in probes))
    fds1 = fds0 + 999
    for _ in range(25):
        await asyncio.sleep(0.2)
        fds1 = resources(t)["fds"]
        if fds1 <= fds0 + 2:
            break
    ok = ready == cap and not bad and fds1 <= fds0 + 2
    return ok, (f"{ready} ready of {cap + 4} (max {cap}); refusals wrong: {bad[:3]}; "
                f"fds {fds0} -> {fds1}")


async def _avatar_spellings_rss(t: Target) -> Outcome:
    """50 distinct bad avatar spellings: all refused, RSS grows by at most 20 MB."""
    rss0 = resources(t)["rss_mb"]
    kinds = ("missing_hx_{}", "../x{}", "/tmp/hx{}", "hx_badjson{}", "./d{}")
    wrong = 0
    for k in range(50):
        v = kinds[k % len(kinds)].format(k)
        async with connected(t, f"?avatar={quote(v, safe='')}", expect=None) as (_p, first):
            wrong += (first or {}).get("code") != "bad_avatar"
        await asyncio.sleep(0.02)
    await asyncio.sleep(1.5)
    growth = resources(t)["rss_mb"] - rss0
    return growth <= 20 and not wrong, f"RSS +{growth:.1f} MB; {wrong} of 50 not bad_avatar"


async def _interrupt_during_synthesis(t: Target) -> Outcome:
    """``interrupt`` (and a ``ping``) sent while a long ``speak`` is being synthesised are
    answered within 1 s, and that speech does not go on playing."""
    text = ("Interrupt me while I am still being synthesised, please. " * 11)[:620]
    async with connected(t) as (p, _ready):
        await p.send(speak_msg(text, id="long"))
        await asyncio.sleep(0.05)
        t0 = time.monotonic()
        await p.send({"type": "interrupt"})
        pong = await p.ask({"type": "ping"}, ("pong",), 2.0)
        dt = time.monotonic() - t0
        await asyncio.sleep(1.0)
        started = any(m.get("type") == "speech_started" and m.get("id") == "long"
                      for m in p.messages)
        stopped = any(m.get("type") == "speech_ended" and m.get("id") == "long"
                      and m.get("interrupted") for m in p.messages)
        errors = [err(m) for m in p.messages if m.get("type") == "error"]
    ok = pong is not None and dt < 1.0 and (not started or stopped)
    return ok, (f"pong {f'{dt * 1000:.0f} ms' if pong else 'missing'} after the interrupt; "
                f"speech {'started' if started else 'never started'}"
                f"{' (ended: interrupted)' if stopped else ''}; errors {errors}")


CASES: tuple[Case, ...] = (
    case_of(_speak_5000_chars, "limits", quick=True),
    case_of(_utterance_cap_audio_end, "limits"),
    case_of(_utterance_cap_streams, "limits"),
    case_of(_too_many_streams, "limits"),
    case_of(_burst_2000_paced, "limits", timeout=40),
    case_of(_admission_burst, "limits", timeout=30),
    case_of(_controller_burst, "limits", timeout=30),
    case_of(_avatar_spellings_rss, "limits", timeout=60),
    case_of(_interrupt_during_synthesis, "limits"),
)
"""The limits cases, in the order they run."""
