"""Small pieces the core tests share: a one-thread fixture and a toy point-cloud domain."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from embedseg import Domain, EncodedBatch
from embedseg.metrics import adjusted_rand_index


def item_aris(outputs, batch):
    """Each item's adjusted Rand index of its decoded labels against its true labels."""
    return [{"ari": adjusted_rand_index(y[m].numpy(), o.numpy())} for o, y, m in zip(outputs, batch.labels, batch.mask)]


@contextmanager
def network_inputs(network: torch.nn.Module):
    """The shapes of the inputs of the forward passes ``network`` makes inside the block, in
    order (how tests see what tiling, chunking or batching handed the network)."""
    shapes: list[tuple[int, ...]] = []
    hook = network.register_forward_hook(lambda module, args, output: shapes.append(tuple(args[0].shape)))
    try:
        yield shapes
    finally:
        hook.remove()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny networks train faster on one thread, and the CI machine is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class PaddedPoints(Domain):
    """Items: (points (n, 2), labels (n,)) of varying n; padding gets label -1 and mask False.

    Decodes to each item's labels of its real points. Subclasses register themselves under
    their own names and add metrics or entry points.
    """

    def collate(self, items):
        n = max(len(p) for p, _ in items)
        points = torch.zeros(len(items), n, 2)
        labels = torch.full((len(items), n), -1, dtype=torch.long)
        for i, (p, y) in enumerate(items):
            points[i, : len(p)], labels[i, : len(y)] = p, y
        return points, labels

    def encode(self, batch, device):
        points, labels = (t.to(device) for t in batch)
        return EncodedBatch(points, labels >= 0, labels)

    def network_spec(self, name=None, **params):
        return {"name": name or "point_mlp", "params": {"in_features": 2, "dim": 4, "hidden": 16, **params}}

    def decode(self, batch, labels, proba, embeddings):
        return [y[m] for y, m in zip(labels, batch.mask)]
