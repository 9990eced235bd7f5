"""Speech separation by deep clustering, end to end, on a corpus synthesized locally.

With no arguments this script:

1. builds the built-in speech corpus in ``data/speech`` if it is absent (27 voices x 50
   sentences; needs ``scripts/install_speech_voices.sh`` to have run, as root);
2. trains the compact BLSTM for a few minutes on CPU on 2-speaker mixtures of the training
   voices: whitened k-means loss on magnitude-weighted bins, with a Chimera++ mask head trained
   alongside (the separation itself clusters the embeddings); or, with ``--pretrained``, loads
   the shipped model ``pretrained/audio-speech-8k``;
3. separates 2-speaker mixtures of the held-out test voices and prints SDRi and SI-SDRi next
   to the oracle ideal binary and ratio masks on the same mixtures;
4. writes the separated wavs and a PNG (mixture spectrogram, estimated masks, a 2-D
   projection of the embeddings colored by cluster) to ``outputs/audio_separation``.

The shipped model's recipe is this script with more data and time (see pretrained/README.md).

Run::

    python examples/audio_separation.py
    python examples/audio_separation.py --pretrained
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

import embedseg  # noqa: E402
from domains.audio import MixtureDataset, build_speech_corpus  # noqa: E402
from domains.audio.audio_io import save_audio  # noqa: E402
from domains.audio.corpus import missing_speech_tools  # noqa: E402
from domains.audio.metrics import AudioMetrics, oracle_separation  # noqa: E402

PRETRAINED = REPO / "pretrained" / "audio-speech-8k"


def get_corpus(root: Path, n_sentences: int) -> Path:
    if (root / "splits.json").is_file():
        return root
    missing = missing_speech_tools()
    if missing:
        sys.exit(f"The speech corpus needs {missing}: run `sudo scripts/install_speech_voices.sh` first.")
    t = time.time()
    build_speech_corpus(root, n_sentences=n_sentences)
    print(f"built the speech corpus in {root} ({time.time() - t:.0f} s)")
    return root


def get_real_corpus(root: Path) -> Path | None:
    """The corpus of real recorded speech (built from Debian packages when absent), or None
    with a message when its packages are not installed."""
    if (root / "splits.json").is_file():
        return root
    from domains.audio.corpus_real import build_real_speech_corpus, missing_real_speech_packages

    missing = missing_real_speech_packages()
    if missing:
        print(f"real speech skipped: the packages {missing} are missing (run scripts/install_speech_real.sh as root)")
        return None
    t = time.time()
    build_real_speech_corpus(root)
    print(f"built the real-speech corpus in {root} ({time.time() - t:.0f} s)")
    return root


def print_scores(title: str, res: dict, counted: bool = False) -> None:
    print(f"\n{title}:")
    print(f"{'':12}{'SDRi dB':>10}{'SI-SDRi dB':>12}")
    for name, label in (("model", "model"), ("ibm", "oracle IBM"), ("irm", "oracle IRM")):
        print(f"{label:12}{res[name]['sdri']:>10.2f}{res[name]['si_sdri']:>12.2f}")
    print(f"model / oracle IBM SDRi: {100 * res['model']['sdri'] / res['ibm']['sdri']:.0f}%")
    if counted:  # the model chose each mixture's number of sources
        print(f"sources counted right (n_sources='auto'): {100 * res['model']['count_accuracy']:.0f}%")


def train(corpus: Path, args: argparse.Namespace) -> embedseg.Model:
    speed = (1 - args.speed_perturb, 1 + args.speed_perturb) if args.speed_perturb > 0 else None
    train_set = MixtureDataset(
        corpus, split="train", segment_seconds=args.segment, n_mixtures=200_000, seed=0, speed_range=speed
    )
    valid_set = MixtureDataset(corpus, split="valid", segment_seconds=None, n_mixtures=args.n_valid, seed=1)
    network_params = json.loads(args.network_params) if args.network_params else {}
    if args.mask_sources and "mask_sources" not in network_params:
        network_params["mask_sources"] = args.mask_sources
    network = args.network
    if args.init is not None:  # continue training a saved model's network
        network = embedseg.load(args.init).network
        network_params = None
    model = embedseg.fit(
        train_set,
        domain="audio",
        valid=valid_set,
        network=network,
        network_params=network_params,
        epochs=1,
        max_minutes=args.minutes,
        batch_size=args.batch_size,
        lr=args.lr,
        loss=args.loss,
        domain_options={"weights": args.weights},
        warmup_steps=50,
        eval_every=args.eval_every,
        plateau_patience=2,
        device=args.device,
        seed=args.seed,
        out_dir=str(args.run_dir),
        progress=True,
    )
    if args.save:
        model.save(args.save)
        print(f"saved the model to {args.save}")
    return model


def evaluate(model: embedseg.Model, corpus: Path, n_test: int, n_sources: int | tuple[int, ...],
             counts: str | int | None = None, seed: int = 2):
    """SDRi / SI-SDRi of the model and of the oracle IBM and IRM on the same test mixtures of
    ``n_sources`` talkers (a tuple: each mixture's count drawn from it); the model separates
    into ``counts`` sources ("auto": its own count of each mixture) or else ``n_sources``."""
    test = MixtureDataset(corpus, split="test", n_sources=n_sources, segment_seconds=None, n_mixtures=n_test, seed=seed)
    # The audio domain's accumulator (what model.evaluate uses): the mean over mixtures of the
    # mean over sources; missing estimates count as the unprocessed mixture.
    metrics = {"model": AudioMetrics(), "ibm": AudioMetrics(), "irm": AudioMetrics()}
    for i in range(n_test):
        item = test[i]
        mix, src = item["mixture"], item["sources"]
        est = model.separate(mix, n_sources=n_sources if counts is None else counts)
        metrics["model"].update_items([src], [est], [mix])
        for kind in ("ibm", "irm"):
            metrics[kind].update_items([src], [oracle_separation(mix[None], src[None], kind)[0]], [mix])
    return {name: metric.compute() for name, metric in metrics.items()}


def figure(model: embedseg.Model, item: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domain = model.domain
    batch = domain.collate([item])
    enc = domain.encode(batch, model.device)
    output = model.embed(enc)
    emb = embedseg.networks.embeddings_of(output)  # (1, n, dim)
    labels, proba = model.cluster(emb, domain.cluster_mask(enc, output), 2)  # fitted on the bins separation fits on
    # The masks the separation used: the mask head's for two sources unless told to cluster,
    # and then the soft assignments when the model decodes soft masks.
    head = output.get("masks") if isinstance(output, dict) and domain.inference != "clusters" else None
    soft = proba if head is None and domain.soft_masks else None
    spec = enc.context["mixture_spec"][0]  # (frames, freqs)
    t, f = spec.shape
    lab = labels[0].reshape(t, f).cpu().numpy()
    active = enc.mask[0].reshape(t, f).cpu().numpy()
    fig, ax = plt.subplots(1, 4, figsize=(18, 4))
    ax[0].imshow(20 * np.log10(spec.abs().T.cpu().numpy() + 1e-6), origin="lower", aspect="auto", cmap="magma", vmin=-60)
    ax[0].set_title("mixture (dB)")
    for k in range(2):
        if head is not None:
            ax[1 + k].imshow(head[0, k].float().T.cpu().numpy(), origin="lower", aspect="auto", cmap="gray", vmin=0, vmax=1)
            ax[1 + k].set_title(f"estimated mask {k + 1} (mask head)")
        elif soft is not None:
            ax[1 + k].imshow(soft[0, :, k].reshape(t, f).float().T.cpu().numpy(), origin="lower", aspect="auto",
                             cmap="gray", vmin=0, vmax=1)
            ax[1 + k].set_title(f"estimated mask {k + 1} (soft clusters)")
        else:
            ax[1 + k].imshow(((lab == k) & active).T, origin="lower", aspect="auto", cmap="gray")
            ax[1 + k].set_title(f"estimated mask {k + 1} (clusters, active bins)")
    v = emb[0][enc.mask[0]].cpu().numpy()
    c = labels[0][enc.mask[0]].cpu().numpy()
    sel = np.random.default_rng(0).choice(len(v), size=min(3000, len(v)), replace=False)
    v = v[sel] - v[sel].mean(0)
    proj = v @ np.linalg.svd(v, full_matrices=False)[2][:2].T  # PCA to 2-D
    ax[3].scatter(proj[:, 0], proj[:, 1], c=c[sel], s=2, cmap="coolwarm")
    ax[3].set_title("embeddings (PCA), colored by cluster")
    for a in ax[:3]:
        a.set_xlabel("frame")
        a.set_ylabel("frequency bin")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", type=Path, default=REPO / "data" / "speech", help="speech corpus folder (built if absent)")
    p.add_argument("--n-sentences", type=int, default=50, help="sentences per voice when building the corpus")
    p.add_argument("--pretrained", action="store_true", help="use the shipped model instead of training")
    p.add_argument("--model", type=Path, default=None, help="use this saved model instead of training")
    p.add_argument("--minutes", type=float, default=4.0, help="training budget in minutes")
    p.add_argument("--network", default="dc_compact")
    p.add_argument("--network-params", default=None, help='JSON, e.g. \'{"hidden": 300}\'')
    p.add_argument("--init", type=Path, default=None, help="start from this saved model's weights")
    p.add_argument("--mask-sources", type=int, default=2,
                   help="masks of a Chimera++ mask-inference head trained jointly with the embeddings (0: none); "
                   "it speeds up the shared layers' learning, while the separation still clusters the embeddings")
    p.add_argument("--segment", type=float, default=1.0, help="training segment length in seconds")
    p.add_argument("--speed-perturb", type=float, default=0.0,
                   help="play each training utterance at a speed drawn from [1 - P, 1 + P] (new pitch and "
                        "formants: more distinct voices from a corpus with few speakers); 0: off")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--loss", default="whitened_kmeans", choices=("affinity", "whitened_kmeans"),
                   help="embedding loss; the whitened k-means loss (Wang et al. 2018) escapes the affinity loss's early collapse plateau faster")
    p.add_argument("--weights", default="magnitude", choices=("voice_activity", "magnitude"),
                   help="bin weights of the embedding loss: every bin within 40 dB of the peak counts alike, or in proportion to its magnitude (Wang et al. 2018)")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--n-valid", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-dir", type=Path, default=REPO / "runs" / "audio_separation")
    p.add_argument("--save", type=Path, default=None, help="save the trained model here")
    p.add_argument("--n-test", type=int, default=20, help="test mixtures")
    p.add_argument("--real", type=Path, default=None,
                   help="a corpus of real recorded speech (built there when absent): also score its held-out test speakers")
    p.add_argument("--out", type=Path, default=REPO / "outputs" / "audio_separation")
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    corpus = get_corpus(args.corpus, args.n_sentences)
    if args.pretrained or args.model:
        model = embedseg.load(args.model or PRETRAINED)
        print(f"loaded {args.model or PRETRAINED}")
    else:
        model = train(corpus, args)

    t = time.time()
    res = evaluate(model, corpus, args.n_test, 2)
    print_scores(f"2-speaker mixtures of held-out synthetic voices ({args.n_test}, {time.time() - t:.0f} s)", res)
    real = get_real_corpus(args.real) if args.real is not None else None
    if real is not None:
        t = time.time()
        res_real = evaluate(model, real, args.n_test, 2)
        print_scores(f"2-speaker mixtures of held-out real speakers ({args.n_test}, {time.time() - t:.0f} s)", res_real)
    # How many talkers: the model counts each mixture itself (its count head, or the clustering).
    for name, where in (("synthetic voices", corpus), ("real speakers", real)):
        if where is not None:
            t = time.time()
            res_count = evaluate(model, where, args.n_test, (2, 3), counts="auto", seed=3)
            print_scores(f"2- and 3-speaker mixtures of held-out {name}, n_sources='auto' "
                         f"({args.n_test}, {time.time() - t:.0f} s)", res_count, counted=True)

    args.out.mkdir(parents=True, exist_ok=True)
    test = MixtureDataset(corpus, split="test", segment_seconds=None, n_mixtures=3, seed=2)
    for i in range(3):
        item = test[i]
        est = model.separate(item["mixture"], n_sources=2)
        save_audio(args.out / f"mix{i}.wav", item["mixture"], 8000)
        for k in range(est.shape[0]):
            save_audio(args.out / f"mix{i}_est{k + 1}.wav", est[k], 8000)
    figure(model, test[0], args.out / "separation.png")
    print(f"wrote separated wavs and separation.png to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
