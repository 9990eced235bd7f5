"""The one inference path: encode -> forward -> cluster -> decode (-> metrics).

Every way of using a trained network goes through :class:`InferenceEngine`: ``Model.predict``,
``Model.evaluate``, the trainer's validation and the domains' named methods (``separate``,
``segment``). So what a user measures is what a user gets.

The domain supplies the domain-specific strategies and never sees the model:

* :meth:`Domain.forward(run, batch) <embedseg.Domain.forward>`: the network output for a batch,
  given ``run`` (the network in eval mode, without gradients). Test-time views (mirrored
  images) and chunking of long inputs (a long recording, embedded a chunk at a time) live here.
* :meth:`Domain.tiles(batch) <embedseg.Domain.tiles>` and :meth:`Domain.stitch`: an input too
  large to embed at once (a whole-slide image) is solved tile by tile and the tiles' outputs are
  stitched; memory is bounded by a tile, not by the input.
* :meth:`Domain.cluster_mask` and :meth:`Domain.cluster_counts`: which points the clusterer fits
  on (e.g. an image's foreground) and how many clusters each item gets.
* :meth:`Domain.decode` turns labels into outputs; :meth:`Domain.metrics` gives the accumulator
  that scores them.

Clustering sees the whole (tile of the) input: the clusterer is fitted on at most
``fit_points`` points per item (a fixed random sample beyond that) and every point is then
assigned, ``assign_points`` at a time, so memory does not grow with the input.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Iterable, Iterator, Sequence

import torch
from torch import nn

from ._validation import check_int
from .networks import embeddings_of, float_output

if TYPE_CHECKING:  # pragma: no cover
    from .domain import Domain, EncodedBatch

__all__ = [
    "InferenceEngine",
    "Runner",
    "cluster_embeddings",
    "as_float_embeddings",
    "FIT_POINTS",
    "ASSIGN_POINTS",
    "INT8_SCALE",
]

#: most points per item a clusterer is fitted on; larger inputs are fitted on a fixed sample.
FIT_POINTS = 40_000
#: points per item assigned at a time after such a fit (bounds the memory of distances).
ASSIGN_POINTS = 65_536


def _identity(item: Any) -> Any:
    """The DataLoader's collate for one item at a time (a module-level function: picklable)."""
    return item


class Runner:
    """The network as a function of features: eval mode, no gradients, float32 outputs.

    ``autocast`` (a context-manager factory) runs the network in mixed precision, as the
    trainer's validation does on accelerators. ``remember(features, output)`` keeps one output
    that a later call on the very same features object returns without running again (the
    validation loss and the inference views share the plain pass this way).
    """

    def __init__(self, network: nn.Module, autocast: Callable[[], ContextManager[Any]] | None = None) -> None:
        self.network = network
        self.autocast = autocast or contextlib.nullcontext
        self._memo: tuple[Any, Any] | None = None

    def remember(self, features: Any, output: Any) -> None:
        self._memo = (features, output)

    def forget(self) -> None:
        self._memo = None

    def __call__(self, features: Any) -> Any:
        if self._memo is not None and self._memo[0] is features:
            return self._memo[1]
        was_training = self.network.training
        self.network.eval()
        try:
            with torch.no_grad(), self.autocast():
                return float_output(self.network(features))
        finally:
            self.network.train(was_training)


#: int8 embeddings are codes of unit-norm components: the value times INT8_SCALE, rounded.
INT8_SCALE = 127.0


def as_float_embeddings(x: torch.Tensor) -> torch.Tensor:
    """float32 embeddings from any floating precision, or from int8 codes (value / INT8_SCALE):
    how a domain keeps the embeddings of a long input small (a quarter of float32)."""
    if x.dtype == torch.int8:
        return x.float().mul_(1.0 / INT8_SCALE)
    return x.float()


