"""embedseg.Model: inference pipeline, clustering overrides, domain methods, save and load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

import embedseg
from embedseg import Model
from embedseg.cluster import KMeans
from embedseg.io import MODEL_FORMAT_VERSION
from embedseg.metrics import ItemMean

from toys import PaddedPoints, one_thread  # noqa: F401  (one_thread: autouse fixture)


class BlobsModel(Model):
    """A domain's own model class, with a named method."""

    def count_parts(self, points, n_clusters=None):
        return int(self.predict_items([(points, torch.zeros(len(points), dtype=torch.long))], n_clusters)[0].max()) + 1


@embedseg.register_domain("toy-model", override=True)
class BlobsDomain(PaddedPoints):
    """Items: (points (n, 2), labels (n,)); decodes to per-item label tensors."""

    primary_metric = "ari"
    model_class = BlobsModel

    def metrics(self):
        return ItemMean(lambda outputs, batch: [
            {"ari": adjusted_rand_score(y[m].numpy(), o.numpy()), "n_points": float(len(o))}
            for o, y, m in zip(outputs, batch.labels, batch.mask)
        ])


def blobs(n_items: int, seed: int = 0, k: int = 2):
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n_items):
        n = 10 + 3 * (i % 3)
        y = torch.randint(0, k, (n,), generator=g)
        items.append((torch.randn(n, 2, generator=g) * 0.3 + 3.0 * y[:, None].float(), y))
    return items


@pytest.fixture(scope="module")
def trained():
    return embedseg.fit(blobs(24), domain="toy-model", valid=blobs(6, 1), epochs=4, batch_size=4,
                        lr=1e-2, device="cpu", progress=False)


def test_fit_returns_a_model_in_eval_mode(trained):
    assert isinstance(trained, Model)
    assert not trained.network.training
    assert trained.device == torch.device("cpu")
    assert trained.config["network"] == {"name": "point_mlp", "params": {"in_features": 2, "dim": 4, "hidden": 16}}
    assert "Model(domain=BlobsDomain()" in repr(trained)


