"""``FacecastVideoService`` in a real Pipecat pipeline, and the example bot in a real Chromium.

The pipeline test runs Pipecat 1.14's ``PipelineWorker`` / ``WorkerRunner`` (what 1.14 calls
the former ``PipelineTask`` / ``PipelineRunner``) with the service and a recording sink, in real
time, on real speech (Asterisk prompts, fed as a TTS would: ``TTSStartedFrame``,
``TTSAudioRawFrame`` at 24 kHz and 22.05 kHz, ``TTSStoppedFrame``), and judges the mouth on the
output images with mediapipe's Face Mesh (``runtime.evals.face``), a model facecast does not
train. What it measures (fps, onset → sound, onset → mouth, interruption → idle) goes to
``out/pipecat.json`` when ``out/`` exists; only frame counts are asserted, not wall times.

The browser test runs ``facecast pipecat-demo``'s server on loopback and Debian's Chromium
(Playwright, no browser download) over Pipecat's ``SmallWebRTCTransport``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import env_without_test_microphone, pcm16, prompt

pytest.importorskip("pipecat", reason="pipecat-ai (extra facecast[pipecat]) is not installed")

from pipecat.frames.frames import (
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputImageRawFrame,
    SpeechOutputAudioRawFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from engines.audio import OUTPUT_SAMPLE_RATE
from runtime.audio.resample import resample
from runtime.integrations.pipecat_service import FacecastVideoService, pcm_mono
from runtime.integrations.stream import AvatarEngine

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "out"
MOUTH_OPEN_IOD = 0.2
"""Inner-lip gap (inter-ocular distances) above which the mouth counts as open: the default
avatar at rest measures 0.09–0.17 (idle motion included), speaking 0.30 (median)."""
SPEECH_RMS = 0.02
"""RMS (full scale 1) above which a frame's audio counts as speech."""
MOUTH_MOVED_LUMA = 8.0
"""Change of the mouth box's mean luma (levels of 255) from the portrait at rest that a
speaking mouth passes in the browser's decoded video (teeth and cavity: up to ~46 measured;
the idle avatar after VP8: 1.9–3.4)."""
MOUTH_REST_LUMA = 5.0
"""Below this change the mouth counts as at rest again in the browser."""
CHUNK_S = 0.1
"""Seconds of audio per TTSAudioRawFrame the test sends (Pipecat's TTS services send 20 ms to
whole sentences)."""


def tts_frames(pcm: np.ndarray, rate: int) -> list[TTSAudioRawFrame]:
    """int16 mono ``pcm`` at ``rate`` as ``CHUNK_S`` TTS audio frames."""
    step = int(rate * CHUNK_S)
    return [TTSAudioRawFrame(pcm[i:i + step].tobytes(), rate, 1)
            for i in range(0, len(pcm), step)]


class Recorder(FrameProcessor):
    """The pipeline's sink: every frame with its arrival time (``time.monotonic()``)."""

    def __init__(self) -> None:
        super().__init__(name="recorder")
        self.log: list[tuple[float, Frame]] = []
        self.images = 0
        self._changed = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        self.log.append((time.monotonic(), frame))
        if isinstance(frame, OutputImageRawFrame):
            self.images += 1
            self._changed.set()
        await self.push_frame(frame, direction)

    async def wait_images(self, n: int) -> None:
        """Until ``n`` images have arrived."""
        while self.images < n:
            self._changed.clear()
            await self._changed.wait()


def mouth_gaps(images: list[np.ndarray]) -> np.ndarray:
    """Inner-lip gap / IOD of each image (Face Mesh, tracking mode), NaN without a face."""
    pytest.importorskip("mediapipe", reason="mediapipe (extra facecast[enroll]) is needed to "
                        "judge the mouth")
    from avatars.enroll import import_mediapipe, native_stderr_silenced
    from avatars.rig import inner_lip_gap_iod
    from runtime.evals.face import landmarks

    mp = import_mediapipe()
    gaps = []
    with native_stderr_silenced(), mp.solutions.face_mesh.FaceMesh(
            static_image_mode=False, max_num_faces=1, refine_landmarks=True) as mesh:
        for rgb in images:
            lm = landmarks(mesh, rgb)
            gaps.append(np.nan if lm is None else float(inner_lip_gap_iod(lm[None])[0]))
    return np.array(gaps)


