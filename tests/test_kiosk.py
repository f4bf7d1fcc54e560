"""``facecast kiosk``: the kiosk page in a real Chromium reconnects by itself after the server is
killed and started again (screenshot ``out/kiosk-reconnected.png`` when ``out/`` exists); apps
speak on the display through ``/ws?control=NAME``; the command serves without a display and says
so; logs rotate and websockets' per-request lines are silenced.

Browser tests use Debian's Chromium driven by Playwright (no browser download), with the launch
flags of tests/test_widget.py; they are skipped when either is missing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from conftest import ROOT, env_without_test_microphone

from runtime.bench.harness import free_port, serve_process
from runtime.serve.client import AvatarClient
from runtime.serve.server import ServerConfig, serve_in_thread

OUT_DIR = ROOT / "out"
CHROMIUM = shutil.which("chromium")

# the flags of tests/test_widget.py (shared/RECIPES.md, "WebRTC on loopback with a real browser")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection",
]

VIDEO_PLAYING_JS = """() => {
  const el = document.querySelector('#avatar');
  const v = el && el.videoElement;
  return !!v && v.readyState >= 2 && v.videoWidth > 0 && el.connectionState === 'connected';
}"""


def _health(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
        return json.loads(r.read())


def _run_in_thread(coro_fn):
    """asyncio.run(coro_fn()) in another thread (Playwright's sync API owns this thread's loop)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(asyncio.wait_for(coro_fn(), 60))).result()


def _frames_decoded(page) -> int:
    stats = page.evaluate("document.querySelector('#avatar').stats()")
    return int((stats or {}).get("framesDecoded") or 0)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_kiosk_page_reconnects_after_the_server_is_killed(tmp_path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    port = free_port()
    url = f"http://127.0.0.1:{port}/kiosk.html?avatar=default&display=kiosk"
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                                     env=env_without_test_microphone())
        try:
            page = browser.new_page(viewport={"width": 800, "height": 600})
            page_errors: list[str] = []
            page.on("pageerror", lambda exc: page_errors.append(str(exc)))
            with serve_process(port, log_path=tmp_path / "serve1.log") as proc:
                page.goto(url)
                page.wait_for_function(VIDEO_PLAYING_JS, timeout=30_000)
                first = page.evaluate("window.__kiosk.lastSession")
                assert _health(port)["displays"] == ["kiosk"]

                # an app speaks on the display through a control connection
                async def app_speaks() -> dict:
                    async with AvatarClient(f"ws://127.0.0.1:{port}/ws",
                                            params={"control": "kiosk"}) as app:
                        assert app.ready["display_connected"] is True
                        await app.speak("Hello from the app.", id="app-1")
                        return await app.wait_for(lambda m: m["type"] == "speech_ended", 20)

                ended = _run_in_thread(app_speaks)
                assert ended["id"] == "app-1" and not ended["interrupted"]
                page.wait_for_function("() => window.__kiosk.events.some("
                                       "e => e.type === 'speechend' && e.detail.id === 'app-1')",
                                       timeout=10_000)
                proc.send_signal(signal.SIGKILL)  # forcibly: no close frame, no goodbye
                proc.wait(10)
            t_kill = time.monotonic()
            page.wait_for_function("() => window.__kiosk.drops >= 1", timeout=15_000)
            # while the server is down, attempts fail and back off (1 s, 2 s … with jitter)
            page.wait_for_function("() => window.__kiosk.attempts >= 3", timeout=20_000)
            down_s = time.monotonic() - t_kill
            with serve_process(port, log_path=tmp_path / "serve2.log"):
                t_up = time.monotonic()
                page.wait_for_function("() => window.__kiosk.connects >= 2", timeout=45_000)
                page.wait_for_function(VIDEO_PLAYING_JS, timeout=30_000)
                reconnect_s = time.monotonic() - t_up
                n0 = _frames_decoded(page)
                time.sleep(1.5)
                n1 = _frames_decoded(page)
                kiosk = page.evaluate("window.__kiosk")
                health = _health(port)
                shot = tmp_path / "kiosk.png"
                page.screenshot(path=str(shot))
            if OUT_DIR.is_dir():
                shutil.copyfile(shot, OUT_DIR / "kiosk-reconnected.png")
                (OUT_DIR / "kiosk-reconnected.json").write_text(json.dumps(
                    {"down_s": round(down_s, 2), "reconnect_after_server_up_s":
                     round(reconnect_s, 2), "frames_decoded": [n0, n1],
                     "kiosk": {k: kiosk[k] for k in ("connects", "drops", "attempts",
                                                     "lastSession")},
                     "reconnect_delays_ms": [e["detail"]["delayMs"] for e in kiosk["events"]
                                             if e["type"] == "reconnecting"]}, indent=1))
        finally:
            browser.close()

    assert first and kiosk["connects"] == 2 and kiosk["drops"] == 1
    assert health["displays"] == ["kiosk"] and health["sessions"] == 1
    assert n1 - n0 > 15, (n0, n1)  # video plays again (about 25 fps)
    delays = [e["detail"]["delayMs"] for e in kiosk["events"] if e["type"] == "reconnecting"]
    # exponential backoff with equal jitter, capped at reconnect_max (8 s) by the kiosk page
    steps = [min(1000 * 2 ** i, 8000) for i in range(len(delays))]
    assert all(s / 2 <= d <= s for d, s in zip(delays, steps)), delays
    assert page_errors == []
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)
    centre = img[150:450, 250:550]
    assert centre.std() > 20, "the screenshot shows no portrait"  # not a black screen


