"""Any scikit-learn clusterer on batched tensors, one item at a time."""

from __future__ import annotations

import importlib
import json
from typing import Any

import numpy as np
import torch

from .._validation import check_int, shape_str
from ..errors import require
from . import _ops
from .base import BaseClusterer

__all__ = ["SklearnClusterer"]


def _estimator_spec(estimator: Any) -> Any:
    """A JSON-able ``{"class", "params"}`` description of a scikit-learn estimator, when its
    parameters allow one; otherwise the estimator itself."""
    cls = type(estimator)
    params = estimator.get_params(deep=False)
    try:
        json.dumps(params)
    except (TypeError, ValueError):
        return estimator
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "params": params}


def _build_estimator(spec: Any, owner: str) -> Any:
    """An unfitted estimator from an estimator object or a ``{"class", "params"}`` spec.

    A spec may come from a saved model's config, so what it names is never trusted: it must be
    a scikit-learn estimator class (not any callable scikit-learn exposes, some of which read
    or write files), and a module that does not exist is a ValueError like any bad value.
    """
    if isinstance(spec, dict):
        path = spec.get("class")
        if not isinstance(path, str) or not path.startswith("sklearn."):
            raise ValueError(
                f"The 'estimator' parameter of {owner} given as a dict must name a scikit-learn "
                f"class under 'class' (e.g. 'sklearn.cluster.KMeans'). Got {path!r} instead."
            )
        BaseEstimator = require("sklearn.base", "sklearn").BaseEstimator

        module, _, name = path.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), name, None)
        except ImportError:
            cls = None
        if cls is None:
            raise ValueError(f"The 'estimator' parameter of {owner} names {path!r}, which does not exist.")
        if not (isinstance(cls, type) and issubclass(cls, BaseEstimator)):
            raise ValueError(
                f"The 'estimator' parameter of {owner} must name a scikit-learn estimator class. "
                f"Got {path!r}, which is a {type(cls).__name__}, instead."
            )
        return cls(**dict(spec.get("params") or {}))
    clone = require("sklearn.base", "sklearn").clone

    return clone(spec)