def test_pcm_mono_averages_channels() -> None:
    stereo = np.array([[100, 300], [-5, -7], [32767, 32767]], np.int16).ravel()
    frame = TTSAudioRawFrame(stereo.tobytes(), 24000, 2)
    assert pcm_mono(frame).tolist() == [200, -6, 32767]
    with pytest.raises(ValueError, match="whole"):
        pcm_mono(TTSAudioRawFrame(stereo[:5].tobytes(), 24000, 2))


@pytest.fixture(scope="module")
def pipeline_run() -> dict:
    """One real-time pipeline run: 1 s idle, "Hello world" (24 kHz), 2 s, "Goodbye. Thank you
    for trying…" (22.05 kHz) interrupted 1.6 s in, 1 s, EndFrame."""
    hello, rate = prompt("hello-world")
    thanks, _ = prompt("demo-thanks")
    first = pcm16(resample(hello, rate, 24000))
    second = pcm16(resample(thanks, rate, 22050))

    async def main() -> dict:
        engine = await AvatarEngine.start()
        face = FacecastVideoService(engine=engine)
        sink = Recorder()
        worker = PipelineWorker(Pipeline([face, sink]), enable_rtvi=False,
                                idle_timeout_secs=None)
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        marks: dict = {}

        async def script() -> None:
            await sink.wait_images(25)
            marks["onset"] = time.monotonic()
            await worker.queue_frames([TTSStartedFrame(), *tts_frames(first, 24000),
                                       TTSStoppedFrame()])
            await sink.wait_images(25 + 85)
            await worker.queue_frames([TTSStartedFrame(), *tts_frames(second, 22050)])
            await sink.wait_images(25 + 85 + 40)
            marks["interrupt"] = time.monotonic()
            await worker.queue_frame(InterruptionFrame())
            await sink.wait_images(25 + 85 + 40 + 25)
            marks["dropped"] = face.stream.frames_dropped
            marks["repeated"] = face.stream.images_repeated
            await worker.queue_frame(EndFrame())

        task = asyncio.create_task(script())
        try:
            await asyncio.wait_for(runner.run(), 120)
            await task
        finally:
            await engine.aclose()
        return {"log": sink.log, "marks": marks, "first": first}

    return asyncio.run(main())


def media(log: list) -> list[tuple[float, str, object]]:
    """(time, "image" | "audio" | "interruption", frame) of the sink's log, in order."""
    out = []
    for t, frame in log:
        if isinstance(frame, OutputImageRawFrame):
            out.append((t, "image", frame))
        elif isinstance(frame, SpeechOutputAudioRawFrame):
            out.append((t, "audio", frame))
        elif isinstance(frame, InterruptionFrame):
            out.append((t, "interruption", frame))
    return out


def pairs(log: list) -> list[tuple[float, np.ndarray, np.ndarray, bool]]:
    """(arrival time, image uint8 [H, W, 3], audio int16 [n], after the interruption) of each
    image and the audio frame right after it; checks that they alternate (an interruption may
    drop the audio of the image just before it, which the sink had not processed yet)."""
    seq = media(log)
    out, after = [], False
    for i, (t, kind, frame) in enumerate(seq):
        if kind == "interruption":
            after = True
            continue
        if kind != "image":
            assert seq[i - 1][1] == "image", f"audio without its image at {i}"
            continue
        nxt = seq[i + 1] if i + 1 < len(seq) else None
        if nxt is None or nxt[1] == "interruption":
            continue
        assert nxt[1] == "audio", f"image without its audio at {i}"
        w, h = frame.size
        image = np.frombuffer(frame.image, np.uint8).reshape(h, w, 3)
        out.append((t, image, np.frombuffer(nxt[2].audio, np.int16), after))
    return out


