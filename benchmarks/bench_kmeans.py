"""Batched k-means against scikit-learn looped over the items, and the accuracy of "auto" counts.

Speed: 16 items x 12,900 points x 40 dims (a 100-frame, 129-bin spectrogram of 40-dim deep
clustering embeddings), 3 clusters per item of unequal sizes, unit-normalized. Both sides run
with their defaults (embedseg: k-means++ and 3 batched restarts; scikit-learn:
n_init="auto", i.e. one k-means++ run) and are timed side by side in this process with every
core of the machine; the target is a 2x speed-up at an ARI within 0.01 of scikit-learn's.

Over-relaxation: Lloyd iteration counts with and without over-relaxed steps, from the same
starts.

Auto counts: 100 items with 2 to 5 clusters (varied dimensions, sizes, spreads, and
unit-normalized embedding-like items); the target is at least 90% exact counts.

Run:
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_kmeans.py   # full sizes
    .venv/bin/python benchmarks/bench_kmeans.py --quick                    # smoke run

On a machine whose cores are shared with other busy processes, OpenMP's default spin-waiting
makes every parallel region of both libraries stall (timings 10x slower and erratic);
OMP_WAIT_POLICY=PASSIVE applies to both sides alike and gives stable figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch
from sklearn.cluster import KMeans as SkKMeans
from sklearn.metrics import adjusted_rand_score
from threadpoolctl import threadpool_limits

from embedseg.cluster import KMeans, _distances, _lloyd, _seeding
from embedseg.cluster.auto import estimate_n_clusters


def embedding_items(
    n_items: int, n_points: int, dim: int, n_clusters: int, spread: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm embedding-like clusters: random unit directions plus Gaussian noise, then
    renormalized; cluster sizes drawn from a Dirichlet (one source often dominates)."""
    rng = np.random.default_rng(seed)
    X = np.empty((n_items, n_points, dim), dtype=np.float32)
    y = np.empty((n_items, n_points), dtype=np.int64)
    for b in range(n_items):
        dirs = rng.normal(size=(n_clusters, dim))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        share = rng.dirichlet(np.full(n_clusters, 3.0))
        labels = rng.choice(n_clusters, size=n_points, p=share)
        pts = dirs[labels] + rng.normal(scale=spread / np.sqrt(dim), size=(n_points, dim))
        X[b] = pts / np.linalg.norm(pts, axis=1, keepdims=True)
        y[b] = labels
    return X, y


