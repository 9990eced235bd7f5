"""The accumulator base class: states, reductions, reset, merge, state dicts, sync."""

import pickle

import pytest
import torch

from embedseg.metrics import REDUCTIONS, MeanMetric, Metric


class Stats(Metric):
    """One state of each reduction, over the values it is given."""

    def __init__(self):
        super().__init__()
        self.add_state("total", 0.0)
        self.add_state("count", 0)
        self.add_state("largest", torch.tensor(float("-inf")), reduce="max")
        self.add_state("smallest", torch.tensor(float("inf")), reduce="min")
        self.add_state("values", [], reduce="cat")

    def update(self, x):
        x = torch.as_tensor(x, dtype=torch.float64).reshape(-1)
        self.total = self.total + x.sum()
        self.count = self.count + x.numel()
        self.largest = torch.maximum(self.largest, x.max())
        self.smallest = torch.minimum(self.smallest, x.min())
        self.values.append(x)

    def compute(self):
        if int(self.count) == 0:
            raise self._no_items()
        return {
            "total": float(self.total),
            "count": int(self.count),
            "largest": float(self.largest),
            "smallest": float(self.smallest),
            "values": torch.cat(self.values).tolist(),
        }


class Pair(Metric):
    """A metric with two children and a state of its own."""

    def __init__(self):
        super().__init__()
        self.left = Stats()
        self.right = MeanMetric()
        self.add_state("calls", 0)

    def update(self, x):
        self.left.update(x)
        self.right.update(x)
        self.calls = self.calls + 1

    def compute(self):
        return {"left": self.left.compute(), "right": self.right.compute(), "calls": int(self.calls)}


def _reference(parts):
    flat = [v for p in parts for v in p]
    return {"total": sum(flat), "count": len(flat), "largest": max(flat), "smallest": min(flat), "values": flat}


def test_every_reduction_merges_as_one_pass():
    parts = [[3.0, -1.0], [7.5], [0.25, 2.0, -4.0]]
    whole = Stats()
    for p in parts:
        whole.update(p)
    a, b = Stats(), Stats()
    a.update(parts[0])
    b.update(parts[1])
    b.update(parts[2])
    assert a.merge(b).compute() == whole.compute() == _reference(parts)
    assert set(REDUCTIONS) == {"sum", "cat", "max", "min"}


def test_merge_with_an_empty_accumulator_changes_nothing():
    a = Stats()
    a.update([1.0, 2.0])
    want = a.compute()
    assert a.merge(Stats()).compute() == want
    assert Stats().merge(a).compute() == want


def test_reset_restores_defaults_and_empty():
    m = Pair()
    assert m.empty
    m.update([1.0, 2.0])
    assert not m.empty and not m.left.empty
    m.reset()
    assert m.empty and m.left.values == [] and float(m.left.largest) == float("-inf")
    with pytest.raises(ValueError, match="no items were scored"):
        m.left.compute()
    m.update([5.0])
    assert m.compute()["left"]["values"] == [5.0]


def test_state_dict_round_trip_with_children_and_pickle():
    m = Pair()
    m.update([1.0, 2.0])
    m.update([-3.0])
    state = m.state_dict()
    assert set(state) == {"left", "right", "calls"} and isinstance(state["left"], dict)
    assert all(isinstance(v, torch.Tensor) for v in state["left"].values())
    assert state["left"]["values"].tolist() == [1.0, 2.0, -3.0]  # a "cat" state as one tensor
    again = Pair().load_state_dict(pickle.loads(pickle.dumps(state)))
    assert again.compute() == m.compute()
    # the state dict is a copy: changing the accumulator afterwards leaves it as it was
    m.update([10.0])
    assert Pair().load_state_dict(state).compute() == again.compute()


def test_empty_state_dict_round_trip():
    state = Stats().state_dict()
    assert Stats().load_state_dict(state).empty


def test_sync_pools_every_process_state():
    parts = [[1.0, 2.0], [3.0], [4.0, 5.0, 6.0]]
    ranks = [Stats() for _ in parts]
    for m, p in zip(ranks, parts):
        m.update(p)
    states = [m.state_dict() for m in ranks]

    def gather(obj):  # what every process receives from an all-gather, rank order
        return [obj if i == 1 else s for i, s in enumerate(states)]

    assert ranks[1].sync(gather).compute() == _reference(parts)
    single = Stats()
    single.update(parts[0])
    assert single.sync(lambda obj: [obj]).compute() == _reference(parts[:1])


def test_merge_and_load_reject_what_does_not_fit():
    m = Stats()
    with pytest.raises(TypeError, match="'other' must be a Stats"):
        m.merge(MeanMetric())
    bad = Stats().state_dict()
    del bad["count"]
    with pytest.raises(ValueError, match="'state' must hold the states"):
        m.load_state_dict(bad)
    bad = Stats().state_dict()
    bad["total"] = torch.zeros(3)
    with pytest.raises(ValueError, match="State 'total' of Stats must have shape"):
        m.merge(bad)
    with pytest.raises(TypeError, match="'state' must be a dict"):
        m.merge([1, 2])
    # a failed load leaves the accumulator as it was
    m.update([1.0])
    with pytest.raises(ValueError):
        m.load_state_dict({"total": torch.tensor(0.0)})
    assert m.compute()["values"] == [1.0]


def test_add_state_checks_its_arguments():
    m = Metric()
    with pytest.raises(ValueError, match="'reduce' parameter of add_state must be one of"):
        m.add_state("x", 0.0, reduce="mean")
    with pytest.raises(ValueError, match="default' of a 'cat' state must be"):
        m.add_state("x", torch.zeros(2), reduce="cat")
    with pytest.raises(TypeError, match="'default' of state 'x'"):
        m.add_state("x", "zero")
    with pytest.raises(ValueError, match="must be a new name"):
        m.add_state("compute", 0.0)
    m.add_state("x", 1)
    assert m.x.dtype == torch.int64
    with pytest.raises(ValueError, match="must be a new name"):
        m.add_state("x", 0.0)
    with pytest.raises(ValueError, match="not starting with '_'"):
        m.add_state("_hidden", 0.0)

    class Forgot(Metric):
        def __init__(self):
            self.add_state("x", 0.0)

    with pytest.raises(TypeError, match="must call Metric.__init__"):
        Forgot()


def test_states_are_detached_cpu_copies_of_tensor_defaults():
    default = torch.ones(2, requires_grad=True)
    m = Metric()
    m.add_state("x", default)
    m.x = m.x + 1
    assert default.tolist() == [1.0, 1.0] and m.reset().x.tolist() == [1.0, 1.0]
    assert not m.x.requires_grad


def test_base_update_and_compute_are_abstract():
    with pytest.raises(NotImplementedError):
        Metric().update(1)
    with pytest.raises(NotImplementedError):
        Metric().compute()
