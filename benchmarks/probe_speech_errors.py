"""Where a speech model's errors on new real speakers come from, on the validation speakers of
the real corpus (never the test speakers):

* by speaker pair: which voices it confuses;
* by level: the louder and the quieter talker's SDRi, by the mixture's level difference;
* by time: the SDRi an oracle would reach that swaps the two outputs wherever that fits the
  references better, in blocks of 0.25 to 4 s (what keeping each voice on its output would be
  worth), and what re-linking the blocks by the outputs' pitch (no oracle) gives;
* ensembles: the outputs of several models averaged, each aligned to the first;
* windows: the mixture separated in short overlapping windows, each window's outputs ordered to
  agree with the previous window's on their overlap (the same audio seen twice, so no speaker
  model is needed), then overlap-added: would a short context keep the voices on their outputs?
* 3 talkers: k-means into 3 clusters against a recursive split (2 sources, then the louder one
  split again by the same model), with the oracle choice of which one to split beside it;
* counting: the count head's errors each way (2 talkers called 3, 3 called 2), and how the
  share right moves when the decision between 2 and 3 is shifted by an offset on the
  log-probabilities (whether a calibrated offset would help).

    python benchmarks/probe_speech_errors.py --model pretrained/audio-speech-8k --n 100

Each table uses its own draw of mixtures (seeds 11 and 12 unless --seed-offset moves them), the
same for every model and option, scored with the audio domain's BSS-Eval SDR improvement.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import embedseg  # noqa: E402
from domains.audio.dataset import MixtureDataset  # noqa: E402
from domains.audio.metrics import AudioMetrics  # noqa: E402
from embedseg.metrics import separation_scores  # noqa: E402

RATE = 8000


def mixtures(corpus: Path, n: int, talkers: int, seed: int) -> MixtureDataset:
    """``n`` validation mixtures of ``talkers`` speakers, 0-5 dB, as long as the shortest utterance
    (the speech recipe's validation mixtures)."""
    return MixtureDataset(corpus, split="valid", n_sources=talkers, segment_seconds=None, n_mixtures=n, seed=seed)


def sdri(sources: torch.Tensor, estimates: torch.Tensor, mixture: torch.Tensor) -> float:
    """Mean SDR improvement over the sources of one mixture."""
    metric = AudioMetrics()
    metric.update_items([sources], [torch.as_tensor(estimates)], [mixture])
    return float(metric.compute()["sdri"])


def block_oracle(estimates: torch.Tensor, sources: torch.Tensor, block: int) -> torch.Tensor:
    """The two outputs swapped in every block of ``block`` samples where the swap is closer
    (squared error) to the references."""
    out = estimates.clone()
    for start in range(0, estimates.shape[1], block):
        e, r = estimates[:, start:start + block], sources[:, start:start + block]
        if ((e.flip(0) - r) ** 2).sum() < ((e - r) ** 2).sum():
            out[:, start:start + block] = e.flip(0)
    return out


def pitch_relink(estimates: torch.Tensor, block: int) -> torch.Tensor:
    """The two outputs re-linked across blocks by their median pitch (no references): blocks
    where both outputs are voiced vote, pair by pair, for keeping or swapping their order, and
    the leading eigenvector of those signed votes orders every block."""
    import librosa

    hop = 64
    n_blocks = int(np.ceil(estimates.shape[1] / block))
    pitch = np.full((2, n_blocks), np.nan)
    confidence = np.zeros((2, n_blocks))
    for k, x in enumerate(estimates.numpy()):
        f0, voiced, prob = librosa.pyin(x, fmin=60, fmax=400, sr=RATE, frame_length=512, hop_length=hop)
        for b in range(n_blocks):
            s = slice(b * block // hop, (b + 1) * block // hop)
            v = voiced[s] & np.isfinite(f0[s])
            if v.sum() >= 3:
                pitch[k, b] = np.median(np.log2(f0[s][v]))
                confidence[k, b] = prob[s][v].mean() * min(1.0, v.sum() / 8)
    votes = np.zeros((n_blocks, n_blocks))
    ok = np.isfinite(pitch).all(0)
    weight = confidence.min(0)
    for p in range(n_blocks):
        for q in range(n_blocks):
            if p != q and ok[p] and ok[q]:
                same = abs(pitch[0, p] - pitch[0, q]) + abs(pitch[1, p] - pitch[1, q])
                cross = abs(pitch[0, p] - pitch[1, q]) + abs(pitch[1, p] - pitch[0, q])
                votes[p, q] = np.tanh((cross - same) / 0.15) * weight[p] * weight[q]  # octaves
    order = np.sign(np.linalg.eigh(votes)[1][:, -1])
    if (order < 0).sum() > (order > 0).sum():
        order = -order
    out = estimates.clone()
    for b in np.flatnonzero(order < 0):
        out[:, b * block:(b + 1) * block] = estimates[:, b * block:(b + 1) * block].flip(0)
    return out


def windowed_separation(model, mixture: torch.Tensor, n_sources: int, window: int) -> torch.Tensor:
    """``mixture`` separated in windows of ``window`` samples with half-window hops, each
    window's outputs permuted to correlate best with the previous window's over their overlap,
    then overlap-added with Hann weights."""
    length = mixture.shape[-1]
    if length <= window:
        return torch.as_tensor(model.separate(mixture, n_sources=n_sources))
    hop = window // 2
    starts = list(range(0, length - window, hop)) + [length - window]
    parts = torch.as_tensor(model.separate(torch.stack([mixture[s:s + window] for s in starts]), n_sources=n_sources))
    weight = torch.hann_window(window, periodic=False) + 1e-3  # the floor keeps the mixture's own ends
    out, total = torch.zeros(n_sources, length), torch.zeros(length)
    previous, previous_start = None, 0
    for start, part in zip(starts, parts):  # part: (n_sources, window)
        if previous is not None:
            overlap = previous_start + window - start
            a = previous[:, start - previous_start:]
            a = a / (a.norm(dim=-1, keepdim=True) + 1e-9)
            b = part[:, :overlap] / (part[:, :overlap].norm(dim=-1, keepdim=True) + 1e-9)
            agreement = a @ b.T  # (previous output, this output) cosine similarity
            order = max(itertools.permutations(range(n_sources)),
                        key=lambda perm: sum(float(agreement[i, j]) for i, j in enumerate(perm)))
            part = part[list(order)]
        out[:, start:start + window] += part * weight
        total[start:start + window] += weight
        previous, previous_start = part, start
    return out / total


def probe_two(model, others, corpus: Path, n: int, seed: int, relink: bool, windows: tuple[float, ...] = ()) -> None:
    data = mixtures(corpus, n, 2, seed)
    blocks = (0.25, 0.5, 1.0, 2.0, 4.0)
    by_pair: dict[str, list[float]] = defaultdict(list)
    by_level: dict[int, list[tuple[float, float]]] = defaultdict(list)
    oracle: dict[float, list[float]] = defaultdict(list)
    relinked, ensemble, alone = [], [], [[] for _ in others]
    windowed: dict[float, list[float]] = defaultdict(list)
    total = []
    for i in range(n):
        item = data[i]
        mix, src = item["mixture"], torch.as_tensor(item["sources"])
        est = torch.as_tensor(model.separate(mix, n_sources=2))
        # each source's SDRi, in float64 as AudioMetrics scores them; their mean is the mixture's
        per_source = separation_scores(src[None].double(), est[None].double(), mix[None].double())["sdri"][0]
        score = float(per_source.mean())
        total.append(score)
        by_pair[" + ".join(sorted(item["speakers"]))].append(score)
        energy = (src ** 2).sum(-1)
        loud = int(energy.argmax())
        gap = float(10 * torch.log10(energy[loud] / energy[1 - loud]))
        by_level[min(int(gap // 1.5), 2)].append((float(per_source[loud]), float(per_source[1 - loud])))
        for seconds in blocks:
            oracle[seconds].append(sdri(src, block_oracle(est, src, int(seconds * RATE)), mix))
        if relink:
            relinked.append(sdri(src, pitch_relink(est, RATE // 2), mix))
        for seconds in windows:
            windowed[seconds].append(sdri(src, windowed_separation(model, mix, 2, int(seconds * RATE)), mix))
        if others:
            summed = est.clone()
            for j, other in enumerate(others):
                out = torch.as_tensor(other.separate(mix, n_sources=2))
                alone[j].append(sdri(src, out, mix))
                summed += out if (out * est).sum() >= (out.flip(0) * est).sum() else out.flip(0)
            ensemble.append(sdri(src, summed / (1 + len(others)), mix))
    print(f"2 talkers, {n} mixtures (seed {seed}): SDRi {np.mean(total):.2f} dB")
    print("  by speaker pair:")
    for pair, scores in sorted(by_pair.items()):
        print(f"    {pair}: {np.mean(scores):.2f} dB ({len(scores)} mixtures)")
    print("  by level difference (louder / quieter talker's SDRi):")
    for k, rows in sorted(by_level.items()):
        a = np.array(rows)
        span = ("0-1.5", "1.5-3", "3-5")[k]
        print(f"    {span} dB: {a[:, 0].mean():.2f} / {a[:, 1].mean():.2f} dB ({len(rows)} mixtures)")
    print("  oracle swap of the outputs per block: " + ", ".join(
        f"{s} s {np.mean(v):.2f} dB" for s, v in oracle.items()))
    if relink:
        d = np.array(relinked) - np.array(total)
        print(f"  re-linked by pitch, 0.5 s blocks: {np.mean(relinked):.2f} dB "
              f"({d.mean():+.2f} +- {d.std() / np.sqrt(n):.2f} paired)")
    for seconds, scores in windowed.items():
        d = np.array(scores) - np.array(total)
        print(f"  separated in {seconds} s windows, linked on their overlaps: {np.mean(scores):.2f} dB "
              f"({d.mean():+.2f} +- {d.std() / np.sqrt(n):.2f} paired, better on {int((d > 0).sum())}/{n})")
    if others:
        d = np.array(ensemble) - np.array(total)
        print(f"  the other models alone: {', '.join(f'{np.mean(a):.2f}' for a in alone)} dB; all averaged: "
              f"{np.mean(ensemble):.2f} dB ({d.mean():+.2f} +- {d.std() / np.sqrt(n):.2f} paired)")


def probe_three(model, corpus: Path, n: int, seed: int) -> None:
    data = mixtures(corpus, n, 3, seed)
    kmeans, louder, best = [], [], []
    for i in range(n):
        item = data[i]
        mix, src = item["mixture"], torch.as_tensor(item["sources"])
        kmeans.append(sdri(src, model.separate(mix, n_sources=3), mix))
        two = torch.as_tensor(model.separate(mix, n_sources=2))
        options = []
        for k in range(2):  # split output k again; the other stays one source
            split = torch.as_tensor(model.separate(two[k], n_sources=2))
            options.append(sdri(src, torch.cat([two[1 - k: 2 - k], split]), mix))
        louder.append(options[int((two ** 2).sum(-1).argmax())])
        best.append(max(options))
    d = np.array(louder) - np.array(kmeans)
    print(f"3 talkers, {n} mixtures (seed {seed}): k-means into 3 {np.mean(kmeans):.2f} dB; recursive, the louder "
          f"output split {np.mean(louder):.2f} dB ({d.mean():+.2f} +- {d.std() / np.sqrt(n):.2f} paired); "
          f"recursive, the better output split (oracle) {np.mean(best):.2f} dB")


def count_log_probabilities(model, mixture: torch.Tensor) -> torch.Tensor:
    """The count head's log-probabilities for one mixture (class i is i + 1 talkers), read where
    ``separate(n_sources="auto")`` reads them, so that they are exactly the ones it decides on."""
    seen: list[torch.Tensor] = []
    domain = model.domain
    decide = domain.cluster_counts

    def record(batch, mask, n_clusters, output=None):
        if isinstance(output, dict) and "counts" in output:
            seen.append(torch.log_softmax(output["counts"][0].float(), dim=-1))
        return decide(batch, mask, n_clusters, output=output)

    domain.cluster_counts = record
    try:
        model.separate(mixture, n_sources="auto")
    finally:
        del domain.cluster_counts  # the class's own method again
    if not seen:
        raise ValueError("the model has no count head: it cannot count talkers")
    return seen[-1]


def probe_counting(model, corpus: Path, n: int, seed: int) -> None:
    """Count right / 2 called 3 / 3 called 2 on an even mix of 2- and 3-talker mixtures, when 3 is
    chosen where log p(3) - log p(2) exceeds an offset (0: the count head's own choice)."""
    data = MixtureDataset(corpus, split="valid", n_sources=(2, 3), segment_seconds=None, n_mixtures=n, seed=seed)
    margins, truth = [], []
    for i in range(n):
        item = data[i]
        logp = count_log_probabilities(model, item["mixture"])
        margins.append(float(logp[2] - logp[1]))
        truth.append(int(item["sources"].shape[0]))
    margins_a, truth_a = np.array(margins), np.array(truth)
    print(f"counting, {n} mixtures of 2 and 3 talkers (seed {seed}); 3 chosen where log p(3) - log p(2) > offset:")
    for offset in (-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0):
        says = np.where(margins_a > offset, 3, 2)
        print(f"  offset {offset:+.2f}: right {100 * np.mean(says == truth_a):.1f}%, 2 called 3 "
              f"{int(np.sum((truth_a == 2) & (says == 3)))}, 3 called 2 {int(np.sum((truth_a == 3) & (says == 2)))}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=REPO / "pretrained" / "audio-speech-8k")
    p.add_argument("--ensemble", type=Path, nargs="*", default=[], help="more models, averaged with --model")
    p.add_argument("--corpus", type=Path, default=REPO / "data" / "speech-real",
                   help="a corpus with a 'valid' split (the real one, or the synthetic data/speech)")
    p.add_argument("--n", type=int, default=100, help="mixtures per table")
    p.add_argument("--seed-offset", type=int, default=0, help="another draw of mixtures")
    p.add_argument("--clusters", action="store_true", help="separate by clustering only, never the mask head")
    p.add_argument("--relink", action="store_true", help="also re-link the outputs by pitch (slow)")
    p.add_argument("--windows", default="", help="comma-separated window lengths in seconds (e.g. 1,2,3): "
                   "also separate in overlapping windows linked on their overlaps")
    p.add_argument("--skip", default="", help="comma-separated: two, three, counting")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = embedseg.load(args.model)
    others = [embedseg.load(path) for path in args.ensemble]
    if args.clusters:
        for m in (model, *others):
            m.domain.inference = "clusters"
    skip = set(filter(None, args.skip.split(",")))
    if "two" not in skip:
        windows = tuple(float(w) for w in args.windows.split(",") if w)
        probe_two(model, others, args.corpus, args.n, 11 + args.seed_offset, args.relink, windows)
    if "three" not in skip:
        probe_three(model, args.corpus, args.n, 12 + args.seed_offset)
    if "counting" not in skip:
        probe_counting(model, args.corpus, args.n, 13 + args.seed_offset)
    return 0


if __name__ == "__main__":
    sys.exit(main())
