"""Separation metrics of the audio domain.

The criteria themselves (BSS-Eval v3 SDR/SIR/SAR, SI-SDR, improvements, best permutation) live
in :mod:`embedseg.metrics` and are re-exported here. What is the audio domain's own:
:class:`AudioMetrics`, the accumulator behind ``AudioDomain.metrics()``, which reads each
mixture's references from a batch; and the oracle ideal binary / ratio masks, computed by the
same STFT and resynthesis as the model's outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from embedseg.domain import EncodedBatch
from embedseg.metrics import (
    BSSEvalResult,
    Metric,
    SeparationMetrics,
    best_permutation,
    bss_eval_sources,
    sdr,
    sdr_matrix,
    separation_scores,
    si_sdr,
    si_sdr_matrix,
)

from .features import (
    STFTConfig,
    apply_masks,
    ideal_binary_labels,
    ideal_ratio_masks,
    masks_from_labels,
    stft,
)

__all__ = [
    "BSSEvalResult",
    "bss_eval_sources",
    "sdr_matrix",
    "si_sdr_matrix",
    "best_permutation",
    "sdr",
    "si_sdr",
    "separation_scores",
    "oracle_masks",
    "oracle_separation",
    "AudioMetrics",
]


class AudioMetrics(Metric):
    """The audio domain's figures over a dataset: "sdr", "sdri" (BSS-Eval v3), "si_sdr",
    "si_sdri" (dB) and "count_accuracy".

    Pooling: the mean over mixtures of the mean over each mixture's sources, as
    :class:`~embedseg.metrics.SeparationMetrics` (which does the scoring). Missing estimates
    (fewer clusters than sources) count as the unprocessed mixture.

    Args:
        bss_eval: also compute "sdr" and "sdri" (BSS-Eval is much slower than SI-SDR).
        filter_length: taps of BSS-Eval's distortion filter (512 in BSS-Eval v3).

    Attributes:
        separation: the :class:`~embedseg.metrics.SeparationMetrics` that holds the states.
    """

    def __init__(self, *, bss_eval: bool = True, filter_length: int = 512) -> None:
        super().__init__()
        self.separation = SeparationMetrics(bss_eval=bss_eval, filter_length=filter_length)

    def update(self, outputs: Sequence[torch.Tensor], batch: EncodedBatch) -> None:
        """Score separated sources against the batch's references.

        A batch without references (``batch.context["sources"]`` absent) scores nothing.

        Args:
            outputs: one (n_estimates, time) tensor per mixture, as ``AudioDomain.decode``
                returns.
            batch: the encoded batch; its context holds the padded "sources" (batch,
                max_sources, time) and "mixture" (batch, time), and each item's "lengths" and
                "n_sources".
        """
        ctx = batch.context
        if "sources" not in ctx:
            return
        lengths = [int(n) for n in ctx["lengths"]]
        counts = [int(c) for c in ctx["n_sources"]]
        if len(outputs) != len(lengths):
            raise ValueError(f"'outputs' must hold one separation per mixture of 'batch' ({len(lengths)}). Got {len(outputs)}.")
        references = [ctx["sources"][i, :c, :n] for i, (c, n) in enumerate(zip(counts, lengths))]
        mixtures = [ctx["mixture"][i, :n] for i, n in enumerate(lengths)]
        self.separation.update(references, list(outputs), mixtures)

    def update_items(self, references: Sequence[torch.Tensor], estimates: Sequence[torch.Tensor], mixtures: Sequence[torch.Tensor]) -> None:
        """Score separations that did not come through a batch (``model.separate`` outputs,
        oracle masks): sequences of (n_sources, time) references, (n_estimates, time)
        estimates and (time,) mixtures."""
        self.separation.update(references, estimates, mixtures)

    def compute(self) -> dict[str, float]:
        """``{"sdr", "sdri", "si_sdr", "si_sdri", "count_accuracy"}``.

        Raises:
            ValueError: no mixture was scored.
        """
        if int(self.separation.n_items) == 0:
            raise self._no_items()
        return self.separation.compute()

    def _check_mergeable(self, other: Metric) -> None:
        self.separation._check_mergeable(other.separation)  # type: ignore[attr-defined]


def oracle_masks(source_specs: torch.Tensor, kind: str = "ibm") -> torch.Tensor:
    """Oracle masks from the sources' STFTs, (batch, n_sources, frames, freqs).

    Args:
        source_specs: complex (batch, n_sources, frames, freqs).
        kind: "ibm" (ideal binary mask: the dominant source takes the bin) or "irm" (ideal
            ratio mask |S_c| / sum_k |S_k|).
    """
    if kind == "ibm":
        b, c, t, f = source_specs.shape
        return masks_from_labels(ideal_binary_labels(source_specs), c, t, f)
    if kind == "irm":
        return ideal_ratio_masks(source_specs)
    raise ValueError(f"'kind' must be one of 'ibm', 'irm'. Got {kind!r} instead.")


def oracle_separation(mixture: torch.Tensor, sources: torch.Tensor, kind: str = "ibm", config: STFTConfig = STFTConfig()) -> torch.Tensor:
    """Separate ``mixture`` (batch, time) with an oracle mask built from ``sources`` (batch,
    n_sources, time), through the same STFT and resynthesis as the model; returns (batch,
    n_sources, time)."""
    specs = stft(sources, config)  # (batch, n_sources, frames, freqs)
    mix_spec = stft(mixture, config)  # (batch, frames, freqs)
    return apply_masks(oracle_masks(specs, kind), mix_spec, mixture.shape[-1], config)
