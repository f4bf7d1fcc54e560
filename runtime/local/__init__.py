"""This machine's devices and the apps on them: the microphone (PortAudio), the sinks (virtual
camera, preview window, MP4 recorder), ``facecast cam`` and ``facecast kiosk``.
"""
