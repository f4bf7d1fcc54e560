"""The behaviour layer: idle life (blinks, head motion, breathing, gaze), speech and idle blending,
prosody nods (``behaviour``), and the One Euro filter that smooths keypoints and coefficients
(``one_euro``).
"""
