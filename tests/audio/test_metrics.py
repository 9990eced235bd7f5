"""The audio domain's metrics: the re-exported criteria, the oracle masks, and AudioMetrics,
which reads the references from a batch and pools over a dataset."""

import numpy as np
import pytest
import torch

import embedseg.metrics as core
from domains.audio import metrics as audio_metrics
from domains.audio.features import STFTConfig
from domains.audio.metrics import AudioMetrics, oracle_separation, separation_scores
from embedseg.domain import EncodedBatch


def test_old_import_paths_are_the_core_functions():
    for name in ("bss_eval_sources", "sdr", "sdr_matrix", "si_sdr", "si_sdr_matrix", "best_permutation",
                 "separation_scores", "BSSEvalResult"):
        assert getattr(audio_metrics, name) is getattr(core, name)


def test_oracle_masks_separate_disjoint_tones():
    t = torch.arange(8000, dtype=torch.float32) / 8000
    src = torch.stack([torch.sin(2 * torch.pi * 440 * t), 0.5 * torch.sin(2 * torch.pi * 1800 * t)])[None]
    mix = src.sum(1)
    cfg = STFTConfig()
    for kind, floor in (("ibm", 25.0), ("irm", 25.0)):
        est = oracle_separation(mix, src, kind, cfg)
        scores = separation_scores(src.double(), est.double(), mix.double())
        assert float(scores["sdr"].min()) > floor, kind
    with pytest.raises(ValueError, match="'kind'"):
        oracle_separation(mix, src, "wiener", cfg)


def _items(seed, n=5):
    """Mixtures of 2 or 3 sources of different lengths, with 1 to 4 estimates each."""
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        c = int(rng.integers(2, 4))
        length = int(rng.choice([700, 1000]))
        src = torch.randn(c, length, generator=g)
        n_est = [c - 1, c, c + 1][i % 3]
        est = src[:n_est] + 0.3 * torch.randn(min(n_est, c), length, generator=g) if n_est <= c else torch.cat(
            [src + 0.3 * torch.randn(c, length, generator=g), torch.randn(1, length, generator=g)]
        )
        items.append((src, est, src.sum(0)))
    return items


def _batch(items):
    """An encoded batch as the audio domain makes it: sources and mixtures padded."""
    b = len(items)
    T = max(s.shape[1] for s, _, _ in items)
    C = max(s.shape[0] for s, _, _ in items)
    sources = torch.zeros(b, C, T)
    mixture = torch.zeros(b, T)
    for i, (s, _, m) in enumerate(items):
        sources[i, : s.shape[0], : s.shape[1]] = s
        mixture[i, : m.shape[0]] = m
    context = {
        "sources": sources,
        "mixture": mixture,
        "lengths": torch.tensor([s.shape[1] for s, _, _ in items]),
        "n_sources": torch.tensor([s.shape[0] for s, _, _ in items]),
    }
    return EncodedBatch(features=None, mask=torch.ones(b, 1, dtype=torch.bool), context=context), [e for _, e, _ in items]


def _reference(items):
    """Per-item scores as the audio domain defined them, averaged over items."""
    sums = {"sdr": 0.0, "sdri": 0.0, "si_sdr": 0.0, "si_sdri": 0.0, "count_accuracy": 0.0}
    for src, est, mix in items:
        c, length = src.shape
        ref, m, e = src[None].double(), mix[None].double(), est[None].double()
        if e.shape[1] < c:  # missing estimates count as the unprocessed mixture
            e = torch.cat([e, m[:, None].expand(1, c - e.shape[1], length)], dim=1)
        scores = separation_scores(ref, e, m)
        for key in ("sdr", "sdri", "si_sdr", "si_sdri"):
            sums[key] += float(scores[key].mean())
        sums["count_accuracy"] += float(est.shape[0] == c)
    return {k: v / len(items) for k, v in sums.items()}


def test_batches_pool_as_the_mean_over_mixtures():
    items = _items(0)
    metric = AudioMetrics()
    for part in (items[:2], items[2:]):
        batch, outputs = _batch(part)
        metric.update(outputs, batch)
    got, want = metric.compute(), _reference(items)
    assert list(got) == list(want)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-9), key


def test_item_path_merge_and_state_dict_agree_with_batches():
    items = _items(1, n=4)
    whole = AudioMetrics()
    whole.update_items([s for s, _, _ in items], [e for _, e, _ in items], [m for _, _, m in items])
    a, b = AudioMetrics(), AudioMetrics()
    for metric, part in ((a, items[:1]), (b, items[1:])):
        batch, outputs = _batch(part)
        metric.update(outputs, batch)
    merged = AudioMetrics().load_state_dict(a.state_dict()).merge(b)
    for key, value in whole.compute().items():
        assert merged.compute()[key] == pytest.approx(value, abs=1e-9), key
    with pytest.raises(ValueError, match="'other' must have bss_eval"):
        a.merge(AudioMetrics(bss_eval=False))


def test_without_bss_eval_and_without_references():
    items = _items(2, n=2)
    batch, outputs = _batch(items)
    fast = AudioMetrics(bss_eval=False)
    fast.update(outputs, batch)
    assert set(fast.compute()) == {"si_sdr", "si_sdri", "count_accuracy"}
    assert fast.compute()["si_sdri"] == pytest.approx(_reference(items)["si_sdri"], abs=1e-9)
    del batch.context["sources"]  # unannotated mixtures
    empty = AudioMetrics()
    empty.update(outputs, batch)
    with pytest.raises(ValueError, match="no items were scored"):
        empty.compute()
    with pytest.raises(ValueError, match="'outputs' must hold one separation per mixture"):
        AudioMetrics().update(outputs[:1], _batch(items)[0])
