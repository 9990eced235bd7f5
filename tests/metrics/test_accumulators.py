"""Accumulators: any split of the data, or merged halves, give one pass over all of it, and
that pass equals the functional reference."""

import pickle

import numpy as np
import pytest
import torch

from embedseg.metrics import (
    DEFAULT_THRESHOLDS,
    InstanceMatching,
    ItemMean,
    MeanMetric,
    SeparationMetrics,
    matching,
    separation_scores,
)

from .test_matching import _random_pair


def _splits(n, rng):
    """Random consecutive batches (some empty) covering range(n)."""
    cuts = sorted(rng.integers(0, n + 1, size=int(rng.integers(0, 4))).tolist())
    bounds = [0, *cuts, n]
    return [list(range(a, b)) for a, b in zip(bounds[:-1], bounds[1:])]


def _fed(metric, batches, update):
    for batch in batches:
        update(metric, batch)
    return metric


def _close(a, b):
    """Equal dicts of numbers (nested by threshold for matching): ints exactly, floats to 1e-12."""
    if isinstance(a, dict):
        assert set(a) == set(b)
        for k in a:
            _close(a[k], b[k])
    elif isinstance(a, int):
        assert a == b
    else:
        assert a == pytest.approx(b, rel=1e-12, abs=1e-12)


# -- the same checks for every accumulator ---------------------------------------------------
def _mean_case(rng):
    values = rng.standard_normal(9)
    weights = rng.random(9) + 0.1
    want = float((values * weights).sum() / weights.sum())
    return MeanMetric, len(values), lambda m, idx: m.update(values[idx], weights[idx]) if idx else None, want


def _item_case(rng):
    truth, pred = rng.integers(0, 3, 11), rng.integers(0, 3, 11)

    def per_item(t, p):
        return [{"correct": float(a == b), "gap": float(abs(a - b))} for a, b in zip(t, p)]

    want = {"correct": float(np.mean(truth == pred)), "gap": float(np.mean(np.abs(truth - pred)))}
    return lambda: ItemMean(per_item), len(truth), lambda m, idx: m.update(truth[idx], pred[idx]), want


def _matching_case(rng):
    pairs = [_random_pair(rng, max_objects=6) for _ in range(8)]
    # the reference: StarDist's pooling written out from per-image matching
    want = {}
    for th in DEFAULT_THRESHOLDS:
        per = [matching(t, p, th) for t, p in pairs]
        tp = sum(m["tp"] for m in per)
        fp = sum(m["fp"] for m in per)
        fn = sum(m["fn"] for m in per)
        want[th] = {"ap": tp / (tp + fp + fn), "f1": 2 * tp / (2 * tp + fp + fn), "tp": tp, "fp": fp, "fn": fn}

    def update(m, idx):
        m.update([pairs[i][0] for i in idx], [pairs[i][1] for i in idx])

    return InstanceMatching, len(pairs), update, want


def _separation_items(rng, n=7):
    g = torch.Generator().manual_seed(int(rng.integers(1 << 30)))
    items = []
    for _ in range(n):
        c = int(rng.integers(2, 4))
        length = int(rng.choice([600, 900]))
        ref = torch.randn(c, length, generator=g, dtype=torch.float64)
        n_est = int(rng.integers(c - 1, c + 2))
        est = ref[torch.randperm(c, generator=g)][: min(n_est, c)] + 0.3 * torch.randn(min(n_est, c), length, generator=g, dtype=torch.float64)
        if n_est > c:
            est = torch.cat([est, torch.randn(n_est - c, length, generator=g, dtype=torch.float64)])
        items.append((ref, est.float(), ref.sum(0)))
    return items