def _sample_mask(mask: torch.Tensor, limit: int, seed: int = 0) -> torch.Tensor:
    """(batch, n_points) bool: at most ``limit`` of each item's active points, drawn uniformly
    with a fixed seed (the same input always gives the same sample). A point's key depends on
    its index only, the same in every item, so an item is sampled as it would be alone."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    keys = torch.rand(1, mask.shape[1], generator=gen).to(mask.device).expand(mask.shape).clone()  # (batch, n_points)
    keys.masked_fill_(~mask, 2.0)  # inactive points are never among the smallest keys
    k = min(limit, mask.shape[1])
    chosen = keys.topk(k, dim=1, largest=False).indices  # (batch, k): no sort of every point
    out = torch.zeros_like(mask)
    out.scatter_(1, chosen, True)
    return out & mask


def _compact(X: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The active points of each item moved to the front: (batch, n_max, dim), its mask, and
    where each row came from (batch, n_max; rows past an item's count point at index 0)."""
    b = mask.shape[0]
    counts = mask.sum(1)  # (batch,)
    n_max = int(counts.max()) if counts.numel() else 0
    rows, cols = mask.nonzero(as_tuple=True)  # in order: a linear pass, no sort
    slot = mask.cumsum(1)[rows, cols] - 1  # each active point's place among its item's
    order = torch.zeros(b, n_max, dtype=torch.int64, device=X.device)
    order[rows, slot] = cols
    pts = torch.gather(X, 1, order[..., None].expand(-1, -1, X.shape[-1]))  # (batch, n_max, dim)
    keep = torch.arange(n_max, device=X.device)[None, :] < counts[:, None]  # (batch, n_max)
    return pts, keep, order


