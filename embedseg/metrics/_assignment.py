"""Minimum-cost assignment (the rectangular linear sum assignment problem) in NumPy.

Instance matching needs an optimal one-to-one pairing; the core depends on torch and NumPy
only, so the solver is written here rather than taken from SciPy. It is the shortest
augmenting path form of the Hungarian method (Kuhn-Munkres with row and column potentials):
each row is added in turn and an augmenting path found by a Dijkstra-like scan whose inner
step is vectorized over the columns, O(n² m) for n <= m.
"""

from __future__ import annotations

import numpy as np


def linear_sum_assignment(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of a minimum-cost assignment of min(n, m) pairs in a finite (n, m) cost
    matrix; rows sorted increasingly, as ``scipy.optimize.linear_sum_assignment`` returns them."""
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2:
        raise ValueError(f"'cost' must be a 2-D matrix. Got an array of shape {cost.shape} instead.")
    if not np.all(np.isfinite(cost)):
        raise ValueError("'cost' must contain only finite values.")
    transposed = cost.shape[0] > cost.shape[1]
    if transposed:
        cost = cost.T
    n, m = cost.shape
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy()
    # 1-based rows and columns; column 0 is the virtual start of every augmenting path.
    u = np.zeros(n + 1)  # row potentials
    v = np.zeros(m + 1)  # column potentials
    owner = np.zeros(m + 1, dtype=np.int64)  # row assigned to each column, 0 = free
    way = np.zeros(m + 1, dtype=np.int64)  # previous column on the shortest path
    for i in range(1, n + 1):
        owner[0] = i
        j0 = 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = owner[j0]
            free = ~used[1:]
            reduced = cost[i0 - 1] - u[i0] - v[1:]  # (m,)
            better = free & (reduced < minv[1:])
            minv[1:][better] = reduced[better]
            way[1:][better] = j0
            candidates = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(candidates)) + 1
            delta = candidates[j1 - 1]
            u[owner[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if owner[j0] == 0:
                break
        while j0:  # flip the augmenting path
            j1 = way[j0]
            owner[j0] = owner[j1]
            j0 = j1
    cols = np.nonzero(owner[1:])[0]
    rows = owner[1:][cols] - 1
    if transposed:
        rows, cols = cols, rows
    order = np.argsort(rows, kind="stable")
    return rows[order].astype(np.int64), cols[order].astype(np.int64)
