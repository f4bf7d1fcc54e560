"""``facecast kiosk``: the server plus a full-screen avatar page in Chromium, built to run for days.

What it does:

* starts the server (``runtime.serve.server.Server``) on 127.0.0.1 in this process, with the pipeline
  watchdog of ``runtime.live.scheduler`` (a stalled pipeline — no frame for 2 s — is restarted without
  losing the session's queued speech; ``/healthz`` reports ``stalled`` and the restarts);
* opens ``web/kiosk.html`` in Chromium: ``--kiosk`` (locked full screen) with ``--fullscreen``,
  else an app window (``--app=URL``); the browser is relaunched if it exits (backoff 1 s … 30 s).
  Without a browser or a display it says so and keeps serving; open the URL on any screen;
* the page connects by itself and reconnects with jittered exponential backoff after any drop
  (``web/facecast-avatar.js`` ``reconnect``); it is the display ``kiosk`` (``--display``), so
  speech arrives from apps over the WebSocket protocol (``/ws?control=kiosk``: ``speak``,
  ``audio`` + ``audio_end``, ``interrupt``; ``web/PROTOCOL.md``), from text (``--say``, and each
  line typed on standard input), or the local microphone (``--mic [DEVICE]``, through
  ``runtime.local.mic`` like ``facecast cam``, pushed into the event loop and cut into
  utterances by ``runtime.audio.gate.VoiceGate`` so that the avatar idles between phrases and
  an app's speech is not held up behind an endless microphone stream); with nothing to say the
  avatar idles;
* logs go to a size-rotated file (``logging.handlers.RotatingFileHandler``; default
  ``$XDG_STATE_HOME/facecast/kiosk.log``, i.e. ``~/.local/state/facecast/kiosk.log``, 5 MiB × 5
  backups) and to stderr; websockets' per-request lines and aioice's per-candidate lines are
  silenced (``runtime.serve.logs.quiet_library_logs``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.handlers
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from runtime.provenance.disclosure import Badge

log = logging.getLogger("facecast.kiosk")

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
"""Executables looked for on PATH, in order."""
LOG_MAX_BYTES = 5 * 1024 * 1024
"""Default size of the kiosk log file before it rotates."""
LOG_BACKUPS = 5
"""Default number of rotated log files kept (kiosk.log.1 … kiosk.log.5)."""
BROWSER_RESTART_MAX_S = 30.0
"""Longest wait before relaunching a browser that exited."""


@dataclass(frozen=True)
class KioskOptions:
    """Settings of ``facecast kiosk`` (see ``facecast kiosk --help``).

    Attributes:
        avatar: avatar name. port: server port (0: any free one). size, backend, fps: renderer
        settings passed to the server. fullscreen: Chromium ``--kiosk`` (else an app window).
        browser: True to open a browser. browser_path: the executable (None: look on PATH).
        display: display name of the page (apps send speech to ``/ws?control=NAME``).
        log_file: rotating log file (None: ``default_log_file()``). log_max_bytes, log_backups:
        rotation. say: text spoken once the page is connected. read_stdin: speak each line of
        standard input. mic: microphone device (name, index, or "default") or None (no mic).
        allow_unconsented: show an avatar whose bundle states no consent (logged).
        badge: the disclosure badge in every frame (None: off, logged).
        watermark: the invisible watermark in every frame (False: off, logged).
    """

    avatar: str = "default"
    port: int = 8765
    size: int = 256
    backend: str = "auto"
    fps: int = 25
    fullscreen: bool = False
    browser: bool = True
    browser_path: str | None = None
    display: str = "kiosk"
    log_file: Path | None = None
    log_max_bytes: int = LOG_MAX_BYTES
    log_backups: int = LOG_BACKUPS
    say: str | None = None
    read_stdin: bool = True
    mic: str | None = None
    allow_unconsented: bool = False
    badge: Badge | None = field(default_factory=Badge)
    watermark: bool = True


def state_dir() -> Path:
    """The user's state folder for facecast: ``$XDG_STATE_HOME/facecast`` or
    ``~/.local/state/facecast`` (not created here)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "facecast"


def default_log_file() -> Path:
    """``state_dir() / "kiosk.log"``."""
    return state_dir() / "kiosk.log"