def _separation_reference(items, bss_eval):
    """The mean over items of each item's mean over sources, missing estimates as the mixture."""
    rows = []
    for ref, est, mix in items:
        c = ref.shape[0]
        e = est.double()
        if e.shape[0] < c:
            e = torch.cat([e, mix.expand(c - e.shape[0], -1)])
        scores = separation_scores(ref[None], e[None], mix[None], bss_eval=bss_eval)
        row = {k: float(v.mean()) for k, v in scores.items()}
        row["count_accuracy"] = float(est.shape[0] == c)
        rows.append(row)
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def _separation_case(rng, bss_eval=False):
    items = _separation_items(rng)

    def update(m, idx):
        m.update([items[i][0] for i in idx], [items[i][1] for i in idx], [items[i][2] for i in idx])

    return (lambda: SeparationMetrics(bss_eval=bss_eval)), len(items), update, _separation_reference(items, bss_eval)


def _check(metric, want):
    got = metric.compute()
    if isinstance(metric, InstanceMatching):
        got = {th: {k: got[th][k] for k in want[th]} for th in want}
    _close(got, want)


CASES = {"mean": _mean_case, "item_mean": _item_case, "matching": _matching_case, "separation": _separation_case}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("seed", range(4))
def test_any_split_equals_one_pass_and_the_reference(case, seed):
    rng = np.random.default_rng(seed)
    make, n, update, want = CASES[case](rng)
    _check(_fed(make(), [list(range(n))], update), want)
    for _ in range(3):
        _check(_fed(make(), _splits(n, rng), update), want)


@pytest.mark.parametrize("case", CASES)
def test_merged_halves_equal_one_pass(case):
    rng = np.random.default_rng(11)
    make, n, update, want = CASES[case](rng)
    half = n // 2
    a = _fed(make(), [list(range(half))], update)
    b = _fed(make(), [list(range(half, n))], update)
    _check(a.merge(b), want)
    # through state dicts, as processes exchange them, and through pickle
    c = _fed(make(), [list(range(half))], update)
    d_state = pickle.loads(pickle.dumps(_fed(make(), [list(range(half, n))], update).state_dict()))
    _check(c.merge(d_state), want)
    # sync: every process ends with the whole
    states = [_fed(make(), [idx], update).state_dict() for idx in (list(range(half)), list(range(half, n)))]
    _check(_fed(make(), [list(range(half))], update).sync(lambda own: [own, states[1]]), want)


@pytest.mark.parametrize("case", CASES)
def test_reset_and_state_dict_round_trip(case):
    rng = np.random.default_rng(5)
    make, n, update, want = CASES[case](rng)
    m = _fed(make(), [list(range(n))], update)
    again = make().load_state_dict(m.state_dict())
    _check(again, want)
    m.reset()
    assert m.empty
    with pytest.raises(ValueError, match="no items were scored"):
        m.compute()
    _check(_fed(m, [list(range(n))], update), want)


@pytest.mark.parametrize("case", CASES)
def test_empty_compute_raises(case):
    make = CASES[case](np.random.default_rng(0))[0]
    with pytest.raises(ValueError, match="no items were scored"):
        make().compute()


def test_separation_with_bss_eval_equals_the_reference():
    rng = np.random.default_rng(2)
    make, n, update, want = _separation_case(rng, bss_eval=True)
    assert set(want) == {"sdr", "sdri", "si_sdr", "si_sdri", "count_accuracy"}
    _check(_fed(make(), _splits(n, rng), update), want)


# -- accumulator-specific behaviour ----------------------------------------------------------
def test_mean_metric_weights_infinity_and_errors():
    m = MeanMetric()
    m.update(torch.tensor([1.0, 3.0]))
    m.update(float("inf"), weight=0.0)  # weighs nothing
    assert m.compute() == 2.0
    m.update(5.0, weight=2.0)
    assert m.compute() == pytest.approx((1 + 3 + 10) / 4)
    with pytest.raises(ValueError, match="'value' must not be NaN"):
        m.update(float("nan"))
    with pytest.raises(ValueError, match="'weight' must be finite and >= 0"):
        m.update(1.0, weight=-1.0)
    with pytest.raises(ValueError, match="'weight' must be a number or have the shape"):
        m.update([1.0, 2.0], weight=[1.0, 2.0, 3.0])
    zero = MeanMetric()
    zero.update(4.0, weight=0.0)
    with pytest.raises(ValueError, match="no items were scored"):
        zero.compute()


