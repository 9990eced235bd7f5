"""Magnitude never matters: points at 1e18 or 1e-18 (or far from the origin) are clustered as
the same points at an ordinary scale, fitted attributes come back in the caller's units, and
points of ordinary magnitude are not touched at all."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from embedseg.cluster import GaussianMixture, KMeans, SpectralClustering, _scaling


def blobs(batch=2, n=90, dim=4, seed=0, dtype=torch.float32):
    """Three separated blobs per item (spread 0.5 around 4 e_i), points shuffled."""
    g = torch.Generator().manual_seed(seed)
    y = torch.stack([torch.randperm(n, generator=g) % 3 for _ in range(batch)])
    X = 4.0 * torch.eye(dim)[y] + 0.5 * torch.randn(batch, n, dim, generator=g)
    return X.to(dtype), y


def make(name: str, c: float = 1.0):
    """The clusterer; a GMM's variance floor is in the units of X, so it scales with c²."""
    return {
        "kmeans": lambda: KMeans(n_clusters=3),
        "kmeans-cosine": lambda: KMeans(n_clusters=3, metric="cosine"),
        "gmm": lambda: GaussianMixture(n_clusters=3, reg_covar=1e-6 * c * c),
        "gmm-full": lambda: GaussianMixture(n_clusters=3, covariance_type="full", reg_covar=1e-6 * c * c),
        "spectral": lambda: SpectralClustering(n_clusters=3),
    }[name]()


NAMES = ["kmeans", "kmeans-cosine", "gmm", "gmm-full", "spectral"]


def same_partition(a, b) -> bool:
    return adjusted_rand_score(np.asarray(a), np.asarray(b)) == 1.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("c", [1e18, 1e-18])
@pytest.mark.parametrize("name", NAMES)
def test_labels_on_extreme_magnitudes_equal_those_at_ordinary_scale(name, c, dtype):
    X, y = blobs(dtype=dtype)
    ref = make(name).fit_predict(X)
    big = (X.double() * c).to(dtype)
    est = make(name, c).fit(big)
    for b in range(X.shape[0]):
        assert same_partition(est.labels_[b], ref[b])
        assert same_partition(est.labels_[b], y[b])
    assert torch.equal(est.predict(big), est.labels_)