def setup_logging(log_file: Path, max_bytes: int = LOG_MAX_BYTES, backups: int = LOG_BACKUPS,
                  level: int = logging.INFO,
                  stream=sys.stderr) -> logging.handlers.RotatingFileHandler:
    """Log to ``log_file`` (rotated at ``max_bytes``, ``backups`` old files kept) and to
    ``stream``, at ``level``, with chatty library loggers tamed. Creates the folder. Returns the
    file handler (close it to release the file).

    Raises:
        OSError: the folder cannot be created or the file cannot be opened.
        ValueError: ``max_bytes`` < 1024 or ``backups`` < 1.
    """
    from runtime.serve.logs import quiet_library_logs

    if max_bytes < 1024 or backups < 1:
        raise ValueError("log rotation needs max bytes ≥ 1024 and at least 1 backup")
    log_file = Path(log_file).expanduser()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler = logging.handlers.RotatingFileHandler(log_file, maxBytes=max_bytes,
                                                   backupCount=backups, encoding="utf-8")
    handler.setFormatter(fmt)
    root = logging.getLogger()
    root.setLevel(level)
    root.addHandler(handler)
    if stream is not None:
        console = logging.StreamHandler(stream)
        console.setFormatter(fmt)
        root.addHandler(console)
    quiet_library_logs()
    return handler