def test_item_mean_takes_one_item_or_many_and_checks_names():
    m = ItemMean(lambda a, b: {"sum": a + b})
    m.update(1, 2)
    m.update(3, 4)
    assert m.compute() == {"sum": 5.0}
    with pytest.raises(ValueError, match="must give the scores \\['sum'\\] for every item"):
        ItemMean(lambda: [{"sum": 1}, {"other": 2}]).update()
    other = ItemMean(lambda: {"other": 1.0})
    other.update()
    with pytest.raises(ValueError, match="must score the names"):
        m.merge(other)
    with pytest.raises(ValueError, match="not NaN"):
        ItemMean(lambda: {"x": float("nan")}).update()
    with pytest.raises(TypeError, match="must return a mapping of scores"):
        ItemMean(lambda: 3.0).update()
    with pytest.raises(TypeError, match="must be callable"):
        ItemMean("not a function")
    # an empty accumulator (e.g. a process that saw no data) merges with any
    assert ItemMean(lambda: {}).merge(m).compute() == {"sum": 5.0}
    assert m.merge(ItemMean(lambda: {"other": 0.0})).compute() == {"sum": 5.0}


def test_instance_matching_single_threshold_and_settings():
    t, p = np.array([[1, 1, 0, 2, 2]]), np.array([[1, 1, 0, 2, 0]])
    m = InstanceMatching(0.5)
    m.update([t], [p])
    assert m.compute() == matching(t, p, 0.5)
    with pytest.raises(ValueError, match="must match at the thresholds"):
        m.merge(InstanceMatching([0.5, 0.75]))
    with pytest.raises(ValueError, match="as many items"):
        m.update([t, t], [p])
    with pytest.raises(TypeError, match="'y_true' must be a sequence of items"):
        m.update(7, [p])
    bad = np.array([[1, 1, 0, 2, 2, 0]])
    before = m.state_dict()
    with pytest.raises(ValueError, match="same shape"):
        m.update([t, bad], [p, p])
    # a failed update adds nothing, not even the images before the bad one
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_separation_metrics_checks_items_and_settings():
    ref = torch.randn(2, 500, dtype=torch.float64)
    m = SeparationMetrics(bss_eval=False)
    with pytest.raises(ValueError, match="must have the same length"):
        m.update([ref], [ref[:, :400]], [ref.sum(0)])
    with pytest.raises(ValueError, match="must have 2 dimensions"):
        m.update([ref[0]], [ref], [ref.sum(0)])
    with pytest.raises(ValueError, match="as many items"):
        m.update([ref, ref], [ref], [ref.sum(0)])
    with pytest.raises(ValueError, match="'other' must have bss_eval, filter_length"):
        m.merge(SeparationMetrics())
    with pytest.raises(TypeError, match="'bss_eval' parameter of SeparationMetrics must be a bool"):
        SeparationMetrics(bss_eval=1)
    with pytest.raises(ValueError, match="'filter_length' parameter of SeparationMetrics"):
        SeparationMetrics(filter_length=0)
    assert m.empty


def test_separation_missing_estimates_count_as_the_mixture():
    g = torch.Generator().manual_seed(3)
    ref = torch.randn(3, 800, generator=g, dtype=torch.float64)
    mix = ref.sum(0)
    m = SeparationMetrics()
    m.update([ref], [torch.empty(0, 800, dtype=torch.float64)], [mix])  # nothing separated
    got = m.compute()
    assert got["count_accuracy"] == 0.0
    assert got["sdri"] == pytest.approx(0.0, abs=1e-9) and got["si_sdri"] == pytest.approx(0.0, abs=1e-9)
