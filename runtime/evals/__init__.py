"""``facecast eval …``: lip sync of the motion model on held-out speech (``lipsync``), of a
rendered video judged by mediapipe (``sync``), the renderer judged by mediapipe (``renderer``),
and the webcam-driven mode on known motion (``webcam``). ``heldout.txt`` (package data) lists
the Asterisk prompts never trained on.
"""
