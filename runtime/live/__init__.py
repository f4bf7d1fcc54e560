"""The real-time pipeline shared by ``facecast serve``, ``cam``, ``kiosk`` and the agent
integrations: the speech queue (``speech``), the per-client session (``session``), the outgoing
WebRTC tracks (``tracks``), the typed events (``events``), and the scheduler (frame clock, one
batched renderer tick for every session, watchdog; ``scheduler``) with the monotonic clock it
paces itself by (``monotonic``).
"""
