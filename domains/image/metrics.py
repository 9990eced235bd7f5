"""Instance-segmentation metrics: StarDist-style matching and the adjusted Rand index.

Matching follows Schmidt et al. 2018 / Weigert et al. 2020 (StarDist's ``matching``): the
IoU of every (true, predicted) pair comes from one overlap histogram of the two label maps;
at each threshold t a Hungarian assignment pairs instances so that the number of pairs with
IoU >= t is maximal (ties broken towards higher IoU), and those pairs are the true positives.
Label 0 is background in both maps and never an instance.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = [
    "DEFAULT_THRESHOLDS",
    "iou_matrix",
    "matching",
    "matching_dataset",
    "adjusted_rand_index",
    "instance_metrics",
]

#: IoU thresholds at which matching scores are reported.
DEFAULT_THRESHOLDS: tuple[float, ...] = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)


def _as_label_map(x: Any, name: str) -> np.ndarray:
    """A 2-D (or n-D) non-negative integer label map as an int64 numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.dtype == bool or not np.issubdtype(x.dtype, np.integer):
        if np.issubdtype(x.dtype, np.floating) and x.size and np.all(np.mod(x, 1) == 0):
            x = x.astype(np.int64)
        else:
            raise TypeError(f"'{name}' must be an integer label map. Got an array of dtype {x.dtype} instead.")
    if x.size and x.min() < 0:
        raise ValueError(f"'{name}' must hold ids >= 0 (0 = background). Got minimum {int(x.min())}.")
    return x.astype(np.int64, copy=False)


def _relabel(x: np.ndarray) -> tuple[np.ndarray, int]:
    """Map ids to 0..n keeping 0 as background; returns the map and n (number of instances)."""
    ids, inverse = np.unique(x, return_inverse=True)
    if ids.size and ids[0] != 0:
        inverse = inverse + 1
        n = ids.size
    else:
        n = ids.size - 1
    return inverse.reshape(x.shape), max(n, 0)


def iou_matrix(y_true: Any, y_pred: Any) -> np.ndarray:
    """IoU between every true and predicted instance, from one overlap histogram.

    Args:
        y_true: integer label map, 0 = background.
        y_pred: integer label map of the same shape, 0 = background.

    Returns:
        (n_true, n_pred) float64 IoU matrix over the instances in order of increasing id.

    Raises:
        ValueError: shapes differ or ids are negative.
        TypeError: the maps are not integer.
    """
    t = _as_label_map(y_true, "y_true")
    p = _as_label_map(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"'y_true' and 'y_pred' must have the same shape. Got {t.shape} and {p.shape}.")
    t, nt = _relabel(t)
    p, npred = _relabel(p)
    overlap = np.bincount(t.ravel() * (npred + 1) + p.ravel(), minlength=(nt + 1) * (npred + 1))
    overlap = overlap.reshape(nt + 1, npred + 1).astype(np.float64)
    size_t = overlap.sum(axis=1, keepdims=True)
    size_p = overlap.sum(axis=0, keepdims=True)
    union = size_t + size_p - overlap
    iou = np.divide(overlap, union, out=np.zeros_like(overlap), where=union > 0)
    return iou[1:, 1:]


def _match_counts(iou: np.ndarray, thresh: float) -> tuple[int, float]:
    """Number of matched pairs with IoU >= thresh, and the sum of their IoUs."""
    from scipy.optimize import linear_sum_assignment

    if iou.size == 0:
        return 0, 0.0
    n_min = min(iou.shape)
    good = iou >= thresh
    # Maximise the count of good pairs first; the IoU term (< 1 in total) only breaks ties.
    cost = -good.astype(np.float64) - iou / (2.0 * n_min)
    rows, cols = linear_sum_assignment(cost)
    ok = good[rows, cols]
    return int(ok.sum()), float(iou[rows, cols][ok].sum())


def _scores(tp: int, n_true: int, n_pred: int, sum_iou: float, thresh: float) -> dict[str, float]:
    fp, fn = n_pred - tp, n_true - tp

    def div(a: float, b: float) -> float:
        # Nothing to find and nothing found is a perfect result, as in StarDist.
        return a / b if b > 0 else 1.0

    mean_iou = sum_iou / tp if tp > 0 else 0.0
    return {
        "thresh": thresh,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": div(tp, tp + fp),
        "recall": div(tp, tp + fn),
        "f1": div(2 * tp, 2 * tp + fp + fn),
        "ap": div(tp, tp + fp + fn),
        "mean_matched_iou": mean_iou if (tp + fp + fn) > 0 else 1.0,
        "panoptic_quality": div(sum_iou, tp + fp / 2 + fn / 2),
        "n_true": n_true,
        "n_pred": n_pred,
    }


