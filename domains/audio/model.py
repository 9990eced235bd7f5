"""Trained speech-separation models: :class:`AudioModel` adds ``separate`` to :class:`embedseg.Model`."""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import numpy as np
import torch

from embedseg._validation import check_int
from embedseg.model import Model

from .audio_io import as_waveform, load_audio, resample

__all__ = ["AudioModel"]


class AudioModel(Model):
    """A trained model of the audio domain (what :func:`embedseg.fit` returns for
    ``domain="audio"`` and :func:`embedseg.load` gives for such a folder).

    Example:
        >>> import embedseg
        >>> model = embedseg.load("pretrained/audio-speech-8k")  # doctest: +SKIP
        >>> sources = model.separate("mixture.wav")                # doctest: +SKIP
    """

    def separate(
        self,
        mixture: Any,
        n_sources: int | str | None = None,
        sample_rate: int | None = None,
        batch_size: int = 8,
    ) -> Any:
        """Separate a mixture into its sources.

        Args:
            mixture: a (time,) or (batch, time) tensor or array, or an audio file path (a
                multichannel file is downmixed with a warning).
            n_sources: sources to extract: an int, or None / "auto" to estimate the count per
                mixture (between 2 and ``max_sources``).
            sample_rate: the rate of an array or tensor input (default: the model's rate); a
                file's own rate is read from it. The output has the input's rate and length.
            batch_size: mixtures processed together.

        Returns:
            (n_sources, time) for one mixture, (batch, n_sources, time) for a batch (with
            "auto", items with fewer sources are padded with silent ones); a NumPy array for
            an array input, else a tensor.

        Raises:
            ValueError: NaN or infinite samples, a silent or constant mixture, input shorter
                than one STFT frame, or more sources requested than the input has active
                time-frequency bins.
            TypeError: an input of the wrong type.
        """
        domain = self.domain
        owner = "separate"
        as_numpy = isinstance(mixture, np.ndarray)
        if isinstance(mixture, (str, os.PathLike)):
            wave, rate = load_audio(mixture)
            if sample_rate is not None:
                check_int(sample_rate, "sample_rate", owner, 1000)
            if sample_rate is not None and sample_rate != rate:
                raise ValueError(f"'sample_rate' ({sample_rate}) contradicts the file's own rate ({rate}); leave it out for files.")
        else:
            wave = as_waveform(mixture, "mixture")
            rate = domain.sample_rate if sample_rate is None else check_int(sample_rate, "sample_rate", owner, 1000)
        if wave.ndim not in (1, 2):
            raise ValueError(f"'mixture' must be (time,) or (batch, time). Got shape {tuple(wave.shape)} instead.")
        single = wave.ndim == 1
        waves = wave[None] if single else wave  # (batch, time)
        if waves.shape[0] == 0:
            raise ValueError(f"'mixture' must hold at least one mixture. Got an empty batch of shape {tuple(wave.shape)}.")
        if n_sources is None or n_sources == "auto":
            k: int | str = "auto"
        else:
            k = check_int(n_sources, "n_sources", owner, 1)
        check_int(batch_size, "batch_size", owner, 1)
        length = waves.shape[-1]
        min_len = math.ceil(domain.n_fft * rate / domain.sample_rate)
        if length < min_len:
            hint = (
                f" A {tuple(wave.shape)} array reads as {waves.shape[0]} mixtures of {length} samples: for a "
                f"(time, channels) recording pass a (time,) signal or its transpose."
                if not single and waves.shape[0] >= min_len else ""
            )
            raise ValueError(
                f"'mixture' must be at least one STFT frame long: {domain.n_fft} samples at {domain.sample_rate} Hz "
                f"({min_len} at {rate} Hz). Got {length} samples.{hint}"
            )
        spread = waves.amax(-1) - waves.amin(-1)  # (batch,)
        if bool((spread == 0).any()):
            i = int(torch.nonzero(spread == 0)[0])
            raise ValueError(f"'mixture' item {i} is silent or constant; there is nothing to separate.")
        # Clipping leaves flat tops: runs of samples exactly at the signal's own peak. Looking
        # for runs rather than for full scale also catches audio clipped and then scaled down,
        # and leaves alone a clean signal that merely touches full scale.
        mag = waves.abs()
        at_peak = mag == mag.amax(-1, keepdim=True)  # (batch, time)
        flat_top = at_peak[:, :-2] & at_peak[:, 1:-1] & at_peak[:, 2:]  # (batch, time - 2)
        if bool((flat_top.float().mean(-1) > 1e-3).any()):
            warnings.warn(
                "The mixture looks clipped (many runs of samples flat at its peak); separation "
                "quality will suffer.",
                stacklevel=2,
            )
        x = resample(waves, rate, domain.sample_rate)  # (batch, time at the model's rate)
        engine = self.engine()
        outs: list[torch.Tensor] = []
        for start in range(0, x.shape[0], batch_size):  # bounded memory for long batches
            encoded = engine.encode(domain.collate([c for c in x[start : start + batch_size]]))
            if isinstance(k, int):
                n_active = encoded.mask.sum(1)
                if bool((n_active < k).any()):
                    raise ValueError(
                        f"'n_sources' ({k}) is more than the input can hold: a mixture has only "
                        f"{int(n_active.min())} active time-frequency bins."
                    )
            outs.extend(engine.predict_encoded(encoded, k))
        k_max = max(o.shape[0] for o in outs)
        result = torch.zeros(len(outs), k_max, length)
        for i, o in enumerate(outs):
            back = resample(o.detach().cpu(), domain.sample_rate, rate)[:, :length]  # (k, <= length)
            result[i, : o.shape[0], : back.shape[-1]] = back
        result = result[0] if single else result
        return result.numpy() if as_numpy else result

    def predict(self, x: Any, **options: Any) -> Any:
        """Same as :meth:`separate`."""
        return self.separate(x, **options)
