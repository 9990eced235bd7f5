"""Subsamples of the active points and the k-means++ start."""

from __future__ import annotations

import torch

from embedseg.cluster import _seeding


def test_subsample_takes_distinct_active_points():
    mask = torch.zeros(3, 100, dtype=torch.bool)
    mask[0] = True
    mask[1, :40] = True
    mask[2, ::7] = True
    idx, sub = _seeding.subsample_active(mask, 30, _seeding.make_generator(0, mask.device))
    assert idx.shape == (3, 30)
    assert sub[:2].all() and bool(torch.equal(sub, torch.gather(mask, 1, idx)))
    assert int(sub[2].sum()) == int(mask[2].sum()) == 15  # fewer active points than asked
    for b in range(3):
        assert len(set(idx[b].tolist())) == 30


def test_subsample_with_replacement_draws_only_active_points():
    gen = _seeding.make_generator(0, torch.device("cpu"))
    full = torch.ones(2, 500, dtype=torch.bool)
    idx, sub = _seeding.subsample_active(full, 100, gen, replace=True)
    assert idx.shape == (2, 100) and bool(sub.all()) and int(idx.max()) < 500
    mask = torch.zeros(3, 500, dtype=torch.bool)
    mask[0, 100:400] = True
    mask[1, ::3] = True
    mask[2, :50] = True  # fewer active points than asked: all of them, then padding
    idx, sub = _seeding.subsample_active(mask, 100, gen, replace=True)
    assert bool(torch.gather(mask, 1, idx)[:2].all()) and bool(sub[:2].all())
    assert sorted(idx[2][sub[2]].tolist()) == list(range(50)) and int(sub[2].sum()) == 50
    # roughly uniform over the active points (200 draws, the generator moving on)
    idx = torch.cat([_seeding.subsample_active(mask[:1], 100, gen, replace=True)[0] for _ in range(200)])
    counts = torch.bincount(idx.flatten() - 100, minlength=300).double()
    assert counts.std() / counts.mean() < 0.2


def test_every_item_draws_as_it_would_alone():
    g = torch.Generator().manual_seed(5)
    X = torch.randn(4, 300, 3, generator=g)
    mask = torch.rand(4, 300, generator=g) > 0.3
    mask[3, 200:] = False  # a shorter item, as padding makes it
    for draw in (
        lambda x, m, gen: _seeding.subsample_active(m, 64, gen)[0],
        lambda x, m, gen: _seeding.subsample_active(m, 64, gen, replace=True)[0],
        lambda x, m, gen: _seeding.kmeans_plusplus(x, m, 4, 2, gen),
        lambda x, m, gen: _seeding.random_init(x, m, 4, 2, gen),
    ):
        together = draw(X, mask, _seeding.make_generator(0, X.device))
        for i in range(4):
            alone = draw(X[i : i + 1], mask[i : i + 1], _seeding.make_generator(0, X.device))
            assert torch.equal(together[i : i + 1], alone)
        # and an item padded with masked points draws as it does unpadded
        short = draw(X[3:, :200], mask[3:, :200], _seeding.make_generator(0, X.device))
        assert torch.equal(together[3:], short)


def test_an_item_is_seeded_for_its_own_count_whatever_its_batch_mates_need():
    # k_max is the batch's largest count; an item with a smaller count draws its own 2 + ln k
    # candidates per step, as it does alone with k_max equal to its count.
    g = torch.Generator().manual_seed(6)
    X = torch.randn(4, 300, 3, generator=g)
    mask = torch.rand(4, 300, generator=g) > 0.3
    counts = torch.tensor([2, 3, 8, 20])  # 2, 3, 4 and 4 candidates per step
    together = _seeding.kmeans_plusplus(X, mask, 20, 2, _seeding.make_generator(0, X.device), counts=counts)
    for i, k in enumerate(counts.tolist()):
        alone = _seeding.kmeans_plusplus(X[i : i + 1], mask[i : i + 1], k, 2, _seeding.make_generator(0, X.device))
        assert torch.equal(together[i : i + 1, :, :k], alone), i
    # without per-item counts every item is seeded as a 20-cluster item, as before
    plain = _seeding.kmeans_plusplus(X, mask, 20, 2, _seeding.make_generator(0, X.device))
    assert torch.equal(plain[3:], together[3:])


def test_kmeans_plusplus_picks_distinct_active_points():
    # Five distinct locations with repeats: greedy D² seeding of 5 centers must find all five,
    # and never a masked point (placed far away, where D² would otherwise attract it).
    base = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0], [5.0, 5.0]])
    X = base.repeat(8, 1)[None].repeat(2, 1, 1)  # (2, 40, 2)
    X = torch.cat([X, torch.full((2, 5, 2), 1000.0)], dim=1)
    mask = torch.ones(2, 45, dtype=torch.bool)
    mask[:, 40:] = False
    C = _seeding.kmeans_plusplus(X, mask, 5, 3, _seeding.make_generator(0, X.device))
    assert C.shape == (2, 3, 5, 2)
    for b in range(2):
        for g in range(3):
            got = sorted(map(tuple, C[b, g].tolist()))
            assert got == sorted(map(tuple, base.tolist()))
