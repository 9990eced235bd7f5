"""SpectralClustering: its low-rank eigenvectors against an explicit float64 n x n
eigendecomposition, its accuracy against scikit-learn's, and the batched contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import SpectralClustering as SkSpectral
from sklearn.metrics import adjusted_rand_score

from embedseg.cluster import SpectralClustering
from embedseg.cluster.spectral import spectral_embedding


def embedding_like(batch=1, n=600, dim=16, k=3, spread=1.0, seed=0):
    """Unit-norm points around k random unit directions per item (float32 X, int64 y)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(batch, k, dim, generator=g)
    centers = centers / centers.norm(dim=-1, keepdim=True)
    y = torch.multinomial(torch.linspace(1.0, 2.0, k).expand(batch, k), n, replacement=True, generator=g)
    X = torch.gather(centers, 1, y[..., None].expand(-1, -1, dim))
    X = X + spread * torch.randn(batch, n, dim, generator=g) / dim**0.5
    return X / X.norm(dim=-1, keepdim=True), y


def explicit_operator(V: torch.Tensor, affinity: str, normalized: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The n x n matrix whose top eigenvectors spectral clustering uses, in float64, and the
    degrees: (1 + cos)/2 or V Vᵀ, then D^{-1/2} A D^{-1/2} when normalized."""
    V = V.double()
    if affinity == "shifted_cosine":
        U = V / V.norm(dim=1, keepdim=True)
        A = (1.0 + U @ U.T) / 2.0
    else:
        A = V @ V.T
    deg = A.sum(1)
    if normalized:
        A = A / deg.sqrt()[:, None] / deg.sqrt()[None, :]
    return A, deg


def top_eigvecs(M: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    evals, evecs = torch.linalg.eigh(M)
    return evals.flip(0), evecs.flip(1)[:, :k]


def assert_same_up_to_sign(a: torch.Tensor, b: torch.Tensor, atol: float) -> None:
    """Columns of a equal those of b up to a sign each."""
    sign = torch.sign((a * b).sum(0))
    torch.testing.assert_close(a * sign, b, atol=atol, rtol=0)


@pytest.mark.parametrize(
    "affinity, normalized",
    [("shifted_cosine", True), ("shifted_cosine", False), ("linear", False), ("linear", True)],
)
def test_low_rank_eigenvectors_equal_the_explicit_n_by_n_eigendecomposition(affinity, normalized):
    g = torch.Generator().manual_seed(0)
    V = torch.randn(2, 70, 5, generator=g, dtype=torch.float64)
    if affinity == "linear" and normalized:
        V = V.abs()  # non-negative features: positive degrees
    mask = torch.rand(2, 70, generator=g) > 0.25
    k = 4
    U, evals, _, _ = spectral_embedding(V, mask, k, affinity=affinity, normalized=normalized)
    for b in range(2):
        M, _ = explicit_operator(V[b][mask[b]], affinity, normalized)
        ref_vals, ref_vecs = top_eigvecs(M, k)
        r = evals.shape[1]
        torch.testing.assert_close(evals[b], ref_vals[:r], atol=1e-10, rtol=0)
        assert_same_up_to_sign(U[b][mask[b]], ref_vecs, atol=1e-9)


def test_masked_points_are_placed_by_the_nystrom_extension():
    g = torch.Generator().manual_seed(1)
    V = torch.randn(1, 50, 6, generator=g, dtype=torch.float64)
    mask = torch.rand(1, 50, generator=g) > 0.3
    k = 3
    U, _, deg, _ = spectral_embedding(V, mask, k)
    # Explicitly: u(x) = (1/λ) Σ_j d(x)^{-1/2} A(x, x_j) d_j^{-1/2} u_j over the active x_j.
    unit = V[0] / V[0].norm(dim=1, keepdim=True)
    A = (1.0 + unit @ unit[mask[0]].T) / 2.0  # (n, n_active)
    d_all = A.sum(1)
    torch.testing.assert_close(deg[0], d_all)
    L = A / d_all.sqrt()[:, None] / d_all[mask[0]].sqrt()[None, :]
    ref_vals, ref_vecs = top_eigvecs(L[mask[0]], k)
    expected = L @ ref_vecs / ref_vals[:k]
    assert_same_up_to_sign(U[0], expected, atol=1e-9)


def test_accuracy_matches_sklearn_on_embedding_like_blobs():
    # Overlapping sources, so that accuracy is not saturated; single items of a few hundred
    # points vary by +-0.02 ARI between any two good methods, hence the mean over items.
    X, y = embedding_like(batch=6, n=400, dim=16, spread=1.1, seed=2)
    sk = SkSpectral(n_clusters=3, affinity="nearest_neighbors", random_state=0)
    ref = np.mean([adjusted_rand_score(y[b], sk.fit_predict(X[b].double().numpy())) for b in range(6)])
    assert ref > 0.85  # clusterable, not a coin toss
    for normalized in (True, False):
        ours = SpectralClustering(n_clusters=3, normalized=normalized).fit_predict(X)
        score = np.mean([adjusted_rand_score(y[b], ours[b]) for b in range(6)])
        assert score >= ref - 0.01, (normalized, score, ref)


def test_both_embedding_scalings_recover_separated_sources():
    X, y = embedding_like(batch=2, n=400, dim=16, spread=0.6, seed=3)
    for norm in ("degree", "rows"):
        labels = SpectralClustering(n_clusters=3, embedding_norm=norm).fit_predict(X)
        assert all(adjusted_rand_score(y[b], labels[b]) == 1.0 for b in range(2))


def test_batched_fit_equals_fitting_each_item_alone():
    X, _ = embedding_like(batch=3, n=300, spread=1.0, seed=4)
    mask = torch.rand(3, 300, generator=torch.Generator().manual_seed(0)) > 0.1
    est = SpectralClustering(n_clusters=3).fit(X, mask)
    for b in range(3):
        alone = SpectralClustering(n_clusters=3).fit(X[b : b + 1], mask[b : b + 1])
        torch.testing.assert_close(est.eigenvalues_[b], alone.eigenvalues_[0], atol=1e-5, rtol=0)
        assert_same_up_to_sign(est.embedding_[b], alone.embedding_[0], atol=1e-4)
        assert adjusted_rand_score(alone.labels_[0], est.labels_[b]) == 1.0


def test_masked_points_take_no_part_in_the_affinity_but_are_labelled():
    X, y = embedding_like(n=400, spread=0.8, seed=5)
    mask = torch.ones(1, 400, dtype=torch.bool)
    mask[0, 300:] = False
    garbage = X.clone()
    garbage[0, 300:] = torch.randn(100, X.shape[2])  # padding: must not move anything
    est = SpectralClustering(n_clusters=3).fit(garbage, mask)
    subset = SpectralClustering(n_clusters=3).fit(X[:, :300])
    torch.testing.assert_close(est.eigenvalues_, subset.eigenvalues_, atol=1e-5, rtol=0)
    assert_same_up_to_sign(est.embedding_[0, :300], subset.embedding_[0], atol=1e-4)
    assert adjusted_rand_score(subset.labels_[0], est.labels_[0, :300]) == 1.0
    # Every point is labelled through the same map: predict agrees with labels_.
    assert torch.equal(est.predict(garbage), est.labels_)
    # Clean held-out points of the same sources land in their source's cluster.
    held_out = SpectralClustering(n_clusters=3).fit(X, mask)
    assert adjusted_rand_score(y[0, 300:], held_out.labels_[0, 300:]) > 0.95


def test_per_item_counts_use_each_items_top_eigenvectors():
    a, ya = embedding_like(n=300, k=2, spread=0.6, seed=6)
    b, yb = embedding_like(n=300, k=4, spread=0.6, seed=7)
    X = torch.cat([a, b])
    est = SpectralClustering(n_clusters=torch.tensor([2, 4])).fit(X)
    assert est.n_clusters_.tolist() == [2, 4]
    assert est.embedding_.shape == (2, 300, 4)
    assert bool((est.embedding_[0, :, 2:] == 0).all())
    assert adjusted_rand_score(ya[0], est.labels_[0]) == 1.0
    assert adjusted_rand_score(yb[0], est.labels_[1]) == 1.0
    assert est.get_params()["n_clusters"] == [2, 4]


def test_auto_estimates_each_items_count():
    a, _ = embedding_like(n=400, k=2, spread=0.5, seed=8)
    b, _ = embedding_like(n=400, k=5, spread=0.5, seed=9)
    est = SpectralClustering(n_clusters="auto", max_clusters=6).fit(torch.cat([a, b]))
    assert est.n_clusters_.tolist() == [2, 5]


def test_an_image_worth_of_points_never_needs_the_n_by_n_affinity():
    # 65,536 points: the n x n affinity would take 17 GB in float32.
    X, y = embedding_like(n=256 * 256, dim=32, spread=1.0, seed=10)
    labels = SpectralClustering(n_clusters=3).fit_predict(X)
    assert adjusted_rand_score(y[0], labels[0]) > 0.99


@pytest.mark.parametrize(
    "params, error, match",
    [
        ({"affinity": "rbf"}, ValueError, r"'affinity' parameter of SpectralClustering must be one of 'shifted_cosine', 'linear'\. Got 'rbf'"),
        ({"embedding_norm": "l2"}, ValueError, r"'embedding_norm' parameter"),
        ({"normalized": 1}, TypeError, r"'normalized' parameter of SpectralClustering must be a bool"),
        ({"n_init": 0}, ValueError, r"'n_init' parameter"),
        ({"max_iter": 0}, ValueError, r"'max_iter' parameter"),
        ({"n_clusters": 0}, ValueError, r"'n_clusters' parameter"),
        ({"n_clusters": "auto", "max_clusters": 1}, ValueError, r"'max_clusters' parameter"),
        ({"seed": -3}, ValueError, r"'seed' parameter"),
    ],
)
def test_bad_parameters_are_rejected_at_fit_with_a_clear_message(params, error, match):
    X, _ = embedding_like(n=30)
    with pytest.raises(error, match=match):
        SpectralClustering(**params).fit(X)


def test_linear_affinity_with_negative_degrees_cannot_be_normalized():
    X = torch.randn(1, 40, 4, generator=torch.Generator().manual_seed(11))
    X[0, :20] = -X[0, 20:]  # degrees of a symmetric cloud are zero or negative
    with pytest.raises(ValueError, match="positive degrees"):
        SpectralClustering(affinity="linear").fit(X)
    SpectralClustering(affinity="linear", normalized=False).fit(X)  # unnormalized is fine
