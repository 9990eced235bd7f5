"""Channel augmentation: each talker as heard through a random room, microphone and line.

A network trained on clean studio speech meets, in real recordings, rooms, telephone and radio
bands, tilted microphone responses, hiss, mains hum and the distortion of cheap codecs. These
effects are applied per source (each talker has a channel of their own), so that the separation
targets stay consistent: a target is the source as it sounds in the mixture, and the mixture is
the sum of the targets. Everything is NumPy and deterministic given the generator passed in;
the impulse responses are synthesized (a direct path plus an exponentially decaying noise tail),
so no recorded data or extra dependency is needed.

The chain, in the order a signal meets it: room -> equalization -> hum and hiss ->
band-limiting -> soft clipping -> 8-bit mu-law codec; then the source gets back the active level
it had (the mixture's relative levels are set before), and a random gain on top.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

import numpy as np

from embedseg._validation import check_float, check_int

__all__ = ["ChannelAugmentation"]

_MU = 255.0  # the mu of G.711's 8-bit mu-law


def _active_rms(x: np.ndarray, sample_rate: int) -> float:
    """RMS over the 20 ms blocks within 40 dB of the loudest block (a simple active level)."""
    block = max(1, sample_rate // 50)
    n = len(x) // block
    if n == 0:
        return float(np.sqrt(np.mean(x**2))) if len(x) else 0.0
    energy = (x[: n * block].reshape(n, block) ** 2).mean(axis=1)
    active = energy >= energy.max() * 1e-4
    return float(np.sqrt(energy[active].mean()))


@dataclass(frozen=True)
class ChannelAugmentation:
    """Random per-source channel effects for training mixtures, each with its own probability.

    Call it on the sources of one mixture with a NumPy generator; the result has the same shape
    and is deterministic given the generator's state. Effects come in groups (``GROUPS``) that
    :meth:`without` switches off, for ablations.

    Args:
        eq_prob: probability of a random equalization (a smooth response through control
            points at log-spaced frequencies, each boosted or cut by up to ``eq_db``).
        eq_db: the largest boost or cut of the equalization, in dB.
        band_prob: probability of band-limiting to [low, high] Hz (zero-phase, raised-cosine
            edges ``band_edge_hz`` wide, nothing passes beyond them).
        band_low_hz: (low, high) range the lower band edge is drawn from; 300 Hz and up is a
            telephone or radio band, near 0 no low cut.
        band_high_hz: (low, high) range the upper band edge is drawn from (capped below the
            Nyquist frequency); 2,700-3,400 Hz is a radio or telephone band.
        band_edge_hz: width of the band's transitions.
        hiss_prob: probability of white hiss.
        hiss_snr_db: (low, high) level of the hiss below the source's active level, in dB.
        hum_prob: probability of mains hum (50 or 60 Hz with harmonics up to 1 kHz, falling
            off with their order, random phases).
        hum_snr_db: (low, high) level of the hum below the source's active level, in dB.
        clip_prob: probability of soft clipping (tanh).
        clip_drive_db: (low, high) drive of the clipper, in dB above its knee (0 dB: the peak
            reaches the knee).
        mulaw_prob: probability of a round trip through 8-bit mu-law (G.711).
        mulaw_peak_db: (low, high) peak level of the signal entering the codec, in dB of full
            scale (quieter signals get relatively more quantization noise).
        room_prob: probability of a simulated room.
        rt60_s: (low, high) reverberation time in seconds (the tail decays by 60 dB).
        drr_db: (low, high) direct-to-reverberant energy ratio in dB.
        gain_prob: probability of a gain after the level is restored.
        gain_db: the gain is drawn from [-gain_db, gain_db] dB: the relative levels of the
            talkers spread beyond the dataset's ``snr_range``.

    Example:
        >>> aug = ChannelAugmentation()
        >>> rng = np.random.default_rng(0)
        >>> aug(rng.standard_normal((2, 8000)), 8000, rng).shape
        (2, 8000)
        >>> aug.without("room", "codec").room_prob
        0.0
    """

    eq_prob: float = 0.5
    eq_db: float = 8.0
    band_prob: float = 0.3
    band_low_hz: tuple[float, float] = (0.0, 300.0)
    band_high_hz: tuple[float, float] = (2700.0, 4000.0)
    band_edge_hz: float = 100.0
    hiss_prob: float = 0.3
    hiss_snr_db: tuple[float, float] = (15.0, 40.0)
    hum_prob: float = 0.15
    hum_snr_db: tuple[float, float] = (20.0, 40.0)
    clip_prob: float = 0.15
    clip_drive_db: tuple[float, float] = (0.0, 12.0)
    mulaw_prob: float = 0.15
    mulaw_peak_db: tuple[float, float] = (-24.0, -1.0)
    room_prob: float = 0.3
    rt60_s: tuple[float, float] = (0.15, 0.7)
    drr_db: tuple[float, float] = (0.0, 12.0)
    gain_prob: float = 0.5
    gain_db: float = 3.0

    #: the effect groups and the probabilities that switch each on.
    GROUPS: ClassVar[dict[str, tuple[str, ...]]] = {
        "eq": ("eq_prob", "band_prob"),
        "noise": ("hiss_prob", "hum_prob"),
        "codec": ("clip_prob", "mulaw_prob"),
        "room": ("room_prob",),
        "gain": ("gain_prob",),
    }

    def __post_init__(self) -> None:
        owner = type(self).__name__
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_prob"):
                check_float(value, f.name, owner, 0.0, 1.0)
        check_float(self.eq_db, "eq_db", owner, 0.0, 40.0)
        check_float(self.gain_db, "gain_db", owner, 0.0, 40.0)
        check_float(self.band_edge_hz, "band_edge_hz", owner, 0.0, None, closed="neither")
        for name, low, high in (
            ("band_low_hz", 0.0, None), ("band_high_hz", 0.0, None), ("hiss_snr_db", -20.0, 120.0),
            ("hum_snr_db", -20.0, 120.0), ("clip_drive_db", 0.0, 40.0), ("mulaw_peak_db", -60.0, 0.0),
            ("rt60_s", 0.01, 5.0), ("drr_db", -20.0, 60.0),
        ):
            _check_range(getattr(self, name), name, owner, low, high)
        if self.band_low_hz[1] >= self.band_high_hz[0]:
            raise ValueError(
                f"The 'band_low_hz' range of {owner} must end below the start of 'band_high_hz'. "
                f"Got {self.band_low_hz!r} and {self.band_high_hz!r} instead."
            )

    def without(self, *groups: str) -> ChannelAugmentation:
        """A copy with the effects of ``groups`` (names of ``GROUPS``) switched off.

        Raises:
            ValueError: an unknown group name.
        """
        off: dict[str, float] = {}
        for group in groups:
            if group not in self.GROUPS:
                valid = ", ".join(repr(g) for g in self.GROUPS)
                raise ValueError(f"The groups of ChannelAugmentation.without must be among {valid}. Got {group!r} instead.")
            off.update({name: 0.0 for name in self.GROUPS[group]})
        return replace(self, **off)

    def __call__(self, sources: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
        """Each source through its own random channel, at its own active level (then the gain).

        Args:
            sources: (n_sources, time) float waveforms.
            sample_rate: their rate in Hz.
            rng: the generator every random choice is drawn from.

        Returns:
            (n_sources, time) float64 waveforms.

        Raises:
            ValueError: ``sources`` is not 2-D.
        """
        sources = np.asarray(sources, dtype=np.float64)
        if sources.ndim != 2:
            raise ValueError(f"'sources' must have shape (n_sources, time). Got shape {sources.shape} instead.")
        check_int(sample_rate, "sample_rate", type(self).__name__, 1000)
        out = np.empty_like(sources)
        for k, source in enumerate(sources):
            out[k] = self._one(source, sample_rate, rng)
        return out

    def _one(self, x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
        """One source through the chain; every draw is made whether or not its effect is on,
        so that switching one effect off leaves the others' draws unchanged."""
        u = rng.random(8)  # one coin per effect
        level = _active_rms(x, sr)
        if level <= 0:
            return x.copy()
        y = x.copy()
        draws = {
            "room": (rng.uniform(*self.rt60_s), rng.uniform(*self.drr_db), rng.integers(2**63)),
            "eq": rng.uniform(-self.eq_db, self.eq_db, size=6),
            "hum": (rng.choice([50.0, 60.0]), rng.uniform(*self.hum_snr_db), rng.uniform(0, 2 * np.pi, size=20),
                    rng.uniform(1.0, 2.0)),
            "hiss": (rng.uniform(*self.hiss_snr_db), rng.integers(2**63)),
            "band": (rng.uniform(*self.band_low_hz), rng.uniform(*self.band_high_hz)),
            "clip": rng.uniform(*self.clip_drive_db),
            "mulaw": rng.uniform(*self.mulaw_peak_db),
            "gain": rng.uniform(-self.gain_db, self.gain_db),
        }
        if u[0] < self.room_prob:
            y = _room(y, sr, *draws["room"])
        if u[1] < self.eq_prob:
            y = _filter(y, _eq_response(len(y), sr, draws["eq"]))
        if u[2] < self.hum_prob:
            f0, snr, phases, slope = draws["hum"]
            y = y + _hum(len(y), sr, f0, phases, slope) * level * 10 ** (-snr / 20)
        if u[3] < self.hiss_prob:
            snr, seed = draws["hiss"]
            y = y + np.random.default_rng(seed).standard_normal(len(y)) * level * 10 ** (-snr / 20)
        if u[4] < self.band_prob:
            low, high = draws["band"]
            y = _filter(y, _band_response(len(y), sr, low, high, self.band_edge_hz))
        if u[5] < self.clip_prob:
            drive = 10 ** (draws["clip"] / 20)
            peak = np.abs(y).max()
            if peak > 0:
                y = np.tanh(drive * y / peak) * peak / drive
        if u[6] < self.mulaw_prob:
            y = _mulaw(y, 10 ** (draws["mulaw"] / 20))
        new_level = _active_rms(y, sr)
        if new_level > 0:
            y *= level / new_level  # the relative levels were set before the channel
        if u[7] < self.gain_prob:
            y *= 10 ** (draws["gain"] / 20)
        return y


