"""Label maps as the metrics read them: non-negative integer ids, 0 the background."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from embedseg._validation import shape_str


def as_label_map(x: Any, name: str) -> np.ndarray:
    """A non-negative integer label map (any shape, tensor or array) as an int64 numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.dtype == bool or not np.issubdtype(x.dtype, np.integer):
        if np.issubdtype(x.dtype, np.floating) and x.size and np.all(np.mod(x, 1) == 0):
            x = x.astype(np.int64)
        else:
            raise TypeError(f"'{name}' must be an integer label map. Got an array of dtype {x.dtype} instead.")
    if x.size and x.min() < 0:
        raise ValueError(f"'{name}' must hold ids >= 0 (0 = background). Got minimum {int(x.min())}.")
    return x.astype(np.int64, copy=False)


def relabel(x: np.ndarray) -> tuple[np.ndarray, int]:
    """Map ids to 0..n keeping 0 as background; returns the map and n (number of instances)."""
    ids, inverse = np.unique(x, return_inverse=True)
    if ids.size and ids[0] != 0:
        inverse = inverse + 1
        n = ids.size
    else:
        n = ids.size - 1
    return inverse.reshape(x.shape), max(n, 0)


def items_of(x: Any, name: str) -> list[Any]:
    """The items of a per-item sequence: a list or tuple, or an array or tensor indexed by its
    first dimension."""
    if isinstance(x, (list, tuple)):
        return list(x)
    if isinstance(x, (torch.Tensor, np.ndarray)) and x.ndim >= 1:
        return list(x)
    raise TypeError(
        f"'{name}' must be a sequence of items (a list, or an array or tensor whose first dimension "
        f"indexes the items). Got {shape_str(x)} instead."
    )


def same_length(**sequences: list[Any]) -> int:
    lengths = {name: len(s) for name, s in sequences.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name}: {n}" for name, n in lengths.items())
        raise ValueError(f"{', '.join(repr(n) for n in lengths)} must hold as many items each. Got {listed}.")
    return next(iter(lengths.values()))
