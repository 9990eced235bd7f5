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
from typing import NamedTuple

import torch

__all__ = ["Extent", "extent", "fit_transform", "transform"]

# Items whose largest |coordinate| over the active points lies in this range are not scaled:
# their squares, sums of squares and products stay far from float32's limits.
_ORDINARY = (2.0**-20, 2.0**20)
# An item is centred when its mean lies farther from the origin than this many standard
# deviations of its points (the squared distances then start to lose digits to rounding).
_FAR_SQ = 8.0**2
# Active points per item (evenly spaced in rank) that estimate its mean, spread and magnitude.
_SAMPLE = 64
# Scaled coordinates are clipped to this magnitude: only masked-out points can reach it.
_CLIP = 2.0**40


class Extent(NamedTuple):
    """Where each item's active points lie, as far as the transform needs to know.

    Shape:
        high, low: (batch,) bounds on the largest and smallest coordinate of the active
        points (exact when an item may need scaling); sample: (batch, m, dim) float64, a few
        active points per item; finite: whether every coordinate of X is finite (masked-out
        points included); ordinary: whether every item is known to need no scaling.
    """

    high: torch.Tensor
    low: torch.Tensor
    sample: torch.Tensor
    finite: bool
    ordinary: bool


def _ordinary(magnitude: torch.Tensor) -> torch.Tensor:
    return (magnitude >= _ORDINARY[0]) & (magnitude <= _ORDINARY[1])


def extent(X: torch.Tensor, mask: torch.Tensor) -> Extent:
    """The :class:`Extent` of each item's active points.

    One pass over X finds its global extremes (and so whether it is finite); with a sample of
    each item's active points they show in most batches that no item needs scaling, and only
    otherwise are the exact per-item extremes over the active points computed.

    Shape:
        X: (batch, n, dim); mask: (batch, n) bool.
    """
    B = X.shape[0]
    lo, hi = torch.aminmax(X)  # NaN propagates
    finite = bool(torch.isfinite(lo) & torch.isfinite(hi))
    full = bool(mask.all())
    sample = _sample(X, mask, full)  # (batch, m, dim)
    if not finite:
        return Extent(hi.expand(B), lo.expand(B), sample, False, False)
    # Every item's magnitude lies between its sample's and X's: both ordinary, so is it.
    largest = max(abs(float(lo)), abs(float(hi)))
    if _ORDINARY[0] <= largest <= _ORDINARY[1] and bool(_ordinary(sample.abs().amax((1, 2))).all()):
        return Extent(hi.expand(B), lo.expand(B), sample, True, True)
    if full:
        flat = X.reshape(B, -1)
        return Extent(flat.amax(1), flat.amin(1), sample, True, False)
    high = X.amax(-1).masked_fill_(~mask, -math.inf).amax(1)
    low = X.amin(-1).masked_fill_(~mask, math.inf).amin(1)
    return Extent(high, low, sample, True, False)


def _sample(X: torch.Tensor, mask: torch.Tensor, full: bool) -> torch.Tensor:
    """Up to _SAMPLE active points per item, evenly spaced in rank, in float64: (batch, m, dim);
    ``full``: every point is active."""
    B, n, d = X.shape
    m = min(_SAMPLE, n)
    n_active = mask.sum(1)  # (batch,)
    ranks = torch.arange(m, device=X.device)[None, :] * n_active[:, None] // m  # (batch, m)
    if full:
        idx = ranks
    else:  # the position of each item's (rank + 1)-th active point
        idx = torch.searchsorted(mask.cumsum(1), ranks + 1).clamp_max_(n - 1)
    return torch.gather(X, 1, idx[..., None].expand(B, m, d)).double()


def fit_transform(
    X: torch.Tensor, extent: Extent, *, centre: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The points to fit on, and the transform that gives them: ``(X - shift) * scale``.

    Args:
        X: (batch, n, dim) points.
        extent: :func:`extent` of X's active points (the only ones that decide the transform).
        centre: whether the method allows moving the points (Euclidean geometry).

    Returns:
        (points, shift, scale): the transformed points (X itself when no item needs a
        transform); shift (batch, dim) float64 or None; scale (batch,) float64 powers of two
        or None.
    """
    if extent.ordinary and not centre:
        return X, None, None
    high, low = extent.high.double(), extent.low.double()
    shift = None
    if centre:
        S = extent.sample  # (batch, m, dim)
        mean = S.mean(1)  # (batch, dim)
        spread = (S - mean[:, None, :]).square_().sum(-1).mean(1)  # (batch,)
        far = (mean * mean).sum(-1) > _FAR_SQ * spread  # (batch,)
        if bool(far.any()):
            shift = mean * far[:, None]
            # The centred points' largest magnitude, bounded without another pass.
            high = high - shift.amin(1)
            low = low - shift.amax(1)
    magnitude = torch.maximum(high.abs(), low.abs())  # (batch,)
    odd = (magnitude > 0) & ~_ordinary(magnitude)
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
