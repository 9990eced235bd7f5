"""The audio domain adapter: speech separation by deep clustering.

Items are dicts with a "mixture" (time,) waveform and, for training and evaluation, its
"sources" (n_sources, time) (what :class:`~domains.audio.MixtureDataset` yields). The adapter
computes on the device: STFT, per-utterance normalized log-magnitude features, ideal binary
mask targets, voice-activity (or magnitude) weights, padding masks. At inference it turns
cluster assignments into binary masks (or soft masks from posteriors), applies them to the
mixture's STFT and resynthesizes each source to the exact input length. The whole utterance
is clustered at once, so there is no permutation between chunks.

Bins more than ``threshold_db`` below the mixture's peak ("silent" bins) carry no training
weight, so their embeddings are arbitrary: they are left out of the clusterer's fit (the
encoded ``mask`` is valid-and-active) and then handled explicitly by ``silent_bins``.
"""

from __future__ import annotations

import itertools
import math
import os
import warnings
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from embedseg._validation import check_bool, check_choice, check_float, check_int
from embedseg.domain import Domain, EncodedBatch
from embedseg.losses import magnitude_weights, voice_activity_weights
from embedseg.networks import embeddings_of

from .audio_io import as_waveform, load_audio, resample
from .features import (
    STFTConfig,
    apply_masks,
    frame_mask,
    ideal_binary_labels,
    log_magnitude_features,
    masks_from_labels,
    masks_from_proba,
    stft,
)
from .metrics import separation_scores

# Mixtures with larger samples are scaled down for separation (and the sources back up):
# beyond ~1e17 a float32 STFT overflows; PCM-scale input (int16, int32) stays well inside.
_LARGE_SAMPLE = 1e6

__all__ = ["AudioDomain"]


