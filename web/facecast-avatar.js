// <facecast-avatar>: a talking avatar streamed from a facecast server over WebRTC.
//
//   <script type="module" src="/facecast-avatar.js"></script>
//   <facecast-avatar server="ws://127.0.0.1:8765" avatar="default" autoconnect></facecast-avatar>
//
// Attributes (all optional):
//   server       ws(s)://host:port (http(s):// is accepted too); default: this page's own origin
//   avatar       avatar name, default "default"
//   token        access token: a JWT signed with the server's secret (facecast token)
//   autoconnect  connect as soon as the element is in the document
//   reconnect    reconnect after any drop (WebSocket closed, WebRTC failed, server restarted):
//                exponential backoff from 1 s, doubling per failed attempt, capped at 30 s (or
//                `reconnect-max` seconds), each wait drawn uniformly from [½, 1] × the step
//                ("equal jitter", so many screens do not reconnect in lockstep); the step resets
//                once media flows again
//   reconnect-max  cap of the reconnect backoff in seconds (default 30)
//   display      join as display NAME: apps connected with ?control=NAME speak through this
//                element's session (PROTOCOL.md, "Displays and controllers"; the kiosk page)
//
// Methods: connect(), disconnect(), speak(text, {voice, id}), sendAudio(samples, sampleRate, {id}),
//   audioEnd({id}), interrupt(), startMicrophone(), stopMicrophone(), stats().
// Properties: state ("idle" | "speaking" | "disconnected"), connectionState, session (the server's
//   `ready` message), videoElement, peerConnection, microphoneActive, sdpTransform,
//   reconnectAttempts (failed attempts since media last flowed), nextReconnectMs (the pending
//   wait, or null), disclosure (the server's disclosure text, e.g. "AI-generated", shown as a
//   label over the video (part "disclosure") and in the video's aria-label; also in `ready`).
// Events (CustomEvent, detail = the server message, or a {type, …} object for local ones):
//   ready, statechange, speechstart, speechend, error, connected, disconnected, message,
//   reconnecting ({attempt, delayMs}).
//
// The control protocol is described in PROTOCOL.md beside this file.

const RECONNECT_MIN_MS = 1000;
const RECONNECT_MAX_MS = 30000;
const ICE_GATHER_TIMEOUT_MS = 3000;
const WEBRTC_CONNECT_TIMEOUT_MS = 20000;
const PING_INTERVAL_MS = 25000;
const MIC_CHUNK_MS = 20;            // microphone chunk length sent per `audio` message
const MAX_SCRIPT_PROCESSOR_MS = 40; // ScriptProcessor fallback: largest power-of-two buffer ≤ this
// Server `error` codes that end the session, and those of them that a reconnect cannot cure.
const FATAL_ERRORS = new Set(["too_many_sessions", "unauthorized", "bad_avatar"]);
const NO_RETRY_ERRORS = new Set(["unauthorized", "bad_avatar"]);

const TEMPLATE = `
<style>
  :host {
    display: inline-block;
    position: relative;
    width: 512px;
    aspect-ratio: 1 / 1;
    border-radius: 16px;
    overflow: hidden;
    background: #1d2128;
    color: #e9edf2;
    font: 13px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
    contain: content;
  }
  :host([hidden]) { display: none; }
  video {
    display: block;
    width: 100%;
    height: 100%;
    object-fit: cover;
    border-radius: inherit;
    background: transparent;
  }
  .status {
    position: absolute;
    left: 50%;
    bottom: 12px;
    transform: translateX(-50%);
    max-width: calc(100% - 24px);
    padding: 5px 12px;
    border-radius: 999px;
    background: rgba(10, 12, 16, 0.72);
    white-space: nowrap;
    overflow: hidden;
    text-overflow: ellipsis;
    pointer-events: none;
    transition: opacity 0.25s;
  }
  .status[hidden] { display: block; opacity: 0; }
  .disclosure {
    position: absolute;
    left: 10px;
    top: 10px;
    padding: 3px 9px;
    border-radius: 999px;
    background: rgba(10, 12, 16, 0.72);
    color: #fff;
    font: 600 12px/1.3 system-ui, sans-serif;
    pointer-events: none;
  }
  .disclosure[hidden] { display: none; }
  .status.error { background: rgba(150, 28, 28, 0.85); }
  .status.action { pointer-events: auto; cursor: pointer; }
</style>
<video part="video" playsinline autoplay aria-label="AI-generated avatar video"></video>
<div class="disclosure" part="disclosure" hidden>AI-generated</div>
<div class="status" part="status" role="status" aria-live="polite"></div>
`;

