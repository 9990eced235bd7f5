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
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from embedseg._validation import check_bool, check_choice, check_float, check_int
from embedseg.domain import Domain, EncodedBatch
from embedseg.inference import INT8_SCALE
from embedseg.losses import magnitude_weights, voice_activity_weights
from embedseg.networks import embeddings_of

from .audio_io import as_waveform
from .features import (
    STFTConfig,
    frame_mask,
    ideal_binary_labels,
    istft,
    log_magnitude_features,
    n_frames,
    stft,
)

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
        threshold_db: the voice-activity threshold in dB below the peak: the active bins, which
            train and which the clusterer is fitted on (unless ``cluster_threshold_db``).
        cluster_threshold_db: at inference, fit the clusterer on the active bins within this
            many dB of the mixture's peak only (None: on every active bin). Every bin still gets
            its mask from the fitted clusters. A tighter threshold than training's puts the
            centers where the talkers' energy is, which is what the separated waveforms are
            made of (an item with fewer than ``CLUSTER_MIN_BINS`` such bins keeps them all).
        soft_masks: decode soft masks from the clusterer's posteriors (GMM, soft k-means)
            instead of binary masks from its labels.
        silent_bins: what silent bins get at decoding: "nearest" (the cluster whose center
            is closest, as the clusterer labels them) or "share" (an equal share per source).
        n_sources: sources separated by default (the clusterer's count).
        max_sources: the largest count "auto" considers.
        mask_weight: weight of the mask-inference loss when the network has a mask head
            (Chimera++); the embedding loss has weight 1.
        cross_mixture_weight: weight of the embedding loss taken once more over all the
            batch's mixtures at once, every talker of every mixture a class of its own. The
            network embeds each mixture alone, so it can keep one mixture's talkers apart from
            another's only by their voices: the embeddings must say who talks, not which of
            the two talkers. Per-mixture losses alone let a network put every mixture in one
            shared plane ("first" and "second" talker), where k-means finds no third talker,
            cannot count, and a voice can change sides over time. A voice drawn into two
            mixtures of one batch counts as two classes (speed and channel usually differ
            between them; with the recipe's mixes 8% of batches of 2 have such a repeat, 37%
            of batches of 4). The term is part of the training and validation loss, so loss
            values of runs with different weights do not compare. 0: off.
        inference: "clusters" (deep clustering), "masks" (the mask-inference head, a fixed
            number of sources) or "auto": the head's masks for items whose source count (given,
            or found by the clusterer) is the head's, clustering for the others (another
            count, or a network without a head). Chimera++ networks separate better through
            their head on the speakers of their training corpus (Wang et al. 2018); on new
            speakers, soft masks from the clusters (``soft_masks`` with a soft k-means, and
            ``cluster_threshold_db``) can do better, as for the shipped speech model, so
            measure both on held-out voices.
        count_weight: weight of the cross-entropy of the network's count head (when it has
            one, :class:`~domains.audio.networks.CountHead`) against each mixture's number of
            talkers. With a count head, ``n_sources="auto"`` takes the head's count (between 2
            and ``max_sources``) and clusters the embeddings into that many sources, instead of
            choosing the count by how well each k clusters.

    Example:
        >>> import embedseg
        >>> model = embedseg.load("pretrained/audio-speech-8k")  # doctest: +SKIP
        >>> sources = model.separate("mixture.wav")                # doctest: +SKIP
    """

    name: ClassVar[str] = "audio"
    default_loss: ClassVar[str] = "affinity"
    primary_metric: ClassVar[str | None] = "si_sdri"
    primary_metric_higher_is_better: ClassVar[bool] = True
    model_class: ClassVar[Any] = "domains.audio.model:AudioModel"

    def __init__(
        self,
        *,
        sample_rate: int = 8000,
        n_fft: int = 256,
        hop_length: int = 64,
        window: str = "sqrt_hann",
        weights: str = "voice_activity",
        threshold_db: float = 40.0,
        cluster_threshold_db: float | None = None,
        soft_masks: bool = False,
        silent_bins: str = "nearest",
        n_sources: int = 2,
        max_sources: int = 4,
        mask_weight: float = 1.0,
        inference: str = "auto",
        cross_mixture_weight: float = 0.0,
        count_weight: float = 1.0,
    ) -> None:
        owner = "AudioDomain"
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.window = window
        self.weights = weights
        self.threshold_db = threshold_db
        self.cluster_threshold_db = cluster_threshold_db
        self.soft_masks = soft_masks
        self.silent_bins = silent_bins
        self.n_sources = n_sources
        self.max_sources = max_sources
        self.mask_weight = mask_weight
        self.inference = inference
        self.cross_mixture_weight = cross_mixture_weight
        self.count_weight = count_weight
        self.stft_config = STFTConfig(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, window=window)
        check_choice(weights, "weights", owner, ("voice_activity", "magnitude", "none"))
        check_float(threshold_db, "threshold_db", owner, 0.0)
        if cluster_threshold_db is not None:
            check_float(cluster_threshold_db, "cluster_threshold_db", owner, 0.0)
        check_bool(soft_masks, "soft_masks", owner)
        check_choice(silent_bins, "silent_bins", owner, ("nearest", "share"))
        check_int(n_sources, "n_sources", owner, 1)
        check_int(max_sources, "max_sources", owner, 2)
        check_float(mask_weight, "mask_weight", owner, 0.0)
        check_choice(inference, "inference", owner, ("clusters", "masks", "auto"))
        check_float(cross_mixture_weight, "cross_mixture_weight", owner, 0.0)
        check_float(count_weight, "count_weight", owner, 0.0)

    def get_config(self) -> dict[str, Any]:
        return {
            "sample_rate": self.sample_rate,
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "window": self.window,
            "weights": self.weights,
            "threshold_db": self.threshold_db,
            "cluster_threshold_db": self.cluster_threshold_db,
            "soft_masks": self.soft_masks,
            "silent_bins": self.silent_bins,
            "n_sources": self.n_sources,
            "max_sources": self.max_sources,
            "mask_weight": self.mask_weight,
            "inference": self.inference,
            "cross_mixture_weight": self.cross_mixture_weight,
            "count_weight": self.count_weight,
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

    def batch_key(self, item: Any) -> Any:
        """The mixture's length: mixtures of one length share a batch (a recurrence over padded
        frames would see what the mixture alone does not)."""
        mixture = item.get("mixture") if isinstance(item, dict) else item
        shape = np.shape(mixture) if mixture is not None else ()
        return int(shape[-1]) if shape else None  # a malformed item: collate says what is wrong

    def encode(self, batch: dict[str, Any], device: torch.device | str) -> EncodedBatch:
        """STFT, features, IBM targets, weights and masks of a collated batch, on ``device``."""
        cfg = self.stft_config
        mixture = batch["mixture"].to(device)  # (batch, time)
        lengths = batch["lengths"].to(device)  # (batch,)
        # Each mixture is scaled by its own peak before anything else (and the separated
        # sources back at decoding): separation is linear in the mixture, and at unit level
        # neither the features' log floor nor float32's range depends on how loud the
        # recording happened to be (1e-10 or 1e12 separate like 0.5).
        level = mixture.abs().amax(-1, keepdim=True)  # (batch, 1)
        level = torch.where(level > 0, level, torch.ones_like(level))
        spec = stft(mixture / level, cfg)  # (batch, frames, freqs)
        b, t, f = spec.shape
        valid = frame_mask(lengths, t, cfg, f)  # (batch, frames * freqs)
        magnitude = spec.abs().reshape(b, -1)  # (batch, frames * freqs)
        active = voice_activity_weights(magnitude, self.threshold_db, valid) > 0  # (batch, n)
        # An item with no active bin (digital silence) keeps all its valid bins so that the
        # clusterer still has points; separate() rejects such inputs before they get here.
        active = torch.where(active.any(1, keepdim=True), active, valid)
        # A batch of mixtures of one length (a training batch) has no padding to mask: told so
        # from the lengths still on the CPU, without waiting for the device.
        whole = batch["lengths"].device.type == "cpu" and bool((n_frames(batch["lengths"], cfg) >= t).all())
        features = log_magnitude_features(spec, None if whole else valid, magnitude=magnitude)  # (batch, frames, freqs)
        labels = weights = None
        context: dict[str, Any] = {
            "mixture_spec": spec, "mixture": mixture, "level": level, "lengths": lengths, "valid": valid, "frames": t,
        }
        if "sources" in batch:
            sources = batch["sources"].to(device)  # (batch, n_sources, time)
            source_specs = stft(sources / level[:, :, None], cfg)  # (batch, n_sources, frames, freqs)
            labels = ideal_binary_labels(source_specs).masked_fill(~active, -1)  # (batch, n)
            context["sources"] = sources
            context["source_specs"] = source_specs
            context["n_sources"] = batch["n_sources"].to(device)
        if labels is not None:  # loss weights: only a batch with targets trains or is scored by loss
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
        """The embedding loss (plus ``cross_mixture_weight`` times the same loss over the whole
        batch), plus the Chimera++ mask-inference loss when the network has a mask head:
        permutation-invariant L1 between masked mixture magnitudes and the sources' truncated
        phase-sensitive magnitudes, over active bins, relative to the mixture's mean
        magnitude."""
        total = super().compute_loss(output, batch, loss)
        if self.cross_mixture_weight > 0 and batch.batch_size > 1:
            total = total + self.cross_mixture_weight * self._cross_mixture_loss(output, batch, loss)
        if not isinstance(output, dict):
            return total
        if "counts" in output and self.count_weight > 0:
            total = total + self.count_weight * self._count_loss(output["counts"], batch)
        if "masks" not in output or self.mask_weight == 0:
            return total
        return total + self.mask_weight * self._mask_loss(output["masks"], batch)

    def _count_loss(self, logits: torch.Tensor, batch: EncodedBatch) -> torch.Tensor:
        """Cross-entropy of the count head's logits (class i: i + 1 talkers) against each
        mixture's number of talkers; mixtures of more talkers than the head tells apart are
        left out."""
        counts = batch.context["n_sources"].to(logits.device).long()  # (batch,)
        fits = counts <= logits.shape[1]
        target = torch.where(fits, counts - 1, torch.full_like(counts, -100))  # -100: ignored, loss 0
        per_item = torch.nn.functional.cross_entropy(logits.float(), target, ignore_index=-100, reduction="none")
        weight = fits.to(per_item.dtype)
        return (per_item * weight).sum() / weight.sum().clamp_min(1)  # no host sync on a GPU

    def _cross_mixture_loss(self, output: Any, batch: EncodedBatch, loss: str) -> torch.Tensor:
        """The embedding loss of the batch as one item: bins of all mixtures together, the
        talkers of mixture i numbered after those of mixtures 0..i-1."""
        emb = embeddings_of(output)  # (batch, n, dim)
        b, n, d = emb.shape
        per_mixture = batch.context["source_specs"].shape[1]  # the most talkers of a mixture
        offsets = torch.arange(b, device=emb.device)[:, None] * per_mixture
        labels = torch.where(batch.labels >= 0, batch.labels + offsets, batch.labels)
        as_one = replace(
            batch, mask=batch.mask.reshape(1, b * n), labels=labels.reshape(1, b * n),
            weights=None if batch.weights is None else batch.weights.reshape(1, b * n),
        )
        return Domain.compute_loss(self, emb.reshape(1, b * n, d), as_one, loss)

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
        per_item = best / scale.clamp_min(1e-8)  # (batch,)
        # C masks cannot hold more than C sources: such mixtures (a 3-talker one for a 2-mask
        # head) train the embeddings only, instead of a loss against their first C sources.
        counts = batch.context.get("n_sources")
        if counts is None:
            return per_item.mean()
        fits = (counts.to(per_item.device) <= c).to(per_item.dtype)
        return (per_item * fits).sum() / fits.sum().clamp_min(1)  # no host sync on a GPU

    # -- inference ------------------------------------------------------------------------------------
    # Long recordings are embedded CHUNK_FRAMES frames at a time (about 20 s at the default
    # 8 ms hop), each chunk seeing CONTEXT_FRAMES more frames on either side, so that the
    # network's activations stay bounded; the clustering still sees the whole recording.
    CHUNK_FRAMES: ClassVar[int] = 2500
    CONTEXT_FRAMES: ClassVar[int] = 200
    # The fewest bins a cluster_threshold_db fit may have (two frames of 129 bins at the default
    # STFT); below it an item is fitted on all its active bins.
    CLUSTER_MIN_BINS: ClassVar[int] = 256

    def cluster_mask(self, batch: EncodedBatch, output: Any) -> torch.Tensor:
        """The bins the clusterer is fitted on: the active ones, and with ``cluster_threshold_db``
        only those within that many dB of the mixture's peak (bins left out are still labelled
        and masked by the fitted clusters)."""
        if self.cluster_threshold_db is None:
            return batch.mask
        ctx = batch.context
        magnitude = ctx["mixture_spec"].abs().reshape(batch.mask.shape)  # (batch, n)
        loud = (voice_activity_weights(magnitude, self.cluster_threshold_db, ctx["valid"]) > 0) & batch.mask
        enough = loud.sum(1, keepdim=True) >= self.CLUSTER_MIN_BINS  # (batch, 1)
        return torch.where(enough, loud, batch.mask)

    @property
    def uses_proba(self) -> bool:  # type: ignore[override]
        return self.soft_masks

    def forward(self, run: Any, batch: EncodedBatch) -> Any:
        """The network output for the batch; a recording longer than ``CHUNK_FRAMES`` frames
        is embedded chunk by chunk with ``CONTEXT_FRAMES`` of context on each side. Its
        embeddings are then kept as int8 codes (:func:`embedseg.inference.as_float_embeddings`:
        a quarter of float32, what bounds inference memory on long inputs; rounding moves a
        unit-norm component by at most 0.004), and the mask head's sources are put in one order
        across chunks by their agreement on the frames both chunks saw."""
        features = batch.features  # (batch, frames, freqs)
        t = features.shape[1]
        chunk, ctx = self.CHUNK_FRAMES, self.CONTEXT_FRAMES
        if t <= chunk + 2 * ctx:
            return run(features)
        b, _, f = features.shape
        emb: torch.Tensor | None = None
        masks: torch.Tensor | None = None
        previous: tuple[int, torch.Tensor] | None = None  # (first frame, masks) of the last window
        counts: torch.Tensor | None = None  # (batch, K) frame-weighted sum of the chunks' log-probabilities
        for start in range(0, t, chunk):
            stop = min(start + chunk, t)
            lo, hi = max(0, start - ctx), min(t, stop + ctx)
            out = run(features[:, lo:hi])
            e = embeddings_of(out).reshape(b, hi - lo, f, -1)  # (batch, window, freqs, dim)
            if emb is None:
                emb = torch.empty(b, t, f, e.shape[-1], dtype=torch.int8, device=e.device)
            emb[:, start:stop] = e[:, start - lo : stop - lo].mul(INT8_SCALE).round_().to(torch.int8)
            if isinstance(out, dict) and "masks" in out:
                window = out["masks"]  # (batch, C, window, freqs)
                if previous is not None:
                    window = _align_sources(previous, (lo, window))
                if masks is None:  # half precision: a mask needs no more, and a long input's are large
                    masks = torch.empty(b, window.shape[1], t, f, dtype=torch.float16, device=window.device)
                masks[:, :, start:stop] = window[:, :, start - lo : stop - lo]
                previous = (lo, window)
            if isinstance(out, dict) and "counts" in out:
                part = torch.log_softmax(out["counts"], dim=-1) * ((stop - start) / t)
                counts = part if counts is None else counts + part
        assert emb is not None  # t > 0 frames
        embeddings = emb.reshape(b, t * f, -1)
        if masks is None and counts is None:
            return embeddings
        heads = {"masks": masks, "counts": counts}
        return {"embeddings": embeddings, **{k: v for k, v in heads.items() if v is not None}}

    def cluster_counts(self, batch: EncodedBatch, mask: torch.Tensor, n_clusters: Any, output: Any = None) -> Any:
        """``n_clusters`` as given, except "auto" with a network that counts: each item's most
        likely count under the count head, between 2 and ``max_sources``."""
        if not (isinstance(n_clusters, str) and n_clusters == "auto"):
            return n_clusters
        if not isinstance(output, dict) or "counts" not in output:
            return n_clusters
        logits = output["counts"]  # (batch, K): class i is i + 1 talkers
        top = min(self.max_sources, logits.shape[1])
        if top < 2:
            return n_clusters
        counts = logits[:, 1:top].argmax(dim=1) + 2  # (batch,)
        # an item cannot hold more sources than it has active bins (separate() checks given counts)
        return torch.minimum(counts, mask.sum(1).clamp_min(1)).cpu()

    def decode(
        self,
        batch: EncodedBatch,
        labels: torch.Tensor,
        proba: torch.Tensor | None,
        output: Any,
    ) -> list[torch.Tensor]:
        """Masks from the clustering (or the mask head, as ``inference`` says), applied to the
        mixture and resynthesized at the mixture's own level, one source at a time (a long
        recording's masks and inverse STFT are large).

        Returns:
            one (n_sources_b, length_b) float waveform tensor per item, where n_sources_b is
            the number of clusters found in item b.
        """
        ctx = batch.context
        spec = ctx["mixture_spec"]  # (batch, frames, freqs)
        b, t, f = spec.shape
        head = output["masks"] if isinstance(output, dict) and "masks" in output else None  # (batch, C, frames, freqs)
        if self.inference == "masks":
            if head is None:
                raise ValueError("inference='masks' needs a network with a mask head (mask_sources > 0).")
            counts = torch.full((b,), head.shape[1], dtype=torch.long, device=spec.device)
        else:
            counts = (labels.masked_fill(~batch.mask, -1).amax(dim=1) + 1).clamp_min(1)  # (batch,)
        k = int(counts.max())
        use_head = None  # (batch,) items whose masks come from the head under inference="auto"
        if self.inference == "auto" and head is not None:
            use_head = counts == head.shape[1]
            if bool(use_head.any()):
                k = max(k, head.shape[1])
            else:
                use_head = None
        silent = (ctx["valid"] & ~batch.mask).reshape(b, t, f) if self.silent_bins == "share" else None

        def source_mask(c: int) -> torch.Tensor:
            """(batch, frames, freqs) float mask of source ``c``."""
            if self.inference == "masks":
                return head[:, c].float()
            if self.soft_masks and proba is not None:
                m = proba[..., c].float() if c < proba.shape[-1] else torch.zeros(b, t * f, device=spec.device)
            else:
                m = (labels == c).float()
            m = m.reshape(b, t, f)
            if silent is not None:
                share = torch.where(c < counts, 1.0 / counts.float(), torch.zeros_like(counts, dtype=torch.float32))
                m = torch.where(silent, share[:, None, None], m)
            if use_head is not None:
                from_head = head[:, c].float() if c < head.shape[1] else torch.zeros_like(m)
                m = torch.where(use_head[:, None, None], from_head, m)
            return m

        length = ctx["mixture"].shape[-1]
        waves = torch.empty(b, k, length, dtype=spec.real.dtype, device=spec.device)
        for c in range(k):
            waves[:, c] = istft(source_mask(c).to(spec.real.dtype) * spec, length, self.stft_config)
        waves = waves * ctx["level"][:, :, None]  # back to the mixture's own level
        lengths = ctx["lengths"].tolist()
        return [waves[i, : int(counts[i]), : lengths[i]] for i in range(b)]

    def metrics(self) -> Any:
        """SDR, SDRi (BSS-Eval v3), SI-SDR, SI-SDRi and the source-count accuracy: the mean over
        items of each item's mean over its sources (:class:`~domains.audio.metrics.AudioMetrics`)."""
        from .metrics import AudioMetrics

        return AudioMetrics()

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


def _align_sources(previous: tuple[int, torch.Tensor], current: tuple[int, torch.Tensor]) -> torch.Tensor:
    """The current window's masks (batch, C, frames, freqs), its sources reordered per item to
    agree best (least L1) with the previous window's on the frames both cover; each window is
    given as (first frame, masks)."""
    (p0, prev), (c0, cur) = previous, current
    lo, hi = max(p0, c0), min(p0 + prev.shape[2], c0 + cur.shape[2])
    c = cur.shape[1]
    if hi <= lo or c < 2:
        return cur
    a = prev[:, :, lo - p0 : hi - p0]  # (batch, C, shared, freqs)
    o = cur[:, :, lo - c0 : hi - c0]
    perms = torch.tensor(list(itertools.permutations(range(c))), device=cur.device)  # (P, C)
    cost = (a[:, :, None] - o[:, None]).abs().sum((3, 4))  # (batch, C prev, C cur)
    per_perm = cost[:, torch.arange(c, device=cur.device), perms].sum(-1)  # (batch, P)
    best = perms[per_perm.argmin(1)]  # (batch, C): current source for each previous slot
    return torch.gather(cur, 1, best[:, :, None, None].expand_as(cur))


