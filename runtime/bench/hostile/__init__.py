"""``facecast bench hostile``: a fuzz campaign against a real ``facecast serve``.

Run it with ``facecast bench hostile`` (a readable summary; ``--json`` for the report,
``--quick`` for a subset of about 25 cases, ``--case NAME`` (repeatable) for chosen cases; exit 1
unless the report is ``ok``), or from Python with ``run_campaign()``. The whole campaign takes
about two minutes on two cores.

What it does: starts ``facecast serve`` as a child process on loopback
(``harness.serve_process``, flags in ``ServerFlags``), keeps ONE well-behaved session talking
the whole time (``WellBehaved``: an aiortc ``AvatarClient`` with media up, pushing the held-out
Asterisk prompts in real time through ``harness.speak_prompts``, on its own thread and event
loop so the campaign's own work does not disturb what it measures), and runs every hostile
``Case`` of ``CASES`` against the same server, one after another, paced. The cases, by group:

- protocol (``cases_protocol``): malformed JSON, wrong types and values in every message,
  oversized and deeply nested frames, bad ``avatar=`` / ``display=`` / ``control=`` names;
- signaling (``cases_signaling``): offers to refuse, a second offer, the media deadlines (no
  offer, ICE that never connects, a peer that vanishes);
- http and auth (``cases_http``): Host and Origin checks, path traversal, dotfiles, odd
  methods and headers, security headers, slowloris; tokens against a second, short-lived server
  started with ``--token``, its failed-attempt rate limit last;
- limits (``cases_limits``): long text, utterance and stream caps, a flood of 2,000 messages
  that the server must pace (every one answered, at its sustained rate), admission and
  controller bursts, avatar spellings, an interrupt during synthesis;
- faults (``cases_faults``): resets at every step, WebSocket protocol violations, half-close;
  after the other cases the server's health, SIGTERM while the well-behaved session is still
  connected, and its logs (no traceback, bounded size);
- cli (``cases_faults``): ``facecast`` itself run with bad values, before the servers start.

Each case is a small coroutine returning ``(handled, detail)``; "handled" means the server did
what its CONTRACT says (malformed input refused with the right ``error`` code and the session
still answering ``ping``, paths refused, limits enforced, nothing crashing), not what today's
server happens to do. An exception or a timeout inside a case is "not handled" with the
exception as the detail; one case never stops the campaign.

Reported (one JSON object, ``run_campaign``): every case (``name``, ``group``, ``handled``,
``detail``, ``seconds``, ``t_s`` since the measured span began), ``count``, ``handled``,
``failed`` (counts) and ``failed_names``; ``well_behaved``: the session's delivered frames,
frames per ``WINDOW_S`` window over the measured span (min, mean, the windows below
``TARGET_FPS`` with the cases running then), the errors it was sent and whether it stayed
connected until SIGTERM; ``server``: fds, threads and RSS of the server process before and after
the cases (``/proc``), its late ticks, its exit status and the seconds it took after SIGTERM,
the flags it was started with and any of ``ServerFlags`` it does not know; ``ok``: every case
handled and the well-behaved session held ``TARGET_FPS`` in every window.

Modules: ``model`` (``Case``, ``Target``, ``ServerFlags``, constants), ``wire`` (raw HTTP and
WebSocket bytes), ``clients`` (``Probe``, messages, the server's state), ``well_behaved``, the
``cases_*`` modules (each exporting its ``CASES``), ``campaign`` (the order, running, report).
"""

from runtime.bench.hostile.campaign import CASES, check_cases, run_campaign, select_cases, summary
from runtime.bench.hostile.clients import Probe
from runtime.bench.hostile.model import (
    GROUPS,
    PHASES,
    TARGET_FPS,
    WINDOW_S,
    Case,
    CaseFailed,
    Outcome,
    ServerFlags,
    Target,
)
from runtime.bench.hostile.well_behaved import WellBehaved
from runtime.bench.hostile.wire import HttpReply, http_exchange, http_request

__all__ = ["CASES", "GROUPS", "PHASES", "TARGET_FPS", "WINDOW_S", "Case", "CaseFailed",
           "HttpReply", "Outcome", "Probe", "ServerFlags", "Target", "WellBehaved",
           "check_cases", "http_exchange", "http_request", "run_campaign", "select_cases",
           "summary"]
