"""Training speed: embedseg's Trainer on the speech recipe's data next to a plain PyTorch loop.

The network is the shipped speech model's (``pretrained/audio-speech-8k``, its weights as the
starting point); the data and options are those of ``pretrained/train_audio_speech.py train``
with its defaults: a :class:`~domains.audio.MixedCorpusDataset` of ``data/speech-real`` and
``data/speech`` (real + real, real + synthetic, synthetic + synthetic in proportions
0.5 / 0.3 / 0.2), 1.5 s segments, 0-5 dB, speed perturbation 0.85-1.15 and the default
:class:`~domains.audio.ChannelAugmentation` on the real corpus; batch 8, lr 5e-4 with 50
warm-up steps, the whitened k-means loss with magnitude weights, seed 0, on the CPU.

Two variants, alternating within each repeat:

* **trainer**: ``Trainer.fit`` on that dataset (items made on the fly in the main process, as
  the recipe runs; no validation set: evaluations every 300 steps are not part of a step);
* **plain**: forward, the same loss (``AudioDomain.compute_loss``), backward and an Adam step
  on batches collated and encoded beforehand, held in memory.

Steps per second are timed between the starts of successive steps, after ``--warmup`` steps.
The trainer's step is broken down by timers put around the functions that do each part
(exclusive times: a part's inner parts are counted once, in the inner part):

* data loading (``MixedCorpusDataset.__getitem__``): file reads (``soundfile.SoundFile``:
  open, read, close), speed resampling (``scipy.signal.resample_poly``), channel augmentation
  (``ChannelAugmentation.__call__``), and the rest of making a mixture (drawing, cropping,
  levels, mixing);
* collation (``AudioDomain.collate``); features (``AudioDomain.encode``: STFTs, features,
  targets, weights);
* forward (the network's ``forward``), loss (``AudioDomain.compute_loss``), backward
  (``torch.autograd.backward``), optimizer (``AdamW.step``), gradient norm and clipping;
* trainer bookkeeping: the rest of the step's wall time (the DataLoader's own work, finite
  checks, buffer copies, learning rate, logging, the time check).

With ``--before DIR`` another tree (a folder with the ``embedseg`` and ``domains`` packages,
e.g. ``git archive REV embedseg domains | tar -x -C DIR``) is measured the same way in a child
process, the trees alternating repeat by repeat. ``--profile`` adds a torch.profiler table and
a cProfile listing of some trainer steps of the tree measured here.

Usage::

    python benchmarks/bench_trainer.py [--steps 20] [--warmup 3] [--repeats 5] [--threads 1]
        [--before /tmp/before] [--profile]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PHASES = [
    ("reads", "file reads"),
    ("speed", "speed resampling"),
    ("augment", "channel augmentation"),
    ("mixing", "mixing (draws, crops, levels, sum)"),
    ("collate", "collation"),
    ("encode", "features (STFT, targets, weights)"),
    ("forward", "forward"),
    ("loss", "loss"),
    ("backward", "backward"),
    ("optimizer", "optimizer step"),
    ("grad_norm", "gradient norm + clipping"),
    ("other", "trainer bookkeeping (rest)"),
]


class Timers:
    """Exclusive wall time per phase of functions wrapped with :meth:`wrap`, while ``on``."""

    def __init__(self) -> None:
        self.on = False
        self.totals: dict[str, float] = {}
        self.stack: list[list[float]] = []  # [time spent in wrapped children]

    def wrap(self, owner, name: str, phase: str) -> None:
        fn = getattr(owner, name)
        timers = self

        def timed(*args, **kwargs):
            if not timers.on:
                return fn(*args, **kwargs)
            timers.stack.append([0.0])
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - t0
                children = timers.stack.pop()[0]
                timers.totals[phase] = timers.totals.get(phase, 0.0) + elapsed - children
                if timers.stack:
                    timers.stack[-1][0] += elapsed

        timed.__wrapped__ = fn
        setattr(owner, name, timed)


def run_tree(tree: Path, args: argparse.Namespace) -> list[dict]:
    """``args.repeats`` repeats of (trainer, plain) on the tree whose packages are importable."""
    import numpy as np  # noqa: F401
    import scipy.signal
    import soundfile
    import torch

    torch.set_num_threads(args.threads)
    import embedseg
    import embedseg.training.loop as loop
    from embedseg.api import build_model
    from embedseg.training import Trainer, TrainerConfig
    from domains.audio.augment import ChannelAugmentation
    from domains.audio.dataset import MixedCorpusDataset, MixtureDataset
    from domains.audio.domain import AudioDomain

    assert Path(embedseg.__file__).resolve().is_relative_to(tree.resolve()), embedseg.__file__

    # pretrained/train_audio_speech.py: train_set() and cmd_train() with the default options
    # (--speed 0.15 --augment all --segment 1.5 --batch-size 8 --lr 5e-4 --proportions 0.5,0.3,0.2).
    common = {"n_sources": 2, "segment_seconds": 1.5, "snr_range": (0, 5), "n_mixtures": 1}
    real = MixtureDataset(REPO / "data" / "speech-real", split="train", seed=0, speed_range=(0.85, 1.15),
                          augment=ChannelAugmentation(), **common)
    synthetic = MixtureDataset(REPO / "data" / "speech", split="train", seed=0, **common)
    train = MixedCorpusDataset(real, synthetic, (0.5, 0.3, 0.2), seed=0, n_mixtures=2_000_000)
    shipped = embedseg.load(REPO / "pretrained" / "audio-speech-8k").network
    options = dict(batch_size=8, lr=5e-4, loss="whitened_kmeans", warmup_steps=50, plateau_patience=3,
                   eval_every=300, checkpoint_every=300, keep_checkpoints=1, device="cpu", seed=0, progress=False)

    timers = Timers()
    timers.wrap(MixedCorpusDataset, "__getitem__", "mixing")
    for name in ("__init__", "read", "close", "seek"):
        timers.wrap(soundfile.SoundFile, name, "reads")
    timers.wrap(scipy.signal, "resample_poly", "speed")
    timers.wrap(ChannelAugmentation, "__call__", "augment")
    timers.wrap(AudioDomain, "collate", "collate")
    timers.wrap(AudioDomain, "encode", "encode")
    timers.wrap(AudioDomain, "compute_loss", "loss")
    timers.wrap(type(shipped), "forward", "forward")
    timers.wrap(torch.autograd, "backward", "backward")
    timers.wrap(torch.optim.AdamW, "step", "optimizer")
    timers.wrap(loop, "_grad_norm", "grad_norm")
    timers.wrap(loop, "_clip", "grad_norm")

    n_steps = args.warmup + args.steps

    def trainer_run() -> dict:
        starts: list[float] = []
        marks: dict[int, dict[str, float]] = {}
        original = Trainer._train_step

        def step(self, batch):
            starts.append(time.perf_counter())
            k = len(starts) - 1
            if k == args.warmup:
                timers.totals.clear()
                timers.on = True
            if k == n_steps:
                timers.on = False
                marks[k] = dict(timers.totals)
            return original(self, batch)

        Trainer._train_step = step
        try:
            torch.manual_seed(0)
            model = build_model("audio", network=copy.deepcopy(shipped), domain_options={"weights": "magnitude"})
            Trainer(model, TrainerConfig(max_steps=n_steps + 1, **options)).fit(train)
        finally:
            Trainer._train_step = original
            timers.on = False
        wall = starts[n_steps] - starts[args.warmup]
        parts = {k: v / args.steps for k, v in marks[n_steps].items()}
        parts["other"] = wall / args.steps - sum(parts.values())
        return {"step_s": wall / args.steps, "parts": parts}

    domain = AudioDomain(weights="magnitude")
    batches = []
    for b in range(n_steps):
        items = [train[i] for i in range(8 * b, 8 * b + 8)]
        batches.append(domain.encode(domain.collate(items), "cpu"))

    def plain_run() -> dict:
        torch.manual_seed(0)
        net = copy.deepcopy(shipped).train()
        opt = torch.optim.Adam(net.parameters(), lr=5e-4)
        starts = []
        for enc in batches + batches[:1]:
            starts.append(time.perf_counter())
            loss = domain.compute_loss(net(enc.features), enc, "whitened_kmeans")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return {"step_s": (starts[n_steps] - starts[args.warmup]) / args.steps}

    results = []
    for r in range(args.repeats):
        if r % 2 == 0:
            t, p = trainer_run(), plain_run()
        else:
            p, t = plain_run(), trainer_run()
        results.append({"trainer": t, "plain": p, "ratio": p["step_s"] / t["step_s"]})
        print(f"[{tree}] repeat {r + 1}: trainer {t['step_s']:.3f} s/step, plain {p['step_s']:.3f} s/step, "
              f"trainer/plain speed {results[-1]['ratio']:.3f}", file=sys.stderr, flush=True)
    if args.profile:
        profile(train, shipped, options, build_model, Trainer, TrainerConfig, args)
    return results


def profile(train, shipped, options, build_model, Trainer, TrainerConfig, args) -> None:
    """torch.profiler's busiest operators and cProfile's busiest functions over trainer steps."""
    import cProfile
    import io
    import pstats

    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    model = build_model("audio", network=copy.deepcopy(shipped), domain_options={"weights": "magnitude"})
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        Trainer(model, TrainerConfig(max_steps=args.steps, **options)).fit(train)
    print("\ntorch.profiler, trainer, %d steps (self CPU time):" % args.steps)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
    model = build_model("audio", network=copy.deepcopy(shipped), domain_options={"weights": "magnitude"})
    pr = cProfile.Profile()
    pr.enable()
    Trainer(model, TrainerConfig(max_steps=args.steps, **options)).fit(train)
    pr.disable()
    out = io.StringIO()
    pstats.Stats(pr, stream=out).sort_stats("tottime").print_stats(25)
    print("\ncProfile, trainer, %d steps (set-up included), by own time:" % args.steps)
    print(out.getvalue())


def summary(results: list[dict]) -> dict:
    med = statistics.median
    parts = sorted({k for r in results for k in r["trainer"]["parts"]})
    return {
        "trainer_step_s": med(r["trainer"]["step_s"] for r in results),
        "plain_step_s": med(r["plain"]["step_s"] for r in results),
        "ratio": med(r["ratio"] for r in results),
        "ratios": [round(r["ratio"], 3) for r in results],
        "parts": {k: med(r["trainer"]["parts"].get(k, 0.0) for r in results) for k in parts},
    }


def table(named: dict[str, dict]) -> str:
    names = list(named)
    lines = ["| part of a trainer step | " + " | ".join(f"{n} (ms)" for n in names) + " |",
             "| --- | " + " | ".join("---:" for _ in names) + " |"]
    data_rows = ("reads", "speed", "augment", "mixing")
    lines.append("| **data loading** (`__getitem__` x 8) | "
                 + " | ".join(f"**{1000 * sum(s['parts'].get(k, 0) for k in data_rows):.1f}**" for s in named.values()) + " |")
    for key, label in PHASES:
        indent = "&nbsp;&nbsp;" if key in data_rows else ""
        lines.append(f"| {indent}{label} | " + " | ".join(f"{1000 * s['parts'].get(key, 0):.1f}" for s in named.values()) + " |")
    lines.append("| **trainer step** | " + " | ".join(f"**{1000 * s['trainer_step_s']:.1f}**" for s in named.values()) + " |")
    lines.append("| plain loop step | " + " | ".join(f"{1000 * s['plain_step_s']:.1f}" for s in named.values()) + " |")
    lines.append("| **trainer / plain speed** | " + " | ".join(f"**{s['ratio']:.3f}**" for s in named.values()) + " |")
    lines.append("| ratio per repeat | " + " | ".join(", ".join(f"{v:.3f}" for v in s["ratios"]) for s in named.values()) + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20, help="timed steps per variant and repeat")
    p.add_argument("--warmup", type=int, default=3, help="steps run before timing")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--before", type=Path, default=None, help="another tree, measured alternately")
    p.add_argument("--profile", action="store_true", help="also print torch.profiler and cProfile listings")
    p.add_argument("--tree", type=Path, default=REPO, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    sys.path.insert(0, str(args.tree))
    if args.json:  # one tree, results as JSON on stdout (a child of --before)
        print(json.dumps(run_tree(args.tree, args)))
        return 0
    if args.before is None:
        runs = {"this tree": run_tree(args.tree, argparse.Namespace(**{**vars(args), "profile": False}))}
    else:
        runs = {"before": [], "after": []}
        for r in range(args.repeats):
            for name, tree in (("before", args.before), ("after", args.tree))[:: 1 if r % 2 == 0 else -1]:
                cmd = [sys.executable, __file__, "--tree", str(tree), "--json", "--repeats", "1",
                       "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads)]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True)
                sys.stderr.write(out.stderr[-300:])
                runs[name] += json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{args.steps} timed steps after {args.warmup}, {args.repeats} repeats, {args.threads} torch thread(s); medians")
    print(table({name: summary(res) for name, res in runs.items()}))
    if args.profile:
        run_tree(args.tree, argparse.Namespace(**{**vars(args), "repeats": 0}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
