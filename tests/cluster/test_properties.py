"""Properties every registered clusterer has, on inputs drawn by hypothesis: any batch size,
point count, dim, mask, dtype and scale gives labels of the right shape within range, masked
points included; and on separated clusters the partition does not depend on the order of the
points within an item nor on their scale.

The draws are derandomized (the same examples on every run), so that a failure is
reproducible and CI never flakes; sizes are tiny so that the whole file takes seconds."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.cluster import KMeans as SkKMeans
from sklearn.metrics import adjusted_rand_score

from embedseg.cluster import (
    GaussianMixture,
    SklearnClusterer,
    create_clusterer,
    list_clusterers,
)

NAMES = list_clusterers()
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
SETTINGS = settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def build(name: str, k: int, scale: float):
    """The clusterer with k clusters; a GMM's variance floor is in the points' units."""
    if name == "sklearn":
        return SklearnClusterer(SkKMeans(n_init=1), n_clusters=k)
    if name == "gmm":
        return GaussianMixture(n_clusters=k, reg_covar=1e-6 * scale * scale)
    return create_clusterer(name, n_clusters=k)


@dataclass
class Problem:
    X: torch.Tensor  # (batch, n, dim)
    mask: torch.Tensor  # (batch, n) bool
    k: int
    scale: float
    seed: int


@st.composite
def problems(draw, separated: bool) -> Problem:
    """Items of k clusters; ``separated``: tight clusters around distinct basis directions (a
    unique optimum in every geometry), else unstructured points, duplicates or a coarse grid."""
    k = draw(st.integers(1, 3))
    batch = draw(st.integers(1, 3))
    dim = draw(st.integers(k, 4)) if separated else draw(st.integers(1, 4))
    per = draw(st.integers(2, 6))
    n = k * per + draw(st.integers(0, 3))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    scale = 10.0 ** draw(st.integers(-12, 12))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    if separated:
        centers = 10.0 * torch.eye(dim)[:k]  # (k, dim)
        y = torch.stack([torch.randperm(n, generator=g) % k for _ in range(batch)])  # (batch, n)
        X = centers[y] + 0.3 * torch.randn(batch, n, dim, generator=g, dtype=torch.float64)
    else:
        kind = draw(st.sampled_from(["normal", "duplicates", "grid"]))
        X = torch.randn(batch, n, dim, generator=g, dtype=torch.float64)
        if kind == "duplicates":
            X = X[:, :1].expand(batch, n, dim).clone()
        elif kind == "grid":
            X = X.round()
    mask = torch.ones(batch, n, dtype=torch.bool)
    if draw(st.booleans()):
        mask = torch.rand(batch, n, generator=g) > 0.3
        mask[:, : k * 2 if separated else k] = True  # (points are shuffled) every cluster keeps some
    return Problem((X * scale).to(dtype), mask, k, scale, seed)


def same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    return adjusted_rand_score(a.numpy(), b.numpy()) == 1.0


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(p=problems(separated=False))
def test_labels_have_the_contract_shape_and_range_for_any_input(name, p):
    est = build(name, p.k, p.scale).fit(p.X, p.mask)
    labels = est.labels_
    assert labels.shape == p.X.shape[:2] and labels.dtype == torch.int64
    if name == "sklearn":  # the clusters scikit-learn found: fewer on duplicate points
        assert all(1 <= c <= p.k for c in est.n_clusters_.tolist())
    else:
        assert est.n_clusters_.tolist() == [p.k] * p.X.shape[0]
    # every point, masked-out ones included, has a label in [0, n_clusters_[b])
    assert bool((labels >= 0).all()) and bool((labels < est.n_clusters_[:, None]).all())


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(p=problems(separated=True))
def test_the_partition_does_not_depend_on_the_order_of_the_points(name, p):
    labels = build(name, p.k, p.scale).fit_predict(p.X, p.mask)
    g = torch.Generator().manual_seed(p.seed + 1)
    perm = torch.stack([torch.randperm(p.X.shape[1], generator=g) for _ in range(p.X.shape[0])])  # (batch, n)
    X = torch.gather(p.X, 1, perm[..., None].expand_as(p.X))
    mask = torch.gather(p.mask, 1, perm)
    permuted = build(name, p.k, p.scale).fit_predict(X, mask)
    for b in range(p.X.shape[0]):
        assert same_partition(permuted[b], labels[b][perm[b]])


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(p=problems(separated=True), exponent=st.integers(-15, 15))
def test_the_partition_does_not_depend_on_the_scale(name, p, exponent):
    c = 10.0**exponent
    labels = build(name, p.k, p.scale).fit_predict(p.X, p.mask)
    scaled = build(name, p.k, p.scale * c).fit_predict((p.X.double() * c).to(p.X.dtype), p.mask)
    for b in range(p.X.shape[0]):
        assert same_partition(scaled[b], labels[b])
