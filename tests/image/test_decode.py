import numpy as np
import pytest

from domains.image.decode import decode_instances, relabel_sequential
from domains.image.metrics import matching


def _grid_scene(n_side=12, cell=10, gap=2, dim=8, n_colors=4, seed=0):
    """n_side^2 square objects on a grid; neighbours get different embedding 'colors' out of
    n_colors, so far-apart objects share embeddings, as a trained network would produce."""
    rng = np.random.default_rng(seed)
    size = n_side * cell
    labels = np.zeros((size, size), dtype=np.int64)
    colors = np.linalg.qr(rng.normal(size=(dim, dim)))[0][: n_colors + 1]  # orthonormal
    emb = np.tile(colors[0], (size, size, 1))
    k = 0
    for i in range(n_side):
        for j in range(n_side):
            k += 1
            sl = (slice(i * cell, (i + 1) * cell - gap * ((i + j) % 2)), slice(j * cell, (j + 1) * cell - gap * (i % 2)))
            labels[sl] = k
            emb[sl] = colors[1 + (i % 2) * 2 + (j % 2)]
    emb = emb + rng.normal(scale=0.15, size=emb.shape)
    emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
    return labels, emb.reshape(-1, dim)


def _groups_by_nearest_color(emb, n_groups, seed=0):
    """A stand-in over-segmentation: nearest of n_groups centers drawn from the embeddings
    (farthest-point picks), as k-means would give."""
    rng = np.random.default_rng(seed)
    centers = [emb[rng.integers(len(emb))]]
    for _ in range(n_groups - 1):
        d = np.min(np.stack([1 - emb @ c for c in centers]), axis=0)
        centers.append(emb[np.argmax(d)])
    return np.argmax(emb @ np.stack(centers).T, axis=1)


def test_recovers_144_touching_objects_where_plain_kmeans_cannot():
    labels, emb = _grid_scene()
    fg = (labels > 0).ravel().astype(float)
    groups = _groups_by_nearest_color(emb, 8)
    pred = decode_instances(emb, labels.shape, groups, fg, min_size=5)
    m = matching(labels, pred, 0.5)
    assert m["n_true"] == 144
    assert m["ap"] > 0.98
    # Clustering alone (no connectivity) cannot tell apart objects that share a color.
    assert len(np.unique(groups[fg > 0])) < 20


