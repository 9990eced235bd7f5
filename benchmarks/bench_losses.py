"""Time embedseg's deep-clustering losses against the one-hot + three-einsum formulation.

The reference is the formulation common toolkits use (asteroid's ``deep_clustering_loss``):
a materialized one-hot target (batch, n, C), three einsums for VᵀV, YᵀY and VᵀY, and autograd
for the backward pass. Both run side by side in one process, interleaved repeat by repeat,
after checking that they agree; the figure that matters is the ratio of medians.

On a CUDA device the script also reports embedseg's time against the memory-bandwidth floor:
the bytes of the embeddings read once plus their gradient written once, divided by the
bandwidth of a large device-to-device copy.

Run:
    .venv/bin/python benchmarks/bench_losses.py
    .venv/bin/python benchmarks/bench_losses.py --batch 8 --repeats 5   # quicker
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from typing import Callable

import torch

from embedseg.losses import affinity_loss, whitened_kmeans_loss

TARGET_RATIO = 2.5


def onehot_einsum_loss(embedding: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None):
    """The one-hot + three-einsum deep-clustering loss, per item, mean over the batch.

    asteroid divides by the number of active bins; here the normalization is embedseg's
    (active bins squared) so that the two results can be checked against each other.
    """
    batch, n, _ = embedding.shape
    n_classes = len(labels.unique())  # batch-wide, as in the reference toolkits
    if mask is None:
        mask = torch.ones(batch, n, 1, device=embedding.device)
    mask = mask.float().view(batch, n, 1)
    target = torch.zeros(batch, n, n_classes, device=labels.device)
    target.scatter_(2, labels.view(batch, n, 1), 1)
    target = target * mask
    embedding = embedding * mask
    est = torch.einsum("ijk,ijl->ikl", embedding, embedding)
    true = torch.einsum("ijk,ijl->ikl", target, target)
    cross = torch.einsum("ijk,ijl->ikl", embedding, target)
    cost = (
        torch.linalg.matrix_norm(est).square()
        + torch.linalg.matrix_norm(true).square()
        - 2 * torch.linalg.matrix_norm(cross).square()
    )
    return (cost / mask.sum(dim=(1, 2)).square()).mean()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_backward(
    fn: Callable[[torch.Tensor], torch.Tensor], v: torch.Tensor
) -> Callable[[], None]:
    """A closure running one forward and backward pass of ``fn`` on a fresh leaf copy of v."""

    def run() -> None:
        x = v.detach().requires_grad_()
        fn(x).backward()

    return run


def time_side_by_side(
    runs: dict[str, Callable[[], None]], repeats: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per run for each candidate, the candidates interleaved in every repeat."""
    for run in runs.values():  # warm-up: allocator, kernels, thread pool
        run()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            _sync(device)
            start = time.perf_counter()
            run()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def copy_bandwidth(device: torch.device, n_bytes: int = 1 << 30) -> float:
    """Bytes per second of a large device copy (each byte read once and written once)."""
    src = torch.empty(n_bytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(10):
        _sync(device)
        start = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * src.numel() * 4 / best


def check_agreement(v: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None) -> float:
    """Largest relative difference between the two formulations (loss and gradient)."""
    a = v.detach().requires_grad_()
    b = v.detach().requires_grad_()
    la = affinity_loss(a, labels, None if mask is None else mask.to(v.dtype))
    lb = onehot_einsum_loss(b, labels, mask)
    la.backward()
    lb.backward()
    loss_err = abs(float(la.detach()) - float(lb.detach())) / abs(float(lb.detach()))
    grad_err = float((a.grad - b.grad).abs().max() / b.grad.abs().max())
    return max(loss_err, grad_err)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--bins", type=int, default=129)
    parser.add_argument("--dim", type=int, default=40)
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--no-cuda", action="store_true", help="skip the CUDA measurements")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    n = args.frames * args.bins
    gen = torch.Generator().manual_seed(0)
    v = torch.nn.functional.normalize(torch.randn(args.batch, n, args.dim, generator=gen), dim=-1)
    labels = torch.randint(0, args.classes, (args.batch, n), generator=gen)
    # Voice-activity-style binary weights: about 70% of the bins active.
    vad = torch.rand(args.batch, n, generator=gen) < 0.7

    print(
        f"deep-clustering loss, forward + backward: batch {args.batch}, n {n} "
        f"({args.frames} frames x {args.bins} bins), dim {args.dim}, {args.classes} classes"
    )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{args.threads} threads; median of {args.repeats} interleaved repeats"
    )
    # Other processes on the machine distort timings (most of all with several threads);
    # the load average tells whether the figures were taken on a quiet machine.
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print(f"agreement with the reference (max relative difference): "
          f"{max(check_agreement(v, labels, None), check_agreement(v, labels, vad)):.1e}")
    print()

    rows = []
    for label, mask in (("unweighted", None), ("binary weights", vad)):
        weights = None if mask is None else mask.float()
        t = time_side_by_side(
            {
                "embedseg": forward_backward(lambda x: affinity_loss(x, labels, weights), v),
                "reference": forward_backward(lambda x: onehot_einsum_loss(x, labels, mask), v),
            },
            args.repeats,
            torch.device("cpu"),
        )
        rows.append((f"affinity loss, {label}", t["embedseg"], t["reference"]))
    t_wk = time_side_by_side(
        {"wkm": forward_backward(lambda x: whitened_kmeans_loss(x, labels), v)},
        args.repeats,
        torch.device("cpu"),
    )["wkm"]

    # The median is the headline figure; the ratio of the fastest runs shows what the code
    # does when other processes leave it alone (timeit's reasoning), useful on a busy machine.
    print(
        "| CPU, forward + backward | embedseg (ms) | one-hot + einsum (ms) | speed-up "
        f"| >= {TARGET_RATIO}x | speed-up, fastest runs |"
    )
    print("| --- | ---: | ---: | ---: | :---: | ---: |")
    for label, ours, ref in rows:
        ratio = statistics.median(ref) / statistics.median(ours)
        print(
            f"| {label} | {statistics.median(ours) * 1e3:.1f} | "
            f"{statistics.median(ref) * 1e3:.1f} | {ratio:.2f}x | "
            f"{'yes' if ratio >= TARGET_RATIO else 'NO'} | {min(ref) / min(ours):.2f}x |"
        )
    print(f"| whitened k-means loss, unweighted | {statistics.median(t_wk) * 1e3:.1f} | | | | |")
    print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))

    if torch.cuda.is_available() and not args.no_cuda:
        device = torch.device("cuda")
        vc, lc = v.to(device), labels.to(device)
        t = time_side_by_side(
            {
                "embedseg": forward_backward(lambda x: affinity_loss(x, lc), vc),
                "reference": forward_backward(lambda x: onehot_einsum_loss(x, lc, None), vc),
                "wkm": forward_backward(lambda x: whitened_kmeans_loss(x, lc), vc),
            },
            max(args.repeats, 20),
            device,
        )
        bandwidth = copy_bandwidth(device)
        floor = 2 * vc.numel() * vc.element_size() / bandwidth
        print()
        name = torch.cuda.get_device_name(device)
        print(f"CUDA: {name}, copy bandwidth {bandwidth / 1e9:.0f} GB/s")
        print("| CUDA, forward + backward | time (ms) | bandwidth floor (ms) | x floor |")
        print("| --- | ---: | ---: | ---: |")
        for name in ("embedseg", "reference", "wkm"):
            label = {"embedseg": "affinity loss", "reference": "one-hot + einsum",
                     "wkm": "whitened k-means loss"}[name]
            med = statistics.median(t[name])
            print(f"| {label} | {med * 1e3:.2f} | {floor * 1e3:.2f} | {med / floor:.1f} |")


if __name__ == "__main__":
    main()
