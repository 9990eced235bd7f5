"""ChannelAugmentation: per-source rooms, equalization, bands, hiss, hum, clipping and codec."""

import math
from dataclasses import fields

import numpy as np
import pytest

from domains.audio.augment import ChannelAugmentation, _active_rms

SR = 8000
PROBS = [f.name for f in fields(ChannelAugmentation) if f.name.endswith("_prob")]


def only(**params):
    """An augmentation with every effect off but those given."""
    return ChannelAugmentation(**{**{p: 0.0 for p in PROBS}, **params})


def noise(n=2, seconds=2.0, seed=0):
    return np.random.default_rng(seed).standard_normal((n, int(seconds * SR))) * 0.1


def speech_like(seconds=2.0, seed=0):
    """A two-formant buzz with syllable-like amplitude bursts."""
    t = np.arange(int(seconds * SR)) / SR
    g = np.random.default_rng(seed)
    buzz = sum(np.sin(2 * np.pi * 140 * k * t + g.uniform(0, 6)) / k for k in range(1, 25))
    envelope = np.clip(np.sin(2 * np.pi * 3 * t), 0, None)
    return 0.2 * buzz * envelope


def test_shapes_dtype_finite_and_deterministic():
    aug = ChannelAugmentation(**{p: 1.0 for p in PROBS})  # every effect at once
    x = noise(3)
    a = aug(x, SR, np.random.default_rng(5))
    b = aug(x, SR, np.random.default_rng(5))
    c = aug(x, SR, np.random.default_rng(6))
    assert a.shape == x.shape and a.dtype == np.float64
    assert np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert not np.allclose(a[0], x[0])


def test_all_off_is_the_identity_and_silence_stays_silent():
    x = noise(2)
    np.testing.assert_array_equal(only()(x, SR, np.random.default_rng(0)), x)
    silent = np.zeros((2, 4000))
    out = ChannelAugmentation(**{p: 1.0 for p in PROBS})(silent, SR, np.random.default_rng(0))
    np.testing.assert_array_equal(out, silent)


def test_level_is_restored_and_gain_stays_in_range():
    aug = ChannelAugmentation(gain_prob=0.0, room_prob=1.0, eq_prob=1.0, band_prob=1.0, hiss_prob=1.0)
    for seed in range(5):
        x = noise(2, seed=seed) * np.array([[1.0], [0.3]])
        y = aug(x, SR, np.random.default_rng(seed))
        for k in range(2):
            assert math.isclose(_active_rms(y[k], SR), _active_rms(x[k], SR), rel_tol=1e-9)
    gain = only(gain_prob=1.0, gain_db=4.0)
    ratios = []
    for seed in range(40):
        x = noise(1, seed=seed)
        y = gain(x, SR, np.random.default_rng(seed))
        ratios.append(20 * np.log10(_active_rms(y[0], SR) / _active_rms(x[0], SR)))
    assert min(ratios) >= -4.0 - 1e-9 and max(ratios) <= 4.0 + 1e-9
    assert max(ratios) - min(ratios) > 4.0  # they do spread over the range


def _band_power_db(x, lo, hi):
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    return 10 * np.log10(spec[(f >= lo) & (f <= hi)].mean() + 1e-30)


def test_band_limits_measured_by_spectrum():
    aug = only(band_prob=1.0, band_low_hz=(300.0, 300.0), band_high_hz=(2700.0, 2700.0), band_edge_hz=100.0)
    y = aug(noise(1, seconds=4.0), SR, np.random.default_rng(0))[0]
    passband = _band_power_db(y, 400, 2600)
    assert passband - _band_power_db(y, 2800, 4000) > 60
    assert passband - _band_power_db(y, 0, 200) > 60
    full = only(band_prob=1.0, band_low_hz=(0.0, 0.0), band_high_hz=(4000.0, 4000.0))
    z = full(noise(1, seconds=4.0), SR, np.random.default_rng(0))[0]
    assert abs(_band_power_db(z, 50, 300) - _band_power_db(z, 400, 2600)) < 1.0  # full band: flat


def test_equalization_boosts_and_cuts_within_eq_db():
    aug = only(eq_prob=1.0, eq_db=6.0)
    x = noise(1, seconds=4.0)[0]
    for seed in range(3):
        y = aug(x[None], SR, np.random.default_rng(seed))[0]
        gain = np.abs(np.fft.rfft(y)) / np.abs(np.fft.rfft(x))  # a zero-phase filter: per-bin gain
        g_db = 20 * np.log10(gain)
        # the level is restored afterwards, so the curve may shift as a whole: its spread is bounded
        assert g_db.max() - g_db.min() <= 12.0 + 1e-6
        assert g_db.max() - g_db.min() > 1.0


def _residual(x, y):
    """y minus its least-squares projection on x."""
    a = float(np.dot(x, y) / np.dot(x, x))
    return a * x, y - a * x


def test_hiss_at_the_drawn_snr():
    aug = only(hiss_prob=1.0, hiss_snr_db=(20.0, 20.0))
    x = speech_like()
    y = aug(x[None], SR, np.random.default_rng(0))[0]
    clean, r = _residual(x, y)
    snr = 20 * np.log10(_active_rms(clean, SR) / np.sqrt(np.mean(r**2)))
    assert abs(snr - 20.0) < 0.5
    assert abs(_band_power_db(r, 100, 1000) - _band_power_db(r, 2000, 3900)) < 1.0  # white