class SklearnClusterer(BaseClusterer):
    """Wraps a scikit-learn clusterer (anything with ``fit_predict``) for batched tensors.

    Items are clustered one after the other in a Python loop on the CPU (NumPy), so this is
    much slower than the batched clusterers; use it for methods embedseg does not have
    (agglomerative, DBSCAN, HDBSCAN, ...). For each item the estimator is cloned and fitted on
    the active points. ``n_clusters`` is passed through when the estimator has that parameter;
    ``seed`` becomes its ``random_state`` when it has one left at None. Points the estimator
    marks as noise (label -1) and masked points are assigned to the nearest fitted cluster
    mean; cluster labels are renumbered 0..c-1 per item.

    Args:
        estimator: an unfitted scikit-learn clusterer, or ``{"class": "sklearn.cluster.X",
            "params": {...}}`` (the JSON form :meth:`get_params` returns when it can).
        n_clusters: None to leave the estimator's own setting, an int, per-item counts, or
            "auto" (estimated per item with :func:`~embedseg.cluster.auto.estimate_n_clusters`).
        max_clusters: the largest count considered under "auto".
        seed: the estimator's ``random_state`` when it has one set to None; also seeds "auto".

    Fitted attributes:
        labels_: (batch, n_points) int64.
        n_clusters_: (batch,) int64 clusters found per item.
        cluster_centers_: (batch, k_max, dim) mean of each cluster's fitted points (used by
            :meth:`predict`); unused rows are zero.

    Example:
        >>> import torch
        >>> from sklearn.cluster import AgglomerativeClustering
        >>> X = torch.tensor([[[0.0], [0.1], [5.0], [5.1]]])
        >>> SklearnClusterer(estimator=AgglomerativeClustering(), n_clusters=2).fit_predict(X)
        tensor([[0, 0, 1, 1]])
    """

    def __init__(
        self,
        estimator: Any,
        *,
        n_clusters: int | str | torch.Tensor | None = None,
        max_clusters: int = 8,
        seed: int = 0,
    ) -> None:
        self.estimator = estimator
        self.n_clusters = n_clusters
        self.max_clusters = max_clusters
        self.seed = seed

    def get_params(self) -> dict[str, Any]:
        """The parameters; the estimator as a JSON-able spec when its parameters allow one."""
        params = super().get_params()
        if not isinstance(params["estimator"], dict):
            params["estimator"] = _estimator_spec(params["estimator"])
        return params

    def _validate_params(self) -> None:
        owner = type(self).__name__
        est = self.estimator
        if not isinstance(est, dict) and not callable(getattr(est, "fit_predict", None)):
            raise TypeError(
                f"The 'estimator' parameter of {owner} must be a scikit-learn clusterer with a "
                f"fit_predict method. Got {shape_str(est)} instead."
            )
        if self.n_clusters is not None:
            _ops.validate_n_clusters(self.n_clusters, self.max_clusters, owner)
        check_int(self.max_clusters, "max_clusters", owner, 1)
        check_int(self.seed, "seed", owner, 0)

    def _fit(self, X: torch.Tensor, mask: torch.Tensor) -> None:
        owner = type(self).__name__
        B, n, d = X.shape
        template = _build_estimator(self.estimator, owner)
        accepted = template.get_params(deep=False)
        counts = None
        if self.n_clusters is not None:
            if "n_clusters" not in accepted:
                raise ValueError(
                    f"The 'n_clusters' parameter of {owner} needs an estimator with an "
                    f"'n_clusters' parameter; {type(template).__name__} has none. Pass "
                    f"n_clusters=None."
                )
            counts, _ = _ops.resolve_n_clusters(
                self.n_clusters, self.max_clusters, X, mask, owner, seed=self.seed
            )
            counts = counts.tolist()
        Xn = X.detach().to("cpu", torch.float64).numpy()
        mn = mask.cpu().numpy()
        item_labels = []
        for b in range(B):  # scikit-learn fits one item at a time
            est = _build_estimator(self.estimator, owner)
            if counts is not None:
                est.set_params(n_clusters=int(counts[b]))
            if "random_state" in accepted and accepted["random_state"] is None:
                est.set_params(random_state=int(self.seed))
            lab = np.asarray(est.fit_predict(Xn[b][mn[b]]))
            kept = lab >= 0
            if not kept.any():  # everything was noise: one cluster
                lab, kept = np.zeros_like(lab), np.ones_like(kept)
            _, lab[kept] = np.unique(lab[kept], return_inverse=True)
            item_labels.append(lab)

        k_max = max(int(lab.max()) + 1 for lab in item_labels)
        sums = np.zeros((B, k_max, d))
        sizes = np.zeros((B, k_max))
        fitted = np.full((B, n), -1, dtype=np.int64)
        for b, lab in enumerate(item_labels):
            fitted[b, mn[b]] = lab
            kept = lab >= 0
            np.add.at(sums[b], lab[kept], Xn[b][mn[b]][kept])
            np.add.at(sizes[b], lab[kept], 1.0)
        dtype = _ops.compute_dtype(X)
        sizes_t = torch.as_tensor(sizes, dtype=dtype, device=X.device)
        centers = torch.as_tensor(sums, dtype=dtype, device=X.device) / sizes_t.clamp_min(1.0)[..., None]
        self.cluster_centers_ = centers.to(X.dtype)  # (batch, k_max, dim)
        self.n_clusters_ = (sizes_t > 0).sum(1).to(torch.int64)  # (batch,)
        fitted_t = torch.as_tensor(fitted, device=X.device)
        # Masked and noise points go to the nearest fitted cluster mean.
        nearest = self._predict(X)
        self.labels_ = torch.where(fitted_t >= 0, fitted_t, nearest)

    def _predict(self, X: torch.Tensor) -> torch.Tensor:
        dtype = _ops.compute_dtype(X)
        C = self.cluster_centers_.to(device=X.device, dtype=dtype)
        d = _ops.sq_distances(X.to(dtype), C)  # (batch, n, k_max)
        valid = _ops.center_valid(self.n_clusters_.to(X.device), C.shape[1])
        return d.masked_fill(~valid[:, None, :], float("inf")).argmin(-1)
