"""Instance matching: StarDist-style scores of a predicted against a true label map.

Matching follows Schmidt et al. 2018 / Weigert et al. 2020 (StarDist's ``matching``): the
IoU of every (true, predicted) pair comes from one overlap histogram of the two label maps;
at each threshold t an optimal assignment pairs instances so that the number of pairs with
IoU >= t is maximal (ties broken towards higher IoU), and those pairs are the true positives.
Label 0 is background in both maps and never an instance. Over a dataset the counts are
pooled over all instances of all images before scoring (StarDist's ``matching_dataset``).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._assignment import linear_sum_assignment
from ._labels import as_label_map, items_of, relabel, same_length

__all__ = ["DEFAULT_THRESHOLDS", "iou_matrix", "matching", "matching_dataset"]

#: IoU thresholds at which matching scores are reported.
DEFAULT_THRESHOLDS: tuple[float, ...] = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)


def iou_matrix(y_true: Any, y_pred: Any) -> np.ndarray:
    """IoU between every true and predicted instance, from one overlap histogram.

    Args:
        y_true: integer label map (array or tensor, any shape), 0 = background.
        y_pred: integer label map of the same shape, 0 = background.

    Returns:
        (n_true, n_pred) float64 IoU matrix over the instances in order of increasing id.

    Raises:
        ValueError: shapes differ or ids are negative.
        TypeError: the maps are not integer.

    Example:
        >>> import numpy as np
        >>> iou_matrix(np.array([[1, 1, 0, 2]]), np.array([[1, 0, 0, 2]])).tolist()
        [[0.5, 0.0], [0.0, 1.0]]
    """
    t = as_label_map(y_true, "y_true")
    p = as_label_map(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"'y_true' and 'y_pred' must have the same shape. Got {t.shape} and {p.shape}.")
    t, nt = relabel(t)
    p, npred = relabel(p)
    overlap = np.bincount(t.ravel() * (npred + 1) + p.ravel(), minlength=(nt + 1) * (npred + 1))
    overlap = overlap.reshape(nt + 1, npred + 1).astype(np.float64)
    size_t = overlap.sum(axis=1, keepdims=True)
    size_p = overlap.sum(axis=0, keepdims=True)
    union = size_t + size_p - overlap
    iou = np.divide(overlap, union, out=np.zeros_like(overlap), where=union > 0)
    return iou[1:, 1:]


def check_thresholds(thresholds: Any, owner: str) -> tuple[bool, tuple[float, ...]]:
    """Whether one threshold was given, and the thresholds as floats in (0, 1]."""
    single = isinstance(thresholds, numbers.Real) and not isinstance(thresholds, bool)
    if single:
        ths = (float(thresholds),)
    else:
        try:
            ths = tuple(float(t) for t in thresholds)
        except (TypeError, ValueError):
            raise TypeError(
                f"The 'thresholds' parameter of {owner} must be a float in (0, 1] or a sequence of them. "
                f"Got {thresholds!r} instead."
            ) from None
        if not ths:
            raise ValueError(f"The 'thresholds' parameter of {owner} must not be empty. Got {thresholds!r} instead.")
    for th in ths:
        if not 0.0 < th <= 1.0:
            raise ValueError(f"'thresholds' must lie in (0, 1]. Got {th!r} instead.")
    return single, ths


def _components(iou: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Rows and columns of each connected group of overlapping instances (IoU > 0)."""
    n_true, n_pred = iou.shape
    parent = list(range(n_true + n_pred))

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    rows, cols = np.nonzero(iou > 0)
    for r, c in zip(rows.tolist(), cols.tolist()):
        a, b = root(r), root(n_true + c)
        if a != b:
            parent[b] = a
    groups: dict[int, tuple[list[int], list[int]]] = {}
    for r in np.unique(rows).tolist():
        groups.setdefault(root(r), ([], []))[0].append(r)
    for c in np.unique(cols).tolist():
        groups.setdefault(root(n_true + c), ([], []))[1].append(c)
    return [(np.array(r), np.array(c)) for r, c in groups.values()]


