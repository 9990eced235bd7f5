"""Checks that third-party code meets embedseg's contracts, for use in its own tests.

:func:`check_clusterer` runs the whole clusterer contract on tiny inputs, as scikit-learn's
``check_estimator`` does for estimators: a clusterer that passes works wherever embedseg
takes one (``embedseg.fit(..., clusterer=...)``, saved models, the domains' decoders).
:func:`check_domain` runs a domain adapter's whole contract on a few of its items: collate ->
encode -> network -> loss -> backward -> inference -> decode -> metrics, and save / load.

Example:
    >>> from embedseg.cluster import KMeans
    >>> check_clusterer(KMeans(n_clusters=3))  # raises AssertionError naming a failed check
"""

from __future__ import annotations

import copy
import inspect
import math
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .cluster.base import BaseClusterer
from .errors import NotFittedError

__all__ = ["check_clusterer", "check_domain"]

# The tiny inputs every check runs on: items of _K clusters far apart.
_B, _N, _DIM, _K = 3, 24, 3, 3


def check_clusterer(clusterer: BaseClusterer | type[BaseClusterer]) -> None:
    """Check that a clusterer meets embedseg's clusterer contract, on tiny inputs.

    The checks, in order (each on fresh clones; where the clusterer has an ``n_clusters``
    parameter that is not None, it is set to the inputs' number of clusters, 3):

    * ``init_stores_params``: ``__init__`` stores every parameter as given, under its name,
      and sets no fitted attribute;
    * ``params_round_trip``: ``get_params``, ``set_params`` (unknown names rejected),
      ``clone`` (unfitted, same parameters, some replaced) agree;
    * ``fit_contract``: ``fit`` returns self; ``labels_`` is (batch, n_points) int64 on X's
      device, within [0, n_clusters_[b]); ``fit_predict`` returns the same labels;
      ``n_features_in_`` is the points' dim; fit leaves X and mask unchanged;
    * ``float64``: float64 points give the partition float32 points give;
    * ``masked_points``: masked-out points are labelled (within range) and take no part in
      the fit (replacing them by far-off values changes no active point's cluster);
    * ``not_fitted``: ``predict`` (and ``predict_proba``) before ``fit`` raise NotFittedError
      (``predict_proba`` raises AttributeError when ``has_proba`` is False);
    * ``predict``: where the clusterer can label new points, ``predict`` of the fitted points
      gives ``labels_``, ``predict_proba`` rows are probabilities whose argmax is
      ``predict``, and points with another dim or batch size are rejected;
    * ``n_clusters``: an int, per-item counts and ``"auto"`` are honoured (``n_clusters_``,
      label ranges; "auto" finds the 3 clusters), and bad counts are rejected naming
      ``n_clusters`` (skipped when the clusterer has no ``n_clusters`` or it is None);
    * ``batch_invariance``: fitting a batch gives each item the partition fitting it alone
      gives;
    * ``bad_inputs``: non-tensors, wrong ranks and dtypes, NaN, empty batches, bad masks
      are rejected with ValueError or TypeError naming ``'X'`` or ``'mask'``;
    * ``bad_params``: a value of no declared kind for any parameter in
      ``_parameter_constraints`` is rejected at fit, naming the parameter; the declaration
      covers every ``__init__`` parameter (when there is one);
    * ``deterministic``: two fits with the same parameters give the same labels.

    Args:
        clusterer: a :class:`~embedseg.cluster.BaseClusterer` instance, or a subclass that can
            be built without arguments.

    Raises:
        AssertionError: a check failed; the message names it and says what went wrong.
        TypeError: ``clusterer`` is not a BaseClusterer (or subclass).
    """
    if isinstance(clusterer, type):
        if not issubclass(clusterer, BaseClusterer):
            raise TypeError(
                f"check_clusterer() expects an embedseg.cluster.BaseClusterer instance or subclass. "
                f"Got the class {clusterer.__qualname__} instead."
            )
        try:
            clusterer = clusterer()
        except TypeError as exc:
            raise AssertionError(
                f"check_clusterer: {clusterer.__name__} cannot be built without arguments ({exc}); "
                f"pass an instance instead."
            ) from None
    elif not isinstance(clusterer, BaseClusterer):
        raise TypeError(
            f"check_clusterer() expects an embedseg.cluster.BaseClusterer instance or subclass. "
            f"Got {clusterer!r} ({type(clusterer).__name__}) instead."
        )
    name = type(clusterer).__name__
    for check_name, check in _CHECKS:
        try:
            check(clusterer)
        except AssertionError as exc:
            raise AssertionError(f"check_clusterer: '{check_name}' failed for {name}: {exc}") from None
        except Exception as exc:  # an unexpected error is a failed check too
            raise AssertionError(
                f"check_clusterer: '{check_name}' failed for {name}: {type(exc).__name__}: {exc}"
            ) from exc


