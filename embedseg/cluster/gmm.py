"""Batched Gaussian mixtures fitted by expectation-maximization.

Every item of a batch (batch, n_points, dim) gets its own mixture; all items are fitted at
once with batched matrix products, so there is no Python loop over the batch. The E-step
works with log-probabilities and a log-sum-exp, so responsibilities stay exact even when a
point is hundreds of standard deviations from every component. Components beyond an item's
number of clusters are disabled (weight zero, log-weight -inf), which is how per-item counts
(``n_clusters="auto"``) share one batched computation.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .._validation import check_choice, check_float, check_int
from ._ops import (
    center_valid,
    compute_dtype,
    kmeans_plusplus,
    make_generator,
    resolve_n_clusters,
    sq_distances,
    validate_n_clusters,
)
from .base import BaseClusterer
from .kmeans import kmeans

__all__ = ["GaussianMixture"]

_COVARIANCE_TYPES = ("diag", "full", "spherical")
_INITS = ("kmeans", "k-means++", "random")


class GaussianMixture(BaseClusterer):
    """Gaussian mixture per item, fitted by batched EM (as ``sklearn.mixture.GaussianMixture``).

    Each iteration runs an E-step (log-responsibilities by log-sum-exp) and an M-step
    (weights, means, covariances from the responsibilities of the active points only; masked
    points get zero responsibility). An item has converged when its mean log-likelihood per
    active point changes by less than ``tol``; converged items are frozen while the others go
    on, and the loop stops when every item has converged or after ``max_iter`` iterations. A
    final E-step gives the labels, so ``fit(X).labels_`` equals ``predict(X)``.

    The data of each item are centred on their (masked) mean before fitting, which keeps the
    expanded quadratic forms of the diagonal and spherical paths accurate in float32;
    ``means_`` are reported in the original coordinates. Computation runs in float64 for
    float64 input and in float32 otherwise.

    Args:
        n_clusters: components per item: an int, a (batch,) int64 tensor of per-item counts,
            or ``"auto"`` to estimate each item's count in [2, max_clusters]
            (:func:`embedseg.cluster.auto.estimate_n_clusters`).
        max_clusters: the largest count ``"auto"`` may choose.
        covariance_type: ``"diag"`` (one variance per dimension and component), ``"full"``
            (a full matrix per component, through batched Cholesky factors) or ``"spherical"``
            (one variance per component).
        max_iter: maximum number of EM iterations per initialization.
        tol: convergence threshold on the change of the mean log-likelihood per point.
        reg_covar: non-negative variance floor added to the diagonal of every covariance.
        n_init: number of initializations; per item, the one with the best final
            log-likelihood is kept.
        init: how responsibilities start: ``"kmeans"`` (labels of a batched k-means, as
            scikit-learn's default), ``"k-means++"`` (nearest k-means++ seed) or ``"random"``
            (random responsibilities).
        seed: seed of the initializations (initialization ``i`` uses ``seed + i``).

    Attributes:
        weights_: (batch, k) mixing weights; zero for disabled components.
        means_: (batch, k, dim) component means.
        covariances_: (batch, k, dim) for "diag", (batch, k, dim, dim) for "full",
            (batch, k) for "spherical".
        precisions_cholesky_: Cholesky factors of the precisions, shaped like
            ``covariances_`` (for "diag"/"spherical": inverse standard deviations).
        converged_: (batch,) bool, whether EM converged for the kept initialization.
        n_iter_: (batch,) int64 EM iterations of the kept initialization.
        lower_bound_: (batch,) mean log-likelihood per active point at the last iteration.
        labels_: (batch, n_points) int64 most probable component of every point.
        n_clusters_: (batch,) int64 components used per item.

    Here ``k`` is the number of component slots: ``max_clusters`` under ``"auto"``, else the
    largest count; slots at or beyond ``n_clusters_[b]`` are disabled for item b.

    Raises:
        ValueError: bad parameters (in ``fit``), or a covariance that is not positive
            definite (increase ``reg_covar``).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> X = torch.cat([torch.randn(1, 50, 2, generator=g) - 5,
        ...                torch.randn(1, 50, 2, generator=g) + 5], dim=1)
        >>> gmm = GaussianMixture(n_clusters=2).fit(X)
        >>> labels = gmm.labels_
        >>> bool((labels[0, :50] == labels[0, 0]).all() and (labels[0, 50:] != labels[0, 0]).all())
        True
        >>> gmm.predict_proba(X).shape
        torch.Size([1, 100, 2])
    """

    has_proba = True

    def __init__(
        self,
        *,
        n_clusters: int | str | torch.Tensor = 2,
        max_clusters: int = 8,
        covariance_type: str = "diag",
        max_iter: int = 100,
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        n_init: int = 1,
        init: str = "kmeans",
        seed: int = 0,
    ) -> None:
        self.n_clusters = n_clusters
        self.max_clusters = max_clusters
        self.covariance_type = covariance_type
        self.max_iter = max_iter
        self.tol = tol
        self.reg_covar = reg_covar
        self.n_init = n_init
        self.init = init
        self.seed = seed

    # -- parameters -----------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """The constructor parameters, as given (a per-item count tensor becomes a list)."""
        params = super().get_params()
        if isinstance(params["n_clusters"], torch.Tensor):
            params["n_clusters"] = params["n_clusters"].tolist()
        return params

    def _validate_params(self) -> None:
        owner = type(self).__name__
        validate_n_clusters(self.n_clusters, self.max_clusters, owner)
        check_choice(self.covariance_type, "covariance_type", owner, _COVARIANCE_TYPES)
        check_int(self.max_iter, "max_iter", owner, 1)
        check_float(self.tol, "tol", owner, 0.0)
        check_float(self.reg_covar, "reg_covar", owner, 0.0)
        check_int(self.n_init, "n_init", owner, 1)
        check_choice(self.init, "init", owner, _INITS)
        check_int(self.seed, "seed", owner, 0)

    # -- fitting --------------------------------------------------------------------------
    def _fit(self, X: torch.Tensor, mask: torch.Tensor) -> None:
        counts, k = resolve_n_clusters(
            self.n_clusters, self.max_clusters, X, mask, type(self).__name__, self.seed
        )  # (batch,), slots
        enabled = center_valid(counts, k)  # (batch, k)
        X = X.to(compute_dtype(X))  # half precision is too coarse for EM statistics
        w = mask.to(X.dtype)  # (batch, n_points)
        n_active = w.sum(dim=1)  # (batch,)
        center = (X * w[..., None]).sum(dim=1) / n_active[:, None]  # (batch, dim)
        Xc = X - center[:, None, :]  # (batch, n_points, dim)
        Z = self._design(Xc)  # (batch, n_points, dim or 2 * dim)

        best: dict[str, torch.Tensor] = {}
        for i in range(self.n_init):
            resp = self._initial_resp(Xc, mask, counts, k, self.seed + i)  # (batch, k, n_points)
            params = self._m_step(Z, resp * w[:, None, :], n_active, enabled)
            params = self._em(Z, w, n_active, enabled, params)
            if not best:
                best = params
            else:
                better = params["lower_bound"] > best["lower_bound"]  # (batch,)
                best = _select(better, params, best)

        self.n_clusters_ = counts
        self.weights_ = best["weights"]
        self.means_ = best["means"] + center[:, None, :]
        self.covariances_ = best["covariances"]
        self.precisions_cholesky_ = best["prec_chol"]
        self.converged_ = best["converged"]
        self.n_iter_ = best["n_iter"]
        self.lower_bound_ = best["lower_bound"]
        # A final E-step on every point, so that labels_ equals predict(X).
        log_resp, _ = self._log_resp(Z, best)  # (batch, k, n_points)
        self.labels_ = log_resp.max(dim=1).indices  # (batch, n_points)

    def _design(self, Xc: torch.Tensor) -> torch.Tensor:
        """The per-point statistics EM needs: [x, x²] (diag, spherical) or x (full)."""
        if self.covariance_type == "full":
            return Xc
        return torch.cat([Xc, Xc * Xc], dim=-1)  # (batch, n_points, 2 * dim)

    def _initial_resp(
        self, Xc: torch.Tensor, mask: torch.Tensor, counts: torch.Tensor, k: int, seed: int
    ) -> torch.Tensor:
        """Initial responsibilities (batch, k, n_points); zero on disabled components."""
        B, n, _ = Xc.shape
        enabled = center_valid(counts, k)  # (batch, k)
        if self.init == "random":
            g = make_generator(seed, Xc.device)
            resp = torch.rand(B, k, n, generator=g, device=Xc.device, dtype=Xc.dtype)
            resp = resp * enabled[:, :, None]
            return resp / resp.sum(dim=1, keepdim=True)
        if self.init == "kmeans":
            # scikit-learn's default: one k-means run (k-means++ start), its labels one-hot.
            labels = kmeans(
                Xc, mask, counts, k, n_init=1, max_iter=300, tol=1e-4,
                generator=make_generator(seed, Xc.device),
            ).labels  # (batch, n_points)
        else:
            centers = kmeans_plusplus(Xc, mask, k, 1, make_generator(seed, Xc.device))[:, 0]
            d2 = sq_distances(Xc, centers)  # (batch, n_points, k)
            d2 = d2.masked_fill(~enabled[:, None, :], float("inf"))
            labels = d2.argmin(dim=-1)
        slots = torch.arange(k, device=Xc.device)
        return (labels[:, None, :] == slots[None, :, None]).to(Xc.dtype)  # (batch, k, n_points)

    def _em(
        self,
        Z: torch.Tensor,
        w: torch.Tensor,
        n_active: torch.Tensor,
        enabled: torch.Tensor,
        params: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """Run EM from ``params`` until every item converged or ``max_iter``."""
        B = Z.shape[0]
        device = Z.device
        lower_bound = torch.full((B,), -math.inf, dtype=Z.dtype, device=device)
        converged = torch.zeros(B, dtype=torch.bool, device=device)
        n_iter = torch.zeros(B, dtype=torch.int64, device=device)
        for _ in range(self.max_iter):
            log_resp, log_norm = self._log_resp(Z, params)  # (batch, k, n), (batch, n)
            new_bound = (log_norm * w).sum(dim=1) / n_active  # (batch,)
            active = ~converged  # (batch,)
            n_iter += active.to(torch.int64)
            newly = active & ((new_bound - lower_bound).abs() < self.tol)
            lower_bound = torch.where(active, new_bound, lower_bound)
            resp = log_resp.exp_().mul_(w[:, None, :])  # (batch, k, n), masked points zeroed
            updated = self._m_step(Z, resp, n_active, enabled)
            params = _select(active, updated, params)
            converged = converged | newly
            if bool(converged.all()):
                break
        params = dict(params)
        params.update(lower_bound=lower_bound, converged=converged, n_iter=n_iter)
        return params

    def _m_step(
        self,
        Z: torch.Tensor,
        resp: torch.Tensor,
        n_active: torch.Tensor,
        enabled: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Weights, means, covariances and precision factors from masked responsibilities
        ``resp`` (batch, k, n_points)."""
        eps = 10 * torch.finfo(Z.dtype).eps
        nk = resp.sum(dim=-1) + eps  # (batch, k)
        weights = nk * enabled / n_active[:, None]  # (batch, k)
        weights = weights / weights.sum(dim=1, keepdim=True)
        ctype = self.covariance_type
        reg = self.reg_covar
        if ctype == "full":
            d = Z.shape[-1]
            means = torch.bmm(resp, Z) / nk[..., None]  # (batch, k, dim)
            diff = Z[:, None, :, :] - means[:, :, None, :]  # (batch, k, n_points, dim)
            diff = diff * resp[..., None].sqrt()
            cov = diff.transpose(-1, -2) @ diff / nk[..., None, None]  # (batch, k, dim, dim)
            eye = torch.eye(d, dtype=Z.dtype, device=Z.device)
            cov = cov + reg * eye
            # Disabled components keep an identity covariance, so Cholesky never sees zeros.
            cov = torch.where(enabled[..., None, None], cov, eye)
            chol, info = torch.linalg.cholesky_ex(cov)  # (batch, k, dim, dim)
            if bool((info != 0).any()):
                raise ValueError(_ILL_DEFINED)
            prec_chol = torch.linalg.solve_triangular(
                chol, eye.expand_as(chol), upper=False
            ).transpose(-1, -2)  # (batch, k, dim, dim)
        else:
            d = Z.shape[-1] // 2
            sums = torch.bmm(resp, Z) / nk[..., None]  # (batch, k, 2 * dim): E[x], E[x²]
            means = sums[..., :d]  # (batch, k, dim)
            # E[x²] - E[x]² (scikit-learn's expansion), accurate because the data are centred.
            var = sums[..., d:] - means * means  # (batch, k, dim)
            if ctype == "spherical":
                var = var.mean(dim=-1)  # (batch, k)
            cov = (var + reg).clamp_min(reg)
            cov = torch.where(enabled[..., None] if ctype == "diag" else enabled, cov, 1.0)
            if bool((cov <= 0).any()):
                raise ValueError(_ILL_DEFINED)
            prec_chol = cov.rsqrt()
        return {"weights": weights, "means": means, "covariances": cov, "prec_chol": prec_chol}

    # -- log-probabilities ----------------------------------------------------------------
    def _log_prob(self, Z: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """log N(x | mean_j, cov_j) for every component and point: (batch, k, n_points)."""
        means, prec_chol = params["means"], params["prec_chol"]
        d = means.shape[-1]
        const = d * math.log(2 * math.pi)
        if self.covariance_type == "full":
            y = Z[:, None] @ prec_chol - (means[:, :, None, :] @ prec_chol)  # (batch, k, n, dim)
            maha = (y * y).sum(dim=-1)  # (batch, k, n_points)
            log_det = prec_chol.diagonal(dim1=-2, dim2=-1).log().sum(dim=-1)  # (batch, k)
            return (-0.5 * (const + maha)).add_(log_det[..., None])
        if self.covariance_type == "spherical":
            prec_chol = prec_chol[..., None].expand_as(means)  # (batch, k, dim)
        prec = prec_chol * prec_chol  # (batch, k, dim)
        # |x - m|²_P = x·(-2 m P) + x²·P + m²·P: one batched product against [x, x²].
        coef = torch.cat([-2 * means * prec, prec], dim=-1)  # (batch, k, 2 * dim)
        base = const + (means * means * prec).sum(dim=-1)  # (batch, k)
        maha = torch.baddbmm(base[..., None], coef, Z.transpose(1, 2))  # (batch, k, n_points)
        log_det = prec_chol.log().sum(dim=-1)  # (batch, k)
        return maha.mul_(-0.5).add_(log_det[..., None])

    def _log_resp(
        self, Z: torch.Tensor, params: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-responsibilities (batch, k, n_points) and log-likelihoods (batch, n_points)."""
        weighted = self._log_prob(Z, params).add_(params["weights"].log()[..., None])
        # log-sum-exp over the components; the enabled ones are finite, so the max is too
        # (and torch.logsumexp's handling of infinite maxima costs more than the sum itself).
        top = weighted.amax(dim=1, keepdim=True)  # (batch, 1, n_points)
        log_norm = (weighted - top).exp_().sum(dim=1).log_().add_(top[:, 0])  # (batch, n_points)
        return weighted.sub_(log_norm[:, None, :]), log_norm

    def _log_resp_fitted(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``_log_resp`` of new points of the fitted items."""
        # The weighted mean of the means is the centre of the fitted data (as in fit); any
        # per-item shift keeps the log-probabilities exact, a central one keeps them accurate.
        shift = (self.weights_[..., None] * self.means_).sum(dim=1)  # (batch, dim)
        params = {
            "weights": self.weights_,
            "means": self.means_ - shift[:, None, :],
            "prec_chol": self.precisions_cholesky_,
        }
        Xc = X.to(self.means_.dtype) - shift[:, None, :]  # (batch, n_points, dim)
        return self._log_resp(self._design(Xc), params)

    # -- prediction -----------------------------------------------------------------------
    def _predict(self, X: torch.Tensor) -> torch.Tensor:
        return self._log_resp_fitted(X)[0].max(dim=1).indices

    def _predict_proba(self, X: torch.Tensor) -> torch.Tensor:
        return self._log_resp_fitted(X)[0].exp().transpose(1, 2)

    def score_samples(self, X: torch.Tensor) -> torch.Tensor:
        """Log-likelihood of every point under its item's mixture.

        Args:
            X: (batch, n_points, dim) points of the fitted items.

        Returns:
            (batch, n_points) log p(x).
        """
        self._check_fitted()
        from .._validation import check_embeddings

        X = check_embeddings(X, "X")
        self._check_batch(X)
        return self._log_resp_fitted(X)[1]

    def score(self, X: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean log-likelihood per item over the points marked by ``mask``.

        Args:
            X: (batch, n_points, dim) points of the fitted items.
            mask: (batch, n_points) bool, the points to average over; None = all.

        Returns:
            (batch,) mean log p(x) (scikit-learn's ``score`` per item).
        """
        from .._validation import check_mask

        log_p = self.score_samples(X)  # (batch, n_points)
        mask = check_mask(mask, log_p.shape, log_p.device)
        w = mask.to(log_p.dtype)
        return (log_p * w).sum(dim=1) / w.sum(dim=1)


_ILL_DEFINED = (
    "Fitting the Gaussian mixture failed because some components have ill-defined empirical "
    "covariance (for instance caused by singleton or collapsed samples). Increase the "
    "'reg_covar' parameter (the variance floor), or decrease 'n_clusters'."
)


def _select(cond: torch.Tensor, a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Per item, the entries of ``a`` where ``cond`` (batch,) holds, else those of ``b``."""
    out = {}
    for key, value in a.items():
        c = cond.reshape(cond.shape + (1,) * (value.ndim - 1))
        out[key] = torch.where(c, value, b[key])
    return out
