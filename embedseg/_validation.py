"""Argument checks shared by the whole library.

Every message names the argument, what was expected and what came, in scikit-learn's form:
"The 'n_clusters' parameter of KMeans must be an int in [1, inf). Got 0 instead."
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable, Sequence

import torch

__all__ = [
    "check_int",
    "check_float",
    "check_choice",
    "check_bool",
    "check_tensor",
    "check_embeddings",
    "check_mask",
    "check_active",
    "check_labels",
    "check_weights",
    "shape_str",
]


def shape_str(x: Any) -> str:
    """Describe a value for an error message: a tensor's shape and dtype, else its type."""
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    shape = getattr(x, "shape", None)
    if shape is not None:
        return f"an array of shape {tuple(shape)} and dtype {getattr(x, 'dtype', '?')}"
    return f"{x!r} ({type(x).__name__})"


def _interval(low: float | None, high: float | None, closed: str, allow_inf: bool = False) -> str:
    """The interval in math notation; an open end is closed ("[-inf", "inf]") when infinity
    itself is allowed."""
    left = "[" if closed in ("both", "left") else "("
    right = "]" if closed in ("both", "right") else ")"
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    if low is None:
        left = "[" if allow_inf else "("
    if high is None:
        right = "]" if allow_inf else ")"
    return f"{left}{lo}, {hi}{right}"


def check_int(
    value: Any, name: str, owner: str, low: int | None = None, high: int | None = None
) -> int:
    """Return ``value`` as int if it is an integer within [low, high], else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"The '{name}' parameter of {owner} must be an int in "
            f"{_interval(low, high, 'both')}. Got {value!r} ({type(value).__name__}) instead."
        )
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(
            f"The '{name}' parameter of {owner} must be an int in "
            f"{_interval(low, high, 'both')}. Got {value!r} instead."
        )
    return int(value)


def check_float(
    value: Any,
    name: str,
    owner: str,
    low: float | None = None,
    high: float | None = None,
    closed: str = "both",
    *,
    allow_inf: bool = False,
) -> float:
    """Return ``value`` as float if it is a finite real within the interval, else raise.

    NaN is always rejected, and so are +-inf unless ``allow_inf=True`` (for parameters where
    infinity means "no limit"); the bounds still apply to infinite values then.
    """
    interval = _interval(low, high, closed, allow_inf)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"The '{name}' parameter of {owner} must be a float in "
            f"{interval}. Got {value!r} ({type(value).__name__}) instead."
        )
    try:
        v = float(value)
    except (OverflowError, ValueError):  # an int too large for a float
        raise ValueError(
            f"The '{name}' parameter of {owner} must be a float in {interval}. Got {value!r} instead."
        ) from None
    bad = math.isnan(v) or (math.isinf(v) and not allow_inf)
    if low is not None:
        bad |= v < low if closed in ("both", "left") else v <= low
    if high is not None:
        bad |= v > high if closed in ("both", "right") else v >= high
    if bad:
        raise ValueError(
            f"The '{name}' parameter of {owner} must be a float in {interval}. Got {value!r} instead."
        )
    return v


def check_choice(value: Any, name: str, owner: str, choices: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``, else raise listing them."""
    choices = list(choices)
    if value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ValueError(
            f"The '{name}' parameter of {owner} must be one of {valid}. Got {value!r} instead."
        )
    return value


def check_bool(value: Any, name: str, owner: str) -> bool:
    """Return ``value`` if it is a bool, else raise."""
    if not isinstance(value, bool):
        raise TypeError(
            f"The '{name}' parameter of {owner} must be a bool. Got {value!r} "
            f"({type(value).__name__}) instead."
        )
    return value


def _all_finite(x: torch.Tensor) -> bool:
    """Whether every entry is finite, from one min/max pass (NaN propagates through both)
    rather than a full boolean copy, which is much slower on large CPU tensors."""
    lo, hi = torch.aminmax(x)
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


