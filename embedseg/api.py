"""The public entry points: :func:`fit` trains a model, :func:`load` brings a saved one back."""

from __future__ import annotations

import os
from typing import Any, Mapping

import torch
from torch import nn

from .device import resolve_device
from .domain import Domain, resolve_domain
from .model import Model, build_clusterer, model_class_of, network_config
from .networks import create_network

__all__ = ["fit", "load", "FIT_OPTIONS"]

#: options of :func:`fit` that build the model rather than drive the trainer.
MODEL_OPTIONS = ("network", "network_params", "clusterer", "domain_options")


def _fit_options() -> tuple[str, ...]:
    """Every option :func:`fit` accepts (the module's ``FIT_OPTIONS``)."""
    # Read from the trainer's options on use, so that loading a model never imports the trainer.
    from .training.config import TrainerConfig

    return tuple(sorted(MODEL_OPTIONS + tuple(TrainerConfig.field_names())))


def __getattr__(name: str) -> Any:
    if name == "FIT_OPTIONS":
        return _fit_options()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _check_options(options: Mapping[str, Any]) -> None:
    FIT_OPTIONS = _fit_options()
    unknown = sorted(set(options) - set(FIT_OPTIONS))
    if unknown:
        raise TypeError(
            f"fit() got unknown option(s) {', '.join(repr(u) for u in unknown)}. Valid options: "
            f"{', '.join(FIT_OPTIONS)}."
        )


def build_model(
    domain: str | Domain = "audio",
    *,
    network: str | nn.Module | None = None,
    network_params: Mapping[str, Any] | None = None,
    clusterer: Any = None,
    domain_options: Mapping[str, Any] | None = None,
) -> Model:
    """An untrained :class:`Model`: the domain, its (or the named) network, the clusterer.

    Args:
        domain: a registered domain name or an adapter instance.
        network: a registered network name, an ``nn.Module``, or None for the domain's default.
        network_params: parameters for the network (with a name or the default).
        clusterer: a registered name, ``{"name", "params"}``, an instance, or None for the
            domain's default.
        domain_options: keyword options of the domain (with a domain name only).
    """
    dom = resolve_domain(domain, domain_options)
    if network_params is not None and not isinstance(network_params, Mapping):
        raise TypeError(
            f"The 'network_params' parameter of fit must be a dict. Got {network_params!r} "
            f"({type(network_params).__name__}) instead."
        )
    if isinstance(network, nn.Module):
        if network_params:
            raise ValueError(
                "The 'network_params' parameter of fit can only be given with a network name, "
                "not an nn.Module instance."
            )
        net = network
        try:
            spec: dict[str, Any] | None = network_config(net)
        except ValueError:
            spec = None  # trainable, but saving will explain how to register the class
    elif network is None or isinstance(network, str):
        spec = dom.network_spec(network, **dict(network_params or {}))
        net = create_network(spec["name"], **dict(spec.get("params") or {}))
    else:
        raise TypeError(
            f"The 'network' parameter of fit must be a registered network name, an nn.Module or "
            f"None. Got {network!r} ({type(network).__name__}) instead."
        )
    clus = build_clusterer(clusterer, dom.clusterer_spec())
    config: dict[str, Any] = {}
    if spec is not None:
        config["network"] = spec
    return model_class_of(dom)(net, dom, clus, config)


def fit(dataset: Any, domain: str | Domain = "audio", valid: Any = None, **options: Any) -> Model:
    """Train a deep-clustering model on ``dataset`` and return it.

    Args:
        dataset: a map-style or iterable torch dataset, or a plain list, of domain-native items
            (each domain documents its items).
        domain: a registered domain name (see :func:`embedseg.list_domains`) or an adapter.
        valid: a validation dataset of the same kind, or None.
        **options: the model options ``network`` (a registered name or an ``nn.Module``),
            ``network_params`` (dict), ``clusterer`` (a name, ``{"name", "params"}`` or an
            instance) and ``domain_options`` (dict), plus every field of
            :class:`~embedseg.trainer.TrainerConfig`: ``epochs``, ``max_steps``,
            ``max_minutes``, ``batch_size``, ``lr``, ``optimizer``, ``device`` ("auto": CUDA
            when present), ``precision``, ``seed``, ``loss``, ``patience``, ``monitor``,
            ``out_dir``, ``resume``, ``overwrite``, ``num_workers``, ``progress``,
            ``tensorboard``, ... An ``out_dir`` that already holds a run (checkpoints,
            ``log.csv`` or ``model/``) is refused unless ``resume=True`` continues that run or
            ``overwrite=True`` replaces it.

    Returns:
        The trained :class:`~embedseg.Model` (best weights by validation when ``valid`` is
        given, else the last); with ``out_dir`` it is also saved to ``out_dir/model``, next to
        resume checkpoints, ``log.csv`` and ``curves.png``. With ``out_dir=None`` (the default)
        nothing is written: the best weights are kept in memory and the run cannot be resumed.

    Raises:
        TypeError: an unknown option (the message lists the valid ones) or an option of the
            wrong type.
        ValueError: an option out of range, an unknown domain/network/clusterer name, or an
            ``out_dir`` holding an earlier run without ``resume`` or ``overwrite``.
        TrainingError: training diverged (``max_bad_steps`` steps in a row with a non-finite
            loss, gradient or buffer), or the weights to save hold NaN or infinity.

    Example:
        >>> import embedseg
        >>> model = embedseg.fit(train_items, domain="audio", valid=valid_items,
        ...                      epochs=20, out_dir="runs/speech")  # doctest: +SKIP
        >>> model.evaluate(test_items)                              # doctest: +SKIP
    """
    from .training import Trainer, TrainerConfig

    _check_options(options)
    model_opts = {k: options.pop(k) for k in MODEL_OPTIONS if k in options}
    config = TrainerConfig(**options).validate()
    # Network initialization draws from the global RNG: seed it so `seed` fixes the whole run.
    torch.manual_seed(config.seed)
    model = build_model(domain, **model_opts)
    if config.out_dir is not None:
        model.full_config()  # fail now, not after training, if the model cannot be saved
    return Trainer(model, config).fit(dataset, valid)


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> Model:
    """Load a model saved by :meth:`Model.save` (or a training run's ``out_dir/model``).

    Nothing is unpickled: the folder holds JSON and safetensors only, and a folder with a pickle
    payload in it is refused before anything is read.

    Args:
        path: the model folder (or a training run's ``out_dir``, which holds ``model/``).
        device: where to put the network ("auto": CUDA when available).

    Returns:
        The :class:`~embedseg.Model`, in eval mode.

    Raises:
        ModelFileError: the folder is missing, holds a pickle payload, has a missing or corrupt
            config or weights file, or names a domain/network/clusterer that is not registered.
    """
    from .io import model_folder, read_model_folder

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"'path' must be a str or os.PathLike. Got {type(path).__name__} instead.")
    if isinstance(os.fspath(path), bytes):
        raise TypeError(f"'path' must be a str or os.PathLike of str. Got the bytes path {path!r} instead.")
    if not os.fspath(path):
        raise ValueError("'path' must name a model folder. Got an empty path ('') instead.")
    folder = os.fspath(model_folder(path))
    state_dict, config = read_model_folder(folder)
    return Model.from_config(
        config, state_dict, device=resolve_device(device, "load"), source=f"the model at '{folder}'"
    )