# -- inputs and helpers ---------------------------------------------------------------------


def _blobs(seed: int = 0, batch: int = _B, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(batch, _N, _DIM) items of _K clusters 10 apart (spread 0.3), points shuffled."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for _ in range(batch):
        centers = 10.0 * torch.eye(_DIM)[torch.randperm(_DIM, generator=g)[:_K]]  # (K, dim)
        labels = torch.arange(_N) % _K
        labels = labels[torch.randperm(_N, generator=g)]
        items.append(centers[labels] + 0.3 * torch.randn(_N, _DIM, generator=g))
    return torch.stack(items).to(dtype)


def _mask(seed: int = 1) -> torch.Tensor:
    """About a quarter of the points masked out, every item keeping at least _N // 2."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(_B, _N, generator=g) > 0.25
    mask[:, : _N // 2] = True  # points are shuffled: every cluster keeps some
    return mask


def _fresh(clusterer: BaseClusterer, **params: Any) -> BaseClusterer:
    """An unfitted clone, with n_clusters set to the inputs' count where it has one."""
    current = clusterer.get_params()
    if "n_clusters" in current and current["n_clusters"] is not None and "n_clusters" not in params:
        params["n_clusters"] = _K
    return clusterer.clone(**params)


def _has_counts(clusterer: BaseClusterer) -> bool:
    return clusterer.get_params().get("n_clusters", None) is not None


def _same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two labelings of the same points are equal up to a renaming of the labels."""
    a, b = a.reshape(-1).cpu(), b.reshape(-1).cpu()
    pairs = torch.unique(torch.stack([a, b]), dim=1).shape[1]
    return pairs == torch.unique(a).numel() == torch.unique(b).numel()


def _raises(fn: Callable[[], Any], names: tuple[str, ...], what: str) -> None:
    """Assert that ``fn`` raises ValueError or TypeError whose message names one of ``names``."""
    try:
        fn()
    except (ValueError, TypeError) as exc:
        if not any(f"'{n}'" in str(exc) for n in names):
            raise AssertionError(
                f"{what}: the error should name {' or '.join(repr(n) for n in names)}. Got "
                f"{type(exc).__name__}: {exc}"
            ) from None
        return
    raise AssertionError(f"{what} was accepted; expected a ValueError or TypeError.")


def _check_labels(clusterer: BaseClusterer, labels: torch.Tensor, X: torch.Tensor, what: str) -> None:
    assert isinstance(labels, torch.Tensor), f"{what} must be a tensor. Got {type(labels).__name__}."
    assert tuple(labels.shape) == tuple(X.shape[:2]), (
        f"{what} must have shape (batch, n_points) = {tuple(X.shape[:2])}. Got {tuple(labels.shape)}."
    )
    assert labels.dtype == torch.int64, f"{what} must be int64. Got {labels.dtype}."
    assert labels.device == X.device, f"{what} must be on X's device ({X.device}). Got {labels.device}."
    assert bool((labels >= 0).all()), f"{what} has negative labels: {labels.min().item()}."
    counts = getattr(clusterer, "n_clusters_", None)
    if counts is not None:
        assert isinstance(counts, torch.Tensor) and tuple(counts.shape) == (X.shape[0],), (
            f"n_clusters_ must be a (batch,) tensor. Got {counts!r}."
        )
        assert counts.dtype == torch.int64, f"n_clusters_ must be int64. Got {counts.dtype}."
        over = labels >= counts.to(labels.device)[:, None]
        assert not bool(over.any()), (
            f"{what} must lie in [0, n_clusters_[b]); n_clusters_ is {counts.tolist()} and item "
            f"{int(torch.nonzero(over)[0, 0])} has label {int(labels[over].max())}."
        )


# -- the checks -----------------------------------------------------------------------------


def _check_init_stores_params(clusterer: BaseClusterer) -> None:
    params = clusterer.get_params()
    names = type(clusterer)._param_names()
    assert sorted(params) == sorted(names), (
        f"get_params() must return the __init__ parameters {names}. Got {sorted(params)}."
    )
    # The signature's defaults where there are, as scikit-learn's check does: a parameter
    # converted on the way in shows as another object.
    defaults = {
        p.name: p.default
        for p in inspect.signature(type(clusterer).__init__).parameters.values()
        if p.default is not inspect.Parameter.empty
    }
    values = {n: defaults[n] if n in defaults else copy.deepcopy(params[n]) for n in names}
    built = type(clusterer)(**values)
    for n in names:
        assert hasattr(built, n), f"__init__ must store the parameter '{n}' as an attribute of that name."
        assert getattr(built, n) is values[n], (
            f"__init__ must store the parameter '{n}' as given (the same object); it stored "
            f"{getattr(built, n)!r} for {values[n]!r}."
        )
    fitted = [a for a in vars(built) if a.endswith("_") and not a.startswith("_")]
    assert not fitted, f"__init__ must not set fitted attributes (ending in '_'). It set {fitted}."


def _check_params_round_trip(clusterer: BaseClusterer) -> None:
    params = clusterer.get_params()
    twin = clusterer.clone()
    assert type(twin) is type(clusterer) and twin is not clusterer, "clone() must return a new object of the same class."
    assert _equal(twin.get_params(), params), (
        f"clone() must keep the parameters: {twin.get_params()!r} against {params!r}."
    )
    est = _fresh(clusterer)
    assert est.set_params() is est, "set_params() must return self."
    _raises(lambda: est.set_params(not_a_parameter=1), ("not_a_parameter",), "set_params(not_a_parameter=1)")
    name = next(iter(params), None)
    if name is not None:
        replaced = clusterer.clone(**{name: params[name]})
        assert _equal(replaced.get_params(), params), "clone(**params) must set the given parameters."
    fitted = _fresh(clusterer).fit(_blobs())
    again = fitted.clone()
    assert not hasattr(again, "labels_"), "clone() of a fitted clusterer must be unfitted."


def _equal(a: Any, b: Any) -> bool:
    """Whether two nested values (tensors, arrays, lists, dicts, numbers) are equal."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape and bool(np.array_equal(a, b))
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    try:
        return bool(a == b) or a is b
    except Exception:  # objects whose == is not a truth value
        return a is b


def _check_fit_contract(clusterer: BaseClusterer) -> None:
    X, mask = _blobs(), _mask()
    X_before, mask_before = X.clone(), mask.clone()
    est = _fresh(clusterer)
    out = est.fit(X, mask)
    assert out is est, f"fit() must return self. Got {out!r}."
    assert torch.equal(X, X_before) and torch.equal(mask, mask_before), "fit() must not change X or mask."
    assert hasattr(est, "labels_"), "fit() must set labels_."
    _check_labels(est, est.labels_, X, "labels_")
    if hasattr(est, "n_features_in_"):
        assert est.n_features_in_ == _DIM, f"n_features_in_ must be {_DIM}. Got {est.n_features_in_!r}."
    again = _fresh(clusterer).fit_predict(X, mask)
    assert torch.equal(again, est.labels_), "fit_predict() must return the labels fit() sets."


def _check_float64(clusterer: BaseClusterer) -> None:
    X = _blobs(seed=2)
    single = _fresh(clusterer).fit_predict(X)
    double = _fresh(clusterer).fit(X.double())
    _check_labels(double, double.labels_, X, "labels_ of float64 points")
    for b in range(X.shape[0]):
        assert _same_partition(single[b], double.labels_[b]), (
            f"float64 points must give the partition float32 points give (item {b})."
        )


def _check_masked_points(clusterer: BaseClusterer) -> None:
    X, mask = _blobs(seed=3), _mask(seed=4)
    est = _fresh(clusterer).fit(X, mask)
    _check_labels(est, est.labels_, X, "labels_ with a mask")
    far = X.clone()
    g = torch.Generator().manual_seed(5)
    far[~mask] = 1000.0 * torch.randn(int((~mask).sum()), _DIM, generator=g)
    moved = _fresh(clusterer).fit(far, mask)
    _check_labels(moved, moved.labels_, X, "labels_ with far-off masked points")
    for b in range(X.shape[0]):
        m = mask[b]
        assert _same_partition(est.labels_[b][m], moved.labels_[b][m]), (
            f"masked-out points must take no part in the fit: moving them changed the clusters "
            f"of item {b}'s active points."
        )


def _check_not_fitted(clusterer: BaseClusterer) -> None:
    X = _blobs()
    est = _fresh(clusterer)
    try:
        est.predict(X)
    except NotFittedError:
        pass
    else:
        raise AssertionError("predict() before fit() must raise NotFittedError.")
    try:
        est.predict_proba(X)
    except NotFittedError:
        assert est.has_proba, "predict_proba() without soft assignments must raise AttributeError."
    except AttributeError:
        assert not est.has_proba, "predict_proba() before fit() must raise NotFittedError."
    else:
        raise AssertionError("predict_proba() before fit() must raise NotFittedError (or AttributeError).")


def _check_predict(clusterer: BaseClusterer) -> None:
    X = _blobs(seed=6)
    est = _fresh(clusterer).fit(X)
    try:
        labels = est.predict(X)
    except NotImplementedError:
        assert not est.has_proba, "a clusterer with predict_proba must implement predict."
        return
    _check_labels(est, labels, X, "predict(X)")
    for b in range(X.shape[0]):
        assert _same_partition(labels[b], est.labels_[b]), (
            f"predict() of the fitted points must give the fitted clusters (item {b})."
        )
    if est.has_proba:
        P = est.predict_proba(X)
        assert isinstance(P, torch.Tensor) and P.shape[:2] == X.shape[:2] and P.ndim == 3, (
            f"predict_proba() must return (batch, n_points, n_slots). Got {getattr(P, 'shape', P)}."
        )
        counts = getattr(est, "n_clusters_", None)
        if counts is not None:
            assert P.shape[2] >= int(counts.max()), "predict_proba() needs a column per cluster."
        assert bool(torch.isfinite(P).all()) and bool((P >= 0).all()), "predict_proba() must give probabilities."
        torch.testing.assert_close(
            P.sum(-1).double(), torch.ones(P.shape[:2], dtype=torch.float64), atol=1e-4, rtol=0,
            msg="predict_proba() rows must sum to one.",
        )
        assert torch.equal(P.argmax(-1), labels), "predict_proba()'s most probable cluster must be predict()'s."
    _raises(lambda: est.predict(X[..., :-1]), ("X",), "predict() of points with another dim")
    _raises(lambda: est.predict(X[:-1]), ("X",), "predict() of another batch size")


def _check_n_clusters(clusterer: BaseClusterer) -> None:
    if not _has_counts(clusterer):
        return
    X = _blobs(seed=7)
    two = _fresh(clusterer, n_clusters=2).fit(X)
    _check_labels(two, two.labels_, X, "labels_ with n_clusters=2")
    assert two.n_clusters_.tolist() == [2] * _B, f"n_clusters=2 must give n_clusters_ {[2] * _B}. Got {two.n_clusters_.tolist()}."
    per_item = [1, 2, 3]
    est = _fresh(clusterer, n_clusters=list(per_item)).fit(X)
    assert est.n_clusters_.tolist() == per_item, (
        f"per-item n_clusters={per_item} must give n_clusters_ {per_item}. Got {est.n_clusters_.tolist()}."
    )
    _check_labels(est, est.labels_, X, "labels_ with per-item counts")
    as_tensor = _fresh(clusterer, n_clusters=torch.tensor(per_item)).fit(X)
    assert as_tensor.n_clusters_.tolist() == per_item, "per-item counts as a tensor must work as a list does."
    auto = _fresh(clusterer, n_clusters="auto").fit(X)
    _check_labels(auto, auto.labels_, X, "labels_ with n_clusters='auto'")
    assert auto.n_clusters_.tolist() == [_K] * _B, (
        f"n_clusters='auto' must find the {_K} clusters of every item. Got {auto.n_clusters_.tolist()}."
    )
    fixed = _fresh(clusterer).fit(X)
    for b in range(_B):
        assert _same_partition(auto.labels_[b], fixed.labels_[b]), (
            f"n_clusters='auto' must give item {b} the partition n_clusters={_K} gives."
        )
    _raises(lambda: _fresh(clusterer, n_clusters=0).fit(X), ("n_clusters",), "n_clusters=0")
    _raises(lambda: _fresh(clusterer, n_clusters=_N + 1).fit(X), ("n_clusters",), "more clusters than points")
    _raises(lambda: _fresh(clusterer, n_clusters=[2, 2]).fit(X), ("n_clusters",), "per-item counts for another batch size")


def _check_batch_invariance(clusterer: BaseClusterer) -> None:
    X, mask = _blobs(seed=8), _mask(seed=9)
    batched = _fresh(clusterer).fit_predict(X, mask)
    for b in range(X.shape[0]):
        alone = _fresh(clusterer).fit_predict(X[b : b + 1], mask[b : b + 1])
        assert _same_partition(batched[b], alone[0]), (
            f"fitting a batch must give item {b} the partition fitting it alone gives."
        )


def _check_bad_inputs(clusterer: BaseClusterer) -> None:
    X, est = _blobs(), _fresh(clusterer)
    nan = X.clone()
    nan[1, 2, 0] = float("nan")
    cases = [
        (lambda: est.fit(X.numpy()), ("X",), "a NumPy array for X"),
        (lambda: est.fit(X[0]), ("X",), "X with 2 dimensions"),
        (lambda: est.fit(X.long()), ("X",), "integer X"),
        (lambda: est.fit(nan), ("X",), "X with NaN"),
        (lambda: est.fit(X[:0]), ("X",), "an empty batch"),
        (lambda: est.fit(X[:, :0]), ("X",), "items without points"),
        (lambda: est.fit(X[..., :0]), ("X",), "points without dimensions"),
        (lambda: est.fit(X, torch.ones(_B, _N - 1, dtype=torch.bool)), ("mask",), "a mask of the wrong shape"),
        (lambda: est.fit(X, torch.ones(_B, _N)), ("mask",), "a float mask"),
        (lambda: est.fit(X, torch.zeros(_B, _N, dtype=torch.bool)), ("mask",), "a mask without active points"),
    ]
    for fn, names, what in cases:
        _raises(fn, names, what)


class _NotAValue:
    """A value of no kind any parameter accepts."""

    def __repr__(self) -> str:
        return "<not a value>"


def _check_bad_params(clusterer: BaseClusterer) -> None:
    declared = dict(getattr(type(clusterer), "_parameter_constraints", {}) or {})
    if not declared:
        return
    names = type(clusterer)._param_names()
    missing = [n for n in names if n not in declared]
    extra = [n for n in declared if n not in names]
    assert not missing and not extra, (
        f"_parameter_constraints must declare exactly the __init__ parameters: missing {missing}, "
        f"unknown {extra}."
    )
    X = _blobs()
    for name in names:
        est = _fresh(clusterer).set_params(**{name: _NotAValue()})
        _raises(lambda est=est: est.fit(X), (name,), f"{name}=<not a value>")


def _check_deterministic(clusterer: BaseClusterer) -> None:
    X, mask = _blobs(seed=10), _mask(seed=11)
    first = _fresh(clusterer).fit_predict(X, mask)
    second = _fresh(clusterer).fit_predict(X, mask)
    assert torch.equal(first, second), "two fits with the same parameters must give the same labels."


_CHECKS: list[tuple[str, Callable[[BaseClusterer], None]]] = [
    ("init_stores_params", _check_init_stores_params),
    ("params_round_trip", _check_params_round_trip),
    ("fit_contract", _check_fit_contract),
    ("float64", _check_float64),
    ("masked_points", _check_masked_points),
    ("not_fitted", _check_not_fitted),
    ("predict", _check_predict),
    ("n_clusters", _check_n_clusters),
    ("batch_invariance", _check_batch_invariance),
    ("bad_inputs", _check_bad_inputs),
    ("bad_params", _check_bad_params),
    ("deterministic", _check_deterministic),
]


# -- domains ---------------------------------------------------------------------------------------
def check_domain(domain: Any, items: Sequence[Any], *, network: Any = None, loss: str | None = None) -> None:
    """Run the whole domain contract on a few annotated items (scikit-learn's
    ``check_estimator`` for a domain adapter): collate -> encode -> network -> loss ->
    backward -> inference -> decode -> metrics, plus configuration and save/load round trips.

    Args:
        domain: the domain adapter (an instance; a registered one is also rebuilt by name).
        items: two or more annotated domain-native items, as its datasets yield them.
        network: the network to run (default: the domain's own, from ``network_spec()``).
        loss: the loss to train with (default: the domain's ``default_loss``).

    Raises:
        AssertionError: a check failed; the message names it and says what was expected.

    Example:
        >>> from embedseg.testing import check_domain
        >>> check_domain(MyDomain(), my_items[:4])  # doctest: +SKIP
    """
    import json
    import tempfile

    from .domain import DOMAINS, Domain, EncodedBatch
    from .inference import InferenceEngine
    from .model import Model, build_clusterer, model_class_of
    from .networks import create_network, embeddings_of

    def check(ok: bool, name: str, message: str) -> None:
        if not ok:
            raise AssertionError(f"check_domain[{name}]: {message}")

    check(isinstance(domain, Domain), "type", f"expected an embedseg.Domain instance. Got {type(domain).__name__}.")
    items = list(items)
    check(len(items) >= 2, "items", f"give at least two annotated items. Got {len(items)}.")
    # configuration: JSON data that rebuilds the same adapter
    config = domain.get_config()
    check(json.loads(json.dumps(config)) == config, "config", f"get_config() must be JSON data. Got {config!r}.")
    rebuilt = type(domain)(**config)
    check(rebuilt.get_config() == config, "config", "type(domain)(**get_config()) must give the same config.")
    # data
    batch = domain.collate(items)
    encoded = domain.encode(batch, torch.device("cpu"))
    check(isinstance(encoded, EncodedBatch), "encode", f"encode() must return an EncodedBatch. Got {type(encoded).__name__}.")
    b = len(items)
    check(encoded.mask.dtype == torch.bool and encoded.mask.ndim == 2 and encoded.mask.shape[0] == b, "encode",
          f"mask must be (batch={b}, n_points) bool. Got {tuple(encoded.mask.shape)} {encoded.mask.dtype}.")
    n = encoded.mask.shape[1]
    check(encoded.labels is not None, "encode", "annotated items must give labels (they are what the loss trains on).")
    check(encoded.labels.dtype == torch.int64 and tuple(encoded.labels.shape) == (b, n), "encode",
          f"labels must be (batch, n_points) = {(b, n)} int64. Got {tuple(encoded.labels.shape)} {encoded.labels.dtype}.")
    if encoded.weights is not None:
        w = encoded.weights
        check(tuple(w.shape) == (b, n) and bool(torch.isfinite(w).all()) and bool((w >= 0).all()), "encode",
              f"weights must be (batch, n_points) = {(b, n)}, finite and >= 0. Got {tuple(w.shape)}.")
    # network, loss, backward
    if network is None:
        spec = domain.network_spec()
        network = create_network(spec["name"], **dict(spec.get("params") or {}))
    network.train()
    output = network(encoded.features)
    emb = embeddings_of(output)
    check(emb.ndim == 3 and tuple(emb.shape[:2]) == (b, n), "network",
          f"the network's embeddings must be (batch, n_points, dim) with n_points = {n}. Got {tuple(emb.shape)}.")
    value = domain.compute_loss(output, encoded, loss or domain.default_loss)
    check(value.ndim == 0 and bool(torch.isfinite(value)), "loss", f"compute_loss() must be a finite scalar. Got {value!r}.")
    value.backward()
    grads = [p.grad for p in network.parameters() if p.requires_grad]
    check(any(g is not None for g in grads), "backward", "the loss must reach the network's parameters.")
    check(all(g is None or bool(torch.isfinite(g).all()) for g in grads), "backward", "gradients must be finite.")
    network.zero_grad(set_to_none=True)
    network.eval()
    # inference, decode, metrics
    clusterer = build_clusterer(None, domain.clusterer_spec())
    engine = InferenceEngine(network, domain, clusterer)
    outputs = engine.predict_encoded(encoded)
    check(isinstance(outputs, list) and len(outputs) == b, "decode", f"decode() must give one output per item ({b}). Got {outputs!r:.80}.")
    again = engine.predict_encoded(domain.encode(domain.collate(items), torch.device("cpu")))
    check(_equal(outputs, again), "determinism", "predicting the same items twice must give the same outputs.")
    metric = domain.metrics()
    if metric is not None:
        metric.update(outputs, encoded)
        scores = metric.compute()
        check(isinstance(scores, dict) and scores, "metrics", f"metrics().compute() must give a dict of figures. Got {scores!r}.")
        check(scores == engine.evaluate(items, batch_size=b), "metrics",
              "Model.evaluate must score exactly what inference returns.")
    # the model class and a save / load round trip (registered domains rebuild by name)
    target = model_class_of(domain)
    check(issubclass(target, Model), "model_class", f"model_class must be a Model subclass. Got {target!r}.")
    if DOMAINS.name_of(type(domain)) is not None:
        from .api import load

        model = target(network, domain, clusterer, {})
        with tempfile.TemporaryDirectory() as folder:
            loaded = load(model.save(f"{folder}/m"))
        check(type(loaded) is target and loaded.domain.get_config() == config, "save",
              "a saved model must load as the same model class with the same domain config.")
        check(_equal(outputs, loaded.predict_items(items)), "save", "a loaded model must predict as the saved one.")
