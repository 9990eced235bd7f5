"""A trained deep-clustering model: network + domain adapter + clusterer + config.

:class:`Model` is what :func:`embedseg.fit` returns and :func:`embedseg.load` brings back. It
runs the inference half of the data flow through :class:`embedseg.inference.InferenceEngine`::

    items -> domain.collate -> domain.encode -> network -> clusterer -> domain.decode

Each domain's trained models are instances of the domain's own subclass (its ``model_class``),
which adds the domain's named methods: :class:`domains.audio.AudioModel` has ``separate``,
:class:`domains.image.ImageModel` has ``segment``. They are ordinary methods: ``help()`` and
completion show them.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .domain import DOMAINS, Domain, EncodedBatch
from .errors import ModelFileError
from .inference import InferenceEngine, cluster_embeddings
from .networks import NETWORKS

__all__ = [
    "Model",
    "model_class_of",
    "network_config",
    "clusterer_config",
    "domain_config",
    "build_clusterer",
    "validate_clusterer",
]


def _version() -> str:
    from ._version import __version__

    return __version__


def domain_config(domain: Domain) -> dict[str, Any]:
    """``{"name", "options"}`` of a domain adapter; raises if its class is not registered."""
    name = DOMAINS.name_of(type(domain)) or (type(domain).name or None)
    if name is None or name not in DOMAINS or DOMAINS.get(name) is not type(domain):
        raise ValueError(
            f"The domain {type(domain).__name__} is not registered, so a saved model could not "
            f"rebuild it. Register it with @embedseg.register_domain('name') before saving."
        )
    return {"name": name, "options": domain.get_config()}


def network_config(network: nn.Module, spec: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``{"name", "params"}`` that rebuild ``network`` through the network registry.

    ``spec`` (what the network was built from) is used when given. Otherwise the network's class
    must be registered and its keyword-only constructor parameters readable, either from a
    ``get_config()`` method or from attributes of the same names.

    Raises:
        ValueError: the network cannot be described as data (not registered, or its
            parameters are not known).
    """
    if spec is not None and spec.get("name") is not None:
        return {"name": str(spec["name"]), "params": dict(spec.get("params") or {})}
    cls = type(network)
    name = NETWORKS.name_of(cls)
    if name is None:
        raise ValueError(
            f"The network {cls.__name__} is not in the network registry, so a saved model "
            f"could not rebuild it. Register its class with @embedseg.register_network('name') "
            f"(its constructor taking keyword-only parameters) and pass network='name' with "
            f"network_params={{...}}."
        )
    if hasattr(network, "get_config"):
        return {"name": name, "params": dict(network.get_config())}
    import inspect

    sig = inspect.signature(cls.__init__)
    names = [p.name for p in sig.parameters.values() if p.kind == p.KEYWORD_ONLY]
    missing = [n for n in names if not hasattr(network, n)]
    if missing:
        raise ValueError(
            f"The parameters {missing} of the network '{name}' are not stored on the instance, so "
            f"a saved model could not rebuild it. Pass network='{name}' with network_params={{...}} "
            f"instead of an instance, or give the class a get_config() method."
        )
    return {"name": name, "params": {n: getattr(network, n) for n in names}}


def clusterer_config(clusterer: Any) -> dict[str, Any]:
    """``{"name", "params"}`` that rebuild ``clusterer`` through the clusterer registry."""
    from .cluster import CLUSTERERS
    from .io import to_jsonable

    name = CLUSTERERS.name_of(type(clusterer))
    if name is None:
        raise ValueError(
            f"The clusterer {type(clusterer).__name__} is not registered, so a saved model could "
            f"not rebuild it. Register it with @embedseg.register_clusterer('name')."
        )
    params = clusterer.get_params()
    try:
        params = to_jsonable(params, f"the parameters of clusterer '{name}'")
    except ValueError as exc:
        raise ValueError(
            f"{exc} A saved model stores its clusterer as data; use a built-in clusterer or one "
            f"whose parameters are JSON data."
        ) from None
    return {"name": name, "params": params}


def validate_clusterer(clusterer: Any) -> Any:
    """Check a clusterer's parameters now (its ``_validate_params()``), not when it first
    clusters; returns it. A clusterer class without the check is taken as it is."""
    check = getattr(clusterer, "_validate_params", None)  # user clusterers may not have one
    if callable(check):
        try:
            check()
        except NotImplementedError:  # a user clusterer that checks its parameters elsewhere
            pass
    return clusterer