def test_frames_come_at_the_avatar_rate_each_image_with_exactly_its_audio(pipeline_run):
    log = pipeline_run["log"]
    assert not any(isinstance(f, TTSAudioRawFrame) for _, f in log)  # swallowed, not unpaced
    assert sum(isinstance(f, (TTSStartedFrame, TTSStoppedFrame)) for _, f in log) == 3
    got = pairs(log)
    for _, image, audio, _ in got:
        assert image.shape == (512, 512, 3) and len(audio) == 1920  # 40 ms at 48 kHz
    for _, f in log:
        if isinstance(f, SpeechOutputAudioRawFrame):
            assert f.sample_rate == OUTPUT_SAMPLE_RATE and f.num_channels == 1
    times = np.array([t for t, *_ in got])
    fps = (len(times) - 1) / (times[-1] - times[0])
    assert 24.0 <= fps <= 26.0, fps
    assert pipeline_run["marks"]["dropped"] == 0
    # the first utterance comes out as the whole clip resampled to 48 kHz, nothing lost
    expected = pcm16(resample(pipeline_run["first"].astype(np.float32) / 32767.0, 24000,
                              OUTPUT_SAMPLE_RATE))
    out = np.concatenate([a for _, _, a, after in got if not after])
    shift = int(np.flatnonzero(out)[0]) - int(np.flatnonzero(expected)[0])
    part = out[shift:shift + len(expected)].astype(np.int32)
    assert np.abs(part - expected).max() <= 1
    assert not out[shift + len(expected):shift + len(expected) + 48000].any()  # then silence
    record("fps", round(fps, 2))
    record("images_repeated", pipeline_run["marks"]["repeated"])


def test_tts_start_and_stop_frames_travel_with_the_first_and_last_sample(pipeline_run):
    """They are held back and sent with the speech they frame: TTSStartedFrame right before
    the image whose audio starts the utterance, TTSStoppedFrame right after the audio that
    ends it (the output transport flushes its audio buffer at TTSStoppedFrame)."""
    log = [f for _, f in pipeline_run["log"]
           if isinstance(f, (OutputImageRawFrame, SpeechOutputAudioRawFrame, TTSStartedFrame,
                             TTSStoppedFrame, InterruptionFrame))]
    kinds = [type(f) for f in log]
    voiced = [isinstance(f, SpeechOutputAudioRawFrame) and any(f.audio) for f in log]
    start, stop = kinds.index(TTSStartedFrame), kinds.index(TTSStoppedFrame)
    second = kinds.index(TTSStartedFrame, start + 1)
    assert kinds[start + 1:start + 3] == [OutputImageRawFrame, SpeechOutputAudioRawFrame]
    assert voiced[start + 2] and not any(voiced[:start])  # the first sample, not before
    assert kinds[stop - 1] == SpeechOutputAudioRawFrame and voiced[stop - 1]  # the last one
    assert not any(voiced[stop:second])  # silence until the next utterance
    assert voiced[second + 2]


def test_the_mouth_opens_with_speech_and_not_in_silence(pipeline_run):
    got = pairs(pipeline_run["log"])
    onset = pipeline_run["marks"]["onset"]
    before = [i for i, (t, *_) in enumerate(got) if t < onset]
    hello = [i for i, (t, _, a, after) in enumerate(got) if t >= onset and not after][:80]
    gaps = mouth_gaps([got[i][1] for i in before + hello])
    idle, speaking = gaps[:len(before)], gaps[len(before):]
    rms = np.array([np.sqrt(np.mean((got[i][2] / 32767.0) ** 2)) for i in hello])
    assert len(before) >= 20 and np.nanmax(idle) < MOUTH_OPEN_IOD  # silent: closed
    assert np.nanmedian(speaking[rms > SPEECH_RMS]) > MOUTH_OPEN_IOD  # speech: open
    assert np.nanmedian(speaking[rms < 1e-4]) < MOUTH_OPEN_IOD  # the silence after it
    first_audio = next(k for k, i in enumerate(hello) if got[i][2].any())
    first_speech = int(np.flatnonzero(rms > SPEECH_RMS)[0])
    first_open = next(k for k, g in enumerate(speaking) if g > MOUTH_OPEN_IOD)
    assert 0 <= first_open - first_speech <= 3  # the mouth follows the voice within 3 frames
    record("onset_to_first_audio_ms", round((got[hello[first_audio]][0] - onset) * 1000))
    record("onset_to_speech_ms", round((got[hello[first_speech]][0] - onset) * 1000))
    record("onset_to_mouth_ms", round((got[hello[first_open]][0] - onset) * 1000))
    record("speech_to_mouth_frames", first_open - first_speech)


