"""The KMeans estimator: against scikit-learn, its own features, and the registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans as SkKMeans
from sklearn.metrics import adjusted_rand_score

from embedseg.cluster import CLUSTERERS, KMeans, create_clusterer, list_clusterers, register_clusterer

from .blobs import gaussian_items


def separated_items(batch, n, dim, k, seed):
    """Balanced, clearly separated clusters around scaled basis vectors (float32)."""
    rng = np.random.default_rng(seed)
    y = np.stack([rng.permutation(np.arange(n) % k) for _ in range(batch)])
    X = 5.0 * np.eye(dim)[y] + rng.normal(scale=0.3, size=(batch, n, dim))
    return torch.from_numpy(X.astype(np.float32)), torch.from_numpy(y)


def ari(a, b) -> float:
    return adjusted_rand_score(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_restarts_on_a_subsample_still_end_at_a_full_data_fixed_point(metric):
    X, y = gaussian_items(3, 3000, 6, 4, 0.6, seed=15, unit=metric == "cosine")
    X = X.double()
    mask = torch.rand(3, 3000, generator=torch.Generator().manual_seed(3)) > 0.1
    km = KMeans(n_clusters=4, init_size=200, tol=0.0, metric=metric).fit(X, mask)
    Xn = X / X.norm(dim=-1, keepdim=True) if metric == "cosine" else X
    for b in range(3):
        C = km.cluster_centers_[b]
        assert torch.equal(km.labels_[b], (torch.cdist(Xn[b], C) ** 2).argmin(1))
        m = mask[b]
        for c in range(4):
            mean = Xn[b][m & (km.labels_[b] == c)].mean(0)
            ref = mean / mean.norm() if metric == "cosine" else mean
            torch.testing.assert_close(C[c], ref)
    full = KMeans(n_clusters=4, init_size=None, tol=0.0, metric=metric).fit(X, mask)
    torch.testing.assert_close(km.inertia_.sum(), full.inertia_.sum(), rtol=2e-3, atol=0.0)


# -- the algorithm against scikit-learn -----------------------------------------------------


@pytest.mark.parametrize("unit, spread", [(False, 0.6), (True, 0.25)])
def test_ari_at_least_scikit_learn_on_overlapping_clusters(unit, spread):
    X, y = gaussian_items(10, 300, 6, 4, spread, seed=4, unit=unit)
    ours = KMeans(n_clusters=4, seed=0).fit_predict(X)
    ari_ours = np.mean([ari(y[b], ours[b]) for b in range(10)])
    ari_sk = np.mean([
        ari(y[b], SkKMeans(n_clusters=4, random_state=0).fit_predict(X[b].numpy())) for b in range(10)
    ])
    assert 0.5 < ari_sk < 0.95  # neither trivial nor hopeless
    assert ari_ours >= ari_sk - 0.01


def test_inertia_equals_scikit_learn_on_separated_clusters():
    X, _ = separated_items(3, 200, 5, 5, seed=4)
    km = KMeans(n_clusters=5, seed=0, tol=0.0).fit(X.double())
    for b in range(3):
        sk = SkKMeans(n_clusters=5, random_state=0, tol=0.0).fit(X[b].double().numpy())
        assert km.inertia_[b].item() == pytest.approx(sk.inertia_, rel=1e-9)


def test_mean_inertia_matches_scikit_learn_on_overlapping_clusters():
    # Local optima differ item by item with the random draws; on average the two must agree.
    X, _ = gaussian_items(12, 200, 5, 5, 0.8, seed=4)
    km = KMeans(n_clusters=5, n_init=4, seed=0).fit(X.double())
    sk = [SkKMeans(n_clusters=5, n_init=4, random_state=0).fit(X[b].double().numpy()).inertia_
          for b in range(12)]
    assert km.inertia_.mean().item() <= np.mean(sk) * 1.005


# -- the estimator --------------------------------------------------------------------------


def test_predict_assigns_to_the_nearest_center_and_matches_labels():
    X, _ = gaussian_items(3, 150, 3, 3, 0.3, seed=6)
    km = KMeans(n_clusters=3).fit(X)
    assert torch.equal(km.predict(X), km.labels_)
    new = torch.randn(3, 20, 3, generator=torch.Generator().manual_seed(1))
    d = torch.cdist(new.double(), km.cluster_centers_.double())
    assert torch.equal(km.predict(new), d.argmin(-1))


def test_predict_proba_is_a_softmax_of_negative_squared_distances():
    X, _ = gaussian_items(2, 100, 3, 3, 0.5, seed=7)
    km = KMeans(n_clusters=3, soft_temperature=0.7).fit(X.double())
    d = torch.cdist(X.double(), km.cluster_centers_.double()) ** 2
    torch.testing.assert_close(km.predict_proba(X.double()), torch.softmax(-d / 0.7, -1))
    # default: the isotropic Gaussian posterior, temperature 2 sigma² from the fit
    km = KMeans(n_clusters=3).fit(X.double())
    sigma2 = km.inertia_ / (100 * 3)
    d = torch.cdist(X.double(), km.cluster_centers_.double()) ** 2
    ref = torch.softmax(-d / (2 * sigma2[:, None, None]), -1)
    torch.testing.assert_close(km.predict_proba(X.double()), ref)
    assert torch.equal(km.predict_proba(X).argmax(-1), km.labels_)


def test_per_item_counts_disable_the_extra_centers():
    X, _ = gaussian_items(3, 120, 4, 4, 0.2, seed=8)
    km = KMeans(n_clusters=torch.tensor([2, 4, 3])).fit(X)
    assert km.cluster_centers_.shape == (3, 4, 4)
    assert bool((km.cluster_centers_[0, 2:] == 0).all()) and bool((km.cluster_centers_[2, 3:] == 0).all())
    P = km.predict_proba(X)
    assert bool((P[0, :, 2:] == 0).all()) and bool((P[2, :, 3:] == 0).all())
    torch.testing.assert_close(P.sum(-1), torch.ones(3, 120))
    assert km.get_params()["n_clusters"] == [2, 4, 3]
    assert km.clone().fit(X).n_clusters_.tolist() == [2, 4, 3]
    with pytest.raises(ValueError, match="one count per item"):
        KMeans(n_clusters=torch.tensor([2, 3])).fit(X)


def test_cosine_metric_is_spherical_kmeans():
    X, y = gaussian_items(3, 200, 6, 3, 0.15, seed=9, unit=True)
    km = KMeans(n_clusters=3, metric="cosine").fit(X)
    torch.testing.assert_close(km.cluster_centers_.norm(dim=-1), torch.ones(3, 3))
    for b in range(3):
        assert ari(y[b], km.labels_[b]) == 1.0
    # invariant to the points' norms: the same partitions (the numbering of the clusters follows
    # the seeding, which rounding in the last bit of the normalized points may reorder)
    scale = torch.rand(3, 200, 1, generator=torch.Generator().manual_seed(2)) * 5 + 0.1
    scaled = KMeans(n_clusters=3, metric="cosine").fit_predict(X * scale)
    for b in range(3):
        assert ari(scaled[b], km.labels_[b]) == 1.0
    cos = (X[:, :, None, :] * km.cluster_centers_[:, None]).sum(-1).gather(2, km.labels_[..., None])[..., 0]
    torch.testing.assert_close(km.inertia_, (1 - cos).sum(1), rtol=1e-4, atol=1e-3)


def test_random_init_also_works():
    X, y = separated_items(3, 150, 3, 3, seed=10)
    km = KMeans(n_clusters=3, init="random", n_init=5).fit(X)
    for b in range(3):
        assert ari(y[b], km.labels_[b]) == 1.0


def test_iteration_cap_and_tolerance():
    X, _ = gaussian_items(2, 300, 4, 5, 1.0, seed=11)
    assert KMeans(n_clusters=5, max_iter=1).fit(X).n_iter_.tolist() == [1, 1]
    loose = KMeans(n_clusters=5, tol=10.0).fit(X).n_iter_
    tight = KMeans(n_clusters=5, tol=0.0, max_iter=300).fit(X).n_iter_
    assert bool((loose <= tight).all()) and int(loose.max()) <= 2


def test_same_seed_same_result_and_low_precision_inputs():
    X, y = separated_items(2, 150, 4, 3, seed=12)
    a = KMeans(n_clusters=3, seed=3).fit(X)
    b = KMeans(n_clusters=3, seed=3).fit(X)
    assert torch.equal(a.labels_, b.labels_) and torch.equal(a.cluster_centers_, b.cluster_centers_)
    for dtype in (torch.float16, torch.bfloat16):
        km = KMeans(n_clusters=3).fit(X.to(dtype))
        assert km.cluster_centers_.dtype == dtype and km.inertia_.dtype == torch.float32
        assert ari(y[0], km.labels_[0]) == 1.0


def test_auto_uses_the_estimated_counts():
    X, _ = gaussian_items(2, 200, 3, 3, 0.05, seed=13)
    km = KMeans(n_clusters="auto", max_clusters=5).fit(X)
    assert km.n_clusters_.tolist() == [3, 3]
    assert km.cluster_centers_.shape == (2, 5, 3)


def test_messages_follow_scikit_learn():
    X, _ = gaussian_items(1, 30, 2, 2, 0.1, seed=14)
    with pytest.raises(ValueError, match=r"The 'n_init' parameter of KMeans must be an int in \[1, inf\)\. Got 0 instead\."):
        KMeans(n_init=0).fit(X)
    with pytest.raises(ValueError, match=r"The 'metric' parameter of KMeans must be one of 'euclidean', 'cosine'"):
        KMeans(metric="l1").fit(X)
    with pytest.raises(ValueError, match="'init'"):
        KMeans(init="kmeans++").fit(X)
    with pytest.raises(ValueError, match="'tol'"):
        KMeans(tol=-1.0).fit(X)
    with pytest.raises(ValueError, match="'soft_temperature'"):
        KMeans(soft_temperature=0.0).fit(X)
    with pytest.raises(ValueError, match="'init_size'"):
        KMeans(init_size=0).fit(X)
    with pytest.raises(ValueError, match="'n_clusters' parameter of KMeans must be an int in \\[1, inf\\), 'auto'"):
        KMeans(n_clusters="many").fit(X)
    km = KMeans(n_clusters=2).fit(X)
    with pytest.raises(ValueError, match="batch size it was fitted with"):
        km.predict(torch.cat([X, X]))


# -- the registry ---------------------------------------------------------------------------


def test_registry_lists_creates_and_rejects_unknown_names():
    assert {"kmeans", "gmm", "spectral", "sklearn"} <= set(list_clusterers())
    km = create_clusterer("KMeans", n_clusters=4)
    assert isinstance(km, KMeans) and km.n_clusters == 4
    with pytest.raises(ValueError, match="Unknown clusterer 'kmedoids'. Valid clusterers: 'gmm', 'kmeans'"):
        create_clusterer("kmedoids")
    with pytest.raises(ValueError, match="Invalid parameters \\['k'\\].*Valid parameters: n_clusters"):
        create_clusterer("kmeans", k=3)


def test_register_a_user_clusterer_and_duplicates():
    @register_clusterer("tiny-kmeans")
    class TinyKMeans(KMeans):
        pass

    try:
        assert "tiny-kmeans" in list_clusterers()
        assert isinstance(create_clusterer("tiny-kmeans", n_clusters=2), TinyKMeans)
        with pytest.raises(ValueError, match="already registered"):
            register_clusterer("tiny-kmeans", KMeans)
        register_clusterer("tiny-kmeans", KMeans, override=True)
        assert type(create_clusterer("tiny-kmeans")) is KMeans
    finally:
        CLUSTERERS.unregister("tiny-kmeans")
    assert "tiny-kmeans" not in list_clusterers()


def test_an_item_is_subsampled_or_not_by_its_own_size():
    # init_size subsamples the restarts of items with more active points than that; an item
    # with fewer runs on all its points, whatever the size of its batch-mates (structureless
    # points, so another start ends elsewhere).
    X = torch.rand(3, 400, 2, generator=torch.Generator().manual_seed(3))
    lengths = [400, 100, 250]
    mask = torch.arange(400)[None, :] < torch.tensor(lengths)[:, None]
    est = KMeans(n_clusters=torch.tensor([4, 3, 5]), init_size=200, seed=0).fit(X, mask)
    for b, (n, k) in enumerate(zip(lengths, (4, 3, 5))):
        alone = KMeans(n_clusters=k, init_size=200, seed=0).fit(X[b : b + 1, :n])
        assert torch.equal(est.labels_[b, :n], alone.labels_[0]), b
        torch.testing.assert_close(est.cluster_centers_[b, :k], alone.cluster_centers_[0], rtol=0, atol=1e-6)
