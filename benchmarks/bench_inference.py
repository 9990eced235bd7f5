"""Inference speed of two trees side by side: the shipped models' ``segment`` and ``separate``.

Each measurement runs in a fresh process on one tree, the trees alternating (before, after,
before, after, ...), so that a machine's drifts fall on both alike. A tree is a folder holding
the ``embedseg`` and ``domains`` packages, e.g. one made with::

    git archive REV embedseg domains | tar -x -C /tmp/before

Usage::

    python benchmarks/bench_inference.py --before /tmp/before [--after .] [--repeats 5] [--threads 2]

Cases: ``model.segment`` of the shipped image model on one 512 x 512 scene with 150 objects
(seconds, best of 3 calls after a warm-up), and ``model.separate(..., n_sources=2)`` of the
shipped speech model on 30 s of a two-talker signal (real-time factor, best of 3). The shipped
models are read from the ``--after`` tree (both trees load the same files).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
import numpy as np, torch
sys.path.insert(0, sys.argv[1])
import embedseg
torch.set_num_threads(int(sys.argv[3]))
models = sys.argv[4]
def best(fn, n=3):
    fn()
    runs = []
    for _ in range(n):
        t = time.perf_counter(); fn(); runs.append(time.perf_counter() - t)
    return min(runs)
if sys.argv[2] == "segment":
    from domains.image import SyntheticScenes
    m = embedseg.load(models + "/image-shapes")
    img = SyntheticScenes(1, size=512, min_objects=150, max_objects=150, seed=7)[0]["image"]
    print(json.dumps(best(lambda: m.segment(img))))
else:
    m = embedseg.load(models + "/audio-speech-8k")
    t = np.arange(30 * 8000) / 8000
    a = np.sin(2 * np.pi * 140 * t * (1 + 0.05 * np.sin(t))) * (np.sin(3 * t) > 0)
    b = 0.7 * np.sin(2 * np.pi * 230 * t) * (np.cos(2.3 * t) > 0)
    x = ((a + b) * 0.1 + 0.001 * np.random.default_rng(0).standard_normal(len(t))).astype(np.float32)
    print(json.dumps(best(lambda: m.separate(x, n_sources=2)) / 30.0))
"""


def measure(tree: Path, case: str, threads: int, models: Path) -> float:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(tree), case, str(threads), str(models)],
        capture_output=True, text=True, check=True,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, type=Path, help="the tree before the change")
    parser.add_argument("--after", default=ROOT, type=Path, help="the tree after it (default: this one)")
    parser.add_argument("--repeats", type=int, default=5, help="alternations per case (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = parser.parse_args()
    models = args.after.resolve() / "pretrained"
    print(f"| case ({args.threads} threads) | before (median) | after (median) | after / before | runs before | runs after |")
    print("| --- | ---: | ---: | ---: | --- | --- |")
    for case, unit in (("segment", "s"), ("separate", "RTF")):
        runs: dict[str, list[float]] = {"before": [], "after": []}
        for _ in range(args.repeats):
            for name in ("before", "after"):
                runs[name].append(measure(getattr(args, name).resolve(), case, args.threads, models))
        before, after = statistics.median(runs["before"]), statistics.median(runs["after"])
        fmt = (lambda v: f"{v:.3f}") if unit == "s" else (lambda v: f"{v:.4f}")
        print(
            f"| {case} ({unit}) | {fmt(before)} | {fmt(after)} | {after / before:.2f} | "
            f"{', '.join(fmt(v) for v in runs['before'])} | {', '.join(fmt(v) for v in runs['after'])} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