let idCounter = 0;

/** A fresh utterance id, unique within this page. */
function newId(prefix) {
  idCounter += 1;
  const rand = Math.random().toString(36).slice(2, 8);
  return `${prefix}-${Date.now().toString(36)}-${idCounter}-${rand}`;
}

/** Float32 samples in [-1, 1] (or Int16Array) → Int16Array. */
function toInt16(samples) {
  if (samples instanceof Int16Array) return samples;
  if (!(samples instanceof Float32Array || samples instanceof Float64Array || Array.isArray(samples))) {
    throw new TypeError("sendAudio: samples must be an Int16Array or a Float32Array");
  }
  const out = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) {
    let s = samples[i];
    if (!(s === s)) s = 0; // NaN
    s = s < -1 ? -1 : s > 1 ? 1 : s;
    out[i] = s < 0 ? Math.round(s * 0x8000) : Math.round(s * 0x7fff);
  }
  return out;
}

/** Int16Array → base64 of its little-endian bytes. */
function int16ToBase64(int16) {
  const bytes = new Uint8Array(int16.length * 2);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < int16.length; i++) view.setInt16(i * 2, int16[i], true);
  let binary = "";
  const STEP = 0x8000;
  for (let i = 0; i < bytes.length; i += STEP) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + STEP));
  }
  return btoa(binary);
}

// The AudioWorklet processor, loaded from a Blob URL: accumulates mono float samples into chunks of
// `chunkSize` and posts each chunk (a transferred Float32Array) to the main thread.
const WORKLET_SOURCE = `
class FacecastMicProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.chunkSize = options.processorOptions.chunkSize;
    this.buffer = new Float32Array(this.chunkSize);
    this.filled = 0;
    this.port.onmessage = (e) => {
      if (e.data === "flush") {
        const rest = this.buffer.slice(0, this.filled); // possibly empty: the reply ends the wait
        this.port.postMessage(rest, [rest.buffer]);
        this.filled = 0;
      }
    };
  }
  process(inputs) {
    const input = inputs[0];
    if (input && input.length > 0) {
      const ch0 = input[0];
      const n = ch0.length;
      for (let i = 0; i < n; i++) {
        let s = ch0[i];
        if (input.length > 1) { for (let c = 1; c < input.length; c++) s += input[c][i]; s /= input.length; }
        this.buffer[this.filled++] = s;
        if (this.filled === this.chunkSize) {
          const chunk = this.buffer;
          this.port.postMessage(chunk, [chunk.buffer]);
          this.buffer = new Float32Array(this.chunkSize);
          this.filled = 0;
        }
      }
    }
    return true;
  }
}
registerProcessor("facecast-mic", FacecastMicProcessor);
`;

export class FacecastAvatar extends HTMLElement {
  static get observedAttributes() {
    return ["server", "avatar", "token", "display"];
  }