def matching(
    y_true: Any, y_pred: Any, thresholds: float | Sequence[float] = DEFAULT_THRESHOLDS
) -> dict[float, dict[str, float]] | dict[str, float]:
    """Match predicted to true instances and score them at IoU thresholds.

    Args:
        y_true: integer label map (any shape), 0 = background.
        y_pred: predicted label map of the same shape.
        thresholds: one IoU threshold in (0, 1], or a sequence of them.

    Returns:
        For one threshold, a dict with ``tp, fp, fn, precision, recall, f1, ap`` (TP / (TP + FP
        + FN)), ``mean_matched_iou`` (mean IoU of the true positives), ``panoptic_quality``
        (sum of matched IoU / (TP + FP/2 + FN/2)), ``n_true`` and ``n_pred``. For a sequence, a
        dict from each threshold to such a dict.

    Example:
        >>> import numpy as np
        >>> t = np.array([[1, 1, 0, 2, 2]])
        >>> p = np.array([[1, 1, 0, 2, 0]])
        >>> m = matching(t, p, 0.5)
        >>> m["tp"], m["ap"], round(m["panoptic_quality"], 3)
        (2, 1.0, 0.75)
    """
    single = isinstance(thresholds, (int, float))
    ths = [float(thresholds)] if single else [float(t) for t in thresholds]
    for th in ths:
        if not 0.0 < th <= 1.0:
            raise ValueError(f"'thresholds' must lie in (0, 1]. Got {th!r} instead.")
    iou = iou_matrix(y_true, y_pred)
    n_true, n_pred = iou.shape
    out = {}
    for th in ths:
        tp, s = _match_counts(iou, th)
        out[th] = _scores(tp, n_true, n_pred, s, th)
    return out[ths[0]] if single else out


def matching_dataset(
    ys_true: Sequence[Any], ys_pred: Sequence[Any], thresholds: float | Sequence[float] = DEFAULT_THRESHOLDS
) -> dict[float, dict[str, float]] | dict[str, float]:
    """Matching over a dataset: TP/FP/FN and matched IoU pooled over images, then scored.

    Args:
        ys_true: sequence of true label maps.
        ys_pred: sequence of predicted label maps, pairwise of the same shapes.
        thresholds: as in :func:`matching`.

    Returns:
        As :func:`matching`, with counts summed over the images.
    """
    if len(ys_true) != len(ys_pred):
        raise ValueError(
            f"'ys_true' and 'ys_pred' must have the same length. Got {len(ys_true)} and {len(ys_pred)}."
        )
    single = isinstance(thresholds, (int, float))
    ths = [float(thresholds)] if single else [float(t) for t in thresholds]
    totals = {th: [0, 0, 0, 0.0] for th in ths}  # tp, n_true, n_pred, sum_iou
    for t, p in zip(ys_true, ys_pred):
        iou = iou_matrix(t, p)
        for th in ths:
            tp, s = _match_counts(iou, th)
            acc = totals[th]
            acc[0] += tp
            acc[1] += iou.shape[0]
            acc[2] += iou.shape[1]
            acc[3] += s
    out = {th: _scores(a[0], a[1], a[2], a[3], th) for th, a in totals.items()}
    return out[ths[0]] if single else out


def adjusted_rand_index(y_true: Any, y_pred: Any) -> float:
    """Adjusted Rand index between two labelings of the same pixels (background included).

    Computed from the contingency table with exact integer pair counts; equals scikit-learn's
    ``adjusted_rand_score`` on the flattened maps.
    """
    t = _as_label_map(y_true, "y_true").ravel()
    p = _as_label_map(y_pred, "y_pred").ravel()
    if t.shape != p.shape:
        raise ValueError(f"'y_true' and 'y_pred' must have the same size. Got {t.size} and {p.size}.")
    n = t.size
    t, nt = _relabel(t)
    p, np_ = _relabel(p)
    table = np.bincount(t * (np_ + 1) + p, minlength=(nt + 1) * (np_ + 1)).astype(np.int64)

    def pairs(c: np.ndarray) -> float:
        c = c.astype(np.float64)
        return float((c * (c - 1) / 2).sum())

    sum_cells = pairs(table)
    table = table.reshape(nt + 1, np_ + 1)
    sum_rows = pairs(table.sum(axis=1))
    sum_cols = pairs(table.sum(axis=0))
    total = n * (n - 1) / 2
    if total == 0:
        return 1.0
    expected = sum_rows * sum_cols / total
    maximum = (sum_rows + sum_cols) / 2
    if maximum == expected:
        # Both labelings are a single cluster (or all singletons): identical partitions.
        return 1.0
    return float((sum_cells - expected) / (maximum - expected))


def instance_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    """The headline figures for one image: AP, F1, precision, recall and PQ at IoU 0.5, mean AP
    over thresholds 0.5-0.9, mean matched IoU at 0.5, and ARI."""
    m = matching(y_true, y_pred, DEFAULT_THRESHOLDS)
    m50 = m[0.5]
    return {
        "ap50": m50["ap"],
        "ap75": m[0.75]["ap"],
        "ap": float(np.mean([v["ap"] for v in m.values()])),
        "f1": m50["f1"],
        "precision": m50["precision"],
        "recall": m50["recall"],
        "mean_matched_iou": m50["mean_matched_iou"],
        "pq": m50["panoptic_quality"],
        "ari": adjusted_rand_index(y_true, y_pred),
    }
