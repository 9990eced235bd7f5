"""From per-pixel embeddings to an instance label map, for any number of instances.

Clustering the pixels of an image into K = number of objects breaks down with many objects:
k-means with K = 100 in a 16-dimensional embedding space is slow, sensitive to its start, and
the network cannot give 100 objects 100 well-separated directions anyway. What it can do is
give *neighbouring* objects different embeddings. So decoding works in six steps:

1. **Foreground.** The network's foreground head (probability > ``fg_threshold``) marks object
   pixels; without that head, the embedding group holding most border pixels is background.
2. **Seeds.** Pixels whose 3 x 3 neighbourhood agrees (the norm of the neighbourhood's mean
   embedding is above ``seed_consistency`` times its median over the foreground) are seeds: object interiors, without the
   rims and the seams between touching objects where embeddings change.
3. **Over-segmentation.** The foreground pixels' embeddings are clustered into a few groups
   (the model's clusterer, e.g. k-means with K = 12); each connected component of a group's
   seed pixels is a fragment. Distant objects that share a group are separated here, by
   connectivity.
4. **Region merging.** Fragments are nodes of a region adjacency graph; adjacent fragments
   whose mean embeddings have cosine similarity above ``merge_threshold`` are merged, most
   similar first (a group split by k-means inside one object is reunited, while touching
   objects, trained to near-orthogonal embeddings, stay apart). Fragments smaller than
   ``min_size`` join their most similar neighbour, or are dropped when isolated.
5. **Region growing.** The instances grow from their seeds over the remaining foreground
   (watershed on the embedding disagreement), so rims and seams go to the nearest instance;
   foreground components left without a seed become instances of their own if large enough.
6. **Split-off.** A small or occluded object may have no seed of its own (its embeddings
   never agree over a whole 3 x 3 neighbourhood), or share one connected fragment with a
   touching neighbour of the same group; growing then hands its pixels to that neighbour, yet
   they keep embeddings unlike the neighbour's. Connected parts of an instance whose pixels
   have cosine similarity below ``split_threshold`` with the instance's mean embedding, of at
   least ``min_size`` pixels, become instances of their own; the pixels of a split instance
   then go to whichever of its parts has the closest mean embedding (crumbs below
   ``min_size`` return). On dense synthetic scenes this finds about a quarter of the objects
   that were merged into a neighbour.

With ``n_instances`` given, merging goes on below the threshold (most similar first) until
that many remain, and if too few remain, the largest instance with the most spread-out
embeddings is split in two (2-means + connectivity) while that helps.
"""

from __future__ import annotations

import heapq
from typing import Any

import numpy as np
import torch

from embedseg._validation import check_float, check_int

__all__ = ["decode_instances", "relabel_sequential"]


def find_root(parent: Any, a: int) -> int:
    """The root of ``a`` in a union-find forest (``parent[i]`` is i's parent, a root its own),
    compressing the path on the way."""
    root = a
    while parent[root] != root:
        root = parent[root]
    while parent[a] != root:
        parent[a], a = root, parent[a]
    return root


def relabel_sequential(labels: np.ndarray) -> np.ndarray:
    """Map ids to 1..n in raster order of first appearance; 0 stays background."""
    flat = labels.ravel()
    ids, first = np.unique(flat, return_index=True)
    keep = ids != 0
    ids, first = ids[keep], first[keep]
    order = ids[np.argsort(first)]
    lut_keys = np.concatenate([[0], order])
    lut_vals = np.arange(len(lut_keys), dtype=np.int64)
    sorter = np.argsort(lut_keys)
    pos = np.searchsorted(lut_keys, flat, sorter=sorter)
    return lut_vals[sorter][pos].reshape(labels.shape)


def _components(groups: np.ndarray) -> np.ndarray:
    """Connected components (4-connectivity) of equal non-zero values."""
    from skimage.measure import label

    return label(groups, background=0, connectivity=1).astype(np.int64)


def _adjacent_pairs(frag: np.ndarray) -> np.ndarray:
    """Unique (a, b) pairs, a < b, of different non-zero fragments that touch (4-neighbours)."""
    pairs = []
    for a, b in ((frag[:, :-1], frag[:, 1:]), (frag[:-1, :], frag[1:, :])):
        sel = (a != b) & (a > 0) & (b > 0)
        if sel.any():
            pairs.append(np.stack([np.minimum(a[sel], b[sel]), np.maximum(a[sel], b[sel])], 1))
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(pairs), axis=0)