def find_browser(explicit: str | None = None) -> str | None:
    """Path of a Chromium-family browser: ``explicit`` if it exists (or is on PATH), else the first
    of ``BROWSERS`` on PATH; None if there is none."""
    if explicit:
        return explicit if Path(explicit).is_file() else shutil.which(explicit)
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def has_display() -> bool:
    """True when a graphical session is reachable (``$DISPLAY`` or ``$WAYLAND_DISPLAY`` on Linux;
    always on macOS/Windows)."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def browser_command(browser: str, url: str, fullscreen: bool, profile_dir: Path) -> list[str]:
    """The Chromium command line for the kiosk page: ``--kiosk`` (locked full screen) when
    ``fullscreen``, else a maximised app window; its own profile; autoplay with sound; no first-run
    or crash bubbles, no background networking or updates."""
    cmd = [browser, f"--app={url}", f"--user-data-dir={profile_dir}", "--no-first-run",
           "--noerrdialogs", "--disable-infobars", "--disable-session-crashed-bubble",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--autoplay-policy=no-user-gesture-required", "--disable-features=Translate",
           "--check-for-update-interval=31536000"]
    cmd.append("--kiosk" if fullscreen else "--start-maximized")
    return cmd


class BrowserSupervisor:
    """Keeps the kiosk browser running: launches ``cmd`` and relaunches it whenever it exits,
    waiting 1 s, 2 s, 4 s … ``BROWSER_RESTART_MAX_S`` (reset after a run of over a minute).

    Args:
        cmd: the browser's argv (``browser_command``).
    """

    def __init__(self, cmd: list[str]) -> None:
        self.cmd = cmd
        self.launches = 0
        self.proc: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="facecast-browser", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _main(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                             start_new_session=True)
            except OSError as exc:
                log.error("cannot start the browser (%s): %s", self.cmd[0], exc)
                return
            self.launches += 1
            log.info("browser started (pid %d, launch %d)", self.proc.pid, self.launches)
            code = self.proc.wait()
            if self._stop.is_set():
                return
            if time.monotonic() - started > 60:
                delay = 1.0
            log.warning("browser exited (status %s); relaunching in %.0f s", code, delay)
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, BROWSER_RESTART_MAX_S)

    def stop(self) -> None:
        """Close the browser and stop relaunching it."""
        self._stop.set()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()


def kiosk_url(port: int, options: KioskOptions, host: str = "127.0.0.1") -> str:
    """The URL of the kiosk page on the local server."""
    from urllib.parse import urlencode

    query = urlencode({"avatar": options.avatar, "display": options.display})
    return f"http://{host}:{port}/kiosk.html?{query}"


async def _speak_when_shown(server, display: str, text: str, wait_s: float = 120.0) -> None:
    """Say ``text`` on the display once it is connected (waits up to ``wait_s``)."""
    from runtime.serve.protocol import ProtocolError

    deadline = time.monotonic() + wait_s
    while display not in server.displays:
        if time.monotonic() > deadline:
            log.warning("no display %r connected within %.0f s; not saying %r", display, wait_s,
                        text[:60])
            return
        await asyncio.sleep(0.25)
    try:
        uid = await server.speak_on_display(display, text)
        log.info("saying %s: %r", uid, text[:80])
    except ProtocolError as exc:
        log.warning("cannot say %r: %s (%s)", text[:60], exc, exc.code)


def _read_stdin(loop: asyncio.AbstractEventLoop, server, display: str) -> None:
    """Thread: each non-empty line of standard input is said on the display."""
    for line in sys.stdin:
        text = line.strip()
        if text:
            asyncio.run_coroutine_threadsafe(_speak_when_shown(server, display, text), loop)


def _open_mic(options: KioskOptions, loop: asyncio.AbstractEventLoop):
    """Open ``options.mic`` (a device name or index; "default": the default input) with
    ``runtime.local.mic.Microphone``, its chunks pushed into ``loop``. Raises
    ``runtime.local.mic.MicError`` (an OSError) with the devices that exist, or ValueError when
    ``runtime.local.mic`` is missing."""
    try:
        from runtime.local.mic import Microphone
    except ImportError:
        raise ValueError("--mic needs runtime/local/mic.py (the input of facecast cam) and PyAudio; "
                         f"send speech over /ws?control={options.display} instead") from None
    spec = None if options.mic in (None, "", "default") else options.mic
    return Microphone(spec).start(loop)


async def _pump_mic(mic, server, display: str) -> None:
    """Event loop task: each microphone chunk, as it is pushed in → 48 kHz
    (``runtime.audio.resample.RateFollower``) → ``runtime.audio.gate.VoiceGate`` → the
    display's session (``Server.display_audio``). Without a connected display the audio is
    dropped."""
    from engines.audio import OUTPUT_SAMPLE_RATE
    from runtime.audio.gate import VoiceGate
    from runtime.audio.resample import RateFollower
    from runtime.serve.protocol import ProtocolError

    follower = RateFollower(OUTPUT_SAMPLE_RATE)
    warned = [False]

    def emit(uid: str, x, done: bool) -> None:
        try:
            server.display_audio(display, x, uid, done)
            warned[0] = False
        except ProtocolError as exc:
            if not warned[0]:
                log.warning("microphone: %s (%s); dropping its audio", exc, exc.code)
            warned[0] = True

    gate = VoiceGate(emit)
    try:
        while (chunk := await mic.get()) is not None:
            gate.push(follower.push(chunk.samples, chunk.rate))
        log.error("the microphone stopped delivering audio")
    finally:
        gate.close()


def run_kiosk(options: KioskOptions) -> int:
    """Run the kiosk until interrupted (Ctrl-C or SIGTERM). Returns the exit status (0).

    Raises:
        ValueError: bad options (bad log rotation, ``--mic`` without ``runtime.local.mic``, a server
            configuration ``ServerConfig.check`` refuses).
        OSError: the log file cannot be opened, the port is taken, or the microphone cannot
            be opened (``runtime.local.mic.MicError``, listing the devices that exist).
        BundleError: the avatar does not load.
    """
    from runtime.serve.server import Server, ServerConfig

    handler = setup_logging(options.log_file or default_log_file(), options.log_max_bytes,
                            options.log_backups)
    log.info("kiosk starting (log file %s, rotated at %d bytes, %d backups)",
             handler.baseFilename, options.log_max_bytes, options.log_backups)
    config = ServerConfig(host="127.0.0.1", port=options.port, avatar=options.avatar,
                          size=options.size, fps=options.fps, backend=options.backend,
                          allow_unconsented=options.allow_unconsented, badge=options.badge,
                          watermark=options.watermark)
    config.check()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        tasks: set[asyncio.Task] = set()  # strong references (the loop keeps only weak ones)
        mic = (await loop.run_in_executor(None, _open_mic, options, loop) if options.mic
               else None)
        server = Server(config)
        try:
            await server.start()
        except BaseException:
            if mic is not None:
                mic.close()
            raise
        url = kiosk_url(server.port, options)
        if mic is not None:
            log.info("microphone %r at %d Hz speaks on display %r", mic.device.name, mic.rate,
                     options.display)
            tasks.add(loop.create_task(_pump_mic(mic, server, options.display),
                                       name="facecast-mic"))
        print(f"facecast kiosk: serving {url}  (apps speak through "
              f"ws://127.0.0.1:{server.port}/ws?control={options.display}; type text + Enter "
              "to say it; Ctrl-C stops)", flush=True)
        log.info("kiosk page %s", url)
        supervisor = None
        if options.browser:
            browser = find_browser(options.browser_path)
            if browser is None:
                msg = ("no Chromium found (looked for " + ", ".join(BROWSERS) + "): install "
                       "chromium, or open the URL above in any browser; still serving")
                print(f"facecast kiosk: {msg}", file=sys.stderr, flush=True)
                log.warning(msg)
            elif not has_display():
                msg = ("no display ($DISPLAY / $WAYLAND_DISPLAY not set): not opening a browser; "
                       "open the URL above on a screen; still serving")
                print(f"facecast kiosk: {msg}", file=sys.stderr, flush=True)
                log.warning(msg)
            else:
                profile = state_dir() / "chromium-kiosk"
                profile.mkdir(parents=True, exist_ok=True)
                supervisor = BrowserSupervisor(browser_command(browser, url, options.fullscreen,
                                                               profile))
                supervisor.start()
        if options.say:
            tasks.add(loop.create_task(_speak_when_shown(server, options.display,
                                                         options.say)))
        if options.read_stdin and sys.stdin is not None and not sys.stdin.closed:
            threading.Thread(target=_read_stdin, args=(loop, server, options.display),
                             name="facecast-stdin", daemon=True).start()
        try:
            await stop.wait()
        finally:
            log.info("kiosk stopping")
            for task in tasks:
                task.cancel()
            if supervisor is not None:
                supervisor.stop()
            if mic is not None:
                mic.close()
            await server.stop()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    return 0