@pytest.fixture(scope="module")
def server():
    handle = serve_in_thread(ServerConfig(port=0, size=256))
    yield handle
    handle.stop()


def test_controller_speaks_through_the_current_display(server) -> None:
    async def main():
        out = {}
        async with AvatarClient(server.ws_url, params={"control": "lobby"}) as app:
            out["ready_without_display"] = app.ready
            out["no_display"] = await app.request({"type": "speak", "text": "hi"}, "answer")
            async with AvatarClient(server.ws_url, params={"display": "lobby"}) as screen:
                await screen.start_media()
                await screen.wait_video(3)
                shown = await app.wait_for(lambda m: m["type"] == "display" and m["connected"],
                                           10)
                out["shown"] = shown
                out["offer"] = await app.request({"type": "offer", "sdp": "v=0"}, "answer")
                await app.speak("Good morning, welcome to the lobby.", id="greet")
                out["screen_started"] = await screen.wait_for(
                    lambda m: m["type"] == "speech_started", 15)
                await asyncio.sleep(0.5)
                await app.send({"type": "interrupt"})
                out["screen_ended"] = await screen.wait_for(
                    lambda m: m["type"] == "speech_ended", 5)
                out["app_ended"] = await app.wait_for(lambda m: m["type"] == "speech_ended", 5)
            out["gone"] = await app.wait_for(
                lambda m: m["type"] == "display" and not m["connected"], 10)
        return out

    out = asyncio.run(asyncio.wait_for(main(), 60))
    assert out["ready_without_display"]["display_connected"] is False
    assert out["no_display"]["code"] == "no_display"
    assert out["shown"]["display"] == "lobby" and out["shown"]["session"]
    assert out["offer"]["code"] == "no_peer"
    assert out["screen_started"]["id"] == "greet"
    assert out["screen_ended"]["interrupted"] and out["app_ended"]["id"] == "greet"


def test_bad_display_name_is_refused(server) -> None:
    async def main():
        async with AvatarClient(server.ws_url, params={"display": "../x"}) as c:
            return c.ready

    assert asyncio.run(main())["code"] == "bad_message"


def test_kiosk_command_serves_without_a_display_and_says_so(tmp_path) -> None:
    port = free_port()
    log_file = tmp_path / "state" / "kiosk.log"
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "kiosk", "--port", str(port), "--log-file",
         str(log_file), "--log-max-mb", "0.01", "--log-backups", "2"],
        cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = _health(port)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                time.sleep(0.3)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/kiosk.html", timeout=5) as r:
            page = r.read().decode()
        assert "facecast-avatar" in page and "reconnect" in page
        assert health["status"] == "ok" and health["watchdog_restarts"] == 0
        for _ in range(30):  # polled health checks do not flood the log
            _health(port)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    assert f"http://127.0.0.1:{port}/kiosk.html" in out
    assert "no display" in err or "no Chromium" in err  # said clearly, and it kept serving
    text = log_file.read_text()
    assert "kiosk starting" in text and "kiosk stopping" in text
    assert "HTTP response sent" not in text and "connection rejected (200" not in text


