"""Instance matching against explicit masks, a brute-force float64 matching and SciPy's
assignment solver."""

import itertools

import numpy as np
import pytest

from embedseg.metrics import DEFAULT_THRESHOLDS, iou_matrix, matching, matching_dataset
from embedseg.metrics._assignment import linear_sum_assignment


def _iou_reference(t, p):
    """IoU by explicit masks, the slow obvious way."""
    ti = [i for i in np.unique(t) if i != 0]
    pi = [j for j in np.unique(p) if j != 0]
    out = np.zeros((len(ti), len(pi)))
    for a, i in enumerate(ti):
        for b, j in enumerate(pi):
            inter = np.logical_and(t == i, p == j).sum()
            union = np.logical_or(t == i, p == j).sum()
            out[a, b] = inter / union
    return out


def _best_matching(iou, thresh):
    """The definition, by enumeration: the one-to-one pairing with the most pairs of IoU >=
    thresh and, among those, the largest sum of their IoUs. Returns (tp, sum of IoU)."""
    n_true, n_pred = iou.shape
    best = (0, 0.0)

    def visit(row, used, count, total):
        nonlocal best
        if row == n_true:
            if count > best[0] or (count == best[0] and total > best[1] + 1e-12):
                best = (count, total)
            return
        visit(row + 1, used, count, total)  # this true instance stays unmatched
        for col in range(n_pred):
            if col not in used and iou[row, col] >= thresh:
                visit(row + 1, used | {col}, count + 1, total + iou[row, col])

    visit(0, frozenset(), 0, 0.0)
    return best


def _random_pair(rng, size=14, max_objects=5):
    """True and predicted maps of rectangles, the prediction shifted, grown, merged or missing."""
    t = np.zeros((size, size), np.int64)
    p = np.zeros((size, size), np.int64)
    for k in range(1, int(rng.integers(1, max_objects + 1)) + 1):
        y, x = rng.integers(0, size - 3, 2)
        h, w = rng.integers(2, 6, 2)
        t[y : y + h, x : x + w] = k
        if rng.random() < 0.85:
            dy, dx = rng.integers(-1, 2, 2)
            dh, dw = rng.integers(-1, 2, 2)
            y2, x2 = max(0, y + dy), max(0, x + dx)
            p[y2 : y2 + max(1, h + dh), x2 : x2 + max(1, w + dw)] = int(rng.integers(1, 4)) * 10 + k
    if rng.random() < 0.5:  # a false detection
        y, x = rng.integers(0, size - 2, 2)
        p[y : y + 2, x : x + 2] = 99
    return t, p


@pytest.mark.parametrize("seed", range(40))
def test_matching_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    t, p = _random_pair(rng)
    iou = _iou_reference(t, p)
    np.testing.assert_allclose(iou_matrix(t, p), iou, rtol=0, atol=1e-15)
    got = matching(t, p, DEFAULT_THRESHOLDS)
    for th in DEFAULT_THRESHOLDS:
        tp, total = _best_matching(iou, th)
        m = got[th]
        assert (m["tp"], m["fp"], m["fn"]) == (tp, iou.shape[1] - tp, iou.shape[0] - tp), th
        assert m["mean_matched_iou"] * max(tp, 1) == pytest.approx(total, abs=1e-12)


def test_iou_matrix_matches_explicit_masks_with_gaps_in_ids():
    rng = np.random.default_rng(0)
    t = rng.choice([0, 3, 7, 100], size=(20, 30))
    p = rng.choice([0, 1, 2, 9, 65535], size=(20, 30))
    np.testing.assert_allclose(iou_matrix(t, p), _iou_reference(t, p))


@pytest.mark.parametrize("shape", [(0, 0), (0, 3), (1, 1), (2, 5), (5, 2), (4, 4), (6, 6), (3, 7)])
def test_assignment_is_optimal_by_enumeration(shape):
    rng = np.random.default_rng(sum(shape))
    for trial in range(20):
        # integer costs make many ties: the optimum value must still be found
        cost = rng.integers(-3, 3, shape).astype(float) if trial % 2 else rng.standard_normal(shape)
        rows, cols = linear_sum_assignment(cost)
        n, m = shape
        assert len(rows) == min(n, m) and len(set(rows)) == len(rows) and len(set(cols)) == len(cols)
        assert np.all(np.diff(rows) > 0)
        if n <= m:
            best = min((cost[np.arange(n), list(perm)].sum() for perm in itertools.permutations(range(m), n)), default=0.0)
        else:
            best = min((cost[list(perm), np.arange(m)].sum() for perm in itertools.permutations(range(n), m)), default=0.0)
        assert cost[rows, cols].sum() == pytest.approx(best, abs=1e-12)


def test_assignment_agrees_with_scipy_on_larger_matrices():
    scipy_optimize = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(1)
    for shape in [(40, 40), (30, 70), (70, 25)]:
        cost = rng.random(shape)
        rows, cols = linear_sum_assignment(cost)
        r, c = scipy_optimize.linear_sum_assignment(cost)
        assert cost[rows, cols].sum() == pytest.approx(cost[r, c].sum(), abs=1e-12)


