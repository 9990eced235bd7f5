"""embedseg: segmentation by deep clustering across domains.

A network gives every element of an input (a time-frequency bin, a pixel, a point) a unit-norm
embedding, trained with a class-independent affinity loss; clustering the embeddings yields the
partition (Hershey, Chen, Le Roux, Watanabe 2015, arXiv 1508.04306).

Importing embedseg never imports a domain package: "audio" and "image" load on first use.
"""

from __future__ import annotations

from typing import Any

from .cluster import (
    GaussianMixture,
    KMeans,
    SklearnClusterer,
    SpectralClustering,
    create_clusterer,
    list_clusterers,
    register_clusterer,
)
from .domain import Domain, EncodedBatch, create_domain, list_domains, register_domain
from .errors import EmbedsegError, ModelFileError, NotFittedError
from . import metrics
from .losses import affinity_loss, list_losses, register_loss, whitened_kmeans_loss
from .networks import create_network, list_networks, register_network

from ._version import __version__

__all__ = [
    "__version__",
    # training and models
    "fit",
    "load",
    "Model",
    # losses
    "affinity_loss",
    "whitened_kmeans_loss",
    "register_loss",
    "list_losses",
    # clustering
    "KMeans",
    "GaussianMixture",
    "SpectralClustering",
    "SklearnClusterer",
    "create_clusterer",
    "list_clusterers",
    "register_clusterer",
    # domains and networks
    "Domain",
    "EncodedBatch",
    "register_domain",
    "list_domains",
    "create_domain",
    "register_network",
    "create_network",
    "list_networks",
    # metrics (embedseg.metrics: functions and accumulators)
    "metrics",
    # errors
    "EmbedsegError",
    "ModelFileError",
    "NotFittedError",
]

# The trainer and model modules pull in more than the core needs at import time; load on use.
_LAZY = {"fit": "embedseg.api", "load": "embedseg.api", "Model": "embedseg.model"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'embedseg' has no attribute {name!r}")
