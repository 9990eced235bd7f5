"""Random draws of the clusterers: generators, subsamples of the active points, and the
k-means++ and random starts.

Every start is batched: several independent seedings of the same item (k-means restarts, or
one per candidate number of clusters) are laid out as *groups*, so centers are
(batch, groups, k_max, dim) and every draw of every group is one tensor operation.
"""

from __future__ import annotations

import math

import torch

from ._distances import gather_points, sq_distances

__all__ = ["make_generator", "copy_generator", "shared_rand", "draw_weighted", "subsample_active", "kmeans_plusplus", "random_init"]


# Every item of a batch draws the same random numbers, as it would alone: draws are made for one
# item and broadcast over the batch, and for a point they depend on its index only (torch's CPU
# generator gives the first n numbers of a longer draw). An item's result then never depends on
# its batch-mates, so predicting items one by one or together gives the same labels.


def shared_rand(generator: torch.Generator, batch: int, *shape: int, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(batch, *shape) uniform numbers in [0, 1), the same for every item."""
    return torch.rand(1, *shape, generator=generator, device=device, dtype=dtype).expand(batch, *shape)


def draw_weighted(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Indices drawn with probability proportional to ``weights`` (rows, n), with replacement,
    by inverting each row's cumulative weights at the uniform numbers ``u`` (rows, draws)."""
    cdf = weights.cumsum(-1)  # (rows, n)
    target = u.to(cdf.dtype) * cdf[:, -1:]  # (rows, draws)
    idx = torch.searchsorted(cdf, target, right=True)
    return idx.clamp_max_(weights.shape[-1] - 1)


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded with ``seed`` (results are reproducible per device)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def subsample_active(
    mask: torch.Tensor, size: int, generator: torch.Generator, *, replace: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick up to ``size`` active points per item uniformly at random.

    Items with at most ``size`` active points keep all of them, padded with inactive points
    (whose entry in the returned mask is False). Larger items draw ``size`` distinct points,
    or with ``replace`` draw with replacement, which is several times cheaper (no sort) and
    repeats only about size²/(2·n_active) points.

    Returns:
        (idx, sub_mask): indices into the points and whether each picked point is active.

    Shape:
        mask: (batch, n) bool; idx, sub_mask: (batch, min(size, n)).
    """
    B, n = mask.shape
    size = min(size, n)
    n_active = mask.sum(1)  # (batch,)
    if replace:
        # The u-th active point of each item, u uniform, found in the running count of actives.
        u = shared_rand(generator, B, size, device=mask.device)  # (batch, size)
        rank = (u * n_active[:, None]).long().clamp_max_(n - 1)  # (batch, size) in [0, n_active)
        if bool(mask.all()):  # no padding: the u-th active point is point u
            return rank, torch.ones_like(rank, dtype=torch.bool)
        cum = mask.cumsum(1)  # (batch, n)
        drawn = torch.searchsorted(cum, rank + 1).clamp_max_(n - 1)  # (batch, size)
        # Items with few active points take all of them (and pad), as without replacement.
        small = n_active <= size  # (batch,)
        if bool(small.any()):
            keys = torch.arange(n, device=mask.device).expand(B, n).masked_fill(~mask, n)
            first = keys.topk(size, dim=1, largest=False).indices  # (batch, size) actives first
            drawn = torch.where(small[:, None], first, drawn)
        idx = drawn
    else:
        keys = shared_rand(generator, B, n, device=mask.device)  # (batch, n)
        keys = keys.masked_fill(~mask, 2.0)  # inactive points sort last
        idx = keys.topk(size, dim=1, largest=False).indices  # (batch, size)
    return idx, torch.gather(mask, 1, idx)


def _weights_or_uniform(w: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Sampling weights with rows that sum to zero (all points on centers) made uniform."""
    dead = w.sum(-1, keepdim=True) <= 0  # (rows, 1)
    return torch.where(dead, active.to(w.dtype), w)


def kmeans_plusplus(
    X: torch.Tensor,
    mask: torch.Tensor,
    k_max: int,
    n_groups: int,
    generator: torch.Generator,
    *,
    x_sq: torch.Tensor | None = None,
    n_local_trials: int | None = None,
    counts: torch.Tensor | None = None,
) -> torch.Tensor:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007, as in scikit-learn), batched.

    Each next center is chosen, per item and group, among ``n_local_trials`` candidates drawn
    with probability proportional to the squared distance to the nearest chosen center; the
    candidate that lowers the potential (sum of those distances) most wins. Only active points
    are drawn and counted. Every group gets k_max centers; callers disable the slots beyond a
    group's count, which is exact because greedy seeding of k centers is the prefix of seeding
    k_max with the same candidates per step. That number grows with the count, so with
    per-item ``counts`` each item draws its own ``2 + floor(ln count)`` candidates per step from
    a copy of the generator, as it would alone with ``k_max`` equal to its count: an item's
    centers never depend on the counts of its batch-mates.

    Args:
        X: points, in the compute dtype.
        mask: active points.
        k_max: centers to seed per group.
        n_groups: independent seedings per item (restarts, candidate counts).
        generator: random source on X's device.
        x_sq: squared norms of X, if already known.
        n_local_trials: candidates per step; default ``2 + floor(ln k)`` like scikit-learn, with
            k the item's count (``counts``) or else k_max.
        counts: (batch,) clusters per item, when the caller seeds k_max slots only because
            some item needs that many (None: every item is seeded as a k_max-cluster item).

    Returns:
        Centers of shape (batch, n_groups, k_max, dim).
    """
    B, n, d = X.shape
    G = n_groups
    if n_local_trials is not None or counts is None:
        trials = [n_local_trials if n_local_trials is not None else _local_trials(k_max)] * B
    else:
        trials = [_local_trials(int(k)) for k in counts.tolist()]
    T = max(trials)
    # One stream per number of candidates, all starting where the caller's generator is now, so
    # that the items with t candidates per step see the stream they would see alone: the
    # caller's generator itself for the most candidates, copies for fewer (none when every item
    # draws alike, one stream as before).
    streams = {t: generator if t == T else copy_generator(generator) for t in sorted(set(trials))}
    rows, tried = {}, None
    if len(streams) > 1:
        rows = {t: torch.tensor([b for b in range(B) if trials[b] == t], device=X.device) for t in streams}
        # (batch, T): the candidates an item draws alone; the others never win
        tried = torch.arange(T, device=X.device)[None, :] < torch.tensor(trials, device=X.device)[:, None]
    if x_sq is None:
        x_sq = (X * X).sum(-1)  # (batch, n)
    active = mask[:, None, :].expand(B, G, n).reshape(B * G, n)  # (batch*G, n)
    centers = X.new_empty(B, G, k_max, d)

    for stream in streams.values():  # each stream draws the first center as the others do
        u_first = shared_rand(stream, B, G, 1, device=X.device).reshape(B * G, 1)
    first = draw_weighted(active.to(X.dtype), u_first).view(B, G)
    c0 = gather_points(X, first)  # (batch, G, dim)
    centers[:, :, 0] = c0
    closest = sq_distances(X, c0, x_sq).transpose(1, 2)  # (batch, G, n)
    closest = closest.masked_fill(~mask[:, None, :], 0.0)

    for c in range(1, k_max):
        w = _weights_or_uniform(closest.reshape(B * G, n), active)  # (batch*G, n)
        if len(streams) == 1:
            u = shared_rand(generator, B, G, T, device=X.device)
        else:  # each item's candidates from its own stream; the ones it would not draw unused
            u = torch.zeros(B, G, T, device=X.device)
            for t, stream in streams.items():
                u[rows[t], :, :t] = torch.rand(1, G, t, generator=stream, device=X.device)
        cand = draw_weighted(w, u.reshape(B * G, T)).view(B, G * T)
        cand_pts = gather_points(X, cand)  # (batch, G*T, dim)
        dc = sq_distances(X, cand_pts, x_sq).transpose(1, 2).view(B, G, T, n)  # (batch, G, T, n)
        trial = torch.minimum(closest[:, :, None, :], dc)  # (batch, G, T, n)
        trial = trial.masked_fill(~mask[:, None, None, :], 0.0)
        potential = trial.sum(-1)  # (batch, G, T)
        if tried is not None:
            potential = potential.masked_fill(~tried[:, None, :], math.inf)
        best = potential.argmin(-1)  # (batch, G)
        pick = best[:, :, None, None]
        centers[:, :, c] = cand_pts.view(B, G, T, d).gather(2, pick.expand(B, G, 1, d))[:, :, 0]
        closest = trial.gather(2, pick.expand(B, G, 1, n))[:, :, 0]  # (batch, G, n)
    return centers


def _local_trials(k: int) -> int:
    """k-means++ candidates per step for k clusters: ``2 + floor(ln k)``, as scikit-learn."""
    return 2 + int(math.log(max(k, 1)))


def copy_generator(generator: torch.Generator) -> torch.Generator:
    """A new generator on the same device in the same state."""
    copy = torch.Generator(device=generator.device)
    copy.set_state(generator.get_state())
    return copy


def random_init(
    X: torch.Tensor, mask: torch.Tensor, k_max: int, n_groups: int, generator: torch.Generator
) -> torch.Tensor:
    """k_max distinct active points per item and group, drawn uniformly ("random" init).

    Returns:
        Centers of shape (batch, n_groups, k_max, dim); items with fewer than k_max active
        points repeat points in the slots their count disables.
    """
    B, n, d = X.shape
    # Uniform draws without replacement: the k_max active points of smallest random key (an
    # item with fewer active points than slots repeats inactive ones in slots its count disables).
    keys = shared_rand(generator, B, n, n_groups, device=X.device).transpose(1, 2)  # (batch, groups, n)
    keys = keys.masked_fill(~mask[:, None, :], 2.0)
    idx = keys.topk(min(k_max, n), dim=-1, largest=False).indices  # (batch, groups, k_max)
    if idx.shape[-1] < k_max:  # fewer points than slots: repeat the last
        idx = torch.cat([idx, idx[..., -1:].expand(B, n_groups, k_max - idx.shape[-1])], -1)
    return gather_points(X, idx.reshape(B, n_groups * k_max)).view(B, n_groups, k_max, d)
