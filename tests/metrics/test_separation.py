"""Separation metrics against mir_eval (BSS-Eval v3) and hand-computed cases."""

import warnings

import numpy as np
import pytest
import torch

from embedseg.metrics import (
    best_permutation,
    bss_eval_sources,
    sdr,
    sdr_matrix,
    separation_scores,
    si_sdr,
    si_sdr_matrix,
)

mir_eval = pytest.importorskip("mir_eval")


def _mir_eval(ref, est, perm=True):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mir_eval 0.8 flags bss_eval as deprecated
        return mir_eval.separation.bss_eval_sources(ref, est, compute_permutation=perm)


def _random_case(seed, n_src, length=2500):
    g = np.random.default_rng(seed)
    ref = g.standard_normal((n_src, length))
    order = g.permutation(n_src)
    # filtered + interfering + noisy estimates in a shuffled order
    est = 0.8 * ref[order] + 0.3 * np.roll(ref[order], 5, axis=1) + 0.3 * ref[np.roll(order, 1)]
    est += 0.2 * g.standard_normal(est.shape)
    return ref, est


@pytest.mark.parametrize("n_src,seed", [(2, 0), (2, 1), (3, 2)])
def test_bss_eval_matches_mir_eval(n_src, seed):
    ref, est = _random_case(seed, n_src)
    want = _mir_eval(ref, est)
    got = bss_eval_sources(torch.tensor(ref)[None], torch.tensor(est)[None])
    for g, w in zip(got[:3], want[:3]):
        np.testing.assert_allclose(g[0].numpy(), w, atol=1e-6)
    np.testing.assert_array_equal(got.perm[0].numpy(), want[3])


def test_bss_eval_batched_equals_per_item_and_no_permutation():
    cases = [_random_case(s, 2) for s in (3, 4)]
    ref = torch.tensor(np.stack([c[0] for c in cases]))
    est = torch.tensor(np.stack([c[1] for c in cases]))
    got = bss_eval_sources(ref, est, compute_permutation=False)
    for b, (r, e) in enumerate(cases):
        want = _mir_eval(r, e, perm=False)
        np.testing.assert_allclose(got.sdr[b].numpy(), want[0], atol=1e-6)
        np.testing.assert_allclose(got.sir[b].numpy(), want[1], atol=1e-6)


def test_sdr_matrix_agrees_with_bss_eval_pairing():
    ref, est = _random_case(5, 3)
    r, e = torch.tensor(ref)[None], torch.tensor(est)[None]
    full = bss_eval_sources(r, e)
    m = sdr_matrix(r, e)  # (1, e, s)
    picked = m[0, full.perm[0], torch.arange(3)]
    torch.testing.assert_close(picked, full.sdr[0])
    best, perm = sdr(r, e)
    assert torch.equal(perm, full.perm)  # on these signals SDR and SIR agree on the assignment


def test_si_sdr_hand_cases():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(1, 1, 4000, generator=g, dtype=torch.float64)
    n = torch.randn(1, 1, 4000, generator=g, dtype=torch.float64)
    n = n - (n * s).sum() / (s * s).sum() * s  # orthogonal to s
    n = n / n.norm() * s.norm() / 10  # 20 dB below the source
    val = si_sdr_matrix(s, 3.0 * (s + n))
    torch.testing.assert_close(val, torch.full_like(val, 20.0))
    assert float(si_sdr_matrix(s, 0.5 * s)) > 120  # exact up to float64 rounding


def test_best_permutation_hand_case():
    scores = torch.tensor([[[1.0, 5.0], [6.0, 2.0], [9.0, 9.0]]])  # 3 estimates, 2 sources
    # reference 0 takes estimate 1 and reference 1 estimate 2: (6 + 9) / 2 beats (9 + 5) / 2
    assert best_permutation(scores).tolist() == [[1, 2]]


def test_separation_scores_of_the_mixture_itself_is_zero_improvement():
    ref, _ = _random_case(7, 2)
    r = torch.tensor(ref)[None]
    mix = r.sum(1)
    out = separation_scores(r, mix[:, None].expand(1, 2, -1).clone(), mix)
    torch.testing.assert_close(out["sdri"], torch.zeros(1, 2, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(out["si_sdri"], torch.zeros(1, 2, dtype=torch.float64), atol=1e-9, rtol=0)


def test_metrics_reject_bad_input():
    r = torch.randn(1, 2, 1000)
    with pytest.raises(ValueError, match="silent sources"):
        si_sdr(torch.cat([r[:, :1], torch.zeros(1, 1, 1000)], 1), r)
    with pytest.raises(ValueError, match="'estimates' must have the batch size and length"):
        sdr_matrix(r, torch.randn(1, 2, 999))
    with pytest.raises(ValueError, match="finite"):
        si_sdr(r, torch.full((1, 2, 1000), float("nan")))


def test_separation_scores_pick_the_best_subset_and_count_missing_as_silent():
    ref, est = _random_case(8, 2)
    r, e = torch.tensor(ref)[None], torch.tensor(est)[None]
    mix = r.sum(1)
    extra = torch.cat([torch.randn(1, 1, r.shape[-1], dtype=torch.float64), e], 1)  # a spurious estimate first
    got = separation_scores(r, extra, mix)
    want = separation_scores(r, e, mix)
    for key in ("sdr", "si_sdr", "sdri", "si_sdri"):
        torch.testing.assert_close(got[key], want[key])
    # one estimate for two references: the other scores as a silent estimate, -inf dB
    short = separation_scores(r, e[:, :1], mix)
    assert set(short) == {"si_sdr", "si_sdri", "sdr", "sdri"}
    for key in short:
        assert sorted(torch.isneginf(short[key][0]).tolist()) == [False, True], key
