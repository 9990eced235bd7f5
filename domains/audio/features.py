"""Time-frequency features, training targets and mask decoding, batched on the device.

Everything here takes batched tensors, runs where they live (CPU or GPU) and never loops over
the batch in Python. Conventions:

* waveforms are (batch, time) float; sources are (batch, n_sources, time);
* spectrograms are (batch, frames, freqs) complex, frames first, so that a network reads
  them as sequences and the flattened bin index is ``frame * n_freqs + freq``;
* variable-length batches carry ``lengths`` (batch,) in samples; bins of padding frames are
  masked out everywhere.

The defaults follow Hershey et al. (2015): 8 kHz audio, a 32 ms (256-point) sqrt-Hann window,
an 8 ms (64-sample) hop, log-magnitude features normalized per utterance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from embedseg._validation import check_choice, check_float, check_int, check_tensor

__all__ = [
    "STFTConfig",
    "stft",
    "istft",
    "n_frames",
    "frame_mask",
    "log_magnitude_features",
    "ideal_binary_labels",
    "ideal_ratio_masks",
    "masks_from_labels",
    "masks_from_proba",
    "apply_masks",
]


@dataclass(frozen=True)
class STFTConfig:
    """Short-time Fourier transform settings.

    Attributes:
        sample_rate: the rate (Hz) the transform expects.
        n_fft: window length and FFT size in samples (256 = 32 ms at 8 kHz).
        hop_length: hop between frames in samples (64 = 8 ms at 8 kHz).
        window: "sqrt_hann" (perfect reconstruction with the same window at synthesis) or
            "hann".
    """

    sample_rate: int = 8000  # Hz
    n_fft: int = 256  # samples per window
    hop_length: int = 64  # samples between frames
    window: str = "sqrt_hann"  # analysis and synthesis window

    def __post_init__(self) -> None:
        check_int(self.sample_rate, "sample_rate", "STFTConfig", 1000)
        check_int(self.n_fft, "n_fft", "STFTConfig", 16)
        check_int(self.hop_length, "hop_length", "STFTConfig", 1, self.n_fft)
        check_choice(self.window, "window", "STFTConfig", ("sqrt_hann", "hann"))

    @property
    def n_freqs(self) -> int:
        """Number of frequency bins (n_fft // 2 + 1)."""
        return self.n_fft // 2 + 1

    def make_window(self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The analysis/synthesis window on ``device``."""
        w = torch.hann_window(self.n_fft, periodic=True, device=device, dtype=dtype)
        return w.sqrt() if self.window == "sqrt_hann" else w


def n_frames(lengths: torch.Tensor | int, config: STFTConfig) -> torch.Tensor | int:
    """Frames a centered STFT gives for signals of ``lengths`` samples (1 + length // hop)."""
    return 1 + lengths // config.hop_length


def stft(wave: torch.Tensor, config: STFTConfig = STFTConfig()) -> torch.Tensor:
    """Complex STFT of a batch of waveforms.

    Args:
        wave: (batch, time) or (batch, channels, time) float waveforms.
        config: STFT settings.

    Returns:
        complex tensor (batch, frames, freqs), or (batch, channels, frames, freqs).

    Raises:
        ValueError: when the signal is shorter than one window.
    """
    wave = check_tensor(wave, "wave", ndim=(2, 3), floating=True, what="(batch, [channels,] time)")
    if wave.shape[-1] < config.n_fft // 2 + 1:
        raise ValueError(
            f"'wave' must be at least {config.n_fft // 2 + 1} samples long (half an analysis "
            f"window of {config.n_fft}). Got {wave.shape[-1]} samples."
        )
    lead = wave.shape[:-1]
    flat = wave.reshape(-1, wave.shape[-1])  # (batch * channels, time)
    spec = torch.stft(
        flat.float(),
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        window=config.make_window(wave.device),
        center=True,
        pad_mode="constant",
        return_complex=True,
    )  # (batch * channels, freqs, frames)
    return spec.transpose(-1, -2).reshape(*lead, spec.shape[-1], spec.shape[-2])


def istft(spec: torch.Tensor, length: int, config: STFTConfig = STFTConfig()) -> torch.Tensor:
    """Inverse of :func:`stft`, trimmed or padded to exactly ``length`` samples.

    Args:
        spec: complex (..., frames, freqs).
        length: output length in samples.
        config: STFT settings used for the analysis.

    Returns:
        float tensor (..., length).
    """
    lead = spec.shape[:-2]
    flat = spec.reshape(-1, spec.shape[-2], spec.shape[-1]).transpose(-1, -2)  # (n, freqs, frames)
    wave = torch.istft(
        flat,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        window=config.make_window(spec.device),
        center=True,
        length=int(length),
    )  # (n, length)
    return wave.reshape(*lead, wave.shape[-1])


def frame_mask(lengths: torch.Tensor, frames: int, config: STFTConfig, n_freqs: int) -> torch.Tensor:
    """Bins that belong to the signal, not to batch padding.

    Args:
        lengths: (batch,) int64 signal lengths in samples.
        frames: number of frames of the padded batch.
        config: STFT settings.
        n_freqs: frequency bins per frame.

    Returns:
        (batch, frames * n_freqs) bool.
    """
    valid = n_frames(lengths, config).clamp_max(frames)  # (batch,)
    t = torch.arange(frames, device=lengths.device)  # (frames,)
    per_frame = t[None, :] < valid[:, None]  # (batch, frames)
    return per_frame[:, :, None].expand(-1, -1, n_freqs).reshape(lengths.shape[0], -1)


def log_magnitude_features(
    spec: torch.Tensor,
    mask: torch.Tensor | None = None,
    floor_db: float = 80.0,
    *,
    magnitude: torch.Tensor | None = None,
) -> torch.Tensor:
    """Log-magnitude features normalized to zero mean, unit variance per utterance.

    Magnitudes below ``floor_db`` under the utterance's maximum are floored first, so that
    digital silence (exact zeros) does not dominate the statistics.

    Args:
        spec: complex (batch, frames, freqs).
        mask: (batch, frames * freqs) bool valid bins; None = all.
        floor_db: dynamic range kept below each utterance's peak, in dB.
        magnitude: ``spec.abs()`` when the caller has it already (the complex modulus is
            one of the costlier steps of encoding a batch).

    Returns:
        float (batch, frames, freqs); padding frames are zero.
    """
    b, t, f = spec.shape
    mag = spec.abs() if magnitude is None else magnitude.reshape(b, t, f)  # (batch, frames, freqs)
    if mask is None:  # every bin counts: the same sums without copying through masks
        def keep(x: torch.Tensor) -> torch.Tensor:
            return x

        count: torch.Tensor | int = max(1, t * f)
    else:
        padding = ~mask.reshape(b, t, f)

        def keep(x: torch.Tensor) -> torch.Tensor:
            return x.masked_fill(padding, 0)

        count = (~padding).sum(dim=(1, 2), keepdim=True).clamp_min(1)
    peak = keep(mag).amax(dim=(1, 2), keepdim=True)  # (batch, 1, 1)
    floor = (peak * 10 ** (-floor_db / 20)).clamp_min(1e-10)
    logmag = torch.log(torch.maximum(mag, floor))  # (batch, frames, freqs)
    mean = keep(logmag).sum(dim=(1, 2), keepdim=True) / count
    var = keep((logmag - mean) ** 2).sum(dim=(1, 2), keepdim=True) / count
    out = (logmag - mean) / var.sqrt().clamp_min(1e-5)
    return keep(out)


def ideal_binary_labels(source_specs: torch.Tensor) -> torch.Tensor:
    """Integer targets: the index of the dominant source in each bin (the ideal binary mask).

    Args:
        source_specs: complex (batch, n_sources, frames, freqs).

    Returns:
        int64 (batch, frames * freqs).
    """
    b = source_specs.shape[0]
    mag = source_specs.abs()  # (batch, n_sources, frames, freqs)
    # argmax(dim=1) as a running comparison over the few sources: torch's argmax along a short
    # strided dimension took longer than the STFTs of the batch. Ties go to the first source
    # and NaN wins, as with argmax.
    best, labels = mag[:, 0], torch.zeros(mag.shape[:1] + mag.shape[2:], dtype=torch.long, device=mag.device)
    for c in range(1, mag.shape[1]):
        m = mag[:, c]
        take = (m > best) | (m.isnan() & ~best.isnan())
        labels.masked_fill_(take, c)
        best = torch.where(take, m, best)
    return labels.reshape(b, -1)  # (batch, frames * freqs)


def ideal_ratio_masks(source_specs: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Ideal ratio masks |S_c| / sum_k |S_k| (batch, n_sources, frames, freqs)."""
    mag = source_specs.abs()  # (batch, n_sources, frames, freqs)
    return mag / mag.sum(dim=1, keepdim=True).clamp_min(eps)


def masks_from_labels(labels: torch.Tensor, n_sources: int, frames: int, n_freqs: int) -> torch.Tensor:
    """Binary masks (batch, n_sources, frames, freqs) from (batch, frames * freqs) labels.

    Labels outside [0, n_sources) (e.g. -1) give an all-zero column.
    """
    check_int(n_sources, "n_sources", "masks_from_labels", 1)
    b = labels.shape[0]
    k = torch.arange(n_sources, device=labels.device)  # (n_sources,)
    masks = labels[:, None, :] == k[None, :, None]  # (batch, n_sources, frames * freqs)
    return masks.to(torch.float32).reshape(b, n_sources, frames, n_freqs)


def masks_from_proba(proba: torch.Tensor, n_sources: int, frames: int, n_freqs: int) -> torch.Tensor:
    """Soft masks (batch, n_sources, frames, freqs) from (batch, frames * freqs, k) posteriors."""
    b = proba.shape[0]
    p = proba[..., :n_sources]
    if p.shape[-1] < n_sources:  # fewer columns than sources: the rest get nothing
        p = torch.nn.functional.pad(p, (0, n_sources - p.shape[-1]))
    return p.transpose(1, 2).reshape(b, n_sources, frames, n_freqs).float()


def apply_masks(
    masks: torch.Tensor, mixture_spec: torch.Tensor, length: int, config: STFTConfig = STFTConfig()
) -> torch.Tensor:
    """Mask the mixture's STFT and resynthesize each source to exactly ``length`` samples.

    Args:
        masks: (batch, n_sources, frames, freqs) in [0, 1].
        mixture_spec: complex (batch, frames, freqs).
        length: output length in samples.
        config: STFT settings of the analysis.

    Returns:
        (batch, n_sources, length) float waveforms.
    """
    b, c = masks.shape[:2]
    out = torch.empty(b, c, length, dtype=mixture_spec.real.dtype, device=mixture_spec.device)
    for k in range(c):  # one source at a time: the inverse STFT's frames of a long input are large
        est = masks[:, k].to(mixture_spec.real.dtype) * mixture_spec  # (batch, frames, freqs)
        out[:, k] = istft(est, length, config)
    return out


def check_snr_range(value: Any, name: str, owner: str) -> tuple[float, float]:
    """A (low, high) pair of dB values with low <= high."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"The '{name}' parameter of {owner} must be a (low, high) pair of dB values. Got {value!r} instead.")
    low = check_float(value[0], name, owner)
    high = check_float(value[1], name, owner)
    if low > high:
        raise ValueError(f"The '{name}' parameter of {owner} must have low <= high. Got {value!r} instead.")
    return low, high