def test_assignment_rejects_bad_costs():
    with pytest.raises(ValueError, match="2-D"):
        linear_sum_assignment(np.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        linear_sum_assignment(np.array([[0.0, np.inf]]))


def test_hand_computed_case():
    # true: A = 4 px, B = 4 px, C = 2 px. pred: A' = A exactly, B' covers 2 of B plus 1 bg,
    # D' is a false detection, C is missed.
    t = np.array([[1, 1, 0, 2, 2], [1, 1, 0, 2, 2], [0, 0, 0, 0, 0], [3, 3, 0, 0, 0]])
    p = np.array([[5, 5, 0, 6, 0], [5, 5, 0, 6, 6], [0, 0, 0, 0, 0], [0, 0, 0, 0, 8]])
    # IoU(A, A') = 1; IoU(B, B') = 3 / 4 (intersection 3, union 4); D' alone; C missed.
    m = matching(t, p, 0.5)
    assert (m["tp"], m["fp"], m["fn"]) == (2, 1, 1)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert m["ap"] == pytest.approx(2 / 4)
    assert m["mean_matched_iou"] == pytest.approx((1 + 0.75) / 2)
    assert m["panoptic_quality"] == pytest.approx((1 + 0.75) / (2 + 0.5 + 0.5))
    m80 = matching(t, p, 0.8)
    assert (m80["tp"], m80["fp"], m80["fn"]) == (1, 2, 2)
    assert m80["ap"] == pytest.approx(1 / 5)


def test_optimal_assignment_prefers_more_matches_over_greedy():
    # At a low threshold the greedy pairing (highest IoU first) takes t1-p1 and leaves nothing
    # for t2; the optimal assignment pairs t1-p2 and t2-p1.
    t = np.array([[2, 2, 1, 1, 1, 1, 0, 0, 0]])
    p = np.array([[0, 1, 1, 1, 1, 2, 2, 2, 2]])
    iou = iou_matrix(t, p)
    np.testing.assert_allclose(iou, [[3 / 5, 1 / 7], [1 / 5, 0]])
    assert matching(t, p, 0.1)["tp"] == 2 == _best_matching(iou, 0.1)[0]
    assert matching(t, p, 0.5)["tp"] == 1


def test_threshold_exactly_half_counts():
    t = np.array([[1, 1, 0, 0]])
    p = np.array([[1, 1, 1, 1]])  # IoU 0.5
    assert matching(t, p, 0.5)["tp"] == 1
    assert matching(t, p, 0.55)["tp"] == 0


def test_empty_maps():
    z = np.zeros((4, 4), dtype=np.int64)
    one = z.copy()
    one[:2, :2] = 1
    m = matching(z, z, 0.5)
    assert m["ap"] == 1.0 and m["f1"] == 1.0
    m = matching(one, z, 0.5)
    assert (m["tp"], m["fn"], m["fp"]) == (0, 1, 0) and m["recall"] == 0.0 and m["ap"] == 0.0
    m = matching(z, one, 0.5)
    assert m["precision"] == 0.0


def test_dataset_pools_counts_over_images():
    rng = np.random.default_rng(3)
    pairs = [_random_pair(rng, max_objects=6) for _ in range(7)]
    got = matching_dataset([t for t, _ in pairs], [p for _, p in pairs])
    assert sorted(got) == list(DEFAULT_THRESHOLDS)
    for th in DEFAULT_THRESHOLDS:
        per_image = [matching(t, p, th) for t, p in pairs]
        tp = sum(m["tp"] for m in per_image)
        fp = sum(m["fp"] for m in per_image)
        fn = sum(m["fn"] for m in per_image)
        sum_iou = sum(m["mean_matched_iou"] * m["tp"] for m in per_image)
        g = got[th]
        assert (g["tp"], g["fp"], g["fn"]) == (tp, fp, fn)
        assert g["ap"] == pytest.approx(tp / (tp + fp + fn))
        assert g["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
        assert g["precision"] == pytest.approx(tp / (tp + fp))
        assert g["recall"] == pytest.approx(tp / (tp + fn))
        assert g["panoptic_quality"] == pytest.approx(sum_iou / (tp + fp / 2 + fn / 2))


def test_dataset_hand_case_and_single_threshold():
    t1, p1 = np.array([[1, 1, 0, 2, 2]]), np.array([[1, 1, 0, 2, 0]])
    t2, p2 = np.array([[1, 1, 1, 0, 0]]), np.array([[0, 0, 0, 0, 4]])
    m = matching(t1, p1)
    assert sorted(m) == list(DEFAULT_THRESHOLDS)
    assert m[0.5]["tp"] == 2 and m[0.55]["tp"] == 1
    d = matching_dataset([t1, t2], [p1, p2], 0.5)
    assert (d["tp"], d["fp"], d["fn"]) == (2, 1, 1)
    assert d["ap"] == pytest.approx(0.5)


def test_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        iou_matrix(np.zeros((2, 2), int), np.zeros((2, 3), int))
    with pytest.raises(ValueError, match=">= 0"):
        iou_matrix(np.array([[-1, 0]]), np.array([[0, 0]]))
    with pytest.raises(TypeError, match="integer"):
        iou_matrix(np.array([[0.5, 0]]), np.array([[0, 0]]))
    with pytest.raises(ValueError, match="thresholds"):
        matching(np.zeros((2, 2), int), np.zeros((2, 2), int), 1.5)
    with pytest.raises(ValueError, match="must not be empty"):
        matching(np.zeros((2, 2), int), np.zeros((2, 2), int), [])
    with pytest.raises(ValueError, match="as many items"):
        matching_dataset([np.zeros((2, 2), int)], [])
    with pytest.raises(ValueError, match="no items were scored"):
        matching_dataset([], [])
