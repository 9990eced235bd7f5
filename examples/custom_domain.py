"""A user-defined domain in one file: segmenting 2-D point clouds into shapes.

Each item is a cloud of concentric rings with a random center and scale. K-means on the raw
coordinates cannot separate rings (they share a center), and a network that looks at each point
alone cannot either (the radius that splits them changes from cloud to cloud). A small network
that pools the whole cloud and gives every point that context learns embeddings in which each
ring is one tight cluster.

The adapter (``RingsDomain``) is all a new domain needs: how items are collated, how a batch is
encoded, the default network, how labels are decoded, and the metric (an accumulator from
``embedseg.metrics``: here the mean over clouds of each cloud's adjusted Rand index). It is registered, trained
with ``embedseg.fit``, evaluated against k-means on the raw points, saved, and loaded again.

Run it with no arguments (about half a minute on a laptop CPU)::

    python examples/custom_domain.py
"""

from __future__ import annotations

import math
import tempfile

import numpy as np
import torch
from torch import nn

import embedseg
from embedseg import Domain, EncodedBatch
from embedseg.metrics import ItemMean, adjusted_rand_index
from embedseg.networks import EmbeddingHead


# -- the domain adapter -------------------------------------------------------------------------
@embedseg.register_domain("rings")
class RingsDomain(Domain):
    """Items are ``(points (n, 2) float, labels (n,) int or None)``; outputs are label arrays."""

    primary_metric = "ari"

    def __init__(self, *, n_rings: int = 2) -> None:
        self.n_rings = n_rings

    def get_config(self):
        return {"n_rings": self.n_rings}

    def collate(self, items):
        n = max(len(points) for points, _ in items)
        points = torch.zeros(len(items), n, 2)  # (batch, n_points, 2), zero padding
        labels = torch.full((len(items), n), -1, dtype=torch.long)  # -1: padding or unknown
        for i, (p, y) in enumerate(items):
            points[i, : len(p)] = torch.as_tensor(p, dtype=torch.float32)
            labels[i, : len(p)] = -2 if y is None else torch.as_tensor(y)
        return points, labels

    def encode(self, batch, device):
        points, labels = (t.to(device) for t in batch)
        mask = labels != -1  # (batch, n_points): real points
        known = bool((labels >= 0).any())
        return EncodedBatch({"points": points, "mask": mask}, mask, labels if known else None)

    def network_spec(self, name=None, **params):
        return {"name": name or "cloud_context", "params": {"dim": 8, **params}}

    def clusterer_spec(self):
        return {"name": "kmeans", "params": {"n_clusters": self.n_rings}}

    def decode(self, batch, labels, proba, output):
        return [y[m].cpu().numpy() for y, m in zip(labels, batch.mask)]

    def metrics(self):
        return ItemMean(self.item_scores)  # each cloud counts once

    @staticmethod
    def item_scores(outputs, batch):
        truth = [y[m].cpu().numpy() for y, m in zip(batch.labels, batch.mask)]
        return [{"ari": adjusted_rand_index(t, o)} for t, o in zip(truth, outputs)]


# -- a network that gives each point the context of its cloud ----------------------------------
@embedseg.register_network("cloud_context")
class CloudContextNet(nn.Module):
    """Per-point features, plus the cloud's masked mean and max, then a unit-norm head."""

    def __init__(self, *, dim: int = 8, hidden: int = 64) -> None:
        super().__init__()
        self.dim, self.hidden = dim, hidden
        self.local = nn.Sequential(nn.Linear(2, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU())
        self.mix = nn.Sequential(nn.Linear(3 * hidden + 3, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU())
        self.head = EmbeddingHead(hidden, dim)

    def forward(self, features):
        x, mask = features["points"], features["mask"].unsqueeze(-1)  # (batch, n, 2), (batch, n, 1)
        count = mask.sum(1, keepdim=True).clamp_min(1)
        center = (x * mask).sum(1, keepdim=True) / count  # (batch, 1, 2)
        radius = (x - center).norm(dim=-1, keepdim=True)  # (batch, n, 1)
        scale = (radius * mask).sum(1, keepdim=True) / count  # (batch, 1, 1): the cloud's size
        rel = (x - center) / scale  # (batch, n, 2): coordinates free of position and size
        h = self.local(rel)  # (batch, n, hidden)
        pooled_mean = (h * mask).sum(1, keepdim=True) / count  # (batch, 1, hidden)
        pooled_max = h.masked_fill(~mask, -1e4).amax(1, keepdim=True)  # (batch, 1, hidden)
        ctx = torch.cat([h, pooled_mean.expand_as(h), pooled_max.expand_as(h), rel, radius / scale], -1)
        return self.head(self.mix(ctx))  # (batch, n, dim), unit norm


# -- data ------------------------------------------------------------------------------------------
def make_clouds(n_items: int, n_rings: int = 2, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Clouds of concentric noisy rings, each with its own center, scale and ring radii."""
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(n_items):
        center, scale = rng.uniform(-5, 5, 2), rng.uniform(0.5, 3.0)
        radii = np.cumsum(rng.uniform(0.8, 1.4, n_rings))
        pts, lab = [], []
        for k, r in enumerate(radii):
            n = int(rng.integers(40, 80))
            angle = rng.uniform(0, 2 * math.pi, n)
            rr = r + rng.normal(0, 0.08, n)
            pts.append(np.stack([rr * np.cos(angle), rr * np.sin(angle)], 1) * scale + center)
            lab.append(np.full(n, k))
        order = rng.permutation(sum(len(p) for p in pts))
        items.append((np.concatenate(pts)[order].astype(np.float32), np.concatenate(lab)[order]))
    return items


def main() -> None:
    torch.set_num_threads(1)  # the network is tiny: one thread beats the cost of syncing several
    train, valid, test = make_clouds(192, seed=0), make_clouds(32, seed=1), make_clouds(64, seed=2)
    with tempfile.TemporaryDirectory() as out:
        model = embedseg.fit(
            train, domain="rings", valid=valid, epochs=3, batch_size=16, lr=3e-3,
            device="cpu", out_dir=out, progress=False, seed=0,
        )
        learned = model.evaluate(test)["ari"]
        # The baseline: the same batched k-means, on the raw coordinates instead of embeddings.
        batch = model.domain.encode(model.domain.collate(test), "cpu")
        raw_labels = embedseg.KMeans(n_clusters=2, n_init=10).fit_predict(batch.features["points"], batch.mask)
        scores = model.domain.metrics()
        scores.update(model.domain.decode(batch, raw_labels, None, None), batch)
        raw = scores.compute()["ari"]
        print(f"held-out ARI  k-means on raw points: {raw:.3f}   embedseg: {learned:.3f}")
        model.save(f"{out}/rings-model")
        again = embedseg.load(f"{out}/rings-model")
        same = all(np.array_equal(a, b) for a, b in zip(model.predict_items(test[:8]), again.predict_items(test[:8])))
        print(f"saved and loaded again; identical predictions: {same}")
        print(f"one cloud predicted: {np.bincount(again.predict((test[0][0], None)))} points per ring")
        if not (same and learned > raw + 0.5):
            raise SystemExit("unexpected: the learned embeddings should beat raw k-means by far")


if __name__ == "__main__":
    main()
