"""The motion model: committed ONNX file served by ONNX Runtime on real speech, streaming =
offline, fps resampling, and a tiny training run that lowers the loss."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engines.audio import CHUNK_SAMPLES, SAMPLE_RATE
from engines.motion import DEFAULT_MODEL, FpsResampler, MotionEngine, _concat, resample_to_fps
from engines.visemes import MOTION_COEFFICIENTS

espeak = pytest.importorskip("runtime.audio.espeak")


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """Real speech at 16 kHz: a held-out asterisk prompt when the package is installed (CI
    installs it), else espeak-ng."""
    from runtime.audio.resample import resample

    try:
        from tools.speech import asterisk

        prompts = {p.name: p for p in asterisk.find_prompts()}
        held = [n for n in asterisk.heldout_names() if n in prompts]
        if held:
            return asterisk.load_audio(prompts[held[0]].path)
    except ImportError:
        pass
    syn = espeak.synthesize("Please hold, your call is important to us.")
    return resample(syn.audio, syn.sample_rate, SAMPLE_RATE)


@pytest.fixture(scope="module")
def engine() -> MotionEngine:
    return MotionEngine()


def test_committed_model_is_small_and_described(engine: MotionEngine) -> None:
    assert DEFAULT_MODEL.stat().st_size < 5e6
    assert engine.lookahead_ms <= 80.0


@pytest.mark.parametrize("chunk", [CHUNK_SAMPLES, 1234])
def test_streaming_equals_offline(engine: MotionEngine, speech: np.ndarray, chunk: int) -> None:
    offline = engine.offline(speech)
    stream = engine.stream()
    parts = [stream.push(speech[i:i + chunk]) for i in range(0, speech.size, chunk)]
    parts.append(stream.finish())
    streamed = _concat(parts)
    assert streamed.coeffs.shape == offline.coeffs.shape
    assert np.abs(streamed.coeffs - offline.coeffs).max() < 1e-4
    assert np.abs(streamed.vad - offline.vad).max() < 1e-4


@pytest.mark.parametrize("fps", [25, 30, 60])
def test_streaming_fps_resampling(engine: MotionEngine, speech: np.ndarray, fps: int) -> None:
    offline = resample_to_fps(engine.offline(speech).coeffs, fps)
    stream, resampler = engine.stream(), FpsResampler(fps)
    frames = [resampler.push(stream.push(speech[i:i + CHUNK_SAMPLES]))
              for i in range(0, speech.size, CHUNK_SAMPLES)]
    frames.append(resampler.push(stream.finish()))
    video = np.concatenate(frames)
    n = min(len(video), len(offline))
    assert n >= len(offline) - 1
    assert np.abs(video[:n] - offline[:n]).max() < 1e-4
    assert abs(len(offline) - speech.size / SAMPLE_RATE * fps) <= 1


def test_speech_moves_the_jaw_and_silence_does_not(engine: MotionEngine,
                                                   speech: np.ndarray) -> None:
    jaw = MOTION_COEFFICIENTS.index("jawOpen")
    close = MOTION_COEFFICIENTS.index("mouthClose")
    track = engine.offline(speech)
    assert track.coeffs[:, jaw].max() > 0.3
    assert track.vad.max() > 0.9
    silence = engine.offline(np.zeros(SAMPLE_RATE, np.float32))
    assert silence.coeffs[:, jaw].max() < 0.1 and silence.coeffs[:, close].min() > 0.8
    assert silence.vad.max() < 0.2


def test_bad_input(engine: MotionEngine, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="16000 Hz"):
        engine.offline(np.zeros(4800, np.float32), sample_rate=48000)
    with pytest.raises(FileNotFoundError):
        MotionEngine(tmp_path / "absent.onnx")


def test_tiny_training_run_lowers_the_loss(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from engines.training.motion_model import MotionDims, MotionModel
    from runtime.audio.resample import resample
    from tools import train_motion as tm
    from tools.prepare_speech import move_stop_closures

    data = tmp_path / "speech"
    data.mkdir()
    parts, index, offset = [], [], 0
    for i, text in enumerate(["Bob ate a map.", "Please press one.", "Hello, how are you?",
                              "Moving on to the main menu."]):
        syn = espeak.synthesize(text, voice="en-us")
        audio = resample(syn.audio, syn.sample_rate, SAMPLE_RATE)
        phones = move_stop_closures([(p.symbol, p.start_s, p.end_s) for p in syn.phones])
        index.append({"name": f"u{i}", "source": "espeak", "voice": "en-us", "split": "train",
                      "offset": offset, "length": int(audio.size),
                      "phones": [list(p) for p in phones]})
        parts.append(audio)
        offset += audio.size
    np.savez(data / "corpus.npz", audio=np.concatenate(parts))
    (data / "index.json").write_text(json.dumps(index))

    dims = MotionDims(channels=32, hidden=32)
    corpus = tm.load_corpus(data, ("train",))
    rng = np.random.default_rng(0)
    fixed = tm.make_batch(rng, corpus, 4, window_s=1.5, augment_p=0.0, negatives_p=0.0)
    tm.train(data, tmp_path / "run", steps=40, batch=4, lr=1e-2, seed=0, dims=dims,
             log_every=10)
    ckpt = torch.load(tmp_path / "run" / "motion.pt", weights_only=True)
    trained = MotionModel(MotionDims.from_json(ckpt["dims"]))
    trained.load_state_dict(ckpt["state"])
    untrained = MotionModel(dims)
    untrained.set_normalisation(trained.mean, trained.std)
    with torch.no_grad():
        before, _ = tm.loss_fn(untrained.eval(), fixed)
        after, _ = tm.loss_fn(trained.eval(), fixed)
    assert float(after) < 0.8 * float(before)


@pytest.fixture(scope="module")
def prompts() -> list[np.ndarray]:
    """Several held-out asterisk prompts at 16 kHz (espeak sentences without the package)."""
    from runtime.audio.resample import resample

    try:
        from tools.speech import asterisk

        found = {p.name: p for p in asterisk.find_prompts()}
        held = [n for n in asterisk.heldout_names() if n in found][:12]
        if len(held) >= 6:
            return [asterisk.load_audio(found[n].path) for n in held]
    except ImportError:
        pass
    texts = ["Please hold.", "Your call is important to us.", "Press one to lock the room.",
             "The conference is now locked.", "Goodbye.", "Seconds."]
    out = []
    for t in texts:
        syn = espeak.synthesize(t)
        out.append(resample(syn.audio, syn.sample_rate, SAMPLE_RATE))
    return out


def test_long_stream_state_is_reset_in_pauses(engine: MotionEngine, prompts: list[np.ndarray],
                                              speech: np.ndarray) -> None:
    """After a minute of earlier speech, an utterance that follows a pause moves the mouth as it
    does from a fresh stream: the pause zeroes the GRU state (the bug this guards against: a live
    session's mouth stopped opening after a dozen prompts)."""
    hop = 160
    pause = np.zeros(int(0.6 * SAMPLE_RATE), np.float32)

    def whole_frames(x: np.ndarray) -> np.ndarray:  # keep every piece on the 10 ms frame grid
        return np.concatenate([x, np.zeros(-x.size % hop, np.float32)])

    history = np.concatenate([whole_frames(x) for p in prompts * 4 for x in (p, pause)])
    assert history.size > 40 * SAMPLE_RATE
    tail = np.concatenate([whole_frames(speech), pause])
    audio = np.concatenate([history, tail])
    stream = engine.stream()
    tracks = [stream.push(audio[i:i + CHUNK_SAMPLES])
              for i in range(0, audio.size, CHUNK_SAMPLES)]
    live = _concat([*tracks, stream.finish()]).coeffs[(history.size - pause.size) // hop:]
    fresh = engine.offline(np.concatenate([pause, tail])).coeffs
    n = min(len(live), len(fresh))
    assert n >= speech.size // hop
    # the same, up to what the GRU keeps of the pause's start (the reset fell 0.2 s into the
    # quiet, which began earlier in the long stream: the previous prompt's room tone)
    assert np.abs(live[:n] - fresh[:n]).mean() < 0.01
    jaw = MOTION_COEFFICIENTS.index("jawOpen")
    assert np.corrcoef(live[:n, jaw], fresh[:n, jaw])[0, 1] > 0.97
    assert live[:n, jaw].max() > 0.3  # and the mouth does open


def test_quiet_gate_finds_pauses_in_a_noisy_room(prompts: list[np.ndarray]) -> None:
    """Speech over −45 dBFS pink-ish noise (never digitally silent): one reset per pause of
    0.6 s, none inside the prompts."""
    from engines.features import log_mel
    from engines.motion import QuietGate, frame_level_db

    rng = np.random.default_rng(0)
    pause = np.zeros(int(0.6 * SAMPLE_RATE), np.float32)
    audio = np.concatenate([x for p in prompts[:6] for x in (pause, p)] + [pause])
    noise = np.cumsum(rng.standard_normal(audio.size)).astype(np.float32)
    noise -= np.convolve(noise, np.ones(64) / 64, mode="same")  # drift removed: a noise floor
    noise *= np.float32(10 ** (-45 / 20) / noise.std())
    levels = frame_level_db(log_mel(audio + noise))
    assert np.percentile(levels, 5) > -60.0  # really noisy: the absolute threshold never fires
    gate = QuietGate()
    cuts = [(i + j, silent) for i in range(0, len(levels), 7)
            for j, silent in gate.cuts(levels[i:i + 7])]  # fed in odd chunks
    assert cuts == QuietGate().cuts(levels)  # chunking does not move them
    assert 6 <= len(cuts) <= 7 + 2 * 6  # each pause; a prompt's own pause may count too
    assert not any(silent for _j, silent in cuts)  # noise pauses: reset to zero, not to rest
    clean = QuietGate().cuts(frame_level_db(log_mel(audio)))
    assert len(clean) >= 6 and all(silent for _j, silent in clean[:1])
