"""Build the motion-model speech corpus: real asterisk prompts + synthetic espeak-ng speech.

    python tools/prepare_speech.py --out data/speech [--synthetic 2400] [--seed 0]

Writes ``OUT/corpus.npz`` (all audio, 16 kHz float32, concatenated) and ``OUT/index.json`` (one
entry per utterance: name, source "asterisk" | "espeak", voice, split "train" | "heldout" |
"heldout_voice", offset and length in samples, phones [[symbol, start_s, end_s], ...]).

* Real speech: every prompt of asterisk-core-sounds-en-g722 that pocketsphinx aligns
  (``tools.speech.asterisk``); prompts named in ``tools/speech/heldout.txt`` are split
  "heldout" and never trained on.
* Synthetic speech: espeak-ng through its library (``runtime.audio.espeak``) with its own exact phoneme
  timings; sentences drawn from the asterisk transcripts (held-out prompts' texts excluded) and
  from random word sequences of the pocketsphinx dictionary; voices, rates (120–260 wpm) and
  pitches (20–80) drawn at random. Voices in ``HELDOUT_VOICES`` are synthesised only for the
  "heldout_voice" split (about 60 utterances), to test on voices the model never heard.
* Resampling from espeak's 22.05 kHz to 16 kHz by PyAV's AudioResampler.

Seeded: the same seed gives the same corpus.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engines.audio import SAMPLE_RATE
from runtime.audio.resample import resample

TRAIN_VOICES = ("en-us", "en-gb", "en-us+f3", "en-us+m3", "en-gb+f2", "en-us+m7", "en-029",
                "en-gb-x-rp", "en-us+f4", "en-gb-scotland")
HELDOUT_VOICES = ("en-gb-x-gbcwmd+f5", "en-gb-x-gbclan+m5")


VOICELESS_STOPS = frozenset({"p", "t", "k"})
STOP_CLOSURE_S = 0.08


def move_stop_closures(phones: list[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    """espeak-ng puts a voiceless stop's phoneme event at its release burst, after the silent
    closure (measured: every p/t/k event sat on the burst sample), so the closure — when the
    lips are shut for /p/ — lies inside the previous phone's interval. Move each p/t/k start
    back over the closure (up to ``STOP_CLOSURE_S``, at most 60% of the previous phone) and end
    it 10 ms after the burst, giving the aspiration to the next phone."""
    out = [list(p) for p in phones]
    for i, (sym, start, end) in enumerate(phones):
        if sym not in VOICELESS_STOPS or i == 0:
            continue
        prev = out[i - 1]
        if prev[2] < start - 1e-6:  # a pause before the stop: the closure is in the pause
            closure = min(STOP_CLOSURE_S, start - prev[2])
        else:
            closure = min(STOP_CLOSURE_S, 0.6 * (start - prev[1]))
            prev[2] = start - closure
        out[i][1] = start - closure
        burst_end = min(end, start + 0.01)
        if i + 1 < len(out) and abs(out[i + 1][1] - end) < 1e-6:
            out[i + 1][1] = burst_end  # aspiration belongs to the next phone's shape
        out[i][2] = burst_end  # before a pause, the rest of the interval becomes silence
    return [(s, a, b) for s, a, b in out]


def dictionary_words(limit: int = 30000) -> list[str]:
    """Plain alphabetic words of pocketsphinx's bundled CMU dictionary."""
    from pocketsphinx import get_model_path

    words = []
    with open(Path(get_model_path()) / "en-us" / "cmudict-en-us.dict", encoding="utf-8") as fh:
        for line in fh:
            w = line.split(" ", 1)[0]
            if w.isalpha() and "(" not in w and len(w) > 1:
                words.append(w)
    return words[:limit] if limit else words


def synthetic_sentences(rng: random.Random, transcripts: list[str], words: list[str],
                        n: int) -> list[str]:
    """Half transcripts of training prompts (shuffled), half random word sequences (3–14
    words, occasional commas and full stops)."""
    out = []
    for i in range(n):
        if i % 2 == 0 and transcripts:
            out.append(rng.choice(transcripts))
        else:
            k = rng.randint(3, 14)
            seq = [rng.choice(words) for _ in range(k)]
            if k > 7 and rng.random() < 0.5:
                seq[k // 2] += ","
            out.append(" ".join(seq).capitalize() + rng.choice([".", "?", "!"]))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "speech")
    parser.add_argument("--synthetic", type=int, default=2400)
    parser.add_argument("--heldout-voice-utterances", type=int, default=60)
    parser.add_argument("--alignments", type=Path, default=None,
                        help="reuse an alignments.json from tools.speech.asterisk")
    parser.add_argument("--asterisk-limit", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from runtime.audio.espeak import synthesize
    from tools.speech import asterisk

    rng = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    audio_parts: list[np.ndarray] = []
    index: list[dict] = []
    offset = 0

    def add(name: str, source: str, voice: str, split: str, audio: np.ndarray,
            phones: list) -> None:
        nonlocal offset
        audio_parts.append(audio.astype(np.float32))
        index.append({"name": name, "source": source, "voice": voice, "split": split,
                      "offset": offset, "length": int(audio.size),
                      "phones": [[p[0], round(float(p[1]), 4), round(float(p[2]), 4)]
                                 for p in phones]})
        offset += int(audio.size)

    if args.alignments is None:
        align_dir = args.out / "asterisk"
        import subprocess

        cmd = [sys.executable, "-m", "tools.speech.asterisk", "--out", str(align_dir)]
        if args.asterisk_limit:
            cmd += ["--limit", str(args.asterisk_limit)]
        subprocess.run(cmd, check=True, cwd=ROOT)
        args.alignments = align_dir / "alignments.json"
    alignments = json.loads(args.alignments.read_text())
    prompts = {p.name: p for p in asterisk.find_prompts()}
    transcripts = []
    for name in sorted(alignments):
        entry = alignments[name]
        held = asterisk.is_heldout(name)
        if not held:
            transcripts.append(entry["text"])
        add(name, "asterisk", "asterisk", "heldout" if held else "train",
            asterisk.load_audio(prompts[name].path), entry["phones"])

    words = dictionary_words()
    jobs = [(s, rng.choice(TRAIN_VOICES), "train")
            for s in synthetic_sentences(rng, transcripts, words, args.synthetic)]
    jobs += [(s, rng.choice(HELDOUT_VOICES), "heldout_voice")
             for s in synthetic_sentences(rng, transcripts, words, args.heldout_voice_utterances)]
    for i, (text, voice, split) in enumerate(jobs):
        syn = synthesize(text, voice=voice, rate_wpm=rng.randint(120, 260),
                         pitch=rng.randint(20, 80))
        audio = resample(syn.audio, syn.sample_rate, SAMPLE_RATE)
        phones = move_stop_closures([(p.symbol, p.start_s, p.end_s) for p in syn.phones])
        add(f"espeak-{i:05d}", "espeak", voice, split, audio, phones)

    np.savez(args.out / "corpus.npz", audio=np.concatenate(audio_parts))
    (args.out / "index.json").write_text(json.dumps(index))
    summary = {}
    for e in index:
        key = f"{e['source']}/{e['split']}"
        s = summary.setdefault(key, {"utterances": 0, "minutes": 0.0})
        s["utterances"] += 1
        s["minutes"] = round(s["minutes"] + e["length"] / SAMPLE_RATE / 60, 2)
    print(json.dumps({"out": str(args.out), "splits": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
