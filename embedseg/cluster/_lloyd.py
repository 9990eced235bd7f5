"""Batched k-means, functional: seeded restarts and Lloyd's iterations.

:func:`kmeans` is the algorithm behind :class:`~embedseg.cluster.KMeans`, and the start of
the Gaussian mixtures, of spectral clustering and of the automatic cluster counts; it works
on already validated tensors. Several independent fits of the same item (restarts, or one per
candidate number of clusters) are laid out as *groups*: centers are (batch, groups, k_max,
dim) and share the item's points, so a single ``bmm`` computes the distances of every point
to every center of every group while reading X once. Center slots at or beyond a group's
count are disabled (``valid``): such a center is at distance +inf from every point, so it
never wins a point, never moves and never counts.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ._distances import center_valid, compute_dtype, gather_points, masked_mean_variance, normalize_rows
from ._seeding import copy_generator, kmeans_plusplus, random_init, subsample_active
from ._threads import OneThreadForSmallWork

__all__ = ["KMeansResult", "kmeans", "lloyd"]

INITS = ("k-means++", "random")
# How much looser the restarts' tolerance is on the subsample than on the full data.
_SUBSAMPLE_TOL_FACTOR = 10.0
# Lloyd iterations cap of the restarts on the subsample. They only rank the starts, and the
# full-data run refines the one kept (scikit-learn's MiniBatchKMeans ranks its init_size
# starts with no iteration at all); a few iterations rank them as well as many, at a fraction
# of the cost (benchmarks/RESULTS.md).
_SUBSAMPLE_MAX_ITER = 8


class KMeansResult(NamedTuple):
    """The best restart of a batched k-means fit, per item.

    Shape:
        centers: (batch, k_max, dim); labels: (batch, n_points) int64; inertia: (batch,);
        n_iter: (batch,) int64.
    """

    centers: torch.Tensor
    labels: torch.Tensor
    inertia: torch.Tensor
    n_iter: torch.Tensor


def kmeans(
    X: torch.Tensor,
    mask: torch.Tensor,
    counts: torch.Tensor,
    k_max: int,
    *,
    n_init: int = 3,
    max_iter: int = 100,
    tol: float = 1e-4,
    init: str = "k-means++",
    metric: str = "euclidean",
    init_size: int | None = None,
    generator: torch.Generator,
    seed_counts: torch.Tensor | None = None,
) -> KMeansResult:
    """Batched k-means on already validated inputs (see :class:`~embedseg.cluster.KMeans`).

    Restarts are laid out as groups sharing the item's points (one matmul per iteration covers
    all of them); per item the restart with the lowest inertia is kept. With ``init_size``,
    items with more active points than that are first seeded and run, all restarts, on
    ``init_size`` active points drawn at random (with replacement), to a 10x looser tolerance
    or at most 8 iterations; the best restart then starts a single Lloyd run on all the
    points, which converges in a few passes. The other items of the batch run on all their
    points, as they would alone.

    Args:
        X: (batch, n_points, dim) points.
        mask: (batch, n_points) bool, points to fit on.
        counts: (batch,) int64 clusters per item (<= its active points).
        k_max: center slots; slots at or beyond an item's count are disabled.
        n_init: restarts.
        max_iter: Lloyd iterations cap.
        tol: relative tolerance on the squared center shift (times the item's mean feature
            variance, like scikit-learn).
        init: "k-means++" or "random".
        metric: "euclidean" or "cosine" (spherical k-means; centers kept at unit norm and the
            inertia is the sum of 1 - cos(x, center)).
        init_size: subsample size for the restarts (raised to k_max if smaller); None runs
            the restarts on all the points.
        generator: random source on X's device.
        seed_counts: the counts k-means++ seeds each item for (its candidates per step; see
            :func:`~embedseg.cluster._seeding.kmeans_plusplus`): ``counts`` when k_max is only
            the batch's largest count, None when every item has k_max slots of its own (a
            count chosen among up to k_max).

    Returns:
        A :class:`KMeansResult` with centers in X's dtype; ``n_iter`` counts the iterations
        on all the points.
    """
    m = None if init_size is None else max(int(init_size), k_max)
    if m is not None:
        large = mask.sum(1) > m  # (batch,) items whose restarts run on a subsample
        if bool(large.any()) and not bool(large.all()):
            # Whether an item is subsampled is its own matter, not its batch-mates': the items
            # with at most m active points run on all of them, as they would alone, from the
            # same generator state as the others.
            parts = []
            for group, gen in ((~large, copy_generator(generator)), (large, generator)):
                rows = torch.nonzero(group).squeeze(1)
                parts.append((rows, kmeans(
                    X[rows], mask[rows], counts[rows], k_max, n_init=n_init, max_iter=max_iter, tol=tol,
                    init=init, metric=metric, init_size=init_size, generator=gen,
                    seed_counts=None if seed_counts is None else seed_counts[rows],
                )))
            merged = []
            for field in KMeansResult._fields:
                first = getattr(parts[0][1], field)
                out = first.new_empty((X.shape[0], *first.shape[1:]))
                for rows, res in parts:
                    out[rows] = getattr(res, field)
                merged.append(out)
            return KMeansResult(*merged)
    dtype = compute_dtype(X)
    Xc = X.to(dtype)
    spherical = metric == "cosine"
    if spherical:
        Xc = normalize_rows(Xc)
    B, n, d = Xc.shape
    x_sq = torch.linalg.vector_norm(Xc, dim=-1).square_()  # (batch, n), no (batch, n, dim) temporary
    valid = center_valid(counts, k_max)[:, None, :].expand(B, n_init, k_max)  # (batch, G, k)
    ar = torch.arange(B, device=X.device)
    if m is not None and int(mask.sum(1).max()) > m:
        idx, sub_mask = subsample_active(mask, m, generator, replace=True)  # (batch, m)
        S = gather_points(Xc, idx)  # (batch, m, dim)
        s_sq = torch.gather(x_sq, 1, idx)  # (batch, m)
        with OneThreadForSmallWork(X.device) as threads:
            threads.engage(B * n_init * k_max * m)
            centers = _seed(S, sub_mask, s_sq, k_max, n_init, init, generator, seed_counts)
        # The subsample's variance scales the tolerance for both phases (saves a full pass).
        tol_abs = tol * masked_mean_variance(S, sub_mask, s_sq)  # (batch,)
        # The subsample run only picks the start, so it stops at a looser tolerance; the
        # full-data run below applies the real one. Plain steps here: at that tolerance the
        # runs are short, and over-relaxing costs more than it saves.
        centers, _, sub_inertia, _ = lloyd(
            S, sub_mask, centers, valid, max_iter=min(max_iter, _SUBSAMPLE_MAX_ITER),
            tol=_SUBSAMPLE_TOL_FACTOR * tol_abs,
            spherical=spherical, x_sq=s_sq, overrelax=False,
        )
        centers = centers[ar, sub_inertia.argmin(1)][:, None]  # (batch, 1, k, dim)
        valid = valid[:, :1]
    else:
        tol_abs = tol * masked_mean_variance(Xc, mask, x_sq)  # (batch,)
        with OneThreadForSmallWork(X.device) as threads:
            threads.engage(B * n_init * k_max * n)
            centers = _seed(Xc, mask, x_sq, k_max, n_init, init, generator, seed_counts)
    centers, labels, inertia, n_iter = lloyd(
        Xc, mask, centers, valid, max_iter=max_iter, tol=tol_abs, spherical=spherical, x_sq=x_sq
    )
    if spherical:
        inertia = 0.5 * inertia  # ||x - c||² = 2 (1 - cos) for unit vectors
    best = inertia.argmin(1)  # (batch,)
    return KMeansResult(
        centers=centers[ar, best].to(X.dtype),  # (batch, k_max, dim)
        labels=labels[ar, best],  # (batch, n)
        inertia=inertia[ar, best],  # (batch,)
        n_iter=n_iter[ar, best],  # (batch,)
    )


def _seed(
    X: torch.Tensor,
    mask: torch.Tensor,
    x_sq: torch.Tensor,
    k_max: int,
    n_init: int,
    init: str,
    generator: torch.Generator,
    seed_counts: torch.Tensor | None = None,
) -> torch.Tensor:
    """Initial centers (batch, n_init, k_max, dim) for every restart."""
    if init == "k-means++":
        return kmeans_plusplus(X, mask, k_max, n_init, generator, x_sq=x_sq, counts=seed_counts)
    return random_init(X, mask, k_max, n_init, generator)


def _offset(valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 for the center slots in use, +inf for disabled ones: (batch, G, k)."""
    return torch.zeros(valid.shape, dtype=dtype, device=valid.device).masked_fill_(~valid, math.inf)


