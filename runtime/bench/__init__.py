"""``facecast bench …``: component speed (rig, motion model, renderer), end-to-end latency over
real WebRTC on loopback, and the long soak; ``harness`` holds what they share (starting a
server, the held-out prompts, reading the received streams).
"""
