"""Batched k-means: the building blocks against float64 references, the algorithm against
scikit-learn, and the KMeans estimator's own features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans as SkKMeans
from sklearn.metrics import adjusted_rand_score

from embedseg.cluster import CLUSTERERS, KMeans, create_clusterer, list_clusterers, register_clusterer
from embedseg.cluster import _ops
from embedseg.cluster.kmeans import kmeans


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


def separated_items(batch, n, dim, k, seed):
    """Balanced, clearly separated clusters around scaled basis vectors (float32)."""
    rng = np.random.default_rng(seed)
    y = np.stack([rng.permutation(np.arange(n) % k) for _ in range(batch)])
    X = 5.0 * np.eye(dim)[y] + rng.normal(scale=0.3, size=(batch, n, dim))
    return torch.from_numpy(X.astype(np.float32)), torch.from_numpy(y)


def ari(a, b) -> float:
    return adjusted_rand_score(np.asarray(a), np.asarray(b))


# -- building blocks ------------------------------------------------------------------------


def test_sq_distances_match_float64_pairwise():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(3, 50, 7, generator=g)
    C = torch.randn(3, 4, 7, generator=g)
    ref = torch.cdist(X.double(), C.double()) ** 2
    torch.testing.assert_close(_ops.sq_distances(X, C).double(), ref, rtol=1e-4, atol=1e-4)
    assert bool((_ops.sq_distances(X, X) >= 0).all())  # clamped despite rounding


def test_gather_points_and_center_valid():
    X = torch.arange(24.0).view(2, 4, 3)
    idx = torch.tensor([[3, 0], [1, 1]])
    assert torch.equal(_ops.gather_points(X, idx), torch.stack([X[0, [3, 0]], X[1, [1, 1]]]))
    valid = _ops.center_valid(torch.tensor([1, 3]), 4)
    assert valid.tolist() == [[True, False, False, False], [True, True, True, False]]


def test_masked_mean_variance_matches_numpy():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(2, 30, 4, generator=g, dtype=torch.float64)
    mask = torch.rand(2, 30, generator=g) > 0.4
    got = _ops.masked_mean_variance(X, mask)
    for b in range(2):
        assert got[b].item() == pytest.approx(np.var(X[b][mask[b]].numpy(), axis=0).mean())


def test_subsample_takes_distinct_active_points():
    mask = torch.zeros(3, 100, dtype=torch.bool)
    mask[0] = True
    mask[1, :40] = True
    mask[2, ::7] = True
    idx, sub = _ops.subsample_active(mask, 30, _ops.make_generator(0, mask.device))
    assert idx.shape == (3, 30)
    assert sub[:2].all() and bool(torch.equal(sub, torch.gather(mask, 1, idx)))
    assert int(sub[2].sum()) == int(mask[2].sum()) == 15  # fewer active points than asked
    for b in range(3):
        assert len(set(idx[b].tolist())) == 30


def test_subsample_with_replacement_draws_only_active_points():
    gen = _ops.make_generator(0, torch.device("cpu"))
    full = torch.ones(2, 500, dtype=torch.bool)
    idx, sub = _ops.subsample_active(full, 100, gen, replace=True)
    assert idx.shape == (2, 100) and bool(sub.all()) and int(idx.max()) < 500
    mask = torch.zeros(3, 500, dtype=torch.bool)
    mask[0, 100:400] = True
    mask[1, ::3] = True
    mask[2, :50] = True  # fewer active points than asked: all of them, then padding
    idx, sub = _ops.subsample_active(mask, 100, gen, replace=True)
    assert bool(torch.gather(mask, 1, idx)[:2].all()) and bool(sub[:2].all())
    assert sorted(idx[2][sub[2]].tolist()) == list(range(50)) and int(sub[2].sum()) == 50
    # roughly uniform over the active points
    idx, _ = _ops.subsample_active(mask[:1].expand(200, -1), 100, gen, replace=True)
    counts = torch.bincount(idx.flatten() - 100, minlength=300).double()
    assert counts.std() / counts.mean() < 0.2


def test_kmeans_plusplus_picks_distinct_active_points():
    # Five distinct locations with repeats: greedy D² seeding of 5 centers must find all five,
    # and never a masked point (placed far away, where D² would otherwise attract it).
    base = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0], [5.0, 5.0]])
    X = base.repeat(8, 1)[None].repeat(2, 1, 1)  # (2, 40, 2)
    X = torch.cat([X, torch.full((2, 5, 2), 1000.0)], dim=1)
    mask = torch.ones(2, 45, dtype=torch.bool)
    mask[:, 40:] = False
    C = _ops.kmeans_plusplus(X, mask, 5, 3, _ops.make_generator(0, X.device))
    assert C.shape == (2, 3, 5, 2)
    for b in range(2):
        for g in range(3):
            got = sorted(map(tuple, C[b, g].tolist()))
            assert got == sorted(map(tuple, base.tolist()))


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("masked", [False, True])
def test_cluster_stats_updated_from_changed_points_match_a_float64_recount(groups, masked):
    # The late Lloyd iterations move only the points that changed cluster from one sum to
    # another; the result must equal the sums and counts recounted from scratch, masked
    # points excluded (w None: every point active).
    g = torch.Generator().manual_seed(4)
    B, G, k, n, d = 3, groups, 4, 500, 6
    X = torch.randn(B, n, d, generator=g)
    mask = torch.rand(B, n, generator=g) > 0.3 if masked else torch.ones(B, n, dtype=torch.bool)
    w = mask.to(X.dtype) if masked else None
    prev = torch.randint(0, k, (B, G, n), generator=g, dtype=torch.int32)
    labels = prev.clone()
    moved = torch.rand(B, G, n, generator=g) < 0.05  # below the recount threshold
    labels[moved] = (labels[moved] + 1) % k

    def recount(lab):
        onehot = torch.nn.functional.one_hot(lab.long(), k).double() * mask.double()[:, None, :, None]
        sums = torch.einsum("bgnk,bnd->bgkd", onehot, X.double())  # float64 recount
        return sums, onehot.sum(2)

    stats = _ops._cluster_stats(X, w, prev, k)
    for lab in (labels, torch.randint(0, k, (B, G, n), generator=g, dtype=torch.int32)):
        # few changes: moved point by point; many: recounted from scratch; same result
        got = _ops._update_stats(X, w, lab, prev, stats)
        ref_sums, ref_counts = recount(lab)
        torch.testing.assert_close(got[..., :d], ref_sums, rtol=1e-6, atol=1e-5)
        assert torch.equal(got[..., d], ref_counts)


@pytest.mark.parametrize("masked", [False, True])
def test_blocked_assignment_with_stats_equals_the_batch_wide_one(monkeypatch, masked):
    # On CPU a from-scratch step assigns and sums block by block of items (cache tiling);
    # labels, scores and sums must be those of the batch-wide computation, including a last
    # block shorter than the others.
    g = torch.Generator().manual_seed(6)
    B, G, k, n, d = 5, 2, 3, 400, 8
    X = torch.randn(B, n, d, generator=g)
    C = torch.randn(B, G, k, d, generator=g)
    valid = _ops.center_valid(torch.tensor([3, 2, 3, 1, 3]), k)[:, None, :].expand(B, G, k)
    offset = _ops._offset(valid, X.dtype)
    w = (torch.rand(B, n, generator=g) > 0.3).to(X.dtype) if masked else None
    ref_min, ref_lab = _ops._min_slot(_ops._scores(X, C, offset))
    ref_stats = _ops._cluster_stats(X, w, ref_lab, k)
    monkeypatch.setattr(_ops, "_BLOCK_BYTES", 2 * n * d * X.element_size())  # blocks of 2 items
    got_min, got_lab, got_stats = _ops._assign_with_stats(X, w, C, offset)
    # (the products of a smaller batch may round differently: scores agree to float32 rounding)
    assert torch.equal(got_lab, ref_lab)
    torch.testing.assert_close(got_min, ref_min, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_stats, ref_stats, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("spherical", [False, True])
def test_step_bound_is_the_objective_of_the_plain_step_with_labels_kept(spherical):
    # The over-relaxed steps accept a candidate against this bound: the weighted objective
    # at the clusters' means (unit-norm means under the cosine metric) with the labels
    # unchanged, minus sum w·||x||², including an empty cluster.
    g = torch.Generator().manual_seed(6)
    B, G, k, n, d = 2, 2, 4, 300, 5
    X = torch.randn(B, n, d, generator=g, dtype=torch.float64)
    if spherical:
        X = X / X.norm(dim=-1, keepdim=True)
    mask = torch.rand(B, n, generator=g) > 0.25
    w = mask.double()
    labels = torch.randint(0, k - 1, (B, G, n), generator=g, dtype=torch.int32)  # slot 3 empty
    got = _ops._step_bound(_ops._cluster_stats(X, w, labels, k), spherical)
    for b in range(B):
        for gr in range(G):
            total = 0.0
            for c in range(k):
                members = X[b][mask[b] & (labels[b, gr] == c)]
                if len(members) == 0:
                    continue
                center = members.mean(0)
                if spherical:
                    center = center / center.norm()
                total += float(((members - center) ** 2).sum() - (members**2).sum())
            assert got[b, gr].item() == pytest.approx(total, rel=1e-12, abs=1e-9)


def creeping_items(seeds, n=2000, dim=40, spread=1.5):
    """Unit-norm 3-cluster embedding items (as the k-means benchmark) on which plain Lloyd
    steps from a k-means++ start take 20-55 iterations, in float64."""
    X = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        dirs = rng.normal(size=(3, dim))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        lab = rng.choice(3, size=n, p=rng.dirichlet(np.full(3, 3.0)))
        pts = dirs[lab] + rng.normal(scale=spread / np.sqrt(dim), size=(n, dim))
        X.append(pts / np.linalg.norm(pts, axis=1, keepdims=True))
    return torch.from_numpy(np.stack(X))


@pytest.mark.parametrize("tol", [0.0, 1e-4])
def test_overrelaxed_steps_cut_the_iterations_of_creeping_items_and_end_at_fixed_points(tol):
    seeds = [1, 13, 26, 53, 57, 68, 70, 72, 82, 94, 100, 102, 110, 126, 136, 137, 141, 142, 148]
    X = creeping_items(seeds)
    mask = torch.ones(X.shape[:2], dtype=torch.bool)
    starts = torch.cat([
        _ops.kmeans_plusplus(X[i:i + 1], mask[i:i + 1], 3, 1, _ops.make_generator(s, X.device))
        for i, s in enumerate(seeds)
    ])  # (items, 1, 3, dim): each item's own k-means++ start
    valid = torch.ones(len(seeds), 1, 3, dtype=torch.bool)
    tol_abs = tol * _ops.masked_mean_variance(X, mask, (X * X).sum(-1))
    fast = _ops.lloyd(X, mask, starts, valid, max_iter=300, tol=tol_abs)
    plain = _ops.lloyd(X, mask, starts, valid, max_iter=300, tol=tol_abs, overrelax=False)
    assert int(plain[3].sum()) >= 20 * len(seeds)
    assert int(fast[3].sum()) <= 0.85 * int(plain[3].sum())
    assert int(fast[3].max()) < 300  # every item converged
    # Labels are the nearest centers (float64 brute force); at tol 0 the result is an exact
    # Lloyd fixed point (the centers are their clusters' means); the inertia is as good.
    centers, labels = fast[0][:, 0], fast[1][:, 0]
    assert torch.equal(labels, (torch.cdist(X, centers) ** 2).argmin(-1))
    if tol == 0.0:
        for b in range(len(seeds)):
            means = torch.stack([X[b][labels[b] == c].mean(0) for c in range(3)])
            torch.testing.assert_close(centers[b], means, rtol=0.0, atol=1e-12)
    torch.testing.assert_close(fast[2].sum(), plain[2].sum(), rtol=1e-3, atol=0.0)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8, 9, 12])
def test_min_slot_matches_torch_min_with_ties_to_the_lowest_slot(k):
    # The running minimum over the center slots (and its int32 labels) must equal
    # torch.min over the slot dimension, ties going to the first slot, as argmin does.
    g = torch.Generator().manual_seed(k)
    s = torch.randint(0, 4, (3, 2, k, 500), generator=g).float()  # many exact ties
    s[0, 0, :, :7] = float("inf")  # every slot disabled at a few points
    best, labels = _ops._min_slot(s)
    ref = s.min(2)
    assert torch.equal(best, ref.values)
    assert labels.dtype == torch.int32 and torch.equal(labels.long(), ref.indices)


def test_scores_from_a_contiguous_transpose_match_the_view():
    g = torch.Generator().manual_seed(5)
    X = torch.randn(2, 300, 7, generator=g)
    C = torch.randn(2, 3, 4, 7, generator=g)
    offset = _ops._offset(_ops.center_valid(torch.tensor([[4, 4, 2], [3, 1, 4]]), 4), X.dtype)
    ref = _ops._scores(X, C, offset)
    got = _ops._scores(X, C, offset, X.transpose(1, 2).contiguous())
    torch.testing.assert_close(got, ref)
    d2 = torch.cdist(X.double()[:, None], C.double()) ** 2  # (2, 3, 300, 4) float64 reference
    want = (d2 - (X.double() ** 2).sum(-1)[:, None, :, None]).transpose(2, 3)
    finite = torch.isfinite(got)
    torch.testing.assert_close(got[finite].double(), want[finite], rtol=1e-4, atol=1e-4)
    assert bool(torch.isinf(got[~finite]).all()) and int((~finite).sum()) == (2 + 4) * 300  # disabled slots

def test_lloyd_reaches_a_fixed_point_against_float64_brute_force():
    X, _ = gaussian_items(3, 200, 5, 4, 1.0, seed=2)
    X = X.double()
    mask = torch.rand(3, 200, generator=torch.Generator().manual_seed(0)) > 0.2
    res = kmeans(X, mask, torch.tensor([4, 3, 2]), 4, n_init=2, max_iter=300, tol=0.0,
                 generator=_ops.make_generator(0, X.device))
    for b, k in enumerate([4, 3, 2]):
        C = res.centers[b, :k]
        d = torch.cdist(X[b], C) ** 2  # (n, k) float64 reference
        assert torch.equal(res.labels[b], d.argmin(1))
        m = mask[b]
        for c in range(k):
            members = X[b][m & (res.labels[b] == c)]
            torch.testing.assert_close(C[c], members.mean(0))
        assert res.inertia[b].item() == pytest.approx(d[m].min(1).values.sum().item(), rel=1e-9)
        assert bool((res.centers[b, k:] == 0).all())


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


def test_empty_cluster_moves_to_the_farthest_point():
    # One center starts far from every point: it gets nothing, so it must be moved to the
    # point farthest from its own center (the outlier at 20), as scikit-learn relocates.
    X = torch.tensor([[[0.0], [0.1], [0.2], [1.0], [1.1], [20.0]]])
    mask = torch.ones(1, 6, dtype=torch.bool)
    centers = torch.tensor([[[[0.5], [-100.0]]]])  # (batch, G, k, dim)
    valid = torch.ones(1, 1, 2, dtype=torch.bool)
    C, labels, inertia, n_iter = _ops.lloyd(X, mask, centers, valid, max_iter=1, tol=torch.zeros(1))
    assert C[0, 0, 1].item() == 20.0
    C, labels, inertia, n_iter = _ops.lloyd(X, mask, centers, valid, max_iter=50, tol=torch.zeros(1))
    assert labels[0, 0].tolist() == [0, 0, 0, 0, 0, 1]
    assert sorted(C[0, 0, :, 0].tolist()) == pytest.approx([0.48, 20.0])


def test_several_empty_clusters_get_distinct_points():
    X = torch.tensor([[[0.0], [1.0], [5.0], [9.0], [10.0]]])
    centers = torch.tensor([[[[5.0], [-50.0], [-60.0]]]])
    valid = torch.ones(1, 1, 3, dtype=torch.bool)
    _, labels, _, _ = _ops.lloyd(X, torch.ones(1, 5, dtype=torch.bool), centers, valid,
                                 max_iter=50, tol=torch.zeros(1))
    assert len(set(labels[0, 0].tolist())) == 3


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


def test_restarts_keep_the_best_inertia():
    X, _ = gaussian_items(6, 300, 4, 6, 1.2, seed=5)
    Xc = X.double()
    mask = torch.ones(X.shape[:2], dtype=torch.bool)
    # The same draws as kmeans() makes: its restarts are these groups, run side by side.
    centers = _ops.kmeans_plusplus(Xc, mask, 6, 4, _ops.make_generator(0, X.device))
    valid = torch.ones(6, 4, 6, dtype=torch.bool)
    _, labels, inertia, _ = _ops.lloyd(Xc, mask, centers, valid, max_iter=50, tol=torch.zeros(6))
    res = kmeans(Xc, mask, torch.full((6,), 6), 6, n_init=4, max_iter=50, tol=0.0,
                 generator=_ops.make_generator(0, X.device))
    torch.testing.assert_close(res.inertia, inertia.min(1).values)
    assert torch.equal(res.labels, labels[torch.arange(6), inertia.argmin(1)])
    assert bool((inertia.max(1).values > inertia.min(1).values).any())  # restarts did differ


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
    # invariant to the points' norms
    scale = torch.rand(3, 200, 1, generator=torch.Generator().manual_seed(2)) * 5 + 0.1
    assert torch.equal(KMeans(n_clusters=3, metric="cosine").fit_predict(X * scale), km.labels_)
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


def test_one_thread_for_small_work_restores_the_thread_count(monkeypatch):
    # The limit holds only inside its block, only for work below the threshold, and leaves
    # torch's setting as found; k-means results do not depend on it.
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(_ops, "SMALL_WORK", 1000)
        with _ops.OneThreadForSmallWork(torch.device("cpu")) as threads:
            threads.engage(5000)
            assert torch.get_num_threads() == 2  # large work: untouched
            threads.engage(10)
            assert torch.get_num_threads() == 1
            threads.engage(10)  # engaging twice saves nothing twice
        assert torch.get_num_threads() == 2
        X = torch.randn(3, 400, 5, generator=torch.Generator().manual_seed(0))
        monkeypatch.setattr(_ops, "SMALL_WORK", 10**9)  # every step on one thread
        limited = KMeans(n_clusters=3, seed=0).fit_predict(X)
        assert torch.get_num_threads() == 2
        monkeypatch.setattr(_ops, "SMALL_WORK", 0)
        # same partition (products may round differently with another thread count)
        assert adjusted_rand_score(limited.flatten(), KMeans(n_clusters=3, seed=0).fit_predict(X).flatten()) == 1.0
    finally:
        torch.set_num_threads(before)
