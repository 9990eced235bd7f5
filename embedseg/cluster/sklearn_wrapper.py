"""Any scikit-learn clusterer on batched tensors, one item at a time."""

from __future__ import annotations

import copy
import importlib
import json
from numbers import Integral
from typing import Any

import numpy as np
import torch

from .._params import HasMethods, InstanceOf, Interval, Options, describe
from ..errors import require
from ._distances import center_valid, compute_dtype, sq_distances
from .base import BaseClusterer, PerItemCounts

__all__ = ["SklearnClusterer"]

_SPEC_KEYS = ("class", "params")


def _estimator_spec(estimator: Any) -> Any:
    """A JSON-able ``{"class", "params"}`` description of a scikit-learn estimator, when its
    parameters allow one; otherwise the estimator itself (anything that is not a scikit-learn
    estimator, a spec or a bad value included)."""
    get_params = getattr(estimator, "get_params", None)
    if isinstance(estimator, (dict, type)) or not callable(get_params):
        return estimator
    try:
        params = get_params(deep=False)
        json.dumps(params)
    except (TypeError, ValueError, AttributeError):
        return estimator
    cls = type(estimator)
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "params": params}


def _build_estimator(spec: Any, owner: str) -> Any:
    """An unfitted estimator from an estimator object or a ``{"class", "params"}`` spec.

    A spec may come from a saved model's config, so what it names is never trusted: it must be
    a scikit-learn estimator class (not any callable scikit-learn exposes, some of which read
    or write files), and a module that does not exist is a ValueError like any bad value.
    An object that is not a scikit-learn estimator is deep-copied.
    """
    if not isinstance(spec, dict):
        if callable(getattr(spec, "get_params", None)):
            return require("sklearn.base", "sklearn").clone(spec)
        return copy.deepcopy(spec)
    unknown = sorted(set(map(str, spec)) - set(_SPEC_KEYS))
    if unknown:
        raise ValueError(
            f"The 'estimator' parameter of {owner} given as a dict must have the keys 'class' "
            f"and 'params' only. Got the keys {sorted(map(str, spec))} instead."
        )
    path = spec.get("class")
    if not isinstance(path, str) or not path.startswith("sklearn."):
        raise ValueError(
            f"The 'estimator' parameter of {owner} given as a dict must name a scikit-learn "
            f"class under 'class' (e.g. 'sklearn.cluster.KMeans'). Got {path!r} instead."
        )
    params = spec.get("params")
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise ValueError(
            f"The 'estimator' parameter of {owner} given as a dict must hold the class's "
            f"parameters as a dict under 'params'. Got {describe(params)} instead."
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
    try:
        return cls(**params)
    except TypeError as exc:  # a parameter the class does not take
        raise ValueError(
            f"The 'estimator' parameter of {owner} gives {path} parameters it does not take: {exc}."
        ) from None


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
        estimator: an unfitted scikit-learn clusterer (or any object with ``fit_predict``,
            copied for each item), or ``{"class": "sklearn.cluster.X", "params": {...}}`` (the
            JSON form :meth:`get_params` returns when it can).
        n_clusters: None to leave the estimator's own setting, an int, per-item counts, or
            "auto" (estimated per item with :func:`~embedseg.cluster.auto.estimate_n_clusters`).
        max_clusters: the largest count considered under "auto".
        seed: the estimator's ``random_state`` when it has one set to None (so at most
            2**32 - 1, as scikit-learn requires); also seeds "auto".

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

    _parameter_constraints = {
        "estimator": [
            HasMethods(["fit_predict"]),
            InstanceOf(dict, "a scikit-learn estimator spec {'class': 'sklearn.cluster.X', 'params': {...}}"),
        ],
        "n_clusters": [
            Interval(Integral, 1, None, closed="left"), Options(str, ["auto"]), PerItemCounts(), None,
        ],
        "max_clusters": [Interval(Integral, 1, None, closed="left")],
        "seed": [Interval(Integral, 0, 2**32 - 1, closed="both")],
    }

    def get_params(self) -> dict[str, Any]:
        """The parameters; the estimator as a JSON-able spec when its parameters allow one."""
        params = super().get_params()
        params["estimator"] = _estimator_spec(params["estimator"])
        return params

    def _validate_params(self) -> None:
        est = self.estimator
        if isinstance(est, type):
            raise TypeError(
                f"The 'estimator' parameter of {type(self).__name__} must be an object with a "
                f"fit_predict method, an instance such as {est.__name__}(), or a scikit-learn "
                f"estimator spec. Got the class {est.__module__}.{est.__qualname__} instead."
            )
        super()._validate_params()

    def _fit(
        self,
        X: torch.Tensor,
        mask: torch.Tensor,
        n_clusters: torch.Tensor | None,
        n_slots: int | None,
    ) -> None:
        owner = type(self).__name__
        B, n, d = X.shape
        template = _build_estimator(self.estimator, owner)
        get_params = getattr(template, "get_params", None)
        accepted = get_params(deep=False) if callable(get_params) else {}
        counts = None
        if n_clusters is not None:
            if "n_clusters" not in accepted:
                raise ValueError(
                    f"The 'n_clusters' parameter of {owner} needs an estimator with an "
                    f"'n_clusters' parameter; {type(template).__name__} has none. Pass "
                    f"n_clusters=None."
                )
            counts = n_clusters.tolist()
        Xn = X.detach().to("cpu", torch.float64).numpy()
        mn = mask.cpu().numpy()
        item_labels = []
        for b in range(B):  # scikit-learn fits one item at a time
            est = _build_estimator(self.estimator, owner)
            if counts is not None:
                est.set_params(n_clusters=int(counts[b]))
            if "random_state" in accepted and accepted["random_state"] is None:
                est.set_params(random_state=int(self.seed))
            points = Xn[b][mn[b]]
            lab = _check_labels(est.fit_predict(points), len(points), type(est).__name__, owner)
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
        dtype = compute_dtype(X)
        sizes_t = torch.as_tensor(sizes, dtype=dtype, device=X.device)
        centers = torch.as_tensor(sums, dtype=dtype, device=X.device) / sizes_t.clamp_min(1.0)[..., None]
        self.cluster_centers_ = centers.to(X.dtype)  # (batch, k_max, dim)
        self.n_clusters_ = (sizes_t > 0).sum(1).to(torch.int64)  # (batch,)
        fitted_t = torch.as_tensor(fitted, device=X.device)
        # Masked and noise points go to the nearest fitted cluster mean.
        nearest = self._predict(X)
        self.labels_ = torch.where(fitted_t >= 0, fitted_t, nearest)

    def _predict(self, X: torch.Tensor) -> torch.Tensor:
        # float64, as the estimator saw the points: squared distances of points as large or
        # as small as float32 holds do not overflow or vanish there (the points are not scaled
        # here, since an estimator's own parameters, such as DBSCAN's eps, are in their units)
        C = self.cluster_centers_.to(device=X.device, dtype=torch.float64)
        d = sq_distances(X.to(torch.float64), C)  # (batch, n, k_max)
        valid = center_valid(self.n_clusters_.to(X.device), C.shape[1])
        return d.masked_fill(~valid[:, None, :], float("inf")).argmin(-1)


def _check_labels(labels: Any, n: int, name: str, owner: str) -> np.ndarray:
    """The labels an estimator's fit_predict returned, as int64, or a clear error."""
    lab = np.asarray(labels)
    if lab.shape != (n,) or not (np.issubdtype(lab.dtype, np.integer) or (
        np.issubdtype(lab.dtype, np.floating) and np.all(np.isfinite(lab)) and np.all(lab == np.round(lab))
    )):
        raise ValueError(
            f"The 'estimator' parameter of {owner} must give one integer label per point from "
            f"fit_predict. {name}.fit_predict returned {describe(lab)} for {n} points."
        )
    return lab.astype(np.int64)
