"""The web widget (<facecast-avatar>) and demo page in a real browser, over real WebRTC on loopback.

Debian's Chromium driven by Playwright (no browser download); skipped when either is missing, and
the server tests are skipped until `runtime.serve.server` is importable.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import env_without_test_microphone
from PIL import Image

sync_api = pytest.importorskip("playwright.sync_api")

ROOT = Path(__file__).resolve().parents[1]
WEB_DIR = ROOT / "web"
OUT_DIR = ROOT / "out"
CHROMIUM = shutil.which("chromium")

# The demo page shows the full portrait; the server streams it at 512×512.
EXPECTED_VIDEO_WIDTH = 512
FIRST_FRAME_TIMEOUT_MS = 20_000
EVENT_TIMEOUT_MS = 20_000

# Flags that worked for WebRTC on loopback (shared/RECIPES.md).
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
    "--use-fake-device-for-media-stream",  # a synthetic microphone (a beep) for the mic test
]


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                                     env=env_without_test_microphone())
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 720, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on(
        "console",
        lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None,
    )
    page.js_errors = errors  # type: ignore[attr-defined]
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def server():
    server_mod = pytest.importorskip("runtime.serve.server", reason="runtime.serve.server is not written yet")
    config = server_mod.ServerConfig(host="127.0.0.1", port=0, web_dir=WEB_DIR, size=256)
    handle = server_mod.serve_in_thread(config)
    try:
        yield handle
    finally:
        handle.stop()


def event_count(page) -> int:
    return page.evaluate("() => (window.__events || []).length")


def wait_for_event(
    page,
    event_type: str,
    predicate_js: str = "true",
    since: int = 0,
    timeout_ms: int = EVENT_TIMEOUT_MS,
) -> list[dict]:
    """Wait for an event of `event_type` in window.__events[since:] whose `detail` (`d`) passes.

    Returns the details of all such events.
    """
    match = (
        f"(window.__events || []).slice({int(since)})"
        f".filter(e => e.type === {event_type!r} && ((d) => ({predicate_js}))(e.detail))"
    )
    page.wait_for_function(f"() => {match}.length > 0", timeout=timeout_ms)
    return page.evaluate(f"() => {match}.map(e => e.detail)")


AUDIO_STATS_JS = """async () => {
  const pc = document.querySelector('#avatar').peerConnection;
  if (!pc) return null;
  const report = await pc.getStats();
  let out = null;
  report.forEach((s) => {
    if (s.type === 'inbound-rtp' && (s.kind || s.mediaType) === 'audio') {
      out = {energy: s.totalAudioEnergy ?? null, level: s.audioLevel ?? null, bytes: s.bytesReceived ?? 0};
    }
  });
  return out;
}"""


def test_demo_page_speaks_and_interrupts(server, page, tmp_path):
    page.goto(server.url + "/")

    # The avatar's video arrives: the first frame is decoded at the portrait's resolution.
    page.wait_for_function(
        """(w) => {
          const el = document.querySelector('#avatar');
          const v = el && el.videoElement;
          return v && v.readyState >= 2 && v.videoWidth === w;
        }""",
        arg=EXPECTED_VIDEO_WIDTH,
        timeout=FIRST_FRAME_TIMEOUT_MS,
    )
    ready = wait_for_event(page, "ready")
    wait_for_event(page, "connected")
    assert page.evaluate("document.querySelector('#avatar').connectionState") == "connected"
    # the disclosure: in `ready`, as a visible label over the video and in its accessible name
    assert ready[0]["disclosure"] == "AI-generated" and ready[0]["badge"] is True, ready
    label = page.evaluate("""() => {
      const root = document.querySelector('#avatar').shadowRoot;
      const el = root.querySelector('.disclosure');
      return {text: el.textContent, hidden: el.hidden, visible: el.offsetWidth > 0,
              aria: root.querySelector('video').getAttribute('aria-label'),
              prop: document.querySelector('#avatar').disclosure};
    }""")
    assert label == {"text": "AI-generated", "hidden": False, "visible": True,
                     "aria": "AI-generated avatar video", "prop": "AI-generated"}, label
    before = page.evaluate(AUDIO_STATS_JS)
    assert before is not None, "no inbound audio stream"

    sentence = (
        "Hello there, this is a test of the talking avatar widget, speaking for a little while."
    )
    page.fill("#text", sentence)
    mark = event_count(page)
    page.click("#speak")
    started = wait_for_event(page, "speechstart", since=mark)
    assert started[0].get("id"), started
    wait_for_event(page, "statechange", "d.state === 'speaking'", since=mark)

    t0 = page.evaluate("document.querySelector('#avatar').videoElement.currentTime")
    time.sleep(1.5)
    shot = tmp_path / "demo.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    if OUT_DIR.is_dir():
        shutil.copyfile(shot, OUT_DIR / "widget-demo.png")

    # The video is playing: its clock advances and frames keep being decoded.
    video = page.evaluate(
        """() => {
          const v = document.querySelector('#avatar').videoElement;
          return {t: v.currentTime, paused: v.paused, w: v.videoWidth, h: v.videoHeight};
        }"""
    )
    assert not video["paused"]
    assert video["t"] - t0 > 0.5, (t0, video)
    assert video["w"] == EXPECTED_VIDEO_WIDTH

    # The voice arrives: the received audio track carries energy while the avatar speaks.
    during = page.evaluate(AUDIO_STATS_JS)
    assert during["bytes"] > before["bytes"]
    if during["energy"] is not None and before["energy"] is not None:
        assert during["energy"] > before["energy"], (before, during)
    else:
        assert (during["level"] or 0) > 0, during

    stats = page.evaluate("document.querySelector('#avatar').stats()")
    assert stats["framesDecoded"] > 10, stats

    # What Chromium decoded from the VP8 stream carries the invisible watermark: a frame drawn
    # at its own size, and the video element as the page shows it (a screenshot).
    from runtime.provenance.watermark import detect

    png = page.evaluate("""() => {
      const v = document.querySelector('#avatar').videoElement;
      const c = document.createElement('canvas');
      c.width = v.videoWidth; c.height = v.videoHeight;
      c.getContext('2d').drawImage(v, 0, 0);
      return c.toDataURL('image/png').split(',')[1];
    }""")
    frame = np.asarray(Image.open(io.BytesIO(base64.b64decode(png))).convert("RGB"))
    decoded = detect(frame)
    assert decoded.found and decoded.payload.startswith("fc"), decoded
    element = page.evaluate("""() => {
      const r = document.querySelector('#avatar').videoElement.getBoundingClientRect();
      return {x: r.x, y: r.y, width: r.width, height: r.height};
    }""")
    shown = np.asarray(Image.open(io.BytesIO(page.screenshot(clip=element))).convert("RGB"))
    on_page = detect(shown)
    assert on_page.found and on_page.payload == decoded.payload, (element, on_page)
    if OUT_DIR.is_dir():  # what the screenshot was taken with, for the record
        (OUT_DIR / "widget-demo.json").write_text(json.dumps(
            {"audio_before": before, "audio_during": during, "video": video, "stats": stats},
            indent=1))

    # The demo page reports the speech event.
    assert "speech_started" in page.inner_text("#log")

    # Barge-in: the utterance ends early, reported as interrupted.
    mark = event_count(page)
    page.click("#interrupt")
    ended = wait_for_event(page, "speechend", "d.interrupted === true", since=mark)
    assert ended[0]["id"] == started[0]["id"]
    assert ended[0]["played_ms"] > 0
    wait_for_event(page, "statechange", "d.state === 'idle'", since=mark)
    assert page.evaluate("document.querySelector('#avatar').state") == "idle"
    assert "interrupted" in page.inner_text("#log")

    assert page.js_errors == [], page.js_errors


def test_demo_page_microphone_is_the_avatars_voice(server, page):
    """The (fake) microphone streams as one utterance, ended when the toggle is switched off."""
    page.goto(server.url + "/")
    wait_for_event(page, "connected", timeout_ms=FIRST_FRAME_TIMEOUT_MS)
    mark = event_count(page)
    page.click("#mic")
    page.wait_for_function("() => document.querySelector('#avatar').microphoneActive")
    # the page marks the toggle once startMicrophone() has resolved, just after the flag flips
    page.wait_for_function("() => document.querySelector('#mic').getAttribute('aria-pressed') === 'true'")
    assert page.get_attribute("#mic", "aria-pressed") == "true"
    started = wait_for_event(page, "speechstart", since=mark)
    time.sleep(1.0)
    page.click("#mic")
    page.wait_for_function("() => !document.querySelector('#avatar').microphoneActive")
    ended = wait_for_event(page, "speechend", f"d.id === {started[0]['id']!r}", since=mark)
    assert ended[0]["interrupted"] is False
    assert ended[0]["played_ms"] >= 500, ended  # about 1 s of microphone audio
    assert page.js_errors == [], page.js_errors


def _load_widget(page) -> None:
    page.set_content(
        '<!doctype html><body><facecast-avatar id="avatar" server="ws://127.0.0.1:9"></facecast-avatar></body>'
    )
    page.add_script_tag(type="module", path=str(WEB_DIR / "facecast-avatar.js"))
    page.wait_for_function("() => !!customElements.get('facecast-avatar')")


def test_speak_while_disconnected_throws_a_clear_error(page):
    _load_widget(page)
    result = page.evaluate(
        """async () => {
          const el = document.querySelector('#avatar');
          const out = {state: el.state};
          for (const [name, call] of [
            ['speak', () => el.speak('hello')],
            ['sendAudio', () => el.sendAudio(new Float32Array(480), 48000)],
            ['interrupt', () => el.interrupt()],
            ['startMicrophone', () => el.startMicrophone()],
          ]) {
            try { await call(); out[name] = 'no error'; } catch (err) { out[name] = String(err.message || err); }
          }
          return out;
        }"""
    )
    assert result["state"] == "disconnected"
    for name in ("speak", "sendAudio", "interrupt", "startMicrophone"):
        assert "disconnected" in result[name] and "connect()" in result[name], result


def test_unreachable_server_reports_error_without_throwing(page):
    """A failed connection is an `error` event and a readable status, never an uncaught error."""
    _load_widget(page)
    result = page.evaluate(
        """async () => {
          const el = document.querySelector('#avatar');
          const events = [];
          for (const t of ['error', 'disconnected', 'connected']) el.addEventListener(t, (e) => events.push([t, e.detail]));
          let rejected = null;
          try { await el.connect(); } catch (err) { rejected = String(err.message || err); }
          const status = el.shadowRoot.querySelector('.status').textContent;
          return {rejected, events, status, state: el.state};
        }"""
    )
    assert result["rejected"], result
    assert result["state"] == "disconnected"
    types = [t for t, _ in result["events"]]
    assert "error" in types and "connected" not in types, result
    error = next(d for t, d in result["events"] if t == "error")
    assert error["code"] == "connection_failed"
    assert "127.0.0.1:9" in result["status"] or "Disconnected" in result["status"], result
    assert [e for e in page.js_errors if "pageerror" in e] == [], page.js_errors
