"""``facecast serve``: the asyncio WebSocket + WebRTC server, its typed control protocol, HTTP
(static widget files, ``/healthz``, ``/metrics``), auth, the reclaiming of closed peers, and a
Python client.
"""
