"""`facecast serve` under a hostile client: admission that cannot race, bounded controllers,
avatar names only (one cache entry per bundle), text refused before synthesis, a bounded
utterance queue, media deadlines, offers it cannot answer, a `speak` that does not hold up the
next message, SIGTERM, rate-limited logs. Real server, real WebSockets, real aiortc peers."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from runtime.bench.hostile.cases_signaling import PEER_PROCESS
from runtime.bench.hostile.clients import strip_sdp
from runtime.serve.client import AvatarClient
from runtime.serve.deadlines import MediaDeadlines
from runtime.serve.server import ServerConfig, serve_in_thread

SLOW_TTS = textwrap.dedent("""
    import sys, time, wave
    import numpy as np
    time.sleep(1.5)  # a slow engine: the server must not wait for it before the next message
    t = np.arange(16000) / 16000
    pcm = (0.3 * np.sin(2 * np.pi * 180 * t) * 32767).astype("<i2")
    with wave.open(sys.argv[1], "wb") as w:
        w.setnchannels(1); w.setsampwidth(2); w.setframerate(16000); w.writeframes(pcm.tobytes())
""")


@pytest.fixture(scope="module")
def avatar_dir(tmp_path_factory):
    """A user avatar folder with a second copy of the default avatar ("twin", uncached at
    start: its load is the await the admission race needed) and a broken bundle."""
    import avatars
    from avatars.bundle import METADATA_FILE, write_bundle

    root = tmp_path_factory.mktemp("avatars")
    default = avatars.load("default")
    meta = {k: v for k, v in default.metadata.items() if k != "content_hash"}
    write_bundle(root / "twin", {**meta, "name": "twin"}, default.image, default.landmarks,
                 (default.mask * 255).astype(np.uint8))
    (root / "broken").mkdir()
    (root / "broken" / METADATA_FILE).write_text("{}")
    return root


@pytest.fixture(scope="module")
def server(avatar_dir, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("FACECAST_AVATAR_DIR", str(avatar_dir))
    script = tmp_path_factory.mktemp("tts") / "slow_tts.py"
    script.write_text(SLOW_TTS)
    handle = serve_in_thread(ServerConfig(
        port=0, max_sessions=2, max_controllers=3, max_buffer_s=20.0, max_utterances=6,
        deadlines=MediaDeadlines(offer_s=8.0, connect_s=3.0, feedback_s=4.0, poll_s=0.2),
        tts=f"command:{sys.executable} {script} {{out}}"))
    yield handle
    handle.stop()
    mp.undo()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


async def _settle(server, sessions: int = 0, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if len(server.server.sessions) <= sessions:
            break
        await asyncio.sleep(0.05)
    assert len(server.server.sessions) <= sessions


def test_concurrent_connects_cannot_pass_the_session_limit(server) -> None:
    async def main():
        clients = [AvatarClient(server.ws_url, {"avatar": "twin"}) for _ in range(6)]
        await asyncio.gather(*(c.__aenter__() for c in clients))
        kinds = sorted(c.ready.get("type") + ":" + c.ready.get("code", "") for c in clients)
        assert kinds == ["error:too_many_sessions"] * 4 + ["ready:"] * 2, kinds
        assert len(server.server.sessions) == 2
        await asyncio.gather(*(c.close() for c in clients))
        await _settle(server)
        async with AvatarClient(server.ws_url) as again:  # the slots are free again
            assert again.ready["type"] == "ready"

    run(main())


def test_avatar_is_a_name_and_bad_ones_say_nothing_about_the_disk(server) -> None:
    async def main():
        replies = {}
        for name in ("/etc", "../default", "%2Froot%2F.ssh", "avatars%2F.%2Fdefault", "nobody",
                     "broken"):
            async with AvatarClient(server.ws_url, {"avatar": name}) as c:
                replies[name] = c.ready
                await asyncio.sleep(0.05)
                assert c.ws.close_code == 1008
        for name, reply in replies.items():
            assert reply["type"] == "error" and reply["code"] == "bad_avatar", (name, reply)
            assert "/" not in reply["message"] and "looked in" not in reply["message"]
        # a missing name and a broken bundle read alike
        assert replies["nobody"]["message"].replace("nobody", "X") == \
            replies["broken"]["message"].replace("broken", "X")
        before = dict(server.server.avatars)
        for _ in range(3):
            async with AvatarClient(server.ws_url, {"avatar": "default"}) as c:
                assert c.ready["type"] == "ready"
        assert server.server.avatars.keys() == before.keys()  # one entry per bundle
        await _settle(server)

    run(main())


def test_controllers_are_limited_and_forgotten(server) -> None:
    async def main():
        clients = [AvatarClient(server.ws_url, {"control": f"d{i}"}) for i in range(5)]
        for c in clients:
            await c.__aenter__()
        kinds = [c.ready["type"] + ":" + c.ready.get("code", "") for c in clients]
        assert kinds == ["ready:"] * 3 + ["error:too_many_controllers"] * 2, kinds
        await asyncio.sleep(0.1)
        assert [c.ws.close_code for c in clients[3:]] == [1013, 1013]
        await asyncio.gather(*(c.close() for c in clients))
        await asyncio.sleep(0.2)
        assert server.server.displays.controllers("d0") == []
        assert server.server._controllers == 0
        assert not server.server.displays._controllers  # no entry kept per name ever used
        async with AvatarClient(server.ws_url, {"control": "d9"}) as c:
            assert c.ready["type"] == "ready" and c.ready["control"] == "d9"

    run(main())


def test_text_beyond_the_buffer_is_refused_before_synthesis(server) -> None:
    async def main():
        async with AvatarClient(server.ws_url) as c:
            # 20 s buffer; 1,000 letters take at least 1000 / 24 ≈ 42 s to speak. The slow
            # engine would answer tts_failed or take 1.5 s; the refusal names the estimate.
            reply = await c.request({"type": "speak", "text": "abcd " * 250}, "never")
            assert reply["code"] == "audio_buffer_full", reply
            assert "at least 42 s" in reply["message"]
            assert (await c.request({"type": "ping"}, "pong"))["type"] == "pong"
        await _settle(server)

    run(main())


def test_a_slow_speak_does_not_hold_up_the_next_message_and_interrupt_stops_it(server) -> None:
    async def main():
        async with AvatarClient(server.ws_url) as c:
            await c.send({"type": "speak", "text": "Hello there. How are you?", "id": "slow"})
            await c.send({"type": "ping"})
            await c.send({"type": "interrupt"})
            pong = await c.wait_for(lambda m: m["type"] == "pong", 10)
            ended = await c.wait_for(lambda m: m["type"] == "speech_ended", 10)
            assert ended["id"] == "slow" and ended["interrupted"]
            # the synthesis (1.5 s a sentence) finishes later, and must not bring it back
            await asyncio.sleep(3.5)
            types = [m["type"] for _t, m in c.received.events]
            assert "speech_started" not in types and "error" not in types, c.received.events
            assert types.index("pong") < types.index("speech_ended")
            assert pong
            # and a speak that is let run plays, sentence by sentence, as one utterance
            text = "Sentence number one is here. " * 10  # 290 characters: two pieces
            await c.send({"type": "speak", "text": text, "id": "two"})
            started = await c.wait_for(lambda m: m["type"] == "speech_started", 10)
            done = await c.wait_for(lambda m: m["type"] == "speech_ended"
                                    and m["id"] == "two", 15)
            assert started["id"] == "two" and not done["interrupted"]
            assert 1800 <= done["played_ms"] <= 2200  # two pieces of 1 s each
        await _settle(server)

    run(main())


def test_queued_utterances_are_bounded_and_phantoms_refused(server) -> None:
    pcm = {"type": "audio", "sample_rate": 16000,
           "pcm16": __import__("base64").b64encode(np.zeros(160, "<i2").tobytes()).decode()}

    async def main():
        async with AvatarClient(server.ws_url) as c:
            reply = await c.request({"type": "audio_end", "id": "never-opened"}, "never")
            assert reply["code"] == "bad_message"
            await c.send({**pcm, "id": "open"})  # an open stream the rest waits behind
            codes = []
            for i in range(12):
                await c.send({**pcm, "id": f"e{i}"})
                await c.send({"type": "audio_end", "id": f"e{i}"})
            await c.request({"type": "ping"}, "pong")
            codes = [m["code"] for _t, m in c.received.events if m["type"] == "error"]
            # e0…e4 fill the queue (6 with "open"); each later `audio` is refused and its
            # stream not kept, so its `audio_end` names no open stream
            assert codes[1:] == ["too_many_utterances", "bad_message"] * 7, codes
            assert len(server.server.sessions[c.ready["session"]].queue) == 6
        await _settle(server)

    run(main())


def test_offers_it_cannot_answer_are_refused_clearly(server) -> None:
    async def main():
        from aiortc import RTCPeerConnection

        pc = RTCPeerConnection()
        pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        good = pc.localDescription.sdp
        audio_only = good[:good.index("m=video")]
        cases = {
            "garbage": ("hello", "no m=audio or m=video"),
            "media-less": (good[:good.index("m=audio")], "no m=audio or m=video"),
            "audio-only": (audio_only, "no m=video"),
            "no fingerprint": (strip_sdp(good, "a=fingerprint"), "a=fingerprint"),
            "sendonly": (good.replace("a=recvonly", "a=sendonly"), "sendonly"),
        }
        async with AvatarClient(server.ws_url) as c:
            for name, (sdp, says) in cases.items():
                reply = await c.request({"type": "offer", "sdp": sdp}, "answer")
                assert reply["code"] == "webrtc_failed" and says in reply["message"], (name, reply)
                assert "None is not in list" not in reply["message"]
            assert (await c.request({"type": "ping"}, "pong"))["type"] == "pong"
        await pc.close()
        await _settle(server)

    run(main())


def test_sessions_without_working_media_are_closed_and_freed(server) -> None:
    async def main():
        from aiortc import RTCPeerConnection

        async with AvatarClient(server.ws_url) as idle:  # never offers
            await asyncio.sleep(1.0)
            session = server.server.sessions[idle.ready["session"]]
            # nobody watches it: its frames are advanced (audio, events) but never rendered
            assert session.frames_rendered == 0 and session.frames_unwatched >= 10
            assert session.frames_dropped == 0
            timeout = await idle.wait_for(lambda m: m.get("code") == "media_timeout", 15)
            assert "no offer within 8 s" in timeout["message"]
            await asyncio.sleep(0.2)
            assert idle.ws.close_code == 1008
        pc = RTCPeerConnection()
        pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        stripped = strip_sdp(pc.localDescription.sdp, "a=candidate",
                             "a=end-of-candidates")
        async with AvatarClient(server.ws_url) as mute:  # answered, ICE never connects
            answer = await mute.request({"type": "offer", "sdp": stripped}, "answer")
            assert answer["type"] == "answer"
            timeout = await mute.wait_for(lambda m: m.get("code") == "media_timeout", 15)
            assert "not established within 3 s" in timeout["message"]
        await pc.close()
        await _settle(server)
        async with AvatarClient(server.ws_url) as good:  # a working peer is never closed
            await good.start_media()
            await good.wait_video(frames=25)
            assert server.server.sessions[good.ready["session"]].frames_rendered >= 25
            await asyncio.sleep(6.0)  # past every deadline
            assert good.ws.close_code is None
            assert not any(m.get("code") == "media_timeout" for _t, m in good.received.events)
        await _settle(server)

    run(main())


def test_sigterm_is_graceful(tmp_path) -> None:
    from runtime.bench.harness import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "runtime.cli", "serve", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if "facecast serving" in line:
                break

        async def main():
            async with AvatarClient(f"ws://127.0.0.1:{port}/ws") as c:
                assert c.ready["type"] == "ready"
                proc.send_signal(signal.SIGTERM)
                for _ in range(100):
                    if c.ws.close_code is not None:
                        break
                    await asyncio.sleep(0.1)
                return c.ws.close_code

        assert run(main()) == 1001
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err


def test_log_lines_of_one_kind_are_rate_limited() -> None:
    from runtime.serve.logs import RateLimit

    limit = RateLimit(burst=5, window_s=0.3)
    log = logging.getLogger("facecast.test.ratelimit")

    def record(msg: str) -> logging.LogRecord:
        return log.makeRecord(log.name, logging.WARNING, __file__, 1, msg, ("x",), None)

    passed = [limit.filter(record("client %s misbehaved")) for _ in range(100)]
    assert sum(passed) == 5
    assert limit.filter(record("another kind %s"))  # other lines still pass
    time.sleep(0.35)
    late = record("client %s misbehaved")
    assert limit.filter(late) and "95 more like this dropped" in late.getMessage()
    json.dumps(late.getMessage())


def test_a_peer_that_vanishes_with_its_websocket_open_is_closed(server) -> None:
    """The media peer lives in another process and is SIGKILLed: the WebSocket stays open, so
    only the missing RTCP feedback can tell (4 s in this server)."""
    peer = subprocess.Popen([sys.executable, "-c", PEER_PROCESS], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)

    async def main():
        try:
            async with AvatarClient(server.ws_url) as c:
                offer = json.loads(await asyncio.to_thread(peer.stdout.readline))
                answer = await c.request({"type": "offer", "sdp": offer}, "answer")
                peer.stdin.write(json.dumps(answer["sdp"]) + "\n")
                peer.stdin.flush()
                assert (await asyncio.to_thread(peer.stdout.readline)).strip() == "connected"
                await asyncio.sleep(1.0)
                peer.kill()
                timeout = await c.wait_for(lambda m: m.get("code") == "media_timeout", 20)
                assert "no RTCP feedback from the peer for 4 s" in timeout["message"], timeout
        finally:
            peer.kill()
            peer.wait()
        await _settle(server)

    run(main())


def test_message_pacer_delays_a_flood_and_never_a_steady_stream() -> None:
    from runtime.serve.pacing import MessagePacer

    now = [0.0]
    pacer = MessagePacer(rate=200, burst=400, clock=lambda: now[0])
    steady = []
    for _ in range(500):  # audio in 20 ms chunks: 50 a second
        steady.append(pacer.delay())
        now[0] += 0.02
    assert max(steady) == 0.0
    flood = [pacer.delay() for _ in range(2000)]  # all at one instant
    assert flood[:400] == [0.0] * 400
    assert flood[-1] == pytest.approx(1600 / 200)  # served at 200 a second after the burst