def _nearest_means(fitted_X: torch.Tensor, fitted_mask: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """(batch, k, dim) unit mean directions of the fitted points' clusters: how points are
    assigned after a fit on a sample by a clusterer that cannot label new points itself."""
    b, _, d = fitted_X.shape
    idx = labels.clamp(0, k - 1).masked_fill(~fitted_mask, 0)
    sums = torch.zeros(b, k, d, dtype=fitted_X.dtype, device=fitted_X.device)
    sums.scatter_add_(1, idx[..., None].expand(-1, -1, d), fitted_X * fitted_mask[..., None])
    norm = sums.square().sum(-1, keepdim=True).sqrt()
    empty = norm[..., 0] == 0  # (batch, k): clusters without points never win
    means = sums / norm.clamp_min(1e-12)
    return means.masked_fill(empty[..., None], float("nan"))


def cluster_embeddings(
    clusterer: Any,
    embeddings: torch.Tensor,
    mask: torch.Tensor,
    n_clusters: Any = None,
    *,
    want_proba: bool = True,
    label_all: bool = True,
    fit_points: int = FIT_POINTS,
    assign_points: int = ASSIGN_POINTS,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Cluster each item's active embeddings with a fresh copy of ``clusterer``.

    Items with no active point get label 0 everywhere. The clusterer is fitted on the active
    points alone (on a fixed uniform sample of them when an item has more than
    ``fit_points``); every other point (inactive ones included, as the clusterer labels them)
    is then assigned ``assign_points`` at a time.

    Args:
        clusterer: the prototype clusterer (a :class:`~embedseg.cluster.BaseClusterer`); it is
            cloned, never changed.
        embeddings: (batch, n_points, dim) floating embeddings, or int8 codes of them (see
            :func:`as_float_embeddings`); they are made float32 a chunk at a time.
        mask: (batch, n_points) bool, the points to fit on.
        n_clusters: overrides the clusterer's ``n_clusters``: an int, per-item counts or
            ``"auto"``; None keeps the clusterer's.
        want_proba: also return soft assignments when the clusterer has them.
        label_all: also label the inactive points (as the clusterer assigns them); else they
            get label 0 (and no soft assignment), which spares assigning them.
        fit_points: most points per item to fit on.
        assign_points: points per item assigned at a time after a sampled fit.

    Returns:
        ``(labels, proba)``: (batch, n_points) int64 labels, and (batch, n_points, k) soft
        assignments or None.
    """
    check_int(fit_points, "fit_points", "cluster_embeddings", 1)
    check_int(assign_points, "assign_points", "cluster_embeddings", 1)
    b, n = embeddings.shape[:2]
    device = embeddings.device
    labels = torch.zeros(b, n, dtype=torch.int64, device=device)
    has = mask.any(1)  # (batch,) items with points to fit
    if b == 0 or not bool(has.any()):
        return labels, None
    if not label_all and not bool(mask.all()):  # only the active points need labels
        X_act, keep, order = _compact(embeddings, mask)
        sub, sub_proba = cluster_embeddings(
            clusterer, X_act, keep, n_clusters, want_proba=want_proba, fit_points=fit_points, assign_points=assign_points,
        )
        rows = torch.arange(b, device=device)[:, None].expand_as(order)[keep]
        labels[rows, order[keep]] = sub[keep]
        proba = None
        if sub_proba is not None:
            proba = torch.zeros(b, n, sub_proba.shape[-1], dtype=sub_proba.dtype, device=device)
            proba[rows, order[keep]] = sub_proba[keep]
        return labels, proba
    if not bool(has.all()):  # cluster the others alone; the empty items keep label 0
        rows = torch.nonzero(has)[:, 0]
        counts = n_clusters
        if isinstance(n_clusters, (list, tuple)) or (isinstance(n_clusters, torch.Tensor) and n_clusters.ndim):
            counts = torch.as_tensor(n_clusters)[rows.cpu()]
        sub, proba = cluster_embeddings(
            clusterer, embeddings[rows], mask[rows], counts,
            want_proba=want_proba, label_all=label_all, fit_points=fit_points, assign_points=assign_points,
        )
        labels[rows] = sub
        if proba is not None:
            full = torch.zeros(b, n, proba.shape[-1], dtype=proba.dtype, device=device)
            full[:, :, 0] = 1.0
            full[rows] = proba
            proba = full
        return labels, proba
    params = {} if n_clusters is None else {"n_clusters": n_clusters}
    model = clusterer.clone(**params)
    proba_wanted = want_proba and getattr(model, "has_proba", False)
    n_active = mask.sum(1)
    if n <= fit_points and bool(mask.all()):  # every point clustered, and few: one fit
        X = as_float_embeddings(embeddings)  # (batch, n_points, dim)
        labels = model.fit_predict(X, mask)
        return labels, (model.predict_proba(X) if proba_wanted else None)
    # Fit on the points to cluster alone (a fixed sample of them beyond fit_points), moved to
    # the front so that the iterations never touch the others; then assign every point.
    fit_mask = mask if int(n_active.max()) <= fit_points else _sample_mask(mask, fit_points)
    X_fit, keep, order = _compact(embeddings, fit_mask)  # (batch, <= fit_points, dim)
    X_fit = as_float_embeddings(X_fit)
    fitted_labels = model.fit_predict(X_fit, keep)
    means = None  # set when the clusterer cannot label new points (e.g. spectral clustering)
    proba = None
    for start in range(0, n, assign_points):
        chunk = as_float_embeddings(embeddings[:, start : start + assign_points])  # (batch, chunk, dim)
        stop = start + chunk.shape[1]
        if means is None:
            try:
                labels[:, start:stop] = model.predict(chunk)
            except NotImplementedError:
                k = int(fitted_labels.masked_fill(~keep, 0).max()) + 1
                means = _nearest_means(X_fit, keep, fitted_labels, k)  # (batch, k, dim)
        if means is not None:
            sims = torch.einsum("bnd,bkd->bnk", chunk, means).nan_to_num(nan=-torch.inf)
            labels[:, start:stop] = sims.argmax(-1)
        if proba_wanted:
            p = model.predict_proba(chunk)  # (batch, chunk, k)
            if proba is None:
                proba = torch.zeros(b, n, p.shape[-1], dtype=p.dtype, device=device)
            proba[:, start:stop] = p
    # The fitted points keep the labels of the fit.
    rows = torch.arange(b, device=device)[:, None].expand_as(order)[keep]
    labels[rows, order[keep]] = fitted_labels[keep]
    return labels, proba


class InferenceEngine:
    """encode -> forward -> cluster -> decode for a network, a domain and a clusterer.

    Args:
        network: the trained network.
        domain: the domain adapter (it supplies forward, tiles/stitch, decode and metrics).
        clusterer: the prototype clusterer; each input is clustered by a fresh copy.
        autocast: optional context-manager factory for mixed-precision forward passes.
        fit_points, assign_points: see :func:`cluster_embeddings`.

    Example:
        >>> engine = InferenceEngine(model.network, model.domain, model.clusterer)  # doctest: +SKIP
        >>> outputs = engine.predict_items(items)                                    # doctest: +SKIP
    """

    def __init__(
        self,
        network: nn.Module,
        domain: "Domain",
        clusterer: Any,
        *,
        autocast: Callable[[], ContextManager[Any]] | None = None,
        fit_points: int = FIT_POINTS,
        assign_points: int = ASSIGN_POINTS,
    ) -> None:
        self.network = network
        self.domain = domain
        self.clusterer = clusterer
        self.run = Runner(network, autocast)
        self.fit_points = check_int(fit_points, "fit_points", "InferenceEngine", 1)
        self.assign_points = check_int(assign_points, "assign_points", "InferenceEngine", 1)

    @property
    def device(self) -> torch.device:
        for p in self.network.parameters():
            return p.device
        for buf in self.network.buffers():
            return buf.device
        return torch.device("cpu")

    # -- the path, step by step ------------------------------------------------------------------
    def encode(self, batch: Any) -> "EncodedBatch":
        """The domain's encoding of a collated batch, on the network's device."""
        return self.domain.encode(batch, self.device)

    def solve(self, batch: "EncodedBatch", n_clusters: Any = None) -> tuple[Any, torch.Tensor, torch.Tensor | None]:
        """forward and cluster one (tile of an) encoded batch: ``(output, labels, proba)``."""
        output = self.domain.forward(self.run, batch)
        mask = self.domain.cluster_mask(batch, output)  # (batch, n_points)
        if n_clusters is None:  # the domain adapts the clusterer's own count
            n_clusters = self.clusterer.get_params().get("n_clusters")
        counts = self.domain.cluster_counts(batch, mask, n_clusters, output=output)
        labels, proba = cluster_embeddings(
            self.clusterer, embeddings_of(output), mask, counts,
            want_proba=self.domain.uses_proba, label_all=self.domain.labels_every_point,
            fit_points=self.fit_points, assign_points=self.assign_points,
        )
        return output, labels, proba

    def _decode(self, batch: "EncodedBatch", n_clusters: Any) -> list[Any]:
        output, labels, proba = self.solve(batch, n_clusters)
        return self.domain.decode(batch, labels, proba, output)

    def predict_encoded(self, batch: "EncodedBatch", n_clusters: Any = None) -> list[Any]:
        """One decoded output per item of an encoded batch (tile by tile when the domain
        splits it)."""
        tiles = self.domain.tiles(batch)
        if tiles is None:
            return self._decode(batch, n_clusters)
        return self.domain.stitch(batch, ((tile, self._decode(tile, n_clusters)) for tile in tiles))

    def predict_batch(self, batch: Any, n_clusters: Any = None) -> tuple["EncodedBatch", list[Any]]:
        """Encode a collated batch and predict it: ``(encoded, outputs)``."""
        encoded = self.encode(batch)
        return encoded, self.predict_encoded(encoded, n_clusters)

    def predict_items(self, items: Sequence[Any], n_clusters: Any = None, batch_size: int | None = None) -> list[Any]:
        """Decoded outputs for domain-native items, ``batch_size`` at a time (None: all at once)."""
        items = list(items)
        if batch_size is not None:
            check_int(batch_size, "batch_size", "predict_items", 1)
        step = batch_size or max(1, len(items))
        out: list[Any] = []
        for start in range(0, len(items), step):
            out.extend(self.predict_batch(self.domain.collate(items[start : start + step]), n_clusters)[1])
        return out

    # -- scoring -----------------------------------------------------------------------------------
    def new_metric(self) -> Any:
        """A fresh accumulator of the domain's metrics.

        Raises:
            ValueError: the domain defines no metrics.
        """
        metric = self.domain.metrics()
        if metric is None:
            raise ValueError(
                f"The domain {type(self.domain).__name__} defines no metrics (its metrics() returned "
                f"None), so there is nothing to evaluate."
            )
        return metric

    def score_batches(self, batches: Iterable[Any], n_clusters: Any = None, metric: Any = None) -> Any:
        """Predict each collated batch and add its outputs to ``metric`` (a fresh one when None);
        returns the accumulator, not yet computed (so that processes can merge theirs)."""
        metric = self.new_metric() if metric is None else metric
        for batch in batches:
            encoded, outputs = self.predict_batch(batch, n_clusters)
            metric.update(outputs, encoded)
        return metric

    def batches(self, dataset: Any, batch_size: int = 8, num_workers: int = 0) -> Iterator[Any]:
        """Collated batches of a dataset, in order, each of at most ``batch_size`` consecutive
        items that share the domain's :meth:`~embedseg.Domain.batch_key` (e.g. one image size):
        padding would change what a network sees near the padded edge, and an item must be
        predicted as it is alone, so that a score is the score of what the model returns."""
        check_int(batch_size, "batch_size", "evaluate", 1)
        check_int(num_workers, "num_workers", "evaluate", 0)
        # Items one by one (workers still read ahead); batches are formed here by their keys.
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=None, shuffle=False, num_workers=num_workers, collate_fn=_identity,
        )
        pending: list[Any] = []
        key: Any = None
        for item in loader:
            item_key = self.domain.batch_key(item)
            if pending and (item_key != key or len(pending) == batch_size):
                yield self.domain.collate(pending)
                pending = []
            pending.append(item)
            key = item_key
        if pending:
            yield self.domain.collate(pending)

    def evaluate(self, dataset: Any, batch_size: int = 8, n_clusters: Any = None, num_workers: int = 0) -> dict[str, float]:
        """The domain's metrics of the predictions on ``dataset``, pooled as each metric says."""
        return self.score_batches(self.batches(dataset, batch_size, num_workers), n_clusters).compute()