def check_tensor(
    x: Any,
    name: str,
    *,
    ndim: int | Sequence[int] | None = None,
    floating: bool | None = None,
    integer: bool | None = None,
    finite: bool = False,
    what: str = "",
) -> torch.Tensor:
    """Check that ``x`` is a tensor of the expected rank and kind; return it.

    Args:
        x: the value passed by the user.
        name: the argument's name, used in messages.
        ndim: allowed number(s) of dimensions.
        floating: require a floating-point dtype.
        integer: require an integer dtype (bool excluded).
        finite: reject NaN and infinity.
        what: the expected layout, e.g. "(batch, n_points, dim)", used in messages.
    """
    layout = f" {what}" if what else ""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"'{name}' must be a torch.Tensor{layout}. Got {shape_str(x)} instead.")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            dims = " or ".join(str(d) for d in allowed)
            raise ValueError(
                f"'{name}' must have {dims} dimensions{layout}. Got {shape_str(x)} instead."
            )
    if floating and not x.is_floating_point():
        raise TypeError(f"'{name}' must have a floating-point dtype. Got {shape_str(x)} instead.")
    if integer and (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool):
        raise TypeError(f"'{name}' must have an integer dtype. Got {shape_str(x)} instead.")
    if finite and x.is_floating_point() and x.numel() and not _all_finite(x):
        n_bad = int((~torch.isfinite(x)).sum())
        raise ValueError(
            f"'{name}' must contain only finite values. Got {shape_str(x)} with {n_bad} "
            f"NaN or infinite entries."
        )
    return x


def check_embeddings(x: Any, name: str = "X", finite: bool = True) -> torch.Tensor:
    """Check a non-empty (batch, n_points, dim) floating tensor (of finite values with ``finite``)."""
    x = check_tensor(x, name, ndim=3, floating=True, finite=finite, what="(batch, n_points, dim)")
    if 0 in x.shape:
        raise ValueError(
            f"'{name}' must have at least one point, one dimension and one item "
            f"(batch, n_points, dim). Got {shape_str(x)} instead."
        )
    return x


def check_mask(mask: Any, shape: Sequence[int], device: torch.device, name: str = "mask") -> torch.Tensor:
    """Return a (batch, n_points) bool mask; None means every point is active."""
    shape = tuple(shape)
    if mask is None:
        return torch.ones(shape, dtype=torch.bool, device=device)
    mask = check_tensor(mask, name, ndim=2, what="(batch, n_points)")
    if tuple(mask.shape) != shape:
        raise ValueError(
            f"'{name}' must have shape {shape} (batch, n_points). Got {shape_str(mask)} instead."
        )
    if mask.dtype != torch.bool:
        raise TypeError(f"'{name}' must have dtype torch.bool. Got {shape_str(mask)} instead.")
    return mask.to(device)


def check_active(mask: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """Raise unless every item of a (batch, n_points) bool mask has an active point; return the
    (batch,) counts of active points."""
    n_active = mask.sum(dim=1)  # (batch,)
    if bool((n_active == 0).any()):
        empty = torch.nonzero(n_active == 0).flatten().tolist()
        raise ValueError(f"'{name}' must leave at least one active point per item. Items {empty} have none.")
    return n_active


def check_labels(labels: Any, shape: Sequence[int], name: str = "labels") -> torch.Tensor:
    """Check (batch, n_points) integer labels; negative values mean "ignore"."""
    shape = tuple(shape)
    labels = check_tensor(labels, name, ndim=2, integer=True, what="(batch, n_points)")
    if tuple(labels.shape) != shape:
        raise ValueError(
            f"'{name}' must have shape {shape} (batch, n_points). Got {shape_str(labels)} instead."
        )
    return labels


def check_weights(weights: Any, shape: Sequence[int], name: str = "weights") -> torch.Tensor:
    """Check (batch, n_points) finite non-negative floating weights."""
    shape = tuple(shape)
    weights = check_tensor(weights, name, ndim=2, floating=True, finite=True, what="(batch, n_points)")
    if tuple(weights.shape) != shape:
        raise ValueError(
            f"'{name}' must have shape {shape} (batch, n_points). Got {shape_str(weights)} instead."
        )
    if bool((weights < 0).any()):
        raise ValueError(
            f"'{name}' must be >= 0. Got {shape_str(weights)} with minimum "
            f"{float(weights.min()):g}."
        )
    return weights
