"""Our hand-written Face Mesh vertex groups against mediapipe's own connection sets."""

from __future__ import annotations

import itertools

import pytest

from avatars import topology as T

conn = pytest.importorskip("mediapipe.python.solutions.face_mesh_connections")


def _edges(*contours: tuple[int, ...], closed: bool = False) -> set[frozenset[int]]:
    out = set()
    for c in contours:
        pts = list(c) + ([c[0]] if closed else [])
        out |= {frozenset(e) for e in itertools.pairwise(pts)}
    return out


def _as_set(connections: frozenset[tuple[int, int]]) -> set[frozenset[int]]:
    return {frozenset(e) for e in connections}


def test_lips_match_mediapipe() -> None:
    ours = _edges(T.LIPS_OUTER_UPPER, T.LIPS_OUTER_LOWER, T.LIPS_INNER_UPPER, T.LIPS_INNER_LOWER)
    assert ours == _as_set(conn.FACEMESH_LIPS)


def test_eyes_match_mediapipe() -> None:
    assert _edges(T.LEFT_EYE_UPPER, T.LEFT_EYE_LOWER) == _as_set(conn.FACEMESH_LEFT_EYE)
    assert _edges(T.RIGHT_EYE_UPPER, T.RIGHT_EYE_LOWER) == _as_set(conn.FACEMESH_RIGHT_EYE)


def test_brows_match_mediapipe() -> None:
    assert _edges(T.LEFT_BROW_UPPER, T.LEFT_BROW_LOWER) == _as_set(conn.FACEMESH_LEFT_EYEBROW)
    assert _edges(T.RIGHT_BROW_UPPER, T.RIGHT_BROW_LOWER) == _as_set(conn.FACEMESH_RIGHT_EYEBROW)


def test_face_oval_and_irises_match_mediapipe() -> None:
    assert _edges(T.FACE_OVAL, closed=True) == _as_set(conn.FACEMESH_FACE_OVAL)
    assert {v for e in conn.FACEMESH_LEFT_IRIS for v in e} == set(T.LEFT_IRIS[1:])
    assert {v for e in conn.FACEMESH_RIGHT_IRIS for v in e} == set(T.RIGHT_IRIS[1:])
    assert max(v for e in conn.FACEMESH_TESSELATION for v in e) == T.N_MESH - 1


def test_pairs_are_interior_and_matched() -> None:
    assert T.INNER_LIP_PAIRS[4] == (13, 14)
    assert len(T.RIGHT_EYELID_PAIRS) == len(T.RIGHT_EYE_UPPER) - 2
    for pair in T.CENTRAL_INNER_LIP_PAIRS:
        assert pair in T.INNER_LIP_PAIRS