@pytest.mark.parametrize("c", [1e18, 1e-18])
def test_fitted_attributes_come_back_in_the_callers_units(c):
    X, _ = blobs(dtype=torch.float64)
    Xc = X * c
    km, km_c = KMeans(n_clusters=3).fit(X), KMeans(n_clusters=3).fit(Xc)
    order = [int(torch.cdist(km.cluster_centers_[0], km_c.cluster_centers_[0] / c).argmin(1)[j]) for j in range(3)]
    torch.testing.assert_close(km_c.cluster_centers_[0, order] / c, km.cluster_centers_[0], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(km_c.inertia_ / c**2, km.inertia_, rtol=1e-9, atol=0)
    torch.testing.assert_close(km_c.predict_proba(Xc).sum(-1), torch.ones(X.shape[:2], dtype=X.dtype))

    g, g_c = GaussianMixture(n_clusters=3).fit(X), GaussianMixture(n_clusters=3, reg_covar=1e-6 * c * c).fit(Xc)
    order = torch.cdist(g.means_[0], g_c.means_[0] / c).argmin(1)
    torch.testing.assert_close(g_c.means_[0, order] / c, g.means_[0], rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(g_c.covariances_[0, order] / c**2, g.covariances_[0], rtol=1e-7, atol=1e-12)
    torch.testing.assert_close(g_c.precisions_cholesky_[0, order] * c, g.precisions_cholesky_[0], rtol=1e-7, atol=1e-9)
    # log-densities of x·c are those of x minus dim·log(c)
    shift = X.shape[2] * math.log(c)
    torch.testing.assert_close(g_c.lower_bound_, g.lower_bound_ - shift, rtol=1e-9, atol=1e-6)
    torch.testing.assert_close(g_c.score_samples(Xc), g.score_samples(X) - shift, rtol=1e-9, atol=1e-6)
    torch.testing.assert_close(g_c.predict_proba(Xc)[0][:, order], g.predict_proba(X)[0], rtol=0, atol=1e-9)

    sc = SpectralClustering(n_clusters=3, affinity="linear", normalized=False).fit(X)
    sc_c = SpectralClustering(n_clusters=3, affinity="linear", normalized=False).fit(Xc)
    torch.testing.assert_close(sc_c.eigenvalues_ / c**2, sc.eigenvalues_, rtol=1e-9, atol=1e-9)


def test_ordinary_points_are_untouched_and_scaling_by_two_is_exact():
    X, _ = blobs(seed=3)
    mask = torch.ones(X.shape[:2], dtype=torch.bool)
    out, shift, scale = _scaling.fit_transform(X, _scaling.extent(X, mask), centre=True)
    assert out is X and shift is None and scale is None  # no copy
    ref = KMeans(n_clusters=3, init_size=None).fit(X)
    for k in (-70, 70):  # outside the ordinary range: the fit runs on X again, bit for bit
        est = KMeans(n_clusters=3, init_size=None).fit(X * 2.0**k)
        assert torch.equal(est.labels_, ref.labels_)
        assert torch.equal(est.cluster_centers_, ref.cluster_centers_ * 2.0**k)
        assert torch.equal(est.n_iter_, ref.n_iter_)


def test_the_extent_ignores_masked_points_but_not_their_nans():
    X = torch.tensor([[[1.0, -2.0], [1e30, 5.0]], [[3.0, 0.5], [0.0, -4.0]]])
    mask = torch.tensor([[True, False], [True, True]])
    where = _scaling.extent(X, mask)  # item 0 could be out of range: exact extremes
    assert where.high.tolist() == [1.0, 3.0] and where.low.tolist() == [-2.0, -4.0] and where.finite
    X[0, 1, 0] = float("nan")
    assert not _scaling.extent(X, mask).finite
    assert not _scaling.extent(X, torch.ones(2, 2, dtype=torch.bool)).finite
    # ordinary points: the global extremes bound every item's
    Y = torch.tensor([[[1.0, -2.0], [7.0, 5.0]], [[3.0, 0.5], [0.25, -4.0]]])
    where = _scaling.extent(Y, mask)
    assert bool((where.high >= torch.tensor([1.0, 3.0])).all() and (where.low <= torch.tensor([-2.0, -4.0])).all())
    # tiny active points next to ordinary padding are found through the sample
    Z = torch.tensor([[[1e-30, -2e-30], [7.0, 5.0]], [[3.0, 0.5], [0.25, -4.0]]])
    where = _scaling.extent(Z, mask)
    assert where.high.tolist()[0] == pytest.approx(1e-30) and where.low.tolist()[0] == pytest.approx(-2e-30)


def test_an_item_far_from_the_origin_is_centred_and_scaled_to_unit_magnitude():
    X, _ = blobs(batch=3)
    X[1] += 1e4  # far from the origin compared with its spread
    X[2] *= 1e20
    mask = torch.ones(X.shape[:2], dtype=torch.bool)
    out, shift, scale = _scaling.fit_transform(X, _scaling.extent(X, mask), centre=True)
    assert shift is not None and shift[0].abs().max() == 0 and shift[2].abs().max() == 0
    assert shift[1].min() > 9e3
    assert scale[0] == 1 and scale[1] == 1 and math.log2(float(scale[2])) % 1 == 0
    assert 0.25 < float(out[2].abs().max()) < 4
    # no centring without it: a cosine geometry is anchored at the origin
    _, shift, _ = _scaling.fit_transform(X, _scaling.extent(X, mask), centre=False)
    assert shift is None


def test_points_far_from_the_origin_keep_their_clusters():
    # float32 holds 1e4 + 0.5 to 1e-3: the clusters are there, but ||x||² ~ 1e8 would lose
    # every distance to rounding without the centring.
    X, y = blobs(dtype=torch.float32)
    labels = KMeans(n_clusters=3).fit_predict(X + 1e4)
    for b in range(X.shape[0]):
        assert same_partition(labels[b], y[b])
    # centers in the caller's coordinates; unused slots stay zero
    km = KMeans(n_clusters=[2, 3], tol=0.0).fit(X.double() + 1e4)
    assert bool((km.cluster_centers_[0, 2] == 0).all())
    for b, k in enumerate([2, 3]):
        for c in range(k):
            mean = (X.double() + 1e4)[b][km.labels_[b] == c].mean(0)
            torch.testing.assert_close(km.cluster_centers_[b, c], mean, rtol=1e-12, atol=1e-8)


def test_masked_padding_never_decides_the_scale():
    X, _ = blobs()
    mask = torch.ones(X.shape[:2], dtype=torch.bool)
    mask[:, 60:] = False
    padded = X.clone()
    padded[:, 60:] = 3e38  # padding near float32's largest value
    for name in NAMES:
        clean = make(name).fit_predict(X[:, :60])
        labels = make(name).fit_predict(padded, mask)
        for b in range(X.shape[0]):
            assert same_partition(labels[b, :60], clean[b]), name
        assert bool((labels >= 0).all()) and bool((labels < 3).all())


def test_a_variance_floor_that_swamps_tiny_points_is_refused_with_the_fix():
    X, _ = blobs()
    with pytest.raises(ValueError, match=r"'reg_covar' parameter of GaussianMixture \(1e-06.*reg_covar \* c\*\*2"):
        GaussianMixture(n_clusters=3).fit(X * 1e-18)
