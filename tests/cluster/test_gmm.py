"""GaussianMixture against scikit-learn's: fitted parameters, log-likelihoods, accuracy; and the
batched contract (items independent, masked points ignored, per-item counts)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture as SkGMM
from sklearn.mixture._gaussian_mixture import _compute_precision_cholesky

from embedseg.cluster import GaussianMixture

COV_TYPES = ["diag", "full", "spherical"]


def blobs(n=400, dim=4, k=3, seed=0, std=(1.0, 2.0, 0.5)):
    """Well-separated anisotropic-ish blobs in float64 (numpy X, y)."""
    X, y = make_blobs(n_samples=n, centers=k, n_features=dim, random_state=seed,
                      cluster_std=list(std)[:k], center_box=(-15, 15))
    scale = np.linspace(0.5, 2.0, dim)  # unequal variances per dimension
    return X * scale, y


def match(ours_means: np.ndarray, ref_means: np.ndarray) -> np.ndarray:
    """Permutation p with ours[p[j]] ~ ref[j] (Hungarian matching on mean distances)."""
    cost = ((ref_means[:, None, :] - ours_means[None, :, :]) ** 2).sum(-1)
    _, cols = linear_sum_assignment(cost)
    return cols


def sk_with_params(g: GaussianMixture, b: int, ctype: str) -> SkGMM:
    """A scikit-learn mixture holding item b's fitted parameters."""
    sk = SkGMM(int(g.n_clusters_[b]), covariance_type=ctype)
    k = int(g.n_clusters_[b])
    sk.weights_ = g.weights_[b, :k].double().numpy()
    sk.means_ = g.means_[b, :k].double().numpy()
    sk.covariances_ = g.covariances_[b, :k].double().numpy()
    sk.precisions_cholesky_ = _compute_precision_cholesky(sk.covariances_, ctype)
    return sk


