"""Real time: audio I/O, sessions, behaviour, the A/V clock, WebRTC, signaling and HTTP, the CLI.

Never imports torch: the serving path runs from ONNX / TensorRT files.
"""
