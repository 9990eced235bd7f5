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
from numbers import Integral, Real
from typing import Any

import torch

from .._params import Interval, Options
from .._validation import check_active, check_mask
from ._distances import center_valid, compute_dtype, sq_distances
from ._lloyd import kmeans
from ._seeding import kmeans_plusplus, make_generator, shared_rand
from ._threads import OneThreadForSmallWork
from .base import BaseClusterer, PerItemCounts

__all__ = ["GaussianMixture"]

_COVARIANCE_TYPES = ("diag", "full", "spherical")
_INITS = ("kmeans", "k-means++", "random")
# A variance floor this many times the squared magnitude of an item's points leaves nothing of
# their spread: the fit would be noise, so it is refused with the fix in the message.
_SWAMPED = 2.0**40


class GaussianMixture(BaseClusterer):
    """Gaussian mixture per item, fitted by batched EM (as ``sklearn.mixture.GaussianMixture``).

    Each iteration runs an E-step (log-responsibilities by log-sum-exp) and an M-step
    (weights, means, covariances from the responsibilities of the active points only; masked
    points get zero responsibility). An item has converged when its mean log-likelihood per
    active point changes by less than ``tol``; converged items are frozen while the others go
    on, and the loop stops when every item has converged or after ``max_iter`` iterations. A
    final E-step gives the labels, so ``fit(X).labels_`` equals ``predict(X)``.

    An iteration is one pass over the points in chunks small enough to stay in cache: for the
    diagonal and spherical models a chunk's responsibilities feed the M-step sums at once, so
    each iteration reads X from memory once and needs O(batch·chunk·dim) extra memory, never a
    (batch, n_points, k, dim) tensor; the full model adds a second, likewise chunked, pass for
    the centred covariances (two-pass, as scikit-learn, for accuracy).

    The data of each item are centred on their (masked) mean before fitting, which keeps the
    expanded quadratic forms of the diagonal and spherical paths accurate in float32, and
    items of extreme magnitude (beyond about 1e±6) are scaled by a power of two, so that
    neither overflows; every fitted attribute is reported in the original coordinates.
    Computation runs in float64 for float64 input and in float32 otherwise.

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
        reg_covar: non-negative variance floor added to the diagonal of every covariance, in
            the units of X (as scikit-learn's): scaling X by c calls for ``reg_covar * c**2``
            to fit the same mixture.
        n_init: number of initializations; per item, the one with the best final
            log-likelihood is kept.
        init: how responsibilities start: ``"kmeans"`` (labels of a batched k-means with
            :class:`KMeans`'s restarts, as scikit-learn's default), ``"k-means++"`` (nearest
            k-means++ seed) or ``"random"`` (random responsibilities).
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

    Shape:
        X: (batch, n_points, dim); mask: (batch, n_points) bool; labels (batch, n_points);
        predict_proba (batch, n_points, k); score_samples (batch, n_points); score (batch,).

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

    _parameter_constraints = {
        "n_clusters": [Interval(Integral, 1, None, closed="left"), Options(str, ["auto"]), PerItemCounts()],
        "max_clusters": [Interval(Integral, 1, None, closed="left")],
        "covariance_type": [Options(str, _COVARIANCE_TYPES)],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "reg_covar": [Interval(Real, 0, None, closed="left")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "init": [Options(str, _INITS)],
        "seed": [Interval(Integral, 0, 2**63 - 1, closed="both")],
    }
    # The mixture is fitted on points centred here (on their mean) and scaled by the base class.
    _transform = "scale"

    # -- fitting --------------------------------------------------------------------------
    def _fit(
        self, X: torch.Tensor, mask: torch.Tensor, n_clusters: torch.Tensor, n_slots: int
    ) -> None:
        counts, k = n_clusters, n_slots
        enabled = center_valid(counts, k)  # (batch, k)
        X = X.to(compute_dtype(X))  # half precision is too coarse for EM statistics
        w = mask.to(X.dtype)  # (batch, n_points)
        n_active = w.sum(dim=1)  # (batch,)
        center = torch.bmm(w[:, None, :], X)[:, 0] / n_active[:, None]  # (batch, dim)
        Xc = X - center[:, None, :]  # (batch, n_points, dim)
        # reg_covar is a variance in the caller's units; the points may have been scaled.
        reg = self._to_fit_variance(self.reg_covar, X)  # a float, or (batch,)
        # Masked-out points carry no weight, but padding values large enough to overflow
        # their squares would still turn the weighted sums into NaN: EM sees them as zeros,
        # and they get their labels from their own values at the end.
        hidden = None if bool(mask.all()) else torch.nonzero(~mask, as_tuple=True)
        if hidden is not None:
            padding = Xc[hidden]
            Xc[hidden] = 0.0

        # EM works chunk by chunk (each chunk's data stay in cache), so its steps are small:
        # see OneThreadForSmallWork for when they are better run on one thread. The k-means
        # start sizes its own steps.
        chunk_work = X.shape[0] * k * self._chunk(X.shape[0], k, X.shape[2])
        best: dict[str, torch.Tensor] = {}
        for i in range(self.n_init):
            resp = self._initial_resp(Xc, mask, counts, k, self.seed + i)  # (batch, k, n_points)
            with OneThreadForSmallWork(X.device) as threads:
                threads.engage(chunk_work)
                params = self._m_step(Xc, resp * w[:, None, :], n_active, enabled, reg)
                params = self._em(Xc, w, n_active, enabled, params, reg)
            if not best:
                best = params
            else:
                better = params["lower_bound"] > best["lower_bound"]  # (batch,)
                best = _select(better, params, best)
        if hidden is not None:
            Xc[hidden] = padding
        with OneThreadForSmallWork(X.device) as threads:
            threads.engage(chunk_work)
            # A final E-step on every point, so that labels_ equals predict(X).
            self.labels_ = self._log_resp(Xc, best)[0].max(dim=1).indices  # (batch, n_points)

        means = best["means"] + center[:, None, :]  # in the fit's coordinates
        self._fit_params = {"weights": best["weights"], "means": means, "prec_chol": best["prec_chol"]}
        self.weights_ = best["weights"]
        self.means_ = self._to_input_points(means)
        self.covariances_ = self._to_input_scale(best["covariances"], 2)
        self.precisions_cholesky_ = self._to_input_scale(best["prec_chol"], -1)
        self.converged_ = best["converged"]
        self.n_iter_ = best["n_iter"]
        self.lower_bound_ = best["lower_bound"] + self._log_jacobian(X.dtype)

    def _to_fit_variance(self, variance: float, X: torch.Tensor) -> float | torch.Tensor:
        """A variance of the caller's units in the fit's: itself, or (batch,) per item."""
        if self._scale is None:
            return variance
        reg = float(variance) * self._scale.to(X.device).square()  # float64
        swamped = reg > _SWAMPED
        if bool(swamped.any()):
            b = int(torch.nonzero(swamped)[0])
            raise ValueError(
                f"The 'reg_covar' parameter of {type(self).__name__} ({variance!r}, a variance in "
                f"the units of X) swamps the points of item {b}, whose coordinates are of the order "
                f"of {1.0 / float(self._scale[b]):.1g}. Scale it with the data: reg_covar * c**2 "
                f"for X * c."
            )
        return reg.to(X.dtype)

    def _log_jacobian(self, dtype: torch.dtype) -> torch.Tensor | float:
        """What the fit's log-densities gain in the caller's units: dim·log(scale) per item."""
        if self._scale is None:
            return 0.0
        return (self.n_features_in_ * torch.log(self._scale)).to(dtype)

    def _initial_resp(
        self, Xc: torch.Tensor, mask: torch.Tensor, counts: torch.Tensor, k: int, seed: int
    ) -> torch.Tensor:
        """Initial responsibilities (batch, k, n_points); zero on disabled components."""
        B, n, _ = Xc.shape
        enabled = center_valid(counts, k)  # (batch, k)
        gen = make_generator(seed, Xc.device)
        # Given counts: k is the batch's largest, and each item is started as it would be alone
        # (k-means++ for its own count; random rows component by component, so the first k_b
        # rows of a draw for k are the draw for k_b). "auto" gives every item max_clusters.
        seed_counts = None if isinstance(self.n_clusters, str) else counts
        if self.init == "random":
            resp = shared_rand(gen, B, k, n, device=Xc.device, dtype=Xc.dtype)  # (batch, k, n)
            resp = resp * enabled[:, :, None]
            return resp / resp.sum(dim=1, keepdim=True)
        if self.init == "kmeans":
            # As scikit-learn's default, k-means labels one-hot (its 300 iterations at most).
            # The restarts are KMeans's defaults (3 k-means++ starts on 1,024 points, then
            # Lloyd on all of them): as accurate as a full-data k-means++ run, and cheaper.
            labels = kmeans(
                Xc, mask, counts, k, n_init=3, max_iter=300, tol=1e-4, init_size=1024,
                generator=gen, seed_counts=seed_counts,
            ).labels  # (batch, n_points)
        else:
            centers = kmeans_plusplus(Xc, mask, k, 1, gen, counts=seed_counts)[:, 0]  # (batch, k, dim)
            d2 = sq_distances(Xc, centers)  # (batch, n_points, k)
            labels = d2.masked_fill_(~enabled[:, None, :], float("inf")).min(dim=-1).indices
        slots = torch.arange(k, device=Xc.device)
        return (labels[:, None, :] == slots[None, :, None]).to(Xc.dtype)  # (batch, k, n_points)

    def _em(
        self,
        Xc: torch.Tensor,
        w: torch.Tensor,
        n_active: torch.Tensor,
        enabled: torch.Tensor,
        params: dict[str, torch.Tensor],
        reg: float | torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Run EM from ``params`` until every item converged or ``max_iter``; ``reg`` is the
        variance floor (a float, or (batch,))."""
        B = Xc.shape[0]
        device = Xc.device
        lower_bound = torch.full((B,), -math.inf, dtype=Xc.dtype, device=device)
        converged = torch.zeros(B, dtype=torch.bool, device=device)
        n_iter = torch.zeros(B, dtype=torch.int64, device=device)
        for _ in range(self.max_iter):
            if self.covariance_type == "full":
                log_resp, log_norm = self._log_resp(Xc, params)  # (batch, k, n), (batch, n)
                log_lik = (log_norm * w).sum(dim=1)  # (batch,)
                resp = log_resp.exp_().mul_(w[:, None, :])  # masked points zeroed
                updated = self._m_step(Xc, resp, n_active, enabled, reg)
            else:
                log_lik, nk, moments = self._e_m_pass(Xc, w, params)
                updated = self._from_moments(nk, moments, n_active, enabled, reg)
            new_bound = log_lik / n_active  # (batch,)
            active = ~converged  # (batch,)
            n_iter += active.to(torch.int64)
            newly = active & ((new_bound - lower_bound).abs() < self.tol)
            lower_bound = torch.where(active, new_bound, lower_bound)
            params = _select(active, updated, params)
            converged = converged | newly
            if bool(converged.all()):
                break
        params = dict(params)
        params.update(lower_bound=lower_bound, converged=converged, n_iter=n_iter)
        return params

    # -- M-step ---------------------------------------------------------------------------
    def _m_step(
        self,
        Xc: torch.Tensor,
        resp: torch.Tensor,
        n_active: torch.Tensor,
        enabled: torch.Tensor,
        reg: float | torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Parameters from masked responsibilities ``resp`` (batch, k, n_points)."""
        nk = resp.sum(dim=-1)  # (batch, k)
        if self.covariance_type != "full":
            B, n, d = Xc.shape
            c = self._chunk(B, resp.shape[1], d)
            sums, sq_sums = Xc.new_zeros(2, B, resp.shape[1], d)  # (batch, k, dim) each
            sq = Xc.new_empty(B, min(c, n), d)
            for s in range(0, n, c):
                x = Xc[:, s : s + c]  # (batch, c, dim)
                r = resp[:, :, s : s + c]
                sums.baddbmm_(r, x)
                sq_sums.baddbmm_(r, torch.mul(x, x, out=sq[:, : x.shape[1]]))
            return self._from_moments(nk, torch.cat([sums, sq_sums], -1), n_active, enabled, reg)
        nk = nk + 10 * torch.finfo(Xc.dtype).eps
        means = torch.bmm(resp, Xc) / nk[..., None]  # (batch, k, dim)
        B, n, d = Xc.shape
        k = resp.shape[1]
        # Two passes (means, then centred outer products), as scikit-learn, for accuracy;
        # chunked so that the (batch, k, chunk, dim) deviations stay small.
        cov = Xc.new_zeros(B, k, d, d)
        c = self._chunk(B, k, d)
        for s in range(0, n, c):
            diff = Xc[:, None, s : s + c] - means[:, :, None, :]  # (batch, k, c, dim)
            diff = diff * resp[:, :, s : s + c, None].sqrt()
            cov += diff.transpose(-1, -2) @ diff  # (batch, k, dim, dim)
        cov = cov / nk[..., None, None]
        eye = torch.eye(d, dtype=Xc.dtype, device=Xc.device)
        cov = cov + _per_item(reg, 4) * eye
        # Disabled components keep an identity covariance, so Cholesky never sees zeros.
        cov = torch.where(enabled[..., None, None], cov, eye)
        chol, info = torch.linalg.cholesky_ex(cov)  # (batch, k, dim, dim)
        if bool((info != 0).any()):
            raise ValueError(_ILL_DEFINED)
        prec_chol = torch.linalg.solve_triangular(
            chol, eye.expand_as(chol), upper=False
        ).transpose(-1, -2)  # (batch, k, dim, dim)
        return {"weights": _weights(nk, n_active, enabled), "means": means, "covariances": cov,
                "prec_chol": prec_chol}

    def _from_moments(
        self,
        nk: torch.Tensor,
        moments: torch.Tensor,
        n_active: torch.Tensor,
        enabled: torch.Tensor,
        reg: float | torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Diagonal/spherical parameters from the weighted sums [Σ r x, Σ r x²] (batch, k, 2 dim)."""
        nk = nk + 10 * torch.finfo(moments.dtype).eps  # (batch, k)
        d = moments.shape[-1] // 2
        avg = moments / nk[..., None]  # (batch, k, 2 * dim): E[x], E[x²]
        means = avg[..., :d].contiguous()  # (batch, k, dim)
        # E[x²] - E[x]² (scikit-learn's expansion), accurate because the data are centred.
        var = avg[..., d:] - means * means  # (batch, k, dim)
        if self.covariance_type == "spherical":
            var = var.mean(dim=-1)  # (batch, k)
        reg = _per_item(reg, var.ndim)
        if isinstance(reg, torch.Tensor):
            cov = torch.maximum(var + reg, reg)
        else:
            cov = (var + reg).clamp_min(reg)
        cov = torch.where(enabled[..., None] if var.ndim == 3 else enabled, cov, 1.0)
        if bool((cov <= 0).any()):
            raise ValueError(_ILL_DEFINED)
        return {"weights": _weights(nk, n_active, enabled), "means": means, "covariances": cov,
                "prec_chol": cov.rsqrt()}

    # -- E-step ---------------------------------------------------------------------------
    @staticmethod
    def _chunk(batch: int, k: int, dim: int) -> int:
        """Points per chunk: a chunk's per-point data of all items stay within a few MB, so
        that each pass reads X from memory once and works on it in cache."""
        return max(256, (1 << 20) // max(1, batch * max(2 * dim, k * dim)))

    def _log_prob_terms(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-component constants of log w_j + log N(x | mean_j, cov_j), computed once a pass."""
        means, prec_chol = params["means"], params["prec_chol"]
        d = means.shape[-1]
        const = -0.5 * d * math.log(2 * math.pi)
        log_w = params["weights"].log()  # (batch, k); -inf for disabled components
        if self.covariance_type == "full":
            log_det = prec_chol.diagonal(dim1=-2, dim2=-1).log().sum(dim=-1)  # (batch, k)
            return {"prec_chol": prec_chol, "mean_p": means[:, :, None, :] @ prec_chol,
                    "offset": const + log_det + log_w}
        if self.covariance_type == "spherical":
            prec_chol = prec_chol[..., None].expand_as(means)  # (batch, k, dim)
        prec = prec_chol * prec_chol  # (batch, k, dim)
        # -|x - m|²_P / 2 = x·(m P) + x²·(-P / 2) - m²·P / 2: two products, against x and x²
        # (a product against one [x, x²] buffer costs a strided copy of every chunk).
        offset = const - 0.5 * (means * means * prec).sum(-1) + prec_chol.log().sum(-1) + log_w
        return {"coef_x": means * prec, "coef_x2": -0.5 * prec, "offset": offset}

    def _chunk_log_resp(
        self, x: torch.Tensor, terms: dict[str, torch.Tensor], x2: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-responsibilities (batch, k, c) and log-likelihoods (batch, c) of a chunk x
        (batch, c, dim); for diag/spherical, ``x2`` is ``x * x``."""
        if self.covariance_type == "full":
            y = x[:, None] @ terms["prec_chol"] - terms["mean_p"]  # (batch, k, c, dim)
            weighted = (y * y).sum(dim=-1).mul_(-0.5).add_(terms["offset"][..., None])
        else:
            weighted = torch.baddbmm(terms["offset"][..., None], terms["coef_x"], x.transpose(1, 2))
            weighted.baddbmm_(terms["coef_x2"], x2.transpose(1, 2))  # (batch, k, c)
        # log-sum-exp over the components; the enabled ones are finite, so the max is too
        # (and torch.logsumexp's handling of infinite maxima costs more than the sum itself).
        # Below the smallest normal number exp() returns subnormals, which change no sum but
        # make exp and the products far slower on x86: the sum's terms are floored there
        # (the largest term is 1), and smaller responsibilities become exact zeros.
        log_tiny = math.log(torch.finfo(weighted.dtype).tiny)
        top = weighted.amax(dim=1, keepdim=True)  # (batch, 1, c)
        terms = (weighted - top).clamp_min_(log_tiny).exp_()  # (batch, k, c)
        log_norm = terms.sum(dim=1).log_().add_(top[:, 0])  # (batch, c)
        log_resp = weighted.sub_(log_norm[:, None, :])  # (batch, k, c)
        return log_resp.masked_fill_(log_resp < log_tiny, -math.inf), log_norm

    def _log_resp(
        self, Xc: torch.Tensor, params: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-responsibilities (batch, k, n_points) and log-likelihoods (batch, n_points)."""
        B, n, d = Xc.shape
        k = params["weights"].shape[1]
        terms = self._log_prob_terms(params)
        c = self._chunk(B, k, d)
        log_resp = Xc.new_empty(B, k, n)
        log_norm = Xc.new_empty(B, n)
        # One x² buffer for every chunk: a fresh chunk-sized tensor each time costs more in
        # page faults than the product itself.
        sq = None if self.covariance_type == "full" else Xc.new_empty(B, min(c, n), d)
        for s in range(0, n, c):
            x = Xc[:, s : s + c]  # (batch, c, dim)
            x2 = None if sq is None else torch.mul(x, x, out=sq[:, : x.shape[1]])
            log_resp[:, :, s : s + c], log_norm[:, s : s + c] = self._chunk_log_resp(x, terms, x2)
        return log_resp, log_norm

    def _e_m_pass(
        self, Xc: torch.Tensor, w: torch.Tensor, params: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One fused E- and M-step pass over the points (diag/spherical): the log-likelihood of
        the active points (batch,), and the new responsibilities' sums (batch, k) and weighted
        moments [Σ r x, Σ r x²] (batch, k, 2 dim). Each chunk is read from memory once."""
        B, n, d = Xc.shape
        k = params["weights"].shape[1]
        terms = self._log_prob_terms(params)
        c = self._chunk(B, k, d)
        log_lik = Xc.new_zeros(B)
        nk = Xc.new_zeros(B, k)
        sums, sq_sums = Xc.new_zeros(2, B, k, d)  # Σ r x, Σ r x²: (batch, k, dim) each
        sq = Xc.new_empty(B, min(c, n), d)  # x² of each chunk, one buffer (as in _log_resp)
        for s in range(0, n, c):
            x = Xc[:, s : s + c]  # (batch, c, dim)
            x2 = torch.mul(x, x, out=sq[:, : x.shape[1]])
            log_resp, log_norm = self._chunk_log_resp(x, terms, x2)  # (batch, k, c), (batch, c)
            wc = w[:, s : s + c]  # (batch, c)
            log_lik += (log_norm * wc).sum(dim=1)
            resp = log_resp.exp_().mul_(wc[:, None, :])  # masked points zeroed
            nk += resp.sum(dim=-1)
            sums.baddbmm_(resp, x)
            sq_sums.baddbmm_(resp, x2)
        moments = torch.cat([sums, sq_sums], -1)  # (batch, k, 2 * dim)
        return log_lik, nk, moments

    def _log_resp_fitted(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``_log_resp`` of new points of the fitted items (in the fit's coordinates; the
        log-likelihoods are those of the fit's coordinates too)."""
        # The weighted mean of the means is the centre of the fitted data (as in fit); any
        # per-item shift keeps the log-probabilities exact, a central one keeps them accurate.
        # New points may sit on another device than the fit: results follow X.
        fitted = {key: value.to(X.device) for key, value in self._fit_params.items()}
        weights, means = fitted["weights"], fitted["means"]
        shift = (weights[..., None] * means).sum(dim=1)  # (batch, dim)
        params = {"weights": weights, "means": means - shift[:, None, :], "prec_chol": fitted["prec_chol"]}
        Xc = X.to(means.dtype) - shift[:, None, :]  # (batch, n_points, dim)
        return self._log_resp(Xc, params)

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
        X = self._check_new_points(X)
        with torch.no_grad():
            log_p = self._log_resp_fitted(self._to_fit_space(X))[1]
        jacobian = self._log_jacobian(log_p.dtype)
        return log_p if isinstance(jacobian, float) else log_p + jacobian.to(log_p.device)[:, None]

    def score(self, X: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean log-likelihood per item over the points marked by ``mask``.

        Args:
            X: (batch, n_points, dim) points of the fitted items.
            mask: (batch, n_points) bool, the points to average over; None = all.

        Returns:
            (batch,) mean log p(x) (scikit-learn's ``score`` per item).

        Raises:
            ValueError: ``mask`` leaves an item without any point to average over.
        """
        log_p = self.score_samples(X)  # (batch, n_points)
        mask = check_mask(mask, log_p.shape, log_p.device)
        check_active(mask)
        w = mask.to(log_p.dtype)
        return (log_p * w).sum(dim=1) / w.sum(dim=1)


_ILL_DEFINED = (
    "Fitting the Gaussian mixture failed because some components have ill-defined empirical "
    "covariance (for instance caused by singleton or collapsed samples). Increase the "
    "'reg_covar' parameter (the variance floor), or decrease 'n_clusters'."
)


def _per_item(value: float | torch.Tensor, ndim: int) -> float | torch.Tensor:
    """A float as it is; a (batch,) tensor shaped to broadcast against (batch, ...) of ``ndim``."""
    return value if not isinstance(value, torch.Tensor) else value.view(-1, *[1] * (ndim - 1))


def _weights(nk: torch.Tensor, n_active: torch.Tensor, enabled: torch.Tensor) -> torch.Tensor:
    """Mixing weights (batch, k) from responsibility sums; zero for disabled components."""
    weights = nk * enabled / n_active[:, None]
    return weights / weights.sum(dim=1, keepdim=True)


def _select(cond: torch.Tensor, a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Per item, the entries of ``a`` where ``cond`` (batch,) holds, else those of ``b``."""
    out = {}
    for key, value in a.items():
        c = cond.reshape(cond.shape + (1,) * (value.ndim - 1))
        out[key] = torch.where(c, value, b[key])
    return out
