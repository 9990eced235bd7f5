"""The clusterer contract: scikit-learn-style estimators on batched tensors.

X is (batch, n_points, dim); ``mask`` (batch, n_points) bool marks the points to fit on (every
point is still assigned a label). Labels come back as int64 on X's device. Parameters are
keyword-only and stored as given; ``fit`` checks them against the class's declared
``_parameter_constraints``; fitted attributes end in ``_``.

Everything every clusterer needs is done here, once: checking parameters and inputs,
resolving ``n_clusters`` (an int, per-item counts or ``"auto"``) into per-item counts,
bringing each item's points to an ordinary magnitude, and checking the inputs of ``predict``
against those of ``fit``. A clusterer implements ``_fit`` and, where it can, ``_predict``.
"""

from __future__ import annotations

import copy
import functools
import inspect
import numbers
from numbers import Integral
from typing import Any, ClassVar

import torch

from .._params import Constraint, describe, validate_params
from .._validation import check_active, check_embeddings, check_mask
from ..errors import NotFittedError
from ._scaling import Extent, extent, fit_transform, transform
from .auto import _estimate

__all__ = ["BaseClusterer", "PerItemCounts"]


class PerItemCounts(Constraint):
    """Per-item cluster counts: a list of ints or a (batch,) integer tensor, each >= 1 (the
    length is checked against the batch at fit)."""

    def is_kind(self, value: Any) -> bool:
        if isinstance(value, (list, tuple)):
            return all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)
        if isinstance(value, torch.Tensor):
            return value.ndim == 1 and not (
                value.is_floating_point() or value.is_complex() or value.dtype == torch.bool
            )
        return False

    def is_satisfied_by(self, value: Any) -> bool:
        if not self.is_kind(value):
            return False
        if isinstance(value, torch.Tensor):
            return value.numel() == 0 or int(value.min()) >= 1
        return all(v >= 1 for v in value)

    def __str__(self) -> str:
        return "per-item counts (a list of ints or a (batch,) integer tensor, each >= 1)"

    def describe_failure(self, value: Any) -> str:
        smallest = int(value.min()) if isinstance(value, torch.Tensor) else min(value)
        return f"{describe(value)}, whose smallest count is {smallest},"


@functools.cache
def _init_param_names(cls: type) -> tuple[str, ...]:
    """The parameters of ``cls.__init__`` (read once per class: inspect is slow next to a fit
    of a small batch)."""
    sig = inspect.signature(cls.__init__)
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(p.name for p in sig.parameters.values() if p.name != "self" and p.kind in kinds)


