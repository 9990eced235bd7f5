"""Embedding networks: a registry, the unit-norm head every network ends with, and a generic
per-element MLP for domains whose elements already carry feature vectors.

A network maps a domain's features to embeddings of shape (batch, n_points, dim), each row of
unit norm. It may instead return a mapping with an ``"embeddings"`` entry plus extra heads
(for instance a mask-inference head); :func:`embeddings_of` reads either form.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from ._validation import check_choice, check_int
from .registry import Registry

__all__ = [
    "NETWORKS",
    "register_network",
    "create_network",
    "list_networks",
    "normalize_embeddings",
    "embeddings_of",
    "float_output",
    "EmbeddingHead",
    "PointMLP",
]

NETWORKS: Registry[type[nn.Module]] = Registry("network")


def register_network(name: str, cls: type[nn.Module] | None = None, *, override: bool = False):
    """Register a network class (decorator or call). Its constructor takes keyword parameters
    only, and those parameters are what a saved model's config stores to rebuild it.

    Raises:
        TypeError: ``cls`` is not a subclass of ``torch.nn.Module``.
        ValueError: ``name`` is taken and ``override`` is False.
    """

    def add(target: type[nn.Module]) -> type[nn.Module]:
        if not (isinstance(target, type) and issubclass(target, nn.Module)):
            raise TypeError(
                f"register_network() expects a subclass of torch.nn.Module. Got {target!r} instead."
            )
        return NETWORKS.register(name, target, override=override)

    return add if cls is None else add(cls)


def create_network(name: str, **params: Any) -> nn.Module:
    """Build the network registered as ``name``."""
    return NETWORKS.create(name, **params)


def list_networks() -> list[str]:
    """Names of the registered networks."""
    return NETWORKS.names()


def normalize_embeddings(x: torch.Tensor, eps: float = 1e-8, dim: int = -1) -> torch.Tensor:
    """Scale each embedding (along ``dim``, the last by default) to unit norm, computing the
    norm in float32."""
    v = x.float()
    # A sum of squares, not torch's norm: on CPU the norm kernel is many times slower when the
    # reduced dimension is not the innermost in memory (a channel axis, a transposed view).
    norm = v.square().sum(dim, keepdim=True).sqrt().clamp_min(eps)
    return (v / norm).to(x.dtype)


def embeddings_of(output: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The (batch, n_points, dim) embeddings of a network output (a tensor or a mapping)."""
    if isinstance(output, Mapping):
        if "embeddings" not in output:
            raise ValueError(
                f"A network returning a mapping must include 'embeddings'. Got keys {sorted(output)}."
            )
        return output["embeddings"]
    return output


def float_output(output: Any) -> Any:
    """A network output (a tensor or a mapping of tensors) with its floating tensors in float32:
    mixed-precision passes give half precision, and losses and clustering work in float32."""
    if isinstance(output, torch.Tensor):
        return output.float() if output.is_floating_point() else output
    if isinstance(output, Mapping):
        return {k: float_output(v) for k, v in output.items()}
    return output


class EmbeddingHead(nn.Module):
    """Linear projection to ``dim`` per element, then tanh and unit norm (Hershey et al. 2015).

    Shape:
        input (..., in_features) -> output (..., dim), rows of unit norm.
    """

    def __init__(self, in_features: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_features, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return normalize_embeddings(torch.tanh(self.proj(x)))


@register_network("point_mlp")
class PointMLP(nn.Module):
    """A per-element MLP for features of shape (batch, n_points, in_features).

    It sees each element alone, so it suits domains whose features already hold the context
    (coordinates, local descriptors). Args are keyword-only so a saved config rebuilds it.

    Args:
        in_features: size of each element's feature vector.
        dim: embedding dimension.
        hidden: width of the hidden layers.
        layers: number of hidden layers.
        activation: "gelu" or "relu".
    """

    def __init__(
        self,
        *,
        in_features: int,
        dim: int = 16,
        hidden: int = 64,
        layers: int = 2,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        check_int(in_features, "in_features", "PointMLP", 1)
        check_int(dim, "dim", "PointMLP", 2)
        check_int(hidden, "hidden", "PointMLP", 1)
        check_int(layers, "layers", "PointMLP", 0)
        check_choice(activation, "activation", "PointMLP", ("gelu", "relu"))
        act = nn.GELU if activation == "gelu" else nn.ReLU
        blocks: list[nn.Module] = []
        width = in_features
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), act()]
            width = hidden
        self.body = nn.Sequential(*blocks)
        self.head = EmbeddingHead(width, dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(features))  # (batch, n_points, dim)
