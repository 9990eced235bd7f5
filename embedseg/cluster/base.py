"""The clusterer contract: scikit-learn-style estimators on batched tensors.

X is (batch, n_points, dim); ``mask`` (batch, n_points) bool marks the points to fit on (every
point is still assigned a label). Labels come back as int64 on X's device. Parameters are
keyword-only and stored as given; ``fit`` validates them; fitted attributes end in ``_``.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any, ClassVar

import torch

from .._validation import check_active, check_embeddings, check_int, check_mask
from ..errors import NotFittedError

__all__ = ["BaseClusterer"]


class BaseClusterer:
    """Base class of the batched clusterers.

    Subclasses implement ``_validate_params()`` and ``_fit(X, mask)`` (which sets ``labels_``
    and whatever else they fit) and, where they can assign new points, ``_predict(X)``; methods
    with soft assignments implement ``_predict_proba(X)`` and set ``has_proba = True``.

    Common fitted attributes:
        labels_: (batch, n_points) int64 labels of the fitted points (masked-out points too).
        n_clusters_: (batch,) int64 number of clusters used per item (differs per item under
            ``n_clusters="auto"``). Labels of item b lie in [0, n_clusters_[b]).
    """

    has_proba: ClassVar[bool] = False

    # -- parameters (scikit-learn's contract) ------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        return [p.name for p in sig.parameters.values() if p.name != "self" and p.kind in kinds]

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

    # -- public API ---------------------------------------------------------------------------
    def fit(self, X: torch.Tensor, mask: torch.Tensor | None = None) -> "BaseClusterer":
        """Fit on the active points of every item.

        Args:
            X: (batch, n_points, dim) floating tensor of finite values.
            mask: (batch, n_points) bool, True for the points to fit on; None = all.

        Returns:
            self.

        Raises:
            ValueError: bad parameters, bad shapes, NaN/inf, fully masked items, or more
                clusters than active points.
        """
        self._validate_params()
        X = check_embeddings(X, "X")
        mask = check_mask(mask, X.shape[:2], X.device)
        self._check_enough_points(check_active(mask))
        self._fit(X, mask)
        return self

    def fit_predict(self, X: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Fit, then return the (batch, n_points) int64 labels of every point."""
        return self.fit(X, mask).labels_

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        """Labels (batch, n_points) int64 for new points of the same items."""
        self._check_fitted()
        X = check_embeddings(X, "X")
        self._check_batch(X)
        return self._predict(X)

    def predict_proba(self, X: torch.Tensor) -> torch.Tensor:
        """Soft assignments (batch, n_points, n_clusters_max); rows sum to one over item b's
        first ``n_clusters_[b]`` columns, the others are zero."""
        if not self.has_proba:
            raise AttributeError(f"{type(self).__name__} has no soft assignments (predict_proba).")
        self._check_fitted()
        X = check_embeddings(X, "X")
        self._check_batch(X)
        return self._predict_proba(X)

    # -- helpers for subclasses -------------------------------------------------------------
    def _validate_params(self) -> None:
        raise NotImplementedError

    def _fit(self, X: torch.Tensor, mask: torch.Tensor) -> None:
        raise NotImplementedError

    def _predict(self, X: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} cannot label new points; use fit_predict.")

    def _predict_proba(self, X: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _check_fitted(self) -> None:
        if not hasattr(self, "labels_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                f"appropriate arguments before using this method."
            )

    def _check_batch(self, X: torch.Tensor) -> None:
        fitted = self.labels_.shape[0]
        if X.shape[0] != fitted:
            raise ValueError(
                f"'X' must have the batch size it was fitted with ({fitted}). Got {tuple(X.shape)} instead."
            )

    def _check_enough_points(self, n_active: torch.Tensor) -> None:
        """Reject a fixed n_clusters larger than some item's number of active points."""
        k = getattr(self, "n_clusters", None)
        if isinstance(k, int) and not isinstance(k, bool):
            too_few = n_active < k
            if bool(too_few.any()):
                b = int(torch.nonzero(too_few)[0])
                raise ValueError(
                    f"The 'n_clusters' parameter of {type(self).__name__} ({k}) must not exceed "
                    f"the number of active points. Got item {b} with {int(n_active[b])} active points."
                )

    def _check_n_clusters(self, owner: str) -> None:
        """Validate ``n_clusters`` (an int >= 1 or "auto") and ``max_clusters``."""
        if self.n_clusters == "auto":
            check_int(self.max_clusters, "max_clusters", owner, 2)
        else:
            check_int(self.n_clusters, "n_clusters", owner, 1)