def test_an_interruption_silences_and_idles_the_avatar_within_200_ms(pipeline_run):
    got = pairs(pipeline_run["log"])
    cut = pipeline_run["marks"]["interrupt"]
    before = [i for i, p in enumerate(got) if not p[3]][-10:]
    after = [i for i, p in enumerate(got) if p[3]][:25]
    assert any(got[i][2].any() for i in before)  # it was speaking
    gaps = mouth_gaps([got[i][1] for i in before + after])[len(before):]
    quiet = [k for k in range(len(after)) if not got[after[k]][2].any()]
    idle = next(k for k in quiet if all(not got[i][2].any() for i in after[k:])
                and gaps[k] < MOUTH_OPEN_IOD)
    assert idle < 5, idle  # images after the interruption until silent with the mouth closed
    assert all(not got[i][2].any() for i in after[idle:])  # and it stays silent
    record("interruption_to_silence_ms", round((got[after[quiet[0]]][0] - cut) * 1000))
    record("interruption_to_idle_ms", round((got[after[idle]][0] - cut) * 1000))
    record("interruption_frames_to_idle", idle + 1)


def record(key: str, value) -> None:
    """Keep a measured figure in out/pipecat.json (when out/ exists) and print it."""
    print(f"{key}: {value}")
    if OUT_DIR.is_dir():
        path = OUT_DIR / "pipecat.json"
        data = json.loads(path.read_text()) if path.is_file() else {}
        data[key] = value
        path.write_text(json.dumps(data, indent=1))


# --- the example bot in Chromium -----------------------------------------------------------
CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = [  # shared/RECIPES.md, as tests/test_widget.py
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection",
]

VIDEO_STATE_JS = """() => {
  const v = window.demo && window.demo.video;
  if (!v) return null;
  const q = v.getVideoPlaybackQuality();
  return {width: v.videoWidth, height: v.videoHeight, time: v.currentTime,
          frames: q.totalVideoFrames, state: window.demo.pc.connectionState};
}"""
PIXELS_JS = """() => {
  const v = window.demo.video, c = document.createElement('canvas');
  c.width = v.videoWidth; c.height = v.videoHeight;
  const g = c.getContext('2d'); g.drawImage(v, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let sum = 0, sq = 0, n = 0;
  for (let i = 0; i < d.length; i += 4 * 97) { const y = d[i + 1]; sum += y; sq += y * y; n++; }
  return {mean: sum / n, std: Math.sqrt(sq / n - (sum / n) ** 2)};
}"""
MOUTH_JS = """([x0, y0, x1, y1]) => {
  const v = window.demo.video, c = document.createElement('canvas');
  c.width = v.videoWidth; c.height = v.videoHeight;
  const g = c.getContext('2d'); g.drawImage(v, 0, 0);
  const d = g.getImageData(x0, y0, x1 - x0, y1 - y0).data;
  let sum = 0;
  for (let i = 0; i < d.length; i += 4) sum += 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2];
  return sum / (d.length / 4);
}"""
AUDIO_JS = """async () => {
  let out = null;
  (await window.demo.pc.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'audio') out = s.totalAudioEnergy ?? 0;
  });
  return out;
}"""


@pytest.fixture
def demo_server():
    """``facecast pipecat-demo``'s server on loopback, port 0, in a thread with its own loop."""
    from runtime.integrations.pipecat_demo import DemoOptions, DemoServer

    loop = asyncio.new_event_loop()
    server = DemoServer(DemoOptions(port=0))
    started = threading.Event()
    box: dict = {}

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.start())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            box["error"] = exc
        started.set()
        if "error" not in box:
            loop.run_forever()

    thread = threading.Thread(target=main, name="pipecat-demo", daemon=True)
    thread.start()
    started.wait(120)
    if "error" in box:
        raise box["error"]
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)


