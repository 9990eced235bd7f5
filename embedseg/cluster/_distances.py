"""Batched kernels on points and centers: distances, gathers, per-item statistics.

Everything works on a whole batch at once, with no Python loop over items. Per-item (or
per-group) cluster counts are expressed with a ``valid`` mask over the k_max center slots
(:func:`center_valid`): a disabled center is at distance +inf from every point, so it never
wins a point, never moves and never counts.
"""

from __future__ import annotations

import torch

__all__ = [
    "compute_dtype",
    "sq_distances",
    "gather_points",
    "center_valid",
    "masked_mean_variance",
    "normalize_rows",
]


def compute_dtype(X: torch.Tensor) -> torch.dtype:
    """float64 stays float64; every other floating dtype is computed (and accumulated) in float32."""
    return torch.float64 if X.dtype == torch.float64 else torch.float32


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
    # index_select on the flattened points: gather does not vectorize this on CPU
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


def normalize_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit norm (zero rows stay zero)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
