"""The domain-adapter contract and the domain registry.

A domain owns everything domain-specific: how items are collated, how a batch becomes
features / integer labels / weights on the device, the default network, how cluster
assignments become outputs (waveforms, label maps), and the metrics. The core never imports a
domain; built-ins ("audio", "image") are registered by module path and imported on first use.

Data flow (see the design notes)::

    items -> collate (CPU) -> encode (device) -> network -> loss | clusterer -> decode -> metrics

A minimal domain implements :meth:`Domain.encode`, :meth:`Domain.decode` and
:meth:`Domain.network_spec`; everything else has a default. Inference runs through
:class:`embedseg.inference.InferenceEngine`, which calls the domain's inference hooks
(:meth:`Domain.forward`, :meth:`Domain.cluster_mask`, :meth:`Domain.cluster_counts`,
:meth:`Domain.tiles` / :meth:`Domain.stitch`, :meth:`Domain.decode`, :meth:`Domain.metrics`);
the domain is handed the network's output and the clusterer's labels, never the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Iterator, Mapping, Sequence

import torch
from torch.utils.data import default_collate

from .registry import Registry

__all__ = [
    "EncodedBatch",
    "Domain",
    "DOMAINS",
    "register_domain",
    "list_domains",
    "create_domain",
    "resolve_domain",
]


@dataclass
class EncodedBatch:
    """A batch ready for the network, the loss and the clusterer (all tensors on one device).

    Attributes:
        features: network input; domain-shaped (e.g. (batch, frames, freqs), (batch, C, H, W)).
        mask: (batch, n_points) bool, True for elements that exist (False for padding).
        labels: (batch, n_points) int64 part ids, negative = ignore; None when not annotated.
        weights: (batch, n_points) float >= 0 per-element loss weights; None = uniform.
        context: whatever decode and metrics need (mixture STFT, lengths, sizes, references).
    """

    features: Any
    mask: torch.Tensor
    labels: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return int(self.mask.shape[0])


class Domain:
    """Base class of domain adapters.

    Subclasses take keyword-only options in ``__init__``, store them as given, and list them in
    :meth:`get_config` so a saved model rebuilds the same adapter. Set the class attribute
    ``name`` to the registered name.
    """

    name: ClassVar[str] = ""
    #: the loss the trainer uses by default: "affinity" or "whitened_kmeans".
    default_loss: ClassVar[str] = "affinity"
    #: the validation metric early stopping may watch, and whether larger is better.
    primary_metric: ClassVar[str | None] = None
    primary_metric_higher_is_better: ClassVar[bool] = True
    #: the Model class a trained model of this domain is: a subclass of embedseg.Model with the
    #: domain's named methods (audio's ``separate``, image's ``segment``), or a
    #: ``"module:attribute"`` string naming one; None: :class:`embedseg.Model` itself.
    model_class: ClassVar[Any] = None
    #: whether :meth:`decode` uses soft assignments (the clusterer's ``predict_proba``).
    uses_proba: ClassVar[bool] = False
    #: whether :meth:`decode` reads the labels of points outside :meth:`cluster_mask` (the
    #: clusterer then assigns them too); False gives them label 0 and spares that work.
    labels_every_point: ClassVar[bool] = True

    def get_config(self) -> dict[str, Any]:
        """JSON-serializable keyword options that rebuild this adapter."""
        return {}

    # -- data -----------------------------------------------------------------------------
    def collate(self, items: Sequence[Any]) -> Any:
        """Combine dataset items into one CPU batch (runs in DataLoader workers)."""
        return default_collate(list(items))

    def encode(self, batch: Any, device: torch.device) -> EncodedBatch:
        """Move a collated batch to ``device`` and compute features, labels, weights, mask."""
        raise NotImplementedError(f"{type(self).__name__} must implement encode()")

    def batch_key(self, item: Any) -> Any:
        """Items batched together at inference share this key (default: all do). A domain
        whose network output for an item would change if the item were padded to a batch's
        size (convolutions near the padded edge, a recurrence over padded frames) returns the
        item's size, so that evaluation predicts every item as it would be alone."""
        return None

    def training_data(self, dataset: Any) -> Any:
        """The training set as the trainer iterates it (default: unchanged).

        A domain may wrap it here, e.g. in random augmentations of its items; the validation
        set is never passed through this.
        """
        return dataset

    # -- model ----------------------------------------------------------------------------
    def network_spec(self, name: str | None = None, **params: Any) -> dict[str, Any]:
        """The spec ``{"name": ..., "params": {...}}`` of the network to build.

        ``name=None`` asks for the domain's default network. Parameters the domain fixes (input
        sizes) are filled in here; ``params`` overrides the rest.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement network_spec()")

    def clusterer_spec(self) -> dict[str, Any]:
        """The default clusterer as ``{"name": ..., "params": {...}}``."""
        return {"name": "kmeans", "params": {"n_clusters": 2}}

    def compute_loss(self, output: Any, batch: EncodedBatch, loss: str) -> torch.Tensor:
        """Training loss for one batch; the default is the named embedding loss.

        Domains with extra heads (e.g. mask inference) override this and add their terms.
        """
        from .losses import get_loss
        from .networks import embeddings_of

        fn = get_loss(loss, f"{type(self).__name__}.compute_loss")
        labels = batch.labels
        if labels is None:
            raise ValueError("Training needs labels: the domain's encode() returned labels=None.")
        labels = labels.masked_fill(~batch.mask, -1)
        return fn(embeddings_of(output), labels, batch.weights)

    # -- inference (called by embedseg.inference.InferenceEngine) -------------------------------
    def forward(self, run: Callable[[Any], Any], batch: EncodedBatch) -> Any:
        """The network output that clustering and :meth:`decode` use.

        ``run(features)`` runs the network (eval mode, no gradients). The default is
        ``run(batch.features)``; a domain combines further passes here (test-time views) or
        embeds a long input a chunk at a time.
        """
        return run(batch.features)

    def cluster_mask(self, batch: EncodedBatch, output: Any) -> torch.Tensor:
        """(batch, n_points) bool: the points the clusterer is fitted on (default: ``batch.mask``).
        Every point is still assigned a label."""
        return batch.mask

    def cluster_counts(self, batch: EncodedBatch, mask: torch.Tensor, n_clusters: Any, output: Any = None) -> Any:
        """The number of clusters per item: ``n_clusters`` as the caller gave it (None: the
        clusterer's own), which a domain may adapt to the input (e.g. no more groups than
        points) or to the network's ``output`` (e.g. a head that counts)."""
        return n_clusters

    def tiles(self, batch: EncodedBatch) -> Iterator[EncodedBatch] | None:
        """Encoded tiles to solve one at a time when the batch is too large to embed at once,
        or None (the default) to solve it whole. With tiles, :meth:`stitch` joins their outputs."""
        return None

    def stitch(self, batch: EncodedBatch, solved: Iterable[tuple[EncodedBatch, list[Any]]]) -> list[Any]:
        """One output per item of ``batch`` from its tiles' decoded outputs, given as an
        iterable of ``(tile, outputs)`` in the order :meth:`tiles` gave them."""
        raise NotImplementedError(f"{type(self).__name__} gives tiles() but does not implement stitch().")

    def decode(
        self,
        batch: EncodedBatch,
        labels: torch.Tensor,
        proba: torch.Tensor | None,
        output: Any,
    ) -> list[Any]:
        """Turn cluster assignments into one output per item, in the domain's own terms.

        Args:
            batch: the encoded batch.
            labels: (batch, n_points) int64 cluster ids.
            proba: (batch, n_points, n_clusters) soft assignments, or None.
            output: the network's output from :meth:`forward` (``embedseg.networks.embeddings_of``
                gives its (batch, n_points, dim) embeddings; other heads are the domain's).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement decode()")

    def metrics(self) -> Any:
        """A fresh accumulator of the domain's metrics (an :class:`embedseg.metrics.Metric`
        whose ``update(outputs, batch)`` scores decoded outputs against the batch's truth), or
        None (the default) when the domain has none."""
        return None

    # -- command line -------------------------------------------------------------------------
    def load_dataset(self, path: str, split: str) -> Any:
        """The dataset stored at ``path`` (what ``embedseg fit --train PATH`` and
        ``embedseg evaluate MODEL PATH`` read); the meaning of ``path`` is the domain's own.

        Args:
            path: a file or folder in the domain's data layout.
            split: "train", "valid" or "test" (a domain may augment only the training split).

        Returns:
            A map-style or iterable dataset of domain-native items.

        Raises:
            NotImplementedError: the domain cannot read datasets from paths (the default).
        """
        raise NotImplementedError(
            f"The domain {type(self).__name__} cannot load a dataset from a path; implement "
            f"load_dataset(path, split) to use it from the command line."
        )

    @classmethod
    def add_cli_commands(cls, subparsers: Any) -> None:
        """Add the domain's own subcommands to ``embedseg``'s argument parser (optional).

        Each added parser must set ``func`` (via ``set_defaults``) to a callable taking the
        parsed namespace and returning an exit code.
        """

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({opts})"


#: the domains by name: the built-ins, those registered with :func:`register_domain`, and those
#: installed packages declare in the ``embedseg.domains`` entry-point group (``name =
#: "package.module:DomainClass"``), which get their ``embedseg`` commands too.
DOMAINS: Registry[type[Domain]] = Registry("domain", entry_point_group="embedseg.domains")
DOMAINS.register("audio", "domains.audio:AudioDomain")
DOMAINS.register("image", "domains.image:ImageDomain")


def register_domain(name: str, cls: type[Domain] | None = None, *, override: bool = False):
    """Register a domain adapter class under ``name`` (decorator or call).

    Example:
        >>> from embedseg import Domain, register_domain
        >>> @register_domain("toy-doctest")
        ... class Toy(Domain):
        ...     pass
        >>> "toy-doctest" in list_domains()
        True
    """

    def add(target: type[Domain]) -> type[Domain]:
        if not (isinstance(target, type) and issubclass(target, Domain)):
            raise TypeError(
                f"register_domain() expects a subclass of embedseg.Domain. Got {target!r} instead."
            )
        if not target.name:
            target.name = name
        DOMAINS.register(name, target, override=override)
        return target

    if cls is None:
        return add
    return add(cls)


def list_domains() -> list[str]:
    """Names of the registered domains (built-ins included, without importing them)."""
    return DOMAINS.names()


def _option_names(factory: Any) -> list[str] | None:
    """The keyword options ``factory`` (a domain class) takes; None when it takes any."""
    import inspect

    target = factory.__init__ if isinstance(factory, type) else factory
    if target is object.__init__:  # a class without its own __init__ takes no options
        return []
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return None
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = [p.name for p in params if p.kind in kinds]
    return names[1:] if isinstance(factory, type) and names[:1] == ["self"] else names


def _build_domain(name: str, options: Mapping[str, Any], what: str | None = None) -> Domain:
    """``create_domain``, naming ``what`` (the argument that gave the options) in messages."""
    factory = DOMAINS.get(name)
    valid = _option_names(factory)
    if valid is not None:
        unknown = [k for k in options if k not in valid]
        if unknown:
            label = f"the domain '{name}' ({getattr(factory, '__name__', type(factory).__name__)})"
            names = ", ".join(repr(k) for k in unknown)
            lead = (
                f"{what} has option(s) {names} that {label} does not take."
                if what
                else f"{label[0].upper()}{label[1:]} has no option(s) {names}."
            )
            raise TypeError(
                f"{lead} Valid options: {', '.join(valid) if valid else 'none (it takes no options)'}."
            )
    return factory(**options)


def create_domain(name: str, **options: Any) -> Domain:
    """Build the domain adapter registered as ``name`` with its options.

    Raises:
        ValueError: an unknown name (the message lists the valid ones).
        TypeError: an option the domain does not take (the message lists the ones it takes).
    """
    return _build_domain(name, options)


def resolve_domain(domain: str | Domain, options: Mapping[str, Any] | None = None) -> Domain:
    """A domain adapter from a registered name or an instance, with ``options`` (the
    ``domain_options`` of :func:`embedseg.fit`) for a name."""
    if options is not None and not isinstance(options, Mapping):
        raise TypeError(
            f"The 'domain_options' parameter of fit must be a dict. Got {options!r} "
            f"({type(options).__name__}) instead."
        )
    if isinstance(domain, Domain):
        if options:
            raise ValueError("'domain_options' can only be given with a domain name, not an instance.")
        return domain
    if isinstance(domain, str):
        options = dict(options or {})
        bad_keys = [k for k in options if not isinstance(k, str)]
        if bad_keys:
            raise TypeError(
                f"The 'domain_options' parameter of fit must have option names (str) as keys. "
                f"Got {bad_keys[0]!r} ({type(bad_keys[0]).__name__}) instead."
            )
        return _build_domain(domain, options, "The 'domain_options' parameter of fit")
    raise TypeError(
        f"'domain' must be a registered name (one of {list_domains()}) or an embedseg.Domain "
        f"instance. Got {domain!r} ({type(domain).__name__}) instead."
    )