class _Regions:
    """Union-find over fragments with size-weighted embedding sums and adjacency sets."""

    def __init__(self, frag: np.ndarray, emb: np.ndarray) -> None:
        n = int(frag.max())
        flat = frag.ravel()
        self.size = np.bincount(flat, minlength=n + 1).astype(np.float64)
        self.sums = _label_sums(flat, emb, n + 1)
        norms = np.linalg.norm(self.sums, axis=1, keepdims=True)
        self.units = self.sums / np.maximum(norms, 1e-12)
        self.parent = np.arange(n + 1)
        self.nbrs: list[set[int]] = [set() for _ in range(n + 1)]
        for a, b in _adjacent_pairs(frag):
            self.nbrs[a].add(int(b))
            self.nbrs[b].add(int(a))
        self.alive = set(range(1, n + 1))

    def find(self, a: int) -> int:
        return find_root(self.parent, a)

    def unit(self, a: int) -> np.ndarray:
        u = self.sums[a]
        return u / (float(np.sqrt(u @ u)) + 1e-12)

    def sim(self, a: int, b: int) -> float:
        return float(self.units[a] @ self.units[b])

    def merge(self, a: int, b: int) -> int:
        """Merge b into a; returns a."""
        self.parent[b] = a
        self.size[a] += self.size[b]
        self.sums[a] += self.sums[b]
        self.units[a] = self.unit(a)
        self.nbrs[a] |= self.nbrs[b]
        self.nbrs[a] -= {a, b}
        for c in self.nbrs[b]:
            if c != a:
                self.nbrs[c].discard(b)
                self.nbrs[c].add(a)
        self.nbrs[b] = set()
        self.alive.discard(b)
        return a

    def merge_until(self, threshold: float, target: int | None = None) -> None:
        """Merge adjacent regions, most similar first, while similarity > threshold or, with a
        target, while more than ``target`` regions remain."""
        heap = [(-self.sim(a, b), a, b) for a in self.alive for b in self.nbrs[a] if a < b]
        heapq.heapify(heap)
        stamp = {a: 0 for a in self.alive}
        version: dict[tuple[int, int], tuple[int, int]] = {}
        while heap:
            if target is not None and len(self.alive) <= target:
                break
            neg, a, b = heapq.heappop(heap)
            if a not in self.alive or b not in self.alive or b not in self.nbrs[a]:
                continue
            if version.get((a, b), (0, 0)) != (stamp[a], stamp[b]):
                continue
            if -neg <= threshold and target is None:
                break
            keep, gone = (a, b) if self.size[a] >= self.size[b] else (b, a)
            self.merge(keep, gone)
            stamp[keep] += 1
            for c in self.nbrs[keep]:
                x, y = min(keep, c), max(keep, c)
                version[(x, y)] = (stamp[x], stamp[y])
                heapq.heappush(heap, (-self.sim(x, y), x, y))

    def absorb_small(self, min_size: int) -> None:
        """Small regions join their most similar neighbour; isolated small ones are dropped."""
        for a in sorted(self.alive, key=lambda r: self.size[r]):
            if a not in self.alive or self.size[a] >= min_size:
                continue
            if self.nbrs[a]:
                b = max(self.nbrs[a], key=lambda c: self.sim(a, c))
                keep, gone = (b, a) if self.size[b] >= self.size[a] else (a, b)
                self.merge(keep, gone)
            else:
                self.alive.discard(a)

    def label_map(self, frag: np.ndarray) -> np.ndarray:
        lut = np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)
        dead = np.ones(len(lut), dtype=bool)
        dead[list(self.alive)] = False
        lut[dead[lut]] = 0
        lut[0] = 0
        return lut[frag]


def _grow(labels: np.ndarray, fg: np.ndarray, cost: np.ndarray, min_size: int) -> np.ndarray:
    """Grow instances from their seeds over the foreground; seedless foreground components of
    at least ``min_size`` pixels become new instances."""
    from skimage.segmentation import watershed

    if labels.max() > 0:
        labels = watershed(cost, markers=labels, mask=fg).astype(np.int64)
    rest = _components((fg & (labels == 0)).astype(np.int64))
    if rest.max() > 0:
        sizes = np.bincount(rest.ravel())
        big = sizes >= min_size
        big[0] = False
        offset = int(labels.max())
        new_ids = np.where(big, np.arange(len(sizes)) + offset, 0)
        labels = np.where(rest > 0, new_ids[rest], labels)
    return labels


