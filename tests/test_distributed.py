"""Multi-process training: two CPU processes under torchrun (gloo) end with identical weights.

Run by pytest, this file launches itself under ``torch.distributed.run`` as the worker script.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import torch

import embedseg
from embedseg import Domain, EncodedBatch
from embedseg.distributed import DistContext, setup, shard_indices
from embedseg.metrics import ItemMean


@embedseg.register_domain("toy-ddp", override=True)
class BlobsDomain(Domain):
    def collate(self, items):
        points = torch.stack([p for p, _ in items])
        labels = torch.stack([y for _, y in items])
        return points, labels

    def encode(self, batch, device):
        points, labels = (t.to(device) for t in batch)
        return EncodedBatch(points, torch.ones_like(labels, dtype=torch.bool), labels)

    def network_spec(self, name=None, **params):
        return {"name": name or "point_mlp", "params": {"in_features": 2, "dim": 4, "hidden": 16, **params}}

    def decode(self, batch, labels, proba, embeddings):
        return list(labels)

    def metrics(self):
        return ItemMean(_agreement)


def _agreement(outputs, batch):
    """Two clusters: each item's agreement with its labels up to swapping the two ids."""
    same = [float((o == y).float().mean()) for o, y in zip(outputs, batch.labels)]
    return [{"agreement": max(s, 1.0 - s)} for s in same]


def blobs(n_items: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    items = []
    for _ in range(n_items):
        y = torch.randint(0, 2, (12,), generator=g)
        items.append((torch.randn(12, 2, generator=g) * 0.4 + 2.0 * y[:, None].float(), y))
    return items


def worker(out: str) -> None:
    """One rank: train with DDP, then write this rank's final weights."""
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    model = embedseg.fit(
        blobs(20, 0), domain="toy-ddp", valid=blobs(6, 1), epochs=2, batch_size=4, lr=1e-2,
        device="cpu", progress=False, out_dir=os.path.join(out, "run"), log_every=1,
    )
    state = {k: v.contiguous() for k, v in model.network.state_dict().items()}
    save_file(state, os.path.join(out, f"rank{rank}.safetensors"))
    summary = model.config["training"]

    # An iterable dataset: 25 items shard into 13 and 12, i.e. 4 and 3 batches of 4; the ranks
    # must stop each epoch together (at 3 steps) rather than leave one waiting in an all-reduce.
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(blobs(25, 2))

    streamed = embedseg.fit(Stream(), domain="toy-ddp", epochs=2, batch_size=4, device="cpu", progress=False)
    state = {k: v.contiguous() for k, v in streamed.network.state_dict().items()}
    save_file(state, os.path.join(out, f"stream{rank}.safetensors"))
    with open(os.path.join(out, f"rank{rank}.txt"), "w") as f:
        f.write(f"{summary['world_size']} {summary['steps']} {streamed.config['training']['steps']}\n")

    # Objects of different sizes from each rank come back whole and in rank order.
    gathered = setup(torch.device("cpu")).all_gather_object({"rank": rank, "text": "ab" * (50 * rank + 1)})
    with open(os.path.join(out, f"objects{rank}.json"), "w") as f:
        json.dump(gathered, f)


def test_shard_indices_cover_every_item_evenly():
    order = list(torch.randperm(11, generator=torch.Generator().manual_seed(0)))
    shards = [shard_indices(order, r, 3) for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]
    assert sorted(set(sum(shards, []))) == sorted(order)
    assert shard_indices(order, 0, 1) == order
    assert [len(shard_indices(range(5), r, 2, pad=False)) for r in range(2)] == [3, 2]


def test_single_process_context_is_inert(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = setup(torch.device("cpu"))
    assert ctx == DistContext() and ctx.is_main and not ctx.enabled
    t = torch.ones(2)
    assert ctx.all_reduce_sum(t) is t and ctx.all_gather_tensor(t).shape == (1, 2)


def test_two_gloo_processes_end_with_identical_weights(tmp_path):
    from safetensors.torch import load_file

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        __file__, str(tmp_path),
    ]
    # A session of its own, so that on a timeout the launcher and both workers are ended together.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr[-3000:]
    w0 = load_file(str(tmp_path / "rank0.safetensors"))
    w1 = load_file(str(tmp_path / "rank1.safetensors"))
    assert w0.keys() == w1.keys()
    for key in w0:
        assert torch.equal(w0[key], w1[key]), key
    # 20 items over 2 ranks = 10 per rank = 3 batches of 4 per epoch, 2 epochs; the stream
    # stops at the shorter shard's 3 batches per epoch.
    assert (tmp_path / "rank0.txt").read_text().split() == ["2", "6", "6"]
    assert (tmp_path / "rank1.txt").read_text().split() == ["2", "6", "6"]
    expected = [{"rank": r, "text": "ab" * (50 * r + 1)} for r in range(2)]
    for rank in range(2):
        assert json.loads((tmp_path / f"objects{rank}.json").read_text()) == expected
    s0 = load_file(str(tmp_path / "stream0.safetensors"))
    s1 = load_file(str(tmp_path / "stream1.safetensors"))
    assert all(torch.equal(s0[k], s1[k]) for k in s0)
    # Rank 0 alone wrote the run's files, and they load.
    run = tmp_path / "run"
    rows = (run / "log.csv").read_text().splitlines()
    assert len(rows) == 1 + 6
    loaded = embedseg.load(run)
    for key, value in loaded.network.state_dict().items():
        assert torch.equal(value, w0[key])
    # Training moved the weights away from their seeded initialization (so the equality above
    # comes from synchronized gradients: the two ranks saw different shards).
    torch.manual_seed(0)
    init = embedseg.create_network("point_mlp", in_features=2, dim=4, hidden=16).state_dict()
    assert any(not torch.equal(init[k], w0[k]) for k in w0)


if __name__ == "__main__":
    worker(sys.argv[1])
