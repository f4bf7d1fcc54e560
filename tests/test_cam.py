"""``facecast cam``: microphone → live session → sinks, end to end through real PortAudio.

The end-to-end test runs the ``facecast cam`` command itself (``python -m runtime.cli cam``) on
the test microphone of ``test_mic`` (a private PulseAudio's null-sink monitor, listed by
PortAudio through ALSA's pulse plugin), plays a held-out Asterisk prompt into it in real time,
and judges the recorded MP4 independently: streams and frame count, the prompt's energy envelope
in the recorded audio, and the mouth following the voice by mediapipe (``evaluate_sync``).
A real microphone takes exactly this path; only the device differs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyaudio", reason="PyAudio is not installed (pip install pyaudio)")

from conftest import ROOT
from test_mic import (
    MIC_NAME,
    best_alignment,
    envelope_db,
    prompt_audio,
)

from runtime.live.speech import SpeechQueue
from runtime.local.cam import MAX_BACKLOG_SLICES, CamOptions, MicFeed, run_cam
from runtime.local.mic import Chunk
from runtime.local.sinks import (
    PreviewWindow,
    Recorder,
    Sink,
    SinkUnavailable,
    VirtualCamera,
    display_problem,
    vcam_install_hint,
)

SECONDS = 6.0
LEAD_S = 1.2


def _decode(path: Path) -> tuple[list[float], np.ndarray, int, tuple[int, int]]:
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        a = c.streams.audio[0]
        assert v.codec_context.name == "h264" and a.codec_context.name == "aac"
        size = (v.codec_context.width, v.codec_context.height)
        times = [float(f.pts * f.time_base) for f in c.decode(v)]
    with av.open(str(path)) as c:
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
        rate = c.streams.audio[0].codec_context.sample_rate
    return times, samples.astype(np.float32), rate, size


def test_facecast_cam_records_the_voice_with_a_moving_mouth(sound_server, tmp_path):
    audio, rate = prompt_audio()
    out = tmp_path / "cam.mp4"
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "cam", "--device", MIC_NAME, "--record", str(out),
         "--seconds", str(SECONDS), "--json"],
        cwd=ROOT, env={**sound_server.env, "PYTHONPATH": str(ROOT), "PYTHONFAULTHANDLER": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = []

    def watch() -> None:
        started.extend(proc.stderr)

    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while not any("facecast cam: microphone" in s for s in started):
        assert proc.poll() is None, "".join(started)
        assert time.monotonic() < deadline, "facecast cam did not start"
        time.sleep(0.05)
    assert f"'{MIC_NAME}'" in started[-1] and "record" in started[-1]
    lead = np.zeros(int(LEAD_S * rate), np.float32)
    player = sound_server.play(np.concatenate([lead, audio]), rate)
    stdout, _ = proc.communicate(timeout=120)
    player.wait(10)
    reader.join(5)
    assert proc.returncode == 0, "".join(started)
    report = json.loads(stdout.strip().splitlines()[-1])

    # the report: what ran, mic→frame latency measured on every chunk, nothing lost
    assert report["device"]["name"] == MIC_NAME and report["stopped_by"] == "seconds"
    assert report["errors"] == {}
    lat = report["latency_ms"]
    assert lat["n"] > 100 and 0 < lat["median"] <= lat["p95"] <= lat["max"]
    assert report["mic"]["dropped"] == 0
    assert report["outputs"]["record"] == str(out)

    # the recording: the frames the session rendered, on the session's 25 fps clock
    times, recorded, rec_rate, size = _decode(out)
    assert size == (512, 512)
    assert len(times) == report["frames_rendered"] == report["outputs"]["record_frames"]
    assert abs(report["frames"] - SECONDS * 25) <= 10  # one tick per frame, on time
    assert len(times) >= 0.5 * report["frames"]  # video may drop on a busy CPU, audio never
    steps = np.round(np.diff(times) * 25, 3)
    assert np.all(steps == np.round(steps)) and np.all(steps >= 1)  # pts on the frame grid
    assert rec_rate == 48000 and abs(len(recorded) / rec_rate - report["frames"] / 25) < 0.2

    # the voice: the whole prompt is in the recording with its energy envelope
    ref = envelope_db(audio, rate)
    env = envelope_db(recorded, rec_rate)
    lag, corr = best_alignment(ref, env)
    # a busy CPU may leave a 40 ms jitter-buffer gap or trim in it (report["mic"]): judge the
    # match as a whole, and hop by hop
    assert corr > 0.75, (corr, report["mic"])
    seg = recorded[int(lag * 0.01 * rec_rate):int((lag * 0.01 + len(audio) / rate) * rec_rate)]
    level_db = 10 * np.log10(np.mean(seg.astype(np.float64) ** 2) / np.mean(audio ** 2.0))
    assert abs(level_db) < 3.0, level_db  # the voice at its own level

    # the mouth follows the voice (judged by mediapipe on the decoded frames)
    from runtime.evals.sync import evaluate_sync

    sync = evaluate_sync(out)
    assert sync.frames_without_face == 0
    assert sync.corr > 0.5, sync
    assert abs(sync.av_offset_ms) <= 80, sync


# --- the jitter buffer (unit: chunks pushed by hand, no PortAudio) ---------------------------
class _Source:
    def __init__(self, feed: MicFeed) -> None:
        self.feed = feed
        self.index = 0

    def add(self, n_chunks: int, rate: int = 48000) -> None:
        for _ in range(n_chunks):
            x = np.full(960, 0.1, np.float32)
            self.feed.push(Chunk(x, rate, self.index, time.monotonic()))
            self.index += 960


def test_mic_feed_feeds_whole_slices_and_bounds_the_backlog():
    feed, q = MicFeed(1920), SpeechQueue()
    src = _Source(feed)
    assert feed.step(q) is None and feed.underruns == 0  # nothing captured yet: no underrun
    src.add(1)
    assert feed.step(q) is None and feed.underruns == 1  # half a slice waits
    src.add(1)
    assert feed.step(q) == (0, 1920) and q.buffered == 1920
    q.pull(1920)
    src.add(2)
    assert feed.step(q) == (1920, 3840)
    q.pull(1920)
    src.add(2 + 2 * MAX_BACKLOG_SLICES + 1)  # a burst: more than the backlog allows
    a, b = feed.step(q)
    assert (a, b) == (3840, 5760)
    assert feed.trimmed == (2 * MAX_BACKLOG_SLICES + 1) * 960 - 1920  # one slice of margin left
    q.pull(1920)
    assert feed.step(q) == (feed.start_pos - 1920, feed.start_pos)
    assert [end for end, _ in feed.chunks][:3] == [960, 1920, 2880]


# --- outputs and their errors ---------------------------------------------------------------
def test_vcam_unavailable_says_what_to_install():
    if any(Path("/dev").glob("video*")):
        pytest.skip("a video device exists here; the missing-backend message cannot be shown")
    with pytest.raises(SinkUnavailable) as err:
        VirtualCamera(512, 512, 25)
    message = str(err.value)
    assert message.startswith("no virtual camera available")
    assert "sudo apt install v4l2loopback-dkms" in message and "modprobe v4l2loopback" in message
    assert "OBS" in vcam_install_hint("darwin") and "OBS" in vcam_install_hint("win32")


def test_cam_cli_vcam_error_is_one_line_and_writes_nothing(sound_server, tmp_path):
    if any(Path("/dev").glob("video*")):
        pytest.skip("a video device exists here")
    out = tmp_path / "never.mp4"
    r = subprocess.run([sys.executable, "-m", "runtime.cli", "cam", "--device", MIC_NAME,
                        "--vcam", "--record", str(out), "--seconds", "1"],
                       cwd=ROOT, env={**sound_server.env, "PYTHONPATH": str(ROOT)},
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("facecast cam: error: no virtual camera available")
    assert "v4l2loopback" in lines[-1]
    assert list(tmp_path.iterdir()) == []  # the recorder's part file was removed


def test_cam_needs_an_output_and_a_real_device(sound_server):
    with pytest.raises(ValueError, match="choose at least one output"):
        run_cam(CamOptions(device=MIC_NAME))
    from runtime.local.mic import MicError

    with pytest.raises(MicError, match="no input device named like 'nope'"):
        run_cam(CamOptions(device="nope", record="/tmp/x.mp4"))


def test_preview_without_display_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if sys.platform.startswith(("win", "darwin")):
        pytest.skip("always a display on this platform")
    with pytest.raises(SinkUnavailable, match=r"no display: \$DISPLAY is not set"):
        PreviewWindow()
    assert display_problem("win32", {}) is None
    assert display_problem("linux", {"DISPLAY": ":0"}) is None


def test_preview_window_shows_frames_on_a_virtual_display(tmp_path):
    """Under Xvfb (apt install xvfb): the Tk fallback window opens and shows frames."""
    import shutil

    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb not installed (apt install xvfb)")
    pytest.importorskip("tkinter", reason="tkinter missing (apt install python3-tk)")
    code = (
        "import time, numpy as np\n"
        "from runtime.local.sinks import PreviewWindow\n"
        "w = PreviewWindow('t')\n"
        "f = np.full((64, 64, 3), 200, np.uint8)\n"
        "for i in range(20):\n"
        "    w.write(i, f, np.zeros(1920, np.float32)); time.sleep(0.03)\n"
        "time.sleep(0.2); print(w.backend, w.frames); w.close()\n")
    display = ":93"
    xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "640x480x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                           text=True, timeout=60, check=False,
                           env={**os.environ, "DISPLAY": display, "PYTHONPATH": str(ROOT)})
    finally:
        xvfb.terminate()
        xvfb.wait(5)
    assert r.returncode == 0, r.stderr
    backend, shown = r.stdout.split()
    assert backend in ("tk", "opencv") and int(shown) >= 5


def test_recorder_refuses_bad_paths_and_keeps_nothing_on_abort(tmp_path):
    with pytest.raises(SinkUnavailable, match="does not exist"):
        Recorder(tmp_path / "missing" / "a.mp4", 64, 64, 25)
    with pytest.raises(SinkUnavailable, match="is a folder"):
        Recorder(tmp_path, 64, 64, 25)
    rec = Recorder(tmp_path / "a.mp4", 64, 64, 25)
    rec.write(0, np.zeros((64, 64, 3), np.uint8), np.zeros(1920, np.float32))
    rec.close(abort=True)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SinkUnavailable, match="no frame was rendered"):
        Recorder(tmp_path / "b.mp4", 64, 64, 25).close()
    assert list(tmp_path.iterdir()) == []


def test_recorder_is_a_sink_on_the_session_clock(tmp_path):
    """The ``Sink`` calls on the recorder: frames with a gap (a dropped frame) and every audio
    slice; the file has the video pts of the frames written and all of the audio."""
    import av

    rec: Sink = Recorder(tmp_path / "r.mp4", 64, 48, 25)
    assert rec.name == "record" and rec.target == str(tmp_path / "r.mp4")
    ramp = np.linspace(-0.5, 0.5, 1920, dtype=np.float32)
    for n in range(10):
        image = None if n == 4 else np.full((48, 64, 3), 20 * n, np.uint8)
        rec.write(n, image, ramp)
    with pytest.raises(ValueError, match="audio slice of 960 samples"):
        rec.write(10, None, ramp[:960])  # not the clock's slice
    assert "wrote" in rec.close() and rec.frames == 9
    assert rec.close() == rec.close()  # twice is fine
    with av.open(str(tmp_path / "r.mp4")) as c:
        tb = c.streams.video[0].time_base
        pts = [round(f.pts * tb * 48000) for f in c.decode(video=0)]
    with av.open(str(tmp_path / "r.mp4")) as c:
        samples = sum(f.samples for f in c.decode(audio=0) if f.pts is not None and f.pts >= 0)
    assert pts == [n * 1920 for n in range(10) if n != 4]
    assert abs(samples - 10 * 1920) <= 1024


def test_facecast_cam_drive_webcam_from_a_video_file(sound_server, tmp_path):
    """``facecast cam --drive webcam``: a rendered clip of the default avatar stands in for the
    camera (VideoSource plays a file in real time exactly as it reads a device), the mic is the
    test microphone; the camera drives the face while the clip lasts, then the voice and the
    behaviour take over, and the recording has a face in every frame."""
    driver = tmp_path / "driver.mp4"
    subprocess.run([sys.executable, "-m", "runtime.cli", "render", "--avatar", "default",
                    "--size", "256", "--out", str(driver), "--text", "Hello there, look at me."],
                   cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True,
                   capture_output=True)
    out = tmp_path / "cam.mp4"
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "cam", "--device", MIC_NAME, "--record", str(out),
         "--seconds", "5", "--drive", "webcam", "--camera", str(driver), "--json"],
        cwd=ROOT, env={**sound_server.env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started: list[str] = []
    reader = threading.Thread(target=lambda: started.extend(proc.stderr), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while not any("facecast cam: microphone" in s for s in started):
        assert proc.poll() is None, "".join(started)
        assert time.monotonic() < deadline, "facecast cam did not start"
        time.sleep(0.05)
    audio, rate = prompt_audio()
    player = sound_server.play(np.concatenate([np.zeros(int(LEAD_S * rate), np.float32), audio]),
                               rate)
    stdout, _ = proc.communicate(timeout=120)
    player.wait(10)
    reader.join(5)
    assert proc.returncode == 0, "".join(started)
    report = json.loads(stdout.strip().splitlines()[-1])
    drive = report["drive"]
    assert drive["error"] is None and drive["camera"] == str(driver)
    assert drive["frames_output"] >= 0.8 * report["frames"]
    assert drive["frames_tracked"] >= 25  # about 2 s of the clip drove the face
    from runtime.evals.sync import evaluate_sync

    sync = evaluate_sync(out)  # the face is there throughout and the mic's voice moves its mouth
    assert sync.frames_without_face == 0
    assert sync.corr > 0.3, sync


def test_facecast_cam_drive_webcam_missing_camera_is_one_line(sound_server):
    proc = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "cam", "--device", MIC_NAME, "--record",
         "/tmp/never.mp4", "--drive", "webcam", "--camera", "97"],
        check=False, cwd=ROOT, env={**sound_server.env, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("facecast cam: error: no camera 97")
    assert not Path("/tmp/never.mp4").exists()
