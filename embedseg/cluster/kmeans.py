"""The KMeans estimator: batched k-means with k-means++ starts, batched restarts, per-item
convergence, empty-cluster reseeding, Euclidean or spherical (cosine) geometry, per-item and
automatic cluster counts. The algorithm itself is :func:`~embedseg.cluster._lloyd.kmeans`."""

from __future__ import annotations

from numbers import Integral, Real

import torch

from .._params import Interval, Options
from ._distances import center_valid, compute_dtype, normalize_rows, sq_distances
from ._lloyd import INITS, KMeansResult, kmeans
from ._seeding import make_generator
from .base import BaseClusterer, PerItemCounts

__all__ = ["KMeans", "KMeansResult", "kmeans"]

_METRICS = ("euclidean", "cosine")


class KMeans(BaseClusterer):
    """Batched k-means for (batch, n_points, dim) embeddings.

    Every item of the batch is clustered independently, all at once: k-means++ seeding (greedy,
    with several local trials like scikit-learn), ``n_init`` restarts run side by side (the best
    inertia per item is kept), Lloyd iterations until each item's centers move less than the
    tolerance, and empty clusters moved to the farthest points. ``metric="cosine"`` runs
    spherical k-means (points and centers at unit norm), the natural geometry for deep
    clustering embeddings. Items of extreme magnitude are fitted scaled by a power of two, and
    (Euclidean metric) items far from the origin centred, for accuracy; fitted attributes are
    in the caller's units.

    Args:
        n_clusters: clusters per item: an int, a (batch,) int64 tensor of per-item counts, or
            "auto" to estimate each item's count in [2, max_clusters] (see
            :func:`embedseg.cluster.auto.estimate_n_clusters`).
        max_clusters: the largest count considered under "auto".
        n_init: restarts; they are batched, so extra restarts cost little on large items.
        max_iter: Lloyd iterations cap.
        tol: tolerance on the squared center shift, relative to the item's mean feature
            variance (as in scikit-learn).
        init: "k-means++" or "random".
        metric: "euclidean" or "cosine".
        seed: seed of the random draws (seeding and "auto").
        soft_temperature: temperature of :meth:`predict_proba`'s soft assignments
            ``softmax(-d² / soft_temperature)``; None sets it per item to ``2·σ²`` with σ² the
            fitted within-cluster variance per dimension, i.e. the posteriors of an isotropic
            Gaussian mixture with equal weights (soft k-means).
        init_size: items with more active points run their seeding and restarts on a random
            subsample of this many points (as scikit-learn's MiniBatchKMeans ``init_size``),
            then one Lloyd run on all points refines the best restart: the result is still a
            fixed point of Lloyd's algorithm on the full data, reached in a few full passes.
            None runs the restarts on all points.

    Fitted attributes:
        cluster_centers_: (batch, k_max, dim) centers; rows at or beyond ``n_clusters_[b]``
            are unused (zero).
        labels_: (batch, n_points) int64 labels of every point (masked ones included).
        inertia_: (batch,) sum of squared distances of active points to their center (of
            ``1 - cos`` under the cosine metric).
        n_iter_: (batch,) int64 Lloyd iterations on all the points (after the subsample
            restarts when ``init_size`` applies; else those of the kept restart).
        n_clusters_: (batch,) int64 clusters per item.

    Shape:
        X: (batch, n_points, dim); mask: (batch, n_points) bool; labels (batch, n_points).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> X = torch.cat([torch.randn(2, 50, 3, generator=g) - 5,
        ...                torch.randn(2, 50, 3, generator=g) + 5], dim=1)
        >>> km = KMeans(n_clusters=2, seed=0).fit(X)
        >>> km.labels_.shape, km.labels_.dtype
        (torch.Size([2, 100]), torch.int64)
        >>> bool((km.labels_[:, :50] != km.labels_[:, 50:]).all())
        True
    """

    has_proba = True
    _parameter_constraints = {
        "n_clusters": [Interval(Integral, 1, None, closed="left"), Options(str, ["auto"]), PerItemCounts()],
        "max_clusters": [Interval(Integral, 1, None, closed="left")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "init": [Options(str, INITS)],
        "metric": [Options(str, _METRICS)],
        "seed": [Interval(Integral, 0, 2**63 - 1, closed="both")],
        "soft_temperature": [Interval(Real, 0, None, closed="neither"), None],
        "init_size": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(
        self,
        *,
        n_clusters: int | str | torch.Tensor = 8,
        max_clusters: int = 8,
        n_init: int = 3,
        max_iter: int = 100,
        tol: float = 1e-4,
        init: str = "k-means++",
        metric: str = "euclidean",
        seed: int = 0,
        soft_temperature: float | None = None,
        init_size: int | None = 1024,
    ) -> None:
        self.n_clusters = n_clusters
        self.max_clusters = max_clusters
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.init = init
        self.metric = metric
        self.seed = seed
        self.soft_temperature = soft_temperature
        self.init_size = init_size

    @property
    def _transform(self) -> str:  # type: ignore[override]
        # Cosine geometry is anchored at the origin: only the scale may change.
        return "centre" if self.metric == "euclidean" else "scale"

    def _fit(
        self, X: torch.Tensor, mask: torch.Tensor, n_clusters: torch.Tensor, n_slots: int
    ) -> None:
        res = kmeans(
            X,
            mask,
            n_clusters,
            n_slots,
            n_init=self.n_init,
            max_iter=self.max_iter,
            tol=float(self.tol),
            init=self.init,
            metric=self.metric,
            init_size=self.init_size,
            generator=make_generator(self.seed, X.device),
            # given counts: n_slots is the batch's largest, so each item is seeded for its own
            # count; "auto" gives every item max_clusters slots, alone or in a batch
            seed_counts=None if isinstance(self.n_clusters, str) else n_clusters,
        )
        self.labels_ = res.labels
        self.n_iter_ = res.n_iter
        self._centers = res.centers  # in the fit's coordinates, for predict
        if self.metric == "euclidean":
            used = center_valid(n_clusters, n_slots)[..., None]  # (batch, k_max, 1)
            self.cluster_centers_ = self._to_input_points(res.centers).where(used, 0.0)
            self.inertia_ = self._to_input_scale(res.inertia, 2)
        else:  # unit directions and 1 - cos: scale-free
            self.cluster_centers_ = res.centers
            self.inertia_ = res.inertia
        dim = X.shape[2] if self.metric == "euclidean" else 1
        # Within-cluster variance per dimension (for the cosine metric, per unit of 1 - cos),
        # in the fit's coordinates.
        per_point = res.inertia / (mask.sum(1).to(res.inertia.dtype) * dim)  # (batch,)
        self._sigma2 = per_point.clamp_min(torch.finfo(per_point.dtype).tiny)

    def _distances(self, X: torch.Tensor) -> torch.Tensor:
        """Distances to every center, +inf for disabled slots: (batch, n_points, k_max)."""
        dtype = compute_dtype(X)
        Xc = X.to(dtype)
        C = self._centers.to(device=X.device, dtype=dtype)
        if self.metric == "cosine":
            d = 0.5 * sq_distances(normalize_rows(Xc), C)  # 1 - cos
        else:
            d = sq_distances(Xc, C)  # (batch, n, k_max)
        valid = center_valid(self.n_clusters_.to(X.device), C.shape[1])  # (batch, k_max)
        return d.masked_fill(~valid[:, None, :], float("inf"))

    def _predict(self, X: torch.Tensor) -> torch.Tensor:
        return self._distances(X).argmin(-1)

    def _predict_proba(self, X: torch.Tensor) -> torch.Tensor:
        d = self._distances(X)  # (batch, n, k_max)
        if self.soft_temperature is None:
            # isotropic Gaussian: exp(-d² / (2σ²)); cosine: exp(-(1 - cos) / (2σ²)) alike
            temp = (2.0 * self._sigma2.to(device=X.device, dtype=d.dtype))[:, None, None]
        elif self.metric == "euclidean" and self._scale is not None:
            # given in the caller's units of squared distance; d is in the fit's
            temp = float(self.soft_temperature) * self._scale.to(X.device).square()
            temp = temp.to(d.dtype)[:, None, None]
        else:
            temp = float(self.soft_temperature)
        return torch.softmax(-d / temp, dim=-1).to(X.dtype)