def _sum3(grid: torch.Tensor, axis: int) -> torch.Tensor:
    """Each pixel plus its two neighbours along ``axis``, an edge pixel standing in for its
    missing neighbour (replicated edges); three in-place passes, no padded copy."""
    n = grid.shape[axis]
    out = grid.clone()
    out.narrow(axis, 1, n - 1).add_(grid.narrow(axis, 0, n - 1))
    out.narrow(axis, 0, n - 1).add_(grid.narrow(axis, 1, n - 1))
    out.narrow(axis, 0, 1).add_(grid.narrow(axis, 0, 1))
    out.narrow(axis, n - 1, 1).add_(grid.narrow(axis, n - 1, 1))
    return out


def _neighbourhood_agreement(emb: np.ndarray, h: int, w: int) -> np.ndarray:
    """Norm of the mean unit embedding over each pixel's 3 x 3 neighbourhood (edges repeated):
    (H, W), 1 where the neighbourhood agrees. Separable row and column sums in (H, W, dim)
    memory, over all dimensions at once: pooling a channels-last grid costs a padded copy and
    about 3x the time, and a filter per dimension costs dim passes."""
    grid = torch.from_numpy(np.ascontiguousarray(emb)).reshape(h, w, -1)
    box = _sum3(_sum3(grid, 0), 1)
    return (torch.linalg.vector_norm(box, dim=-1) / 9.0).numpy()


def _label_sums(labels: np.ndarray, emb: np.ndarray, n: int) -> np.ndarray:
    """Sum of the (N, dim) embeddings of every label in [0, n): (n, dim) float64, in one pass
    (a bincount per dimension reads the strided columns dim times). Accumulated in the
    embeddings' dtype: only the sums' directions are used, and float32 keeps them to ~1e-6."""
    src = torch.from_numpy(np.ascontiguousarray(emb))
    sums = torch.zeros(n, emb.shape[1], dtype=src.dtype)
    sums.index_add_(0, torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)), src)
    return sums.double().numpy()


def _component_values(comp: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """The value each of ``n`` connected components holds, from flat component ids and flat
    values (components are made of equal values, so any pixel tells)."""
    out = np.zeros(n, dtype=np.int64)
    out[comp] = values
    return out


def _unit_means(labels: np.ndarray, emb: np.ndarray, n: int) -> np.ndarray:
    """Unit-norm mean embedding of every label in [0, n): (n, dim), in the embeddings' dtype
    (they are compared with the pixels' embeddings)."""
    sums = _label_sums(labels, emb, n)
    return (sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)).astype(emb.dtype)


def _split_off(labels: np.ndarray, emb: np.ndarray, threshold: float, min_size: int) -> np.ndarray:
    """Step 6 of the module notes: parts of instances unlike their instance's mean embedding
    become instances of their own. ``emb`` is (H*W, dim), unit rows."""
    h, w = labels.shape
    flat = labels.ravel()
    n = int(flat.max()) + 1
    if n == 1:
        return labels
    units = _unit_means(flat, emb, n)
    cos = np.einsum("ij,ij->i", emb, units[flat])
    outlier = (flat > 0) & (cos < threshold)
    if not outlier.any():
        return labels
    comp = _components(np.where(outlier.reshape(h, w), labels, 0)).ravel()
    sizes = np.bincount(comp)
    keep = sizes >= min_size
    keep[0] = False
    if not keep.any():
        return labels
    n_new = int(keep.sum())
    new_id = np.zeros(len(sizes), dtype=np.int64)
    new_id[keep] = n + np.arange(n_new)
    host = np.arange(n + n_new)  # the instance each id was split from (itself for old ones)
    host[n:] = _component_values(comp, flat, len(sizes))[keep]
    parts = np.where(new_id[comp] > 0, new_id[comp], flat)
    # Every pixel of a split instance goes to the part of it with the closest mean embedding.
    part_units = _unit_means(parts, emb, n + n_new)
    for instance in np.unique(host[n:]):
        ids = np.concatenate([[instance], np.flatnonzero(host[n:] == instance) + n])
        where = np.flatnonzero(host[parts] == instance)
        parts[where] = ids[np.argmax(emb[where] @ part_units[ids].T, axis=1)]
    return _absorb_crumbs(parts.reshape(h, w), host, n, min_size)