def _check_range(value: Any, name: str, owner: str, low: float | None, high: float | None) -> tuple[float, float]:
    """A (low, high) pair within [low, high] with value[0] <= value[1]."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"The '{name}' parameter of {owner} must be a (low, high) pair. Got {value!r} instead.")
    a = check_float(value[0], name, owner, low, high)
    b = check_float(value[1], name, owner, low, high)
    if a > b:
        raise ValueError(f"The '{name}' parameter of {owner} must have low <= high. Got {value!r} instead.")
    return a, b


def _filter(x: np.ndarray, response: np.ndarray) -> np.ndarray:
    """Zero-phase filtering by a real response on the rfft grid of ``len(x)`` samples."""
    return np.fft.irfft(np.fft.rfft(x) * response, n=len(x))


def _eq_response(n: int, sr: int, gains_db: np.ndarray) -> np.ndarray:
    """A smooth response: the gains at log-spaced frequencies from 100 Hz to Nyquist, linear in
    dB between them along log-frequency, flat beyond."""
    log_freqs, log_points = _eq_grid(n, sr, len(gains_db))
    db = np.interp(log_freqs, log_points, gains_db)
    return 10 ** (db / 20)


@functools.lru_cache(maxsize=16)
def _eq_grid(n: int, sr: int, n_points: int) -> tuple[np.ndarray, np.ndarray]:
    """The log-frequencies of the rfft grid and of the control points of :func:`_eq_response`
    (the same for every source of a training set's length: computed once)."""
    log_freqs = np.log(np.maximum(np.fft.rfftfreq(n, 1 / sr), 1.0))
    log_points = np.log(np.geomspace(100.0, sr / 2, n_points))
    log_freqs.setflags(write=False)
    log_points.setflags(write=False)
    return log_freqs, log_points


def _band_response(n: int, sr: int, low: float, high: float, edge: float) -> np.ndarray:
    """1 within [low, high], raised-cosine edges ``edge`` Hz wide outside it, 0 beyond them."""
    freqs = np.fft.rfftfreq(n, 1 / sr)
    high = min(high, sr / 2 - edge)
    r = np.ones_like(freqs)
    above = np.clip((freqs - high) / edge, 0.0, 1.0)
    r *= 0.5 * (1 + np.cos(np.pi * above))
    if low > 0:
        below = np.clip((low - freqs) / edge, 0.0, 1.0)
        r *= 0.5 * (1 + np.cos(np.pi * below))
    return r


def _hum(n: int, sr: int, f0: float, phases: np.ndarray, slope: float) -> np.ndarray:
    """Unit-RMS mains hum: harmonics of ``f0`` up to 1 kHz, amplitude 1 / order**slope."""
    orders = np.arange(1, len(phases) + 1)
    keep = orders * f0 < min(1000.0, sr / 2)
    orders, phases = orders[keep], phases[keep]
    # The shortest whole number of periods that fills whole samples (one period of 50 Hz at
    # 8 kHz, 160 samples; three of 60 Hz, 400), tiled: a sum of harmonics over the whole
    # signal would cost n * orders sines.
    span = sr // math.gcd(int(sr), int(f0)) if float(f0).is_integer() else n
    t = np.arange(min(span, n)) / sr
    one = (np.sin(2 * np.pi * f0 * np.outer(orders, t) + phases[:, None]) / orders[:, None] ** slope).sum(0)
    hum = np.resize(one, n)  # repeats the period
    rms = float(np.sqrt(np.mean(hum**2)))
    return hum / rms if rms > 0 else hum


def _room(x: np.ndarray, sr: int, rt60: float, drr_db: float, seed: int) -> np.ndarray:
    """``x`` in a synthetic room: a unit direct path at lag 0 (so the target stays aligned with
    the talker) plus a Gaussian tail from 2.5 ms on, decaying 60 dB in ``rt60`` seconds, with
    ``drr_db`` more energy in the direct path than in the tail."""
    n = max(2, round(rt60 * sr))
    t = np.arange(n) / sr
    tail = np.random.default_rng(seed).standard_normal(n) * np.exp(-3 * math.log(10) * t / rt60)
    tail[: max(1, int(0.0025 * sr))] = 0.0
    tail *= math.sqrt(10 ** (-drr_db / 10) / max(float(np.sum(tail**2)), 1e-12))
    h = tail
    h[0] = 1.0
    size = 1 << (len(x) + n - 2).bit_length()  # a power of two >= len(x) + n - 1: a fast FFT
    y = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), n=size)
    return y[: len(x)]


def _mulaw(x: np.ndarray, peak: float) -> np.ndarray:
    """A round trip through 8-bit mu-law with the signal's peak at ``peak`` of full scale."""
    top = np.abs(x).max()
    if top <= 0:
        return x
    scale = peak / top
    v = np.clip(x * scale, -1.0, 1.0)
    c = np.sign(v) * np.log1p(_MU * np.abs(v)) / math.log1p(_MU)  # compress to [-1, 1]
    c = np.round(c * 127) / 127  # sign and 7 bits of magnitude: 8 bits a sample
    v = np.sign(c) * np.expm1(np.abs(c) * math.log1p(_MU)) / _MU  # expand
    return v / scale
