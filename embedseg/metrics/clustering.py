"""Agreement of two partitions of the same elements: the adjusted Rand index."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._labels import as_label_map, relabel

__all__ = ["adjusted_rand_index"]


def adjusted_rand_index(y_true: Any, y_pred: Any) -> float:
    """Adjusted Rand index (Hubert and Arabie 1985) between two labelings of the same elements.

    Every element counts, background (label 0) included. Computed from the contingency table
    with exact pair counts; equals scikit-learn's ``adjusted_rand_score`` on the flattened
    labelings. Two labelings that are each a single cluster (or all singletons) are identical
    partitions and score 1.

    Args:
        y_true: non-negative integer labels (array or tensor, any shape).
        y_pred: non-negative integer labels with as many elements.

    Returns:
        The index, 1 for identical partitions up to renaming, about 0 for chance agreement.

    Raises:
        ValueError: the sizes differ or labels are negative.
        TypeError: the labels are not integer.

    Example:
        >>> import numpy as np
        >>> adjusted_rand_index(np.array([0, 0, 1, 1]), np.array([5, 5, 2, 2]))
        1.0
    """
    t = as_label_map(y_true, "y_true").ravel()
    p = as_label_map(y_pred, "y_pred").ravel()
    if t.shape != p.shape:
        raise ValueError(f"'y_true' and 'y_pred' must have the same size. Got {t.size} and {p.size}.")
    n = t.size
    t, nt = relabel(t)
    p, np_ = relabel(p)
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
