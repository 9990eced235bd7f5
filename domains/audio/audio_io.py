"""Reading, writing and resampling audio, with clear messages for bad input."""

from __future__ import annotations

import functools
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embedseg.errors import require
from embedseg.io import atomic_write_with

__all__ = ["load_audio", "save_audio", "resample", "resample_array", "resample_span", "resampled_length", "as_waveform"]


def resample(wave: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Resample (..., time) to ``new_rate`` with a polyphase anti-aliasing filter.

    The output has ``ceil(time * new_rate / orig_rate)`` samples.
    """
    if orig_rate == new_rate:
        return wave
    out = resample_array(wave.detach().cpu().double().numpy(), orig_rate, new_rate)
    return torch.as_tensor(out, dtype=wave.dtype if wave.is_floating_point() else torch.float32, device=wave.device)


def resample_array(x: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """:func:`resample` of a float64 (..., time) array, without tensors."""
    signal = require("scipy.signal", "audio")
    up, down = _ratio(orig_rate, new_rate)
    if up == down:
        return x
    # The filter resample_poly would design itself (its default Kaiser window), designed once
    # per ratio: designing it took as long as filtering a training segment.
    return signal.resample_poly(x, up, down, axis=-1, window=_lowpass(up, down))


def resampled_length(n: int, orig_rate: int, new_rate: int) -> int:
    """Samples :func:`resample` gives for ``n`` input samples: ceil(n * new_rate / orig_rate)."""
    up, down = _ratio(orig_rate, new_rate)
    return -(-n * up // down)


def resample_span(x: Any, orig_rate: int, new_rate: int, start: int, stop: int) -> np.ndarray:
    """``resample_array(x, orig_rate, new_rate)[start:stop]`` from a slice of ``x``.

    ``x`` is a 1-D float64 array, or anything with a length whose slices are such arrays (a
    file read on demand).

    Each output sample depends on the input samples under the filter's half length around it
    only, and the slice starts at a multiple of ``down`` (the filter then meets its samples in
    the same phases), so the samples are those of resampling the whole signal, bit for bit, at
    a cost proportional to ``stop - start``: a training segment of a long utterance.
    """
    up, down = _ratio(orig_rate, new_rate)
    if up == down:
        return x[start:stop]
    n = len(x)
    margin = (10 * max(up, down)) // up + down + 2  # input samples under half the filter, and some
    first = max(0, (start * down // up - margin) // down) * down  # a multiple of down
    last = min(n, -(-stop * down // up) + margin)
    if first == 0 and last == n:
        return resample_array(np.asarray(x[0:n]), orig_rate, new_rate)[start:stop]
    signal = require("scipy.signal", "audio")
    y = signal.resample_poly(x[first:last], up, down, window=_lowpass(up, down))
    offset = first // down * up  # the output index of the slice's first sample
    return y[start - offset : stop - offset]


def _ratio(orig_rate: int, new_rate: int) -> tuple[int, int]:
    """(up, down) of a rate change, in lowest terms."""
    g = math.gcd(int(orig_rate), int(new_rate))
    return int(new_rate) // g, int(orig_rate) // g


@functools.lru_cache(maxsize=64)
def _lowpass(up: int, down: int) -> np.ndarray:
    """The anti-aliasing filter of scipy.signal.resample_poly for (up, down), float64."""
    signal = require("scipy.signal", "audio")
    max_rate = max(up, down)
    h = signal.firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0))
    h.setflags(write=False)  # shared between calls (resample_poly copies it)
    return h


def load_audio(path: str | os.PathLike, sample_rate: int | None = None) -> tuple[torch.Tensor, int]:
    """Read a mono waveform from a file (wav, flac, ogg: what libsndfile reads).

    Multichannel files are downmixed to mono with a warning.

    Args:
        path: the file.
        sample_rate: resample to this rate; None keeps the file's.

    Returns:
        (waveform (time,) float32, rate).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file cannot be decoded as audio.
    """
    sf = require("soundfile", "audio")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Audio file not found: '{path}'.")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (time, channels)
    except Exception as exc:  # libsndfile raises its own error type
        raise ValueError(f"Could not read '{path}' as audio: {exc}") from exc
    if data.shape[1] > 1:
        warnings.warn(f"'{path}' has {data.shape[1]} channels; downmixing to mono by averaging.", stacklevel=2)
    wave = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))
    if sample_rate is not None and sample_rate != rate:
        wave = resample(wave, rate, sample_rate)
        rate = sample_rate
    return wave, int(rate)


def save_audio(path: str | os.PathLike, wave: Any, sample_rate: int) -> None:
    """Write a (time,) or (channels, time) waveform as 16-bit PCM, scaled down if it would clip;
    the file appears only once completely written."""
    sf = require("soundfile", "audio")
    x = torch.as_tensor(wave).detach().cpu().float().numpy()
    peak = float(np.abs(x).max()) if x.size else 0.0
    if peak > 1.0:
        x = x / peak * 0.99
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    data = x.T if x.ndim == 2 else x
    # Through a temporary file with the same suffix (soundfile picks the format from it): an
    # interrupted write leaves no truncated file under the final name.
    atomic_write_with(path, lambda tmp: sf.write(tmp, data, int(sample_rate), subtype="PCM_16"))


def as_waveform(x: Any, name: str = "mixture") -> torch.Tensor:
    """A float32 tensor from a tensor or array, rejecting what no model can separate."""
    if isinstance(x, np.ndarray):
        if not np.issubdtype(x.dtype, np.number):
            raise TypeError(f"'{name}' must be a numeric array. Got dtype {x.dtype} instead.")
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"'{name}' must be a tensor, an array or a file path. Got {type(x).__name__} instead.")
    if x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"'{name}' must be real-valued. Got dtype {x.dtype} instead.")
    if x.dtype == torch.uint8:
        # Unsigned bytes are how images come, not audio: 8-bit PCM is read from files as float,
        # and arrays of samples are float or signed integers (int16, int32).
        raise TypeError(
            f"'{name}' must hold audio samples (float, or signed integer PCM such as int16). Got an "
            f"array of unsigned bytes (uint8) of shape {tuple(x.shape)}, which looks like an image."
        )
    x = x.float()
    if not bool(torch.isfinite(x).all()):
        n_bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"'{name}' must contain only finite values. Got {n_bad} NaN or infinite samples.")
    return x
