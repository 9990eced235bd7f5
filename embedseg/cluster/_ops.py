"""Batched building blocks shared by the clusterers.

Everything here works on a whole batch at once, with no Python loop over items. Several
independent fits of the same item (k-means restarts, or one fit per candidate number of
clusters) are laid out as *groups*: centers are (batch, groups, k_max, dim) and share the
item's points, so a single ``bmm`` computes the distances of every point to every center of
every group while reading X once.

Per-item (or per-group) cluster counts are expressed with a ``valid`` mask over the k_max
center slots: a disabled center is at distance +inf from every point, so it never wins a
point, never moves and never counts.
"""

from __future__ import annotations

import math
import numbers
import os
import warnings
from typing import Any

import torch

from .._validation import check_int, shape_str

__all__ = [
    "compute_dtype",
    "make_generator",
    "sq_distances",
    "gather_points",
    "center_valid",
    "masked_mean_variance",
    "subsample_active",
    "kmeans_plusplus",
    "random_init",
    "lloyd",
    "OneThreadForSmallWork",
    "validate_n_clusters",
    "resolve_n_clusters",
]


def compute_dtype(X: torch.Tensor) -> torch.dtype:
    """float64 stays float64; every other floating dtype is computed (and accumulated) in float32."""
    return torch.float64 if X.dtype == torch.float64 else torch.float32


# Below this many (point, center) scores per step, a Lloyd, k-means++ or EM step on the CPU
# runs faster on one thread when OpenMP lets its idle threads sleep (OMP_WAIT_POLICY=passive,
# as on shared machines): every parallel region (each matmul, each large elementwise op)
# then has to wake them, which costs more than the work it splits. On a 2-core machine two
# threads were 1.2-1.8x slower than one for every size up to 16 items x 12,900 points x 3
# centers (k-means), and for the chunked EM passes. With OpenMP's default spin-waiting the
# second thread pays off, so nothing is limited. EMBEDSEG_SMALL_WORK overrides the
# threshold (0: never limit).
_PASSIVE_OPENMP = os.environ.get("OMP_WAIT_POLICY", "").strip().lower() == "passive"


def _small_work_threshold() -> int:
    default = 1 << 22 if _PASSIVE_OPENMP else 0
    value = os.environ.get("EMBEDSEG_SMALL_WORK", "").strip()
    if not value:
        return default
    try:
        return max(0, int(float(value)))
    except ValueError:
        warnings.warn(
            f"EMBEDSEG_SMALL_WORK must be a number of scores (e.g. 4000000), got {value!r}; "
            f"using {default}",
            RuntimeWarning,
            stacklevel=2,
        )
        return default


SMALL_WORK = _small_work_threshold()


class OneThreadForSmallWork:
    """Holds torch's intra-op threads at one while small CPU work runs, and restores them.

    Like scikit-learn's k-means, which limits BLAS to one thread around its own loop, this
    changes the process-wide setting for the duration: ``engage(work)`` switches to one
    thread the first time it is called with fewer than :data:`SMALL_WORK` units on a CPU
    device; leaving the ``with`` block restores the count found then. Nothing changes on
    CUDA, or when torch already runs one thread (so nested or concurrent users leave the
    setting as they found it).
    """

    def __init__(self, device: torch.device) -> None:
        self.cpu = device.type == "cpu"
        self.saved: int | None = None

    def engage(self, work: int) -> None:
        if self.cpu and self.saved is None and work < SMALL_WORK:
            threads = torch.get_num_threads()
            if threads > 1:
                self.saved = threads
                torch.set_num_threads(1)

    def __enter__(self) -> "OneThreadForSmallWork":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.saved is not None:
            torch.set_num_threads(self.saved)
            self.saved = None


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded with ``seed`` (results are reproducible per device)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def sq_distances(
    X: torch.Tensor, C: torch.Tensor, x_sq: torch.Tensor | None = None
) -> torch.Tensor:
    """Squared Euclidean distances of every point to every center, clamped at zero.

    Uses ``||x||² − 2 x·c + ||c||²`` so that the work is one batched matmul.

    Shape:
        X: (batch, n, dim); C: (batch, m, dim); x_sq: (batch, n) or None; result (batch, n, m).
    """
    if x_sq is None:
        x_sq = (X * X).sum(-1)  # (batch, n)
    c_sq = (C * C).sum(-1)  # (batch, m)
    d = torch.baddbmm(c_sq[:, None, :], X, C.transpose(1, 2), alpha=-2.0)  # (batch, n, m)
    d.add_(x_sq[:, :, None])
    return d.clamp_(min=0.0)