def test_kmeans_split_inside_an_object_is_merged_back():
    labels = np.zeros((20, 40), dtype=np.int64)
    labels[2:18, 2:18] = 1
    labels[2:18, 18:38] = 2  # touching
    emb = np.zeros((20, 40, 4))
    emb[..., 0] = 1
    emb[labels == 1] = [0, 1, 0, 0]
    emb[labels == 2] = [0, 0, 1, 0]
    # Over-segmentation cuts object 1 into three groups along rows.
    groups = np.where(labels == 2, 3, 0) + np.where(labels == 1, np.arange(20)[:, None] // 7, 0)
    groups = np.broadcast_to(groups, labels.shape).copy()
    pred = decode_instances(emb.reshape(-1, 4), labels.shape, groups.ravel(), (labels > 0).ravel(), min_size=4)
    assert matching(labels, pred, 0.9)["tp"] == 2
    assert pred.max() == 2


def test_small_fragments_join_neighbours_or_vanish():
    labels = np.zeros((30, 30), dtype=np.int64)
    labels[5:25, 5:25] = 1
    emb = np.zeros((30, 30, 3))
    emb[..., 0] = 1
    emb[labels == 1] = [0, 1, 0]
    groups = (labels > 0).astype(int)
    groups[10:12, 10:12] = 5  # a 4-pixel speck inside the object, in its own group
    fg = (labels > 0).astype(float)
    fg[0:2, 0:2] = 1.0  # a 4-pixel isolated false detection
    pred = decode_instances(emb.reshape(-1, 3), labels.shape, groups.ravel(), fg.ravel(), min_size=10)
    assert pred.max() == 1
    assert (pred == 1).sum() == 400
    assert pred[0, 0] == 0


@pytest.mark.parametrize("n", [2, 3, 5])
def test_given_number_of_instances(n):
    labels, emb = _grid_scene(n_side=2, cell=20, gap=0)  # 4 touching squares
    fg = (labels > 0).ravel().astype(float)
    groups = _groups_by_nearest_color(emb, 4)
    auto = decode_instances(emb, labels.shape, groups, fg)
    assert auto.max() == 4
    pred = decode_instances(emb, labels.shape, groups, fg, n_instances=n)
    assert pred.max() == n


def test_without_foreground_uses_the_border_group_as_background():
    labels, emb = _grid_scene(n_side=3, cell=20, gap=4)
    # A background margin around the grid, with the background embedding (the first color).
    emb = emb.reshape(60, 60, -1)
    background = emb[labels == 0].mean(0)
    labels = np.pad(labels, 8)
    emb = np.pad(emb, ((8, 8), (8, 8), (0, 0)))
    emb[labels == 0] = background / np.linalg.norm(background)
    emb = emb.reshape(-1, emb.shape[-1])
    groups = _groups_by_nearest_color(emb, 5)
    pred = decode_instances(emb, labels.shape, groups, None)
    assert matching(labels, pred, 0.5)["ap"] > 0.8


def test_empty_foreground_and_zero_instances():
    emb = np.ones((16, 2)) / np.sqrt(2)
    assert decode_instances(emb, (4, 4), np.zeros(16, int), np.zeros(16)).max() == 0
    assert decode_instances(emb, (4, 4), np.zeros(16, int), np.ones(16), n_instances=0).max() == 0


def test_relabel_sequential_raster_order():
    x = np.array([[0, 7, 7], [3, 0, 9]])
    np.testing.assert_array_equal(relabel_sequential(x), [[0, 1, 1], [2, 0, 3]])


def test_bad_parameters():
    emb = np.ones((4, 2))
    with pytest.raises(ValueError, match="merge_threshold"):
        decode_instances(emb, (2, 2), np.zeros(4, int), None, merge_threshold=2.0)
    with pytest.raises(ValueError, match="n_instances"):
        decode_instances(emb, (2, 2), np.zeros(4, int), None, n_instances=-1)
    with pytest.raises(ValueError, match="split_threshold"):
        decode_instances(emb, (2, 2), np.zeros(4, int), None, split_threshold=1.5)


def _object_without_seeds(part_rows=6, dim=8, seed=0):
    """A 20 x 20 object A and, touching its lower edge, a small object B whose embeddings are
    too noisy to seed an instance (no 3 x 3 neighbourhood agrees) yet unlike A's. B's first
    row is a seam whose embeddings are closer to B's than to A's, but not enough to be an
    outlier of A. All foreground pixels share one embedding group."""
    rng = np.random.default_rng(seed)
    e1, e2 = np.eye(dim)[0], np.eye(dim)[1]
    labels = np.zeros((32, 24), dtype=np.int64)
    labels[2:22, 2:22] = 1
    labels[22 : 22 + part_rows, 8:13] = 2
    emb = np.tile(np.eye(dim)[2], (32, 24, 1))
    emb[labels == 1] = e1
    noisy = e2 + rng.normal(scale=0.5, size=(part_rows - 1, 5, dim))
    emb[23 : 22 + part_rows, 8:13] = noisy
    emb[22, 8:13] = 0.6 * e1 + 0.8 * e2  # the seam: cosine 0.6 with A, 0.8 with B
    emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
    fg = (labels > 0).astype(float).ravel()
    return labels, emb.reshape(-1, dim), fg


def test_split_off_recovers_an_object_that_has_no_seed():
    labels, emb, fg = _object_without_seeds()
    groups = np.zeros(len(fg), dtype=np.int64)
    merged = decode_instances(emb, labels.shape, groups, fg, split_threshold=-1.0)
    assert merged.max() == 1  # growing gave B's pixels to A
    pred = decode_instances(emb, labels.shape, groups, fg, split_threshold=0.5)
    assert pred.max() == 2
    # B is found whole, seam included (its pixels went to the closer of the two means).
    b = pred[24, 10]
    np.testing.assert_array_equal(pred == b, labels == 2)
    np.testing.assert_array_equal(pred == pred[10, 10], labels == 1)


def test_split_off_keeps_parts_below_min_size_and_alike_parts():
    labels, emb, fg = _object_without_seeds(part_rows=3)  # B: 15 pixels < min_size 16
    groups = np.zeros(len(fg), dtype=np.int64)
    assert decode_instances(emb, labels.shape, groups, fg, split_threshold=0.5, min_size=16).max() == 1
    # A uniform object with noisy embeddings has no part unlike its mean: nothing to split.
    rng = np.random.default_rng(1)
    one = np.zeros((20, 20), dtype=np.int64)
    one[2:18, 2:18] = 1
    e = np.eye(6)[0] + rng.normal(scale=0.2, size=(20, 20, 6))
    e /= np.linalg.norm(e, axis=-1, keepdims=True)
    pred = decode_instances(e.reshape(-1, 6), one.shape, np.zeros(400, int), (one > 0).ravel(), split_threshold=0.5)
    assert pred.max() == 1


def test_split_off_is_not_used_with_a_given_count():
    labels, emb, fg = _object_without_seeds()
    groups = np.zeros(len(fg), dtype=np.int64)
    assert decode_instances(emb, labels.shape, groups, fg, split_threshold=0.5, n_instances=1).max() == 1


def test_split_off_makes_several_parts_of_one_instance_and_absorbs_crumbs():
    from domains.image.decode import _split_off

    dim = 6
    e = np.eye(dim)
    labels = np.zeros((20, 30), dtype=np.int64)
    labels[2:18, 2:28] = 4  # one grown instance covering three objects (ids need not be 1..n)
    emb = np.tile(e[0], (20, 30, 1))
    emb[2:18, 2:8] = e[1]  # a left object unlike the instance
    emb[2:18, 22:28] = e[2]  # a right object unlike both
    emb[10, 15] = e[1]  # a lone pixel like the left object, inside the middle one
    emb[0, 0] = e[3]  # background pixels are never touched
    out = _split_off(labels, emb.reshape(-1, dim), threshold=0.5, min_size=8)
    assert out[0, 0] == 0 and (out == 0).sum() == (labels == 0).sum()
    left, mid, right = out[5, 4], out[5, 15], out[5, 25]
    assert len({left, mid, right}) == 3 and mid == 4  # the largest part keeps the instance's id
    np.testing.assert_array_equal(out == left, np.pad(np.ones((16, 6), bool), ((2, 2), (2, 22))))
    np.testing.assert_array_equal(out == right, np.pad(np.ones((16, 6), bool), ((2, 2), (22, 2))))
    assert out[10, 15] == mid  # a crumb below min_size stays with the part it lies in


@pytest.mark.parametrize("h, w", [(37, 29), (1, 5), (4, 1), (1, 1)])
def test_neighbourhood_agreement_matches_scipy_uniform_filter(h, w):
    from scipy import ndimage as ndi

    from domains.image.decode import _neighbourhood_agreement

    rng = np.random.default_rng(h * w)
    emb = rng.normal(size=(h * w, 7))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    grid = emb.reshape(h, w, -1)
    local = np.stack([ndi.uniform_filter(grid[..., d], size=3, mode="nearest") for d in range(7)], -1)
    np.testing.assert_allclose(_neighbourhood_agreement(emb, h, w), np.linalg.norm(local, axis=-1), atol=1e-12)
    # float32, as decoding gets the networks' embeddings
    np.testing.assert_allclose(
        _neighbourhood_agreement(emb.astype(np.float32), h, w), np.linalg.norm(local, axis=-1), atol=2e-6
    )