def build_clusterer(spec: Any, default: Mapping[str, Any] | None = None) -> Any:
    """A clusterer from a name, a ``{"name", "params"}`` mapping, or an instance.

    A bare name takes ``n_clusters`` from ``default`` (the domain's clusterer spec), since the
    domain knows how many parts its inputs usually have. The parameters are checked here.

    Raises:
        ValueError, TypeError: an unknown name or parameter, or a parameter out of range (the
            message names it).
    """
    from .cluster import create_clusterer
    from .cluster.base import BaseClusterer

    def create(name: str, params: Any) -> Any:
        if params is not None and not isinstance(params, Mapping):
            raise TypeError(
                f"The 'params' of a 'clusterer' mapping must be a dict. Got {params!r} "
                f"({type(params).__name__}) instead."
            )
        return validate_clusterer(create_clusterer(name, **dict(params or {})))

    if isinstance(spec, BaseClusterer):
        return validate_clusterer(spec)
    default = dict(default or {})
    if spec is None:
        return create(default["name"], default.get("params"))
    if isinstance(spec, str):
        params = {}
        n = (default.get("params") or {}).get("n_clusters")
        if n is not None:
            params["n_clusters"] = n
        return create(spec, params)
    if isinstance(spec, Mapping):
        if not isinstance(spec.get("name"), str):
            raise ValueError(
                f"A 'clusterer' mapping must have a 'name' (a registered clusterer) and optional "
                f"'params'. Got {dict(spec)!r} instead."
            )
        extra = set(spec) - {"name", "params"}
        if extra:
            raise ValueError(
                f"A 'clusterer' mapping has only 'name' and 'params' keys. Got also {sorted(extra)}."
            )
        return create(spec["name"], spec.get("params"))
    raise TypeError(
        f"'clusterer' must be a registered name, a {{'name', 'params'}} mapping or a clusterer "
        f"instance. Got {spec!r} ({type(spec).__name__}) instead."
    )


def model_class_of(domain: Domain) -> type["Model"]:
    """The :class:`Model` subclass that a model of ``domain`` is (its ``model_class``)."""
    target = type(domain).model_class
    if target is None:
        return Model
    if isinstance(target, str):
        module_name, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(target, type) and issubclass(target, Model)):
        raise TypeError(
            f"The 'model_class' of the domain {type(domain).__name__} must be a subclass of "
            f"embedseg.Model. Got {target!r} instead."
        )
    return target


