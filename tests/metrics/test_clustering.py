"""The adjusted Rand index against scikit-learn's."""

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from embedseg.metrics import adjusted_rand_index


@pytest.mark.parametrize("seed", range(6))
def test_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 5, size=(13, 17))
    p = (t + (rng.random(t.shape) < 0.3) * rng.integers(0, 7, size=t.shape)) % 6
    assert adjusted_rand_index(t, p) == pytest.approx(adjusted_rand_score(t.ravel(), p.ravel()), abs=1e-12)


def test_tensors_and_gaps_in_ids():
    rng = np.random.default_rng(7)
    t = rng.choice([0, 3, 7, 100], size=(20, 30))
    p = rng.choice([0, 1, 65535], size=(20, 30))
    want = adjusted_rand_score(t.ravel(), p.ravel())
    assert adjusted_rand_index(torch.from_numpy(t), torch.from_numpy(p)) == pytest.approx(want, abs=1e-12)


def test_invariant_to_relabeling_and_degenerate_cases():
    t = np.array([[0, 0, 1, 1, 2, 2]])
    assert adjusted_rand_index(t, t * 10 + 3) == pytest.approx(1.0)
    assert adjusted_rand_index(np.zeros((3, 3), int), np.zeros((3, 3), int)) == 1.0
    assert adjusted_rand_index(t, np.zeros_like(t)) == pytest.approx(adjusted_rand_score(t.ravel(), np.zeros(6)))
    singletons = np.arange(5)
    assert adjusted_rand_index(singletons, singletons[::-1].copy()) == adjusted_rand_score(singletons, singletons[::-1])
    assert adjusted_rand_index(np.array([4]), np.array([0])) == adjusted_rand_score([4], [0])


def test_bad_inputs():
    with pytest.raises(ValueError, match="same size"):
        adjusted_rand_index(np.zeros(4, int), np.zeros(5, int))
    with pytest.raises(ValueError, match=">= 0"):
        adjusted_rand_index(np.array([-1, 0]), np.array([0, 0]))
    with pytest.raises(TypeError, match="integer label map"):
        adjusted_rand_index(np.array([0.5, 0.0]), np.array([0, 0]))
