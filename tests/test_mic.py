"""Microphone input through real PortAudio, without a sound card.

A private PulseAudio daemon (in a temporary folder, its own socket) runs a null sink whose
monitor is the "microphone"; an ALSA configuration (``ALSA_CONFIG_PATH``) declares PCMs of
ALSA's ``pulse`` plugin on it, so PortAudio (ALSA host API) lists them like any device. Real
speech (held-out Asterisk prompts) is played into the sink with ``paplay`` in real time and
captured through PyAudio by ``runtime.local.mic.Microphone``, the class ``facecast cam`` uses; the
sound server paces it like a sound card would.

Needs the Debian packages pulseaudio, pulseaudio-utils (paplay), libasound2-plugins (ALSA's
pulse plugin), libportaudio2 (+ portaudio19-dev to build PyAudio) and asterisk-core-sounds-en-g722;
the tests skip, saying which is missing, without them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyaudio", reason="PyAudio is not installed (pip install pyaudio)")

from runtime.audio.resample import RateFollower
from runtime.local import mic
from runtime.local.mic import MicError, Microphone, list_devices

MIC_NAME = "facecast_test_mic"
SPEAKER_NAME = "facecast_test_speaker"
GONE_NAME = "facecast_test_gone"
PROMPT_NAME = "conf-nonextended.g722"


@dataclass
class SoundServer:
    """A running private PulseAudio with a null sink ``sink``; ``env`` reaches it."""

    folder: Path
    env: dict
    sink: str
    process: subprocess.Popen

    def play(self, samples: np.ndarray, rate: int) -> subprocess.Popen:
        """Play float32 mono ``samples`` into the sink in real time (paplay), in the background."""
        path = self.folder / f"play{time.monotonic_ns()}.wav"
        write_wav(path, samples, rate)
        return subprocess.Popen(["paplay", f"--device={self.sink}", str(path)], env=self.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    pcm = np.clip(np.round(samples * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def start_sound_server(folder: Path) -> SoundServer:
    """Start PulseAudio with a null sink and write the ALSA PCMs the tests use; skips when the
    packages are missing."""
    for tool, package in (("pulseaudio", "pulseaudio"), ("paplay", "pulseaudio-utils")):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not found: apt install {package} (and libasound2-plugins)")
    if not any(Path(d).glob("libasound_module_pcm_pulse.so") for d in
               ("/usr/lib/x86_64-linux-gnu/alsa-lib", "/usr/lib/aarch64-linux-gnu/alsa-lib",
                "/usr/lib/alsa-lib", "/usr/lib64/alsa-lib")):
        pytest.skip("ALSA's pulse plugin is missing: apt install libasound2-plugins")
    folder.mkdir(parents=True, exist_ok=True)
    socket = folder / "native"
    sink = "facecast_test_sink"
    (folder / "default.pa").write_text(
        f"load-module module-native-protocol-unix auth-anonymous=1 socket={socket}\n"
        f"load-module module-null-sink sink_name={sink} "
        "sink_properties=device.description=facecast-test\n")
    alsa_conf = folder / "asound.conf"
    alsa_conf.write_text(f"""