def blob_item(rng: np.random.Generator, k: int, n_points: int, dim: int, unit: bool) -> np.ndarray:
    """One item of k well-separated blobs of unequal sizes and spreads."""
    if unit:
        dirs = rng.normal(size=(k, dim))
        centers = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
        spreads = rng.uniform(0.2, 0.35, size=k) / np.sqrt(dim)
    else:
        centers = rng.uniform(-10, 10, size=(k, dim))
        # keep the blobs apart: resample until the closest pair is at least 6 apart
        while min(np.linalg.norm(a - b) for i, a in enumerate(centers) for b in centers[i + 1:]) < 6:
            centers = rng.uniform(-10, 10, size=(k, dim))
        spreads = rng.uniform(0.5, 1.0, size=k)
    share = rng.dirichlet(np.full(k, 4.0))
    sizes = np.maximum((share * n_points).astype(int), n_points // (4 * k))
    labels = np.repeat(np.arange(k), sizes)[:n_points]
    labels = np.concatenate([labels, rng.integers(0, k, n_points - labels.size)])
    pts = centers[labels] + rng.normal(size=(n_points, dim)) * spreads[labels, None]
    if unit:
        pts /= np.linalg.norm(pts, axis=1, keepdims=True)
    return pts.astype(np.float32)


def time_pair(fn_a, fn_b, repeats: int) -> tuple[float, object, float, object]:
    """Median wall times of two calls, alternated so both see the same machine load."""
    out_a, out_b = fn_a(), fn_b()  # warm-up (allocations, thread pools)
    times_a, times_b = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out_a = fn_a()
        times_a.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        out_b = fn_b()
        times_b.append(time.perf_counter() - t0)
    return statistics.median(times_a), out_a, statistics.median(times_b), out_b


def bench_speed(n_items: int, n_points: int, dim: int, repeats: int, threads: int, seed: int = 0) -> list[str]:
    X, y = embedding_items(n_items, n_points, dim, 3, spread=1.5, seed=seed)
    Xt = torch.from_numpy(X)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(threads):  # scikit-learn's OpenMP and BLAS pools
            return _bench_speed(X, y, Xt, n_items, n_points, dim, repeats, threads, seed)
    finally:
        torch.set_num_threads(before)


def _bench_speed(X, y, Xt, n_items, n_points, dim, repeats, threads, seed) -> list[str]:

    def ours():
        return KMeans(n_clusters=3, seed=0).fit_predict(Xt)

    def theirs():
        return np.stack([SkKMeans(n_clusters=3, random_state=0).fit_predict(x) for x in X])

    t_ours, lab_ours, t_sk, lab_sk = time_pair(ours, theirs, repeats)
    ari_ours = float(np.mean([adjusted_rand_score(y[b], lab_ours[b].numpy()) for b in range(n_items)]))
    ari_sk = float(np.mean([adjusted_rand_score(y[b], lab_sk[b]) for b in range(n_items)]))
    ratio = t_sk / t_ours
    ok = ratio >= 2.0 and ari_ours >= ari_sk - 0.01
    return [
        f"| k-means, {n_items} x {n_points} x {dim}, k=3, data seed {seed}, {threads} thread(s) | "
        f"{t_ours * 1e3:.0f} ms | "
        f"{t_sk * 1e3:.0f} ms | {ratio:.2f}x | {ari_ours:.4f} | {ari_sk:.4f} | "
        f"{'pass' if ok else 'FAIL'} (>= 2x, ARI >= sklearn - 0.01) |"
    ]


def bench_overrelaxation(seed: int = 0) -> list[str]:
    """Lloyd iterations with and without over-relaxed steps from the same starts (iteration
    counts, not times, so the figure does not depend on the machine's load): 40 items of
    4,000 points (k-means++ starts) and the 48 benchmark items (the starts the subsample
    restarts pick), each at tol 0 (exact fixed point) and at the default 1e-4."""
    cases = []  # (X (1, n, dim) float64, starting centers (1, 1, k, dim))
    for s in range(40):
        X, _ = embedding_items(1, 4000, 40, 3, spread=1.5, seed=1000 + s)
        Xt = torch.from_numpy(X).double()
        mask = torch.ones(Xt.shape[:2], dtype=torch.bool)
        cases.append((Xt, _seeding.kmeans_plusplus(Xt, mask, 3, 1, _seeding.make_generator(s, Xt.device))))
    starts = []
    real_lloyd = _lloyd.lloyd

    def capture(X, mask, centers, *args, **kwargs):  # the full-data run's starting centers
        if X.shape[1] == 12900:
            starts.append(centers.clone())
        return real_lloyd(X, mask, centers, *args, **kwargs)

    _lloyd.lloyd = capture
    try:
        for data_seed in (0, 1, 2):
            X, _ = embedding_items(16, 12900, 40, 3, spread=1.5, seed=data_seed)
            KMeans(n_clusters=3, seed=seed).fit(torch.from_numpy(X))
            for b in range(16):
                cases.append((torch.from_numpy(X[b:b + 1]).double(), starts[-1][b:b + 1].double()))
    finally:
        _lloyd.lloyd = real_lloyd
    lines = []
    for tol in (0.0, 1e-4):
        totals = {}
        for label, overrelax in (("plain", False), ("over-relaxed", True)):
            counts, inertias = [], []
            for X, C in cases:
                mask = torch.ones(X.shape[:2], dtype=torch.bool)
                tol_abs = tol * _distances.masked_mean_variance(X, mask, (X * X).sum(-1))
                valid = torch.ones(C.shape[:3], dtype=torch.bool)
                _, _, inertia, n_iter = _lloyd.lloyd(
                    X, mask, C, valid, max_iter=300, tol=tol_abs, overrelax=overrelax
                )
                counts.append(int(n_iter)), inertias.append(float(inertia))
            totals[label] = (np.array(counts), np.array(inertias))
        plain, fast = totals["plain"], totals["over-relaxed"]
        creeping = plain[0] >= 20
        lines.append(
            f"| Lloyd iterations, 88 items from fixed starts, tol {tol:g} | plain {plain[0].sum()} / "
            f"over-relaxed {fast[0].sum()} ({100 * (1 - fast[0].sum() / plain[0].sum()):.0f}% fewer); "
            f"{int(creeping.sum())} items with >= 20 plain iterations: {plain[0][creeping].sum()} / "
            f"{fast[0][creeping].sum()} | most added on one item: {int((fast[0] - plain[0]).max())} | "
            f"inertia sum ratio {fast[1].sum() / plain[1].sum():.6f} |"
        )
    return lines


def bench_auto(n_items: int, n_points: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    ks = rng.integers(2, 6, size=n_items)
    dims = rng.choice([2, 8, 20, 40], size=n_items)
    units = rng.random(n_items) < 0.5
    hits = 0
    t_total = 0.0
    # Items differ in dimension, so they are grouped by (dim) into batches.
    for dim in np.unique(dims):
        sel = np.flatnonzero(dims == dim)
        Xb = torch.from_numpy(np.stack([blob_item(rng, int(ks[i]), n_points, int(dim), bool(units[i])) for i in sel]))
        t0 = time.perf_counter()
        est = estimate_n_clusters(Xb, min_clusters=2, max_clusters=8, seed=0)
        t_total += time.perf_counter() - t0
        hits += int((est.numpy() == ks[sel]).sum())
    acc = hits / n_items
    return [
        f"| auto count, {n_items} items x {n_points} points, k in 2..5, dims 2/8/20/40, half "
        f"unit-norm, max_clusters=8 | {acc * 100:.0f}% exact ({hits}/{n_items}) | "
        f"{t_total * 1e3 / n_items:.1f} ms/item | {'pass' if acc >= 0.9 else 'FAIL'} (>= 90%) |"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes for a smoke run")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    n_items, n_points = (4, 3000) if args.quick else (16, 12900)
    print(
        f"# {platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"
    )
    print("| case | embedseg | scikit-learn | speed-up | ARI embedseg | ARI sklearn | result |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    cores = os.cpu_count() or 1
    for threads in sorted({cores, 1}, reverse=True):
        for seed in (0, 1, 2):  # three draws of the data: convergence varies item to item
            for line in bench_speed(n_items, n_points, 40, args.repeats, threads, seed):
                print(line, flush=True)
    print()
    print("| case | iterations | worst item | inertia |")
    print("| --- | --- | --- | --- |")
    for line in bench_overrelaxation():
        print(line, flush=True)
    print()
    print("| case | accuracy | time | result |")
    print("| --- | --- | --- | --- |")
    for line in bench_auto(25 if args.quick else 100, 2000 if args.quick else 4000, seed=1):
        print(line)


if __name__ == "__main__":
    main()
