"""Prometheus metrics of a server (prometheus-client, one registry per server, no globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.0, 5.0)
"""Seconds; the product's target for speech onset to mouth is 0.25 s."""


class Metrics:
    """The server's metrics.

    * ``facecast_sessions`` (gauge): open sessions.
    * ``facecast_frames_rendered_total`` / ``facecast_frames_dropped_total`` (counters): video
      frames delivered to sessions / skipped because the renderer could not keep up.
    * ``facecast_render_seconds`` (histogram): one batched renderer call.
    * ``facecast_tick_seconds`` (histogram): one whole tick in the worker (motion, behaviour,
      rig, render, paste, frames).
    * ``facecast_speech_latency_seconds`` (histogram): end to end inside the server, from an
      utterance's first audio arriving (or its TTS finishing) to its first sample and mouth
      frame being handed to the WebRTC tracks.
    * ``facecast_errors_total{code}`` (counter): ``error`` replies by code.
    * ``facecast_watchdog_restarts_total`` (counter): pipeline restarts after a stall
      (``runtime.live.scheduler``: no frame for 2 s).
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sessions = Gauge("facecast_sessions", "open sessions", registry=r)
        self.frames_rendered = Counter("facecast_frames_rendered", "video frames delivered",
                                       registry=r)
        self.frames_dropped = Counter("facecast_frames_dropped",
                                      "video frames dropped (renderer behind)", registry=r)
        self.render_seconds = Histogram("facecast_render_seconds", "one batched render call",
                                        registry=r, buckets=(0.005, 0.01, 0.02, 0.03, 0.04,
                                                             0.06, 0.08, 0.12, 0.2, 0.5))
        self.tick_seconds = Histogram("facecast_tick_seconds", "one scheduler tick",
                                      registry=r, buckets=(0.005, 0.01, 0.02, 0.03, 0.04,
                                                           0.06, 0.08, 0.12, 0.2, 0.5))
        self.speech_latency = Histogram("facecast_speech_latency_seconds",
                                        "speech arrival to first frame handed to WebRTC",
                                        registry=r, buckets=LATENCY_BUCKETS)
        self.errors = Counter("facecast_errors", "error replies", ["code"], registry=r)
        self.watchdog_restarts = Counter("facecast_watchdog_restarts",
                                         "pipeline restarts after a stall (no frame for 2 s)",
                                         registry=r)

    def on_tick(self, results: list) -> None:
        """Count one tick's frames (``Scheduler._tick`` results)."""
        for _job, frame, _audio in results:
            (self.frames_dropped if frame is None else self.frames_rendered).inc()

    def text(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
