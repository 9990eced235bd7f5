"""One torch thread for small CPU steps."""

from __future__ import annotations

import torch
from sklearn.metrics import adjusted_rand_score

from embedseg.cluster import KMeans, _threads


def test_one_thread_for_small_work_restores_the_thread_count(monkeypatch):
    # The limit holds only inside its block, only for work below the threshold, and leaves
    # torch's setting as found; k-means results do not depend on it.
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(_threads, "SMALL_WORK", 1000)
        with _threads.OneThreadForSmallWork(torch.device("cpu")) as threads:
            threads.engage(5000)
            assert torch.get_num_threads() == 2  # large work: untouched
            threads.engage(10)
            assert torch.get_num_threads() == 1
            threads.engage(10)  # engaging twice saves nothing twice
        assert torch.get_num_threads() == 2
        X = torch.randn(3, 400, 5, generator=torch.Generator().manual_seed(0))
        monkeypatch.setattr(_threads, "SMALL_WORK", 10**9)  # every step on one thread
        limited = KMeans(n_clusters=3, seed=0).fit_predict(X)
        assert torch.get_num_threads() == 2
        monkeypatch.setattr(_threads, "SMALL_WORK", 0)
        # same partition (products may round differently with another thread count)
        assert adjusted_rand_score(limited.flatten(), KMeans(n_clusters=3, seed=0).fit_predict(X).flatten()) == 1.0
    finally:
        torch.set_num_threads(before)
