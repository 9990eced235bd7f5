"""Metrics: functions that score one prediction, and accumulators that pool them over a dataset.

Every figure embedseg reports (``Model.evaluate``, validation, the examples and benchmarks) is
computed here, one way:

* functional: :func:`adjusted_rand_index` (clustering), :func:`iou_matrix`, :func:`matching`,
  :func:`matching_dataset` (instance matching, StarDist's definitions), :func:`sdr`,
  :func:`si_sdr`, :func:`bss_eval_sources`, :func:`separation_scores` and their helpers
  (source separation);
* accumulators (:class:`Metric`, torchmetrics' pattern: ``update`` with each batch, ``compute``
  at the end, ``merge`` to pool what several processes saw): :class:`MeanMetric`,
  :class:`ItemMean`, :class:`InstanceMatching`, :class:`SeparationMetrics`.

Domains build their own accumulators from these (the image domain's ``ImageMetrics``, the
audio domain's ``AudioMetrics``), reading the ground truth from their batches.
"""

from __future__ import annotations

from .accumulators import InstanceMatching, ItemMean, MeanMetric, SeparationMetrics
from .base import REDUCTIONS, Metric
from .clustering import adjusted_rand_index
from .matching import DEFAULT_THRESHOLDS, iou_matrix, matching, matching_dataset
from .separation import (
    BSSEvalResult,
    best_permutation,
    bss_eval_sources,
    sdr,
    sdr_matrix,
    separation_scores,
    si_sdr,
    si_sdr_matrix,
)

__all__ = [
    # accumulators
    "Metric",
    "REDUCTIONS",
    "MeanMetric",
    "ItemMean",
    "InstanceMatching",
    "SeparationMetrics",
    # clustering
    "adjusted_rand_index",
    # instance matching
    "DEFAULT_THRESHOLDS",
    "iou_matrix",
    "matching",
    "matching_dataset",
    # separation
    "BSSEvalResult",
    "bss_eval_sources",
    "sdr_matrix",
    "si_sdr_matrix",
    "best_permutation",
    "sdr",
    "si_sdr",
    "separation_scores",
]
