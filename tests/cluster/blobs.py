"""Synthetic clustering data the cluster tests share."""

import numpy as np
import torch


def gaussian_items(batch, n, dim, k, spread, seed, unit=False):
    """Items of k Gaussian clusters of unequal sizes around random centers (float32)."""
    rng = np.random.default_rng(seed)
    X = np.empty((batch, n, dim), dtype=np.float32)
    y = np.empty((batch, n), dtype=np.int64)
    for b in range(batch):
        centers = rng.normal(size=(k, dim))
        if unit:
            centers /= np.linalg.norm(centers, axis=1, keepdims=True)
        lab = rng.choice(k, size=n, p=rng.dirichlet(np.full(k, 3.0)))
        pts = centers[lab] + rng.normal(scale=spread, size=(n, dim))
        if unit:
            pts /= np.linalg.norm(pts, axis=1, keepdims=True)
        X[b], y[b] = pts, lab
    return torch.from_numpy(X), torch.from_numpy(y)
