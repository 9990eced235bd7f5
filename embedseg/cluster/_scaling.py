"""Per-item centring and scaling of the points before a fit, so that magnitude never matters.

Points of very large or very small magnitude (1e18, 1e-18) overflow or underflow the squared
distances every clusterer computes (float32 holds about 3e38 down to 1e-38), and points far
from the origin compared with their spread lose their distances to rounding in
``||x||² − 2 x·c + ||c||²``. So before a fit each item's active points are scaled to an
ordinary magnitude and, for the methods whose geometry allows it (Euclidean ones), moved next
to the origin; the fit then runs on the transformed points, and the clusterers report their
fitted attributes back in the original coordinates.

The scale is a power of two: multiplying by 2^k is exact in floating point (short of over-
or underflow), so a scaled fit gives the results of the unscaled one bit for bit wherever
the latter was representable, and items of ordinary magnitude are left as they are, with no
copy. Centring is exact only in real arithmetic, and costs a pass over the points, so it is
done only for items that sit far from the origin compared with their spread.
"""

from __future__ import annotations

import math

import torch

__all__ = ["extremes", "fit_transform", "transform"]

# Items whose largest |coordinate| over the active points lies in this range are not scaled:
# their squares, sums of squares and products stay far from float32's limits.
_ORDINARY = (2.0**-20, 2.0**20)
# An item is centred when its mean lies farther from the origin than this many standard
# deviations of its points (the squared distances then start to lose digits to rounding).
_FAR_SQ = 8.0**2
# Active points per item (evenly spaced in rank) that estimate its mean and spread.
_SAMPLE = 64
# Scaled coordinates are clipped to this magnitude: only masked-out points can reach it.
_CLIP = 2.0**40


def extremes(X: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Largest and smallest coordinate over each item's active points, and whether every
    coordinate of X (masked-out points included) is finite.

    Shape:
        X: (batch, n, dim); mask: (batch, n) bool; returns (batch,), (batch,) in X's dtype.
    """
    B = X.shape[0]
    if bool(mask.all()):
        flat = X.reshape(B, -1)
        high, low = flat.amax(1), flat.amin(1)  # NaN propagates
        finite = bool(torch.isfinite(high).all() and torch.isfinite(low).all())
        return high, low, finite
    p_high, p_low = X.amax(-1), X.amin(-1)  # (batch, n)
    finite = bool(torch.isfinite(p_high).all() and torch.isfinite(p_low).all())
    high = p_high.masked_fill(~mask, -math.inf).amax(1)
    low = p_low.masked_fill(~mask, math.inf).amin(1)
    return high, low, finite


def _sample(X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Up to _SAMPLE active points per item, evenly spaced in rank, in float64: (batch, m, dim)."""
    B, n, d = X.shape
    m = min(_SAMPLE, n)
    n_active = mask.sum(1)  # (batch,)
    ranks = torch.arange(m, device=X.device)[None, :] * n_active[:, None] // m  # (batch, m)
    if bool(mask.all()):
        idx = ranks
    else:  # the position of each item's (rank + 1)-th active point
        idx = torch.searchsorted(mask.cumsum(1), ranks + 1).clamp_max_(n - 1)
    return torch.gather(X, 1, idx[..., None].expand(B, m, d)).double()


def fit_transform(
    X: torch.Tensor, mask: torch.Tensor, high: torch.Tensor, low: torch.Tensor, *, centre: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The points to fit on, and the transform that gives them: ``(X - shift) * scale``.

    Args:
        X: (batch, n, dim) points.
        mask: (batch, n) bool, the active points (the only ones that decide the transform).
        high, low: (batch,) from :func:`extremes`.
        centre: whether the method allows moving the points (Euclidean geometry).

    Returns:
        (points, shift, scale): the transformed points (X itself when no item needs a
        transform); shift (batch, dim) float64 or None; scale (batch,) float64 powers of two
        or None.
    """
    high, low = high.double(), low.double()
    shift = None
    if centre:
        S = _sample(X, mask)  # (batch, m, dim)
        mean = S.mean(1)  # (batch, dim)
        spread = (S - mean[:, None, :]).square_().sum(-1).mean(1)  # (batch,)
        far = (mean * mean).sum(-1) > _FAR_SQ * spread  # (batch,)
        if bool(far.any()):
            shift = mean * far[:, None]
            # The centred points' largest magnitude, bounded without another pass.
            high = high - shift.amin(1)
            low = low - shift.amax(1)
    magnitude = torch.maximum(high.abs(), low.abs())  # (batch,)
    odd = (magnitude > 0) & ((magnitude < _ORDINARY[0]) | (magnitude > _ORDINARY[1]))
    scale = None
    if bool(odd.any()):
        # float64 exponents stay within [-1022, 1023]; any item needs far less than that
        e = torch.log2(magnitude.clamp_min(torch.finfo(torch.float64).tiny)).round_()
        e = torch.where(odd, e, 0.0).clamp_(-1000, 1000)
        scale = torch.ldexp(torch.ones_like(e), -e.long())  # (batch,)
    if shift is None and scale is None:
        return X, None, None
    return transform(X, shift, scale), shift, scale


def transform(
    X: torch.Tensor, shift: torch.Tensor | None, scale: torch.Tensor | None
) -> torch.Tensor:
    """``(X - shift) * scale`` per item, in X's dtype (X itself when both are None).

    Shape:
        X: (batch, n, dim); shift: (batch, dim) or None; scale: (batch,) or None.
    """
    if shift is None and scale is None:
        return X
    out = X.double()
    if shift is not None:
        out = out - shift.to(out.device)[:, None, :]
    if scale is not None:
        out = out * scale.to(out.device)[:, None, None]
    clip = min(_CLIP, torch.finfo(X.dtype).max)
    return out.clamp_(-clip, clip).to(X.dtype)