pcm.{MIC_NAME} {{
    type pulse
    server "unix:{socket}"
    device "{sink}.monitor"
    hint {{ show on description "facecast test microphone" }}
}}
pcm.{SPEAKER_NAME} {{
    type asym
    playback.pcm "null"
    hint {{ show on description "playback only" }}
}}
pcm.{GONE_NAME} {{
    type pulse
    server "unix:{socket}"
    device "no_such_source"
}}
""")
    system_conf = Path("/usr/share/alsa/alsa.conf")
    env = dict(os.environ)
    env.update({
        "ALSA_CONFIG_PATH": f"{system_conf}:{alsa_conf}",
        "PULSE_SERVER": f"unix:{socket}",
        "PULSE_RUNTIME_PATH": str(folder),
        "PULSE_STATE_PATH": str(folder),
        "XDG_RUNTIME_DIR": str(folder),
        "JACK_NO_START_SERVER": "1",
    })
    process = subprocess.Popen(
        ["pulseaudio", "-n", "-F", str(folder / "default.pa"), "--daemonize=no",
         "--exit-idle-time=-1", "--use-pid-file=no", "--system=false",
         f"--log-target=file:{folder / 'pulse.log'}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"pulseaudio exited: {(folder / 'pulse.log').read_text()[-2000:]}")
        ok = subprocess.run(["pactl", "info"], env=env, capture_output=True,
                            check=False).returncode == 0 \
            if shutil.which("pactl") else socket.exists()
        if ok:
            return SoundServer(folder, env, sink, process)
        time.sleep(0.1)
    process.kill()
    pytest.fail("pulseaudio did not start within 15 s")


def stop_sound_server(server: SoundServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(5)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(5)


def prompt_audio(name: str = PROMPT_NAME) -> tuple[np.ndarray, int]:
    """A held-out Asterisk prompt, float32 mono at its own rate (16 kHz)."""
    from runtime.audio.decode import load_audio
    from runtime.bench.harness import heldout_prompts

    paths = [p for p in heldout_prompts() if p.name == name]
    if not paths:
        pytest.skip(f"held-out prompt {name} not installed (asterisk-core-sounds-en-g722)")
    audio, rate = load_audio(paths[0])
    return audio.astype(np.float32), rate


def envelope_db(x: np.ndarray, rate: int, hop_s: float = 0.01) -> np.ndarray:
    """RMS level in dB every 10 ms (25 ms windows), floored 50 dB below the peak."""
    from runtime.evals.sync import audio_envelope

    return audio_envelope(np.asarray(x, np.float32), rate, hop_s)


def best_alignment(reference: np.ndarray, recording: np.ndarray) -> tuple[int, float]:
    """(lag in hops, Pearson correlation) that best places ``reference`` inside ``recording``."""
    n = len(reference)
    best = (0, -1.0)
    for lag in range(len(recording) - n + 1):
        seg = recording[lag:lag + n]
        if seg.std() < 1e-6:
            continue
        c = float(np.corrcoef(reference, seg)[0, 1])
        if c > best[1]:
            best = (lag, c)
    return best


async def _start(m: Microphone) -> None:
    m.start()
    m.close()


# --- devices -------------------------------------------------------------------------------
def test_list_devices_sees_the_test_microphone(sound_server):
    devices = list_devices()
    names = [d.name for d in devices]
    assert MIC_NAME in names
    d = next(d for d in devices if d.name == MIC_NAME)
    assert d.channels >= 1 and d.default_rate >= 8000 and d.host_api == "ALSA"
    assert SPEAKER_NAME not in names  # output only: not an input device
    assert d.to_json()["name"] == MIC_NAME
    table = mic.format_table(devices)
    assert MIC_NAME in table and "index" in table.splitlines()[0]


def test_select_device_by_name_index_and_default(sound_server):
    pa = mic.open_portaudio()
    try:
        d = mic.select_device(pa, MIC_NAME)
        assert mic.select_device(pa, "TEST_MIC").index == d.index  # substring, any case
        assert mic.select_device(pa, d.index) == d
        assert mic.select_device(pa, str(d.index)) == d
        assert mic.select_device(pa, None).channels >= 1
    finally:
        pa.terminate()


@pytest.mark.parametrize("spec, expected", [
    ("no-such-microphone", "no input device named like 'no-such-microphone'"),
    (999, "no audio device with index 999"),
    ("facecast_test", "matches several input devices"),
    (SPEAKER_NAME, "has no input channels"),
])
def test_bad_device_is_a_clear_error_listing_what_exists(sound_server, spec, expected):
    with pytest.raises(MicError) as err:
        asyncio.run(_start(Microphone(spec)))
    assert expected in str(err.value)
    assert "input devices: " in str(err.value) and MIC_NAME in str(err.value)


def test_output_only_device_by_index(sound_server):
    pa = mic.open_portaudio()
    try:
        index = next(i for i in range(pa.get_device_count())
                     if pa.get_device_info_by_index(i)["name"] == SPEAKER_NAME)
    finally:
        pa.terminate()
    with pytest.raises(MicError, match=f"device {index} '{SPEAKER_NAME}' has no input channels"):
        asyncio.run(_start(Microphone(index)))


def test_device_that_cannot_be_opened(sound_server):
    """PortAudio lists the device but opening it fails (its source is gone, as with a busy or
    unplugged device): MicError naming it, nothing left open."""
    with pytest.raises(MicError) as err:
        asyncio.run(_start(Microphone(GONE_NAME)))
    message = str(err.value)
    assert "cannot open input device" in message and GONE_NAME in message
    assert "PortAudio error" in message and MIC_NAME in message


def test_no_devices_at_all_says_what_to_check():
    assert "no input devices at all" in mic.describe([])
    assert mic.format_table([]) == mic.describe([])


# --- capture -------------------------------------------------------------------------------
def test_capture_real_speech_through_portaudio(sound_server):
    """A prompt played into the sound server comes out of Microphone as 20 ms chunks at the
    device's rate, pushed into the event loop in order, paced in real time, with the prompt's
    energy envelope."""
    audio, rate = prompt_audio()
    lead = np.zeros(int(0.3 * rate), np.float32)

    async def capture() -> tuple[Microphone, list]:
        async with Microphone(MIC_NAME) as m:
            assert m.rate == int(m.device.default_rate)
            assert m.chunk_samples == round(m.rate * 0.02)
            first = await asyncio.wait_for(m.get(), 10)  # the sound server starts streaming
            assert first is not None
            player = sound_server.play(np.concatenate([lead, audio, lead]), rate)
            chunks = [first]
            deadline = time.monotonic() + len(audio) / rate + 2.0
            while time.monotonic() < deadline:
                c = await asyncio.wait_for(m.get(), 1)
                assert c is not None
                chunks.append(c)
            await asyncio.to_thread(player.wait, 10)
            assert m.dropped == 0
        return m, chunks

    m, chunks = asyncio.run(capture())
    assert all(len(c.samples) == m.chunk_samples and c.samples.dtype == np.float32
               for c in chunks)
    indices = [c.index for c in chunks]
    assert indices == list(range(indices[0], indices[0] + m.chunk_samples * len(chunks),
                                 m.chunk_samples))
    t = np.array([c.t_capture for c in chunks])
    assert np.all(np.diff(t) >= 0)
    # real-time pacing: the stream's samples kept up with the wall clock (±0.5 s over ~4 s)
    span = t[-1] - t[0]
    assert abs((indices[-1] - indices[0]) / m.rate - span) < 0.5
    captured = np.concatenate([c.samples for c in chunks])
    lag, corr = best_alignment(envelope_db(audio, rate), envelope_db(captured, m.rate))
    assert corr > 0.9, corr
    start = int(lag * 0.01 * m.rate)
    seg = captured[start:start + int(len(audio) / rate * m.rate)]
    level = 20 * np.log10(np.sqrt(np.mean(seg ** 2)) / np.sqrt(np.mean(audio ** 2)))
    assert abs(level) < 3.0, level  # the sound server passes the level through


def test_queue_is_bounded_and_drops_the_oldest(sound_server):
    """A consumer that does not take chunks loses the oldest, counted; once closed, ``get``
    gives what was queued, then None."""

    async def run() -> None:
        m = Microphone(MIC_NAME, queue_chunks=5).start()
        try:
            assert await asyncio.wait_for(m.get(), 10) is not None
            await asyncio.sleep(0.5)  # chunks keep arriving; nobody takes them
            kept = m.drain()
            assert len(kept) == 5
            assert m.dropped >= 10
            assert [c.index for c in kept] == [kept[0].index + i * m.chunk_samples
                                               for i in range(5)]
            assert m.captured >= 15
        finally:
            m.close()
        while (c := await asyncio.wait_for(m.get(), 2)) is not None:
            assert len(c.samples) == m.chunk_samples  # queued before the close
        assert await asyncio.wait_for(m.get(), 0.1) is None  # closed and empty, at once

    asyncio.run(run())


def test_microphone_resampled_with_the_one_resampler_keeps_pitch_and_length():
    """A 44.1 kHz microphone's 20 ms chunks through ``RateFollower`` (as cam and kiosk do)."""
    rate_in, f = 44100, 440.0
    t = np.arange(rate_in) / rate_in
    x = (0.5 * np.sin(2 * np.pi * f * t)).astype(np.float32)
    res = RateFollower(48000)
    parts = [res.push(x[i:i + 882], rate_in) for i in range(0, len(x), 882)]
    y = np.concatenate(parts + [res.flush()])
    assert y.dtype == np.float32 and abs(len(y) - 48000) <= 64
    spectrum = np.abs(np.fft.rfft(y[:48000 // 2 * 2] * np.hanning(len(y[:48000 // 2 * 2]))))
    peak_hz = np.argmax(spectrum) * 48000 / len(y[:48000 // 2 * 2])
    assert abs(peak_hz - f) < 2.0
    assert np.array_equal(RateFollower(48000).push(x, 48000), x)  # same rate: untouched
