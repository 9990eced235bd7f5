"""Automatic cluster counts: the batched silhouette against scikit-learn, and the accuracy of
the estimate on generated blobs of 2 to 5 clusters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import silhouette_score

from embedseg.cluster import KMeans
from embedseg.cluster.auto import estimate_n_clusters, silhouette_scores


def blob_item(rng, k, n, dim, unit):
    """k well-separated blobs of unequal sizes and spreads, like make_blobs; with ``unit``,
    unit-norm embedding-like clusters around random directions."""
    if unit:
        centers = rng.normal(size=(k, dim))
        centers /= np.linalg.norm(centers, axis=1, keepdims=True)
        # directions closer than 60 degrees are not "well separated" on the sphere
        while k > 1 and (centers @ centers.T - 2 * np.eye(k)).max() > 0.5:
            centers = rng.normal(size=(k, dim))
            centers /= np.linalg.norm(centers, axis=1, keepdims=True)
        spreads = rng.uniform(0.15, 0.3, size=k) / np.sqrt(dim)
    else:
        centers = rng.uniform(-10, 10, size=(k, dim))
        while k > 1 and min(
            np.linalg.norm(a - b) for i, a in enumerate(centers) for b in centers[i + 1 :]
        ) < 6:
            centers = rng.uniform(-10, 10, size=(k, dim))
        spreads = rng.uniform(0.5, 1.0, size=k)
    share = rng.dirichlet(np.full(k, 4.0))
    labels = rng.choice(k, size=n, p=share)
    labels[:k] = np.arange(k)  # every cluster present
    pts = centers[labels] + rng.normal(size=(n, dim)) * spreads[labels, None]
    if unit:
        pts /= np.linalg.norm(pts, axis=1, keepdims=True)
    return pts.astype(np.float32), labels


@pytest.mark.parametrize("dim", [2, 10, 40])
def test_silhouette_matches_scikit_learn(dim):
    rng = np.random.default_rng(dim)
    X = rng.normal(size=(3, 80, dim))
    labels = np.stack([np.stack([rng.integers(0, k, 80) for k in (2, 3, 5)]) for _ in range(3)])
    mask = rng.random((3, 80)) > 0.25
    got = silhouette_scores(
        torch.from_numpy(X), torch.from_numpy(mask), torch.from_numpy(labels), 5
    )  # (3, 3) float64
    for b in range(3):
        for j in range(3):
            m = mask[b]
            ref = silhouette_score(X[b][m], labels[b, j][m])
            assert got[b, j].item() == pytest.approx(ref, abs=1e-9)


def test_silhouette_handles_singletons_and_one_cluster():
    X = torch.tensor([[[0.0], [0.1], [5.0], [9.0]]], dtype=torch.float64)
    labels = torch.tensor([[[0, 0, 1, 2], [0, 0, 0, 0]]])
    got = silhouette_scores(X, torch.ones(1, 4, dtype=torch.bool), labels, 3)
    ref = silhouette_score(X[0].numpy(), labels[0, 0].numpy())
    assert got[0, 0].item() == pytest.approx(ref)
    assert torch.isnan(got[0, 1])  # a single cluster has no silhouette


def test_counts_are_right_on_at_least_90_percent_of_separated_items():
    rng = np.random.default_rng(0)
    hits, total = 0, 0
    for dim, unit in [(2, False), (8, False), (16, True), (40, True)]:
        ks = rng.integers(2, 6, size=12)
        n = int(rng.integers(400, 900))
        X = torch.from_numpy(np.stack([blob_item(rng, int(k), n, dim, unit)[0] for k in ks]))
        est = estimate_n_clusters(X, max_clusters=8, seed=0)
        assert est.dtype == torch.int64 and est.shape == (12,)
        hits += int((est.numpy() == ks).sum())
        total += ks.size
    assert hits / total >= 0.9, f"{hits}/{total} counts right"


def test_variable_lengths_and_masked_garbage():
    rng = np.random.default_rng(1)
    ks = [2, 3, 4, 5]
    X = np.zeros((4, 700, 6), dtype=np.float32)
    lengths = [700, 500, 650, 300]
    for b, (k, n) in enumerate(zip(ks, lengths)):
        X[b, :n] = blob_item(rng, k, n, 6, unit=False)[0]
    mask = torch.arange(700)[None, :] < torch.tensor(lengths)[:, None]
    Xt = torch.from_numpy(X)
    clean = estimate_n_clusters(Xt, mask, max_clusters=7)
    Xt[~mask] = torch.from_numpy(rng.normal(scale=100, size=(int((~mask).sum()), 6)).astype(np.float32))
    assert clean.tolist() == ks
    assert estimate_n_clusters(Xt, mask, max_clusters=7).tolist() == ks


def test_the_range_of_counts_is_respected():
    rng = np.random.default_rng(2)
    X = torch.from_numpy(np.stack([blob_item(rng, 6, 500, 5, unit=False)[0] for _ in range(2)]))
    assert estimate_n_clusters(X, max_clusters=4).tolist() == [4, 4]
    assert estimate_n_clusters(X, min_clusters=7, max_clusters=9).tolist() == [7, 7]
    assert estimate_n_clusters(X, max_clusters=8).tolist() == [6, 6]


def test_tiny_items_never_get_more_clusters_than_points():
    X = torch.randn(3, 10, 2, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(3, 10, dtype=torch.bool)
    mask[0, :1] = True
    mask[1, :2] = True
    mask[2, :4] = True
    est = estimate_n_clusters(X, mask, max_clusters=8)
    assert est[0] == 1 and est[1] == 2 and 2 <= int(est[2]) <= 3


def test_cosine_metric_ignores_norms():
    rng = np.random.default_rng(3)
    X = torch.from_numpy(np.stack([blob_item(rng, k, 600, 12, unit=True)[0] for k in (2, 3, 4)]))
    scale = torch.from_numpy(rng.uniform(0.1, 10.0, size=(3, 600, 1)).astype(np.float32))
    assert estimate_n_clusters(X * scale, metric="cosine").tolist() == [2, 3, 4]


def test_kmeans_auto_and_seeded_reproducibility():
    rng = np.random.default_rng(4)
    items = [blob_item(rng, k, 500, 8, unit=True) for k in (5, 2)]
    X = torch.from_numpy(np.stack([x for x, _ in items]))
    a = estimate_n_clusters(X, seed=7)
    assert torch.equal(a, estimate_n_clusters(X, seed=7))
    km = KMeans(n_clusters="auto", max_clusters=8).fit(X)
    assert km.n_clusters_.tolist() == [5, 2]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"min_clusters": 1}, ValueError, "'min_clusters'"),
        ({"max_clusters": 1}, ValueError, "'max_clusters'"),
        ({"min_clusters": 4, "max_clusters": 3}, ValueError, "'max_clusters'"),
        ({"sample_size": 2}, ValueError, "'sample_size'"),
        ({"n_init": 0}, ValueError, "'n_init'"),
        ({"metric": "l1"}, ValueError, "'metric'"),
        ({"seed": "0"}, TypeError, "'seed'"),
    ],
)
def test_bad_parameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        estimate_n_clusters(torch.randn(1, 20, 2), **kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match="finite"):
        estimate_n_clusters(torch.full((1, 5, 2), float("nan")))
    with pytest.raises(ValueError, match="3 dimensions"):
        estimate_n_clusters(torch.randn(5, 2))
    with pytest.raises(ValueError, match="at least one active point"):
        estimate_n_clusters(torch.randn(2, 5, 2), torch.zeros(2, 5, dtype=torch.bool))
