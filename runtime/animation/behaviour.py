"""The behaviour layer: speech-driven mouth + idle life + prosody gestures → rig input per frame.

Input per video frame: the motion model's mouth coefficients (``MOTION_COEFFICIENTS``), its
speech probability (VAD), and the frame's prosody (loudness, f0; ``runtime.audio.prosody``). Output:
the rig's 19 ARKit coefficients and a head pose [6] (``avatars.rig.POSE_NAMES``).

What it adds, and where the numbers come from:

* **Blinks**: spontaneous blink rate about 17 a minute at rest (Bentivoglio et al., "Analysis of
  blink rate patterns in normal subjects", Movement Disorders 12(6), 1997: 17/min at rest);
  intervals from a gamma distribution (shape 2.5, so short and long gaps both occur, never under
  0.6 s); each blink 100–250 ms, lids closing in a third of it and opening more slowly (the
  lid's closing phase is about twice as fast as its opening: Evinger, Manning & Sibony, IOVS
  32(2), 1991); 12% are doubles. A pause after speech often brings a blink forward (blinks
  cluster at phrase boundaries: Nakano & Kitazawa, Exp. Brain Res. 2010); the time it was
  brought forward is added to the next interval, so the rate stays the same.
* **Idle head motion**: smooth random drift (an Ornstein–Uhlenbeck process passed through a
  one-pole low-pass) of about 1° pitch, 1.5° yaw, 0.6° roll; **breathing** at 12–18 breaths a
  minute (normal adult resting rate) lifts the head by 0.2% of the crop and tilts it 0.3°;
  **gaze shifts** as short head glances every 2–7 s (the rig and renderer have no eye-in-head
  rotation: mediapipe's iris points do not drive the renderer, so a gaze shift is the head part
  of a combined eye–head shift).
* **While speaking**: larger, faster head drift (2° / 3° / 1°), a head lift with loudness, and on
  pitch accents (local f0 peaks ≥ 1.5 semitones above the running mean, on loud voiced frames) a
  nod (2–4°, 0.45 s) and/or a brow raise (browInnerUp/browOuterUp up to 0.5, 0.75 s): head and
  brow movements align with pitch accents (Graf et al., "Visual prosody", FG 2002; Cavé et al.,
  "About the relationship between eyebrow movements and F0 variations", ICSLP 1996).
* **Blend**: a speaking weight follows the VAD with an attack of 80 ms and a release of 400 ms;
  every added signal is continuous (filters and smooth bumps), so speech and idle blend without
  jumps.
* **Smoothing**: a One Euro filter (``runtime.animation.one_euro``) on the coefficients and on the pose;
  blinks are added after it (their shape is generated smooth; the filter would only blunt them).

Everything random comes from one ``numpy.random.Generator`` seeded at construction: the same
seed and inputs give the same frames. The layer is causal (each frame uses only earlier input),
so the same class serves offline renders and live sessions.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from avatars.rig import INDEX, N_COEFFICIENTS, SYMMETRIC_ALIASES
from engines.visemes import MOTION_COEFFICIENTS
from runtime.animation.one_euro import OneEuroFilter, OneEuroParams

_DEG = math.pi / 180.0
HISTORY = 1000
"""Most recent blinks and accents kept in ``Behaviour.blinks`` / ``.accents`` (inspection)."""
COEFFICIENT_SMOOTHING = OneEuroParams(min_cutoff=5.0, beta=5.0, d_cutoff=5.0)
"""One Euro parameters for the expression coefficients. Speech moves the jaw at syllable rate
(4–5 Hz), so the speed estimate needs a 5 Hz cutoff (at the paper's 1 Hz it sees a quarter of
the speed and the filter cuts a 4 Hz jaw by 23% with 20 ms of lag); with these a 4 Hz jaw keeps
97% of its amplitude and no measurable lag, and frame-to-frame jitter at rest still drops by a
third (tests/test_behaviour.py)."""
POSE_SMOOTHING = OneEuroParams(min_cutoff=2.0, beta=5.0, d_cutoff=1.0)
"""One Euro parameters for the head pose (radians): 2 Hz at rest; a 0.2 rad/s nod passes at
3 Hz."""


@dataclass(frozen=True)
class BehaviourParams:
    """Tuning of the behaviour layer (units in the names; angles in degrees for readability)."""

    blink_rate_per_min: float = 17.0
    blink_interval_shape: float = 2.5
    blink_min_interval_s: float = 0.6
    blink_duration_s: tuple[float, float] = (0.10, 0.25)
    double_blink_p: float = 0.12
    pause_blink_p: float = 0.4
    breath_rate_per_min: tuple[float, float] = (12.0, 18.0)
    breath_ty: float = 0.002
    breath_pitch_deg: float = 0.3
    idle_head_deg: tuple[float, float, float] = (1.0, 1.5, 0.6)
    idle_head_tau_s: float = 2.0
    speech_head_deg: tuple[float, float, float] = (2.0, 3.0, 1.0)
    speech_head_tau_s: float = 0.8
    head_lowpass_s: float = 0.25
    glance_interval_s: tuple[float, float] = (2.0, 7.0)
    glance_deg: tuple[float, float] = (2.0, 4.0)
    glance_time_s: float = 0.08
    loudness_lift_deg: float = 1.0
    accent_semitones: float = 1.5
    accent_refractory_s: float = 0.5
    nod_p: float = 0.6
    nod_deg: tuple[float, float] = (2.0, 4.0)
    nod_s: float = 0.45
    brow_p: float = 0.45
    brow_amount: tuple[float, float] = (0.25, 0.5)
    brow_s: float = 0.75
    vad_attack_s: float = 0.08
    vad_release_s: float = 0.4
    smooth: bool = True


@dataclass
class _Bump:
    """A smooth additive gesture: amplitude × shape((t − start) / length), zero outside."""

    start: float
    length: float
    amplitude: float
    attack: float = 0.35  # share of the length spent rising

    def value(self, t: float) -> float:
        u = (t - self.start) / self.length
        if u <= 0.0 or u >= 1.0:
            return 0.0
        if u < self.attack:
            x = u / self.attack
        else:
            x = 1.0 - (u - self.attack) / (1.0 - self.attack)
        return self.amplitude * x * x * (3.0 - 2.0 * x)  # smoothstep: zero slope at both ends


@dataclass(frozen=True)
class Blink:
    """One blink: start and duration in seconds of the output clock."""

    start_s: float
    duration_s: float


def blink_closure(u: float) -> float:
    """Lid closure in [0, 1] at phase u ∈ [0, 1] of a blink: closes over the first 35%, stays
    closed to 50%, opens over the rest (smoothstep ramps; opening slower than closing)."""
    if u <= 0.0 or u >= 1.0:
        return 0.0
    if u < 0.35:
        x = u / 0.35
    elif u < 0.5:
        return 1.0
    else:
        x = 1.0 - (u - 0.5) / 0.5
    return x * x * (3.0 - 2.0 * x)


def _expand_matrix() -> np.ndarray:
    """[len(MOTION_COEFFICIENTS), N_COEFFICIENTS] 0/1 map of side-less names to rig axes."""
    m = np.zeros((len(MOTION_COEFFICIENTS), N_COEFFICIENTS))
    for i, name in enumerate(MOTION_COEFFICIENTS):
        for rig_name in SYMMETRIC_ALIASES.get(name, (name,)):
            m[i, INDEX[rig_name]] = 1.0
    return m


@dataclass
class _Smoothed:
    """Ornstein–Uhlenbeck process (stationary std ``std``, time constant ``tau``) followed by a
    one-pole low-pass (time constant ``lowpass``): a smooth random drift, exact discretisation."""

    std: np.ndarray
    tau: float
    lowpass: float
    x: np.ndarray = field(init=False)
    y: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.x = np.zeros_like(self.std)
        self.y = np.zeros_like(self.std)

    def step(self, rng: np.random.Generator, dt: float) -> np.ndarray:
        a = math.exp(-dt / self.tau)
        self.x = self.x * a + self.std * math.sqrt(1.0 - a * a) * rng.standard_normal(len(self.std))
        b = math.exp(-dt / self.lowpass)
        self.y = self.y * b + (1.0 - b) * self.x
        return self.y


class Behaviour:
    """Stateful, causal, seeded behaviour for one avatar at one frame rate.

    Args:
        fps: video frame rate (frames per second, > 0).
        seed: seed of all randomness (blinks, drift, glances, gesture choices).
        params: tuning; defaults documented in ``BehaviourParams`` and the module docstring.

    Call ``step`` once per video frame (or ``run`` on whole arrays). ``blinks`` lists the blinks
    begun so far; ``speaking`` is the current speaking weight in [0, 1].
    """

    def __init__(self, fps: float, seed: int = 0, params: BehaviourParams = BehaviourParams()):
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.fps = float(fps)
        self.dt = 1.0 / self.fps
        self.params = params
        self.rng = np.random.default_rng(seed)
        self.frame = 0
        self.speaking = 0.0
        # recent history only: a kiosk session runs for days
        self.blinks: deque[Blink] = deque(maxlen=HISTORY)
        self.accents: deque[float] = deque(maxlen=HISTORY)
        self._expand = _expand_matrix()
        p = params
        self._idle = _Smoothed(np.array(p.idle_head_deg) * _DEG, p.idle_head_tau_s,
                               p.head_lowpass_s)
        self._talk = _Smoothed(np.array(p.speech_head_deg) * _DEG, p.speech_head_tau_s,
                               p.head_lowpass_s)
        self._next_blink = self._blink_interval(first=True)
        self._pending_double: float | None = None
        self._blink_credit = 0.0  # seconds a pause blink was brought forward by
        self._breath_phase = float(self.rng.uniform(0, 2 * math.pi))
        self._breath_rate = self._draw_breath_rate()
        self._glance_target = np.zeros(2)  # pitch, yaw (rad)
        self._glance_mid = np.zeros(2)
        self._glance = np.zeros(2)
        self._next_glance = float(self.rng.uniform(*p.glance_interval_s))
        self._nods: list[_Bump] = []
        self._brows: list[_Bump] = []
        self._energy_fast = -60.0
        self._energy_mean = -30.0
        self._f0_mean: float | None = None
        self._f0_hist: list[float] = []
        self._last_accent = -1e9
        self._speech_run = 0.0
        self._coeff_filter = OneEuroFilter(COEFFICIENT_SMOOTHING)
        self._pose_filter = OneEuroFilter(POSE_SMOOTHING)

    # --- random draws ---------------------------------------------------------------------
    def _blink_interval(self, first: bool = False) -> float:
        p = self.params
        mean = 60.0 / p.blink_rate_per_min
        gap = float(self.rng.gamma(p.blink_interval_shape, mean / p.blink_interval_shape))
        gap = max(gap, p.blink_min_interval_s)
        return (float(self.rng.uniform(0.3, mean)) if first else gap)

    def _draw_breath_rate(self) -> float:
        return float(self.rng.uniform(*self.params.breath_rate_per_min)) / 60.0

    # --- parts ----------------------------------------------------------------------------
    def _time(self) -> float:
        return (self.frame + 0.5) * self.dt

    def _update_speaking(self, vad: float) -> float:
        p = self.params
        target = 1.0 if vad >= 0.5 else 0.0
        tau = p.vad_attack_s if target > self.speaking else p.vad_release_s
        a = 1.0 - math.exp(-self.dt / tau)
        before = self.speaking
        self.speaking += a * (target - self.speaking)
        self._speech_run = self._speech_run + self.dt if self.speaking > 0.5 else 0.0
        return before

    def _blink(self, t: float, was_speaking: float) -> float:
        p = self.params
        # A pause after speech brings the next blink forward (phrase-boundary blinks).
        if was_speaking > 0.5 >= self.speaking and self._next_blink - t > 0.3:
            last = self.blinks[-1].start_s if self.blinks else -1e9
            # only when the lids have been open for half a mean interval, so moving blinks to
            # pauses does not raise the rate by much
            half = 30.0 / p.blink_rate_per_min
            if t - last > half and self.rng.random() < p.pause_blink_p:
                moved = t + float(self.rng.uniform(0.05, 0.2))
                self._blink_credit = self._next_blink - moved  # paid back after this blink
                self._next_blink = moved
        if t >= self._next_blink:
            dur = float(self.rng.uniform(*p.blink_duration_s))
            self.blinks.append(Blink(t, dur))
            if self._pending_double is None and self.rng.random() < p.double_blink_p:
                gap = float(self.rng.uniform(0.05, 0.15))
                self._pending_double = t + dur + gap
                self._next_blink = self._pending_double
            else:
                self._pending_double = None
                self._next_blink = t + dur + self._blink_interval() + self._blink_credit
                self._blink_credit = 0.0
        # The most closed instant within the frame's exposure [t − dt/2, t + dt/2]: at 25 fps a
        # 100 ms blink spans 2–3 frames, and point sampling could miss its closed phase.
        closure = 0.0
        for b in list(self.blinks)[-3:]:
            for k in np.linspace(-0.5, 0.5, 7):
                u = (t + k * self.dt - b.start_s) / b.duration_s
                closure = max(closure, blink_closure(u))
        return closure

    def _breath(self) -> float:
        self._breath_phase += 2 * math.pi * self._breath_rate * self.dt
        if self._breath_phase >= 2 * math.pi:
            self._breath_phase -= 2 * math.pi
            self._breath_rate = self._draw_breath_rate()
        return 0.5 * (1.0 - math.cos(self._breath_phase))  # 0 exhaled … 1 inhaled

    def _glance_step(self, t: float) -> np.ndarray:
        p = self.params
        if t >= self._next_glance:
            away = bool(np.abs(self._glance_target).any())
            if away and self.rng.random() < 0.6:
                self._glance_target = np.zeros(2)  # back to the viewer
            else:
                pitch, yaw = p.glance_deg
                self._glance_target = np.array([self.rng.uniform(-pitch, pitch),
                                                self.rng.uniform(-yaw, yaw)]) * _DEG
            self._next_glance = t + float(self.rng.uniform(*p.glance_interval_s))
        # two cascaded one-pole stages: an S-shaped ~0.25 s turn with no jump in velocity
        a = 1.0 - math.exp(-self.dt / p.glance_time_s)
        self._glance_mid += a * (self._glance_target - self._glance_mid)
        self._glance += a * (self._glance_mid - self._glance)
        return self._glance

    def _prosody(self, t: float, energy_db: float, f0_hz: float) -> None:
        """Track loudness and pitch; on a pitch accent start a nod and/or a brow raise."""
        p = self.params
        a_fast = 1.0 - math.exp(-self.dt / 0.05)
        self._energy_fast += a_fast * (energy_db - self._energy_fast)
        voiced = f0_hz > 0 and math.isfinite(f0_hz)
        if self.speaking > 0.5:
            a_slow = 1.0 - math.exp(-self.dt / 2.0)
            self._energy_mean += a_slow * (self._energy_fast - self._energy_mean)
        if not voiced:
            self._f0_hist.clear()
            return
        st = 12.0 * math.log2(f0_hz / 100.0)  # semitones re 100 Hz
        if self._f0_mean is None:
            self._f0_mean = st
        self._f0_mean += (1.0 - math.exp(-self.dt / 2.0)) * (st - self._f0_mean)
        self._f0_hist = (self._f0_hist + [st])[-3:]
        if len(self._f0_hist) < 3 or self.speaking < 0.5:
            return
        prev2, prev, _cur = self._f0_hist
        excursion = prev - self._f0_mean
        peak = prev >= prev2 and prev > _cur
        loud = self._energy_fast > self._energy_mean - 3.0
        if (peak and loud and excursion >= p.accent_semitones
                and t - self._last_accent >= p.accent_refractory_s):
            self._last_accent = t
            self.accents.append(t)
            strength = min(1.0, (excursion - p.accent_semitones) / 4.0)
            if self.rng.random() < p.nod_p:
                lo, hi = p.nod_deg
                self._nods.append(_Bump(t, p.nod_s, (lo + (hi - lo) * strength) * _DEG))
            if self.rng.random() < p.brow_p + 0.3 * strength:
                lo, hi = p.brow_amount
                self._brows.append(_Bump(t, p.brow_s, lo + (hi - lo) * strength, attack=0.25))

    @staticmethod
    def _sum(bumps: list[_Bump], t: float) -> float:
        bumps[:] = [b for b in bumps if t < b.start + b.length]
        return sum(b.value(t) for b in bumps)

    # --- public ---------------------------------------------------------------------------
    def step(self, mouth: np.ndarray, vad: float, energy_db: float = -90.0,
             f0_hz: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Advance one video frame.

        Args:
            mouth: float [len(MOTION_COEFFICIENTS)] mouth coefficients in [0, 1].
            vad: speech probability of the frame in [0, 1].
            energy_db: loudness of the frame's audio, dBFS. f0_hz: its f0, 0 if unvoiced.

        Returns (coeffs float64 [19] in ``avatars.rig.COEFFICIENTS`` order, clipped to [0, 1];
        pose float64 [6] in ``POSE_NAMES`` order). Raises ValueError for a wrong mouth shape.
        """
        m = np.asarray(mouth, dtype=np.float64)
        if m.shape != (len(MOTION_COEFFICIENTS),):
            raise ValueError(f"mouth must be [{len(MOTION_COEFFICIENTS)}], got {list(m.shape)}")
        m = np.nan_to_num(m, nan=0.0, posinf=1.0, neginf=0.0)  # a bad frame must not stick
        energy_db = float(energy_db) if math.isfinite(energy_db) else -90.0
        f0_hz = float(f0_hz) if math.isfinite(f0_hz) else 0.0
        p = self.params
        t = self._time()
        was = self._update_speaking(float(vad) if math.isfinite(vad) else 0.0)
        s = self.speaking
        self._prosody(t, float(energy_db), float(f0_hz))

        coeffs = np.clip(m, 0.0, 1.0) @ self._expand
        brow = self._sum(self._brows, t)
        coeffs[INDEX["browInnerUp"]] += brow
        coeffs[INDEX["browOuterUpLeft"]] += 0.7 * brow
        coeffs[INDEX["browOuterUpRight"]] += 0.7 * brow

        idle = self._idle.step(self.rng, self.dt)
        talk = self._talk.step(self.rng, self.dt)
        breath = self._breath() * (1.0 - 0.7 * s)
        glance = self._glance_step(t)
        lift = -p.loudness_lift_deg * _DEG * s * float(
            np.clip((self._energy_fast - self._energy_mean) / 10.0, -1.0, 1.0))
        nod = self._sum(self._nods, t)
        pose = np.array([
            idle[0] + s * talk[0] + glance[0] + nod + lift - breath * p.breath_pitch_deg * _DEG,
            idle[1] + s * talk[1] + glance[1],
            idle[2] + s * talk[2],
            0.0,
            -breath * p.breath_ty,
            1.0,
        ])
        if p.smooth:
            coeffs = self._coeff_filter(coeffs, t)
            pose = self._pose_filter(pose, t)
        # Blinks join after smoothing: their shape is generated smooth, and the filter would
        # only blunt a 100 ms closure that must read as closed on screen.
        closure = self._blink(t, was)
        for name in ("eyeBlinkLeft", "eyeBlinkRight"):
            coeffs[INDEX[name]] = max(coeffs[INDEX[name]], closure)
        self.frame += 1
        return np.clip(coeffs, 0.0, 1.0), pose

    def run(self, mouth: np.ndarray, vad: np.ndarray, energy_db: np.ndarray | None = None,
            f0_hz: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``step`` over F frames: mouth [F, len(MOTION_COEFFICIENTS)], vad [F], optional
        energy_db [F] and f0_hz [F] → (coeffs float64 [F, 19], pose float64 [F, 6])."""
        m = np.asarray(mouth, dtype=np.float64)
        f = len(m)
        v = np.asarray(vad, dtype=np.float64)
        e = np.full(f, -90.0) if energy_db is None else np.asarray(energy_db, np.float64)
        f0 = np.zeros(f) if f0_hz is None else np.asarray(f0_hz, np.float64)
        if not (len(v) == len(e) == len(f0) == f):
            raise ValueError(f"inputs disagree on frame count: mouth {f}, vad {len(v)}, "
                             f"energy {len(e)}, f0 {len(f0)}")
        coeffs = np.zeros((f, N_COEFFICIENTS))
        pose = np.zeros((f, 6))
        for i in range(f):
            coeffs[i], pose[i] = self.step(m[i], v[i], e[i], f0[i])
        return coeffs, pose
