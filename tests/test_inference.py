"""embedseg.inference: the one inference path, and clustering that fits on a sample."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

import embedseg
from embedseg.cluster import KMeans, SpectralClustering
from embedseg.inference import InferenceEngine, Runner, cluster_embeddings
from embedseg.metrics import ItemMean

from toys import PaddedPoints, one_thread  # noqa: F401  (one_thread: autouse fixture)


def blobs_embeddings(batch: int, n: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit embeddings of ``k`` tight, well-separated clusters per item, and the true labels."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.nn.functional.normalize(torch.randn(batch, k, 8, generator=g), dim=-1)
    y = torch.randint(0, k, (batch, n), generator=g)
    x = torch.gather(centers, 1, y[..., None].expand(-1, -1, 8)) + 0.02 * torch.randn(batch, n, 8, generator=g)
    return torch.nn.functional.normalize(x, dim=-1), y


def same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    return adjusted_rand_score(a.numpy().ravel(), b.numpy().ravel()) == 1.0


def test_small_inputs_are_clustered_as_the_clusterer_does():
    X, y = blobs_embeddings(3, 500, 3)
    proto = KMeans(n_clusters=3, seed=0)
    labels, proba = cluster_embeddings(proto, X, torch.ones(3, 500, dtype=torch.bool), want_proba=False)
    assert torch.equal(labels, proto.clone().fit_predict(X))  # every point clustered: one fit
    assert proba is None  # not asked for
    assert not hasattr(proto, "labels_")  # the prototype is never fitted
    # Some points left out: the fit sees the others alone, and every point is labelled.
    mask = torch.rand(3, 500, generator=torch.Generator().manual_seed(1)) > 0.2
    labels, _ = cluster_embeddings(proto, X, mask)
    for i in range(3):
        assert same_partition(labels[i], y[i])


@pytest.mark.parametrize("clusterer", [KMeans(n_clusters=3, seed=0), SpectralClustering(n_clusters=3, seed=0)])
def test_large_inputs_are_fitted_on_a_sample_and_assigned_in_chunks(clusterer):
    X, y = blobs_embeddings(2, 3000, 3)
    mask = torch.ones(2, 3000, dtype=torch.bool)
    labels, _ = cluster_embeddings(clusterer, X, mask, fit_points=400, assign_points=700)
    for i in range(2):
        assert same_partition(labels[i], y[i])


def test_sampled_fit_gives_soft_assignments_for_every_point():
    X, y = blobs_embeddings(1, 2000, 2)
    mask = torch.ones(1, 2000, dtype=torch.bool)
    labels, proba = cluster_embeddings(embedseg.GaussianMixture(n_clusters=2, seed=0), X, mask, fit_points=300, assign_points=512)
    assert proba.shape == (1, 2000, 2)
    torch.testing.assert_close(proba.sum(-1), torch.ones(1, 2000))
    assert torch.equal(proba.argmax(-1), labels)
    assert same_partition(labels[0], y[0])


def test_items_without_points_get_label_zero_and_the_others_their_counts():
    X, y = blobs_embeddings(3, 200, 3)
    mask = torch.ones(3, 200, dtype=torch.bool)
    mask[1] = False
    labels, _ = cluster_embeddings(KMeans(n_clusters=2, seed=0), X, mask, n_clusters=[3, 5, 3])
    assert torch.equal(labels[1], torch.zeros(200, dtype=torch.int64))
    assert same_partition(labels[0], y[0]) and same_partition(labels[2], y[2])


def test_the_sample_is_fixed_and_only_active_points():
    from embedseg.inference import _sample_mask

    mask = torch.rand(2, 1000, generator=torch.Generator().manual_seed(3)) > 0.5
    a, b = _sample_mask(mask, 100), _sample_mask(mask, 100)
    assert torch.equal(a, b)
    assert not bool((a & ~mask).any())
    assert a.sum(1).tolist() == [100, 100]
    assert torch.equal(_sample_mask(mask[1:], 100), a[1:])  # an item is sampled as it is alone


def test_runner_restores_training_mode_and_remembers_one_output():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5))
    net.train()
    run = Runner(net)
    x = torch.randn(4, 2)
    out = run(x)
    assert net.training and not out.requires_grad
    torch.testing.assert_close(out, run(x))  # eval mode: dropout off
    sentinel = torch.zeros(1)
    run.remember(x, sentinel)
    assert run(x) is sentinel and run(x.clone()) is not sentinel


@embedseg.register_domain("toy-inference", override=True)
class ScoredPoints(PaddedPoints):
    def metrics(self):
        return ItemMean(lambda outputs, batch: [
            {"ari": adjusted_rand_score(y[m].numpy(), o.numpy())} for o, y, m in zip(outputs, batch.labels, batch.mask)
        ])


def test_evaluate_scores_exactly_what_predict_returns():
    g = torch.Generator().manual_seed(0)
    items = []
    for i in range(9):
        y = torch.randint(0, 2, (12 + i,), generator=g)
        items.append((torch.randn(12 + i, 2, generator=g) + 4.0 * y[:, None].float(), y))
    model = embedseg.fit(items, domain="toy-inference", epochs=2, batch_size=4, device="cpu", progress=False)
    engine = InferenceEngine(model.network, model.domain, model.clusterer)
    metric = model.domain.metrics()
    for start in range(0, len(items), 4):
        chunk = items[start : start + 4]
        outputs = [model.predict(item) for item in chunk]
        metric.update(outputs, engine.encode(model.domain.collate(chunk)))
    assert model.evaluate(items, batch_size=4) == pytest.approx(metric.compute(), abs=1e-12)


def test_evaluate_refuses_an_empty_dataset_and_a_domain_without_metrics():
    model = embedseg.fit([(torch.randn(6, 2), torch.tensor([0, 1] * 3))] * 4, domain="toy-inference", epochs=1,
                         device="cpu", progress=False)
    with pytest.raises(ValueError, match="dataset"):
        model.evaluate([])
    with pytest.raises(ValueError, match="defines no metrics"):
        InferenceEngine(model.network, PaddedPoints(), model.clusterer).new_metric()


def test_only_the_clustered_points_are_labelled_when_the_domain_reads_no_others():
    X, y = blobs_embeddings(2, 3000, 3)
    mask = torch.rand(2, 3000, generator=torch.Generator().manual_seed(2)) > 0.7
    for fit_points in (100_000, 300):  # all active points fitted, or a sample of them
        labels, proba = cluster_embeddings(
            embedseg.GaussianMixture(n_clusters=3, seed=0), X, mask, label_all=False, fit_points=fit_points,
        )
        assert bool((labels[~mask] == 0).all()) and bool((proba[~mask] == 0).all())
        for i in range(2):
            assert same_partition(labels[i][mask[i]], y[i][mask[i]])
        if fit_points > 3000:  # no sample: the same fit as labelling every point, the same labels
            everything, _ = cluster_embeddings(embedseg.GaussianMixture(n_clusters=3, seed=0), X, mask, fit_points=fit_points)
            assert torch.equal(everything[mask], labels[mask])
