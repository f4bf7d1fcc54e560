"""What a live session reports as it plays: typed events, handed to the session's ``on_event``.

A session calls ``on_event`` on the event loop with one of these, in the order they happen:
``SpeechStarted`` when an utterance's first sample is played, ``SpeechEnded`` when its last one
is (or when ``interrupt`` drops it), ``StateChanged`` when the avatar goes from idle to speaking
or back. They are plain data; ``facecast serve`` turns them into its wire messages
(``runtime.serve.protocol.encode``), other hosts (cam, kiosk, agent integrations) read them
directly. This package never knows about the wire.

A field whose metadata has ``local=True`` is for this process only (e.g. the timestamp behind the
speech-latency metric) and is never sent to a client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

AvatarState = Literal["idle", "speaking"]


@dataclass(frozen=True)
class SpeechStarted:
    """The first sample of utterance ``id`` is being played.

    Attributes:
        id: the utterance id (the client's ``id``, or one the server made up).
        first_audio: ``time.monotonic()`` seconds when the utterance's first audio was queued
            (its creation time if it had none); local, for the speech-latency metric.
    """

    type: ClassVar[str] = "speech_started"
    id: str
    first_audio: float = field(default=0.0, compare=False, metadata={"local": True})


@dataclass(frozen=True)
class SpeechEnded:
    """Utterance ``id`` finished playing, or was dropped by an interrupt.

    Attributes:
        id: the utterance id.
        played_ms: milliseconds of it played (whole ms, rounded).
        duration_ms: milliseconds of audio it had queued (whole ms, rounded).
        interrupted: True if ``interrupt`` cut it short.
    """

    type: ClassVar[str] = "speech_ended"
    id: str
    played_ms: int
    duration_ms: int
    interrupted: bool


@dataclass(frozen=True)
class StateChanged:
    """The avatar's state changed to ``state``: ``"idle"`` or ``"speaking"``."""

    type: ClassVar[str] = "state"
    state: AvatarState


SessionEvent = SpeechStarted | SpeechEnded | StateChanged
"""Any event a session reports."""
