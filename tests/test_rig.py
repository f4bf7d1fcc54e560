"""The rig on the real default avatar: exact neutral, documented amplitudes, lip and lid closure."""

from __future__ import annotations

import numpy as np
import pytest

from avatars import rig as R
from avatars.rig import (
    COEFFICIENTS,
    INDEX,
    N_COEFFICIENTS,
    NEUTRAL_POSE,
    Rig,
    closure_for_gap,
    coefficients_from_mapping,
    expression_lip_gap,
    eyelid_gaps,
    inner_lip_gap,
    inner_lip_gap_iod,
    pose_vector,
)


def _kp(rig: Rig, pose: np.ndarray = NEUTRAL_POSE, **named: float) -> np.ndarray:
    return rig.keypoints(coefficients_from_mapping(named)[None], pose[None])[0]


def test_zero_is_exactly_neutral(default_rig: Rig, default_avatar) -> None:
    kp = default_rig.keypoints(np.zeros((3, N_COEFFICIENTS)), np.tile(NEUTRAL_POSE, (3, 1)))
    assert kp.shape == (3, 478, 2) and kp.dtype == np.float32
    expected = default_avatar.crop_landmarks(256)[:, :2]
    assert np.array_equal(kp[0], expected)


def test_required_contract_names_exist() -> None:
    required = ["jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthStretch",
                "mouthSmile", "mouthUpperUp", "mouthLowerDown", "mouthPress", "eyeBlinkLeft",
                "eyeBlinkRight", "browInnerUp"]
    c = coefficients_from_mapping({name: 0.5 for name in required})
    assert c[INDEX["mouthSmileLeft"]] == 0.5 and c[INDEX["mouthSmileRight"]] == 0.5
    assert (c > 0).sum() == 17  # every alias sets both sides


def test_jaw_open_opens_by_documented_amount(default_rig: Rig) -> None:
    iod = default_rig.iod
    g0 = inner_lip_gap(_kp(default_rig)[None])[0]
    g1 = inner_lip_gap(_kp(default_rig, jawOpen=1.0)[None])[0]
    # the midline pair opens by JAW_DROP_IOD (measured in the image: within 3%)
    mid = _kp(default_rig, jawOpen=1.0)[14, 1] - _kp(default_rig)[14, 1]
    assert mid == pytest.approx(R.JAW_DROP_IOD * iod, rel=0.03)
    assert g1 - g0 == pytest.approx(R.JAW_DROP_IOD * iod, rel=0.05)
    # the upper lip and the eyes do not move with the jaw
    moved = np.abs(_kp(default_rig, jawOpen=1.0) - _kp(default_rig)).max(axis=1)
    assert moved[13] < 1e-3 and moved[33] < 1e-3 and moved[263] < 1e-3


@pytest.mark.parametrize("closer", [{"mouthClose": 1.0}, {"mouthPress": 1.0}])
@pytest.mark.parametrize("jaw", [0.0, 0.3, 1.0])
def test_close_and_press_close_the_lips(default_rig: Rig, closer: dict, jaw: float) -> None:
    gap = inner_lip_gap(_kp(default_rig, jawOpen=jaw, **closer)[None])[0]
    assert gap < 0.02 * default_rig.iod


def test_default_avatar_has_parted_lips(default_rig: Rig) -> None:
    """The astronaut smiles with teeth showing: closure must also close the neutral gap."""
    assert inner_lip_gap(_kp(default_rig)[None])[0] > 0.1 * default_rig.iod


def test_over_closure_saturates_without_crossing(default_rig: Rig) -> None:
    kp = _kp(default_rig, jawOpen=0.6, mouthClose=1.0, mouthPress=1.0)
    for up, lo in R.T.INNER_LIP_PAIRS:
        assert kp[lo, 1] - kp[up, 1] > -0.01 * default_rig.iod


@pytest.mark.parametrize("side,name", [(1.0, "eyeBlinkLeft"), (-1.0, "eyeBlinkRight")])
def test_blink_closes_each_lid(default_rig: Rig, side: float, name: str) -> None:
    neutral = _kp(default_rig)
    top, bottom = (R.T.LEFT_EYE_TOP, R.T.LEFT_EYE_BOTTOM) if side > 0 else (
        R.T.RIGHT_EYE_TOP, R.T.RIGHT_EYE_BOTTOM)
    eye_height = np.linalg.norm(neutral[top] - neutral[bottom])
    closed = eyelid_gaps(_kp(default_rig, **{name: 1.0})[None], side)[0]
    assert (closed <= 0.1 * eye_height).all()
    # the other eye stays open
    other = eyelid_gaps(_kp(default_rig, **{name: 1.0})[None], -side)[0]
    assert np.allclose(other, eyelid_gaps(neutral[None], -side)[0], atol=1e-3)


