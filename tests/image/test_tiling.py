"""domains.image.tiling: the tile grid and the stitching of instances across tiles."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from domains.image.decode import relabel_sequential
from domains.image.tiling import Stitcher, tile_starts, tile_windows


@pytest.mark.parametrize("h,w,tile,overlap", [(100, 100, 100, 10), (300, 170, 64, 16), (1000, 517, 256, 32), (65, 64, 64, 8)])
def test_cores_partition_the_image_and_windows_stay_inside(h, w, tile, overlap):
    cover = np.zeros((h, w), dtype=int)
    for y0, x0, th, tw, (top, left, bottom, right) in tile_windows(h, w, tile, overlap):
        assert 0 <= y0 and y0 + th <= h and 0 <= x0 and x0 + tw <= w and th <= tile and tw <= tile
        assert 0 <= top < bottom <= th and 0 <= left < right <= tw
        cover[y0 + top : y0 + bottom, x0 + left : x0 + right] += 1
    assert (cover == 1).all()


def test_neighbouring_windows_overlap_by_at_least_the_overlap():
    starts = tile_starts(1000, 256, 32)
    assert starts[0] == 0 and starts[-1] == 1000 - 256
    assert all(b - a <= 256 - 32 for a, b in zip(starts, starts[1:]))


def random_objects(h: int, w: int, n: int, seed: int) -> np.ndarray:
    """A label map of up to ``n`` random non-overlapping (so connected) rectangles and discs,
    many of them crossing any grid of tile borders."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((h, w), dtype=np.int64)
    yy, xx = np.mgrid[:h, :w]
    for i in range(1, n + 1):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(4, 30)
        shape = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) if i % 2 else ((abs(yy - cy) <= r) & (abs(xx - cx) <= r // 2))
        if not (lab[shape] > 0).any():  # objects are connected: none is cut by another
            lab[shape] = i
    return relabel_sequential(lab)


def tile_segmentation(truth: np.ndarray, y0: int, x0: int, th: int, tw: int, rng: np.random.Generator) -> np.ndarray:
    """What a perfect per-tile segmentation gives: the crop, its ids shuffled (each tile
    numbers its instances its own way), parts of one object cut off by the window kept."""
    crop = truth[y0 : y0 + th, x0 : x0 + tw]
    ids = np.unique(crop[crop > 0])
    lut = np.zeros(int(truth.max()) + 1, dtype=np.int64)
    lut[ids] = rng.permutation(len(ids)) + 1
    return lut[crop]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_objects_cut_by_tile_borders_come_out_whole(seed):
    truth = random_objects(400, 330, 80, seed)
    rng = np.random.default_rng(seed)
    st = Stitcher(*truth.shape)
    for y0, x0, th, tw, core in tile_windows(*truth.shape, 128, 32):
        st.add(y0, x0, tile_segmentation(truth, y0, x0, th, tw, rng), core)
    out = st.result()
    assert out.dtype == np.int64 and out.shape == truth.shape
    assert adjusted_rand_score(truth.ravel(), out.ravel()) == 1.0
    assert out.max() == truth.max() and set(np.unique(out)) == set(range(out.max() + 1))


def test_different_objects_meeting_at_a_seam_stay_apart():
    truth = np.zeros((64, 100), dtype=np.int64)
    truth[:, :50] = 1  # two objects touching exactly where two tiles' cores meet
    truth[:, 50:] = 2
    st = Stitcher(64, 100)
    rng = np.random.default_rng(0)
    for y0, x0, th, tw, core in tile_windows(64, 100, 64, 28):
        st.add(y0, x0, tile_segmentation(truth, y0, x0, th, tw, rng), core)
    assert adjusted_rand_score(truth.ravel(), st.result().ravel()) == 1.0


def test_a_single_tile_is_the_tile():
    truth = random_objects(50, 60, 5, 3)
    st = Stitcher(50, 60)
    ((y0, x0, th, tw, core),) = tile_windows(50, 60, 64, 8)
    st.add(y0, x0, truth, core)
    assert np.array_equal(st.result(), relabel_sequential(truth))