  constructor() {
    super();
    const root = this.attachShadow({ mode: "open" });
    root.innerHTML = TEMPLATE;
    this._video = root.querySelector("video");
    this._status = root.querySelector(".status");
    this._status.addEventListener("click", () => this._onStatusClick());

    /** Optional hook (tests): offer SDP string → SDP string actually sent. */
    this.sdpTransform = null;

    this._ws = null;
    this._pc = null;
    this._stream = null;
    this._session = null;
    this._state = "disconnected";
    this._conn = "disconnected"; // disconnected | connecting | connected
    this._queue = [];
    this._wantConnected = false;
    this._userClosed = false;
    this._connectPromise = null;
    this._connectSettle = null;
    this._reconnectTimer = null;
    this._reconnectDelay = RECONNECT_MIN_MS;
    this._reconnectAttempts = 0;
    this._nextReconnectMs = null;
    this._pingTimer = null;
    this._connectTimer = null;
    this._generation = 0;
    this._audioStreamId = null;
    this._mic = null;
    this._needsGesture = false;
    this._fatal = null; // a server `error` that ends the session (e.g. too_many_sessions), before the close
    this._setStatus("Not connected");
  }

  // ---- lifecycle ----------------------------------------------------------------------------

  connectedCallback() {
    if (this.hasAttribute("autoconnect") && this._conn === "disconnected" && !this._reconnectTimer) {
      this.connect().catch(() => {}); // failures are reported by `error` events and the status line
    }
  }

  disconnectedCallback() {
    // Removed from the document: end the session (a move within the document keeps it).
    queueMicrotask(() => {
      if (!this.isConnected) this.disconnect();
    });
  }

  attributeChangedCallback() {
    // New server/avatar/token values apply to the next connect().
  }

  // ---- properties ---------------------------------------------------------------------------

  /** "idle" | "speaking" | "disconnected" */
  get state() {
    return this._state;
  }

  /** "disconnected" | "connecting" | "connected" (connected = WebSocket ready and media flowing) */
  get connectionState() {
    return this._conn;
  }

  /** The server's `ready` message of the current session, or null. */
  get session() {
    return this._session;
  }

  get videoElement() {
    return this._video;
  }

  get peerConnection() {
    return this._pc;
  }

  get microphoneActive() {
    return this._mic !== null;
  }

  /** Failed connection attempts since media last flowed (0 while connected). */
  get reconnectAttempts() {
    return this._reconnectAttempts;
  }

  /** The wait before the pending reconnect attempt, in ms, or null when none is pending. */
  get nextReconnectMs() {
    return this._nextReconnectMs;
  }

