"""Instance-segmentation metrics of the image domain.

The functions themselves (StarDist-style matching, the adjusted Rand index) live in
:mod:`embedseg.metrics` and are re-exported here. What is the image domain's own is
:class:`ImageMetrics`, the accumulator behind ``ImageDomain.metrics()``, which reads each
image's ground truth from a batch and reports the headline figures pooled over a dataset, and
:func:`instance_metrics`, the same figures for one image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from embedseg.domain import EncodedBatch
from embedseg.metrics import (
    DEFAULT_THRESHOLDS,
    InstanceMatching,
    MeanMetric,
    Metric,
    adjusted_rand_index,
    iou_matrix,
    matching,
    matching_dataset,
)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "iou_matrix",
    "matching",
    "matching_dataset",
    "adjusted_rand_index",
    "instance_metrics",
    "ImageMetrics",
]


def _numpy(x: Any) -> np.ndarray:
    """A label map as a NumPy array (tensors come to the CPU once, for both metrics)."""
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


class ImageMetrics(Metric):
    """The image domain's figures over a dataset.

    Pooling: "ap50", "ap75", "ap" (the mean over IoU thresholds 0.5, 0.55, ..., 0.9 of the AP at
    each), "f1", "pq" (panoptic quality) and "mean_matched_iou" (at IoU 0.5) are pooled over
    all instances of all images, as StarDist's ``matching_dataset``: an image weighs by its
    instances. "ari" is the mean over images of each image's adjusted
    Rand index (background included).

    Attributes:
        matching: the :class:`~embedseg.metrics.InstanceMatching` behind the matching figures
            (its ``compute()`` also gives the pooled counts, e.g. ``n_pred``, per threshold).
        ari: the :class:`~embedseg.metrics.MeanMetric` of per-image ARIs.

    Example:
        >>> import numpy as np
        >>> m = ImageMetrics()
        >>> m.update_maps([np.array([[1, 1, 0, 2, 2]])], [np.array([[3, 3, 0, 4, 4]])])
        >>> m.compute()["ap50"], m.compute()["ari"]
        (1.0, 1.0)
    """

    def __init__(self) -> None:
        super().__init__()
        self.matching = InstanceMatching(DEFAULT_THRESHOLDS)
        self.ari = MeanMetric()

    def update(self, outputs: Sequence[Any], batch: EncodedBatch) -> None:
        """Score decoded label maps against the batch's ground truth.

        A batch without ground truth (``batch.context["gt"]`` absent: unannotated images)
        scores nothing.

        Args:
            outputs: one (h, w) integer label map per image, as ``ImageDomain.decode`` returns.
            batch: the encoded batch; ``context["gt"]`` is the (batch, H, W) padded true label
                maps and ``context["sizes"]`` each image's (h, w).
        """
        gt = batch.context.get("gt")
        if gt is None:
            return
        sizes = list(batch.context["sizes"])
        if len(outputs) != len(sizes):
            raise ValueError(f"'outputs' must hold one label map per image of 'batch' ({len(sizes)}). Got {len(outputs)}.")
        truths = [gt[i, : int(h), : int(w)] for i, (h, w) in enumerate(sizes)]
        self.update_maps(truths, outputs)

    def update_maps(self, y_true: Sequence[Any], y_pred: Sequence[Any]) -> None:
        """Score predicted label maps against true ones (the path for label maps that did not
        come through a batch: ``model.segment`` outputs, classic pipelines).

        Args:
            y_true: sequence of true integer label maps (arrays or tensors), 0 = background.
            y_pred: sequence of predicted label maps of the same shapes.
        """
        if len(y_true) != len(y_pred):
            raise ValueError(f"'y_true' and 'y_pred' must hold as many label maps. Got {len(y_true)} and {len(y_pred)}.")
        truths = [_numpy(t) for t in y_true]
        preds = [_numpy(p) for p in y_pred]
        aris = [adjusted_rand_index(t, p) for t, p in zip(truths, preds)]  # checks the maps first
        self.matching.update(truths, preds)
        self.ari.update(aris)

    def compute(self) -> dict[str, float]:
        """``{"ap50", "ap75", "ap", "f1", "pq", "mean_matched_iou", "ari"}``.

        Raises:
            ValueError: no image was scored.
        """
        if int(self.matching.n_items) == 0:
            raise self._no_items()
        m = self.matching.compute()
        m50 = m[0.5]
        return {
            "ap50": m50["ap"],
            "ap75": m[0.75]["ap"],
            "ap": float(np.mean([v["ap"] for v in m.values()])),
            "f1": m50["f1"],
            "pq": m50["panoptic_quality"],
            "mean_matched_iou": m50["mean_matched_iou"],
            "ari": self.ari.compute(),
        }


def instance_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    """The figures of :class:`ImageMetrics` for one image (AP at IoU 0.5 and 0.75, mean AP over
    thresholds 0.5-0.9, F1, PQ and mean matched IoU at 0.5, ARI), with precision and recall at
    IoU 0.5."""
    metric = ImageMetrics()
    metric.update_maps([y_true], [y_pred])
    m50 = metric.matching.compute()[0.5]
    return {**metric.compute(), "precision": m50["precision"], "recall": m50["recall"]}
