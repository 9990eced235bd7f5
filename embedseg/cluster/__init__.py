"""Batched clusterers for (batch, n_points, dim) embeddings, and their registry.

Built in: ``"kmeans"`` (:class:`KMeans`), ``"gmm"`` (:class:`GaussianMixture`), ``"spectral"``
(:class:`SpectralClustering`) and ``"sklearn"`` (:class:`SklearnClusterer`, any scikit-learn
clusterer, one item at a time). Every clusterer takes ``n_clusters`` as an int, per-item
counts, or ``"auto"`` (see :func:`estimate_n_clusters`).

Layers (each module imports only from its own layer or those below; no cycles):

1. kernels, torch only: ``_distances`` (distances, gathers, per-item statistics),
   ``_threads`` (one thread for small CPU steps), ``_scaling`` (per-item centring and scaling);
2. ``_seeding``: random draws (subsamples, k-means++ and random starts);
3. ``_lloyd``: batched k-means as a function (Lloyd's iterations, seeded restarts);
4. ``auto``: the number of clusters by the silhouette (:func:`estimate_n_clusters`);
5. ``base``: :class:`BaseClusterer`, which checks parameters and inputs and resolves
   ``n_clusters`` once for every clusterer;
6. the estimators, one per file: ``kmeans``, ``gmm``, ``spectral``, ``sklearn_wrapper``;
7. this module: the registry.

Threads: when OpenMP lets idle threads sleep (``OMP_WAIT_POLICY=passive``), k-means and EM
steps below ~4M (point, center) scores run on one torch thread and restore the count
afterwards, because waking the other threads costs more than the work they would share;
``EMBEDSEG_SMALL_WORK`` sets that threshold (0 turns it off). With OpenMP's default
spin-waiting nothing is limited.

Example:
    >>> from embedseg.cluster import create_clusterer, list_clusterers
    >>> "kmeans" in list_clusterers()
    True
    >>> create_clusterer("kmeans", n_clusters=3, metric="cosine").get_params()["metric"]
    'cosine'
"""

from __future__ import annotations

from typing import Any, Callable

from ..registry import Registry
from .auto import estimate_n_clusters
from .base import BaseClusterer
from .gmm import GaussianMixture
from .kmeans import KMeans
from .sklearn_wrapper import SklearnClusterer
from .spectral import SpectralClustering

__all__ = [
    "BaseClusterer",
    "KMeans",
    "GaussianMixture",
    "SpectralClustering",
    "SklearnClusterer",
    "CLUSTERERS",
    "register_clusterer",
    "create_clusterer",
    "list_clusterers",
    "estimate_n_clusters",
]

CLUSTERERS: Registry[type[BaseClusterer]] = Registry("clusterer")


def register_clusterer(
    name: str, cls: type[BaseClusterer] | None = None, *, override: bool = False
) -> Callable[[type[BaseClusterer]], type[BaseClusterer]] | type[BaseClusterer]:
    """Register a :class:`BaseClusterer` subclass under ``name`` (decorator or call).

    A duplicate name is an error unless ``override=True``; anything but a BaseClusterer
    subclass is a TypeError.

    Example:
        >>> @register_clusterer("my-kmeans")
        ... class MyKMeans(KMeans):
        ...     pass
        >>> create_clusterer("my-kmeans", n_clusters=2).n_clusters
        2
        >>> CLUSTERERS.unregister("my-kmeans")
    """
    def add(target: type[BaseClusterer]) -> type[BaseClusterer]:
        if not (isinstance(target, type) and issubclass(target, BaseClusterer)):
            raise TypeError(
                f"register_clusterer() expects a subclass of embedseg.cluster.BaseClusterer "
                f"(wrap a scikit-learn estimator with SklearnClusterer). Got {target!r} instead."
            )
        return CLUSTERERS.register(name, target, override=override)

    return add if cls is None else add(cls)


def create_clusterer(name: str, **params: Any) -> BaseClusterer:
    """Build the clusterer registered as ``name`` with keyword parameters.

    Raises:
        ValueError: an unknown name (the message lists the valid ones) or parameter.
    """
    cls = CLUSTERERS.get(name)
    valid = cls._param_names()
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(
            f"Invalid parameters {unknown} for clusterer '{name}' ({cls.__name__}). "
            f"Valid parameters: {', '.join(valid)}."
        )
    return cls(**params)


def list_clusterers() -> list[str]:
    """Names of the registered clusterers, sorted."""
    return CLUSTERERS.names()


register_clusterer("kmeans", KMeans)
register_clusterer("gmm", GaussianMixture)
register_clusterer("spectral", SpectralClustering)
register_clusterer("sklearn", SklearnClusterer)
