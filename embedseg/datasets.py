"""What training and evaluation accept as a dataset, and how an iterable one is shared between
processes."""

from __future__ import annotations

import itertools
import os
from typing import Any, Iterator, Mapping

import torch

__all__ = ["check_dataset", "is_map_style", "Shard"]


def check_dataset(data: Any, name: str) -> None:
    """Raise unless ``data`` is a map-style dataset (``__len__`` and ``__getitem__``, e.g. a
    list) with at least one item, or a torch IterableDataset."""
    expected = (
        f"'{name}' must be a map-style dataset (with __len__ and __getitem__, e.g. a list), or a "
        f"torch IterableDataset, of domain-native items."
    )
    if data is None:
        raise TypeError(f"{expected} Got None instead.")
    if isinstance(data, Mapping):
        raise TypeError(
            f"{expected} Got a {type(data).__name__} instead: a mapping is not a dataset (pass a "
            f"list of items, each item as the domain documents it)."
        )
    if isinstance(data, (str, bytes, os.PathLike)):
        raise TypeError(
            f"{expected} Got the {type(data).__name__} {data!r} instead (to read a dataset from a "
            f"path, use the domain's load_dataset(path, split))."
        )
    if not (is_map_style(data) or isinstance(data, torch.utils.data.IterableDataset)):
        raise TypeError(f"{expected} Got {type(data).__name__} instead.")
    if is_map_style(data) and len(data) == 0:
        raise _empty_dataset(name, data)  # now, not after an epoch of training


def is_map_style(dataset: Any) -> bool:
    """Whether ``dataset`` is indexed (``__len__`` and ``__getitem__``) rather than iterated."""
    return (
        not isinstance(dataset, torch.utils.data.IterableDataset)
        and hasattr(dataset, "__len__")
        and hasattr(dataset, "__getitem__")
    )


def _empty_dataset(name: str, data: Any) -> ValueError:
    """The error for a dataset without items."""
    return ValueError(f"'{name}' must hold at least one item. Got an empty {type(data).__name__} instead.")


class Shard(torch.utils.data.IterableDataset):
    """Every ``world_size``-th item of an iterable dataset, starting at ``rank``."""

    def __init__(self, dataset: Any, rank: int, world_size: int) -> None:
        self.dataset, self.rank, self.world_size = dataset, rank, world_size

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(iter(self.dataset), self.rank, None, self.world_size)
