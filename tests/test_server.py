"""`facecast serve` with real parts: an aiortc peer on loopback receives the avatar's video and
voice; every error path of the protocol answers with its code and the session lives on; barge-in;
limits, tokens and origins; a vanished peer is cleaned up; health, metrics and static files."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import jwt
import numpy as np
import pytest

from runtime.serve.auth import issue_token
from runtime.serve.client import AvatarClient
from runtime.serve.server import ServerConfig, serve_in_thread

PROMPT = Path("/usr/share/asterisk/sounds/en/demo-enterkeywords.g722")
LONG_TEXT = ("Hello there, this is a long sentence that I will interrupt in the middle, so it "
             "keeps going for quite a while before it would end on its own.")


@pytest.fixture(scope="module")
def server():
    handle = serve_in_thread(ServerConfig(port=0, size=256, max_sessions=3,
                                          max_message_bytes=64 * 1024, max_buffer_s=10.0))
    yield handle
    handle.stop()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def test_peer_receives_video_and_voice_on_one_clock(server) -> None:
    async def main():
        async with AvatarClient(server.ws_url) as c:
            assert c.ready["type"] == "ready" and c.ready["fps"] == 25
            await c.start_media()
            await c.wait_video(10)
            await c.speak("Please bring a map and a pen to the meeting.")
            started = await c.wait_for(lambda m: m["type"] == "speech_started", 15)
            await c.wait_for(lambda m: m["type"] == "state" and m["state"] == "speaking", 5)
            ended = await c.wait_for(lambda m: m["type"] == "speech_ended", 15)
            await c.wait_for(lambda m: m["type"] == "state" and m["state"] == "idle", 5)
            await asyncio.sleep(0.5)
            return c, started, ended

    c, started, ended = run(main())
    assert started["id"] == ended["id"] and not ended["interrupted"]
    assert abs(ended["played_ms"] - ended["duration_ms"]) <= 1 and ended["duration_ms"] > 1500
    video = c.received.video
    assert len(video) >= 50
    # video pts advance by exactly one frame (90 kHz RTP clock: 3600 per frame at 25 fps)
    steps = np.diff([p for _t, p, _tb in video])
    assert np.median(steps) == 3600 and (steps > 0).all()
    audio, _ = c.audio_signal()
    assert _rms(audio) > 0.01  # the voice arrived
    seconds = video[-1][0] - video[0][0]
    assert len(video) / seconds > 20  # about 25 fps delivered on loopback


def test_audio_streaming_is_lip_synced_and_reported(server) -> None:
    from runtime.audio.decode import load_audio

    if not PROMPT.is_file():
        pytest.skip("asterisk-core-sounds-en-g722 is not installed")
    speech, rate = load_audio(PROMPT)

    async def main():
        async with AvatarClient(server.ws_url) as c:
            await c.start_media()
            await c.wait_video(5)
            step = rate // 25  # 40 ms chunks, faster than real time
            for i in range(0, len(speech), step):
                await c.send_audio(speech[i:i + step], rate, utt_id="agent-1")
            await c.send({"type": "audio_end", "id": "agent-1"})
            ended = await c.wait_for(lambda m: m["type"] == "speech_ended", 20)
            return ended

    ended = run(main())
    assert ended["id"] == "agent-1" and not ended["interrupted"]
    assert abs(ended["duration_ms"] - len(speech) / rate * 1000) < 30


def test_interrupt_stops_voice_and_returns_to_idle_within_200_ms(server) -> None:
    async def main():
        async with AvatarClient(server.ws_url) as c:
            await c.start_media()
            await c.wait_video(5)
            await c.speak(LONG_TEXT)
            await c.wait_for(lambda m: m["type"] == "speech_started", 15)
            await asyncio.sleep(1.0)
            t_int = time.monotonic()
            await c.send({"type": "interrupt"})
            ended = await c.wait_for(lambda m: m["type"] == "speech_ended", 5)
            idle = await c.wait_for(lambda m: m["type"] == "state" and m["state"] == "idle", 5)
            t_idle = next(t for t, m in c.received.events if m is idle)
            await asyncio.sleep(1.0)
            return c, t_int, ended, t_idle

    c, t_int, ended, t_idle = run(main())
    assert ended["interrupted"] and 500 < ended["played_ms"] < ended["duration_ms"]
    assert t_idle - t_int < 0.2
    loud_after = [t - t_int for t, _p, x in c.received.audio if t > t_int and _rms(x) > 0.01]
    assert loud_after and max(loud_after) < 0.2  # the voice stops within 200 ms


ERRORS = [
    ("bad_json", "not json"),
    ("bad_message", json.dumps([1, 2])),
    ("bad_message", json.dumps({"no": "type"})),
    ("bad_message", json.dumps({"type": "dance"})),
    ("bad_message", json.dumps({"type": "speak"})),
    ("binary_not_supported", b"\x00\x01"),
    ("message_too_large", json.dumps({"type": "speak", "text": "a" * 70000})),
    ("text_too_long", json.dumps({"type": "speak", "text": "a" * 5001})),
    ("empty_text", json.dumps({"type": "speak", "text": "  "})),
    ("bad_voice", json.dumps({"type": "speak", "text": "hi", "voice": "xx-nonexistent"})),
    ("bad_audio", json.dumps({"type": "audio", "pcm16": "@@@", "sample_rate": 16000})),
    ("bad_audio", json.dumps({"type": "audio", "pcm16": base64.b64encode(b"abc").decode(),
                              "sample_rate": 16000})),
    ("bad_audio", json.dumps({"type": "audio", "pcm16": "", "sample_rate": 100})),
    ("bad_audio", json.dumps({"type": "audio", "pcm16": "", "sample_rate": "16000"})),
    ("bad_message", json.dumps({"type": "audio_end"})),
    ("bad_message", json.dumps({"type": "offer"})),
    ("webrtc_failed", json.dumps({"type": "offer", "sdp": "v=0 garbage"})),
    ("audio_buffer_full", "BIG_AUDIO"),
    ("too_many_streams", "MANY_STREAMS"),
]


def test_every_protocol_error_is_answered_and_the_session_lives_on(server) -> None:
    async def main():
        codes = []
        async with AvatarClient(server.ws_url) as c:
            for _code, raw in ERRORS:
                mark = len(c.received.events)
                if raw == "BIG_AUDIO":  # 12 chunks of 1 s at 8 kHz against a 10 s buffer
                    pcm = base64.b64encode(np.zeros(8000, np.int16).tobytes()).decode()
                    for _ in range(12):
                        await c.send(json.dumps({"type": "audio", "pcm16": pcm,
                                                 "sample_rate": 8000, "id": "big"}))
                elif raw == "MANY_STREAMS":  # a ninth stream opened while eight are open
                    await c.send({"type": "interrupt"})  # empties the full buffer first
                    pcm = base64.b64encode(np.zeros(160, np.int16).tobytes()).decode()
                    for k in range(9):
                        await c.send(json.dumps({"type": "audio", "pcm16": pcm,
                                                 "sample_rate": 8000, "id": f"open{k}"}))
                else:
                    await c.send(raw)
                await c.send({"type": "ping"})
                await c.wait_for(lambda m, n=mark: m["type"] == "pong" and any(
                    m is e for _t, e in c.received.events[n:]), 10)  # still alive
                # a speak is synthesised while later messages go on: its error may follow
                error = await c.wait_for(lambda m, n=mark: m["type"] == "error" and any(
                    m is e for _t, e in c.received.events[n:]), 10)
                codes.append(error["code"])
            await c.send({"type": "interrupt"})
            # a second offer on a session that has a peer
            await c.start_media()
            second = await c.request({"type": "offer", "sdp": c.pc.localDescription.sdp},
                                     "answer")
            return codes, second

    codes, second = run(main())
    assert codes == [code for code, _raw in ERRORS]
    assert second["type"] == "error" and second["code"] == "no_peer"


def test_session_limit_and_bad_avatar(server) -> None:
    async def main():
        clients = [AvatarClient(server.ws_url) for _ in range(3)]
        for c in clients:
            await c.__aenter__()
        try:
            async with AvatarClient(server.ws_url) as extra:
                refused = extra.ready
        finally:
            for c in clients:
                await c.close()
        async with AvatarClient(server.ws_url, params={"avatar": "nobody_here"}) as bad:
            return refused, bad.ready

    refused, bad = run(main())
    assert refused == {"type": "error", "code": "too_many_sessions",
                       "message": refused["message"]}
    assert bad["code"] == "bad_avatar"


def test_vanished_peer_is_cleaned_up(server) -> None:
    async def main():
        c = AvatarClient(server.ws_url)
        await c.__aenter__()
        await c.start_media()
        await c.wait_video(3)
        sid = c.ready["session"]
        assert sid in server.server.sessions
        c.ws.transport.abort()  # the client vanishes: no close frame, no goodbye
        await c.pc.close()
        deadline = time.monotonic() + 15
        # polled: the state belongs to the server's thread, there is no event to await
        while sid in server.server.sessions and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        return sid, time.monotonic() - (deadline - 15)

    sid, took = run(main())
    assert sid not in server.server.sessions, "session of a vanished peer still open"
    assert took < 15
    assert all(s.id != sid for s in server.server.scheduler.sessions)


def test_closed_peer_is_freed_without_waiting_for_the_collector(server) -> None:
    """aiortc's peer objects sit in reference cycles; the server collects them (and their codec
    threads) about a second after the session closes instead of at CPython's next rare
    generation-2 collection (``runtime.serve.reclaim``)."""
    import weakref

    from aiortc import RTCPeerConnection

    def peers() -> list:
        return [o for o in gc.get_objects() if type(o) is RTCPeerConnection]

    async def main():
        before = {id(o) for o in peers()}  # earlier tests' peers are not this test's business
        async with AvatarClient(server.ws_url) as c:
            await c.start_media()
            await c.wait_video(3)
            refs = [weakref.ref(o) for o in peers() if id(o) not in before and o is not c.pc]
        deadline = time.monotonic() + 10
        while any(r() is not None for r in refs) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        return refs

    refs = run(main())
    assert refs, "the server's peer connection was not found"
    assert all(r() is None for r in refs), "a closed peer connection is still alive"


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def test_health_metrics_and_static_files(server) -> None:
    status, kind, body = _get(server.url + "/healthz")
    assert status == 200 and kind == "application/json"
    health = json.loads(body)
    assert health["status"] == "ok" and health["fps"] == 25
    status, kind, body = _get(server.url + "/metrics")
    text = body.decode()
    assert status == 200 and kind.startswith("text/plain")
    for name in ("facecast_sessions", "facecast_frames_rendered_total",
                 "facecast_frames_dropped_total", "facecast_render_seconds_bucket",
                 "facecast_speech_latency_seconds_bucket"):
        assert name in text
    status, kind, body = _get(server.url + "/PROTOCOL.md")
    assert status == 200 and b"audio_end" in body
    for bad in ("/../README.md", "/%2e%2e/README.md", "/nope.js", "/.hidden"):
        assert _get(server.url + bad)[0] == 404


def test_token_and_origin_are_checked_on_the_handshake() -> None:
    from websockets.exceptions import InvalidStatus

    secret = "s3cret-for-tests-0123456789abcdef0123"
    handle = serve_in_thread(ServerConfig(port=0, size=256, token=secret,
                                          allowed_origins=("https://shop.example",)))

    async def status(params: dict, origin: str | None = None) -> int:
        try:
            async with AvatarClient(handle.ws_url, params=params, origin=origin) as c:
                return 101 if c.ready["type"] == "ready" else 0
        except InvalidStatus as exc:
            return exc.response.status_code

    async def main():
        token = issue_token(secret, 60)
        expired = jwt.encode({"exp": int(time.time()) - 60}, secret, algorithm="HS256")
        return [
            await status({}),
            await status({"token": "wrong"}),
            await status({"token": secret}),  # the secret itself never travels: not a token
            await status({"token": token}),
            await status({"token": expired}),
            await status({"token": token}, origin="https://evil.example"),
            await status({"token": token}, origin="https://shop.example"),
            await status({"token": token}, origin=handle.url),  # the server's own page
        ]

    try:
        assert run(main()) == [401, 401, 401, 101, 401, 403, 101, 101]
    finally:
        handle.stop()


def test_non_loopback_bind_needs_a_token() -> None:
    with pytest.raises(ValueError, match="--token"):
        ServerConfig(host="0.0.0.0").check()
    ServerConfig(host="0.0.0.0", token="x" * 32).check()
    ServerConfig(host="0.0.0.0", insecure=True).check()


def test_config_takes_exact_frame_rates() -> None:
    """The live path runs on the one AvClock, so serve accepts 30000/1001 (not only divisors
    of 48000) and refuses what is not a frame rate."""
    ServerConfig(fps="30000/1001").check()
    ServerConfig(fps=24).check()
    for bad in (0, "fast", 1000):
        with pytest.raises(ValueError):
            ServerConfig(fps=bad).check()
