"""Property-based tests (hypothesis) of the losses, the instance decoder and tile stitching:
random shapes, masks, dtypes and scales; outputs finite and shaped right; invariant where they
should be. The clusterers have theirs in tests/cluster/test_properties.py."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import adjusted_rand_score

from embedseg import affinity_loss, whitened_kmeans_loss
from domains.image.decode import decode_instances
from domains.image.tiling import Stitcher, tile_windows

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def embedding_batches(draw):
    """(V, labels, weights or None, dtype) with random sizes, ignored points and classes."""
    b = draw(st.integers(1, 3))
    n = draw(st.integers(1, 40))
    d = draw(st.integers(1, 6))
    c = draw(st.integers(1, 5))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    v = torch.nn.functional.normalize(torch.randn(b, n, d, generator=g, dtype=torch.float64), dim=-1).to(dtype)
    labels = torch.randint(-1, c, (b, n), generator=g)  # -1: ignored (padding)
    weights = None
    if draw(st.booleans()):
        weights = (torch.rand(b, n, generator=g, dtype=torch.float64) * draw(st.sampled_from([1e-3, 1.0, 1e3]))).to(dtype)
    return v, labels, weights


def dense_affinity(v, labels, weights):
    """||W^1/2 (VV^T - YY^T) W^1/2||_F^2 / (sum w)^2 per item, in float64 with the N x N
    matrices (0 for an item without weight)."""
    out = []
    for i in range(v.shape[0]):
        keep = labels[i] >= 0
        x = v[i][keep].double()
        y = torch.nn.functional.one_hot(labels[i][keep], int(labels.max()) + 1 if labels.max() >= 0 else 1).double()
        w = torch.ones(len(x), dtype=torch.float64) if weights is None else weights[i][keep].double()
        sw = w.sqrt()
        a = sw[:, None] * (x @ x.T - y @ y.T) * sw[None, :]
        total = w.sum()
        out.append((a**2).sum() / total**2 if total > 0 else torch.zeros((), dtype=torch.float64))
    return torch.stack(out)


@SETTINGS
@given(embedding_batches())
def test_affinity_loss_is_the_dense_loss_finite_and_permutation_invariant(batch):
    v, labels, weights = batch
    got = affinity_loss(v, labels, weights, reduction="none")
    assert got.shape == (v.shape[0],) and bool(torch.isfinite(got).all()) and bool((got >= -1e-6).all())
    want = dense_affinity(v, labels, weights)
    torch.testing.assert_close(got.double(), want, rtol=1e-4 if v.dtype == torch.float32 else 1e-9, atol=1e-3 if v.dtype == torch.float32 else 1e-9)
    # Points in another order, and class ids renamed, give the same loss.
    perm = torch.randperm(v.shape[1])
    rename = torch.randperm(int(labels.max()) + 1) if labels.max() >= 0 else torch.zeros(1, dtype=torch.long)
    renamed = torch.where(labels >= 0, rename[labels.clamp_min(0)], labels)
    w_perm = None if weights is None else weights[:, perm]
    again = affinity_loss(v[:, perm], renamed[:, perm], w_perm, reduction="none")
    torch.testing.assert_close(again, got, rtol=1e-4, atol=1e-3 if v.dtype == torch.float32 else 1e-9)


@SETTINGS
@given(embedding_batches())
def test_whitened_kmeans_loss_is_finite_and_permutation_invariant(batch):
    v, labels, weights = batch
    got = whitened_kmeans_loss(v, labels, weights, reduction="none")
    assert got.shape == (v.shape[0],) and bool(torch.isfinite(got).all())
    perm = torch.randperm(v.shape[1])
    again = whitened_kmeans_loss(v[:, perm], labels[:, perm], None if weights is None else weights[:, perm], reduction="none")
    torch.testing.assert_close(again, got, rtol=1e-3, atol=1e-3)


@SETTINGS
@given(
    h=st.integers(1, 24),
    w=st.integers(1, 24),
    dim=st.integers(1, 8),
    groups=st.integers(1, 5),
    seed=st.integers(0, 2**31 - 1),
    with_fg=st.booleans(),
    n_instances=st.one_of(st.none(), st.integers(0, 6)),
)
def test_decode_instances_gives_a_sequential_label_map_inside_the_foreground(h, w, dim, groups, seed, with_fg, n_instances):
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((h * w, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True) + 1e-12
    grp = rng.integers(0, groups, h * w)
    fg = rng.random(h * w) if with_fg else None
    lab = decode_instances(emb, (h, w), grp, fg, min_size=1, n_instances=n_instances)
    assert lab.shape == (h, w) and lab.dtype == np.int64
    ids = np.unique(lab)
    assert ids.min() >= 0 and set(ids[ids > 0]) == set(range(1, int(lab.max()) + 1))  # 1..n, no gaps
    if fg is not None:
        assert (lab[fg.reshape(h, w) <= 0.5] == 0).all()  # background stays background
    if n_instances is not None:
        assert lab.max() <= n_instances
    again = decode_instances(emb, (h, w), grp, fg, min_size=1, n_instances=n_instances)
    assert np.array_equal(lab, again)


@SETTINGS
@given(
    h=st.integers(8, 120),
    w=st.integers(8, 120),
    tile=st.integers(16, 64),
    overlap_frac=st.floats(0.2, 0.45),
    n=st.integers(0, 25),
    seed=st.integers(0, 2**31 - 1),
)
def test_stitching_perfect_tiles_gives_the_whole_partition(h, w, tile, overlap_frac, n, seed):
    rng = np.random.default_rng(seed)
    truth = np.zeros((h, w), dtype=np.int64)
    for i in range(1, n + 1):  # non-overlapping rectangles: connected objects of any size
        y, x = rng.integers(0, h), rng.integers(0, w)
        dy, dx = rng.integers(1, max(2, h // 3)), rng.integers(1, max(2, w // 3))
        region = (slice(y, min(h, y + dy)), slice(x, min(w, x + dx)))
        if not (truth[region] > 0).any():
            truth[region] = i
    overlap = max(2, int(tile * overlap_frac))
    st_ = Stitcher(h, w)
    for y0, x0, th, tw, core in tile_windows(h, w, tile, overlap):
        crop = truth[y0 : y0 + th, x0 : x0 + tw]
        ids = np.unique(crop[crop > 0])
        lut = np.zeros(n + 1, dtype=np.int64)
        lut[ids] = rng.permutation(len(ids)) + 1  # each tile numbers its instances its own way
        st_.add(y0, x0, lut[crop], core)
    out = st_.result()
    assert out.shape == (h, w) and ((out > 0) == (truth > 0)).all()
    assert adjusted_rand_score(truth.ravel(), out.ravel()) == 1.0 or truth.max() == 0