def test_every_field_moves_its_region(default_rig: Rig) -> None:
    neutral = _kp(default_rig)
    iod = default_rig.iod
    expect = {  # coefficient → (a vertex that must move ≥ 0.04 IOD, one that must stay)
        "jawOpen": (152, 10), "mouthFunnel": (13, 159), "mouthPucker": (61, 159),
        "mouthSmileLeft": (291, 61), "mouthSmileRight": (61, 291),
        "mouthStretchLeft": (291, 61), "mouthStretchRight": (61, 291),
        "mouthUpperUpLeft": (311, 14), "mouthUpperUpRight": (81, 14),
        "mouthLowerDownLeft": (402, 13), "mouthLowerDownRight": (178, 13),
        "eyeBlinkLeft": (386, 159), "eyeBlinkRight": (159, 386),
        "browInnerUp": (107, 14), "browOuterUpLeft": (300, 70), "browOuterUpRight": (70, 300),
    }
    for name, (moves, stays) in expect.items():
        d = np.linalg.norm(_kp(default_rig, **{name: 1.0}) - neutral, axis=1) / iod
        assert d[moves] >= 0.04, name
        assert d[stays] < 0.01, name
    assert set(expect) | {"mouthClose", "mouthPressLeft", "mouthPressRight"} == set(COEFFICIENTS)


def test_smile_raises_corner_and_pucker_narrows(default_rig: Rig) -> None:
    n = _kp(default_rig)
    s = _kp(default_rig, mouthSmile=1.0)
    assert s[291, 1] < n[291, 1] and s[291, 0] > n[291, 0]
    assert s[61, 1] < n[61, 1] and s[61, 0] < n[61, 0]
    p = _kp(default_rig, mouthPucker=1.0)
    assert p[291, 0] - p[61, 0] < 0.8 * (n[291, 0] - n[61, 0])


def test_head_pose(default_rig: Rig) -> None:
    n = _kp(default_rig)
    yaw = _kp(default_rig, pose_vector(yaw=np.radians(15)))
    # turning toward the subject's left (image right): the nose tip moves right in the image
    # more than the ears' midpoint, and the face narrows
    assert yaw[1, 0] - n[1, 0] > 0
    width = lambda k: np.linalg.norm(k[454] - k[234])
    assert width(yaw) < width(n)
    pitch = _kp(default_rig, pose_vector(pitch=np.radians(15)))
    assert pitch[1, 1] > n[1, 1]  # looking down: nose tip lower
    roll = _kp(default_rig, pose_vector(roll=np.radians(10)))
    eye_line = roll[263] - roll[33]
    assert np.degrees(np.arctan2(eye_line[1], eye_line[0])) == pytest.approx(
        10 + np.degrees(np.arctan2(*(n[263] - n[33])[::-1])), abs=0.5)
    moved = _kp(default_rig, pose_vector(tx=0.1, ty=-0.05, scale=1.0))
    assert np.allclose(moved - n, [25.6, -12.8], atol=1e-3)


def test_bad_shapes_raise(default_rig: Rig) -> None:
    with pytest.raises(ValueError, match=r"coeffs \[B, 19\]"):
        default_rig.keypoints(np.zeros((1, 5)), NEUTRAL_POSE[None])
    with pytest.raises(KeyError, match="mouthFrown"):
        coefficients_from_mapping({"mouthFrown": 1.0})
    with pytest.raises(ValueError, match="not finite"):
        coefficients_from_mapping({"jawOpen": float("nan")})
    with pytest.raises(ValueError):
        Rig.from_landmarks(np.zeros((478, 3)), 256)


def test_batch_matches_single(default_rig: Rig) -> None:
    rng = np.random.default_rng(1)
    c = rng.uniform(0, 1, (8, N_COEFFICIENTS))
    p = np.tile(NEUTRAL_POSE, (8, 1))
    p[:, :3] = rng.uniform(-0.3, 0.3, (8, 3))
    batch = default_rig.keypoints(c, p)
    for i in range(8):
        assert np.allclose(batch[i], default_rig.keypoints(c[i:i + 1], p[i:i + 1])[0], atol=1e-4)


def test_lip_gap_helpers_agree(default_rig: Rig, default_avatar) -> None:
    """The rig's own gap (face frame, IOD), the image gap (pixels) and the tracked-face gap (own
    IOD) are one measure: equal on an upright, open mouth to well under 0.001 IOD."""
    rng = np.random.default_rng(3)
    c = rng.uniform(0.0, 0.5, (50, N_COEFFICIENTS))
    kp = default_rig.keypoints(c, np.tile(NEUTRAL_POSE, (50, 1)))
    pixels = inner_lip_gap(kp)
    assert pixels.shape == (50,) and pixels.dtype == np.float64
    np.testing.assert_allclose(pixels / default_rig.iod, expression_lip_gap(default_rig, c),
                               atol=5e-4)
    assert expression_lip_gap(default_rig, c[0]).shape == ()
    # the tracked-face form divides by the landmarks' own (here 2-D) inter-ocular distance
    neutral = default_avatar.crop_landmarks(256)
    own = inner_lip_gap_iod(neutral[None, :, :2])[0]
    assert own == pytest.approx(inner_lip_gap(neutral[None])[0] / default_rig.iod, rel=0.01)
    assert np.isnan(inner_lip_gap_iod(np.zeros((1, 478, 2)))[0])  # no eye distance: no gap


def test_closure_for_gap_inverts_the_rig(default_rig: Rig) -> None:
    c = coefficients_from_mapping({"jawOpen": 0.4, "mouthSmile": 0.3})
    for close in (0.0, 0.25, 0.6, 0.9):
        c[INDEX["mouthClose"]] = close
        gap = float(expression_lip_gap(default_rig, c))
        assert closure_for_gap(default_rig, c, gap) == pytest.approx(close, abs=0.01)
    assert closure_for_gap(default_rig, c, 10.0) == 0.0  # wider than the face can open
    assert closure_for_gap(default_rig, c, -10.0) == 1.0
