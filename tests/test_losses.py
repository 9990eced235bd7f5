"""Deep-clustering losses against explicit float64 n x n computations."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch

import embedseg.losses as losses_module
from embedseg.losses import (
    affinity_loss,
    magnitude_weights,
    voice_activity_weights,
    whitened_kmeans_loss,
)

LOSSES = [affinity_loss, whitened_kmeans_loss]


# ----------------------------------------------------------------------------- references


def reference_affinity(v, labels, weights=None):
    """Per-item Σ_ij w_i w_j (v_i·v_j − [y_i = y_j])² / (Σ w)² from the full n x n matrices."""
    out = []
    for b in range(v.shape[0]):
        vb = v[b].double()
        yb = labels[b]
        wb = (yb >= 0).double()
        if weights is not None:
            wb = wb * weights[b].double()
        same = (yb[:, None] == yb[None, :]).double()  # (n, n)
        err = (vb @ vb.T - same).square() * wb[:, None] * wb[None, :]
        z = wb.sum()
        out.append(err.sum() / z.square() if z > 0 else err.sum() * 0)
    return torch.stack(out)


def reference_whitened(v, labels, weights=None):
    """Per-item D − tr((VᵀWV)⁻¹ VᵀWY (YᵀWY)⁻¹ YᵀWV) with an explicit one-hot Y and inverses."""
    out = []
    dim = v.shape[2]
    for b in range(v.shape[0]):
        vb = v[b].double()
        yb = labels[b]
        wb = (yb >= 0).double()
        if weights is not None:
            wb = wb * weights[b].double()
        if wb.sum() == 0:
            out.append(vb.sum() * 0)
            continue
        classes = [c for c in torch.unique(yb[yb >= 0]).tolist() if wb[yb == c].sum() > 0]
        onehot = torch.stack([(yb == c).double() for c in classes], dim=1)  # (n, C)
        vwv = vb.T @ (wb[:, None] * vb)  # VᵀWV
        vwy = vb.T @ (wb[:, None] * onehot)  # VᵀWY
        ywy = onehot.T @ (wb[:, None] * onehot)  # YᵀWY
        inner = torch.linalg.inv(vwv) @ vwy @ torch.linalg.inv(ywy) @ vwy.T
        out.append(dim - torch.trace(inner))
    return torch.stack(out)


REFERENCES = {affinity_loss: reference_affinity, whitened_kmeans_loss: reference_whitened}


def unit(shape, *, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


def make_case(kind: str, seed: int = 0):
    """Embeddings, labels and weights covering one feature of the loss."""
    g = torch.Generator().manual_seed(seed)
    batch, n, dim = 3, 60, 6
    v = unit((batch, n, dim), seed=seed)
    labels = torch.randint(0, 3, (batch, n), generator=g)
    weights = None
    if kind == "weights":
        weights = torch.rand(batch, n, generator=g, dtype=torch.float64) * 2
        weights[0, :7] = 0
    elif kind == "padding":
        labels[0, 40:] = -1
        labels[2, 10:] = -1
        labels[1, ::5] = -7
    elif kind == "sparse_ids":
        # Item 0 uses {0, 3}, item 1 a single class, item 2 {2, 5, 9}.
        labels[0] = torch.where(labels[0] > 0, 3, 0)
        labels[1] = 4
        labels[2] = torch.tensor([2, 5, 9])[labels[2]]
    elif kind == "huge_ids":
        # Ids above n go through the per-item renumbering.
        labels = labels * 100_003 + torch.arange(batch)[:, None] * 7
        labels[1, :5] = -1
    elif kind == "unnormalized":
        # Neither loss needs unit-norm rows.
        v = v * (0.2 + 2 * torch.rand(batch, n, 1, generator=g, dtype=torch.float64))
        weights = torch.rand(batch, n, generator=g, dtype=torch.float64)
    elif kind == "mixed":
        weights = torch.rand(batch, n, generator=g, dtype=torch.float64)
        labels[0, 50:] = -1
        labels[1] = torch.where(labels[1] == 1, 8, labels[1])
        labels[2] = torch.randint(0, 6, (n,), generator=g)
    return v, labels, weights


CASES = ["plain", "weights", "padding", "sparse_ids", "huge_ids", "unnormalized", "mixed"]


# ----------------------------------------------------------------------------- values, gradients


@pytest.mark.parametrize("loss_fn", LOSSES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("kind", CASES)
def test_value_and_gradient_match_float64_reference(loss_fn, kind):
    v, labels, weights = make_case(kind)
    v = v.requires_grad_()
    got = loss_fn(v, labels, weights, reduction="none")
    want = REFERENCES[loss_fn](v, labels, weights)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    probe = torch.linspace(0.5, 1.5, v.shape[0], dtype=torch.float64)
    (g_got,) = torch.autograd.grad((got * probe).sum(), v)
    (g_want,) = torch.autograd.grad((want * probe).sum(), v)
    torch.testing.assert_close(g_got, g_want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("loss_fn", LOSSES, ids=lambda f: f.__name__)
def test_float32_matches_float64_reference(loss_fn):
    v, labels, weights = make_case("mixed", seed=3)
    v32 = v.float().requires_grad_()
    got = loss_fn(v32, labels, weights.float(), reduction="none")
    assert got.dtype == torch.float32
    want = REFERENCES[loss_fn](v, labels, weights)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)
    got.sum().backward()
    v64 = v.clone().requires_grad_()
    REFERENCES[loss_fn](v64, labels, weights).sum().backward()
    torch.testing.assert_close(v32.grad.double(), v64.grad, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("loss_fn", LOSSES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_reductions(loss_fn, reduction):
    v, labels, weights = make_case("weights", seed=1)
    per_item = REFERENCES[loss_fn](v, labels, weights)
    want = {"mean": per_item.mean(), "sum": per_item.sum(), "none": per_item}[reduction]
    got = loss_fn(v, labels, weights, reduction=reduction)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_affinity_hand_computed():
    v = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
    # Labels agree with the embeddings: every affinity is exact.
    assert float(affinity_loss(v, torch.tensor([[0, 0, 1]]))) == 0.0
    # Pairs (0,1) and (1,0) should be 0 but are 1; (1,2) and (2,1) should be 1 but are 0.
    torch.testing.assert_close(
        affinity_loss(v, torch.tensor([[0, 1, 1]])), torch.tensor(4 / 9, dtype=torch.float64)
    )
    # Weight 2 on element 2: errors (1,2),(2,1) weigh 2 each; total weight 4.
    w = torch.tensor([[1.0, 1.0, 2.0]], dtype=torch.float64)
    torch.testing.assert_close(
        affinity_loss(v, torch.tensor([[0, 1, 1]]), w), torch.tensor(6 / 16, dtype=torch.float64)
    )


def test_whitened_kmeans_perfect_embeddings_reach_lower_bound():
    # Embeddings equal to the one-hot class indicator span exactly the class subspace.
    labels = torch.tensor([[0, 0, 1, 2, 2, 2, 1, 0]])
    # (1, 8, 4): dim 4, 3 classes used; the fourth direction is dead (all zero), which the
    # ridge keeps finite.
    v = torch.nn.functional.one_hot(labels, 4).double()
    got = whitened_kmeans_loss(v, labels)
    # D − min(C, D) = 4 − 3; the dead direction contributes its full unit.
    torch.testing.assert_close(got, torch.tensor(1.0, dtype=torch.float64), rtol=0, atol=1e-8)


def test_whitened_kmeans_is_invariant_to_weight_scale():
    v, labels, weights = make_case("weights", seed=2)
    a = whitened_kmeans_loss(v, labels, weights, reduction="none")
    b = whitened_kmeans_loss(v, labels, 1000.0 * weights, reduction="none")
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_whitened_kmeans_rank_deficient_is_finite():
    # Fewer points than dimensions: VᵀV is singular, the ridge keeps loss and gradient finite.
    v = unit((2, 3, 8), seed=4).requires_grad_()
    labels = torch.tensor([[0, 1, 1], [0, 0, 0]])
    loss = whitened_kmeans_loss(v, labels, reduction="sum")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(v.grad).all()
    # In whitened coordinates the trace is tr(P_V P_Y) = rank(Y) = 2: L = 8 − 2.
    first = float(whitened_kmeans_loss(v[:1].detach(), labels[:1]))
    assert abs(first - 6.0) < 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_whitened_kmeans_collapsed_embeddings_stay_finite(dtype):
    # All-zero embeddings (a dead output layer): nothing is explained, L = D.
    zero = torch.zeros(2, 5, 3, dtype=dtype, requires_grad=True)
    labels = torch.tensor([[0, 1, 0, 1, 1], [0, 0, 0, 0, 0]])
    loss = whitened_kmeans_loss(zero, labels, reduction="none")
    loss.sum().backward()
    torch.testing.assert_close(loss.detach(), torch.full((2,), 3.0, dtype=dtype))
    assert torch.isfinite(zero.grad).all()
    # Every embedding the same unit vector: one whitened direction, fully explained: L = D − 1.
    g = torch.Generator().manual_seed(11)
    direction = torch.nn.functional.normalize(torch.randn(8, generator=g, dtype=dtype), dim=0)
    same = direction.expand(2, 50, 8).clone().requires_grad_()
    loss = whitened_kmeans_loss(same, torch.randint(0, 2, (2, 50), generator=g), reduction="none")
    loss.sum().backward()
    torch.testing.assert_close(loss.detach(), torch.full((2,), 7.0, dtype=dtype), rtol=0, atol=1e-4)
    assert torch.isfinite(same.grad).all()


@pytest.mark.parametrize("loss_fn", LOSSES, ids=lambda f: f.__name__)
def test_items_without_active_weight_give_zero_loss_and_gradient(loss_fn):
    v = unit((3, 20, 4)).requires_grad_()
    labels = torch.randint(0, 2, (3, 20), generator=torch.Generator().manual_seed(0))
    labels[1] = -1
    weights = torch.ones(3, 20, dtype=torch.float64)
    weights[2] = 0
    loss = loss_fn(v, labels, weights, reduction="none")
    assert loss[1] == 0 and loss[2] == 0 and loss[0] > 0
    loss.sum().backward()
    assert torch.isfinite(v.grad).all()
    assert (v.grad[1:] == 0).all()
    # Every item empty: still 0 and no NaN.
    assert float(loss_fn(v.detach(), torch.full((3, 20), -1), reduction="mean")) == 0.0


@pytest.mark.parametrize("loss_fn", LOSSES, ids=lambda f: f.__name__)
def test_gradcheck(loss_fn):
    v, labels, weights = make_case("mixed", seed=5)
    v = v[:2, :16, :3].clone().requires_grad_()
    labels, weights = labels[:2, :16].clone(), weights[:2, :16]
    labels[0, 12:] = -1  # padding; item 1 uses the sparse id 8
    assert torch.autograd.gradcheck(
        lambda x: loss_fn(x, labels, weights, reduction="none"), (v,), eps=1e-6, atol=1e-7
    )


@pytest.mark.parametrize("loss_fn", LOSSES, ids=lambda f: f.__name__)
def test_blockwise_accumulation_with_short_last_block(loss_fn, monkeypatch):
    # Blocks of 7 rows over n = 60 leave a last block of 4 rows.
    monkeypatch.setattr(losses_module, "_BLOCK_ELEMENTS", 3 * 6 * 7)
    v, labels, weights = make_case("mixed", seed=6)
    v = v.requires_grad_()
    got = loss_fn(v, labels, weights, reduction="none")
    want = REFERENCES[loss_fn](v, labels, weights)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    (g_got,) = torch.autograd.grad(got.sum(), v)
    (g_want,) = torch.autograd.grad(want.sum(), v)
    torch.testing.assert_close(g_got, g_want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("loss_fn", LOSSES, ids=lambda f: f.__name__)
def test_gradient_flows_to_weights_that_require_it(loss_fn):
    v, labels, weights = make_case("mixed", seed=7)
    v = v.requires_grad_()
    w1 = weights.clone().requires_grad_()
    w2 = weights.clone().requires_grad_()
    v2 = v.detach().clone().requires_grad_()
    loss_fn(v, labels, w1).backward()
    REFERENCES[loss_fn](v2, labels, w2).mean().backward()
    torch.testing.assert_close(w1.grad, w2.grad, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(v.grad, v2.grad, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("loss_fn", LOSSES, ids=lambda f: f.__name__)
def test_layouts_and_integer_dtypes(loss_fn):
    v, labels, weights = make_case("weights", seed=8)
    want = loss_fn(v, labels, weights, reduction="none")
    strided = v.transpose(1, 2).contiguous().transpose(1, 2)  # same values, other strides
    assert not strided.is_contiguous()
    torch.testing.assert_close(loss_fn(strided, labels.int(), weights, reduction="none"), want)
    torch.testing.assert_close(
        loss_fn(v, labels.to(torch.int16), weights.float(), reduction="none"), want
    )
    for w in (weights, None):  # the weighted and the all-ones path
        strided_labels = labels.T.contiguous().T
        assert not strided_labels.is_contiguous()
        torch.testing.assert_close(
            loss_fn(strided, strided_labels, w, reduction="none"),
            loss_fn(v, labels, w, reduction="none"),
        )


# ----------------------------------------------------------------------------- mixed precision


@pytest.mark.parametrize("loss_fn", LOSSES, ids=lambda f: f.__name__)
def test_autocast_bf16_accumulates_in_float32(loss_fn):
    torch.manual_seed(0)
    batch, n, dim = 2, 2000, 8
    layer = torch.nn.Linear(dim, dim)
    x = torch.randn(batch, n, dim)
    labels = torch.randint(0, 3, (batch, n))
    weights = torch.rand(batch, n)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        emb = torch.nn.functional.normalize(layer(x), dim=-1)
        emb_bf16 = emb.to(torch.bfloat16)
        emb_bf16.retain_grad()
        loss = loss_fn(emb_bf16, labels, weights, reduction="none")
    assert loss.dtype == torch.float32
    # The same bf16 values in float64: fp32 accumulation over n = 2000 stays within ~1e-5.
    v64 = emb_bf16.detach().double().requires_grad_()
    want = REFERENCES[loss_fn](v64, labels, weights)
    torch.testing.assert_close(loss.double(), want, rtol=2e-5, atol=1e-6)
    loss.sum().backward()
    assert emb_bf16.grad.dtype == torch.bfloat16
    want.sum().backward()
    # The gradient is rounded once to bf16 (8 bits of mantissa).
    scale = float(v64.grad.abs().max())
    torch.testing.assert_close(emb_bf16.grad.double(), v64.grad, rtol=1e-2, atol=1e-2 * scale)


@pytest.mark.parametrize("loss_fn", LOSSES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_give_float32_loss_and_own_dtype_gradient(loss_fn, dtype):
    v, labels, weights = make_case("mixed", seed=12)
    half = v.to(dtype).requires_grad_()
    loss = loss_fn(half, labels, weights.to(dtype), reduction="none")
    assert loss.dtype == torch.float32
    v64 = half.detach().double().requires_grad_()
    want = REFERENCES[loss_fn](v64, labels, weights.to(dtype).double())
    torch.testing.assert_close(loss.double(), want, rtol=1e-5, atol=1e-5)
    loss.sum().backward()
    want.sum().backward()
    assert half.grad.dtype == dtype
    scale = float(v64.grad.abs().max())
    torch.testing.assert_close(half.grad.double(), v64.grad, rtol=1e-2, atol=1e-2 * scale)


def test_bf16_accumulation_beats_bf16_arithmetic():
    # Summing 3000 products in bf16 would lose far more than fp32 accumulation does.
    v = unit((1, 3000, 8), seed=9).to(torch.bfloat16)
    labels = torch.randint(0, 2, (1, 3000), generator=torch.Generator().manual_seed(0))
    want = reference_affinity(v.double(), labels)
    naive = (v.transpose(1, 2) @ v).double().square().sum() / 3000**2  # ||VᵀV||² in bf16 math
    exact = (v.double().transpose(1, 2) @ v.double()).square().sum() / 3000**2
    got = affinity_loss(v, labels, reduction="none").double()
    assert abs(float(got - want)) < 1e-5
    assert abs(float(got - want)) < abs(float(naive - exact))


# ----------------------------------------------------------------------------- weight helpers


def test_voice_activity_weights_match_numpy():
    g = torch.Generator().manual_seed(0)
    mag = torch.rand(4, 200, generator=g).square() ** 4  # wide dynamic range
    mag[1, :50] = 0
    mag[3] = 0  # silent item
    mask = torch.ones(4, 200, dtype=torch.bool)
    mask[2, 150:] = False
    mag[2, 150:] = 10.0  # loud padding must not set the maximum
    for thr in (20.0, 40.0, 0.0):
        got = voice_activity_weights(mag, threshold_db=thr, mask=mask).numpy()
        m = mag.double().numpy()
        want = np.zeros_like(m)
        for b in range(4):
            act = mask[b].numpy()
            with np.errstate(divide="ignore"):
                db = 20 * np.log10(m[b])
            top = db[act].max()
            want[b] = act & (m[b] > 0) & (db >= top - thr)
        np.testing.assert_array_equal(got, want)
    assert got.dtype == np.float32
    assert set(np.unique(got)) <= {0.0, 1.0}
    assert got[3].sum() == 0 and got[2, 150:].sum() == 0


def test_magnitude_weights_match_numpy():
    g = torch.Generator().manual_seed(1)
    mag = torch.rand(3, 100, generator=g, dtype=torch.float64)
    mask = torch.ones(3, 100, dtype=torch.bool)
    mask[0, 60:] = False
    mag[2] = 0
    got = magnitude_weights(mag, mask=mask).numpy()
    m = mag.numpy()
    want = np.zeros_like(m)
    for b in range(3):
        act = mask[b].numpy()
        total = m[b][act].sum()
        if total > 0:
            want[b][act] = m[b][act] / total * act.sum()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    np.testing.assert_allclose(got[1].mean(), 1.0)
    np.testing.assert_allclose(got[0][:60].mean(), 1.0)
    assert got[0, 60:].sum() == 0 and got[2].sum() == 0


def test_helpers_feed_the_loss():
    mag = torch.rand(2, 50, generator=torch.Generator().manual_seed(2))
    v = unit((2, 50, 4), dtype=torch.float32)
    labels = torch.randint(0, 2, (2, 50), generator=torch.Generator().manual_seed(3))
    for w in (voice_activity_weights(mag), magnitude_weights(mag)):
        torch.testing.assert_close(
            affinity_loss(v, labels, w, reduction="none").double(),
            reference_affinity(v, labels, w),
            rtol=1e-5,
            atol=1e-6,
        )


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("loss_fn", LOSSES, ids=lambda f: f.__name__)
def test_bad_input_messages(loss_fn):
    v = unit((2, 10, 3), dtype=torch.float32)
    y = torch.zeros(2, 10, dtype=torch.long)
    cases = [
        ((v[0], y), ValueError, "'embeddings' must have 3 dimensions"),
        ((v.numpy(), y), TypeError, "'embeddings' must be a torch.Tensor"),
        ((v.long(), y), TypeError, "'embeddings' must have a floating-point dtype"),
        ((v[:, :0], y[:, :0]), ValueError, "'embeddings' must have at least one point"),
        ((v[:0], y[:0]), ValueError, "'embeddings' must have at least one point, one dimension and one item"),
        ((v, y.float()), TypeError, "'labels' must have an integer dtype"),
        ((v, y[:, :5]), ValueError, r"'labels' must have shape \(2, 10\)"),
        ((v, y[0]), ValueError, "'labels' must have 2 dimensions"),
        ((v, y, -torch.ones(2, 10)), ValueError, "'weights' must be >= 0"),
        ((v, y, torch.ones(2, 9)), ValueError, r"'weights' must have shape \(2, 10\)"),
        ((v, y, torch.ones(2, 10, dtype=torch.long)), TypeError, "'weights' must have a floating"),
        ((v, y, torch.full((2, 10), torch.nan)), ValueError, "'weights' must contain only finite"),
    ]
    for args, exc, match in cases:
        with pytest.raises(exc, match=match):
            loss_fn(*args)
    with pytest.raises(ValueError, match="The 'reduction' parameter of .* must be one of"):
        loss_fn(v, y, reduction="avg")
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = v.clone()
        x[1, 4, 2] = bad
        with pytest.raises(ValueError, match="'embeddings' must contain only finite values.*1 NaN"):
            loss_fn(x, y)
        # Also where the element is ignored: the check covers every entry.
        y_pad = y.clone()
        y_pad[1, 4] = -1
        with pytest.raises(ValueError, match="'embeddings' must contain only finite"):
            loss_fn(x, y_pad)


@pytest.mark.parametrize("loss_fn", LOSSES, ids=lambda f: f.__name__)
def test_tensors_on_another_device_are_rejected(loss_fn):
    v = unit((2, 10, 3), dtype=torch.float32)
    y = torch.zeros(2, 10, dtype=torch.long)
    with pytest.raises(ValueError, match="'labels' must be on the device of 'embeddings'"):
        loss_fn(v, y.to("meta"))
    with pytest.raises(ValueError, match="'weights' must be on the device of 'embeddings'"):
        loss_fn(v, y, torch.ones(2, 10, device="meta"))


def test_weight_helper_bad_input():
    mag = torch.rand(2, 10)
    with pytest.raises(ValueError, match="'magnitude' .* must be >= 0"):
        voice_activity_weights(-mag)
    with pytest.raises(ValueError, match="'magnitude' must have 2 dimensions"):
        magnitude_weights(mag[0])
    with pytest.raises(TypeError, match="'magnitude' must have a floating-point dtype"):
        magnitude_weights(mag.long())
    with pytest.raises(ValueError, match="'magnitude' must contain only finite"):
        voice_activity_weights(mag / 0)
    with pytest.raises(ValueError, match="The 'threshold_db' parameter of voice_activity_weights"):
        voice_activity_weights(mag, threshold_db=-3.0)
    with pytest.raises(TypeError, match="'mask' must have dtype torch.bool"):
        magnitude_weights(mag, mask=torch.ones(2, 10))
    with pytest.raises(ValueError, match=r"'mask' must have shape \(2, 10\)"):
        voice_activity_weights(mag, mask=torch.ones(2, 3, dtype=torch.bool))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("loss_fn", LOSSES, ids=lambda f: f.__name__)
def test_cuda_matches_cpu(loss_fn):
    v, labels, weights = make_case("mixed", seed=10)
    v = v.float()
    for w in (None, weights.float()):
        x_cpu = v.clone().requires_grad_()
        x_gpu = v.cuda().requires_grad_()
        w_gpu = None if w is None else w.cuda()
        a = loss_fn(x_cpu, labels, w, reduction="none")
        b = loss_fn(x_gpu, labels.cuda(), w_gpu, reduction="none")
        torch.testing.assert_close(b.cpu(), a.detach(), rtol=1e-4, atol=1e-5)
        a.sum().backward()
        b.sum().backward()
        torch.testing.assert_close(x_gpu.grad.cpu(), x_cpu.grad, rtol=1e-3, atol=1e-5)


def test_docstring_examples():
    result = doctest.testmod(losses_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 4 and result.failed == 0
