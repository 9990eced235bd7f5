import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from domains.image.metrics import (
    adjusted_rand_index,
    instance_metrics,
    iou_matrix,
    matching,
    matching_dataset,
)


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


def test_iou_matrix_matches_explicit_masks_with_gaps_in_ids():
    rng = np.random.default_rng(0)
    t = rng.choice([0, 3, 7, 100], size=(20, 30))
    p = rng.choice([0, 1, 2, 9, 65535], size=(20, 30))
    np.testing.assert_allclose(iou_matrix(t, p), _iou_reference(t, p))


def test_hand_computed_case():
    # true: A = 4 px, B = 4 px, C = 2 px. pred: A' = A exactly, B' covers 2 of B plus 1 bg,
    # D' is a false detection, C is missed.
    t = np.array(
        [
            [1, 1, 0, 2, 2],
            [1, 1, 0, 2, 2],
            [0, 0, 0, 0, 0],
            [3, 3, 0, 0, 0],
        ]
    )
    p = np.array(
        [
            [5, 5, 0, 6, 0],
            [5, 5, 0, 6, 6],
            [0, 0, 0, 0, 0],
            [0, 0, 0, 0, 8],
        ]
    )
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


def test_hungarian_prefers_more_matches_over_greedy():
    # One predicted object overlaps two true objects; greedy by IoU would steal the pair that
    # leaves the second prediction unmatched. Optimal assignment matches both.
    t = np.array([[1, 1, 1, 2, 2, 2, 2, 0]])
    p = np.array([[1, 1, 2, 2, 2, 2, 2, 0]])
    # IoU(t1, p1) = 2/3, IoU(t2, p2) = 4/5, IoU(t1, p2) = 1/7.
    m = matching(t, p, 0.5)
    assert m["tp"] == 2
    np.testing.assert_allclose(iou_matrix(t, p), [[2 / 3, 1 / 7], [0, 4 / 5]])


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


def test_several_thresholds_and_dataset_pooling():
    t1 = np.array([[1, 1, 0, 2, 2]])
    p1 = np.array([[1, 1, 0, 2, 0]])
    t2 = np.array([[1, 1, 1, 0, 0]])
    p2 = np.array([[0, 0, 0, 0, 4]])
    m = matching(t1, p1)
    assert sorted(m) == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9]
    assert m[0.5]["tp"] == 2 and m[0.55]["tp"] == 1
    d = matching_dataset([t1, t2], [p1, p2], 0.5)
    assert (d["tp"], d["fp"], d["fn"]) == (2, 1, 1)
    assert d["ap"] == pytest.approx(0.5)


@pytest.mark.parametrize("seed", range(5))
def test_ari_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 5, size=(13, 17))
    p = (t + (rng.random(t.shape) < 0.3) * rng.integers(0, 7, size=t.shape)) % 6
    assert adjusted_rand_index(t, p) == pytest.approx(adjusted_rand_score(t.ravel(), p.ravel()), abs=1e-12)


def test_ari_invariant_to_relabeling_and_degenerate_cases():
    t = np.array([[0, 0, 1, 1, 2, 2]])
    assert adjusted_rand_index(t, t * 10 + 3) == pytest.approx(1.0)
    assert adjusted_rand_index(np.zeros((3, 3), int), np.zeros((3, 3), int)) == 1.0
    assert adjusted_rand_index(t, np.zeros_like(t)) == pytest.approx(
        adjusted_rand_score(t.ravel(), np.zeros(6))
    )


def test_instance_metrics_keys_and_perfect_score():
    t = np.array([[1, 1, 0, 2, 2], [0, 0, 0, 3, 3]])
    m = instance_metrics(t, t * 2)
    assert m["ap50"] == m["ap"] == m["f1"] == m["pq"] == m["ari"] == pytest.approx(1.0)


def test_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        iou_matrix(np.zeros((2, 2), int), np.zeros((2, 3), int))
    with pytest.raises(ValueError, match=">= 0"):
        iou_matrix(np.array([[-1, 0]]), np.array([[0, 0]]))
    with pytest.raises(TypeError, match="integer"):
        iou_matrix(np.array([[0.5, 0]]), np.array([[0, 0]]))
    with pytest.raises(ValueError, match="thresholds"):
        matching(np.zeros((2, 2), int), np.zeros((2, 2), int), 1.5)