def test_hum_is_mains_harmonics_at_the_drawn_level():
    aug = only(hum_prob=1.0, hum_snr_db=(30.0, 30.0))
    x = speech_like(seconds=4.0)
    for seed in range(4):
        y = aug(x[None], SR, np.random.default_rng(seed))[0]
        clean, r = _residual(x, y)
        snr = 20 * np.log10(_active_rms(clean, SR) / np.sqrt(np.mean(r**2)))
        assert abs(snr - 30.0) < 0.5
        spec = np.abs(np.fft.rfft(r))
        f = np.fft.rfftfreq(len(r), 1 / SR)
        peak = f[int(spec.argmax())]
        assert any(abs(peak / base - round(peak / base)) < 1e-6 and peak <= 1000 for base in (50.0, 60.0))
        assert spec[f > 1000].max() < 1e-3 * spec.max()  # nothing but what the projection leaves of x


def test_room_decay_time_and_direct_to_reverberant_ratio():
    aug = only(room_prob=1.0, rt60_s=(0.4, 0.4), drr_db=(6.0, 6.0))
    impulse = np.zeros(SR)
    impulse[0] = 1.0
    h = aug(impulse[None], SR, np.random.default_rng(3))[0]
    drr = 10 * np.log10(h[0] ** 2 / np.sum(h[1:] ** 2))
    assert abs(drr - 6.0) < 0.01
    # Schroeder backward integration of the tail; T30 from -5 to -35 dB, extrapolated to 60 dB
    tail = h[1:] ** 2
    edc = 10 * np.log10(np.cumsum(tail[::-1])[::-1] / tail.sum())
    t = np.arange(len(edc)) / SR
    sel = (edc <= -5) & (edc >= -35)
    slope = np.polyfit(t[sel], edc[sel], 1)[0]  # dB per second
    assert abs(-60 / slope - 0.4) < 0.06
    assert np.abs(h[1 : int(0.002 * SR)]).max() < 1e-12  # the reflections start after the direct path


def test_mulaw_has_at_most_256_levels_and_clipping_lowers_the_crest_factor():
    x = speech_like()
    y = only(mulaw_prob=1.0, mulaw_peak_db=(-1.0, -1.0))(x[None], SR, np.random.default_rng(0))[0]
    assert len(np.unique(np.round(y, 12))) <= 256
    _, r = _residual(x, y)
    assert 20 * np.log10(np.sqrt(np.mean(x**2)) / np.sqrt(np.mean(r**2))) > 25  # 8-bit mu-law: ~38 dB
    z = only(clip_prob=1.0, clip_drive_db=(12.0, 12.0))(x[None], SR, np.random.default_rng(0))[0]

    def crest(s):
        return np.abs(s).max() / np.sqrt(np.mean(s**2))

    assert crest(z) < 0.75 * crest(x)


def test_without_switches_groups_off_and_keeps_the_other_draws():
    aug = ChannelAugmentation(**{p: 1.0 for p in PROBS})
    dry = aug.without("room")
    assert dry.room_prob == 0.0 and dry.eq_prob == 1.0
    off = aug.without(*ChannelAugmentation.GROUPS)
    x = noise(2)
    np.testing.assert_array_equal(off(x, SR, np.random.default_rng(0)), x)
    with pytest.raises(ValueError, match="groups of ChannelAugmentation.without must be among"):
        aug.without("reverb")


@pytest.mark.parametrize(
    "params, error, match",
    [({"room_prob": 1.5}, ValueError, "'room_prob' parameter of ChannelAugmentation"),
     ({"rt60_s": (0.7, 0.2)}, ValueError, "'rt60_s' parameter of ChannelAugmentation must have low <= high"),
     ({"hiss_snr_db": 20.0}, TypeError, "'hiss_snr_db' parameter of ChannelAugmentation must be a \\(low, high\\) pair"),
     ({"band_low_hz": (0.0, 3000.0)}, ValueError, "must end below the start of 'band_high_hz'"),
     ({"mulaw_peak_db": (-10.0, 3.0)}, ValueError, "'mulaw_peak_db'")],
)
def test_bad_parameters(params, error, match):
    with pytest.raises(error, match=match):
        ChannelAugmentation(**params)


def test_bad_input():
    with pytest.raises(ValueError, match="'sources' must have shape \\(n_sources, time\\)"):
        ChannelAugmentation()(np.zeros(100), SR, np.random.default_rng(0))


@pytest.mark.parametrize("f0, sr", [(50.0, 8000), (60.0, 8000), (60.0, 16000), (50.0, 11025), (55.5, 8000)])
def test_hum_tiles_whole_periods_of_the_sum_of_harmonics(f0, sr):
    from domains.audio.augment import _hum

    g = np.random.default_rng(3)
    phases, slope, n = g.uniform(0, 2 * np.pi, 20), 1.4, 12345
    orders = np.arange(1, 21)
    keep = orders * f0 < min(1000.0, sr / 2)
    t = np.arange(n) / sr
    direct = (np.sin(2 * np.pi * f0 * np.outer(orders[keep], t) + phases[keep, None]) / orders[keep, None] ** slope).sum(0)
    np.testing.assert_allclose(_hum(n, sr, f0, phases, slope), direct / np.sqrt(np.mean(direct**2)), rtol=0, atol=1e-9)
