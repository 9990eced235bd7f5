"""Large images, tile by tile: a grid of overlapping tiles and the stitching of their instances.

Each tile is segmented on its own (network, clustering and decoding), so memory is bounded by a
tile whatever the image's size. A tile keeps its *core* (its window less half the overlap on
every side that has a neighbour); the cores partition the image. An object cut by a core's
border is seen whole-ish by both tiles in the strip where their windows overlap, so instances
are joined across the seam where they coincide there (intersection over union of at least
``STITCH_IOU`` within the strip): objects come out whole, with no seam.
"""

from __future__ import annotations

import numpy as np

from .decode import find_root

__all__ = ["tile_starts", "tile_windows", "Stitcher", "STITCH_IOU"]

#: IoU, within the strip two tiles share, above which their instances are one object. Above
#: 0.5 an instance can match at most one instance of the other tile.
STITCH_IOU = 0.5


def tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    """Starts of windows of side ``tile`` covering ``n`` pixels, neighbours overlapping by at
    least ``overlap``; the last window ends at ``n``."""
    if n <= tile:
        return [0]
    step = tile - overlap
    return sorted(set(list(range(0, n - tile, step)) + [n - tile]))


def tile_windows(h: int, w: int, tile: int, overlap: int) -> list[tuple[int, int, int, int, tuple[int, int, int, int]]]:
    """``(y0, x0, th, tw, core)`` for every tile of an ``h`` x ``w`` image in raster order, where
    ``core = (top, left, bottom, right)`` is the part of the window (in its own coordinates)
    the tile answers for. The cores partition the image."""
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    out = []
    for i, y0 in enumerate(ys):
        th = min(tile, h - y0)
        # The core ends halfway into the overlap with the next tile, and starts where the
        # previous tile's core ended.
        y_end = y0 + th if i + 1 == len(ys) else (y0 + th + ys[i + 1]) // 2
        y_start = 0 if i == 0 else (ys[i - 1] + min(tile, h - ys[i - 1]) + y0) // 2
        for j, x0 in enumerate(xs):
            tw = min(tile, w - x0)
            x_end = x0 + tw if j + 1 == len(xs) else (x0 + tw + xs[j + 1]) // 2
            x_start = 0 if j == 0 else (xs[j - 1] + min(tile, w - xs[j - 1]) + x0) // 2
            out.append((y0, x0, th, tw, (y_start - y0, x_start - x0, y_end - y0, x_end - x0)))
    return out


class Stitcher:
    """Builds one label map of an ``h`` x ``w`` image from its tiles' label maps.

    Add the tiles in raster order (:meth:`add`); :meth:`result` gives the (h, w) int64 map with
    instances 1..n (0 = background).
    """

    def __init__(self, h: int, w: int) -> None:
        self.labels = np.zeros((h, w), dtype=np.int64)  # global ids, before joining
        self.written = np.zeros((h, w), dtype=bool)
        self.parent = [0]  # union-find over global ids; 0 is background
        self.next_id = 1

    def _find(self, a: int) -> int:
        return find_root(self.parent, a)

    def add(self, y0: int, x0: int, tile_labels: np.ndarray, core: tuple[int, int, int, int]) -> None:
        """Add a tile's (th, tw) label map (0 = background, ids > 0), whose window starts at
        (y0, x0), and which answers for ``core`` = (top, left, bottom, right) of it."""
        lab = np.asarray(tile_labels, dtype=np.int64)
        th, tw = lab.shape
        n_new = int(lab.max()) if lab.size else 0
        gid = np.where(lab > 0, lab + (self.next_id - 1), 0)  # (th, tw) global ids
        self.parent.extend(range(self.next_id, self.next_id + n_new))
        self.next_id += n_new
        window = (slice(y0, y0 + th), slice(x0, x0 + tw))
        shared = self.written[window]  # pixels earlier tiles' cores answered for
        if shared.any() and n_new:
            old = self.labels[window][shared]
            # Earlier tiles' pieces of one object are one instance already: compare by roots.
            ids, inverse = np.unique(old, return_inverse=True)
            old = np.array([self._find(int(i)) for i in ids], dtype=np.int64)[inverse]
            self._join(old, gid[shared])
        top, left, bottom, right = core
        region = (slice(y0 + top, y0 + bottom), slice(x0 + left, x0 + right))
        self.labels[region] = gid[top:bottom, left:right]
        self.written[region] = True

    def _join(self, old: np.ndarray, new: np.ndarray) -> None:
        """Union the instances of ``old`` and ``new`` (two labellings of the same pixels) that
        overlap with IoU >= STITCH_IOU."""
        both = (old > 0) & (new > 0)
        if not both.any():
            return
        pairs, inter = np.unique(np.stack([old[both], new[both]]), axis=1, return_counts=True)
        ids_old, size_old = np.unique(old[old > 0], return_counts=True)
        ids_new, size_new = np.unique(new[new > 0], return_counts=True)
        a = size_old[np.searchsorted(ids_old, pairs[0])]
        b = size_new[np.searchsorted(ids_new, pairs[1])]
        iou = inter / (a + b - inter)
        for g_old, g_new in pairs[:, iou >= STITCH_IOU].T:
            ra, rb = self._find(int(g_old)), self._find(int(g_new))
            if ra != rb:
                self.parent[rb] = ra

    def result(self) -> np.ndarray:
        """The (h, w) int64 label map with instances numbered 1..n (in the order the tiles
        created them). No sort over the pixels: memory stays a few copies of the map."""
        roots = np.array([self._find(i) for i in range(len(self.parent))], dtype=np.int64)
        present = np.bincount(self.labels.ravel(), minlength=len(self.parent)) > 0
        present[0] = False
        kept = np.unique(roots[present])  # the instances that own some pixel
        rank = np.zeros(len(self.parent), dtype=np.int64)
        rank[kept] = np.arange(1, len(kept) + 1)
        return rank[roots][self.labels]