def gather_points(X: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows of each item: ``out[b, j] = X[b, idx[b, j]]``.

    Shape:
        X: (batch, n, dim); idx: (batch, m) int64; result (batch, m, dim).
    """
    B, n, d = X.shape
    offset = torch.arange(B, device=X.device)[:, None] * n  # (batch, 1)
    # index_select on the flattened points is several times faster than gather on CPU
    return X.reshape(B * n, d).index_select(0, (idx + offset).reshape(-1)).view(B, -1, d)


def center_valid(counts: torch.Tensor, k_max: int) -> torch.Tensor:
    """Which of the k_max center slots are in use, from per-item (or per-group) counts.

    Shape:
        counts: (...) int64; result (..., k_max) bool.
    """
    slots = torch.arange(k_max, device=counts.device)
    return slots < counts[..., None]


def masked_mean_variance(
    X: torch.Tensor, mask: torch.Tensor, x_sq: torch.Tensor | None = None
) -> torch.Tensor:
    """Per item, the mean over features of the variance of the active points (sklearn's scale
    for the k-means tolerance), as ``(E||x||² − ||E x||²) / dim`` from one matmul.

    Shape:
        X: (batch, n, dim); mask: (batch, n) bool; x_sq: (batch, n) or None; result (batch,).
    """
    if x_sq is None:
        x_sq = (X * X).sum(-1)  # (batch, n)
    w = mask.to(X.dtype)  # (batch, n)
    count = w.sum(1).clamp_min(1.0)  # (batch,)
    mean = torch.bmm(w[:, None, :], X)[:, 0] / count[:, None]  # (batch, dim)
    second = (x_sq * w).sum(1) / count  # (batch,)
    return ((second - (mean * mean).sum(-1)) / X.shape[2]).clamp_min(0.0)


def subsample_active(
    mask: torch.Tensor, size: int, generator: torch.Generator, *, replace: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick up to ``size`` active points per item uniformly at random.

    Items with at most ``size`` active points keep all of them, padded with inactive points
    (whose entry in the returned mask is False). Larger items draw ``size`` distinct points,
    or with ``replace`` draw with replacement, which is several times cheaper (no sort) and
    repeats only about size²/(2·n_active) points.

    Returns:
        (idx, sub_mask): indices into the points and whether each picked point is active.

    Shape:
        mask: (batch, n) bool; idx, sub_mask: (batch, min(size, n)).
    """
    B, n = mask.shape
    size = min(size, n)
    n_active = mask.sum(1)  # (batch,)
    if replace:
        # The u-th active point of each item, u uniform, found in the running count of actives.
        u = torch.rand(B, size, generator=generator, device=mask.device)  # (batch, size)
        rank = (u * n_active[:, None]).long().clamp_max_(n - 1)  # (batch, size) in [0, n_active)
        if bool(mask.all()):  # no padding: the u-th active point is point u
            return rank, torch.ones_like(rank, dtype=torch.bool)
        cum = mask.cumsum(1)  # (batch, n)
        drawn = torch.searchsorted(cum, rank + 1).clamp_max_(n - 1)  # (batch, size)
        # Items with few active points take all of them (and pad), as without replacement.
        small = n_active <= size  # (batch,)
        if bool(small.any()):
            keys = torch.arange(n, device=mask.device).expand(B, n).masked_fill(~mask, n)
            first = keys.topk(size, dim=1, largest=False).indices  # (batch, size) actives first
            drawn = torch.where(small[:, None], first, drawn)
        idx = drawn
    else:
        keys = torch.rand(mask.shape, generator=generator, device=mask.device)  # (batch, n)
        keys = keys.masked_fill(~mask, 2.0)  # inactive points sort last
        idx = keys.topk(size, dim=1, largest=False).indices  # (batch, size)
    return idx, torch.gather(mask, 1, idx)


def _weights_or_uniform(w: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Sampling weights with rows that sum to zero (all points on centers) made uniform."""
    dead = w.sum(-1, keepdim=True) <= 0  # (rows, 1)
    return torch.where(dead, active.to(w.dtype), w)


def kmeans_plusplus(
    X: torch.Tensor,
    mask: torch.Tensor,
    k_max: int,
    n_groups: int,
    generator: torch.Generator,
    *,
    x_sq: torch.Tensor | None = None,
    n_local_trials: int | None = None,
) -> torch.Tensor:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007, as in scikit-learn), batched.

    Each next center is chosen, per item and group, among ``n_local_trials`` candidates drawn
    with probability proportional to the squared distance to the nearest chosen center; the
    candidate that lowers the potential (sum of those distances) most wins. Only active points
    are drawn and counted. Every group gets k_max centers; callers disable the slots beyond a
    group's count, which is exact because greedy seeding of k centers is the prefix of seeding
    k_max.

    Args:
        X: points, in the compute dtype.
        mask: active points.
        k_max: centers to seed per group.
        n_groups: independent seedings per item (restarts, candidate counts).
        generator: random source on X's device.
        x_sq: squared norms of X, if already known.
        n_local_trials: candidates per step; default ``2 + floor(ln k_max)`` like scikit-learn.

    Returns:
        Centers of shape (batch, n_groups, k_max, dim).
    """
    B, n, d = X.shape
    G = n_groups
    T = n_local_trials if n_local_trials is not None else 2 + int(math.log(max(k_max, 1)))
    if x_sq is None:
        x_sq = (X * X).sum(-1)  # (batch, n)
    active = mask[:, None, :].expand(B, G, n).reshape(B * G, n)  # (batch*G, n)
    centers = X.new_empty(B, G, k_max, d)

    first = torch.multinomial(active.to(X.dtype), 1, generator=generator).view(B, G)
    c0 = gather_points(X, first)  # (batch, G, dim)
    centers[:, :, 0] = c0
    closest = sq_distances(X, c0, x_sq).transpose(1, 2)  # (batch, G, n)
    closest = closest.masked_fill(~mask[:, None, :], 0.0)

    for c in range(1, k_max):
        w = _weights_or_uniform(closest.reshape(B * G, n), active)  # (batch*G, n)
        cand = torch.multinomial(w, T, replacement=True, generator=generator).view(B, G * T)
        cand_pts = gather_points(X, cand)  # (batch, G*T, dim)
        dc = sq_distances(X, cand_pts, x_sq).transpose(1, 2).view(B, G, T, n)  # (batch, G, T, n)
        trial = torch.minimum(closest[:, :, None, :], dc)  # (batch, G, T, n)
        trial = trial.masked_fill(~mask[:, None, None, :], 0.0)
        best = trial.sum(-1).argmin(-1)  # (batch, G)
        pick = best[:, :, None, None]
        centers[:, :, c] = cand_pts.view(B, G, T, d).gather(2, pick.expand(B, G, 1, d))[:, :, 0]
        closest = trial.gather(2, pick.expand(B, G, 1, n))[:, :, 0]  # (batch, G, n)
    return centers


def random_init(
    X: torch.Tensor, mask: torch.Tensor, k_max: int, n_groups: int, generator: torch.Generator
) -> torch.Tensor:
    """k_max distinct active points per item and group, drawn uniformly ("random" init).

    Returns:
        Centers of shape (batch, n_groups, k_max, dim); items with fewer than k_max active
        points repeat points in the slots their count disables.
    """
    B, n, d = X.shape
    active = mask[:, None, :].expand(B, n_groups, n).reshape(B * n_groups, n).to(X.dtype)
    # Without replacement needs k_max positive weights; the tiny floor only matters for items
    # with fewer active points than slots, whose extra slots are disabled anyway.
    idx = torch.multinomial(active + 1e-12, k_max, replacement=False, generator=generator)
    return gather_points(X, idx.view(B, n_groups * k_max)).view(B, n_groups, k_max, d)


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
    # A contiguous (dim, n) operand makes the product ~30% faster than the transposed view.
    Xt = X.transpose(1, 2) if Xt is None else Xt  # (batch, dim, n)
    s = torch.baddbmm(c_sq[:, :, None], C, Xt, alpha=-2.0)  # (batch, G*k, n)
    return s.view(B, G, k, -1)


def _min_slot(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum over the centers (dim 2) and the first center reaching it (int32), as
    ``s.min(2)``.

    torch's argmin over a middle dimension does not vectorize across the contiguous points
    on CPU (about 10x slower than this): for a few centers, a running minimum over the slots;
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
            # labels = labels (1 - took) + j took, in place: up to 2x faster than masked_fill_,
            # which does not vectorize on CPU
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
    output is ~1.5x faster on CPU than ``.contiguous()`` on the transposed input."""
    out = torch.empty((X.shape[0], X.shape[2], X.shape[1]), dtype=X.dtype, device=X.device)
    out.transpose(1, 2).copy_(X)
    return out


def _normalize_rows(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


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
    # One index_add of the 2m signed rows: half the time of two calls of m rows each on CPU.
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
    points exceed the cache; in blocks of a few MB it reads them from the cache (a from-scratch
    step of 16 x 12,900 x 40 points: 1.3-1.6x faster on a 2-core CPU). The blocks are a cache
    tiling of batched operations, not a loop over items: small batches are one block.
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
        new = _normalize_rows(new)
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
# _ETA_MAX. Chosen among 0.05-0.5 on 88 items from fixed starts (benchmarks/bench_kmeans.py):
# at the default tolerance 23% fewer iterations than plain steps, 40% fewer on the items
# that creep.
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
        jump = _normalize_rows(jump)
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
    valley converge in 30-50% fewer iterations, the inertia does not rise (up to
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
                # index_select: several times faster than advanced indexing for whole items on
                # CPU; into the previous copy's buffer, which is already mapped, if there is one
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


# -- the n_clusters parameter shared by every clusterer -------------------------------------


def validate_n_clusters(value: Any, max_clusters: Any, owner: str) -> None:
    """Check ``n_clusters``: an int >= 1, "auto" (with an int ``max_clusters`` >= 2), or a
    (batch,) integer tensor (or list) of per-item counts >= 1."""
    if isinstance(value, (list, tuple)):
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value):
            raise TypeError(
                f"The 'n_clusters' parameter of {owner} must be an int in [1, inf), 'auto' or "
                f"per-item counts (ints). Got {value!r} instead."
            )
        value = torch.tensor(value, dtype=torch.int64)
    if isinstance(value, torch.Tensor):
        if value.ndim != 1 or value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise TypeError(
                f"The 'n_clusters' parameter of {owner} must be an int in [1, inf), 'auto' or a "
                f"(batch,) integer tensor of per-item counts. Got {shape_str(value)} instead."
            )
        if value.numel() and int(value.min()) < 1:
            raise ValueError(
                f"The 'n_clusters' parameter of {owner} must hold per-item counts >= 1. Got a "
                f"minimum of {int(value.min())} instead."
            )
        return
    if isinstance(value, str):
        if value != "auto":
            raise ValueError(
                f"The 'n_clusters' parameter of {owner} must be an int in [1, inf), 'auto' or a "
                f"(batch,) integer tensor of per-item counts. Got {value!r} instead."
            )
        check_int(max_clusters, "max_clusters", owner, 2)
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"The 'n_clusters' parameter of {owner} must be an int in [1, inf), 'auto' or a "
            f"(batch,) integer tensor of per-item counts. Got {value!r} ({type(value).__name__}) "
            f"instead."
        )
    check_int(value, "n_clusters", owner, 1)


def resolve_n_clusters(
    n_clusters: Any,
    max_clusters: int,
    X: torch.Tensor,
    mask: torch.Tensor,
    owner: str,
    seed: int = 0,
) -> tuple[torch.Tensor, int]:
    """Per-item cluster counts and the number of center slots for a fit.

    An int is used for every item; a (batch,) tensor gives each item its own count; "auto"
    estimates each item's count in [2, max_clusters] with :func:`estimate_n_clusters` (fitted on
    the active points) and allots max_clusters slots.

    Returns:
        (counts, k_max): (batch,) int64 counts on X's device, and the slots to allocate.

    Raises:
        ValueError: a count larger than an item's number of active points, or a tensor of the
            wrong length.
    """
    B = X.shape[0]
    n_active = mask.sum(1)  # (batch,)
    if isinstance(n_clusters, str):
        from .auto import estimate_n_clusters

        counts = estimate_n_clusters(X, mask, min_clusters=2, max_clusters=max_clusters, seed=seed)
        return counts, int(max_clusters)
    if isinstance(n_clusters, (list, tuple)):
        n_clusters = torch.tensor(n_clusters, dtype=torch.int64)
    if isinstance(n_clusters, torch.Tensor):
        if n_clusters.shape[0] != B:
            raise ValueError(
                f"The 'n_clusters' parameter of {owner} must have one count per item ({B}). Got "
                f"{shape_str(n_clusters)} instead."
            )
        counts = n_clusters.to(device=X.device, dtype=torch.int64)
    else:
        counts = torch.full((B,), int(n_clusters), dtype=torch.int64, device=X.device)
    too_many = counts > n_active
    if bool(too_many.any()):
        b = int(torch.nonzero(too_many)[0])
        raise ValueError(
            f"The 'n_clusters' parameter of {owner} ({int(counts[b])} for item {b}) must not "
            f"exceed the number of active points. Got item {b} with {int(n_active[b])} active "
            f"points."
        )
    return counts, int(counts.max())
