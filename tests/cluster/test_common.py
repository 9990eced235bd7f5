"""Checks every registered clusterer gets: the estimator contract, batching, masking, input
validation, "auto" and per-item counts, against ground truth and scikit-learn's ARI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans as SkKMeans
from sklearn.metrics import adjusted_rand_score

from embedseg.cluster import (
    CLUSTERERS,
    BaseClusterer,
    SklearnClusterer,
    create_clusterer,
    list_clusterers,
)
from embedseg.errors import NotFittedError

NAMES = list_clusterers()


def make(name: str, **params) -> BaseClusterer:
    """A clusterer with sensible parameters for small easy blobs."""
    params = {"n_clusters": 3, "seed": 0, **params}
    if name == "sklearn":
        return SklearnClusterer(estimator=SkKMeans(n_init=1), **params)
    return create_clusterer(name, **params)


def blobs(batch: int = 3, n: int = 120, dim: int = 4, k: int = 3, seed: int = 0, unit: bool = True):
    """Well-separated blobs (float32): unit-norm embedding-like if ``unit``, else in a box."""
    rng = np.random.default_rng(seed)
    X = np.empty((batch, n, dim), dtype=np.float32)
    y = np.empty((batch, n), dtype=np.int64)
    for b in range(batch):
        centers = np.eye(dim)[rng.permutation(dim)[:k]] * (1.0 if unit else 8.0)
        lab = rng.permutation(np.arange(n) % k)
        pts = centers[lab] + rng.normal(scale=0.08 if unit else 0.6, size=(n, dim))
        if unit:
            pts /= np.linalg.norm(pts, axis=1, keepdims=True)
        X[b], y[b] = pts, lab
    return torch.from_numpy(X), torch.from_numpy(y)


def ari(a: torch.Tensor, b: torch.Tensor) -> float:
    return adjusted_rand_score(a.cpu().numpy(), b.cpu().numpy())


@pytest.fixture(params=NAMES)
def name(request) -> str:
    return request.param


def test_fit_returns_self_and_labels_have_the_contract_shape(name):
    X, _ = blobs()
    est = make(name)
    assert est.fit(X) is est
    assert est.labels_.shape == X.shape[:2]
    assert est.labels_.dtype == torch.int64
    assert est.labels_.device == X.device
    assert est.n_clusters_.shape == (X.shape[0],) and est.n_clusters_.dtype == torch.int64
    assert bool((est.labels_ >= 0).all()) and bool((est.labels_ < est.n_clusters_[:, None]).all())
    assert torch.equal(make(name).fit_predict(X), est.labels_)


def test_parameters_are_stored_as_given_and_constructor_validates_nothing(name):
    est = make(name, n_clusters="two")  # rejected at fit, as in scikit-learn
    assert est.n_clusters == "two"


def test_predict_before_fit_raises_not_fitted(name):
    X, _ = blobs()
    est = make(name)
    with pytest.raises(NotFittedError, match="not fitted"):
        est.predict(X)
    if est.has_proba:
        with pytest.raises(NotFittedError, match="not fitted"):
            est.predict_proba(X)
    else:
        with pytest.raises(AttributeError):
            est.predict_proba(X)


@pytest.mark.parametrize(
    "params, error",
    [
        ({"n_clusters": 0}, ValueError),
        ({"n_clusters": -2}, ValueError),
        ({"n_clusters": "two"}, ValueError),
        ({"n_clusters": 2.5}, TypeError),
        ({"n_clusters": True}, TypeError),
        ({"n_clusters": "auto", "max_clusters": 1}, ValueError),
        ({"n_clusters": torch.tensor([2.0, 3.0, 3.0])}, TypeError),
        ({"n_clusters": torch.tensor([2, 0, 3])}, ValueError),
    ],
)
def test_bad_n_clusters_is_rejected_naming_the_parameter(name, params, error):
    X, _ = blobs()
    param = "max_clusters" if "max_clusters" in params else "n_clusters"
    with pytest.raises(error, match=f"'{param}'"):
        make(name, **params).fit(X)


_OTHER_BAD = [
    ("n_init", 0, ValueError),
    ("n_init", "3", TypeError),
    ("max_iter", 0, ValueError),
    ("init_size", 0, ValueError),
    ("metric", "manhattan", ValueError),
    ("seed", -1, ValueError),
    ("seed", 1.5, TypeError),
]


@pytest.mark.parametrize(
    "name, param, value, error",
    [
        (name, param, value, error)
        for name in NAMES
        for param, value, error in _OTHER_BAD
        if param in CLUSTERERS.get(name)._param_names()
    ],
)
def test_other_bad_parameters_are_rejected_naming_the_parameter(name, param, value, error):
    X, _ = blobs()
    with pytest.raises(error, match=f"'{param}'"):
        make(name).set_params(**{param: value}).fit(X)


def test_batched_fit_equals_fitting_each_item_alone(name):
    X, y = blobs(batch=4, seed=1)
    batched = make(name).fit_predict(X)
    for b in range(X.shape[0]):
        alone = make(name).fit_predict(X[b : b + 1])[0]
        assert ari(batched[b], alone) == 1.0
        assert ari(batched[b], y[b]) == 1.0


def test_per_item_counts_fit_each_item_as_it_would_be_fitted_alone(name):
    # An item's clustering depends on its own count, not on the larger counts of its batch-mates
    # (k-means++ draws 2 + ln k candidates per step, so a batch's largest count must not set
    # every item's). Uniform points: no true clusters, many local optima, so a different start
    # ends in a different partition.
    X = torch.rand(4, 300, 2, generator=torch.Generator().manual_seed(4))
    counts = torch.tensor([2, 3, 5, 8])  # 2, 3, 3 and 4 candidates per step
    labels = make(name, n_clusters=counts, max_clusters=8).fit_predict(X)
    for b in range(X.shape[0]):
        alone = make(name, n_clusters=int(counts[b]), max_clusters=8).fit_predict(X[b : b + 1])[0]
        if name == "spectral":  # its eigenvectors for k and for k_max agree to float rounding only
            assert ari(labels[b], alone) == 1.0, b
        else:
            assert torch.equal(labels[b], alone), b


def test_masked_points_do_not_change_the_fit(name):
    X, y = blobs(batch=3, n=150, seed=2)
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(X.shape[:2], generator=g) > 0.3
    garbage = X.clone()
    garbage[~mask] = 50.0 * torch.randn(int((~mask).sum()), X.shape[2], generator=g)
    clean = make(name).fit_predict(X, mask)
    dirty = make(name).fit_predict(garbage, mask)
    for b in range(X.shape[0]):
        m = mask[b]
        assert ari(clean[b][m], dirty[b][m]) == 1.0
        assert ari(clean[b][m], y[b][m]) == 1.0
        # masked points are still labelled, and sensibly (they are clean blob points in X)
        assert ari(clean[b], y[b]) == 1.0


def test_variable_length_items_padded_with_a_mask(name):
    X, y = blobs(batch=3, n=150, seed=3)
    lengths = [150, 90, 60]
    mask = torch.arange(150)[None, :] < torch.tensor(lengths)[:, None]
    labels = make(name).fit_predict(X, mask)
    for b, n in enumerate(lengths):
        alone = make(name).fit_predict(X[b : b + 1, :n])[0]
        assert ari(labels[b, :n], alone) == 1.0
        assert ari(labels[b, :n], y[b, :n]) == 1.0


def test_get_params_set_params_clone_round_trip(name):
    est = make(name)
    params = est.get_params()
    json.dumps(params)  # saved in a model's JSON config
    twin = est.clone()
    assert type(twin) is type(est) and twin is not est
    assert twin.get_params() == params
    assert not hasattr(twin, "labels_")
    other = est.clone(n_clusters=2)
    assert other.get_params()["n_clusters"] == 2 and est.get_params()["n_clusters"] == 3
    assert est.set_params(seed=5) is est and est.get_params()["seed"] == 5
    with pytest.raises(ValueError, match="Invalid parameter 'bogus'"):
        est.set_params(bogus=1)
    with pytest.raises(ValueError, match=rf"Invalid parameters \['bogus'\] for clusterer '{name}'"):
        create_clusterer(name, n_clusters=2, bogus=1)  # names only the unknown one
    rebuilt = create_clusterer(name, **json.loads(json.dumps(params)))
    assert rebuilt.get_params() == params
    X, _ = blobs()
    fitted = make(name).fit(X)
    assert not hasattr(fitted.clone(), "labels_")


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_non_finite_input_is_rejected(name, bad):
    X, _ = blobs()
    X[1, 5, 2] = float(bad)
    with pytest.raises(ValueError, match="finite"):
        make(name).fit(X)


def test_wrong_rank_and_type_are_rejected(name):
    X, _ = blobs()
    with pytest.raises(ValueError, match="3 dimensions"):
        make(name).fit(X[0])
    with pytest.raises(TypeError, match="torch.Tensor"):
        make(name).fit(X.numpy())
    with pytest.raises(TypeError, match="floating"):
        make(name).fit(X.to(torch.int64))
    with pytest.raises(ValueError, match="'X' must have at least one point, one dimension and one item"):
        make(name).fit(X[:0])


def test_bad_masks_are_rejected(name):
    X, _ = blobs()
    mask = torch.ones(X.shape[:2], dtype=torch.bool)
    mask[1] = False
    with pytest.raises(ValueError, match="at least one active point"):
        make(name).fit(X, mask)
    with pytest.raises(ValueError, match="'mask' must have shape"):
        make(name).fit(X, torch.ones(X.shape[0], X.shape[1] - 1, dtype=torch.bool))
    with pytest.raises(TypeError, match="torch.bool"):
        make(name).fit(X, torch.ones(X.shape[:2]))


def test_more_clusters_than_active_points_is_rejected(name):
    X, _ = blobs()
    mask = torch.ones(X.shape[:2], dtype=torch.bool)
    mask[2, 2:] = False
    with pytest.raises(ValueError, match="'n_clusters'.*active points"):
        make(name).fit(X, mask)


def test_auto_finds_the_number_of_clusters(name):
    X, y = blobs(batch=3, n=150, dim=6, k=4, seed=4)
    est = make(name, n_clusters="auto", max_clusters=6).fit(X)
    assert est.n_clusters_.tolist() == [4, 4, 4]
    for b in range(X.shape[0]):
        assert ari(est.labels_[b], y[b]) == 1.0


def test_per_item_cluster_counts(name):
    X, _ = blobs(batch=3, n=150, dim=5, k=4, seed=5)
    counts = torch.tensor([2, 3, 4])
    est = make(name, n_clusters=counts).fit(X)
    assert est.n_clusters_.tolist() == [2, 3, 4]
    assert bool((est.labels_ < counts[:, None]).all())
    assert [len(set(est.labels_[b].tolist())) for b in range(3)] == [2, 3, 4]


@pytest.mark.parametrize("unit", [True, False])
def test_quality_matches_scikit_learn_kmeans_on_blobs(name, unit):
    X, y = blobs(batch=4, n=200, dim=5, k=3, seed=6, unit=unit)
    ours = make(name).fit_predict(X)
    for b in range(X.shape[0]):
        ref = SkKMeans(n_clusters=3, random_state=0).fit_predict(X[b].numpy())
        assert ari(ours[b], y[b]) >= adjusted_rand_score(y[b].numpy(), ref) - 0.01


def test_float64_input_and_predict_proba_rows(name):
    X, y = blobs(seed=7)
    est = make(name).fit(X.double())
    assert est.labels_.dtype == torch.int64
    for b in range(X.shape[0]):
        assert ari(est.labels_[b], y[b]) == 1.0
    if est.has_proba:
        P = est.predict_proba(X.double())
        assert P.shape[:2] == X.shape[:2]
        torch.testing.assert_close(P.sum(-1), torch.ones(X.shape[:2], dtype=P.dtype))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_labels_stay_on_device_and_match_cpu(name):
    X, y = blobs()
    est = make(name).fit(X.cuda())
    labels = est.labels_
    assert labels.device.type == "cuda" and labels.dtype == torch.int64
    for b in range(X.shape[0]):
        assert ari(labels[b], y[b]) == 1.0
    try:
        on_cpu = est.predict(X)  # new points on another device: labels follow them
    except NotImplementedError:
        return  # this method cannot label new points
    assert on_cpu.device.type == "cpu"
    for b in range(X.shape[0]):
        assert ari(on_cpu[b], y[b]) == 1.0


def test_only_clusterer_classes_can_be_registered():
    from embedseg.cluster import register_clusterer

    for bad in (SkKMeans, SkKMeans(), "embedseg.cluster:KMeans"):
        with pytest.raises(TypeError, match="register_clusterer\\(\\) expects a subclass of .*BaseClusterer"):
            register_clusterer("not-a-clusterer", bad)
        with pytest.raises(TypeError, match="expects a subclass"):
            register_clusterer("not-a-clusterer")(bad)
    assert "not-a-clusterer" not in list_clusterers()


def test_new_points_must_have_the_features_of_the_fit(name):
    X, _ = blobs(dim=4)
    est = make(name).fit(X)
    with pytest.raises(ValueError, match=r"'X' must have 4 features, as in fit\. Got 3 instead\."):
        est.predict(X[..., :3])
    if est.has_proba:
        with pytest.raises(ValueError, match="'X' must have 4 features"):
            est.predict_proba(torch.cat([X, X[..., :1]], -1))
    assert est.n_features_in_ == 4


def test_points_that_require_grad_or_are_not_contiguous_are_clustered_as_they_are(name):
    X, _ = blobs()
    ref = make(name).fit_predict(X)
    grad = X.clone().requires_grad_()
    labels = make(name).fit_predict(grad)
    assert not labels.requires_grad and torch.equal(labels, ref)
    strided = X.transpose(1, 2).contiguous().transpose(1, 2)  # same values, other strides
    assert torch.equal(make(name).fit_predict(strided), ref)


def test_per_item_counts_of_the_wrong_length_name_the_parameter(name):
    X, _ = blobs()
    with pytest.raises(ValueError, match=r"'n_clusters' parameter of .* must have one count per item \(3\)\. Got \[2, 3\]"):
        make(name, n_clusters=[2, 3]).fit(X)
    with pytest.raises(TypeError, match="'n_clusters'.*per-item counts"):
        make(name, n_clusters=[2.0, 3.0, 3.0]).fit(X)


def test_a_failed_fit_leaves_the_clusterer_unfitted(name):
    X, _ = blobs()
    est = make(name).fit(X)
    mask = torch.ones(X.shape[:2], dtype=torch.bool)
    mask[0] = False
    with pytest.raises(ValueError, match="active point"):
        est.fit(X, mask)  # rejected before anything changed: still the previous fit
    assert est.labels_.shape == X.shape[:2]
    if name != "sklearn":
        return
    est.set_params(estimator={"class": "sklearn.cluster.KMeans", "params": {"k": 3}})
    with pytest.raises(ValueError, match="'estimator'"):
        est.fit(X)
    with pytest.raises(NotFittedError):
        est.predict(X)
