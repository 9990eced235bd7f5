import pytest
import torch

from embedseg import _validation as v


def test_check_int_messages_follow_sklearn():
    assert v.check_int(3, "n_clusters", "KMeans", 1) == 3
    with pytest.raises(ValueError, match=r"The 'n_clusters' parameter of KMeans must be an int in \[1, inf\). Got 0 instead."):
        v.check_int(0, "n_clusters", "KMeans", 1)
    with pytest.raises(TypeError, match=r"must be an int in \[1, inf\). Got 'two' \(str\) instead."):
        v.check_int("two", "n_clusters", "KMeans", 1)
    with pytest.raises(TypeError):
        v.check_int(True, "n_clusters", "KMeans", 1)


def test_check_float_interval_kinds():
    assert v.check_float(0.5, "tol", "KMeans", 0, None, closed="left") == 0.5
    with pytest.raises(ValueError, match=r"\(0, inf\)"):
        v.check_float(0.0, "tol", "KMeans", 0, None, closed="neither")
    with pytest.raises(ValueError):
        v.check_float(float("nan"), "tol", "KMeans")


def test_check_choice_lists_choices():
    with pytest.raises(ValueError, match=r"must be one of 'a', 'b'. Got 'c' instead."):
        v.check_choice("c", "metric", "KMeans", ["a", "b"])


def test_check_tensor_rank_dtype_and_finite():
    x = torch.zeros(2, 3, 4)
    assert v.check_embeddings(x) is x
    with pytest.raises(ValueError, match=r"'X' must have 3 dimensions \(batch, n_points, dim\). Got a tensor of shape \(3, 4\)"):
        v.check_embeddings(torch.zeros(3, 4))
    with pytest.raises(TypeError, match="floating-point"):
        v.check_embeddings(torch.zeros(2, 3, 4, dtype=torch.int64))
    bad = x.clone()
    bad[0, 1, 2] = float("nan")
    with pytest.raises(ValueError, match="1 NaN or infinite"):
        v.check_embeddings(bad)
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        v.check_embeddings([[1.0]])
    with pytest.raises(ValueError, match="at least one point"):
        v.check_embeddings(torch.zeros(2, 0, 4))


def test_check_mask_labels_weights():
    dev = torch.device("cpu")
    assert v.check_mask(None, (2, 3), dev).all()
    with pytest.raises(TypeError, match="torch.bool"):
        v.check_mask(torch.ones(2, 3), (2, 3), dev)
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        v.check_mask(torch.ones(2, 4, dtype=torch.bool), (2, 3), dev)
    with pytest.raises(TypeError, match="integer dtype"):
        v.check_labels(torch.zeros(2, 3), (2, 3))
    with pytest.raises(ValueError, match=">= 0"):
        v.check_weights(-torch.ones(2, 3), (2, 3))


def test_check_float_rejects_infinity_unless_allowed():
    for bad in (float("inf"), -float("inf")):
        with pytest.raises(ValueError, match=r"The 'lr' parameter of fit must be a float in \(0, inf\)\. Got -?inf instead\."):
            v.check_float(bad, "lr", "fit", 0.0, None, closed="neither")
        with pytest.raises(ValueError, match=r"must be a float in \(-inf, inf\)\. Got -?inf"):
            v.check_float(bad, "x", "f")
    with pytest.raises(ValueError, match=r"\[0, 1\]\. Got inf"):
        v.check_float(float("inf"), "p", "f", 0.0, 1.0)
    # Opted in: infinity is a value (the message shows the closed end), the bounds still apply.
    assert v.check_float(float("inf"), "max_minutes", "fit", 0.0, None, closed="neither", allow_inf=True) == float("inf")
    with pytest.raises(ValueError, match=r"must be a float in \(0, inf\]\. Got -inf instead\."):
        v.check_float(-float("inf"), "max_minutes", "fit", 0.0, None, closed="neither", allow_inf=True)
    with pytest.raises(ValueError, match=r"Got nan"):
        v.check_float(float("nan"), "x", "f", allow_inf=True)
    with pytest.raises(ValueError, match=r"The 'x' parameter of f must be a float in \(-inf, inf\)\. Got 1000"):
        v.check_float(10**400, "x", "f")  # too large for a float
