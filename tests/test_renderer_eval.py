"""``facecast eval renderer`` (runtime.evals.renderer) on a tiny driving set: structure, not
quality (the figures of a real run are reported by the command)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from avatars.rig import INDEX, NEUTRAL_POSE
from runtime.evals.renderer import (
    BARS,
    SHEET_POSES,
    WIDE_JAW,
    bars_passed,
    driving_set,
    evaluate,
    judge_floor,
    sheet_set,
    speech_driving,
)


def test_driving_set_is_seeded_and_starts_neutral() -> None:
    c, p = driving_set(6, seed=3)
    assert c.shape == (6, 19) and p.shape == (6, 6)
    assert not c[0].any() and np.array_equal(p[0], NEUTRAL_POSE)
    c2, p2 = driving_set(10, seed=3)
    assert np.array_equal(c2[:6], c) and np.array_equal(p2[:6], p)  # prefix-stable
    assert not np.array_equal(driving_set(6, seed=4)[1], p)
    labels, sc, sp = sheet_set()
    assert len(labels) == len(SHEET_POSES) == 16 and sc.shape == (16, 19) and sp.shape == (16, 6)


def test_speech_driving_animates_heldout_prompts_within_the_speech_range() -> None:
    # the real held-out Asterisk prompts through the real motion model and behaviour layer
    s = speech_driving(40, seed=0, prompts=6)
    assert s.coeffs.shape == (40, 19) and s.pose.shape == (40, 6)
    assert s.prompts == 6 and s.seconds > 6.0 and s.frames == int(s.seconds * 25.0)
    jaw = s.coeffs[:, INDEX["jawOpen"]]
    assert jaw.max() > 0.1  # the mouth moves with the speech ...
    assert 0.1 < s.jaw_p99 < 0.9 and (jaw <= WIDE_JAW).mean() > 0.7  # ... in the speech range
    again = speech_driving(40, seed=0, prompts=6)
    assert np.array_equal(again.coeffs, s.coeffs) and np.array_equal(again.pose, s.pose)
    info = s.info()
    assert info["frames"] == 40 and info["prompts"] == 6
    with pytest.raises(ValueError):
        speech_driving(0)


def test_judge_floor_is_small_on_the_default_portrait() -> None:
    import avatars

    av = avatars.load("default")
    floor = judge_floor(av.image, av.iod_px)
    assert floor is not None and 0.0 <= floor < 0.02
    assert judge_floor(np.zeros((64, 64, 3), np.uint8), 10.0) is None  # no face: no floor


def test_evaluate_reports_every_figure(tmp_path: Path) -> None:
    sheet = tmp_path / "sheet.png"
    r = evaluate("default", n=8, seed=0, size=256, backend="onnxruntime", sheet=sheet,
                 speech_n=6)
    assert r["avatar"] == "default" and r["frames"] == 8 and r["size"] == 256
    assert r["backend"] == "onnxruntime-cpu"
    assert r["background_exact"] is True
    assert r["adapted"] is False  # the committed bundle carries no facecast adapt features
    for who in ("student", "teacher"):
        s = r[who]
        assert isinstance(s["faces_missing"], int) and 0 <= s["faces_missing"] <= 8
        if s["faces_missing"] < 8:
            assert isinstance(s["nme"], float) and s["nme"] >= 0.0
            assert isinstance(s["nme_p95"], float) and s["nme_p95"] >= 0.0
        mof = s["mouth_open_fidelity"]
        assert set(mof) == {"mae_iod", "corr"}
        assert mof["corr"] is None or -1.0 <= mof["corr"] <= 1.0
    # the teacher reproduces the source exactly at neutral and its landmarks are found
    assert r["teacher"]["faces_missing"] == 0 and r["teacher"]["nme"] < 0.06
    assert r["psnr_neutral_teacher"] >= 60.0
    assert isinstance(r["psnr_neutral"], float) and r["psnr_neutral"] > 0.0
    assert r["nme_gap"] is None or isinstance(r["nme_gap"], float)
    for who in ("student", "teacher"):
        assert set(r[who]["nme_by_jaw"]) == {"speech_range", "wide"}
    assert isinstance(r["judge_floor"], float) and r["judge_floor"] < r["teacher"]["nme"] + 0.02
    sp = r["speech"]
    assert sp["frames"] == 6 and sp["prompts"] >= 1
    for who in ("student", "teacher"):
        assert sp[who]["faces_missing"] == 0 and isinstance(sp[who]["nme"], float)
    assert sp["teacher"]["nme"] < 0.06
    assert evaluate("default", n=1, backend="onnxruntime", speech_n=0)["speech"] == {
        "skipped": "speech_n = 0"}
    assert isinstance(r["seconds"], float)
    img = np.asarray(Image.open(sheet))
    assert img.shape == (8 * 256, 4 * 256, 3)
    assert img[: 4 * 256].std() > 10 and img[4 * 256:].std() > 10
    # what a viewer sees, both renderers: the teacher closes the lids and shows a dark cavity
    for who in ("student", "teacher"):
        v = r["viewer"][who]
        assert set(v) == {"blink_closure", "interior_darkness", "interior_red_minus_blue"}
    t = r["viewer"]["teacher"]
    assert t["blink_closure"] < 0.3 and t["interior_darkness"] < 0.1
    assert t["interior_red_minus_blue"] > 0
    passed = bars_passed(r)
    assert set(passed) == set(BARS)
    assert all(v is None or isinstance(v, bool) for v in passed.values())