def _scores(
    X: torch.Tensor, centers: torch.Tensor, offset: torch.Tensor, Xt: torch.Tensor | None = None
) -> torch.Tensor:
    """``||c||² − 2 c·x`` for every group, center and point (+inf for disabled centers): the
    squared distance minus ``||x||²``, enough to rank centers with one matmul and no
    per-point term. Points are the last (contiguous) dimension so that the reductions over
    the few centers vectorize across points.

    Shape:
        X: (batch, n, dim); centers: (batch, G, k, dim); offset: (batch, G, k) from
        :func:`_offset`; Xt: X.transpose(1, 2) made contiguous, or None; result
        (batch, G, k, n).
    """
    B, G, k, d = centers.shape
    C = centers.reshape(B, G * k, d)
    c_sq = (C * C).sum(-1) + offset.reshape(B, G * k)  # (batch, G*k)
    # A contiguous (dim, n) operand makes a faster product than the transposed view.
    Xt = X.transpose(1, 2) if Xt is None else Xt  # (batch, dim, n)
    s = torch.baddbmm(c_sq[:, :, None], C, Xt, alpha=-2.0)  # (batch, G*k, n)
    return s.view(B, G, k, -1)


def _min_slot(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum over the centers (dim 2) and the first center reaching it (int32), as
    ``s.min(2)``.

    torch's argmin over a middle dimension does not vectorize across the contiguous points
    on CPU: for a few centers, a running minimum over the slots;
    for many, an ``amin`` and an integer ``amin`` of the slots reaching it.
    """
    k = s.shape[2]
    if k == 1:
        return s[:, :, 0], torch.zeros(s[:, :, 0].shape, dtype=torch.int32, device=s.device)
    if k <= 8:
        # strict comparisons: ties keep the lowest slot
        labels = (s[:, :, 1] < s[:, :, 0]).to(torch.int32)  # (batch, G, n)
        best = torch.minimum(s[:, :, 0], s[:, :, 1])
        for j in range(2, k):  # a loop over center slots, not over the batch
            sj = s[:, :, j]
            took = (sj < best).to(torch.int32)
            # labels = labels (1 - took) + j took, in place: masked_fill_ does not vectorize
            # on CPU
            labels.sub_(labels * took).add_(took, alpha=j)
            best = torch.minimum(best, sj)
        return best, labels
    smin = s.amin(2, keepdim=True)  # (batch, G, 1, n)
    slots = torch.arange(k, dtype=torch.int32, device=s.device)[:, None]  # (k, 1)
    first = torch.where(s == smin, slots, k).amin(2)  # (batch, G, n); ties -> lowest slot
    return smin[:, :, 0], first


def _assign(
    X: torch.Tensor, centers: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest valid center of every point in every group: (min score, int32 label), each of
    shape (batch, G, n); the squared distance is the score plus ``||x||²``."""
    return _min_slot(_scores(X, centers, _offset(valid, X.dtype)))


def _transposed(X: torch.Tensor) -> torch.Tensor:
    """``X.transpose(1, 2)`` as a contiguous tensor; copying into a transposed view of the
    output is faster on CPU than ``.contiguous()`` on the transposed input."""
    out = torch.empty((X.shape[0], X.shape[2], X.shape[1]), dtype=X.dtype, device=X.device)
    out.transpose(1, 2).copy_(X)
    return out


# Below this fraction of points changing cluster, the per-cluster sums are updated from the
# changed points alone instead of a pass over all of them (Lloyd's late iterations move few
# points, so each then costs one pass over X instead of two).
_DELTA_FRACTION = 0.125


def _cluster_stats(X: torch.Tensor, w: torch.Tensor | None, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Per-group, per-cluster weighted sums of the points with the weighted count as one more
    column, accumulated in float64: (batch, G, k, dim + 1)."""
    B, G, n = labels.shape
    d = X.shape[2]
    slots = torch.arange(k, dtype=torch.int32, device=X.device)
    # Per-group weighted one-hot; one bmm gives every group's per-cluster sums.
    onehot = (labels[:, :, None, :] == slots[:, None]).to(X.dtype)  # (batch, G, k, n)
    if w is not None:  # None: every point active
        onehot.mul_(w[:, None, None, :])
    onehot = onehot.view(B, G * k, n)
    sums = torch.bmm(onehot, X).view(B, G, k, d)  # (batch, G, k, dim)
    counts = onehot.sum(-1).view(B, G, k, 1)  # (batch, G, k, 1)
    return torch.cat((sums, counts), -1).double()


def _update_stats(
    X: torch.Tensor, w: torch.Tensor | None, labels: torch.Tensor, prev: torch.Tensor, stats: torch.Tensor
) -> torch.Tensor:
    """Cluster sums and counts (as :func:`_cluster_stats`) for ``labels``, from those of
    ``prev``: moved from the old cluster to the new one for the (active) points that changed,
    or recomputed from scratch when too many changed. Returns a new tensor.

    Late Lloyd iterations run on one or two items, where each small torch operation costs as
    much as its arithmetic, so the index work is kept to a few operations per step."""
    B, G, k, d1 = stats.shape
    n = X.shape[1]
    changed = labels != prev  # (batch, G, n)
    if w is not None:
        changed &= w[:, None, :] > 0
    at = changed.view(-1).nonzero().view(-1)  # (m,) flat (item, group, point) index
    if at.shape[0] > _DELTA_FRACTION * changed.numel():
        return _cluster_stats(X, w, labels, k)
    if G == 1:
        bp, row = at, at.div(n, rounding_mode="floor") * k  # (m,) point, first slot of its item
    else:
        bg = at.div(n, rounding_mode="floor")  # (m,) item * G + group
        bp = at - (bg - bg.div(G, rounding_mode="floor")) * n  # (m,) flat (item, point) index
        row = bg * k
    pts = X.reshape(B * n, d1 - 1).index_select(0, bp)  # (m, dim)
    if w is None:
        one = torch.ones((), dtype=X.dtype, device=X.device).expand(pts.shape[0], 1)
        delta = torch.cat((pts, one), 1).double()  # (m, dim + 1)
    else:
        wt = w.reshape(-1).index_select(0, bp)[:, None]  # (m, 1)
        delta = torch.cat((pts * wt, wt), 1).double()
    new_slot = row + labels.view(-1).index_select(0, at)
    old_slot = row + prev.view(-1).index_select(0, at)
    # One index_add of the 2m signed rows: each call has a fixed cost comparable to its work.
    slots = torch.cat((new_slot, old_slot))
    flat = stats.reshape(B * G * k, d1).index_add(0, slots, torch.cat((delta, delta.neg())))
    return flat.view(B, G, k, d1)


# Items per block of :func:`_assign_with_stats` on CPU: about this many bytes of points, so
# that a block's points are still in the cache when their cluster sums are formed.
_BLOCK_BYTES = 4 << 20


def _assign_with_stats(
    X: torch.Tensor, w: torch.Tensor | None, centers: torch.Tensor, offset: torch.Tensor,
    Xt: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nearest centers (min score, int32 label) and the cluster sums of those labels (as
    :func:`_cluster_stats`), in blocks of items on CPU.

    Both read all the points. Batch-wide, the second pass comes back to memory once the
    points exceed the cache; in blocks of a few MB it reads them from the cache. The blocks
    are a cache tiling of batched operations, not a loop over items: small batches are one
    block.
    """
    B, k = X.shape[0], centers.shape[2]
    per = max(B, 1)  # items per block; on accelerators one block
    if X.device.type == "cpu":
        per = max(1, _BLOCK_BYTES // max(1, X.shape[1] * X.shape[2] * X.element_size()))
    parts = []
    for i in range(0, max(B, 1), per):
        blk = slice(i, i + per)
        Xb, wb = X[blk], None if w is None else w[blk]
        smin, labels = _min_slot(_scores(Xb, centers[blk], offset[blk], None if Xt is None else Xt[blk]))
        parts.append((smin, labels, _cluster_stats(Xb, wb, labels, k)))
    return parts[0] if len(parts) == 1 else tuple(torch.cat(t) for t in zip(*parts))


def _lloyd_step(
    X: torch.Tensor,
    w: torch.Tensor | None,
    x_sq: torch.Tensor,
    centers: torch.Tensor,
    valid: torch.Tensor,
    offset: torch.Tensor,
    spherical: bool,
    state: tuple[torch.Tensor, torch.Tensor] | None = None,
    Xt: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """One assignment + update: (new centers, labels, min score, state), the labels and
    scores being those of the centers given; ``w`` None means all active. ``state`` is
    (labels, stats) of the previous step, returned updated for the next one; ``Xt`` is
    X.transpose(1, 2) made contiguous, if at hand."""
    B, G, k, d = centers.shape
    n = X.shape[1]
    if state is None:
        smin, labels, stats = _assign_with_stats(X, w, centers, offset, Xt)  # (batch, G, n)
    else:
        smin, labels = _min_slot(_scores(X, centers, offset, Xt))  # (batch, G, n)
        stats = _update_stats(X, w, labels, *state)
    counts = stats[..., d:]  # (batch, G, k, 1)
    # Sums are exact in float64 whichever way they were formed; the centers are their means.
    new = (stats[..., :d] / counts.clamp_min(1.0)).to(X.dtype)  # disabled slots: 0
    if spherical:
        new = normalize_rows(new)
    # Counts are sums of 0/1 weights: exact, and below 0.5 only when zero.
    empty = (counts[..., 0] < 0.5) & valid  # (batch, G, k)
    if bool(empty.any()):
        far = smin + x_sq[:, None, :]  # (batch, G, n) squared distance to the own center
        far = far if w is None else far.masked_fill(w[:, None, :] <= 0, -math.inf)
        top = far.topk(min(k, n), dim=-1).indices  # (batch, G, min(k, n))
        rank = (empty.cumsum(-1) - 1).clamp(0, top.shape[-1] - 1)  # (batch, G, k)
        pts = gather_points(X, top.gather(-1, rank).view(B, G * k)).view(B, G, k, d)
        new = torch.where(empty[..., None], pts, new)
    return new, labels, smin, (labels, stats)


# Over-relaxed Lloyd steps (see :func:`lloyd`): a group extrapolates while its plain step's
# squared size stays above _SLOW_RATIO times the previous one (the last iterations before
# convergence drop far more), the factor growing by _ETA_GROWTH per accepted step up to
# _ETA_MAX. _SLOW_RATIO was chosen among 0.05-0.5 on the items of benchmarks/bench_kmeans.py
# (iteration counts in benchmarks/RESULTS.md).
_SLOW_RATIO = 0.3
_ETA_GROWTH = 1.5
_ETA_MAX = 8.0
# Steps a copied working set runs before its points are also laid out as (dim, n).
_TRANSPOSE_AFTER = 3
# What copying an item out of the working set costs, in passes over that item.
_COPY_COST = 3


def _step_bound(stats: torch.Tensor, spherical: bool) -> torch.Tensor:
    """The objective after a plain Lloyd step with the labels kept (an upper bound on the
    objective after reassignment), up to the per-item constant sum of w·||x||², from the
    cluster sums S_j and counts n_j: -sum_j ||S_j||² / n_j, or for unit centers
    sum_j (n_j - 2 ||S_j||). Empty clusters add nothing. Shape: (batch, G, k, dim + 1) ->
    (batch, G) float64."""
    sums, counts = stats[..., :-1], stats[..., -1]
    norm_sq = (sums * sums).sum(-1)  # (batch, G, k)
    if spherical:
        per = torch.where(counts > 0, counts - 2.0 * norm_sq.sqrt(), 0.0)
    else:
        per = -norm_sq / counts.clamp_min(1.0)  # an empty cluster's sums are zero
    return per.sum(-1)


def _overrelax(
    centers: torch.Tensor,
    step: torch.Tensor,
    shift: torch.Tensor,
    prev_shift: torch.Tensor,
    rejected: torch.Tensor | None,
    converged: torch.Tensor,
    eta: torch.Tensor,
    base_obj: torch.Tensor,
    base_step: torch.Tensor,
    stats: torch.Tensor,
    valid: torch.Tensor,
    spherical: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The next centers of every group after one Lloyd step, and the updated over-relaxation
    state (eta, candidates, base objective, base step, previous shift).

    ``centers`` were just assigned and ``step`` is their plain Lloyd update, of squared size
    ``shift``. A rejected candidate goes back to its base point's plain step with ``eta`` =
    1. A converged group's next centers are ignored (it keeps those it was assigned with).
    Any other group takes its plain step unless its steps do not collapse (``shift`` above
    ``_SLOW_RATIO`` times the previous one) and none of its clusters was empty (a relocated
    center is a jump, not a direction to follow): then it moves ``eta`` times the step and
    becomes a candidate, to be kept only if its assignment scores at most its base point's
    bound (:func:`_step_bound`). Disabled slots stay at zero: both their centers and their
    step are zero. ``rejected`` and the returned candidates are None when there are
    none, so that the many iterations without any cost a few operations.

    Shape:
        centers, step, base_step: (batch, G, k, dim); shift, prev_shift, rejected, converged,
        eta, base_obj: (batch, G); stats: (batch, G, k, dim + 1) with the counts last; valid:
        (batch, G, k).
    """
    grow = (shift > _SLOW_RATIO * prev_shift) & ~converged
    if rejected is not None:
        grow &= ~rejected  # a rejected step's shift means nothing: keep the previous one
        prev_shift = torch.where(rejected, prev_shift, shift)
    else:
        prev_shift = shift
    if bool(grow.any()):
        grow &= ~((stats[..., -1] < 0.5) & valid).any(-1)  # no empty cluster
    if not bool(grow.any()):
        nxt = step if rejected is None else torch.where(rejected[..., None, None], base_step, step)
        return nxt, torch.ones_like(eta), None, base_obj, base_step, prev_shift
    eta = torch.where(grow, (eta * _ETA_GROWTH).clamp_(max=_ETA_MAX), torch.ones_like(eta))
    candidate = grow & (eta > 1.0)
    jump = centers + eta.to(centers.dtype)[..., None, None] * (step - centers)
    if spherical:
        jump = normalize_rows(jump)
    nxt = torch.where(candidate[..., None, None], jump, step)
    if rejected is not None:
        nxt = torch.where(rejected[..., None, None], base_step, nxt)
    # Only a candidate is ever compared with its base point or sent back to its step.
    base_obj = torch.where(candidate, _step_bound(stats, spherical), base_obj)
    base_step = torch.where(candidate[..., None, None], step, base_step)
    return nxt, eta, candidate, base_obj, base_step, prev_shift


def lloyd(
    X: torch.Tensor,
    mask: torch.Tensor,
    centers: torch.Tensor,
    valid: torch.Tensor,
    *,
    max_iter: int,
    tol: torch.Tensor,
    spherical: bool = False,
    x_sq: torch.Tensor | None = None,
    overrelax: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched Lloyd iterations, every item and group converging on its own.

    A group has converged when the Lloyd step from its centers would move them by at most
    its item's ``tol`` in squared shift (unchanged labels give a zero shift); it then keeps
    those centers, the last ones it was assigned with, so their labels need no further pass
    (scikit-learn instead takes the step and assigns once more: the same guarantees, labels
    nearest to the centers and centers within ``tol`` of their clusters' means, for one pass
    over the data less). Only groups stopped by ``max_iter`` get a final assignment. Once the
    passes spent on frozen items outweigh the cost of a copy, the moving items are copied
    out, so late iterations only touch them; the loop stops when none is left or after
    ``max_iter``. A valid center left without points moves to the active point farthest from
    its own center (the j-th empty center of a group to the j-th farthest point), as
    scikit-learn relocates empty clusters. With ``spherical`` the centers are renormalized to
    unit norm after each update (spherical k-means on unit-norm X). Cluster sums are kept in
    float64 from one step to the next and corrected by the few points that changed cluster,
    so that a late iteration reads X once (the assignment) rather than twice.

    While a group's steps shrink slowly (each above 0.3 times the previous one in squared
    size, unlike the collapse of the last iterations), they are over-relaxed (Salakhutdinov
    and Roweis 2003, "Adaptive overrelaxed bound optimization methods"): the centers move
    ``eta`` times the Lloyd step, ``eta`` growing by 1.5x per accepted step up to 8. The
    extrapolated centers are kept only if their assignment scores no worse than the plain
    step would with its labels kept (a bound computed from the cluster sums); otherwise the
    group takes the plain step and ``eta`` restarts at 1. Items that creep along a shallow
    valley converge in markedly fewer iterations, the inertia does not rise (up to
    rounding), and the result is still a fixed point of Lloyd's algorithm: the stopping test
    is on the plain step.

    Args:
        X: points in the compute dtype.
        mask: active points (only they move centers).
        centers: initial centers.
        valid: center slots in use.
        max_iter: iteration cap.
        tol: per-item threshold on the squared center shift.
        spherical: renormalize centers (cosine k-means).
        x_sq: squared norms of X, if already known.
        overrelax: over-relaxed steps for slowly converging groups (else plain Lloyd steps).

    Returns:
        (centers, labels, inertia, n_iter): the final centers, each point's nearest center (every
        point, masked ones included), the sum of squared distances of the active points to
        their center, and the iterations run per group.

    Shape:
        X: (batch, n, dim); mask: (batch, n); centers: (batch, G, k, dim); valid: (batch, G, k);
        tol: (batch,). Returns (batch, G, k, dim), (batch, G, n) int64, (batch, G), (batch, G).
    """
    B, G, k, d = centers.shape
    n = X.shape[1]
    if x_sq is None:
        x_sq = (X * X).sum(-1)  # (batch, n)
    w = mask.to(X.dtype)  # (batch, n)
    zero = torch.zeros((), dtype=X.dtype, device=X.device)
    centers = torch.where(valid[..., None], centers, zero)
    converged = torch.zeros(B, G, dtype=torch.bool, device=X.device)
    n_iter = torch.zeros(B, G, dtype=torch.int64, device=X.device)
    # Labels and scores (squared distance minus ||x||²) of each item's last assignment: those
    # of the returned centers wherever the group converged.
    labels = torch.zeros(B, G, n, dtype=torch.int32, device=X.device)
    dmin = torch.zeros(B, G, n, dtype=X.dtype, device=X.device)

    # The working set: items with a group still moving (all of them at first, without copies);
    # its state is written back to the full tensors only when the set shrinks or at the end.
    items: torch.Tensor | None = None
    full = bool(mask.all())
    Xa, wa, xa_sq, va, tol_a = X, None if full else w, x_sq, valid, tol
    oa = _offset(valid, X.dtype)
    ca, conv_a, it_a = centers, converged, n_iter
    lab_a, d_a = labels, dmin
    # Over-relaxation, for the working set only: each group's step factor, whether its centers
    # are an extrapolated candidate (None: no group is), and that candidate's base point's
    # bound and plain Lloyd step to fall back to; the previous step's squared size (+inf: no
    # group extrapolates on its first step).
    eta_a = torch.ones(B, G, dtype=torch.float64, device=X.device)
    cand_a: torch.Tensor | None = None
    bobj_a = torch.zeros(B, G, dtype=torch.float64, device=X.device)
    bstep_a = centers
    pshift_a = torch.full((B, G), math.inf, dtype=X.dtype, device=X.device)
    state = None  # the last step's labels and cluster sums, for the next step's update
    # The working set's points as (dim, n), made once a copied working set has kept moving
    # for _TRANSPOSE_AFTER steps: the transposed copy costs about four passes of the faster
    # product it enables, so it only pays for the items that creep.
    Xta = None
    steps_since_copy = 0
    idle_passes = 0  # item passes spent on items whose groups have all converged

    def flush() -> None:
        # Only the returned state is written back; the over-relaxation state of the items
        # that leave the working set is no longer needed.
        nonlocal centers, converged, n_iter, labels, dmin
        if items is None:
            centers, converged, n_iter, labels, dmin = ca, conv_a, it_a, lab_a, d_a
        else:
            centers = centers.index_copy(0, items, ca)
            converged = converged.index_copy(0, items, conv_a)
            n_iter = n_iter.index_copy(0, items, it_a)
            labels = labels.index_copy(0, items, lab_a)
            dmin = dmin.index_copy(0, items, d_a)

    with OneThreadForSmallWork(X.device) as threads:
        for _ in range(max_iter):
            threads.engage(Xa.shape[0] * G * k * n)  # once the working set is small
            if items is not None and Xta is None and steps_since_copy >= _TRANSPOSE_AFTER:
                Xta = _transposed(Xa)  # (active, dim, n)
            steps_since_copy += 1
            new, lab_a, d_a, state = _lloyd_step(Xa, wa, xa_sq, ca, va, oa, spherical, state, Xta)
            rejected = None
            if cand_a is not None:
                # The objective up to the per-item constant sum of ||x||² (float64: compared
                # with the base point's bound to well below float32 rounding).
                obj = (d_a if wa is None else d_a * wa[:, None, :]).sum(-1, dtype=torch.float64)
                rejected = cand_a & (obj > bobj_a)  # (active, G) the extrapolation overshot
            shift = ((new - ca) ** 2).sum((-1, -2))  # (active, G)
            it_a = it_a + (~conv_a).to(torch.int64)
            done = shift <= tol_a[:, None]
            if rejected is not None:
                done &= ~rejected
            conv_a = conv_a | done
            if overrelax:
                nxt, eta_a, cand_a, bobj_a, bstep_a, pshift_a = _overrelax(
                    ca, new, shift, pshift_a, rejected, conv_a, eta_a, bobj_a, bstep_a, state[1], va, spherical
                )
            else:
                nxt = new
            # A converged group keeps the centers it was just assigned with (see above), and
            # stays frozen from then on.
            ca = torch.where(conv_a[..., None, None], ca, nxt)
            moving = ~conv_a.all(1)  # (active,)
            n_moving = int(moving.sum())
            if n_moving == 0:
                break
            # Copy the still-moving items out once the passes spent on frozen items add up to
            # the copy's cost (about _COPY_COST passes per copied item: a fresh buffer's page
            # faults dominate), as in ski rental: never more than twice the better choice.
            idle_passes += moving.numel() - n_moving
            if n_moving < moving.numel() and idle_passes >= _COPY_COST * n_moving:
                idle_passes = 0
                flush()
                keep = torch.nonzero(moving).flatten()
                items = keep if items is None else items.index_select(0, keep)
                # index_select: advanced indexing of whole items is much slower on CPU; into
                # the previous copy's buffer, which is already mapped, if there is one
                if Xa is X:
                    Xa = X.index_select(0, items)
                else:
                    Xa = torch.index_select(X, 0, items, out=Xa[: items.shape[0]])
                if Xta is not None:  # already transposed: keep the layout, copy the items
                    Xta = Xta.index_select(0, keep)
                steps_since_copy = 0
                xa_sq, va, tol_a = (t.index_select(0, items) for t in (x_sq, valid, tol))
                wa = None if full else w.index_select(0, items)
                oa, ca, conv_a, it_a, lab_a, d_a = (
                    t.index_select(0, keep) for t in (oa, ca, conv_a, it_a, lab_a, d_a)
                )
                eta_a, bobj_a, bstep_a, pshift_a = (
                    t.index_select(0, keep) for t in (eta_a, bobj_a, bstep_a, pshift_a)
                )
                cand_a = None if cand_a is None else cand_a.index_select(0, keep)
                state = tuple(t.index_select(0, keep) for t in state)
    flush()

    # A final assignment for the items with a group stopped by max_iter (its last step moved
    # its centers), so that labels and inertia match the returned centers.
    stale = ~converged.all(1)  # (batch,)
    if bool(stale.all()):
        dmin, labels = _assign(X, centers, valid)  # (batch, G, n) scores
    elif 2 * int(stale.sum()) > B:  # copying most items out costs more than the pass they skip
        d_r, l_r = _assign(X, centers, valid)
        keep_old = ~stale[:, None, None]
        dmin, labels = torch.where(keep_old, dmin, d_r), torch.where(keep_old, labels, l_r)
    elif bool(stale.any()):
        redo = torch.nonzero(stale).flatten()
        d_r, l_r = _assign(*(t.index_select(0, redo) for t in (X, centers, valid)))
        dmin, labels = dmin.index_copy(0, redo, d_r), labels.index_copy(0, redo, l_r)
    dmin = (dmin + x_sq[:, None, :]).clamp_(min=0.0)  # scores -> squared distances
    inertia = (dmin * w[:, None, :]).sum(-1)  # (batch, G)
    return centers, labels.long(), inertia, n_iter
