"""Estimating the number of clusters of every item of a batch ("auto" cluster counts).

The method, and why:

1. Per item, draw up to ``sample_size`` active points uniformly (deep clustering items have
   10⁴–10⁵ points; the number of clusters is a coarse property that a thousand points show
   just as well, and it bounds the cost whatever the item size).
2. Run batched k-means (k-means++ starts, ``n_init`` restarts) on the subsample for every
   candidate k in [min_clusters, max_clusters] at once: every (k, restart) pair is one group of
   the same batched Lloyd run, with the center slots beyond k disabled. Keep the best restart
   per k.
3. Score each k with the mean silhouette coefficient (Rousseeuw 1987) of the subsample and
   keep the best k (the smallest on ties).

The silhouette compares each point's mean distance to its own cluster with its mean distance
to the nearest other cluster, so it is scale-free, needs no distributional assumption (deep
clustering embeddings live on the unit sphere and are not Gaussian, which makes BIC's
likelihood poorly specified), and has no reference distribution to simulate (as the gap
statistic would, at B times the cost). Splitting a true cluster puts many points close to the
new neighbour cluster and merging two drags the own-cluster distance up, so both are
penalized; on well-separated clusters its maximum is at the true count. It needs k >= 2, so
a single cluster is never detected. All of it is batched: the pairwise distances of the
subsample are one (batch, m, m) matmul, and the per-cluster sums of distances for every
candidate k a second one.
"""

from __future__ import annotations

from numbers import Integral

import torch

from .._params import Interval, Options, validate_params
from .._validation import check_active, check_embeddings, check_mask
from ._distances import (
    center_valid,
    compute_dtype,
    gather_points,
    masked_mean_variance,
    normalize_rows,
    sq_distances,
)
from ._lloyd import lloyd
from ._scaling import Extent, extent, fit_transform
from ._seeding import kmeans_plusplus, make_generator, subsample_active

__all__ = ["estimate_n_clusters", "silhouette_scores"]

# Bound on the (chunk, m, m) distance block held at once by the silhouette (elements).
_MAX_BLOCK = 1 << 24

_PARAMETER_CONSTRAINTS = {
    "min_clusters": [Interval(Integral, 2, None, closed="left")],
    "max_clusters": [Interval(Integral, 2, None, closed="left")],
    "seed": [Interval(Integral, 0, 2**63 - 1, closed="both")],
    "sample_size": [Interval(Integral, 3, None, closed="left")],
    "n_init": [Interval(Integral, 1, None, closed="left")],
    "metric": [Options(str, ["euclidean", "cosine"])],
}