# Registered lazily by embedseg.domain as "audio" -> "domains.audio:AudioDomain".
class AudioDomain(Domain):
    """Speech separation: STFT bins are the elements, speakers the parts.

    Args:
        sample_rate: the model's rate in Hz; inputs at other rates are resampled.
        n_fft: STFT window and FFT size (256 = 32 ms at 8 kHz).
        hop_length: STFT hop (64 = 8 ms at 8 kHz).
        window: "sqrt_hann" or "hann".
        weights: training weights: "voice_activity" (1 for bins within ``threshold_db`` of
            the mixture's peak), "magnitude" (Wang et al. 2018) or "none".
        threshold_db: the voice-activity threshold in dB below the peak.
        soft_masks: decode soft masks from the clusterer's posteriors (GMM, soft k-means)
            instead of binary masks from its labels.
        silent_bins: what silent bins get at decoding: "nearest" (the cluster whose center
            is closest, as the clusterer labels them) or "share" (an equal share per source).
        n_sources: sources separated by default (the clusterer's count).
        max_sources: the largest count "auto" considers.
        mask_weight: weight of the mask-inference loss when the network has a mask head
            (Chimera++); the embedding loss has weight 1.
        inference: "clusters" (deep clustering), "masks" (the mask-inference head, a fixed
            number of sources) or "auto": the head's masks for items whose source count (given,
            or found by the clusterer) is the head's, clustering for the others (another
            count, or a network without a head). Chimera++ networks separate better through
            their head (Wang et al. 2018); the embeddings still count and serve other counts.

    Example:
        >>> import embedseg
        >>> model = embedseg.load("pretrained/audio-speech-8k")  # doctest: +SKIP
        >>> sources = model.separate("mixture.wav")                # doctest: +SKIP
    """

    name: ClassVar[str] = "audio"
    default_loss: ClassVar[str] = "affinity"
    primary_metric: ClassVar[str | None] = "si_sdri"
    primary_metric_higher_is_better: ClassVar[bool] = True
    model_methods: ClassVar[tuple[str, ...]] = ("separate",)
    older_model_options: ClassVar[dict[str, Any]] = {"inference": "clusters"}

    def __init__(
        self,
        *,
        sample_rate: int = 8000,
        n_fft: int = 256,
        hop_length: int = 64,
        window: str = "sqrt_hann",
        weights: str = "voice_activity",
        threshold_db: float = 40.0,
        soft_masks: bool = False,
        silent_bins: str = "nearest",
        n_sources: int = 2,
        max_sources: int = 4,
        mask_weight: float = 1.0,
        inference: str = "auto",
    ) -> None:
        owner = "AudioDomain"
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.window = window
        self.weights = weights
        self.threshold_db = threshold_db
        self.soft_masks = soft_masks
        self.silent_bins = silent_bins
        self.n_sources = n_sources
        self.max_sources = max_sources
        self.mask_weight = mask_weight
        self.inference = inference
        self.stft_config = STFTConfig(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, window=window)
        check_choice(weights, "weights", owner, ("voice_activity", "magnitude", "none"))
        check_float(threshold_db, "threshold_db", owner, 0.0)
        check_bool(soft_masks, "soft_masks", owner)
        check_choice(silent_bins, "silent_bins", owner, ("nearest", "share"))
        check_int(n_sources, "n_sources", owner, 1)
        check_int(max_sources, "max_sources", owner, 2)
        check_float(mask_weight, "mask_weight", owner, 0.0)
        check_choice(inference, "inference", owner, ("clusters", "masks", "auto"))

    def get_config(self) -> dict[str, Any]:
        return {
            "sample_rate": self.sample_rate,
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "window": self.window,
            "weights": self.weights,
            "threshold_db": self.threshold_db,
            "soft_masks": self.soft_masks,
            "silent_bins": self.silent_bins,
            "n_sources": self.n_sources,
            "max_sources": self.max_sources,
            "mask_weight": self.mask_weight,
            "inference": self.inference,
        }

    # -- data -------------------------------------------------------------------------------------
    def collate(self, items: Sequence[Any]) -> dict[str, Any]:
        """Pad mixtures (and sources) of different lengths and counts into one batch.

        Items are dicts with "mixture" (time,) and optionally "sources" (n_sources, time), or
        bare (time,) waveforms. Returns "mixture" (batch, time), "lengths" (batch,), and with
        sources "sources" (batch, max_sources, time) (missing sources are zeros) and
        "n_sources" (batch,).
        """
        items = [it if isinstance(it, dict) else {"mixture": it} for it in items]
        for i, it in enumerate(items):
            if "mixture" not in it:
                raise ValueError(
                    f"Audio items must be dicts with a 'mixture' waveform (and 'sources' to train on), or "
                    f"bare waveforms. Item {i} has keys {sorted(map(str, it))}."
                )
        mixtures = [as_waveform(it["mixture"], "mixture").reshape(-1) for it in items]
        lengths = torch.tensor([len(m) for m in mixtures], dtype=torch.long)
        t = int(lengths.max())
        mixture = torch.zeros(len(items), t)
        for i, m in enumerate(mixtures):  # collation runs on the CPU, in loader workers
            mixture[i, : len(m)] = m
        batch: dict[str, Any] = {"mixture": mixture, "lengths": lengths}
        if all("sources" in it and it["sources"] is not None for it in items):
            srcs = [as_waveform(it["sources"], "sources") for it in items]
            for i, s in enumerate(srcs):
                if s.ndim != 2 or s.shape[1] != len(mixtures[i]):
                    raise ValueError(
                        f"'sources' of item {i} must have shape (n_sources, {len(mixtures[i])}) to match its mixture. "
                        f"Got {tuple(s.shape)} instead."
                    )
            c = max(s.shape[0] for s in srcs)
            sources = torch.zeros(len(items), c, t)
            for i, s in enumerate(srcs):
                sources[i, : s.shape[0], : s.shape[1]] = s
            batch["sources"] = sources
            batch["n_sources"] = torch.tensor([s.shape[0] for s in srcs], dtype=torch.long)
        return batch

    def encode(self, batch: dict[str, Any], device: torch.device | str) -> EncodedBatch:
        """STFT, features, IBM targets, weights and masks of a collated batch, on ``device``."""
        cfg = self.stft_config
        mixture = batch["mixture"].to(device)  # (batch, time)
        lengths = batch["lengths"].to(device)  # (batch,)
        spec = stft(mixture, cfg)  # (batch, frames, freqs)
        b, t, f = spec.shape
        valid = frame_mask(lengths, t, cfg, f)  # (batch, frames * freqs)
        magnitude = spec.abs().reshape(b, -1)  # (batch, frames * freqs)
        active = voice_activity_weights(magnitude, self.threshold_db, valid) > 0  # (batch, n)
        # An item with no active bin (digital silence) keeps all its valid bins so that the
        # clusterer still has points; separate() rejects such inputs before they get here.
        active = torch.where(active.any(1, keepdim=True), active, valid)
        features = log_magnitude_features(spec, valid)  # (batch, frames, freqs)
        labels = weights = None
        context: dict[str, Any] = {"mixture_spec": spec, "mixture": mixture, "lengths": lengths, "valid": valid, "frames": t}
        if "sources" in batch:
            sources = batch["sources"].to(device)  # (batch, n_sources, time)
            source_specs = stft(sources, cfg)  # (batch, n_sources, frames, freqs)
            labels = ideal_binary_labels(source_specs).masked_fill(~active, -1)  # (batch, n)
            context["sources"] = sources
            context["source_specs"] = source_specs
            context["n_sources"] = batch["n_sources"].to(device)
        if self.weights == "voice_activity":
            weights = active.float()
        elif self.weights == "magnitude":
            weights = magnitude_weights(magnitude, active)
        return EncodedBatch(features=features, mask=active, labels=labels, weights=weights, context=context)

    # -- model --------------------------------------------------------------------------------------
    def network_spec(self, name: str | None = None, **params: Any) -> dict[str, Any]:
        """The compact BLSTM ("dc_compact") by default; "dc_blstm" is the paper's network."""
        from . import networks  # noqa: F401  (registers the audio networks)

        params = {"n_freqs": self.stft_config.n_freqs, **params}
        return {"name": name or "dc_compact", "params": params}

    def clusterer_spec(self) -> dict[str, Any]:
        return {"name": "kmeans", "params": {"n_clusters": self.n_sources, "max_clusters": self.max_sources, "n_init": 3, "seed": 0}}

    def compute_loss(self, output: Any, batch: EncodedBatch, loss: str) -> torch.Tensor:
        """The embedding loss, plus the Chimera++ mask-inference loss when the network has a mask
        head: permutation-invariant L1 between masked mixture magnitudes and the sources'
        truncated phase-sensitive magnitudes, over active bins, relative to the mixture's mean
        magnitude."""
        total = super().compute_loss(output, batch, loss)
        if not isinstance(output, dict) or "masks" not in output or self.mask_weight == 0:
            return total
        return total + self.mask_weight * self._mask_loss(output["masks"], batch)

    def _mask_loss(self, masks: torch.Tensor, batch: EncodedBatch) -> torch.Tensor:
        """Permutation-invariant truncated phase-sensitive L1 loss of mask estimates."""
        spec = batch.context["mixture_spec"]  # (batch, frames, freqs)
        src = batch.context["source_specs"]  # (batch, n_sources, frames, freqs)
        b, c = masks.shape[:2]
        mix_mag = spec.abs()[:, None]  # (batch, 1, frames, freqs)
        cos = torch.cos(torch.angle(src) - torch.angle(spec)[:, None])
        target = (src.abs() * cos).clamp_min(0)
        target = torch.minimum(target, mix_mag)  # (batch, n_sources, frames, freqs)
        if target.shape[1] < c:  # fewer sources than masks: the extra masks should be empty
            target = torch.nn.functional.pad(target, (0, 0, 0, 0, 0, c - target.shape[1]))
        target = target[:, :c]
        est = masks * mix_mag  # (batch, C, frames, freqs)
        w = batch.mask.reshape(b, 1, *spec.shape[1:]).float()  # (batch, 1, frames, freqs)
        scale = (mix_mag * w).sum((1, 2, 3)) / w.sum((1, 2, 3)).clamp_min(1)  # (batch,)
        perms = torch.tensor(list(itertools.permutations(range(c))), device=masks.device)  # (P, C)
        # pairwise error of estimate i against target j: (batch, C, C)
        err = ((est[:, :, None] - target[:, None]).abs() * w[:, None]).sum((3, 4))
        per_perm = err[:, torch.arange(c, device=masks.device), perms].sum(-1)  # (batch, P)
        best = per_perm.min(dim=1).values / (w.sum((1, 2, 3)) * c).clamp_min(1)
        return (best / scale.clamp_min(1e-8)).mean()

    # -- inference ------------------------------------------------------------------------------------
    def decode(
        self,
        batch: EncodedBatch,
        labels: torch.Tensor,
        proba: torch.Tensor | None,
        embeddings: torch.Tensor,
    ) -> list[torch.Tensor]:
        """Masks from the clustering, applied to the mixture and resynthesized.

        Returns:
            one (n_sources_b, length_b) float waveform tensor per item, where n_sources_b is
            the number of clusters found in item b.
        """
        ctx = batch.context
        spec = ctx["mixture_spec"]  # (batch, frames, freqs)
        b, t, f = spec.shape
        valid = ctx["valid"]  # (batch, n)
        output = ctx.get("network_output")
        if self.inference == "masks":
            if not isinstance(output, dict) or "masks" not in output:
                raise ValueError("inference='masks' needs a network with a mask head (mask_sources > 0).")
            masks = output["masks"].float()  # (batch, C, frames, freqs)
            counts = torch.full((b,), masks.shape[1], dtype=torch.long, device=spec.device)
        else:
            counts = (labels.masked_fill(~batch.mask, -1).amax(dim=1) + 1).clamp_min(1)  # (batch,)
            k = int(counts.max())
            if self.soft_masks and proba is not None:
                masks = masks_from_proba(proba, k, t, f)  # (batch, k, frames, freqs)
            else:
                masks = masks_from_labels(labels, k, t, f)  # (batch, k, frames, freqs)
            if self.silent_bins == "share":
                silent = (valid & ~batch.mask).reshape(b, 1, t, f)
                share = (torch.arange(k, device=spec.device)[None, :] < counts[:, None]).float() / counts[:, None]
                masks = torch.where(silent, share[:, :, None, None], masks)
            if self.inference == "auto" and isinstance(output, dict) and "masks" in output:
                head = output["masks"].float()  # (batch, C, frames, freqs)
                use_head = counts == head.shape[1]  # (batch,)
                if bool(use_head.any()):
                    slots = max(k, head.shape[1])
                    masks = torch.where(
                        use_head[:, None, None, None],
                        _pad_sources(head, slots),
                        _pad_sources(masks, slots),
                    )  # (batch, slots, frames, freqs)
        waves = apply_masks(masks, spec, ctx["mixture"].shape[-1], self.stft_config)  # (batch, k, time)
        lengths = ctx["lengths"].tolist()
        return [waves[i, : int(counts[i]), : lengths[i]] for i in range(b)]

    def metrics(self, outputs: Sequence[torch.Tensor], batch: EncodedBatch) -> dict[str, float]:
        """Batch means of SDR, SDRi (BSS-Eval v3), SI-SDR, SI-SDRi over sources, and the
        accuracy of the number of separated sources. Missing estimates (fewer clusters than
        sources) count as the unprocessed mixture."""
        ctx = batch.context
        if "sources" not in ctx:
            return {}
        sums = {"sdr": 0.0, "sdri": 0.0, "si_sdr": 0.0, "si_sdri": 0.0, "count_accuracy": 0.0}
        n = len(outputs)
        for i, est in enumerate(outputs):  # items differ in length and count; not a training path
            length = int(ctx["lengths"][i])
            c = int(ctx["n_sources"][i])
            ref = ctx["sources"][i, :c, :length][None].double()  # (1, c, time)
            mix = ctx["mixture"][i, :length][None].double()  # (1, time)
            e = est[None].double()
            if e.shape[1] < c:
                e = torch.cat([e, mix[:, None].expand(1, c - e.shape[1], length)], dim=1)
            scores = separation_scores(ref, e, mix)
            for key in ("sdr", "sdri", "si_sdr", "si_sdri"):
                sums[key] += float(scores[key].mean())
            sums["count_accuracy"] += float(est.shape[0] == c)
        return {k: v / n for k, v in sums.items()}

    def predict(self, model: Any, x: Any, **options: Any) -> Any:
        """Same as :meth:`separate`."""
        return self.separate(model, x, **options)

    def separate(
        self,
        model: Any,
        mixture: Any,
        n_sources: int | str | None = None,
        sample_rate: int | None = None,
        batch_size: int = 8,
    ) -> Any:
        """Separate a mixture into its sources (``model.separate(...)``).

        Args:
            model: the :class:`embedseg.Model` (passed for you by ``model.separate``).
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
        from embedseg._validation import check_int as _ci

        owner = "separate"
        as_numpy = isinstance(mixture, np.ndarray)
        if isinstance(mixture, (str, os.PathLike)):
            wave, rate = load_audio(mixture)
            if sample_rate is not None:
                _ci(sample_rate, "sample_rate", owner, 1000)
            if sample_rate is not None and sample_rate != rate:
                raise ValueError(f"'sample_rate' ({sample_rate}) contradicts the file's own rate ({rate}); leave it out for files.")
        else:
            wave = as_waveform(mixture, "mixture")
            rate = self.sample_rate if sample_rate is None else _ci(sample_rate, "sample_rate", owner, 1000)
        if wave.ndim not in (1, 2):
            raise ValueError(f"'mixture' must be (time,) or (batch, time). Got shape {tuple(wave.shape)} instead.")
        single = wave.ndim == 1
        waves = wave[None] if single else wave  # (batch, time)
        if waves.shape[0] == 0:
            raise ValueError(f"'mixture' must hold at least one mixture. Got an empty batch of shape {tuple(wave.shape)}.")
        if n_sources is None or n_sources == "auto":
            k: int | str = "auto"
        else:
            k = _ci(n_sources, "n_sources", owner, 1)
        _ci(batch_size, "batch_size", owner, 1)
        length = waves.shape[-1]
        min_len = math.ceil(self.n_fft * rate / self.sample_rate)
        if length < min_len:
            hint = (
                f" A {tuple(wave.shape)} array reads as {waves.shape[0]} mixtures of {length} samples: for a "
                f"(time, channels) recording pass a (time,) signal or its transpose."
                if not single and waves.shape[0] >= min_len else ""
            )
            raise ValueError(
                f"'mixture' must be at least one STFT frame long: {self.n_fft} samples at {self.sample_rate} Hz "
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
                stacklevel=3,
            )
        # Separation is linear in the mixture (masks come from per-utterance normalized features),
        # so very large sample values are scaled down for the computation, and the sources back
        # up, instead of overflowing float32 in the STFT.
        peak = waves.abs().amax(-1, keepdim=True)  # (batch, 1)
        scale = torch.where(peak > _LARGE_SAMPLE, peak, torch.ones_like(peak))
        x = resample(waves / scale, rate, self.sample_rate)  # (batch, time at the model's rate)
        outs: list[torch.Tensor] = []
        for start in range(0, x.shape[0], batch_size):  # bounded memory for long batches
            chunk = x[start : start + batch_size]
            batch = self.collate([c for c in chunk])
            encoded = self.encode(batch, model.device)
            if isinstance(k, int):
                n_active = encoded.mask.sum(1)
                if bool((n_active < k).any()):
                    raise ValueError(
                        f"'n_sources' ({k}) is more than the input can hold: a mixture has only "
                        f"{int(n_active.min())} active time-frequency bins."
                    )
            output = model.embed(encoded)
            encoded.context["network_output"] = output
            embeddings = embeddings_of(output)
            labels, proba = model.cluster(embeddings, encoded.mask, k)
            outs.extend(self.decode(encoded, labels, proba, embeddings))
        k_max = max(o.shape[0] for o in outs)
        result = torch.zeros(len(outs), k_max, length)
        for i, o in enumerate(outs):
            back = resample(o.detach().cpu(), self.sample_rate, rate)[:, :length]  # (k, <= length)
            result[i, : o.shape[0], : back.shape[-1]] = back * scale[i]
        result = result[0] if single else result
        return result.numpy() if as_numpy else result

    # -- data from the command line ------------------------------------------------------------------
    def load_dataset(self, path: str, split: str) -> Any:
        """A :class:`~domains.audio.MixtureDataset` over ``path`` (``root/<speaker>/*.wav``); the
        split's speakers come from ``path/splits.json`` when it exists. Training mixtures vary
        per index; validation and test mixtures are fixed by their seed."""
        from .dataset import MixtureDataset

        has_splits = Path(path, "splits.json").is_file()
        seed = {"train": 0, "valid": 1, "test": 2}.get(split, 0)
        n = 20000 if split == "train" else 200
        return MixtureDataset(
            path, n_sources=self.n_sources, sample_rate=self.sample_rate, segment_seconds=None if split != "train" else 2.0,
            seed=seed, n_mixtures=n, split=split if has_splits else None,
        )

    @classmethod
    def add_cli_commands(cls, subparsers: Any) -> None:
        """``embedseg separate MODEL FILE... --out DIR [--n-sources K|auto]`` and
        ``embedseg data speech --out DIR``."""
        from .cli import add_commands

        add_commands(subparsers)


def _pad_sources(masks: torch.Tensor, slots: int) -> torch.Tensor:
    """(batch, C, frames, freqs) masks with zero masks appended up to ``slots`` sources."""
    return torch.nn.functional.pad(masks, (0, 0, 0, 0, 0, slots - masks.shape[1]))