def _absorb_crumbs(parts: np.ndarray, host: np.ndarray, n: int, min_size: int) -> np.ndarray:
    """Connected pieces smaller than ``min_size`` of split instances and their new parts join
    the part of the same instance they share the longest border with (pieces without such a
    neighbour stay as they are)."""
    from scipy import ndimage as ndi

    split = np.zeros(len(host), dtype=bool)
    split[host[n:]] = True
    split[n:] = True
    pieces = _components(parts)
    sizes = np.bincount(pieces.ravel())
    piece_label = _component_values(pieces.ravel(), parts.ravel(), len(sizes))
    crumbs = np.flatnonzero((sizes < min_size) & split[piece_label])
    crumbs = crumbs[crumbs > 0]
    if len(crumbs) == 0:
        return parts
    out = parts.copy()
    boxes = ndi.find_objects(pieces)
    for c in crumbs:
        box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in boxes[c - 1])
        mine = pieces[box] == c
        ring = ndi.binary_dilation(mine) & ~mine  # 4-neighbours outside the piece
        around = parts[box][ring]
        family = around[(around > 0) & (host[around] == host[piece_label[c]]) & (around != piece_label[c])]
        if len(family):
            ids, counts = np.unique(family, return_counts=True)
            out[box][mine] = ids[np.argmax(counts)]
    return out


