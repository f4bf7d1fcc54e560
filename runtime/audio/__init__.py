"""Audio in and out of the real-time side: decoding any file (``decode``), the one resampler
(``resample``, libswresample through PyAV), text to speech (``tts``, ``espeak``), prosody (``prosody``: energy and
pitch for head motion and brows) and the microphone's voice gate (``gate``).
"""