def match_counts(iou: np.ndarray, thresholds: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """True positives (int64) and the sum of their IoUs (float64) at each threshold.

    A pair with IoU 0 costs nothing in the assignment below, so the optimum is the union of
    the optima of each group of mutually overlapping instances; solving those small groups
    apart is what keeps an image with hundreds of instances cheap.
    """
    tp = np.zeros(len(thresholds), dtype=np.int64)
    sum_iou = np.zeros(len(thresholds), dtype=np.float64)
    if iou.size == 0:
        return tp, sum_iou
    n_min = min(iou.shape)
    for rows, cols in _components(iou):
        sub = iou[np.ix_(rows, cols)]  # (group rows, group columns)
        for k, th in enumerate(thresholds):
            good = sub >= th
            if not good.any():
                continue
            if sub.size == 1:
                tp[k] += 1
                sum_iou[k] += float(sub[0, 0])
                continue
            # Maximise the count of good pairs first; the IoU term (< 1 in total) only breaks ties.
            cost = -good.astype(np.float64) - sub / (2.0 * n_min)
            r, c = linear_sum_assignment(cost)
            ok = good[r, c]
            tp[k] += int(ok.sum())
            sum_iou[k] += float(sub[r, c][ok].sum())
    return tp, sum_iou


def scores(tp: int, n_true: int, n_pred: int, sum_iou: float, thresh: float) -> dict[str, float]:
    """StarDist's scores from pooled counts at one threshold."""
    tp, n_true, n_pred, sum_iou = int(tp), int(n_true), int(n_pred), float(sum_iou)
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
    single, ths = check_thresholds(thresholds, "matching")
    iou = iou_matrix(y_true, y_pred)
    n_true, n_pred = iou.shape
    tp, sum_iou = match_counts(iou, ths)
    out = {th: scores(tp[k], n_true, n_pred, sum_iou[k], th) for k, th in enumerate(ths)}
    return out[ths[0]] if single else out


def matching_dataset(
    ys_true: Sequence[Any], ys_pred: Sequence[Any], thresholds: float | Sequence[float] = DEFAULT_THRESHOLDS
) -> dict[float, dict[str, float]] | dict[str, float]:
    """Matching over a dataset: TP/FP/FN and matched IoU pooled over all instances of all
    images, then scored (StarDist's ``matching_dataset``).

    This is :class:`embedseg.metrics.InstanceMatching` fed the whole dataset at once.

    Args:
        ys_true: sequence of true label maps.
        ys_pred: sequence of predicted label maps, pairwise of the same shapes.
        thresholds: as in :func:`matching`.

    Returns:
        As :func:`matching`, with counts summed over the images.

    Raises:
        ValueError: the sequences differ in length or are empty ("no items were scored").
    """
    single, ths = check_thresholds(thresholds, "matching_dataset")
    tp, sum_iou, n_true, n_pred, n_items = pooled_counts(ys_true, ys_pred, ths)
    if n_items == 0:
        raise ValueError("matching_dataset(): no items were scored; 'ys_true' and 'ys_pred' are empty.")
    out = {th: scores(tp[k], n_true, n_pred, sum_iou[k], th) for k, th in enumerate(ths)}
    return out[ths[0]] if single else out


def pooled_counts(
    ys_true: Sequence[Any], ys_pred: Sequence[Any], thresholds: Sequence[float], names: tuple[str, str] = ("ys_true", "ys_pred")
) -> tuple[np.ndarray, np.ndarray, int, int, int]:
    """True positives and the sum of their IoU per threshold, the numbers of true and of
    predicted instances, and the number of images, summed over pairs of label maps: what
    dataset-level matching pools (:func:`matching_dataset`, :class:`~embedseg.metrics.InstanceMatching`);
    ``names`` are the arguments' names in messages."""
    truths, preds = items_of(ys_true, names[0]), items_of(ys_pred, names[1])
    same_length(**{names[0]: truths, names[1]: preds})
    tp = np.zeros(len(thresholds), dtype=np.int64)
    sum_iou = np.zeros(len(thresholds), dtype=np.float64)
    n_true = n_pred = 0
    for t, p in zip(truths, preds):
        iou = iou_matrix(t, p)
        item_tp, item_sum = match_counts(iou, thresholds)
        tp += item_tp
        sum_iou += item_sum
        n_true += iou.shape[0]
        n_pred += iou.shape[1]
    return tp, sum_iou, n_true, n_pred, len(truths)