class BaseClusterer:
    """Base class of the batched clusterers.

    A subclass declares its parameters in ``__init__`` (keyword-only, stored as given) and in
    ``_parameter_constraints``, and implements ``_fit(X, mask, n_clusters, n_slots)``, which
    sets ``labels_`` and whatever else it fits. It receives:

    * ``X``: (batch, n_points, dim) finite points, detached, each item scaled to an ordinary
      magnitude (and, for ``_transform = "centre"``, moved next to the origin when far from
      it); see :meth:`_to_input_points` and :meth:`_to_input_scale` to report fitted
      attributes in the caller's coordinates.
    * ``mask``: (batch, n_points) bool on X's device, with at least one active point per item.
    * ``n_clusters``: (batch,) int64 counts on X's device, each within the item's active
      points, resolved from the ``n_clusters`` parameter (an int, per-item counts or
      ``"auto"``, estimated here with :func:`~embedseg.cluster.estimate_n_clusters`); None
      when the class has no ``n_clusters`` parameter or it is None. ``n_clusters_`` is set to
      it before ``_fit`` runs.
    * ``n_slots``: the number of cluster slots to allocate (``max_clusters`` under
      ``"auto"``, else the largest count), or None with ``n_clusters``.

    Where it can assign new points it implements ``_predict(X)`` (X transformed like the fit's
    points); methods with soft assignments implement ``_predict_proba(X)`` and set
    ``has_proba = True``. :func:`embedseg.testing.check_clusterer` checks the whole contract.

    Common fitted attributes:
        labels_: (batch, n_points) int64 labels of the fitted points (masked-out points too).
        n_clusters_: (batch,) int64 number of clusters used per item (differs per item under
            ``n_clusters="auto"``). Labels of item b lie in [0, n_clusters_[b]).
        n_features_in_: the ``dim`` of the points seen in fit.
    """

    has_proba: ClassVar[bool] = False
    # Per parameter, the constraints a valid value meets (any one of them); see embedseg._params.
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {}
    # What fit may do to each item's points before _fit: None (nothing), "scale" (a power of
    # two; for methods that depend on the origin, such as cosine geometry) or "centre" (also
    # move far-off items next to the origin; for Euclidean methods).
    _transform: ClassVar[str | None] = None

    # -- parameters (scikit-learn's contract) ------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        return list(_init_param_names(cls))

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters, as given (per-item counts given as a tensor become a
        list, so that the parameters stay JSON data)."""
        params = {name: getattr(self, name) for name in self._param_names()}
        if isinstance(params.get("n_clusters"), torch.Tensor):
            params["n_clusters"] = params["n_clusters"].tolist()
        return params

    def set_params(self, **params: Any) -> "BaseClusterer":
        """Set constructor parameters; unknown names are rejected. Returns self."""
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"Invalid parameter '{name}' for {type(self).__name__}. Valid parameters: "
                    f"{', '.join(valid)}."
                )
            setattr(self, name, value)
        return self

    def clone(self, **params: Any) -> "BaseClusterer":
        """An unfitted copy with the same parameters, some optionally replaced."""
        new = type(self)(**copy.deepcopy(self.get_params()))
        return new.set_params(**params)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def _validate_params(self) -> None:
        """Check the parameters against ``_parameter_constraints`` (and ``max_clusters`` >= 2
        under ``n_clusters="auto"``).

        Raises:
            TypeError: a parameter of the wrong type.
            ValueError: a parameter out of range.
        """
        owner = type(self).__name__
        validate_params(self._parameter_constraints, self._raw_params(), owner)
        if isinstance(getattr(self, "n_clusters", None), str) and hasattr(self, "max_clusters"):
            max_clusters = self.max_clusters
            if isinstance(max_clusters, Integral) and max_clusters < 2:
                raise ValueError(
                    f"The 'max_clusters' parameter of {owner} must be an int in [2, inf) with "
                    f"n_clusters='auto'. Got {max_clusters!r} instead."
                )

    def _raw_params(self) -> dict[str, Any]:
        """The parameters as stored (get_params may rewrite some for JSON)."""
        return {name: getattr(self, name) for name in self._param_names()}

    # -- public API ---------------------------------------------------------------------------
    def fit(self, X: torch.Tensor, mask: torch.Tensor | None = None) -> "BaseClusterer":
        """Fit on the active points of every item.

        Args:
            X: (batch, n_points, dim) floating tensor of finite values.
            mask: (batch, n_points) bool, True for the points to fit on; None = all.

        Returns:
            self.

        Raises:
            TypeError: a parameter, X or mask of the wrong type.
            ValueError: a parameter out of range, bad shapes, NaN/inf, fully masked items, or
                more clusters than active points.
        """
        self._validate_params()
        X = check_embeddings(X, "X", finite=False).detach()
        mask = check_mask(mask, X.shape[:2], X.device)
        where = extent(X, mask)
        if not where.finite:
            check_embeddings(X, "X")  # raises, naming the non-finite entries
        n_active = check_active(mask)  # (batch,)
        counts, n_slots = self._resolve_n_clusters(X, mask, n_active, where)
        # A failed fit leaves the clusterer unfitted rather than half-updated.
        for name in ("labels_", "_shift", "_scale"):
            self.__dict__.pop(name, None)
        Xf, shift, scale = X, None, None
        if self._transform is not None:
            Xf, shift, scale = fit_transform(X, where, centre=self._transform == "centre")
        self._shift, self._scale = shift, scale
        self.n_features_in_ = X.shape[2]
        if counts is not None:
            self.n_clusters_ = counts
        try:
            with torch.no_grad():
                self._fit(Xf, mask, counts, n_slots)
        except BaseException:
            self.__dict__.pop("labels_", None)
            raise
        return self

    def fit_predict(self, X: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Fit, then return the (batch, n_points) int64 labels of every point."""
        return self.fit(X, mask).labels_

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        """Labels (batch, n_points) int64 for new points of the same items.

        Raises:
            NotFittedError: before ``fit``.
            NotImplementedError: the method cannot label new points (use fit_predict).
            TypeError, ValueError: X is not a (batch, n_points, dim) floating tensor of finite
                values with the batch size and ``dim`` of the fit.
        """
        X = self._check_new_points(X)
        with torch.no_grad():
            return self._predict(self._to_fit_space(X))

    def predict_proba(self, X: torch.Tensor) -> torch.Tensor:
        """Soft assignments (batch, n_points, n_slots); rows sum to one over item b's first
        ``n_clusters_[b]`` columns, the others are zero.

        Raises:
            AttributeError: the method has no soft assignments (``has_proba`` is False).
            NotFittedError, TypeError, ValueError: as :meth:`predict`.
        """
        if not self.has_proba:
            raise AttributeError(f"{type(self).__name__} has no soft assignments (predict_proba).")
        X = self._check_new_points(X)
        with torch.no_grad():
            return self._predict_proba(self._to_fit_space(X))

    # -- what subclasses implement --------------------------------------------------------------
    def _fit(
        self,
        X: torch.Tensor,
        mask: torch.Tensor,
        n_clusters: torch.Tensor | None,
        n_slots: int | None,
    ) -> None:
        raise NotImplementedError

    def _predict(self, X: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} cannot label new points; use fit_predict.")

    def _predict_proba(self, X: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # -- helpers for subclasses ---------------------------------------------------------------
    def _to_fit_space(self, X: torch.Tensor) -> torch.Tensor:
        """New points in the coordinates the fit ran in."""
        return transform(X, getattr(self, "_shift", None), getattr(self, "_scale", None))

    def _to_input_points(self, P: torch.Tensor) -> torch.Tensor:
        """Points of the fit's coordinates (centers, means) in the caller's: (batch, ..., dim)."""
        shift, scale = getattr(self, "_shift", None), getattr(self, "_scale", None)
        if shift is None and scale is None:
            return P
        out = P.double()
        if scale is not None:
            out = out / scale.to(out.device).view(-1, *[1] * (P.ndim - 1))
        if shift is not None:
            out = out + shift.to(out.device).view(shift.shape[0], *[1] * (P.ndim - 2), -1)
        return out.to(P.dtype)

    def _to_input_scale(self, V: torch.Tensor, power: int) -> torch.Tensor:
        """A per-item quantity in units of length**power (variances: 2) in the caller's
        units: (batch, ...)."""
        scale = getattr(self, "_scale", None)
        if scale is None:
            return V
        factor = scale.to(device=V.device, dtype=torch.float64) ** -power
        return (V.double() * factor.view(-1, *[1] * (V.ndim - 1))).to(V.dtype)

    def _check_fitted(self) -> None:
        if not hasattr(self, "labels_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                f"appropriate arguments before using this method."
            )

    def _check_new_points(self, X: Any) -> torch.Tensor:
        """Check points given to predict and its kin against the fit; return them detached."""
        self._check_fitted()
        X = check_embeddings(X, "X")
        fitted = self.labels_.shape[0]
        if X.shape[0] != fitted:
            raise ValueError(
                f"'X' must have the batch size it was fitted with ({fitted}). Got {tuple(X.shape)} instead."
            )
        n_features = getattr(self, "n_features_in_", None)
        if n_features is not None and X.shape[2] != n_features:
            raise ValueError(
                f"'X' must have {n_features} features, as in fit. Got {X.shape[2]} instead."
            )
        return X.detach()

    def _resolve_n_clusters(
        self,
        X: torch.Tensor,
        mask: torch.Tensor,
        n_active: torch.Tensor,
        where: Extent,
    ) -> tuple[torch.Tensor | None, int | None]:
        """Per-item counts (batch,) int64 on X's device and the slots to allocate, from the
        ``n_clusters`` parameter; (None, None) without one."""
        value = getattr(self, "n_clusters", None) if "n_clusters" in self._param_names() else None
        if value is None:
            return None, None
        owner = type(self).__name__
        B = X.shape[0]
        if isinstance(value, str):  # "auto", as the constraints guarantee
            max_clusters = int(getattr(self, "max_clusters", 8))
            seed = int(getattr(self, "seed", 0))
            counts = _estimate(X, mask, where, min_clusters=2, max_clusters=max_clusters, seed=seed)
            return counts, max_clusters
        if isinstance(value, (list, tuple, torch.Tensor)):
            if len(value) != B:
                raise ValueError(
                    f"The 'n_clusters' parameter of {owner} must have one count per item ({B}). "
                    f"Got {describe(value)} instead."
                )
            counts = torch.as_tensor(value, dtype=torch.int64).to(X.device)
        else:
            counts = torch.full((B,), int(value), dtype=torch.int64, device=X.device)
        too_many = counts > n_active
        if bool(too_many.any()):
            b = int(torch.nonzero(too_many)[0])
            raise ValueError(
                f"The 'n_clusters' parameter of {owner} ({int(counts[b])} for item {b}) must not "
                f"exceed the number of active points. Got item {b} with {int(n_active[b])} active "
                f"points."
            )
        return counts, int(counts.max())
