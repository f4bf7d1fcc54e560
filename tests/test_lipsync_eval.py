"""``facecast eval lipsync`` on a small real corpus: three held-out asterisk prompts, aligned by
pocketsphinx, plus one held-out-voice espeak utterance."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

from engines.audio import SAMPLE_RATE

asterisk = pytest.importorskip("tools.speech.asterisk")
espeak = pytest.importorskip("runtime.audio.espeak")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from runtime.audio.resample import resample
    from tools.prepare_speech import HELDOUT_VOICES, move_stop_closures

    prompts = {p.name: p for p in asterisk.find_prompts()}
    held = [n for n in asterisk.heldout_names() if n in prompts][:3]
    if not held:
        pytest.skip("asterisk-core-sounds-en-g722 is not installed (CI installs it)")
    data = tmp_path_factory.mktemp("speech")
    parts, index, offset = [], [], 0

    def add(name: str, split: str, audio: np.ndarray, phones: list) -> None:
        nonlocal offset
        parts.append(audio)
        index.append({"name": name, "source": "test", "voice": "", "split": split,
                      "offset": offset, "length": int(audio.size),
                      "phones": [list(p) for p in phones]})
        offset += audio.size

    for name in held:
        audio = asterisk.load_audio(prompts[name].path)
        phones = asterisk.align(audio, asterisk.normalise_text(prompts[name].text))
        add(name, "heldout", audio, [(p.symbol, p.start_s, p.end_s) for p in phones])
    syn = espeak.synthesize("Bob will pay five pounds for the map.", voice=HELDOUT_VOICES[0])
    add("voice", "heldout_voice", resample(syn.audio, syn.sample_rate, SAMPLE_RATE),
        move_stop_closures([(p.symbol, p.start_s, p.end_s) for p in syn.phones]))
    np.savez(data / "corpus.npz", audio=np.concatenate(parts))
    (data / "index.json").write_text(json.dumps(index))
    return data


def test_eval_lipsync_json(corpus: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "runtime.cli", "eval", "lipsync", "--json",
                        "--data", str(corpus)], cwd=ROOT, check=False, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["lookahead_ms"] <= 80
    for split in ("heldout", "heldout_voice"):
        model, base = result[split]["model"], result[split]["energy_baseline"]
        for key in ("bilabial_closure", "silence_closed", "open_vowel"):
            assert 0.0 <= model[key] <= 1.0 and 0.0 <= base[key] <= 1.0
        assert -1.0 <= model["jaw_corr"] <= 1.0
        assert 0.0 <= model["viseme_accuracy"] <= 1.0
    # a trained model tracks the jaw on real held-out speech
    assert result["heldout"]["model"]["jaw_corr"] > 0.5
    # and keeps the mouth shut without speech
    assert result["non_speech"]["silence"]["open_frames"] == 0.0
    assert set(result["non_speech"]) >= {"white_noise_-30dBFS", "music_-20dBFS"}


def test_eval_plot_and_missing_corpus(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "lipsync.png"
    r = subprocess.run([sys.executable, "-m", "runtime.cli", "eval", "lipsync", "--data",
                        str(corpus), "--plot", str(out)], cwd=ROOT, check=False, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size > 10_000
    r = subprocess.run([sys.executable, "-m", "runtime.cli", "eval", "lipsync", "--data",
                        str(tmp_path / "absent")], cwd=ROOT, check=False, capture_output=True, text=True)
    assert r.returncode == 1 and "tools/prepare_speech.py" in r.stderr
