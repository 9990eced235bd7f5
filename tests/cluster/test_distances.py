"""The batched kernels on points and centers against float64 and NumPy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedseg.cluster import _distances


def test_sq_distances_match_float64_pairwise():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(3, 50, 7, generator=g)
    C = torch.randn(3, 4, 7, generator=g)
    ref = torch.cdist(X.double(), C.double()) ** 2
    torch.testing.assert_close(_distances.sq_distances(X, C).double(), ref, rtol=1e-4, atol=1e-4)
    assert bool((_distances.sq_distances(X, X) >= 0).all())  # clamped despite rounding


def test_gather_points_and_center_valid():
    X = torch.arange(24.0).view(2, 4, 3)
    idx = torch.tensor([[3, 0], [1, 1]])
    assert torch.equal(_distances.gather_points(X, idx), torch.stack([X[0, [3, 0]], X[1, [1, 1]]]))
    valid = _distances.center_valid(torch.tensor([1, 3]), 4)
    assert valid.tolist() == [[True, False, False, False], [True, True, True, False]]


def test_masked_mean_variance_matches_numpy():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(2, 30, 4, generator=g, dtype=torch.float64)
    mask = torch.rand(2, 30, generator=g) > 0.4
    got = _distances.masked_mean_variance(X, mask)
    for b in range(2):
        assert got[b].item() == pytest.approx(np.var(X[b][mask[b]].numpy(), axis=0).mean())