def test_log_file_rotates_and_http_lines_are_silenced(tmp_path) -> None:
    from runtime.local.kiosk import setup_logging

    path = tmp_path / "logs" / "kiosk.log"
    handler = setup_logging(path, max_bytes=2048, backups=2, stream=None)
    try:
        lg = logging.getLogger("facecast.test")
        for i in range(200):  # 200 distinct lines (one repeated line is rate-limited)
            lg.info(f"line {i} " + "x" * 40)
        ws = logging.getLogger("websockets.server")
        ws.info("HTTP response sent (%d %s)", 200, "OK")
        ws.info("connection rejected (%d %s)", 503, "Service Unavailable")
        ws.info("connection open")
        lg.info("last line")
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["kiosk.log", "kiosk.log.1", "kiosk.log.2"]
    assert all((path.parent / f).stat().st_size <= 2048 for f in files)
    text = path.read_text()
    assert "last line" in text
    assert "HTTP response sent" not in text and "connection open" not in text
    assert "connection rejected (503" in text  # refusals and errors still show
    with pytest.raises(ValueError):
        setup_logging(path, max_bytes=10, backups=1)


def test_voice_gate_cuts_speech_into_utterances() -> None:
    """Real speech with pauses: one utterance per phrase, each ended, nothing from the silence."""
    from runtime.audio.decode import load_audio
    from runtime.audio.gate import VoiceGate
    from runtime.audio.resample import resample
    from runtime.bench.harness import heldout_prompts

    try:
        prompt = heldout_prompts()[0]
    except FileNotFoundError:
        pytest.skip("asterisk-core-sounds-en-g722 is not installed")
    speech, rate = load_audio(prompt)
    speech48 = resample(speech, rate, 48000)
    rng = np.random.default_rng(0)

    def hiss(seconds: float) -> np.ndarray:
        return rng.normal(0, 1e-3, int(seconds * 48000)).astype(np.float32)

    stream = np.concatenate([hiss(1.0), speech48, hiss(1.5), speech48, hiss(1.5)])
    pieces: list[tuple[str, int, bool]] = []
    gate = VoiceGate(lambda uid, x, done: pieces.append((uid, len(x), done)))
    for i in range(0, len(stream), 960):  # 20 ms chunks
        gate.push(stream[i:i + 960])
    gate.close()
    ids = list(dict.fromkeys(uid for uid, _n, _d in pieces))
    assert ids == ["mic1", "mic2"]
    for uid in ids:
        mine = [(n, d) for u, n, d in pieces if u == uid]
        assert [d for _n, d in mine].count(True) == 1 and mine[-1][1]  # ended once, at the end
        seconds = sum(n for n, _d in mine) / 48000
        # the phrase, plus at most the pre-roll (0.2 s) and the hang (0.6 s) and one chunk
        assert len(speech48) / 48000 - 0.3 < seconds < len(speech48) / 48000 + 0.85, seconds


def test_kiosk_microphone_speaks_on_the_display(tmp_path) -> None:
    """``facecast kiosk --mic DEVICE`` through real PortAudio: a private PulseAudio null sink's
    monitor is the microphone (tests/test_mic.py's sound server); speech played into it arrives
    on the display session as an utterance that starts and ends."""
    pytest.importorskip("pyaudio", reason="PyAudio is not installed")
    test_mic = pytest.importorskip("test_mic")
    sound = test_mic.start_sound_server(tmp_path / "pulse")
    speech, rate = test_mic.prompt_audio()
    port = free_port()
    env = dict(sound.env, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "kiosk", "--port", str(port), "--no-browser",
         "--mic", test_mic.MIC_NAME, "--log-file", str(tmp_path / "kiosk.log")],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)

    async def main():
        async with AvatarClient(f"ws://127.0.0.1:{port}/ws", params={"display": "kiosk"}) as c:
            await c.start_media()
            await c.wait_video(5)
            player = sound.play(speech, rate)
            started = await c.wait_for(lambda m: m["type"] == "speech_started", 20)
            ended = await c.wait_for(lambda m: m["type"] == "speech_ended", 30)
            player.wait(10)
            return started, ended

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _health(port)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"kiosk did not start: {proc.stderr.read()[-2000:]}")
                time.sleep(0.3)
        started, ended = asyncio.run(asyncio.wait_for(main(), 90))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        test_mic.stop_sound_server(sound)
    assert started["id"] == "mic1" and ended["id"] == "mic1" and not ended["interrupted"]
    duration = len(speech) / rate * 1000
    assert duration - 300 < ended["played_ms"] < duration + 1000, (ended, duration)