def _split_two(emb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """2-means on unit embeddings (farthest-point start, a few Lloyd steps); returns 0/1 labels."""
    c0 = emb[rng.integers(len(emb))]
    c1 = emb[np.argmin(emb @ c0)]
    centers = np.stack([c0, c1])
    for _ in range(10):
        lab = np.argmax(emb @ centers.T, axis=1)
        if lab.min() == lab.max():
            break
        centers = np.stack([emb[lab == k].mean(0) for k in (0, 1)])
    return np.argmax(emb @ centers.T, axis=1)


def _split_to(labels: np.ndarray, emb: np.ndarray, n: int, min_size: int) -> np.ndarray:
    """Split instances (most spread-out embeddings first, weighted by size) until n exist."""
    rng = np.random.default_rng(0)
    flat_emb = emb.reshape(-1, emb.shape[-1])
    tried: set[int] = set()
    while True:
        ids, counts = np.unique(labels[labels > 0], return_counts=True)
        if len(ids) >= n:
            return labels
        candidates = [(i, c) for i, c in zip(ids, counts) if i not in tried and c >= 2 * min_size]
        if not candidates:
            return labels
        flat = labels.ravel()

        def spread(ic: tuple[int, int]) -> float:
            e = flat_emb[flat == ic[0]]
            return float(ic[1] * (1.0 - np.linalg.norm(e.mean(0))))

        target = max(candidates, key=spread)[0]
        tried.add(int(target))
        where = labels == target
        halves = np.zeros(labels.shape, dtype=np.int64)
        halves[where] = _split_two(flat_emb[where.ravel()], rng) + 1
        parts = _components(halves)
        part_ids, part_sizes = np.unique(parts[where], return_counts=True)
        big = part_ids[part_sizes >= min_size]
        if len(big) < 2:
            continue
        # The largest part keeps the id; the next largest become new instances, no more than n
        # asks for (two halves may fall apart into several parts); the rest stay.
        order = big[np.argsort(-part_sizes[np.isin(part_ids, big)])]
        next_id = int(labels.max()) + 1
        for p in order[1 : 1 + n - len(ids)]:
            labels[parts == p] = next_id
            next_id += 1


def decode_instances(
    embeddings: torch.Tensor | np.ndarray,
    shape: tuple[int, int],
    groups: torch.Tensor | np.ndarray,
    foreground: torch.Tensor | np.ndarray | None = None,
    *,
    fg_threshold: float = 0.5,
    merge_threshold: float = 0.5,
    seed_consistency: float = 0.95,
    min_size: int = 16,
    split_threshold: float = 0.5,
    n_instances: int | None = None,
) -> np.ndarray:
    """Instance label map of one image from its pixel embeddings (see the module notes).

    Args:
        embeddings: (H*W, dim) unit-norm pixel embeddings, row-major.
        shape: (H, W).
        groups: (H*W,) int cluster ids of the pixels (an over-segmentation in embedding space).
        foreground: (H*W,) foreground probabilities in [0, 1]; None = take the group holding
            most border pixels as background.
        fg_threshold: probability above which a pixel is foreground.
        merge_threshold: cosine similarity of mean embeddings above which adjacent fragments
            merge.
        seed_consistency: norm of the 3 x 3 mean embedding, relative to its median over the
            foreground, above which a pixel is a seed (0 = every foreground pixel).
        min_size: fragments smaller than this join a neighbour or are dropped (pixels).
        split_threshold: cosine similarity with their instance's mean embedding below which
            connected parts of an instance are split off as instances of their own (step 6;
            -1 turns it off). Used only when ``n_instances`` is None: a given count has its
            own merging and splitting.
        n_instances: the number of instances wanted; None = automatic.

    Returns:
        (H, W) int64 label map, 0 = background, instances 1..n in raster order.

    Example:
        >>> import numpy as np
        >>> emb = np.zeros((4 * 6, 2)); emb[:, 0] = 1
        >>> emb[[3, 4, 9, 10], :] = [0, 1]            # a second object touching the first
        >>> fg = np.zeros(24); fg[[0, 1, 6, 7, 2, 3, 4, 8, 9, 10]] = 1
        >>> groups = (emb[:, 1] > 0).astype(int)
        >>> decode_instances(emb, (4, 6), groups, fg, min_size=1, seed_consistency=0.0)[:2]
        array([[1, 1, 1, 2, 2, 0],
               [1, 1, 1, 2, 2, 0]])
    """
    h, w = int(shape[0]), int(shape[1])
    merge_threshold = check_float(merge_threshold, "merge_threshold", "decode_instances", -1.0, 1.0)
    fg_threshold = check_float(fg_threshold, "fg_threshold", "decode_instances", 0.0, 1.0)
    seed_consistency = check_float(seed_consistency, "seed_consistency", "decode_instances", 0.0, 1.0)
    min_size = check_int(min_size, "min_size", "decode_instances", 1)
    split_threshold = check_float(split_threshold, "split_threshold", "decode_instances", -1.0, 1.0)
    if n_instances is not None:
        n_instances = check_int(n_instances, "n_instances", "decode_instances", 0)

    def np_(x: Any) -> np.ndarray:
        return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)

    # float32, as networks give them: decoding reads the (H*W, dim) embeddings several times,
    # and with several inference views (dim up to 64) float64 would double that memory traffic.
    emb = np_(embeddings).astype(np.float32, copy=False).reshape(h * w, -1)
    grp = np_(groups).astype(np.int64, copy=False).reshape(h, w)
    if foreground is not None:
        fg = np_(foreground).reshape(h, w) > fg_threshold
    else:
        border = np.concatenate([grp[0], grp[-1], grp[:, 0], grp[:, -1]])
        fg = grp != np.bincount(border).argmax()
    if n_instances == 0 or not fg.any():
        return np.zeros((h, w), dtype=np.int64)
    consistency = _neighbourhood_agreement(emb, h, w)  # (H, W), 1 where the neighbourhood agrees
    # Relative to the typical interior agreement, so noisy embeddings still leave seeds.
    seeds = fg & (consistency > seed_consistency * float(np.median(consistency[fg])))
    frag = _components(np.where(seeds, grp + 1, 0))  # (H, W) fragment ids
    regions = _Regions(frag, emb)
    regions.merge_until(merge_threshold)
    regions.absorb_small(min_size)
    if n_instances is not None and len(regions.alive) > n_instances:
        regions.merge_until(-2.0, target=n_instances)
    labels = regions.label_map(frag)
    labels = _grow(labels, fg, 1.0 - consistency, min_size)
    if n_instances is None and split_threshold > -1.0:
        labels = _split_off(labels, emb, split_threshold, min_size)
    if n_instances is not None:
        ids, counts = np.unique(labels[labels > 0], return_counts=True)
        if len(ids) > n_instances:
            # Separate regions that no merge can join: keep the largest.
            drop = ids[np.argsort(-counts)[n_instances:]]
            labels[np.isin(labels, drop)] = 0
        elif len(ids) < n_instances:
            labels = _split_to(labels, emb.reshape(h, w, -1), n_instances, min_size)
    return relabel_sequential(labels)
