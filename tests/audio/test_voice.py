"""shift_formants: the spectral envelope moves by the factor, the pitch and length stay."""

import numpy as np
import pytest
from scipy.signal import lfilter

librosa = pytest.importorskip("librosa")

from domains.audio.voice import shift_formants

RATE = 8000


def _vowel(f0, formants, seconds=2.0):
    """A pulse train at f0 through two-pole resonators at (frequency, bandwidth) Hz."""
    x = np.zeros(int(RATE * seconds))
    x[:: int(RATE / f0)] = 1.0
    for f, bw in formants:
        r = np.exp(-np.pi * bw / RATE)
        x = lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * f / RATE), r * r], x)
    return 0.5 * x / np.abs(x).max()


def _formants(x, order=10):
    """F1 and F2: the median over 32 ms frames of the two lowest sharp resonances of an LPC fit
    (librosa's Burg method), the textbook formant tracker."""
    frames = np.lib.stride_tricks.sliding_window_view(x, 256)[::128][5:-5]
    found = []
    for frame in frames:
        roots = np.roots(librosa.lpc(np.ascontiguousarray(frame * np.hamming(256)), order=order))
        roots = roots[np.imag(roots) > 0]
        freqs = np.angle(roots) * RATE / (2 * np.pi)
        bandwidths = -np.log(np.abs(roots)) * RATE / np.pi
        freqs = np.sort(freqs[(bandwidths < 400) & (freqs > 150)])
        if len(freqs) >= 2:
            found.append(freqs[:2])
    return np.median(np.array(found), axis=0)


def _f0(x):
    ac = np.correlate(x[:4000], x[:4000], "full")[3999:]
    low, high = RATE // 400, RATE // 60
    return RATE / (low + np.argmax(ac[low:high]))


@pytest.mark.parametrize("factor", [0.87, 1.15])
@pytest.mark.parametrize("f0, formants", [(125.0, (700.0, 1200.0)), (200.0, (800.0, 1500.0))])
def test_formants_move_by_the_factor_and_the_pitch_stays(factor, f0, formants):
    vowel = _vowel(f0, [(formants[0], 80.0), (formants[1], 90.0), (2600.0, 120.0)])
    np.testing.assert_allclose(_formants(vowel), formants, rtol=0.03)
    shifted = shift_formants(vowel, factor, RATE)
    assert shifted.shape == vowel.shape
    np.testing.assert_allclose(_formants(shifted), np.array(formants) * factor, rtol=0.04)
    assert _f0(shifted) == pytest.approx(_f0(vowel), rel=0.01)
    level = np.sqrt(np.mean(shifted**2) / np.mean(vowel**2))
    assert 0.7 < level < 1.4  # a voice, not a gain change


def test_factor_one_and_short_input_are_unchanged():
    g = np.random.default_rng(0)
    x = g.standard_normal(4000)
    np.testing.assert_array_equal(shift_formants(x, 1.0, RATE), x)
    short = g.standard_normal(100)  # shorter than one STFT frame: nothing to shift
    np.testing.assert_array_equal(shift_formants(short, 1.1, RATE), short)


def test_no_band_without_energy_is_raised_into_a_hiss():
    """A corpus resampled to 8 kHz has next to nothing above its band edge; moving the formants
    up must not lift that floor into an audible hiss (without the gain limit it comes to -34 dB
    of the voice's energy; the STFT's own leakage of the moved voice is about -54 dB)."""
    vowel = _vowel(125.0, [(700.0, 80.0), (1200.0, 90.0), (2600.0, 120.0)])
    freqs = np.fft.rfftfreq(len(vowel), 1 / RATE)
    spectrum = np.fft.rfft(vowel)
    spectrum[freqs > 3400] = 0.0
    banded = np.fft.irfft(spectrum, len(vowel)) + 1e-6 * np.random.default_rng(0).standard_normal(len(vowel))

    def top_band_db(x):  # energy above 3.7 kHz relative to the whole
        power = np.abs(np.fft.rfft(x)) ** 2
        return 10 * np.log10(power[freqs > 3700].sum() / power.sum())

    assert top_band_db(banded) < -100
    assert top_band_db(shift_formants(banded, 1.15, RATE)) < -45


@pytest.mark.parametrize(
    "kwargs, error, match",
    [({"factor": 3.0}, ValueError, "'factor'"), ({"wave": np.zeros((2, 100))}, ValueError, r"\(time,\) array"),
     ({"sample_rate": 10}, ValueError, "'sample_rate'"), ({"lifter_ms": 0.0}, ValueError, "'lifter_ms'"),
     ({"wave": np.full(1000, np.nan)}, ValueError, "finite samples")],
)
def test_bad_arguments(kwargs, error, match):
    args = {"wave": np.zeros(1000), "factor": 1.1, "sample_rate": RATE, **kwargs}
    with pytest.raises(error, match=match):
        shift_formants(args.pop("wave"), args.pop("factor"), args.pop("sample_rate"), **args)