def test_the_example_bot_speaks_in_chromium_over_smallwebrtc(demo_server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed")
    box, rest = mouth_box()
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=CHROMIUM_ARGS, env=env_without_test_microphone())
        try:
            page = browser.new_page(viewport={"width": 720, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"http://127.0.0.1:{demo_server.port}/")
            page.click("#start")
            page.wait_for_function("() => window.demo && window.demo.video.videoWidth > 0",
                                   timeout=30_000)
            first = page.evaluate(VIDEO_STATE_JS)
            time.sleep(2.0)
            later = page.evaluate(VIDEO_STATE_JS)
            energy0 = page.evaluate(AUDIO_JS)
            page.fill("#text", "Please enter your password followed by the pound key.")
            page.click("#say")
            moved = 0.0  # largest change of the mouth's luma from the portrait at rest
            for _ in range(20):  # the greeting, then the sentence: keep the widest mouth
                change = abs(page.evaluate(MOUTH_JS, list(box)) - rest)
                if change > moved:
                    moved = change
                    page.screenshot(path=str(tmp_path / "pipecat-demo.png"))
                time.sleep(0.1)
            energy1 = page.evaluate(AUDIO_JS)
            pixels = page.evaluate(PIXELS_JS)
            settled = stop_while_speaking(page, box, rest)
        finally:
            browser.close()
    assert not errors, errors
    assert first["state"] == "connected" and (first["width"], first["height"]) == (512, 512)
    assert later["time"] > first["time"] + 1.0  # playing, not a still
    assert later["frames"] - first["frames"] >= 25  # frames decoded (50 due in 2 s)
    assert pixels["std"] > 20  # a picture, not a blank frame
    assert energy1 is not None and energy1 > (energy0 or 0.0)  # the bot's voice arrives
    assert moved > MOUTH_MOVED_LUMA, moved  # the mouth moves in the decoded video
    assert settled is not None  # and comes to rest after Stop
    if OUT_DIR.is_dir():
        shutil.copyfile(tmp_path / "pipecat-demo.png", OUT_DIR / "pipecat-demo.png")
    record("browser_decoded_fps", round((later["frames"] - first["frames"])
                                        / (later["time"] - first["time"]), 1))
    record("browser_mouth_luma_change", round(moved, 1))
    record("browser_stop_to_mouth_at_rest_ms", round(settled * 1000))


def stop_while_speaking(page, box, rest: float) -> float | None:
    """Wait for an open mouth, press Stop (an interruption over the data channel) and return
    the seconds until the mouth is at rest in 10 consecutive samples (the first of them); None
    if it never opens or never settles within 3 s."""
    def mouth() -> float:
        return abs(page.evaluate(MOUTH_JS, list(box)) - rest)

    deadline = time.monotonic() + 3.0
    while mouth() < MOUTH_MOVED_LUMA:
        if time.monotonic() > deadline:
            return None
    page.click("#stop")
    t_stop, run_start, run = time.monotonic(), None, 0
    while run < 10 and time.monotonic() - t_stop < 3.0:
        if mouth() < MOUTH_REST_LUMA:
            run_start, run = (run_start or time.monotonic()), run + 1
        else:
            run_start, run = None, 0
        time.sleep(0.02)
    return run_start - t_stop if run >= 10 else None


def mouth_box() -> tuple[tuple[int, int, int, int], float]:
    """The default avatar's mouth box (x0, y0, x1, y1), pixels of its 512×512 frame: the inner
    lips at rest, widened for an open jaw; and its mean luma (Rec. 601) at rest."""
    import avatars
    from avatars import topology as T

    bundle = avatars.load("default")
    lips = bundle.landmarks[list(T.LIPS_INNER_UPPER) + list(T.LIPS_INNER_LOWER), :2]
    (x0, y0), (x1, y1) = lips.min(axis=0), lips.max(axis=0)
    box = (int(x0), int(y0) - 5, int(x1) + 1, int(y1) + 20)
    patch = bundle.image[box[1]:box[3], box[0]:box[2]].astype(np.float64)
    return box, float((patch @ [0.299, 0.587, 0.114]).mean())


def test_the_demo_refuses_bad_offers_and_a_public_bind_without_insecure(demo_server):
    import urllib.error
    import urllib.request

    from runtime.integrations.pipecat_demo import DemoOptions, DemoServer

    def post(body: bytes) -> tuple[int, dict]:
        request = urllib.request.Request(f"http://127.0.0.1:{demo_server.port}/api/offer",
                                         data=body, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    assert post(b"not json") == (400, {"error": "expected JSON {sdp, type}"})
    code, reply = post(json.dumps({"sdp": "v=0 garbage", "type": "offer"}).encode())
    assert code == 400 and reply["error"].startswith("bad offer")
    assert not demo_server.bots
    with pytest.raises(ValueError, match="--insecure"):
        DemoServer(DemoOptions(host="0.0.0.0"))
