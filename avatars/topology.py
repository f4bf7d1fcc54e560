"""Named vertex groups of the mediapipe Face Mesh topology (478 landmarks, refined).

Indices are those of mediapipe's canonical face mesh (``face_mesh_connections.py`` in mediapipe
0.10.21: FACEMESH_LIPS, FACEMESH_LEFT_EYE, …), written out here so that the rig and everything
downstream of it run without importing mediapipe. ``tests/test_topology.py`` checks every group
against mediapipe's own connection sets.

Side convention (mediapipe's and ARKit's): *Left* / *Right* are the subject's left and right.
For a face looking at the camera the subject's right eye (vertex 33) appears on the image's
left.
"""

from __future__ import annotations

N_LANDMARKS = 478
"""Face Mesh vertices with ``refine_landmarks=True``: 468 mesh points + 2 × 5 iris points."""
N_MESH = 468
"""Mesh vertices without the iris points."""

# Lips: each contour runs from the right mouth corner (image left) to the left corner.
LIPS_OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LIPS_OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
LIPS_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIPS_INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
MOUTH_CORNER_RIGHT = 61
MOUTH_CORNER_LEFT = 291
INNER_CORNER_RIGHT = 78
INNER_CORNER_LEFT = 308
LIP_UPPER_INNER_MID = 13
LIP_LOWER_INNER_MID = 14

# Eyes: contours from the outer (lateral) corner to the inner (medial) corner.
RIGHT_EYE_UPPER = (33, 246, 161, 160, 159, 158, 157, 173, 133)
RIGHT_EYE_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
LEFT_EYE_UPPER = (263, 466, 388, 387, 386, 385, 384, 398, 362)
LEFT_EYE_LOWER = (263, 249, 390, 373, 374, 380, 381, 382, 362)
RIGHT_EYE_CORNERS = (33, 133)
LEFT_EYE_CORNERS = (263, 362)
RIGHT_EYE_TOP, RIGHT_EYE_BOTTOM = 159, 145
LEFT_EYE_TOP, LEFT_EYE_BOTTOM = 386, 374

# Irises (refined landmarks): centre first, then the four rim points.
RIGHT_IRIS = (468, 469, 470, 471, 472)
LEFT_IRIS = (473, 474, 475, 476, 477)

# Eyebrows: upper and lower edges, from the outer end to the inner end.
RIGHT_BROW_UPPER = (70, 63, 105, 66, 107)
RIGHT_BROW_LOWER = (46, 53, 52, 65, 55)
LEFT_BROW_UPPER = (300, 293, 334, 296, 336)
LEFT_BROW_LOWER = (276, 283, 282, 295, 285)

# Face oval, clockwise in the image from the forehead top (10).
FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)
CHIN = 152
FOREHEAD_TOP = 10
NOSE_TIP = 1


def pairs(upper: tuple[int, ...], lower: tuple[int, ...]) -> list[tuple[int, int]]:
    """Vertically matched (upper, lower) vertex pairs of two contours that share their end points.

    Returns the pairs of the interior points only (the shared corners are dropped), e.g. for the
    inner lips (191, 95), (80, 88), …, (13, 14), …
    """
    return list(zip(upper[1:-1], lower[1:-1]))


INNER_LIP_PAIRS = pairs(LIPS_INNER_UPPER, LIPS_INNER_LOWER)
CENTRAL_INNER_LIP_PAIRS = [(82, 87), (13, 14), (312, 317)]
"""The three inner-lip pairs about the midline, used to measure the lip gap."""
RIGHT_EYELID_PAIRS = pairs(RIGHT_EYE_UPPER, RIGHT_EYE_LOWER)
LEFT_EYELID_PAIRS = pairs(LEFT_EYE_UPPER, LEFT_EYE_LOWER)
