"""Face tracking for webcam-driven mode: mediapipe Face Mesh in video mode, and the calibrated
neutral face.

* **Tracking** (``FaceTracker``): mediapipe 0.10.21's legacy Face Mesh
  (``mp.solutions.face_mesh``) in video mode (``static_image_mode=False``: detection once, then
  landmark tracking from the previous frame's face), ``refine_landmarks=True`` (478 points with
  irises, ``avatars.topology``), one face. Its landmarks are normalised; they are turned into
  pixels of the frame (z scaled by the frame width, as mediapipe's z is; the convention of
  ``avatars.enroll.detect_faces``).
* **Calibration** (``NeutralCalibration``): the driver's neutral is the per-point median of the
  first few frames in which a face is found (5 frames, 0.2 s at 25 fps), so a blink or a twitch
  in one of them does not bend the neutral. The user is expected to look at the camera with a
  relaxed, closed mouth for that moment (as with every face-capture app's "neutral pose" step).
"""

from __future__ import annotations

import numpy as np


class FaceTracker:
    """mediapipe legacy Face Mesh in video mode (one face, refined: 478 points).

    Args:
        min_detection_confidence, min_tracking_confidence: mediapipe's thresholds (its
            defaults, 0.5): below the tracking one it re-runs detection; below the detection
            one it reports no face.

    ``track(rgb)`` takes uint8 [H, W, 3] RGB and returns float64 [478, 3] pixels (z scaled by
    the frame width) or None when no face is found. Frames must come in time order (the tracker
    starts from the previous frame's face). Not thread-safe; ``close()`` frees the graph.
    mediapipe is imported on construction.
    """

    def __init__(self, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5) -> None:
        from avatars.enroll import import_mediapipe, native_stderr_silenced

        mp = import_mediapipe()

        with native_stderr_silenced():
            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=False, max_num_faces=1, refine_landmarks=True,
                min_detection_confidence=min_detection_confidence,
                min_tracking_confidence=min_tracking_confidence)
            self._mesh.process(np.zeros((64, 64, 3), np.uint8))  # start the graph (its chatter)

    def track(self, rgb: np.ndarray) -> np.ndarray | None:
        """Landmarks of the face in uint8 [H, W, 3] RGB: float64 [478, 3] frame pixels (z in
        x's scale), or None when no face is found. Raises ``ValueError`` for another array."""
        img = np.asarray(rgb)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"frame must be uint8 [H, W, 3] RGB, got {img.dtype} "
                             f"{list(img.shape)}")
        h, w = img.shape[:2]
        result = self._mesh.process(np.ascontiguousarray(img))
        if not result.multi_face_landmarks:
            return None
        lm = result.multi_face_landmarks[0].landmark
        out = np.array([(p.x, p.y, p.z) for p in lm], dtype=np.float64)
        out[:, 0] *= w
        out[:, 1] *= h
        out[:, 2] *= w
        return out

    def close(self) -> None:
        """Free mediapipe's graph."""
        self._mesh.close()


class NeutralCalibration:
    """Collects tracked faces until there are enough for a neutral.

    Args:
        frames: how many found faces make the neutral (their per-point median; at least 1).

    ``add(landmarks)`` takes float [478, 3] and returns the neutral (float64 [478, 3], the
    per-point median) once ``frames`` faces were added, then starts over; else None.
    ``reset()`` forgets the faces collected so far.
    """

    def __init__(self, frames: int = 5) -> None:
        self.frames = max(1, int(frames))
        self._faces: list[np.ndarray] = []

    @property
    def collected(self) -> int:
        """Faces collected toward the next neutral."""
        return len(self._faces)

    def add(self, landmarks: np.ndarray) -> np.ndarray | None:
        """Add one found face; the neutral when it completes one, else None."""
        self._faces.append(np.asarray(landmarks, dtype=np.float64))
        if len(self._faces) < self.frames:
            return None
        neutral = np.median(np.stack(self._faces), axis=0)
        self._faces = []
        return neutral

    def reset(self) -> None:
        """Forget the faces collected so far."""
        self._faces = []
