"""Spectral clustering on the low-rank affinity of the embeddings, never forming n x n.

Deep-clustering embeddings are trained so that their affinity V Vᵀ approximates the ideal
partition affinity Y Yᵀ (Hershey et al. 2015), so spectral clustering of that very affinity is
the method's natural inference step. The affinity is ``A = F Fᵀ`` for a feature map F with r
columns (r = dim + 1 here), so everything spectral clustering needs is O(n·r²):

* degrees ``d = A 1 = F (Fᵀ 1)``;
* the normalized affinity ``D^{-1/2} A D^{-1/2} = G Gᵀ`` with ``G = D^{-1/2} F``, whose nonzero
  eigenpairs follow from the r x r problem ``GᵀG = Q Λ Qᵀ``: ``U = G Q Λ^{-1/2}``.

A 256 x 256 image (n = 65,536) thus needs O(n·r) memory, where the n x n affinity alone would
take 17 GB (timings in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import math
from numbers import Integral

import torch

from .._params import Interval, Options
from ._distances import center_valid, compute_dtype, normalize_rows, sq_distances
from ._lloyd import kmeans
from ._seeding import make_generator
from .base import BaseClusterer, PerItemCounts

__all__ = ["SpectralClustering", "spectral_embedding"]

_AFFINITIES = ("shifted_cosine", "linear")
_EMBEDDING_NORMS = ("degree", "rows")


def _feature_map(X: torch.Tensor, affinity: str) -> torch.Tensor:
    """The map F with A = F Fᵀ: (batch, n_points, r)."""
    if affinity == "linear":
        return X
    # (1 + cos)/2 = [1, x/|x|]·[1, y/|y|] / 2, so F = [1, x/|x|] / sqrt(2) with r = dim + 1.
    B, n, d = X.shape
    F = torch.empty(B, n, d + 1, dtype=X.dtype, device=X.device)  # (batch, n_points, dim + 1)
    F[..., 0] = math.sqrt(0.5)
    scale = X.norm(dim=-1, keepdim=True).clamp_min(1e-12).reciprocal_().mul_(math.sqrt(0.5))
    torch.mul(X, scale, out=F[..., 1:])  # written in place: no concatenated copy
    return F


def spectral_embedding(
    X: torch.Tensor,
    mask: torch.Tensor,
    n_components: int,
    *,
    affinity: str = "shifted_cosine",
    normalized: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Top eigenvectors of the (normalized) low-rank affinity of each item's active points.

    Masked points take no part in the affinity; they are then placed by the same map
    (the Nyström extension ``u(x) = d(x)^{-1/2} f(x) Q Λ^{-1/2}``, with ``d(x)`` the degree of
    x against the active points), which for an active point gives exactly its eigenvector row.

    Args:
        X: (batch, n_points, dim) embeddings.
        mask: (batch, n_points) bool, the points that define the affinity.
        n_components: eigenvectors to return (the largest eigenvalues first).
        affinity: ``"shifted_cosine"`` for A = (1 + cos)/2 (entries in [0, 1]) or ``"linear"``
            for A = X Xᵀ as given.
        normalized: use D^{-1/2} A D^{-1/2} (Ng, Jordan & Weiss 2001); False uses A itself.

    Returns:
        (embedding, eigenvalues, degrees, state): embedding (batch, n_points, n_components)
        whose columns are orthonormal over the active points; eigenvalues (batch, r) in
        decreasing order; degrees (batch, n_points) of every point against the active points
        (ones when not ``normalized``); the state that maps new points (:func:`_project`).

    Raises:
        ValueError: normalized with ``affinity="linear"`` and a non-positive degree.

    Example:
        >>> import torch
        >>> X = torch.nn.functional.normalize(torch.randn(2, 500, 16), dim=-1)
        >>> mask = torch.ones(2, 500, dtype=torch.bool)
        >>> U, evals, deg, _ = spectral_embedding(X, mask, 3)
        >>> U.shape, evals.shape  # r = dim + 1 eigenvalues, the largest first
        (torch.Size([2, 500, 3]), torch.Size([2, 17]))
        >>> torch.allclose(U.transpose(1, 2) @ U, torch.eye(3).expand(2, 3, 3), atol=1e-4)
        True
    """
    dtype = compute_dtype(X)
    F = _feature_map(X.to(dtype), affinity)  # (batch, n_points, r)
    w = mask.to(dtype)  # (batch, n_points)
    col_sum = torch.bmm(w[:, None, :], F)[:, 0]  # (batch, r): Fᵀ1 over the active points
    if normalized:
        deg = torch.bmm(F, col_sum[..., None])[..., 0]  # (batch, n_points)
        bad = (deg <= 0) & mask
        if bool(bad.any()):
            b = int(torch.nonzero(bad)[0, 0])
            raise ValueError(
                f"SpectralClustering(normalized=True) needs positive degrees, but item {b} has "
                f"{int(bad[b].sum())} active points with a non-positive degree under "
                f"affinity={affinity!r}. Use affinity='shifted_cosine' or normalized=False."
            )
        deg = deg.clamp_min(torch.finfo(dtype).tiny)
    else:
        deg = torch.ones(F.shape[:2], dtype=dtype, device=F.device)  # (batch, n_points)
    # GᵀG = Fᵀ diag(w / d) F with G = D^{-1/2} F: its eigenvalues are those of the n x n
    # normalized affinity. G itself is never formed; the r x r eigenproblem runs in float64.
    gram = torch.bmm((F * (w / deg)[..., None]).transpose(1, 2), F)  # (batch, r, r)
    evals, evecs = torch.linalg.eigh(gram.double())  # (batch, r), (batch, r, r)
    evals, evecs = evals.flip(-1), evecs.flip(-1)  # decreasing
    k = n_components
    lam = evals[:, :k]  # (batch, min(k, r))
    # Directions with (numerically) zero eigenvalue have no eigenvector in point space.
    floor = evals[:, :1].clamp_min(0) * (evals.shape[-1] * torch.finfo(dtype).eps)
    scale = torch.where(lam > floor, lam.clamp_min(torch.finfo(torch.float64).tiny).rsqrt(), 0.0)
    proj = (evecs[:, :, :k] * scale[:, None, :]).to(dtype)  # (batch, r, min(k, r))
    if proj.shape[-1] < k:
        # More clusters than the affinity's rank: the missing eigenvectors are zero.
        proj = torch.nn.functional.pad(proj, (0, k - proj.shape[-1]))  # (batch, r, k)
    embedding = torch.bmm(F, proj)  # (batch, n_points, k)
    if normalized:
        embedding.mul_(deg.rsqrt()[..., None])  # U = D^{-1/2} F Q Λ^{-1/2}
    state = {"col_sum": col_sum, "proj": proj}
    return embedding, evals.to(dtype), deg, state


