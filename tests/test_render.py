"""`facecast render` end to end on real speech and text, judged by `facecast eval sync`; the
one clock in the written MP4; every bad input a one-line error that leaves no file behind."""

from __future__ import annotations

import json
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from runtime.cli import main

PROMPT = Path("/usr/share/asterisk/sounds/en/demo-enterkeywords.g722")  # held-out prompt
TEXT = "Please bring a map, a pen and a bottle of water to the meeting."


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def prompt_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not PROMPT.is_file():
        pytest.skip("asterisk-core-sounds-en-g722 is not installed")
    out = tmp_path_factory.mktemp("render") / "a.mp4"
    assert main(["render", "--avatar", "default", "--audio", str(PROMPT), "--out", str(out),
                 "--size", "256", "--backend", "onnxruntime"]) == 0
    return out


@pytest.fixture(scope="module")
def text_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("render") / "b.mp4"
    assert main(["render", "--avatar", "default", "--text", TEXT, "--out", str(out),
                 "--size", "256", "--fps", "30", "--json"]) == 0
    return out


def _streams(path: Path) -> tuple[list[int], list[tuple[int, int]], dict]:
    with av.open(str(path)) as c:
        info = {"video": c.streams.video[0].codec_context.name,
                "audio": c.streams.audio[0].codec_context.name,
                "rate": c.streams.audio[0].rate,
                "size": (c.streams.video[0].width, c.streams.video[0].height),
                "time_base": c.streams.video[0].time_base}
        video = [f.pts for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        audio = [(f.pts, f.samples) for f in c.decode(audio=0)]
    return video, audio, info


def test_render_prompt_plays_on_one_clock_and_lips_sync(prompt_video: Path, capsys) -> None:
    video, audio, info = _streams(prompt_video)
    assert info["video"] == "h264" and info["audio"] == "aac" and info["rate"] == 48000
    assert info["size"] == (512, 512)
    # frame n's pts is the first output-audio sample of its slice: n · 48000 / 25
    tb = info["time_base"]
    starts = [Fraction(p) * tb for p in video]
    assert starts == [Fraction(n * 1920, 48000) for n in range(len(video))]
    with av.open(str(PROMPT)) as c:
        seconds = float(c.streams.audio[0].duration * c.streams.audio[0].time_base)
    assert len(video) == -(-round(seconds * 48000) // 1920)  # ceil: the last slice is padded
    decoded = sum(n for pts, n in audio if pts is not None and pts >= 0)
    assert abs(decoded - len(video) * 1920) <= 1024  # AAC frames of 1024 samples

    capsys.readouterr()
    assert main(["eval", "sync", str(prompt_video), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert abs(report["av_offset_ms"]) <= 40
    assert report["corr"] >= 0.5
    assert report["frames_without_face"] == 0 and report["frames"] == len(video)


def test_render_text_at_30_fps(text_video: Path, capsys) -> None:
    video, _, info = _streams(text_video)
    assert [Fraction(p) * info["time_base"] for p in video[:4]] == \
        [Fraction(n * 1600, 48000) for n in range(4)]
    assert main(["eval", "sync", str(text_video), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert abs(report["av_offset_ms"]) <= 40 and report["corr"] >= 0.5
    assert report["frames_without_face"] == 0
    assert abs(report["fps"] - 30) < 0.01


def test_render_is_reproducible_and_blinks(tmp_path: Path) -> None:
    from runtime.audio.decode import load_audio
    from runtime.audio.resample import resample
    from runtime.offline.render import animate

    if not PROMPT.is_file():
        pytest.skip("asterisk-core-sounds-en-g722 is not installed")
    audio, rate = load_audio(PROMPT)
    a16 = resample(audio, rate, 16000)
    one = animate(a16, 150, 25.0, seed=4)
    two = animate(a16, 150, 25.0, seed=4)
    assert np.array_equal(one.coeffs, two.coeffs) and np.array_equal(one.pose, two.pose)
    assert len(one.blinks) >= 1  # 6 s at ~17 a minute
    jaw = one.coeffs[:, 0]
    assert jaw.max() > 0.4 and jaw[:3].max() < 0.1  # opens on speech, closed at the silent start


def _wav(path: Path, seconds: float, rate: int = 16000) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.zeros(int(seconds * rate), np.int16).tobytes())
    return path


@pytest.mark.parametrize("case", ["missing", "undecodable", "empty", "text_too_long",
                                  "text_empty", "unknown_avatar", "bad_voice", "out_is_folder",
                                  "out_folder_missing", "out_unwritable", "bad_fps"])
def test_bad_input_is_one_line_error_and_leaves_nothing(case: str, tmp_path: Path,
                                                        capsys) -> None:
    work = tmp_path / "work"
    work.mkdir()
    out = work / "out.mp4"
    args = ["render", "--size", "256", "--out", str(out)]
    if case == "missing":
        args += ["--audio", str(work / "nope.wav")]
    elif case == "undecodable":
        (work / "bad.wav").write_text("not audio")
        args += ["--audio", str(work / "bad.wav")]
    elif case == "empty":
        args += ["--audio", str(_wav(work / "empty.wav", 0.0))]
    elif case == "text_too_long":
        args += ["--text", "a" * 5001]
    elif case == "text_empty":
        args += ["--text", "   "]
    elif case == "unknown_avatar":
        args += ["--text", "hi", "--avatar", "nobody_here"]
    elif case == "bad_voice":
        args += ["--text", "hi", "--voice", "xx-nonexistent"]
    elif case == "out_is_folder":
        args = ["render", "--text", "hi", "--out", str(work)]
    elif case == "out_folder_missing":
        args = ["render", "--text", "hi", "--out", str(work / "no" / "such" / "a.mp4")]
    elif case == "out_unwritable":
        args = ["render", "--text", "hi", "--out", "/proc/facecast-test.mp4"]
    elif case == "bad_fps":
        args += ["--text", "hi", "--fps", "0"]
    before = _files(work)
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("facecast render: error: "), err
    assert _files(work) == before  # no output, no temporary file


def test_audio_over_one_hour_is_refused(tmp_path: Path, capsys) -> None:
    long = _wav(tmp_path / "long.wav", 3601.0, rate=8000)
    assert main(["render", "--audio", str(long), "--out", str(tmp_path / "x.mp4")]) == 1
    assert "limit of 1 h:" in capsys.readouterr().err
    assert _files(tmp_path) == ["long.wav"]


def test_failure_mid_render_removes_the_partial_file(tmp_path: Path, monkeypatch) -> None:
    import avatars
    from runtime.compositor import Compositor
    from runtime.offline import render

    calls = {"n": 0}

    class Failing(Compositor):
        def paste(self, crop):
            calls["n"] += 1
            if calls["n"] > 5:
                raise RuntimeError("disk full (simulated)")
            return super().paste(crop)

    monkeypatch.setattr("runtime.compositor.Compositor", Failing)  # render imports it late
    out = tmp_path / "c.mp4"
    audio = 0.1 * np.sin(2 * np.pi * 220 * np.arange(32000) / 16000).astype(np.float32)
    with pytest.raises(RuntimeError, match="disk full"):
        render.render_audio(avatars.load("default"), audio, 16000, out,
                            render.RenderOptions(size=256))
    assert calls["n"] == 6
    assert _files(tmp_path) == []


def test_mp4_writer_stamps_both_streams_from_the_one_clock(tmp_path: Path) -> None:
    """At 29.97 fps (30000/1001) slices alternate between 1601 and 1602 samples; video pts and
    audio come from the clock exactly, the file appears only when closed, and odd sides are
    padded to even."""
    from runtime.clock import AvClock
    from runtime.offline.mp4 import Mp4Writer

    clock = AvClock("30000/1001")
    out = tmp_path / "w.mp4"
    n_frames = 30
    with Mp4Writer(out, clock, 63, 47) as writer:
        assert (writer.width, writer.height) == (64, 48)
        for n in range(n_frames):
            start, end = clock.frame_start(n), clock.frame_start(n + 1)
            tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(start, end) / 48000)
            writer.write(n, np.full((47, 63, 3), 8 * n, np.uint8), tone.astype(np.float32))
        assert _files(tmp_path) != ["w.mp4"]  # still the temporary file
    assert _files(tmp_path) == ["w.mp4"]
    video, audio, info = _streams(out)
    assert info["size"] == (64, 48) and info["rate"] == 48000
    assert [Fraction(p) * info["time_base"] for p in video] == \
        [Fraction(clock.frame_start(n), 48000) for n in range(n_frames)]
    assert {clock.frame_start(n + 1) - clock.frame_start(n) for n in range(n_frames)} == \
        {1601, 1602}
    decoded = sum(n for pts, n in audio if pts is not None and pts >= 0)
    assert abs(decoded - clock.frame_start(n_frames)) <= 1024  # AAC frames of 1024 samples


def test_mp4_writer_refuses_off_clock_input_and_keeps_nothing_on_failure(tmp_path: Path) -> None:
    from runtime.clock import AvClock
    from runtime.offline.mp4 import Mp4Writer

    clock = AvClock(25)
    with (pytest.raises(ValueError, match="audio slice of 1000 samples, the clock says 1920"),
          Mp4Writer(tmp_path / "x.mp4", clock, 64, 64) as writer):
        writer.write(0, np.zeros((64, 64, 3), np.uint8), np.zeros(1920, np.float32))
        writer.write(1, np.zeros((64, 64, 3), np.uint8), np.zeros(1000, np.float32))
    with (pytest.raises(ValueError, match="image"),
          Mp4Writer(tmp_path / "y.mp4", clock, 64, 64) as writer):
        writer.write(0, np.zeros((32, 64, 3), np.uint8), np.zeros(1920, np.float32))
    assert _files(tmp_path) == []
    with pytest.raises(FileNotFoundError, match="output folder does not exist"):
        Mp4Writer(tmp_path / "no" / "z.mp4", clock, 64, 64)
