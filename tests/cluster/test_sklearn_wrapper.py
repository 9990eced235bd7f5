"""The scikit-learn wrapper: same labels as the estimator on each item, parameters passed
through, masked and noise points assigned to the nearest cluster mean, JSON-able params."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.cluster import DBSCAN, AgglomerativeClustering, KMeans as SkKMeans
from sklearn.metrics import adjusted_rand_score

from embedseg.cluster import SklearnClusterer, create_clusterer


def items(batch=3, n=90, seed=0):
    rng = np.random.default_rng(seed)
    y = np.stack([rng.permutation(np.arange(n) % 3) for _ in range(batch)])
    X = 4.0 * np.eye(3)[y] + rng.normal(scale=0.2, size=(batch, n, 3))
    return torch.from_numpy(X.astype(np.float32)), y


def test_labels_equal_the_estimator_run_on_each_item():
    X, y = items()
    got = SklearnClusterer(estimator=AgglomerativeClustering(linkage="ward"), n_clusters=3).fit_predict(X)
    for b in range(3):
        ref = AgglomerativeClustering(n_clusters=3, linkage="ward").fit_predict(X[b].double().numpy())
        assert adjusted_rand_score(ref, got[b].numpy()) == 1.0
        assert adjusted_rand_score(y[b], got[b].numpy()) == 1.0


def test_n_clusters_and_seed_are_passed_through_and_the_prototype_is_untouched():
    X, _ = items()
    proto = SkKMeans(n_init=1)
    est = SklearnClusterer(estimator=proto, n_clusters=torch.tensor([2, 3, 4]), seed=3).fit(X)
    assert est.n_clusters_.tolist() == [2, 3, 4]
    assert proto.n_clusters == 8 and proto.random_state is None and not hasattr(proto, "labels_")
    for b, k in enumerate([2, 3, 4]):
        ref = SkKMeans(n_clusters=k, n_init=1, random_state=3).fit_predict(X[b].double().numpy())
        assert adjusted_rand_score(ref, est.labels_[b].numpy()) == 1.0


def test_masked_points_go_to_the_nearest_fitted_mean():
    X, _ = items(seed=1)
    mask = torch.rand(X.shape[:2], generator=torch.Generator().manual_seed(0)) > 0.3
    est = SklearnClusterer(estimator=AgglomerativeClustering(), n_clusters=3).fit(X, mask)
    for b in range(3):
        m = mask[b]
        ref = AgglomerativeClustering(n_clusters=3).fit_predict(X[b][m].double().numpy())
        assert torch.equal(est.labels_[b][m], torch.from_numpy(ref))  # labels kept as given
        means = torch.stack([X[b][m][est.labels_[b][m] == c].double().mean(0) for c in range(3)])
        torch.testing.assert_close(est.cluster_centers_[b].double(), means, rtol=1e-5, atol=1e-5)
        nearest = torch.cdist(X[b][~m].double(), means).argmin(1)
        assert torch.equal(est.labels_[b][~m], nearest)
    assert torch.equal(est.predict(X)[mask], est.labels_[mask])


def test_noise_points_of_dbscan_are_assigned_and_labels_renumbered():
    X, y = items(seed=2)
    X[0, 0] = 30.0  # an outlier DBSCAN calls noise
    est = SklearnClusterer(estimator=DBSCAN(eps=1.0, min_samples=3)).fit(X)
    assert est.n_clusters_.tolist() == [3, 3, 3]
    assert bool((est.labels_ >= 0).all()) and bool((est.labels_ < 3).all())
    for b in range(3):
        assert adjusted_rand_score(y[b], est.labels_[b].numpy()) == 1.0


def test_everything_noise_is_one_cluster():
    X = torch.randn(2, 20, 2, generator=torch.Generator().manual_seed(0)) * 100
    est = SklearnClusterer(estimator=DBSCAN(eps=1e-6, min_samples=5)).fit(X)
    assert est.n_clusters_.tolist() == [1, 1] and bool((est.labels_ == 0).all())


def test_auto_counts():
    X, _ = items(n=120, seed=3)
    est = SklearnClusterer(estimator=AgglomerativeClustering(), n_clusters="auto", max_clusters=6).fit(X)
    assert est.n_clusters_.tolist() == [3, 3, 3]


def test_params_are_json_and_rebuild_the_estimator():
    est = SklearnClusterer(estimator=AgglomerativeClustering(linkage="average"), n_clusters=3)
    params = est.get_params()
    assert params["estimator"]["class"].startswith("sklearn.cluster")
    assert params["estimator"]["params"]["linkage"] == "average"
    rebuilt = create_clusterer("sklearn", **json.loads(json.dumps(params)))
    X, _ = items(seed=4)
    assert torch.equal(rebuilt.fit_predict(X), est.fit_predict(X))
    # parameters that JSON cannot hold keep the estimator object itself
    odd = SklearnClusterer(estimator=AgglomerativeClustering(metric=lambda a, b: 0.0))
    assert isinstance(odd.get_params()["estimator"], AgglomerativeClustering)


def test_bad_parameters():
    X, _ = items()
    with pytest.raises(TypeError, match="'estimator'.*fit_predict"):
        SklearnClusterer(estimator="kmeans").fit(X)
    with pytest.raises(ValueError, match="'n_clusters'.*DBSCAN has none"):
        SklearnClusterer(estimator=DBSCAN(), n_clusters=3).fit(X)
    with pytest.raises(ValueError, match="scikit-learn class"):
        SklearnClusterer(estimator={"class": "os.system", "params": {}}).fit(X)
    with pytest.raises(ValueError, match="does not exist"):
        SklearnClusterer(estimator={"class": "sklearn.cluster.NoSuchThing"}).fit(X)
    with pytest.raises(ValueError, match="does not exist"):
        SklearnClusterer(estimator={"class": "sklearn.no_such_module.Thing"}).fit(X)
    with pytest.raises(ValueError, match="'n_clusters'"):
        SklearnClusterer(estimator=SkKMeans(), n_clusters=0).fit(X)


def test_a_spec_naming_a_function_is_refused_before_it_runs(tmp_path):
    # A saved model's config may name any dotted path; scikit-learn also exposes functions
    # that write files, and these must never be called with the config's parameters.
    X, _ = items()
    target = tmp_path / "written.svmlight"
    spec = {"class": "sklearn.datasets.dump_svmlight_file", "params": {"X": [[0.0]], "y": [0], "f": str(target)}}
    with pytest.raises(ValueError, match="estimator class.*function"):
        SklearnClusterer(estimator=spec).fit(X)
    assert not target.exists()


def test_the_estimator_may_be_given_positionally():
    X, _ = items()
    est = SklearnClusterer(AgglomerativeClustering(), n_clusters=2)
    assert isinstance(est.get_params()["estimator"], dict) and est.clone().n_clusters == 2
    torch.testing.assert_close(
        est.fit_predict(X), SklearnClusterer(estimator=AgglomerativeClustering(), n_clusters=2).fit_predict(X)
    )


@pytest.mark.parametrize("bad", ["kmeans", None, 3, object()])
def test_a_value_that_is_no_estimator_is_a_type_error_naming_what_is_expected(bad):
    X, _ = items()
    est = create_clusterer("sklearn", estimator=bad)
    assert "SklearnClusterer(estimator=" in repr(est)  # shown as given, never an AttributeError
    assert est.get_params()["estimator"] is bad
    with pytest.raises(
        TypeError,
        match=r"The 'estimator' parameter of SklearnClusterer must be an object with a fit_predict "
        r"method or a scikit-learn estimator spec .*Got .* instead",
    ):
        est.fit(X)


def test_an_estimator_class_asks_for_an_instance():
    X, _ = items()
    with pytest.raises(TypeError, match=r"'estimator'.*an instance such as KMeans\(\).*Got the class sklearn\.cluster"):
        SklearnClusterer(estimator=SkKMeans).fit(X)


def test_any_object_with_fit_predict_works_and_is_copied_per_item():
    class Halves:
        """Not a scikit-learn estimator: no get_params, no clone."""

        fitted = 0

        def fit_predict(self, X):
            self.fitted += 1
            return (X[:, 0] > X[:, 0].mean()).astype(np.int64)

    X, _ = items()
    proto = Halves()
    est = SklearnClusterer(estimator=proto).fit(X)
    assert proto.fitted == 0  # each item got its own copy
    for b in range(3):
        assert adjusted_rand_score((X[b, :, 0] > X[b, :, 0].mean()).numpy(), est.labels_[b].numpy()) == 1.0
    assert est.get_params()["estimator"] is proto
    with pytest.raises(ValueError, match="'n_clusters'.*Halves has none"):
        SklearnClusterer(estimator=proto, n_clusters=2).fit(X)


def test_what_fit_predict_returns_is_checked():
    class TwoColumns:
        def fit_predict(self, X):
            return np.zeros((len(X), 2))

    X, _ = items()
    with pytest.raises(ValueError, match=r"'estimator'.*one integer label per point.*TwoColumns\.fit_predict returned an array of shape \(90, 2\)"):
        SklearnClusterer(estimator=TwoColumns()).fit(X)


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"class": "sklearn.cluster.KMeans", "parms": {}}, "keys 'class' and 'params' only"),
        ({"class": "sklearn.cluster.KMeans", "params": [3]}, "parameters as a dict under 'params'"),
        ({"class": "sklearn.cluster.KMeans", "params": {"k": 3}}, "parameters it does not take"),
        ({"class": "sklearn.cluster"}, "estimator class. Got 'sklearn.cluster', which is a module"),
    ],
)
def test_bad_specs_are_value_errors_naming_the_parameter(spec, match):
    X, _ = items()
    with pytest.raises(ValueError, match=rf"'estimator'.*{match}"):
        SklearnClusterer(estimator=spec).fit(X)


def test_the_seed_must_be_a_valid_random_state():
    X, _ = items()
    with pytest.raises(ValueError, match=r"'seed' parameter of SklearnClusterer must be an int in \[0, 4294967295\]"):
        SklearnClusterer(estimator=SkKMeans(), seed=2**32).fit(X)


def test_points_too_large_or_small_for_float32_distances_are_assigned_in_float64():
    X, y = items()
    for c in (1e30, 1e-30):
        est = SklearnClusterer(estimator=AgglomerativeClustering(), n_clusters=3).fit(X * c)
        assert torch.equal(est.predict(X * c), est.labels_)
        for b in range(3):
            assert adjusted_rand_score(y[b], est.labels_[b].numpy()) == 1.0
