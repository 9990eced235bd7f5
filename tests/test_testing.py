"""embedseg.testing.check_clusterer: every registered clusterer and a user's own pass it, and
clusterers that break the contract fail it with the failed check named."""

from __future__ import annotations

from numbers import Integral

import pytest
import torch
from sklearn.cluster import KMeans as SkKMeans

from embedseg._params import Interval, Options
from embedseg.cluster import (
    CLUSTERERS,
    BaseClusterer,
    SklearnClusterer,
    list_clusterers,
)
from embedseg.cluster.base import PerItemCounts
from embedseg.testing import check_clusterer


class FarthestSeeds(BaseClusterer):
    """A user's own clusterer: per item, farthest-point seeds from the first active point, and
    every point to its nearest seed. Batched, deterministic, and only ``_fit`` and
    ``_predict`` to write: parameters, inputs and ``n_clusters`` are the base class's job."""

    _parameter_constraints = {
        "n_clusters": [Interval(Integral, 1, None, closed="left"), Options(str, ["auto"]), PerItemCounts()],
        "max_clusters": [Interval(Integral, 2, None, closed="left")],
    }

    def __init__(self, *, n_clusters=2, max_clusters=8):
        self.n_clusters = n_clusters
        self.max_clusters = max_clusters

    def _fit(self, X, mask, n_clusters, n_slots):
        B, _, d = X.shape
        items = torch.arange(B, device=X.device)
        seeds = X.new_zeros(B, n_slots, d)
        seeds[:, 0] = X[items, mask.to(torch.int8).argmax(1)]  # the first active point
        nearest = ((X - seeds[:, :1]) ** 2).sum(-1).masked_fill(~mask, -1.0)  # (batch, n)
        for j in range(1, n_slots):  # a loop over seeds, not over items
            seeds[:, j] = X[items, nearest.argmax(1)]
            d2 = ((X - seeds[:, j : j + 1]) ** 2).sum(-1).masked_fill(~mask, -1.0)
            nearest = torch.minimum(nearest, d2)
        self.cluster_centers_ = seeds
        self.labels_ = self._predict(X)

    def _predict(self, X):
        d2 = torch.cdist(X, self.cluster_centers_.to(X.dtype)) ** 2  # (batch, n, slots)
        slots = torch.arange(d2.shape[2], device=X.device)
        unused = slots[None, :] >= self.n_clusters_.to(X.device)[:, None]  # (batch, slots)
        return d2.masked_fill(unused[:, None, :], float("inf")).argmin(-1)


def registered(name: str) -> BaseClusterer:
    if name == "sklearn":
        return SklearnClusterer(SkKMeans(n_init=1), n_clusters=3)
    return CLUSTERERS.get(name)()


@pytest.mark.parametrize("name", list_clusterers())
def test_every_registered_clusterer_passes(name):
    check_clusterer(registered(name))


def test_a_users_own_clusterer_passes():
    check_clusterer(FarthestSeeds)
    check_clusterer(FarthestSeeds(n_clusters="auto"))


def test_a_class_that_needs_arguments_asks_for_an_instance():
    with pytest.raises(AssertionError, match="cannot be built without arguments.*pass an instance"):
        check_clusterer(SklearnClusterer)


@pytest.mark.parametrize("bad", [SkKMeans(), SkKMeans, "kmeans"])
def test_anything_but_a_clusterer_is_a_type_error(bad):
    with pytest.raises(TypeError, match="BaseClusterer"):
        check_clusterer(bad)


class SetsFittedStateInInit(FarthestSeeds):
    def __init__(self, *, n_clusters=2, max_clusters=8):
        super().__init__(n_clusters=n_clusters, max_clusters=max_clusters)
        self.labels_ = None


class ConvertsItsParameter(FarthestSeeds):
    def __init__(self, *, n_clusters=2, max_clusters=8):
        super().__init__(n_clusters=n_clusters, max_clusters=max_clusters)
        self.max_clusters = float(max_clusters)


class LabelsOutOfRange(FarthestSeeds):
    def _fit(self, X, mask, n_clusters, n_slots):
        super()._fit(X, mask, n_clusters, n_slots)
        self.labels_ = self.labels_ + 1


class MaskedPointsMoveTheFit(FarthestSeeds):
    def _fit(self, X, mask, n_clusters, n_slots):
        super()._fit(X, torch.ones_like(mask), n_clusters, n_slots)