@pytest.mark.parametrize("ctype", COV_TYPES)
def test_fit_matches_sklearn_parameters_and_accuracy(ctype):
    X, y = blobs()
    ours = GaussianMixture(n_clusters=3, covariance_type=ctype, tol=1e-8, max_iter=500)
    labels = ours.fit_predict(torch.from_numpy(X)[None])[0].numpy()
    sk = SkGMM(3, covariance_type=ctype, tol=1e-8, max_iter=500, random_state=0).fit(X)
    p = match(ours.means_[0].numpy(), sk.means_)
    np.testing.assert_allclose(ours.means_[0].numpy()[p], sk.means_, atol=1e-6)
    np.testing.assert_allclose(ours.weights_[0].numpy()[p], sk.weights_, atol=1e-6)
    np.testing.assert_allclose(ours.covariances_[0].numpy()[p], sk.covariances_, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(float(ours.lower_bound_[0]), sk.lower_bound_, rtol=1e-7)
    assert bool(ours.converged_[0])
    assert adjusted_rand_score(y, labels) >= adjusted_rand_score(y, sk.predict(X)) - 0.01


@pytest.mark.parametrize("ctype", COV_TYPES)
def test_log_likelihood_and_posteriors_match_sklearn_on_the_same_parameters(ctype):
    X, _ = blobs(seed=1)
    Xt = torch.from_numpy(X)[None]
    ours = GaussianMixture(n_clusters=3, covariance_type=ctype).fit(Xt)
    sk = sk_with_params(ours, 0, ctype)
    np.testing.assert_allclose(ours.score_samples(Xt)[0].numpy(), sk.score_samples(X), rtol=1e-10)
    np.testing.assert_allclose(float(ours.score(Xt)[0]), sk.score(X), rtol=1e-10)
    np.testing.assert_allclose(ours.predict_proba(Xt)[0].numpy(), sk.predict_proba(X), atol=1e-10)
    assert np.array_equal(ours.predict(Xt)[0].numpy(), sk.predict(X))
    # Points far from every component: the log-sum-exp keeps posteriors exact, not NaN.
    far = Xt + 1e4
    proba = ours.predict_proba(far)
    assert bool(torch.isfinite(proba).all())
    np.testing.assert_allclose(proba[0].numpy(), sk.predict_proba(X + 1e4), atol=1e-8)


def test_float32_fit_is_as_accurate_as_float64():
    X, y = blobs(n=600, dim=8, seed=2)
    X = X + 50.0  # far from the origin: the centring keeps float32 expansions accurate
    l64 = GaussianMixture(n_clusters=3).fit_predict(torch.from_numpy(X)[None])[0].numpy()
    l32 = GaussianMixture(n_clusters=3).fit_predict(torch.from_numpy(X).float()[None])[0].numpy()
    assert adjusted_rand_score(y, l32) == pytest.approx(adjusted_rand_score(y, l64), abs=1e-3)
    assert adjusted_rand_score(y, l32) > 0.95


@pytest.mark.parametrize("init", ["kmeans", "k-means++", "random"])
def test_every_start_fits_an_item_for_its_own_count_whatever_its_batch_mates_need(init):
    # Per-item counts: the components beyond an item's count are disabled, and its start is
    # the one it gets alone (no structure in the points, so another start ends elsewhere).
    X = torch.rand(3, 300, 2, generator=torch.Generator().manual_seed(7))
    counts = torch.tensor([2, 3, 6])
    together = GaussianMixture(n_clusters=counts, init=init, max_clusters=8).fit_predict(X)
    for b, k in enumerate(counts.tolist()):
        alone = GaussianMixture(n_clusters=k, init=init, max_clusters=8).fit_predict(X[b : b + 1])[0]
        assert torch.equal(together[b], alone), b


@pytest.mark.parametrize("ctype", COV_TYPES)
def test_batched_fit_equals_fitting_each_item_alone(ctype):
    items = [blobs(n=300, dim=3, seed=s) for s in (3, 4, 5)]
    X = torch.from_numpy(np.stack([x for x, _ in items]))
    est = GaussianMixture(n_clusters=3, covariance_type=ctype, tol=1e-9, max_iter=500).fit(X)
    for b in range(3):
        alone = GaussianMixture(n_clusters=3, covariance_type=ctype, tol=1e-9, max_iter=500)
        alone.fit(X[b : b + 1])
        assert adjusted_rand_score(alone.labels_[0].numpy(), est.labels_[b].numpy()) == 1.0
        p = match(est.means_[b].numpy(), alone.means_[0].numpy())
        np.testing.assert_allclose(est.means_[b].numpy()[p], alone.means_[0].numpy(), atol=1e-5)
        np.testing.assert_allclose(est.weights_[b].numpy()[p], alone.weights_[0].numpy(), atol=1e-6)


def test_masked_points_take_no_part_in_the_fit_but_are_labelled():
    X, _ = blobs(n=300, seed=6)
    Xt = torch.from_numpy(X)[None].clone()
    mask = torch.zeros(1, 300, dtype=torch.bool)
    mask[0, :240] = True
    Xt[0, 240:] = 1e3  # padding garbage far away: must not move anything
    masked = GaussianMixture(n_clusters=3, tol=1e-9).fit(Xt, mask)
    subset = GaussianMixture(n_clusters=3, tol=1e-9).fit(Xt[:, :240])
    p = match(masked.means_[0].numpy(), subset.means_[0].numpy())
    np.testing.assert_allclose(masked.means_[0].numpy()[p], subset.means_[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(masked.covariances_[0].numpy()[p], subset.covariances_[0].numpy(), rtol=1e-5)
    np.testing.assert_allclose(float(masked.lower_bound_[0]), float(subset.lower_bound_[0]), rtol=1e-8)
    # Every point, masked ones included, carries the label predict gives it.
    assert torch.equal(masked.labels_, masked.predict(Xt))


def test_per_item_counts_disable_the_extra_components():
    a, _ = blobs(n=300, k=2, seed=7)
    b, _ = blobs(n=300, k=3, seed=8)
    X = torch.from_numpy(np.stack([a, b]))
    est = GaussianMixture(n_clusters=torch.tensor([2, 3]), tol=1e-9).fit(X)
    assert est.n_clusters_.tolist() == [2, 3]
    assert float(est.weights_[0, 2]) == 0.0
    proba = est.predict_proba(X)  # (2, 300, 3)
    assert bool((proba[0, :, 2] == 0).all())
    np.testing.assert_allclose(proba.sum(-1).numpy(), 1.0, atol=1e-12)
    assert int(est.labels_[0].max()) == 1
    alone = GaussianMixture(n_clusters=2, tol=1e-9).fit(X[:1])
    np.testing.assert_allclose(float(est.lower_bound_[0]), float(alone.lower_bound_[0]), rtol=1e-8)
    assert est.get_params()["n_clusters"] == [2, 3]


def test_auto_estimates_each_items_count():
    a, ya = blobs(n=400, dim=6, k=2, seed=9)
    b, yb = make_blobs(n_samples=400, centers=4, n_features=6, random_state=10, center_box=(-20, 20))
    X = torch.from_numpy(np.stack([a, b])).float()
    est = GaussianMixture(n_clusters="auto", max_clusters=6).fit(X)
    assert est.n_clusters_.tolist() == [2, 4]
    assert est.predict_proba(X).shape == (2, 400, 6)
    assert adjusted_rand_score(ya, est.labels_[0].numpy()) > 0.95
    assert adjusted_rand_score(yb, est.labels_[1].numpy()) > 0.95


def test_converged_items_are_frozen_and_iterations_counted_per_item():
    X, _ = blobs(n=300, seed=11)
    hard, _ = blobs(n=300, seed=12, std=(3.0, 3.0, 3.0))
    batch = torch.from_numpy(np.stack([X, hard]))
    est = GaussianMixture(n_clusters=3, tol=1e-6, max_iter=300).fit(batch)
    alone = GaussianMixture(n_clusters=3, tol=1e-6, max_iter=300).fit(batch[:1])
    assert int(est.n_iter_[0]) == int(alone.n_iter_[0])
    capped = GaussianMixture(n_clusters=3, tol=0.0, max_iter=2).fit(batch)
    assert capped.n_iter_.tolist() == [2, 2]
    assert not bool(capped.converged_.any())


@pytest.mark.parametrize("init", ["kmeans", "k-means++", "random"])
def test_every_init_reaches_the_blobs(init):
    X, y = blobs(n=300, seed=13)
    est = GaussianMixture(n_clusters=3, init=init, n_init=2, seed=1).fit(torch.from_numpy(X)[None])
    assert adjusted_rand_score(y, est.labels_[0].numpy()) > 0.95


def test_more_initializations_never_lower_the_likelihood():
    X = torch.from_numpy(np.stack([blobs(n=300, seed=s, std=(2.5, 2.5, 2.5))[0] for s in (14, 15)]))
    one = GaussianMixture(n_clusters=4, init="random", n_init=1, max_iter=40).fit(X)
    many = GaussianMixture(n_clusters=4, init="random", n_init=3, max_iter=40).fit(X)
    assert bool((many.lower_bound_ >= one.lower_bound_ - 1e-12).all())


@pytest.mark.parametrize(
    "params, error, match",
    [
        ({"covariance_type": "foo"}, ValueError, r"'covariance_type' parameter of GaussianMixture must be one of 'diag', 'full', 'spherical'\. Got 'foo'"),
        ({"reg_covar": -1e-3}, ValueError, r"'reg_covar' parameter of GaussianMixture must be a float in \[0, inf\)\. Got -0\.001"),
        ({"tol": -1.0}, ValueError, r"'tol' parameter"),
        ({"max_iter": 0}, ValueError, r"'max_iter' parameter of GaussianMixture must be an int in \[1, inf\)"),
        ({"max_iter": 1.5}, TypeError, r"'max_iter' parameter"),
        ({"n_init": 0}, ValueError, r"'n_init' parameter"),
        ({"init": "kmeans++"}, ValueError, r"'init' parameter of GaussianMixture must be one of 'kmeans', 'k-means\+\+', 'random'"),
        ({"n_clusters": 0}, ValueError, r"'n_clusters' parameter"),
        ({"n_clusters": "many"}, ValueError, r"'n_clusters' parameter"),
        ({"n_clusters": "auto", "max_clusters": 1}, ValueError, r"'max_clusters' parameter"),
        ({"seed": -1}, ValueError, r"'seed' parameter"),
    ],
)
def test_bad_parameters_are_rejected_at_fit_with_a_clear_message(params, error, match):
    X = torch.randn(1, 20, 2)
    with pytest.raises(error, match=match):
        GaussianMixture(**params).fit(X)


def test_collapsed_component_without_variance_floor_asks_for_reg_covar():
    X = torch.zeros(1, 30, 2, dtype=torch.float64)
    X[0, 15:] = 5.0  # two clusters of identical points: zero variance
    with pytest.raises(ValueError, match="reg_covar"):
        GaussianMixture(n_clusters=2, covariance_type="full", reg_covar=0.0).fit(X)
    est = GaussianMixture(n_clusters=2, covariance_type="full").fit(X)  # the default floor copes
    assert adjusted_rand_score([0] * 15 + [1] * 15, est.labels_[0].numpy()) == 1.0


def test_score_over_a_mask_that_empties_an_item_is_rejected():
    X = torch.from_numpy(blobs()[0])[None].repeat(2, 1, 1)  # (2, n, dim)
    est = GaussianMixture(n_clusters=3).fit(X)
    mask = torch.ones(X.shape[:2], dtype=torch.bool)
    mask[1] = False
    with pytest.raises(ValueError, match=r"'mask' must leave at least one active point per item. Items \[1\]"):
        est.score(X, mask)
    mask[1, 0] = True
    np.testing.assert_allclose(float(est.score(X, mask)[1]), float(est.score_samples(X)[1, 0]), rtol=1e-12)
