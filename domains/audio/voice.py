"""Voice transformations that make new voices out of a corpus's speakers.

A speech corpus with a few dozen speakers teaches a separation network those voices rather than
separation. Speed perturbation (:class:`~domains.audio.MixtureDataset`'s ``speed_range``) moves
a voice's pitch and formants together, as a shorter or longer vocal tract with a matching pitch
would; :func:`shift_formants` moves the formants alone, so that with both every speaker stands
for a plane of (pitch, vocal tract length) voices rather than a line of them.

The method is the source-filter split of the cepstrum: per STFT frame, the low quefrencies of
the log-magnitude spectrum are the spectral envelope (the vocal tract's resonances, the
formants), the rest the fine structure (the harmonics of the pitch). The envelope is stretched
along frequency by the factor and recombined with the unchanged fine structure and the
original phases. Factors within about +-15% keep speech natural; a factor above 1 sounds like a
shorter vocal tract (a smaller speaker).
"""

from __future__ import annotations

import numpy as np
import torch

from embedseg._validation import check_float, check_int

__all__ = ["shift_formants"]

_TRUE_ENVELOPE_ITERATIONS = 8
_MAX_GAIN_DB = 20.0  # the most a bin is raised: a formant moved onto it, not a hole filled


def shift_formants(
    wave: np.ndarray, factor: float, sample_rate: int, *, n_fft: int | None = None, lifter_ms: float = 2.5
) -> np.ndarray:
    """The waveform with its formants moved by ``factor`` and its pitch and timing unchanged.

    Args:
        wave: (time,) samples.
        factor: the envelope's frequency scale: 1.1 moves a 500 Hz formant to 550 Hz.
        sample_rate: the waveform's rate in Hz.
        n_fft: the STFT size (default: 32 ms, a power of two: long enough to resolve the
            harmonics of a low voice); the hop is a quarter of it.
        lifter_ms: quefrencies below this are the envelope: below the pitch periods of adult
            voices (4 ms and more), long enough to resolve formants. Higher voices leak some
            harmonics into the envelope, so part of their pitch moves with it.

    Returns:
        (time,) float64 samples, the input's length.
    """
    owner = "shift_formants"
    check_float(factor, "factor", owner, 0.5, 2.0)
    check_int(sample_rate, "sample_rate", owner, 1000)
    check_float(lifter_ms, "lifter_ms", owner, 0.0, None, closed="neither")
    wave = np.ascontiguousarray(wave, dtype=np.float64)  # torch takes no negative strides
    if wave.ndim != 1:
        raise ValueError(f"The 'wave' parameter of {owner} must be a (time,) array. Got shape {wave.shape} instead.")
    if not np.isfinite(wave).all():
        raise ValueError(f"The 'wave' parameter of {owner} must hold finite samples. Got NaN or infinite values.")
    if n_fft is None:
        n_fft = 1 << int(round(np.log2(0.032 * sample_rate)))
    check_int(n_fft, "n_fft", owner, 16)
    if factor == 1.0 or len(wave) < n_fft:
        return wave.copy()
    hop = n_fft // 4
    window = torch.hann_window(n_fft, dtype=torch.float64)
    x = torch.from_numpy(wave)
    spec = torch.stft(x, n_fft, hop, window=window, center=True, return_complex=True)  # (freqs, frames)
    log_mag = spec.abs().clamp_min(1e-10).log()
    keep = max(1, int(round(lifter_ms * 1e-3 * sample_rate)))
    lifter = torch.zeros(n_fft, 1, dtype=torch.float64)
    lifter[:keep] = 1.0
    lifter[n_fft - keep + 1 :] = 1.0

    def smooth(log_spectrum: torch.Tensor) -> torch.Tensor:  # the low quefrencies, (freqs, frames)
        return torch.fft.rfft(torch.fft.irfft(log_spectrum, n=n_fft, dim=0) * lifter, dim=0).real

    # The "true envelope" (Robel and Rodet 2005): a cepstral smoothing runs between the
    # harmonics and under the formant peaks; raising the spectrum to the envelope where the
    # envelope is higher and smoothing again makes it ride on the harmonic peaks, so that the
    # formants are moved whole and not only their smooth part.
    target = log_mag
    for _ in range(_TRUE_ENVELOPE_ITERATIONS):
        envelope = smooth(target)
        target = torch.maximum(target, envelope)
    envelope = smooth(target)
    # the envelope read at bin / factor: a resonance at bin k moves to bin k * factor
    bins = torch.arange(envelope.shape[0], dtype=torch.float64)
    source = (bins / factor).clamp(max=envelope.shape[0] - 1)
    low = source.floor().long()
    high = (low + 1).clamp(max=envelope.shape[0] - 1)
    frac = (source - low)[:, None]
    moved = envelope[low] * (1 - frac) + envelope[high] * frac
    # Where the input has no energy (above a resampled corpus's band edge, say) the moved
    # envelope of a neighbouring band would raise leakage and noise by tens of dB: no bin
    # gains more than _MAX_GAIN_DB.
    shifted = spec * (moved - envelope).clamp(max=_MAX_GAIN_DB * np.log(10) / 20).exp()
    out = torch.istft(shifted, n_fft, hop, window=window, center=True, length=len(wave))
    return out.numpy()