class LoopsOverItemsDifferently(FarthestSeeds):
    def _fit(self, X, mask, n_clusters, n_slots):
        if X.shape[0] > 1:  # a batch is fitted with one seed fewer than each item alone
            n_clusters = (n_clusters - 1).clamp_min(1)
            self.n_clusters_ = n_clusters
        super()._fit(X, mask, n_clusters, n_slots)


class Random(FarthestSeeds):
    def _fit(self, X, mask, n_clusters, n_slots):
        super()._fit(X, mask, n_clusters, n_slots)
        self.labels_ = torch.randint(0, 2, self.labels_.shape)


class UndeclaredParameter(FarthestSeeds):
    def __init__(self, *, n_clusters=2, max_clusters=8, spread=1.0):
        super().__init__(n_clusters=n_clusters, max_clusters=max_clusters)
        self.spread = spread


class AcceptsAnything(FarthestSeeds):
    _parameter_constraints = {**FarthestSeeds._parameter_constraints, "max_clusters": [object]}


@pytest.mark.parametrize(
    "cls, check, why",
    [
        (SetsFittedStateInInit, "init_stores_params", "must not set fitted attributes"),
        (ConvertsItsParameter, "init_stores_params", "'max_clusters' as given"),
        (LabelsOutOfRange, "fit_contract", r"must lie in \[0, n_clusters_\[b\]\)"),
        (MaskedPointsMoveTheFit, "masked_points", "must take no part in the fit"),
        (LoopsOverItemsDifferently, "n_clusters", "must give n_clusters_"),
        (Random, "fit_contract", "fit_predict\\(\\) must return the labels fit\\(\\) sets"),
        (UndeclaredParameter, "bad_params", r"missing \['spread'\]"),
        (AcceptsAnything, "bad_params", "max_clusters=<not a value> was accepted"),
    ],
)
def test_a_broken_contract_fails_naming_the_check(cls, check, why):
    with pytest.raises(AssertionError, match=rf"check_clusterer: '{check}' failed for {cls.__name__}: .*{why}"):
        check_clusterer(cls)


def test_examples_run():
    import doctest

    import embedseg.testing

    assert doctest.testmod(embedseg.testing).failed == 0


# -- check_domain ---------------------------------------------------------------------------------
def _image_items():
    from domains.image import SyntheticScenes

    return [SyntheticScenes(2, size=40, max_objects=4, seed=0)[i] for i in range(2)]


def _audio_items():
    t = torch.arange(2400) / 8000.0
    items = []
    for f0 in (150.0, 230.0):
        a = torch.sin(2 * torch.pi * f0 * t) * (t < 0.2)
        b = 0.5 * torch.sin(2 * torch.pi * 2.7 * f0 * t) * (t > 0.1)
        items.append({"mixture": a + b, "sources": torch.stack([a, b])})
    return items


def _rings_domain_and_items():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "custom_domain.py"
    spec = importlib.util.spec_from_file_location("custom_domain_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example.RingsDomain(), example.make_clouds(3, seed=4)


@pytest.mark.parametrize("name", ["image", "audio", "rings"])
def test_check_domain_passes_on_every_builtin_and_the_example(name):
    from embedseg import create_domain
    from embedseg.testing import check_domain

    if name == "rings":
        domain, items = _rings_domain_and_items()
    else:
        domain, items = create_domain(name), (_image_items() if name == "image" else _audio_items())
    torch.manual_seed(0)
    check_domain(domain, items)


def test_check_domain_names_the_broken_part():
    from embedseg.testing import check_domain
    from toys import PaddedPoints

    class NoLabels(PaddedPoints):
        def encode(self, batch, device):
            enc = super().encode(batch, device)
            enc.labels = None
            return enc

        def decode(self, batch, labels, proba, output):
            return [y[m] for y, m in zip(labels, batch.mask)]

    class OneOutput(PaddedPoints):
        def decode(self, batch, labels, proba, output):
            return [labels[0]]

    items = [(torch.randn(6, 2), torch.tensor([0, 1] * 3)) for _ in range(3)]
    with pytest.raises(AssertionError, match=r"check_domain\[encode\]: annotated items must give labels"):
        check_domain(NoLabels(), items)
    with pytest.raises(AssertionError, match=r"check_domain\[decode\]: decode\(\) must give one output per item \(3\)"):
        check_domain(OneOutput(), items)
    with pytest.raises(AssertionError, match=r"check_domain\[items\]"):
        check_domain(PaddedPoints(), items[:1])