class Model:
    """A network, the domain adapter it serves, a clusterer and the config that rebuilds them.

    Args:
        network: maps ``EncodedBatch.features`` to (batch, n_points, dim) unit-norm embeddings,
            or to a mapping with an ``"embeddings"`` entry plus extra heads.
        domain: the domain adapter.
        clusterer: the prototype clusterer; prediction clones it and never changes it.
        config: ``{"domain", "network", "clusterer", "training"}`` entries (see
            :mod:`embedseg.io`); missing entries are derived from the objects on save.

    Example:
        >>> import embedseg
        >>> model = embedseg.load("runs/speech/model")  # doctest: +SKIP
        >>> model.predict(mixture)                       # doctest: +SKIP
    """

    def __init__(
        self,
        network: nn.Module,
        domain: Domain,
        clusterer: Any,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(network, nn.Module):
            raise TypeError(f"'network' must be a torch.nn.Module. Got {type(network).__name__} instead.")
        if not isinstance(domain, Domain):
            raise TypeError(f"'domain' must be an embedseg.Domain. Got {type(domain).__name__} instead.")
        from .cluster.base import BaseClusterer

        if not isinstance(clusterer, BaseClusterer):
            raise TypeError(
                f"'clusterer' must be an embedseg clusterer (a BaseClusterer). Got "
                f"{type(clusterer).__name__} instead."
            )
        validate_clusterer(clusterer)  # bad parameters fail here, not at the first prediction
        self.network = network
        self.domain = domain
        self.clusterer = clusterer
        self.config: dict[str, Any] = dict(config or {})

    def __repr__(self) -> str:
        n_params = sum(p.numel() for p in self.network.parameters())
        net = self.config.get("network", {}).get("name", type(self.network).__name__)
        return (
            f"{type(self).__name__}(domain={self.domain!r}, network={net!r} ({n_params:,} parameters), "
            f"clusterer={self.clusterer!r})"
        )

    # -- device ---------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """The device of the network's parameters (CPU for a network without parameters)."""
        return self.engine().device

    def to(self, device: str | torch.device) -> "Model":
        """Move the network to ``device``; returns self."""
        self.network.to(device)
        return self

    # -- inference ------------------------------------------------------------------------------
    def engine(self) -> InferenceEngine:
        """The inference engine of this model (network, domain and clusterer as they are now)."""
        return InferenceEngine(self.network, self.domain, self.clusterer)

    def embed(self, batch: EncodedBatch) -> Any:
        """The network's output for an encoded batch (the domain's forward: its test-time views
        included), in eval mode and without gradients; the network's mode is restored."""
        engine = self.engine()
        return self.domain.forward(engine.run, batch)

    def cluster(
        self,
        embeddings: torch.Tensor,
        mask: torch.Tensor | None,
        n_clusters: int | str | Sequence[int] | torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Cluster embeddings with a fresh copy of the clusterer, as inference does.

        Args:
            embeddings: (batch, n_points, dim) embeddings.
            mask: (batch, n_points) bool, True for the points to fit on; None = all.
            n_clusters: overrides the clusterer's ``n_clusters``: an int, per-item counts
                ((batch,) ints, e.g. the true number of parts for an oracle evaluation), or
                ``"auto"``.

        Returns:
            ``(labels, proba)``: (batch, n_points) int64 labels, and (batch, n_points, k) soft
            assignments where the clusterer has them, else None.
        """
        X = embeddings.detach()
        if mask is None:
            mask = torch.ones(X.shape[:2], dtype=torch.bool, device=X.device)
        return cluster_embeddings(self.clusterer, X, mask, n_clusters)

    def predict_items(
        self, items: Sequence[Any], n_clusters: int | str | None = None, batch_size: int | None = None
    ) -> list[Any]:
        """Decoded outputs for dataset-style items (collate -> encode -> embed -> cluster -> decode).

        Args:
            items: domain-native items, as a dataset yields them.
            n_clusters: overrides the clusterer's number of clusters (an int, or ``"auto"``).
            batch_size: items per batch (None: all in one).

        Returns:
            One output per item, in the domain's own terms.
        """
        return self.engine().predict_items(items, n_clusters, batch_size)

    def predict(self, x: Any, **options: Any) -> Any:
        """The output for one input item (domain subclasses take raw inputs and options:
        :meth:`domains.audio.AudioModel.separate`, :meth:`domains.image.ImageModel.segment`)."""
        if options:
            raise TypeError(f"{type(self).__name__}.predict() got unexpected options {sorted(options)}")
        return self.predict_items([x])[0]

    def evaluate(
        self,
        dataset: Any,
        batch_size: int = 8,
        n_clusters: int | str | None = None,
        num_workers: int = 0,
    ) -> dict[str, float]:
        """The domain's metrics of this model's predictions on ``dataset``.

        The predictions are exactly what the domain's named methods return for the same inputs
        (one inference path), and each metric pools over the dataset as its accumulator says.

        Args:
            dataset: a map-style or iterable dataset, or a list, of annotated domain-native items.
            batch_size: items per batch.
            n_clusters: overrides the clusterer's number of clusters.
            num_workers: DataLoader worker processes.

        Returns:
            ``{metric name: value}``.

        Raises:
            ValueError: an empty or unannotated dataset, or a domain without metrics.
        """
        from .datasets import check_dataset

        check_dataset(dataset, "dataset")
        return self.engine().evaluate(dataset, batch_size, n_clusters, num_workers)

    # -- files ----------------------------------------------------------------------------------
    def full_config(self) -> dict[str, Any]:
        """The complete JSON config a saved model holds (derived entries filled in)."""
        from .io import MODEL_FORMAT, MODEL_FORMAT_VERSION

        config = {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "embedseg_version": _version(),
            "domain": domain_config(self.domain),
            "network": network_config(self.network, self.config.get("network")),
            "clusterer": clusterer_config(self.clusterer),
            "training": dict(self.config.get("training") or {}),
        }
        return config

    def save(self, path: str | os.PathLike) -> str:
        """Save as a folder of safetensors weights and a JSON config; returns the path.

        An existing model folder at ``path`` is replaced atomically.

        Raises:
            ValueError: the network, domain or clusterer cannot be described as data (e.g. an
                unregistered network class: register it with ``embedseg.register_network``).
        """
        from .io import write_model_folder

        config = self.full_config()
        state = {k: v for k, v in self.network.state_dict().items()}
        write_model_folder(path, state, config)
        return os.fspath(path)

    @classmethod
    def from_config(
        cls,
        config: Mapping[str, Any],
        state_dict: Mapping[str, torch.Tensor] | None = None,
        device: str | torch.device = "cpu",
        source: str = "the model config",
    ) -> "Model":
        """Rebuild a model from its JSON config (and weights); names resolve via the registries.

        Raises:
            ModelFileError: a name is not registered (the message lists the valid ones), the
                parameters do not fit, or the weights do not match the network.
        """
        from .cluster import create_clusterer
        from .domain import create_domain
        from .io import CONFIG_FILE
        from .networks import create_network

        def build(kind: str, make, name: str, params: Mapping[str, Any]):
            try:
                return make(name, **dict(params))
            except (ValueError, TypeError) as exc:
                raise ModelFileError(
                    f"Cannot rebuild the {kind} of {source} from the '{kind}' entry of its "
                    f"{CONFIG_FILE}: {exc}"
                ) from None

        def make_clusterer(name: str, **params: Any) -> Any:
            return validate_clusterer(create_clusterer(name, **params))

        saved_options = config["domain"].get("options") or {}
        domain = build("domain", create_domain, config["domain"]["name"], saved_options)
        network = build("network", create_network, config["network"]["name"], config["network"].get("params") or {})
        clusterer = build(
            "clusterer", make_clusterer, config["clusterer"]["name"], config["clusterer"].get("params") or {}
        )
        if state_dict is not None:
            try:
                network.load_state_dict(dict(state_dict), strict=True)
            except RuntimeError as exc:
                first = str(exc).strip().splitlines()
                raise ModelFileError(
                    f"The weights of {source} do not match the network "
                    f"'{config['network']['name']}': {' '.join(line.strip() for line in first[:4])}"
                ) from None
        network.to(device)
        network.eval()
        kept = {k: config[k] for k in ("domain", "network", "clusterer", "training") if k in config}
        target = model_class_of(domain) if cls is Model else cls
        return target(network, domain, clusterer, kept)
