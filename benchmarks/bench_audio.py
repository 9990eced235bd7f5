"""Speech separation benchmark: a saved model next to the oracle masks on the same mixtures.

Prints one table per experiment (Markdown, ready for RESULTS.md):

* 2-speaker mixtures of the held-out test voices: SDRi / SI-SDRi of the model, of the oracle
  ideal binary mask (IBM) and ideal ratio mask (IRM), and the model's share of the IBM's SDRi;
* 3-speaker mixtures separated by the same (2-speaker) model with n_sources=3;
* source counting ("auto") on an even mix of 2- and 3-speaker mixtures: accuracy, confusion;
* real recorded speech: the ALSA channel announcements (one real speaker, from alsa-utils)
  mixed with held-out synthetic voices;
* speed: real-time factor (wall time / audio duration) of model.separate on 10 s mixtures,
  with the CPU time per audio second next to it (the machine may be shared).

With ``--real DIR`` (a corpus of real recorded speech with a ``splits.json``, such as the one
:func:`domains.audio.build_real_speech_corpus` builds), the 2-speaker, 3-speaker and counting
experiments also run on the TEST speakers of that corpus (the model must never have trained on
them, nor been chosen by them), and the speed is measured on its mixtures.

Run::

    python benchmarks/bench_audio.py --model pretrained/audio-speech-8k --corpus data/speech200
    python benchmarks/bench_audio.py --model pretrained/audio-speech-8k --corpus data/speech --real data/speech-real
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import embedseg  # noqa: E402
from domains.audio import MixtureDataset  # noqa: E402
from domains.audio.audio_io import load_audio, save_audio  # noqa: E402
from domains.audio.corpus import SPLITS  # noqa: E402
from domains.audio.metrics import AudioMetrics, oracle_separation  # noqa: E402

ALSA = Path("/usr/share/sounds/alsa")


def score(model, dataset, n_sources, oracle=True):
    """SDRi / SI-SDRi / SDR and count accuracy of the model (and oracles) over a dataset, through
    the audio domain's accumulator (what model.evaluate uses): the mean over mixtures of the mean
    over sources; under-counted mixtures score their missing sources as the mixture. Also the
    (true, found) source count of each mixture."""
    metrics = {"model": AudioMetrics()}
    if oracle:
        metrics.update(ibm=AudioMetrics(), irm=AudioMetrics())
    counts = []
    for i in range(len(dataset)):
        item = dataset[i]
        mix, src = item["mixture"], item["sources"]
        est = model.separate(mix, n_sources=n_sources)
        counts.append((src.shape[0], est.shape[0]))
        metrics["model"].update_items([src], [est], [mix])
        if oracle:
            for kind in ("ibm", "irm"):
                metrics[kind].update_items([src], [oracle_separation(mix[None], src[None], kind)[0]], [mix])
    return {name: metric.compute() for name, metric in metrics.items()}, counts


def table(title, res, n):
    print(f"\n### {title} ({n} mixtures)\n")
    print("| system | SDRi (dB) | SI-SDRi (dB) | SDR (dB) |")
    print("| --- | ---: | ---: | ---: |")
    for name, label in (("model", "model"), ("ibm", "oracle IBM"), ("irm", "oracle IRM")):
        if name in res:
            r = res[name]
            print(f"| {label} | {r['sdri']:.2f} | {r['si_sdri']:.2f} | {r['sdr']:.2f} |")
    if "ibm" in res:
        print(f"\nmodel SDRi / oracle IBM SDRi: **{100 * res['model']['sdri'] / res['ibm']['sdri']:.0f}%**")


def real_speech_corpus(corpus: Path, tmp: Path) -> Path:
    """Two 'speakers': the real ALSA voice, and the pooled held-out synthetic voices."""
    (tmp / "alsa-real").mkdir(parents=True)
    for f in sorted(ALSA.glob("*.wav")):
        if f.stem == "Noise":
            continue
        wave, _ = load_audio(f, 8000)
        save_audio(tmp / "alsa-real" / f.name, wave, 8000)
    (tmp / "synthetic-test").mkdir()
    for v in SPLITS["test"]:
        for f in sorted((corpus / v).glob("*.wav")):
            shutil.copy(f, tmp / "synthetic-test" / f.name)
    return tmp


def separation_experiments(model, corpus: Path, who: str, n: int, skip: set) -> None:
    """The 2-speaker, 3-speaker and counting tables on the test speakers of ``corpus``."""
    if "two" not in skip:
        ds = MixtureDataset(corpus, split="test", n_sources=2, segment_seconds=None, n_mixtures=n, seed=2)
        res, _ = score(model, ds, 2)
        table(f"2-speaker mixtures, {who}", res, n)
    if "three" not in skip:
        ds = MixtureDataset(corpus, split="test", n_sources=3, segment_seconds=None, n_mixtures=n, seed=3)
        res, _ = score(model, ds, 3)
        table(f"3-speaker mixtures, {who}, 2-speaker model", res, n)
    if "count" not in skip:
        ds = MixtureDataset(corpus, split="test", n_sources=(2, 3), segment_seconds=None, n_mixtures=n, seed=4)
        res, counts = score(model, ds, "auto", oracle=False)
        acc = res["model"]["count_accuracy"]
        print(f"\n### Source counting, n_sources='auto', 2- and 3-speaker mixtures, {who} ({n})\n")
        print("| true \\ found | 2 | 3 | 4 |")
        print("| --- | ---: | ---: | ---: |")
        for true in (2, 3):
            row = [sum(1 for a, b in counts if a == true and b == k) for k in (2, 3, 4)]
            print(f"| {true} | " + " | ".join(map(str, row)) + " |")
        print(f"\naccuracy: **{100 * acc:.0f}%**; SDRi with the found counts: {res['model']['sdri']:.2f} dB")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=REPO / "pretrained" / "audio-speech-8k")
    p.add_argument("--corpus", type=Path, default=REPO / "data" / "speech200")
    p.add_argument("--real", type=Path, default=None,
                   help="a real-speech corpus: also score its held-out test speakers")
    p.add_argument("--n", type=int, default=40, help="mixtures per experiment")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip", default="", help="comma-separated experiments to skip: two,three,count,real,speed")
    p.add_argument("--inference", choices=("clusters", "masks", "auto"), default=None,
                   help="override the model's inference: deep clustering, its mask-inference head (fixed count), "
                        "or the head where the count matches it")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    skip = set(filter(None, args.skip.split(",")))
    model = embedseg.load(args.model)
    if args.inference is not None:
        model.domain.inference = args.inference
    print(f"model: {args.model} ({sum(q.numel() for q in model.network.parameters()):,} parameters); "
          f"corpus: {args.corpus}; {platform.machine()}, torch {torch.__version__}, {args.threads} threads; "
          f"inference: {model.domain.inference}")

    corpora = [(args.corpus, "held-out voices")]
    if args.real is not None:
        corpora.append((args.real, "held-out real test speakers"))
    for corpus, who in corpora:
        separation_experiments(model, corpus, who, args.n, skip)
    if "real" not in skip and ALSA.is_dir():
        with tempfile.TemporaryDirectory() as tmp:
            root = real_speech_corpus(args.corpus, Path(tmp))
            ds = MixtureDataset(root, n_sources=2, segment_seconds=None, n_mixtures=min(args.n, 24), seed=5)
            res, _ = score(model, ds, 2)
            table("real speech (ALSA announcements) + held-out synthetic voice", res, len(ds))
    if "speed" not in skip:
        corpus = args.corpus if args.real is None else args.real
        ds = MixtureDataset(corpus, split="test", n_sources=2, segment_seconds=10.0, n_mixtures=3, seed=6)
        mixes = [ds[i]["mixture"] for i in range(3)]
        model.separate(mixes[0], n_sources=2)  # warm-up
        wall, cpu = [], []
        for m in mixes:
            t0, c0 = time.perf_counter(), time.process_time()
            model.separate(m, n_sources=2)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        print("\n### Speed: model.separate on 10 s mixtures, n_sources=2\n")
        print("| measure | value |")
        print("| --- | ---: |")
        print(f"| real-time factor (wall s / audio s), median of 3 | {np.median(wall) / 10:.4f} |")
        print(f"| CPU s per audio s (all threads), median of 3 | {np.median(cpu) / 10:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
