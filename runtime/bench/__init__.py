"""``facecast bench …``: component speed (``components``: rig, motion model, renderer),
end-to-end latency over real WebRTC on loopback (``latency``), and the long soak (``soak``);
``harness`` holds what the last two share (starting a server, the held-out prompts, reading the
received streams), ``command`` the sub-commands' options and how each is run.
"""
