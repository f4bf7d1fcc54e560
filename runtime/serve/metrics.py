"""Prometheus metrics of a server (prometheus-client, one registry per server, no globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily

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
    * ``facecast_capacity_sessions`` (gauge): the session limit (configured, or measured with
      ``--max-sessions auto``); ``facecast_load`` (gauge): sessions / capacity, what a load
      balancer or an orchestrator routes on.
    * ``facecast_stage_seconds_total{stage}`` (counter, after ``watch_stages``): seconds spent
      per pipeline stage (``runtime.live.stages``), every session's frames summed.
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
        self.capacity = Gauge("facecast_capacity_sessions",
                              "session limit (configured or measured)", registry=r)
        self.load = Gauge("facecast_load", "sessions / capacity", registry=r)
        self.composite_failures = Counter(
            "facecast_composite_failures",
            "frames dropped because paste-back, badge or watermark failed (never sent unmarked)",
            registry=r)

    def set_sessions(self, sessions: int, capacity: int) -> None:
        """Open sessions now, out of ``capacity`` (≥ 1): the sessions, capacity and load
        gauges."""
        self.sessions.set(sessions)
        self.capacity.set(capacity)
        self.load.set(sessions / capacity)

    def watch_stages(self, stages) -> None:
        """Expose ``stages`` (a ``runtime.live.stages.StageTimes``) as
        ``facecast_stage_seconds_total{stage}``, read at each scrape."""
        self.registry.register(_StageCollector(stages))

    def on_tick(self, results: list) -> None:
        """Count one tick's frames (``Scheduler._tick`` results)."""
        for job, frame, _audio in results:
            if frame is not None:
                self.frames_rendered.inc()
            elif job.session.render_video:  # not rendered because nobody watches: not dropped
                self.frames_dropped.inc()

    def text(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)


class _StageCollector:
    """A prometheus-client collector reading a ``StageTimes`` at scrape time."""

    def __init__(self, stages) -> None:
        self.stages = stages

    def collect(self):
        family = CounterMetricFamily("facecast_stage_seconds",
                                     "seconds per pipeline stage, all sessions' frames",
                                     labels=["stage"])
        for stage, seconds in self.stages.snapshot().items():
            family.add_metric([stage], seconds)
        yield family
