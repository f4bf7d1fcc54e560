"""The real-time pipeline shared by ``facecast serve``, ``cam``, ``kiosk`` and the agent
integrations: the speech queue and the per-client session (``session``), the outgoing WebRTC
tracks, and the scheduler (frame clock, one batched renderer tick for every session, watchdog).
"""