def silhouette_scores(
    X: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, k_max: int
) -> torch.Tensor:
    """Mean silhouette coefficient of several labelings of each item, batched.

    Follows scikit-learn's ``silhouette_score`` (Euclidean distances; a point alone in its
    cluster scores 0), over the active points only. Items are processed in chunks so that the
    (chunk, n, n) distance block stays below ~64 MB.

    Args:
        X: (batch, n, dim) points.
        mask: (batch, n) bool, points that count.
        labels: (batch, L, n) int64 labelings in [0, k_max) (L labelings per item).
        k_max: number of label values.

    Returns:
        (batch, L) mean silhouettes; NaN where a labeling has fewer than two non-empty clusters.
    """
    B, L, n = labels.shape
    dtype = compute_dtype(X)
    chunk = max(1, _MAX_BLOCK // (n * n))
    out = []
    for start in range(0, B, chunk):  # chunks bound memory; each chunk is fully batched
        sl = slice(start, start + chunk)
        out.append(_silhouette_block(X[sl].to(dtype), mask[sl], labels[sl], k_max))
    return torch.cat(out, 0)


def _silhouette_block(
    X: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, k: int
) -> torch.Tensor:
    """Silhouettes of one chunk of items: (b, L)."""
    b, L, n = labels.shape
    D = sq_distances(X, X).sqrt_()  # (b, n, n)
    D.diagonal(dim1=1, dim2=2).zero_()  # exact zero self-distance despite rounding
    w = mask.to(X.dtype)  # (b, n)
    onehot = (labels[..., None] == torch.arange(k, device=X.device)).to(X.dtype)  # (b, L, n, k)
    onehot = onehot * w[:, None, :, None]
    counts = onehot.sum(2)  # (b, L, k)
    sums = torch.bmm(D, onehot.permute(0, 2, 1, 3).reshape(b, n, L * k)).view(b, n, L, k)
    sums = sums.permute(0, 2, 1, 3)  # (b, L, n, k) sum of distances to each cluster
    own = labels[..., None]  # (b, L, n, 1)
    own_count = counts.gather(2, labels)  # (b, L, n)
    a = sums.gather(3, own)[..., 0] / (own_count - 1).clamp_min(1.0)  # (b, L, n)
    mean_to = sums / counts[:, :, None, :].clamp_min(1.0)  # (b, L, n, k)
    other = (counts[:, :, None, :] == 0) | (torch.arange(k, device=X.device) == own)
    bdist = mean_to.masked_fill(other, float("inf")).min(-1).values  # (b, L, n)
    s = (bdist - a) / torch.maximum(a, bdist)
    s = torch.where(own_count > 1, s, torch.zeros((), dtype=s.dtype, device=s.device))
    s = torch.nan_to_num(s, nan=0.0)  # identical points: a = b = 0
    s = (s * w[:, None, :]).sum(-1) / w.sum(-1, keepdim=True).clamp_min(1.0)  # (b, L)
    n_nonempty = (counts > 0).sum(-1)  # (b, L)
    return s.masked_fill(n_nonempty < 2, float("nan"))


def estimate_n_clusters(
    X: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    min_clusters: int = 2,
    max_clusters: int = 8,
    seed: int = 0,
    sample_size: int = 1000,
    n_init: int = 3,
    metric: str = "euclidean",
) -> torch.Tensor:
    """Estimate the number of clusters of every item, by the silhouette of batched k-means.

    See the module docstring for the method and its justification. Counts larger than an
    item's active points minus one are never chosen (the silhouette needs a point left over);
    an item with fewer than three active points gets ``min(min_clusters, n_active)``.

    Args:
        X: (batch, n_points, dim) points (embeddings).
        mask: (batch, n_points) bool, the points to use; None = all.
        min_clusters: smallest count considered (>= 2).
        max_clusters: largest count considered (>= min_clusters).
        seed: seed of the subsampling and the k-means++ draws.
        sample_size: active points used per item (at most).
        n_init: k-means restarts per candidate count.
        metric: "euclidean", or "cosine" to cluster and score the unit-normalized points.

    Returns:
        (batch,) int64 counts on X's device.

    Raises:
        ValueError: bad parameters, NaN/inf in X, bad mask or an item with no active point.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
        >>> X = (centers.repeat_interleave(40, 0) + torch.randn(120, 2, generator=g))[None]
        >>> estimate_n_clusters(X, max_clusters=6)
        tensor([3])
    """
    validate_params(
        _PARAMETER_CONSTRAINTS,
        dict(min_clusters=min_clusters, max_clusters=max_clusters, seed=seed,
             sample_size=sample_size, n_init=n_init, metric=metric),
        "estimate_n_clusters",
    )
    if max_clusters < min_clusters:
        raise ValueError(
            f"The 'max_clusters' parameter of estimate_n_clusters must be an int in "
            f"[{min_clusters}, inf) (at least min_clusters). Got {max_clusters!r} instead."
        )
    X = check_embeddings(X, "X", finite=False)
    mask = check_mask(mask, X.shape[:2], X.device)
    X = X.detach()
    where = extent(X, mask)
    if not where.finite:
        check_embeddings(X, "X")  # raises, naming the non-finite entries
    check_active(mask)
    return _estimate(
        X, mask, where, min_clusters=min_clusters, max_clusters=max_clusters, seed=seed,
        sample_size=sample_size, n_init=n_init, metric=metric,
    )


def _estimate(
    X: torch.Tensor,
    mask: torch.Tensor,
    where: Extent | None = None,
    *,
    min_clusters: int = 2,
    max_clusters: int = 8,
    seed: int = 0,
    sample_size: int = 1000,
    n_init: int = 3,
    metric: str = "euclidean",
) -> torch.Tensor:
    """:func:`estimate_n_clusters` on validated inputs (``where``: the points'
    :func:`~embedseg.cluster._scaling.extent`, computed here when None)."""
    if where is None:
        where = extent(X, mask)
    n_active = mask.sum(1)  # (batch,)
    # Counts do not depend on the points' magnitude (nor, for Euclidean distances, on where
    # they sit): fit on points of ordinary magnitude near the origin.
    X, _, _ = fit_transform(X, where, centre=metric == "euclidean")
    dtype = compute_dtype(X)
    Xc = X.to(dtype)
    if metric == "cosine":
        Xc = normalize_rows(Xc)
    gen = make_generator(seed, X.device)
    idx, sub_mask = subsample_active(mask, sample_size, gen)  # (batch, m)
    S = gather_points(Xc, idx)  # (batch, m, dim)
    B, m, _ = S.shape
    n_sub = sub_mask.sum(1)  # (batch,)

    ks = torch.arange(min_clusters, max_clusters + 1, device=X.device)  # (K,)
    K = ks.numel()
    group_k = ks.repeat_interleave(n_init)  # (K*n_init,) the count of every group
    counts = torch.minimum(group_k[None, :], n_sub[:, None])  # (batch, G)
    x_sq = (S * S).sum(-1)  # (batch, m)
    centers = kmeans_plusplus(S, sub_mask, max_clusters, K * n_init, gen, x_sq=x_sq)
    valid = center_valid(counts, max_clusters)  # (batch, G, k_max)
    tol = 1e-4 * masked_mean_variance(S, sub_mask)  # (batch,)
    _, labels, inertia, _ = lloyd(
        S, sub_mask, centers, valid, max_iter=100, tol=tol, spherical=metric == "cosine", x_sq=x_sq
    )
    best = inertia.view(B, K, n_init).argmin(-1)  # (batch, K)
    labels = labels.view(B, K, n_init, m).gather(
        2, best[:, :, None, None].expand(B, K, 1, m)
    )[:, :, 0]  # (batch, K, m)

    sil = silhouette_scores(S, sub_mask, labels, max_clusters)  # (batch, K)
    feasible = ks[None, :] <= (n_sub[:, None] - 1)  # (batch, K)
    sil = torch.nan_to_num(sil, nan=-2.0).masked_fill(~feasible, -3.0)
    choice = ks[sil.argmax(1)]  # argmax keeps the first (smallest) k on ties
    # Too few points to score any k: as many clusters as allowed, never more than points.
    choice = torch.where(n_sub >= 3, choice, torch.full_like(choice, min_clusters))
    return torch.minimum(choice, n_active).to(torch.int64)