  get serverUrl() {
    let server = this.getAttribute("server");
    if (!server) {
      if (!location.host) throw new Error("facecast-avatar: no `server` attribute and the page has no host");
      server = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}`;
    }
    server = server.trim().replace(/\/+$/, "");
    if (server.startsWith("http://")) server = "ws://" + server.slice(7);
    else if (server.startsWith("https://")) server = "wss://" + server.slice(8);
    const params = new URLSearchParams();
    params.set("avatar", this.getAttribute("avatar") || "default");
    const token = this.getAttribute("token");
    if (token) params.set("token", token);
    const display = this.getAttribute("display");
    if (display) params.set("display", display);
    return `${server}/ws?${params.toString()}`;
  }

  // ---- connection ---------------------------------------------------------------------------

  /**
   * Open the session. Resolves with the server's `ready` message once the WebRTC connection is up;
   * rejects on failure. Calling it while connecting returns the same promise.
   */
  connect() {
    if (this._connectPromise) return this._connectPromise;
    if (this._conn === "connected") return Promise.resolve(this._session);
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    this._nextReconnectMs = null;
    this._wantConnected = true;
    this._userClosed = false;
    this._connectPromise = new Promise((resolve, reject) => {
      this._connectSettle = { resolve, reject };
    });
    // Nobody may await it (autoconnect); never let it surface as an unhandled rejection.
    this._connectPromise.catch(() => {});
    this._open();
    return this._connectPromise;
  }

  /** Close the session: stops the microphone, closes the peer connection and the WebSocket. */
  disconnect() {
    this._wantConnected = false;
    this._userClosed = true;
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    this._nextReconnectMs = null;
    this._teardown({ type: "disconnected", requested: true, code: 1000, reason: "disconnect()" });
    this._setStatus("Disconnected");
  }

  _open() {
    const gen = ++this._generation;
    this._conn = "connecting";
    this._session = null;
    this._fatal = null;
    this._setStatus("Connecting…");
    let url;
    try {
      url = this.serverUrl;
      this._ws = new WebSocket(url);
    } catch (err) {
      this._fail("connection_failed", `cannot open WebSocket: ${err.message}`, gen);
      return;
    }
    const ws = this._ws;
    ws.onmessage = (ev) => {
      if (gen !== this._generation) return;
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (msg && typeof msg === "object") this._onMessage(msg, gen);
    };
    ws.onerror = () => {
      // Followed by onclose, which reports it.
    };
    ws.onclose = (ev) => {
      if (gen !== this._generation) return;
      const wasReady = this._session !== null;
      const fatal = this._fatal;
      const reason =
        (fatal && (fatal.message || fatal.code)) ||
        ev.reason ||
        (wasReady ? "connection closed" : `cannot reach ${url.split("?")[0]}`);
      if (!fatal && (!wasReady || this._conn === "connecting")) {
        this._emit("error", { type: "error", code: "connection_failed", message: reason });
      }
      this._teardown({ type: "disconnected", requested: false, code: ev.code, reason });
      this._setStatus(fatal ? `Error: ${reason}` : `Disconnected: ${reason}`, true);
      this._scheduleReconnect();
    };
    this._connectTimer = setTimeout(() => {
      if (gen === this._generation && this._conn === "connecting") {
        this._fail("webrtc_failed", "timed out connecting", gen);
      }
    }, WEBRTC_CONNECT_TIMEOUT_MS);
  }

  _onMessage(msg, gen) {
    this._emit("message", msg);
    switch (msg.type) {
      case "ready":
        this._session = msg;
        this._showDisclosure(msg.disclosure || "AI-generated");
        this._emit("ready", msg);
        this._setState("idle", { type: "state", state: "idle" });
        this._setStatus("Starting video…");
        this._startPeer(gen).catch((err) => {
          this._fail("webrtc_failed", `WebRTC setup failed: ${err.message || err}`, gen);
        });
        this._pingTimer = setInterval(() => this._rawSend({ type: "ping" }), PING_INTERVAL_MS);
        break;
      case "answer":
        if (this._pc && typeof msg.sdp === "string") {
          this._pc
            .setRemoteDescription({ type: "answer", sdp: msg.sdp })
            .catch((err) => this._fail("webrtc_failed", `bad answer: ${err.message || err}`, gen));
        }
        break;
      case "state":
        if (msg.state === "idle" || msg.state === "speaking") this._setState(msg.state, msg);
        break;
      case "speech_started":
        this._emit("speechstart", msg);
        break;
      case "speech_ended":
        this._emit("speechend", msg);
        break;
      case "error":
        this._emit("error", msg);
        if (!this._session || FATAL_ERRORS.has(msg.code)) {
          // Refused before `ready` (too_many_sessions, bad_avatar, …): the server closes next.
          this._fatal = msg;
          this._setStatus(`Error: ${msg.message || msg.code}`, true);
          if (NO_RETRY_ERRORS.has(msg.code)) this._wantConnected = false; // retrying cannot help
        } else if (msg.code === "webrtc_failed" || msg.code === "no_peer") {
          this._setStatus(`Error: ${msg.message || msg.code}`, true);
        }
        break;
      default:
        break; // pong and anything newer
    }
  }

  async _startPeer(gen) {
    const pc = new RTCPeerConnection({ iceServers: [] });
    this._pc = pc;
    this._stream = new MediaStream();
    this._video.srcObject = this._stream;
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    pc.ontrack = (ev) => {
      if (gen !== this._generation) return;
      this._stream.addTrack(ev.track);
      this._play();
    };
    pc.onconnectionstatechange = () => {
      if (gen !== this._generation) return;
      const s = pc.connectionState;
      if (s === "connected" && this._conn === "connecting") {
        this._conn = "connected";
        this._reconnectDelay = RECONNECT_MIN_MS; // media flows: the next drop starts over at 1 s
        this._reconnectAttempts = 0;
        clearTimeout(this._connectTimer);
        this._setStatus(this._needsGesture ? "🔇 Click to turn sound on" : null);
        this._emit("connected", { type: "connected", session: this._session });
        this._flushQueue();
        this._play();
        this._settle(true, this._session);
      } else if (s === "failed") {
        this._fail("webrtc_failed", "WebRTC connection failed", gen);
      }
    };
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    await this._iceGatheringComplete(pc);
    if (gen !== this._generation) return;
    let sdp = pc.localDescription.sdp;
    if (typeof this.sdpTransform === "function") sdp = this.sdpTransform(sdp);
    this._rawSend({ type: "offer", sdp, sdp_type: "offer" });
  }

  _iceGatheringComplete(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        pc.removeEventListener("icegatheringstatechange", check);
        resolve();
      };
      const check = () => {
        if (pc.iceGatheringState === "complete") done();
      };
      const timer = setTimeout(done, ICE_GATHER_TIMEOUT_MS); // send what was gathered so far
      pc.addEventListener("icegatheringstatechange", check);
    });
  }

  _play() {
    const p = this._video.play();
    if (!p || typeof p.catch !== "function") return;
    p.catch((err) => {
      if (err && err.name === "NotAllowedError" && !this._video.muted) {
        // Autoplay with sound refused: play muted and ask for a click to unmute.
        this._video.muted = true;
        this._needsGesture = true;
        this._video.play().catch(() => {});
        this._setStatus("🔇 Click to turn sound on", false, true);
      }
    });
  }

  _onStatusClick() {
    if (this._needsGesture) {
      this._needsGesture = false;
      this._video.muted = false;
      this._video.play().catch(() => {});
      this._setStatus(this._conn === "connected" ? null : this._status.textContent);
    }
  }

  _fail(code, message, gen) {
    if (gen !== undefined && gen !== this._generation) return;
    this._emit("error", { type: "error", code, message });
    this._teardown({ type: "disconnected", requested: false, code: 1006, reason: message });
    this._setStatus(`Error: ${message}`, true);
    this._scheduleReconnect();
  }

  _teardown(detail) {
    const wasUp = this._conn !== "disconnected";
    this._generation += 1; // ignore late events of the old session
    clearTimeout(this._connectTimer);
    clearInterval(this._pingTimer);
    this._connectTimer = null;
    this._pingTimer = null;
    this._stopMicrophoneNow(false);
    if (this._pc) {
      try {
        this._pc.close();
      } catch {
        /* already closed */
      }
      this._pc = null;
    }
    if (this._ws) {
      const ws = this._ws;
      this._ws = null;
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
      if (ws.readyState === WebSocket.CONNECTING || ws.readyState === WebSocket.OPEN) {
        try {
          ws.close(1000);
        } catch {
          /* ignore */
        }
      }
    }
    if (this._stream) {
      for (const t of this._stream.getTracks()) t.stop();
      this._stream = null;
    }
    this._video.srcObject = null;
    this._queue = [];
    this._audioStreamId = null;
    this._session = null;
    this._conn = "disconnected";
    this._setState("disconnected", { type: "state", state: "disconnected" });
    this._settle(false, new Error(`facecast-avatar: ${detail.reason || "disconnected"}`));
    if (wasUp) this._emit("disconnected", detail);
  }

  _settle(ok, value) {
    const s = this._connectSettle;
    this._connectSettle = null;
    this._connectPromise = null;
    if (!s) return;
    if (ok) s.resolve(value);
    else s.reject(value);
  }

  _scheduleReconnect() {
    if (!this._wantConnected || this._userClosed || !this.hasAttribute("reconnect") || !this.isConnected) {
      this._wantConnected = false;
      return;
    }
    const maxAttr = Number(this.getAttribute("reconnect-max"));
    const cap = maxAttr > 0 ? Math.max(RECONNECT_MIN_MS, maxAttr * 1000) : RECONNECT_MAX_MS;
    const step = Math.min(this._reconnectDelay, cap);
    const delay = Math.round(step / 2 + Math.random() * (step / 2)); // equal jitter
    this._reconnectDelay = Math.min(step * 2, cap);
    this._reconnectAttempts += 1;
    this._nextReconnectMs = delay;
    clearTimeout(this._reconnectTimer);
    this._setStatus(`${this._status.textContent} — retrying in ${Math.max(1, Math.round(delay / 1000))} s`, true);
    this._emit("reconnecting", { type: "reconnecting", attempt: this._reconnectAttempts, delayMs: delay });
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      this._nextReconnectMs = null;
      if (this._wantConnected && !this._userClosed) this.connect().catch(() => {});
    }, delay);
  }

  // ---- sending ------------------------------------------------------------------------------

  _requireSession(what) {
    if (this._conn === "disconnected" || !this._ws) {
      throw new Error(`facecast-avatar: cannot ${what} while disconnected; call connect() first`);
    }
  }

  /**
   * Send a message now if the session is up, else queue it: messages sent while connecting go out
   * once the server is `ready` and the media connection is up, so no speech is lost.
   */
  _send(msg) {
    if (this._conn === "connected" && this._ws && this._ws.readyState === WebSocket.OPEN) this._rawSend(msg);
    else this._queue.push(msg);
  }

  _rawSend(msg) {
    if (this._ws && this._ws.readyState === WebSocket.OPEN) this._ws.send(JSON.stringify(msg));
  }

  _flushQueue() {
    const queued = this._queue;
    this._queue = [];
    for (const msg of queued) this._rawSend(msg);
  }

  /**
   * Say `text` (queued after what is already queued). Returns the utterance id, which the
   * `speechstart` / `speechend` events carry. Throws if disconnected.
   */
  speak(text, { voice, id } = {}) {
    this._requireSession("speak");
    if (typeof text !== "string" || text.trim() === "") {
      throw new TypeError("facecast-avatar: speak(text) needs a non-empty string");
    }
    const uid = id != null ? String(id) : newId("speak");
    const msg = { type: "speak", text, id: uid };
    if (voice) msg.voice = String(voice);
    this._send(msg);
    return uid;
  }

  /**
   * Send one chunk of speech (mono Int16Array, or Float32Array in [-1, 1]) at `sampleRate` Hz.
   * Chunks sharing an id form one utterance; without an id, chunks join the current utterance
   * until audioEnd(). Returns the utterance id.
   */
  sendAudio(samples, sampleRate, { id } = {}) {
    this._requireSession("send audio");
    const rate = Math.round(Number(sampleRate));
    if (!(rate >= 8000 && rate <= 96000)) {
      throw new RangeError("facecast-avatar: sampleRate must be between 8000 and 96000");
    }
    const pcm = toInt16(samples);
    let uid;
    if (id != null) uid = String(id);
    else {
      if (!this._audioStreamId) this._audioStreamId = newId("audio");
      uid = this._audioStreamId;
    }
    if (pcm.length > 0) this._send({ type: "audio", pcm16: int16ToBase64(pcm), sample_rate: rate, id: uid });
    return uid;
  }

  /** Mark the streamed utterance (`id`, or the current one) complete. */
  audioEnd({ id } = {}) {
    this._requireSession("end audio");
    const uid = id != null ? String(id) : this._audioStreamId;
    if (id == null || String(id) === this._audioStreamId) this._audioStreamId = null;
    const msg = { type: "audio_end" };
    if (uid != null) msg.id = uid;
    this._send(msg);
    return uid;
  }

  /** Barge-in: drop all queued speech; the face returns to idle. */
  interrupt() {
    this._requireSession("interrupt");
    this._queue = this._queue.filter((m) => m.type !== "speak" && m.type !== "audio" && m.type !== "audio_end");
    this._send({ type: "interrupt" });
  }

  // ---- microphone ---------------------------------------------------------------------------

  /**
   * Stream the browser's microphone as the avatar's voice: one utterance per microphone session,
   * sent in 20 ms chunks at the AudioContext's sample rate. Resolves with the utterance id.
   */
  async startMicrophone() {
    this._requireSession("start the microphone");
    if (this._mic) return this._mic.id;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error("facecast-avatar: microphone capture is not available (needs https or localhost)");
    }
    const gen = this._generation;
    const media = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    if (gen !== this._generation || this._conn === "disconnected") {
      for (const t of media.getTracks()) t.stop();
      throw new Error("facecast-avatar: disconnected while opening the microphone");
    }
    const Ctx = window.AudioContext || window.webkitAudioContext;
    const ctx = new Ctx();
    const mic = { id: newId("mic"), media, ctx, nodes: [], rate: ctx.sampleRate, worklet: null, blobUrl: null };
    this._mic = mic;
    try {
      if (ctx.state === "suspended") await ctx.resume().catch(() => {});
      const source = ctx.createMediaStreamSource(media);
      const sink = ctx.createGain();
      sink.gain.value = 0; // keep the graph pulled without playing the mic back
      sink.connect(ctx.destination);
      mic.nodes.push(source, sink);
      const onChunk = (floats) => {
        if (this._mic !== mic || floats.length === 0) return;
        try {
          this.sendAudio(floats, mic.rate, { id: mic.id });
        } catch {
          /* disconnected meanwhile */
        }
      };
      if (ctx.audioWorklet && typeof AudioWorkletNode !== "undefined") {
        mic.blobUrl = URL.createObjectURL(new Blob([WORKLET_SOURCE], { type: "application/javascript" }));
        await ctx.audioWorklet.addModule(mic.blobUrl);
        const chunkSize = Math.max(128, Math.round((ctx.sampleRate * MIC_CHUNK_MS) / 1000));
        const node = new AudioWorkletNode(ctx, "facecast-mic", {
          numberOfInputs: 1,
          numberOfOutputs: 1,
          outputChannelCount: [1],
          processorOptions: { chunkSize },
        });
        node.port.onmessage = (e) => onChunk(e.data);
        mic.worklet = node;
        source.connect(node);
        node.connect(sink);
        mic.nodes.push(node);
      } else {
        let size = 256;
        while (size * 2 <= (ctx.sampleRate * MAX_SCRIPT_PROCESSOR_MS) / 1000 && size < 16384) size *= 2;
        const node = ctx.createScriptProcessor(size, 1, 1);
        node.onaudioprocess = (e) => onChunk(new Float32Array(e.inputBuffer.getChannelData(0)));
        source.connect(node);
        node.connect(sink);
        mic.nodes.push(node);
      }
    } catch (err) {
      this._stopMicrophoneNow(false);
      throw err;
    }
    if (this._mic !== mic) throw new Error("facecast-avatar: microphone stopped while starting");
    return mic.id;
  }

  /** Stop the microphone and end its utterance (`audio_end`). */
  async stopMicrophone() {
    const mic = this._mic;
    if (!mic) return;
    if (mic.worklet) {
      // Send the last partial chunk before ending the utterance.
      await new Promise((resolve) => {
        const prev = mic.worklet.port.onmessage;
        const timer = setTimeout(resolve, 100);
        mic.worklet.port.onmessage = (e) => {
          if (prev) prev(e);
          clearTimeout(timer);
          resolve();
        };
        mic.worklet.port.postMessage("flush");
      });
    }
    if (this._mic !== mic) return;
    this._stopMicrophoneNow(true);
  }

  _stopMicrophoneNow(sendEnd) {
    const mic = this._mic;
    if (!mic) return;
    this._mic = null;
    for (const t of mic.media.getTracks()) t.stop();
    for (const n of mic.nodes) {
      try {
        n.disconnect();
      } catch {
        /* ignore */
      }
    }
    if (mic.worklet) mic.worklet.port.onmessage = null;
    mic.ctx.close().catch(() => {});
    if (mic.blobUrl) URL.revokeObjectURL(mic.blobUrl);
    if (sendEnd && this._conn !== "disconnected") {
      this._send({ type: "audio_end", id: mic.id });
    }
  }

  // ---- stats --------------------------------------------------------------------------------

  /**
   * Receiver statistics from getStats(): {framesDecoded, framesPerSecond, frameWidth, frameHeight,
   * framesDropped, videoBytesReceived, audioLevel, totalAudioEnergy, audioBytesReceived,
   * jitterMs, packetsLost, roundTripTimeMs}; null when not connected. Missing values are null.
   */
  async stats() {
    const pc = this._pc;
    if (!pc) return null;
    const out = {
      framesDecoded: null,
      framesPerSecond: null,
      frameWidth: null,
      frameHeight: null,
      framesDropped: null,
      videoBytesReceived: null,
      audioLevel: null,
      totalAudioEnergy: null,
      audioBytesReceived: null,
      jitterMs: null,
      packetsLost: null,
      roundTripTimeMs: null,
    };
    const report = await pc.getStats();
    let lost = 0;
    let sawLost = false;
    report.forEach((s) => {
      if (s.type === "inbound-rtp") {
        const kind = s.kind || s.mediaType;
        if (typeof s.packetsLost === "number") {
          lost += s.packetsLost;
          sawLost = true;
        }
        if (kind === "video") {
          out.framesDecoded = s.framesDecoded ?? null;
          out.framesPerSecond = s.framesPerSecond ?? null;
          out.frameWidth = s.frameWidth ?? null;
          out.frameHeight = s.frameHeight ?? null;
          out.framesDropped = s.framesDropped ?? null;
          out.videoBytesReceived = s.bytesReceived ?? null;
          if (typeof s.jitter === "number") out.jitterMs = s.jitter * 1000;
        } else if (kind === "audio") {
          out.audioLevel = s.audioLevel ?? null;
          out.totalAudioEnergy = s.totalAudioEnergy ?? null;
          out.audioBytesReceived = s.bytesReceived ?? null;
        }
      } else if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") {
        if (typeof s.currentRoundTripTime === "number") out.roundTripTimeMs = s.currentRoundTripTime * 1000;
      }
    });
    if (sawLost) out.packetsLost = lost;
    return out;
  }

  // ---- helpers ------------------------------------------------------------------------------

  _setState(state, detail) {
    if (state === this._state) return;
    this._state = state;
    this._emit("statechange", detail);
  }

  _setStatus(text, isError = false, isAction = false) {
    const el = this._status;
    if (!text) {
      el.hidden = true;
      return;
    }
    el.textContent = text;
    el.hidden = false;
    el.classList.toggle("error", Boolean(isError));
    el.classList.toggle("action", Boolean(isAction));
  }

  /** Show the disclosure label (EU AI Act art. 50) and name the video for assistive tech. */
  _showDisclosure(text) {
    const label = this.shadowRoot.querySelector(".disclosure");
    label.textContent = text;
    label.hidden = false;
    this.shadowRoot.querySelector("video").setAttribute("aria-label", `${text} avatar video`);
  }

  /** The disclosure the server sent (`ready.disclosure`, e.g. "AI-generated"), or null. */
  get disclosure() {
    return this._session ? this._session.disclosure || "AI-generated" : null;
  }

  _emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }
}

if (!customElements.get("facecast-avatar")) {
  customElements.define("facecast-avatar", FacecastAvatar);
}