def test_save_load_gives_the_same_predictions(trained, tmp_path):
    items = blobs(7, seed=5)
    path = trained.save(tmp_path / "m")
    loaded = embedseg.load(path)
    assert isinstance(loaded.domain, BlobsDomain) and isinstance(loaded.clusterer, KMeans)
    assert loaded.clusterer.get_params() == trained.clusterer.get_params()
    for a, b in zip(trained.network.state_dict().values(), loaded.network.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(trained.predict_items(items), loaded.predict_items(items)):
        assert torch.equal(a, b)
    assert trained.evaluate(items) == loaded.evaluate(items)
    full = trained.full_config()
    assert full["format"] == "embedseg-model" and full["format_version"] == MODEL_FORMAT_VERSION
    assert full["embedseg_version"] == embedseg.__version__
    assert full["domain"] == {"name": "toy-model", "options": {}}
    assert full["clusterer"]["name"] == "kmeans"


def test_predictions_separate_the_blobs(trained):
    items = blobs(8, seed=3)
    for out, (_, y) in zip(trained.predict_items(items), items):
        assert out.dtype == torch.int64 and out.shape == y.shape
        assert adjusted_rand_score(y.numpy(), out.numpy()) > 0.9


def test_evaluate_weights_batches_by_their_size(trained):
    items = blobs(7, seed=4)  # batches of 3, 3 and 1 items
    per_item = [trained.evaluate([item], batch_size=1) for item in items]
    by_three = trained.evaluate(items, batch_size=3)
    for key in ("ari", "n_points"):
        assert by_three[key] == pytest.approx(np.mean([m[key] for m in per_item]))
    with pytest.raises(ValueError, match="'dataset'.*at least one item|empty"):
        trained.evaluate([], batch_size=2)


def test_cluster_clones_the_prototype_and_takes_an_override(trained):
    items = blobs(3, seed=6, k=3)
    batch = trained.domain.encode(trained.domain.collate(items), trained.device)
    embeddings = trained.embed(batch)
    before = trained.clusterer.get_params()
    labels, proba = trained.cluster(embeddings, batch.mask, n_clusters=3)
    assert labels.shape == batch.mask.shape and int(labels.max()) == 2
    assert trained.clusterer.get_params() == before and not hasattr(trained.clusterer, "labels_")
    labels2, _ = trained.cluster(embeddings, batch.mask)
    assert int(labels2.max()) == 1
    assert proba is None or proba.shape[:2] == labels.shape


def test_embed_is_gradient_free_and_restores_the_mode(trained):
    batch = trained.domain.encode(trained.domain.collate(blobs(2)), "cpu")
    trained.network.train()
    try:
        out = trained.embed(batch)
        assert trained.network.training and not out.requires_grad
        torch.testing.assert_close(out.norm(dim=-1), torch.ones(out.shape[:2]))
    finally:
        trained.network.eval()


def test_a_domain_model_class_gives_its_models_named_methods(trained, tmp_path):
    points, _ = blobs(1, seed=9, k=2)[0]
    assert isinstance(trained, BlobsModel)
    assert trained.count_parts(points, n_clusters=3) == 3
    assert "count_parts" in dir(trained)
    loaded = embedseg.load(trained.save(tmp_path / "m"))
    assert type(loaded) is BlobsModel and loaded.count_parts(points) == trained.count_parts(points)
    with pytest.raises(AttributeError, match="no attribute 'separate'"):
        trained.separate


def test_predict_is_the_first_of_predict_items(trained):
    item = blobs(1, seed=2)[0]
    assert torch.equal(trained.predict(item), trained.predict_items([item])[0])
    with pytest.raises(TypeError, match="unexpected options"):
        trained.predict(item, n_sources=2)
    assert trained.predict_items([]) == []


def test_constructor_checks_its_arguments(trained):
    with pytest.raises(TypeError, match="'network' must be a torch.nn.Module"):
        Model("net", trained.domain, trained.clusterer, {})
    with pytest.raises(TypeError, match="'domain' must be an embedseg.Domain"):
        Model(trained.network, "toy-model", trained.clusterer, {})
    with pytest.raises(TypeError, match="'clusterer' must be an embedseg clusterer"):
        Model(trained.network, trained.domain, "kmeans", {})


def test_saving_an_unregistered_network_says_how_to_fix_it(trained, tmp_path):
    net = torch.nn.Linear(2, 4)
    model = Model(net, trained.domain, trained.clusterer, {})
    with pytest.raises(ValueError, match="embedseg.register_network"):
        model.save(tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_a_registered_network_instance_is_described_from_its_attributes(trained, tmp_path):
    from embedseg.networks import PointMLP

    class Described(PointMLP):
        def __init__(self, *, in_features: int = 2, dim: int = 4):
            super().__init__(in_features=in_features, dim=dim)
            self.in_features, self.dim = in_features, dim

    embedseg.register_network("toy-described", Described, override=True)
    model = Model(Described(dim=3), trained.domain, trained.clusterer, {})
    model.save(tmp_path / "m")
    loaded = embedseg.load(tmp_path / "m")
    assert isinstance(loaded.network, Described) and loaded.network.dim == 3


def test_unregistered_domain_cannot_be_saved(trained, tmp_path):
    class Local(BlobsDomain):
        pass

    model = Model(trained.network, Local(), trained.clusterer, dict(trained.config))
    with pytest.raises(ValueError, match="register_domain"):
        model.save(tmp_path / "m")


def test_to_moves_the_network(trained):
    assert trained.to("cpu") is trained and trained.device.type == "cpu"


def test_load_rejects_bad_devices_naming_load(trained, tmp_path):
    trained.save(tmp_path / "m")
    with pytest.raises(TypeError, match="The 'device' parameter of load must be a str .* Got 0 \\(int\\)"):
        embedseg.load(tmp_path / "m", device=0)
    with pytest.raises(ValueError, match="The 'device' parameter of load must be 'auto', 'cpu'"):
        embedseg.load(tmp_path / "m", device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="parameter of load asks for 'cuda', but CUDA is not available"):
            embedseg.load(tmp_path / "m", device="cuda")
    else:
        n = torch.cuda.device_count()
        with pytest.raises(ValueError, match=f"has {n} CUDA device"):
            embedseg.load(tmp_path / "m", device=f"cuda:{n}")


@pytest.mark.parametrize(
    "clusterer, error, match",
    [
        ({"name": "kmeans", "params": {"n_clusters": -3}}, ValueError,
         r"The 'n_clusters' parameter of KMeans must be an int in \[1, inf\)\. Got -3 instead\."),
        ({"name": "gmm", "params": {"covariance_type": "round"}}, ValueError, "'covariance_type' parameter of GaussianMixture"),
        ({"name": "kmeans", "params": [2]}, TypeError, "The 'params' of a 'clusterer' mapping must be a dict"),
        (KMeans(n_clusters=0), ValueError, "'n_clusters' parameter of KMeans"),
    ],
)
def test_bad_clusterer_parameters_fail_when_the_model_is_built(clusterer, error, match):
    with pytest.raises(error, match=match):
        embedseg.fit(blobs(4), domain="toy-model", clusterer=clusterer, max_steps=1, device="cpu", progress=False)


def test_constructor_checks_the_clusterer_parameters(trained):
    with pytest.raises(ValueError, match="'n_init' parameter of KMeans must be an int in \\[1, inf\\). Got 0"):
        Model(trained.network, trained.domain, KMeans(n_clusters=2, n_init=0), {})


def test_clusterers_without_a_parameter_check_are_taken_as_they_are():
    from embedseg.model import validate_clusterer

    class Plain:  # a user clusterer that does not derive from BaseClusterer
        pass

    plain = Plain()
    assert validate_clusterer(plain) is plain