def _project(
    X: torch.Tensor, state: dict[str, torch.Tensor], affinity: str, normalized: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spectral coordinates (batch, n_points, k) and degrees (batch, n_points) of points
    through a fitted map."""
    dtype = state["proj"].dtype
    F = _feature_map(X.to(dtype), affinity)  # (batch, n_points, r)
    U = torch.bmm(F, state["proj"])  # (batch, n_points, k)
    if not normalized:
        return U, torch.ones(F.shape[:2], dtype=dtype, device=F.device)
    deg = torch.bmm(F, state["col_sum"][..., None])[..., 0]  # (batch, n_points)
    deg = deg.clamp_min(torch.finfo(dtype).tiny)
    return U * deg.rsqrt()[..., None], deg


class SpectralClustering(BaseClusterer):
    """Spectral clustering of each item's embedding affinity, batched and low-rank.

    The affinity of two embeddings x, y is by default ``(1 + cos(x, y)) / 2`` (rows are scaled
    to unit norm first): for the unit-norm embeddings of deep clustering this is
    ``(1 + V Vᵀ) / 2``, the trained affinity shifted into [0, 1], which
    keeps degrees positive (needed by the normalization) without changing the eigenvectors'
    meaning. ``affinity="linear"`` uses X Xᵀ as given (non-negative features, or
    ``normalized=False``).

    With ``normalized=True`` the top ``k`` eigenvectors U of D^{-1/2} A D^{-1/2} are computed
    and, before batched k-means, either scaled by D^{-1/2} (``embedding_norm="degree"``: the
    eigenvectors of the random-walk matrix D^{-1} A, Shi & Malik 2000, which is also what
    scikit-learn's ``spectral_embedding`` gives k-means) or scaled to unit rows
    (``embedding_norm="rows"``: Ng, Jordan & Weiss 2001). On embedding-like data with overlap
    the degree scaling is the more accurate of the two (benchmarks/RESULTS.md), so it is the
    default. With ``normalized=False`` the top ``k`` eigenvectors of A itself (the principal
    directions of the feature map) are clustered as they are. The eigenvectors come from an
    r x r eigenproblem per item (``torch.linalg.eigh`` on (batch, r, r), in float64), so the cost is
    O(n·r²) and memory O(n·r); the n x n affinity is never formed.

    Masked points take no part in the affinity; every point is then labelled through the same
    map (Nyström extension) and the nearest spectral centroid. :meth:`predict` labels new
    points of the fitted items the same way.

    Args:
        n_clusters: clusters per item: an int, a (batch,) int64 tensor of per-item counts, or
            ``"auto"`` to estimate each item's count in [2, max_clusters]
            (:func:`embedseg.cluster.auto.estimate_n_clusters`). Item b uses its top
            ``n_clusters_[b]`` eigenvectors.
        max_clusters: the largest count considered under ``"auto"``.
        normalized: degree-normalized (True) or plain (False) affinity.
        affinity: ``"shifted_cosine"`` or ``"linear"``.
        embedding_norm: with ``normalized``, the space k-means runs in: ``"degree"``
            (D^{-1/2} U, random-walk eigenvectors) or ``"rows"`` (U with unit rows, NJW).
        n_init: k-means restarts on the spectral embedding (batched).
        max_iter: k-means iterations cap.
        seed: seed of k-means and of ``"auto"``.

    Attributes:
        labels_: (batch, n_points) int64 labels of every point.
        n_clusters_: (batch,) int64 clusters per item.
        eigenvalues_: (batch, r) eigenvalues of the (normalized) affinity of the active points,
            in decreasing order (r = dim + 1 for "shifted_cosine", dim for "linear").
        embedding_: (batch, n_points, k) spectral embedding: the top eigenvectors (orthonormal
            columns over the active points), columns at or beyond ``n_clusters_[b]`` zeroed;
            k-means runs on it after the ``embedding_norm`` scaling when ``normalized``.
        cluster_centers_: (batch, k, k) k-means centers in the space k-means ran in.

    Here ``k`` is the number of slots: ``max_clusters`` under ``"auto"``, else the largest
    count.

    Shape:
        X: (batch, n_points, dim); mask: (batch, n_points) bool; labels (batch, n_points).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> centers = torch.eye(8)[:3] * 4  # three directions
        >>> X = centers.repeat_interleave(100, 0) + 0.5 * torch.randn(300, 8, generator=g)
        >>> X = (X / X.norm(dim=-1, keepdim=True))[None]  # (1, 300, 8) unit-norm
        >>> sc = SpectralClustering(n_clusters=3).fit(X)
        >>> [len(set(sc.labels_[0, i:i + 100].tolist())) for i in (0, 100, 200)]
        [1, 1, 1]
        >>> sc.embedding_.shape
        torch.Size([1, 300, 3])
    """

    def __init__(
        self,
        *,
        n_clusters: int | str | torch.Tensor = 2,
        max_clusters: int = 8,
        normalized: bool = True,
        affinity: str = "shifted_cosine",
        embedding_norm: str = "degree",
        n_init: int = 4,
        max_iter: int = 100,
        seed: int = 0,
    ) -> None:
        self.n_clusters = n_clusters
        self.max_clusters = max_clusters
        self.normalized = normalized
        self.affinity = affinity
        self.embedding_norm = embedding_norm
        self.n_init = n_init
        self.max_iter = max_iter
        self.seed = seed

    _parameter_constraints = {
        "n_clusters": [Interval(Integral, 1, None, closed="left"), Options(str, ["auto"]), PerItemCounts()],
        "max_clusters": [Interval(Integral, 1, None, closed="left")],
        "normalized": ["boolean"],
        "affinity": [Options(str, _AFFINITIES)],
        "embedding_norm": [Options(str, _EMBEDDING_NORMS)],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "seed": [Interval(Integral, 0, 2**63 - 1, closed="both")],
    }
    # The affinity is anchored at the origin (cosines, or inner products): only the scale of
    # the points may change.
    _transform = "scale"

    def _fit(
        self, X: torch.Tensor, mask: torch.Tensor, n_clusters: torch.Tensor, n_slots: int
    ) -> None:
        counts, k = n_clusters, n_slots
        U, evals, deg, state = spectral_embedding(
            X, mask, k, affinity=self.affinity, normalized=self.normalized
        )  # (batch, n_points, k)
        # Item b keeps its top n_clusters_[b] eigenvectors; zero columns do not move k-means.
        keep = center_valid(counts, k).to(U.dtype)  # (batch, k)
        state["proj"] = state["proj"] * keep[:, None, :]
        U = U * keep[:, None, :]
        # O(1) coordinates whatever n and whatever the degrees: the unit-norm columns scaled
        # by sqrt(n_active · mean active degree) (= sqrt(n_active) when not normalized).
        state["scale"] = (deg * mask.to(deg.dtype)).sum(dim=1).sqrt()  # (batch,)
        Z = self._kmeans_space(U, deg, state)  # (batch, n_points, k)
        res = kmeans(
            Z,
            mask,
            counts,
            k,
            n_init=self.n_init,
            max_iter=self.max_iter,
            generator=make_generator(self.seed, X.device),
            seed_counts=None if isinstance(self.n_clusters, str) else counts,  # as KMeans
        )
        self.embedding_ = U.to(X.dtype)
        # The linear affinity's eigenvalues carry the points' squared scale; the shifted
        # cosine's do not depend on it.
        power = 2 if self.affinity == "linear" else 0
        self.eigenvalues_ = self._to_input_scale(evals, power).to(X.dtype)
        self.cluster_centers_ = res.centers
        self.labels_ = res.labels
        self._state = state

    def _kmeans_space(
        self, U: torch.Tensor, deg: torch.Tensor, state: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """The coordinates k-means works on (batch, n_points, k)."""
        if not self.normalized:
            return U * state["scale"][:, None, None]
        if self.embedding_norm == "rows":
            return normalize_rows(U)
        return U * (state["scale"][:, None] * deg.rsqrt())[..., None]

    def _predict(self, X: torch.Tensor) -> torch.Tensor:
        # New points may sit on another device than the fit: labels follow X.
        state = {key: value.to(X.device) for key, value in self._state.items()}
        U, deg = _project(X, state, self.affinity, self.normalized)  # (batch, n_points, k)
        Z = self._kmeans_space(U, deg, state)
        C = self.cluster_centers_.to(device=X.device, dtype=Z.dtype)  # (batch, k, k)
        d = sq_distances(Z, C)  # (batch, n_points, k)
        valid = center_valid(self.n_clusters_.to(X.device), C.shape[1])  # (batch, k)
        return d.masked_fill(~valid[:, None, :], float("inf")).argmin(dim=-1)
