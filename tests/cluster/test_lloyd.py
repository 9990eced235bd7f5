"""Lloyd's iterations and the functional batched k-means against float64 brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedseg.cluster import _distances, _lloyd, _seeding
from embedseg.cluster._lloyd import kmeans

from .blobs import gaussian_items


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

    stats = _lloyd._cluster_stats(X, w, prev, k)
    for lab in (labels, torch.randint(0, k, (B, G, n), generator=g, dtype=torch.int32)):
        # few changes: moved point by point; many: recounted from scratch; same result
        got = _lloyd._update_stats(X, w, lab, prev, stats)
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
    valid = _distances.center_valid(torch.tensor([3, 2, 3, 1, 3]), k)[:, None, :].expand(B, G, k)
    offset = _lloyd._offset(valid, X.dtype)
    w = (torch.rand(B, n, generator=g) > 0.3).to(X.dtype) if masked else None
    ref_min, ref_lab = _lloyd._min_slot(_lloyd._scores(X, C, offset))
    ref_stats = _lloyd._cluster_stats(X, w, ref_lab, k)
    monkeypatch.setattr(_lloyd, "_BLOCK_BYTES", 2 * n * d * X.element_size())  # blocks of 2 items
    got_min, got_lab, got_stats = _lloyd._assign_with_stats(X, w, C, offset)
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
    got = _lloyd._step_bound(_lloyd._cluster_stats(X, w, labels, k), spherical)
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
    seeds = [1, 9, 13, 23, 32, 40, 70, 72, 77, 82, 94, 95, 99, 100, 120, 134, 135, 144, 148]
    X = creeping_items(seeds)
    mask = torch.ones(X.shape[:2], dtype=torch.bool)
    starts = torch.cat([
        _seeding.kmeans_plusplus(X[i:i + 1], mask[i:i + 1], 3, 1, _seeding.make_generator(s, X.device))
        for i, s in enumerate(seeds)
    ])  # (items, 1, 3, dim): each item's own k-means++ start
    valid = torch.ones(len(seeds), 1, 3, dtype=torch.bool)
    tol_abs = tol * _distances.masked_mean_variance(X, mask, (X * X).sum(-1))
    fast = _lloyd.lloyd(X, mask, starts, valid, max_iter=300, tol=tol_abs)
    plain = _lloyd.lloyd(X, mask, starts, valid, max_iter=300, tol=tol_abs, overrelax=False)
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
    best, labels = _lloyd._min_slot(s)
    ref = s.min(2)
    assert torch.equal(best, ref.values)
    assert labels.dtype == torch.int32 and torch.equal(labels.long(), ref.indices)


def test_scores_from_a_contiguous_transpose_match_the_view():
    g = torch.Generator().manual_seed(5)
    X = torch.randn(2, 300, 7, generator=g)
    C = torch.randn(2, 3, 4, 7, generator=g)
    offset = _lloyd._offset(_distances.center_valid(torch.tensor([[4, 4, 2], [3, 1, 4]]), 4), X.dtype)
    ref = _lloyd._scores(X, C, offset)
    got = _lloyd._scores(X, C, offset, X.transpose(1, 2).contiguous())
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
                 generator=_seeding.make_generator(0, X.device))
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


def test_empty_cluster_moves_to_the_farthest_point():
    # One center starts far from every point: it gets nothing, so it must be moved to the
    # point farthest from its own center (the outlier at 20), as scikit-learn relocates.
    X = torch.tensor([[[0.0], [0.1], [0.2], [1.0], [1.1], [20.0]]])
    mask = torch.ones(1, 6, dtype=torch.bool)
    centers = torch.tensor([[[[0.5], [-100.0]]]])  # (batch, G, k, dim)
    valid = torch.ones(1, 1, 2, dtype=torch.bool)
    C, labels, inertia, n_iter = _lloyd.lloyd(X, mask, centers, valid, max_iter=1, tol=torch.zeros(1))
    assert C[0, 0, 1].item() == 20.0
    C, labels, inertia, n_iter = _lloyd.lloyd(X, mask, centers, valid, max_iter=50, tol=torch.zeros(1))
    assert labels[0, 0].tolist() == [0, 0, 0, 0, 0, 1]
    assert sorted(C[0, 0, :, 0].tolist()) == pytest.approx([0.48, 20.0])


def test_several_empty_clusters_get_distinct_points():
    X = torch.tensor([[[0.0], [1.0], [5.0], [9.0], [10.0]]])
    centers = torch.tensor([[[[5.0], [-50.0], [-60.0]]]])
    valid = torch.ones(1, 1, 3, dtype=torch.bool)
    _, labels, _, _ = _lloyd.lloyd(X, torch.ones(1, 5, dtype=torch.bool), centers, valid,
                                 max_iter=50, tol=torch.zeros(1))
    assert len(set(labels[0, 0].tolist())) == 3


def test_restarts_keep_the_best_inertia():
    X, _ = gaussian_items(6, 300, 4, 6, 1.2, seed=5)
    Xc = X.double()
    mask = torch.ones(X.shape[:2], dtype=torch.bool)
    # The same draws as kmeans() makes: its restarts are these groups, run side by side.
    centers = _seeding.kmeans_plusplus(Xc, mask, 6, 4, _seeding.make_generator(0, X.device))
    valid = torch.ones(6, 4, 6, dtype=torch.bool)
    _, labels, inertia, _ = _lloyd.lloyd(Xc, mask, centers, valid, max_iter=50, tol=torch.zeros(6))
    res = kmeans(Xc, mask, torch.full((6,), 6), 6, n_init=4, max_iter=50, tol=0.0,
                 generator=_seeding.make_generator(0, X.device))
    torch.testing.assert_close(res.inertia, inertia.min(1).values)
    assert torch.equal(res.labels, labels[torch.arange(6), inertia.argmin(1)])
    assert bool((inertia.max(1).values > inertia.min(1).values).any())  # restarts did differ
