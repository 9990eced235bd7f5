"""Train, resume, validate and publish the speech separation model for real voices.

The model of ``pretrained/audio-speech-8k`` learnt 19 synthetic voices first (stages A-D of
pretrained/README.md); this recipe continues it (stages E and F), or trains another network,
on mixtures of real recorded speakers (``data/speech-real``,
:func:`domains.audio.build_real_speech_corpus`) and synthetic voices (``data/speech``), real + real, real + synthetic and synthetic + synthetic in given
proportions (:class:`domains.audio.dataset.MixedCorpusDataset`), with speed perturbation and
per-source channel augmentation (:class:`domains.audio.augment.ChannelAugmentation`). The
model is chosen on the VALIDATION real speakers only; the test speakers are for
``benchmarks/bench_audio.py --real`` once, at the end.

Commands::

    # one stage; a run folder is continued exactly (weights, optimizer, lr schedule, data
    # order, RNG) with --resume, from its own checkpoints or from a published one
    python pretrained/train_audio_speech.py train --run runs/NAME [options] --minutes M
    python pretrained/train_audio_speech.py train --run runs/NAME --resume --minutes M
    python pretrained/train_audio_speech.py train --run runs/NEW \\
        --resume pretrained/checkpoints/audio-speech-real --minutes M      # on a new machine
    # SDRi on held-out validation real speakers, next to the oracle IBM
    python pretrained/train_audio_speech.py validate pretrained/audio-speech-8k runs/NAME/model
    # copy a run's newest checkpoint (model + optimizer state) to where a later stage finds it
    python pretrained/train_audio_speech.py publish --run runs/NAME --to pretrained/checkpoints/audio-speech-real
    # the newest checkpoint's weights as a model folder (its moving average with --ema-decay),
    # to validate a run's last step next to its best one (runs/NAME/model)
    python pretrained/train_audio_speech.py export --run runs/NAME --to runs/NAME/last

Ctrl-C (or SIGTERM) ends a stage after the current step, as its time budget would: the
checkpoint, the model and the stage's record are written, and ``--resume`` continues it.
Every stage appends what it did (command, wall and CPU minutes, steps, validation SDRi) to
``RUN/stages.json``. A resumed stage must be given the options of the first (the script
reads them back from ``RUN/stages.json`` or from the checkpoint folder's ``recipe.json``).

The stages of the model in ``pretrained/README.md`` (section Audio) are written there as
exact commands.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

import embedseg  # noqa: E402
from domains.audio.augment import ChannelAugmentation  # noqa: E402
from domains.audio.dataset import MixedCorpusDataset, MixtureDataset  # noqa: E402
from domains.audio.metrics import AudioMetrics, oracle_separation  # noqa: E402
from domains.audio import AudioDomain, widen_blstm, with_attention, with_count_head  # noqa: E402
from embedseg.inference import embeddings_of  # noqa: E402
from embedseg.training.state import latest_checkpoint, read_checkpoint  # noqa: E402

SHIPPED = REPO / "pretrained" / "audio-speech-8k"
RECIPE_KEYS = (
    "network", "network_params", "init", "real", "synthetic", "segment", "batch_size", "lr", "proportions",
    "speed", "augment", "seed", "eval_every", "n_valid", "monitor", "loss", "talkers", "fill_pauses",
    "formants", "cross_mixture", "train_speakers", "speaker_weighting", "widen", "ema_decay", "count_head",
    "train_only", "attention", "decode",
)

# How a model separates, as its config says: "soft" as the shipped model since 2026-12-08 (every
# count clustered, soft k-means masks at temperature 0.3, fitted on the bins within 20 dB of the
# peak), "head" as the audio domain's default (the mask head for 2 talkers, binary k-means
# masks for other counts; every run before "decode" existed). The trainer's validation scores,
# and so the best weights, come from this decoding.
DECODE_OPTIONS = {
    "soft": ({"inference": "clusters", "soft_masks": True, "cluster_threshold_db": 20.0}, {"soft_temperature": 0.3}),
    "head": ({}, {}),
}


def parse_augment(spec: str) -> ChannelAugmentation | None:
    """'none', 'all', or 'all-GROUP[,GROUP...]' (every group but those)."""
    if spec == "none":
        return None
    if spec == "all":
        return ChannelAugmentation()
    if spec.startswith("all-"):
        return ChannelAugmentation().without(*spec[4:].split(","))
    if spec.startswith("only-"):
        keep = set(spec[5:].split(","))
        return ChannelAugmentation().without(*(g for g in ChannelAugmentation.GROUPS if g not in keep))
    raise SystemExit(f"--augment must be 'none', 'all', 'all-GROUP,...' or 'only-GROUP,...'. Got {spec!r}.")


def valid_set(real: Path, n: int, seed: int = 1, talkers: int | tuple[int, ...] = 2) -> MixtureDataset:
    """Mixtures of the validation speakers of ``real`` (2 talkers by default), 0-5 dB, as long
    as the shortest utterance."""
    return MixtureDataset(real, split="valid", n_sources=talkers, segment_seconds=None, n_mixtures=n, seed=seed)


def speaker_subset(names: list[str], n: int, seed: int) -> list[str]:
    """``n`` of the speakers ``names``, as evenly spread over their sources as they allow.

    A speaker's source is its name up to the first '-' (``asterisk-allison``: ``asterisk``).
    Each source's speakers are shuffled by ``seed``, then the sources are taken in turn, so that
    a subset keeps the variety of recordings of the whole list and differs from it only in how
    many voices it has (the question it answers: how held-out SDRi grows with real voices).
    """
    if not 2 <= n <= len(names):
        raise ValueError(f"'train_speakers' must be between 2 and the {len(names)} training speakers. Got {n}.")
    rng = np.random.default_rng(seed)
    by_source: dict[str, list[str]] = {}
    for name in sorted(names):
        by_source.setdefault(name.split("-")[0], []).append(name)
    queues = [list(rng.permutation(group)) for _, group in sorted(by_source.items())]
    chosen: list[str] = []
    while len(chosen) < n:
        for queue in queues:
            if queue and len(chosen) < n:
                chosen.append(str(queue.pop(0)))
    return sorted(chosen)


def recipe_talkers(recipe: dict) -> tuple[int, ...]:
    """The talker counts a recipe trains on, one drawn per mixture ('2,2,3': a third are 3-talker);
    a recipe written before "talkers" existed trained on 2-talker mixtures only."""
    return tuple(int(k) for k in str(recipe.get("talkers", "2")).split(","))


def train_set(recipe: dict) -> MixedCorpusDataset:
    speed = None if recipe["speed"] <= 0 else (1 - recipe["speed"], 1 + recipe["speed"])
    talkers = recipe_talkers(recipe)
    # ... and before "fill_pauses", with shorter utterances placed in silence
    fill = recipe.get("fill_pauses")
    formants = recipe.get("formants") or 0  # ... and before "formants", without formant shifts
    common = {"n_sources": talkers, "segment_seconds": recipe["segment"], "snr_range": (0, 5), "n_mixtures": 1,
              "fill_pauses": None if fill is None else tuple(fill)}
    # ... and before "train_speakers", on all the real training speakers
    subset = recipe.get("train_speakers")
    where: dict = {"split": "train"}
    if subset:
        splits = json.loads((_local(recipe["real"]) / "splits.json").read_text())
        where = {"speakers": speaker_subset(splits["train"], int(subset), recipe["seed"])}
    # ... and before "speaker_weighting", with every real speaker drawn equally often
    real = MixtureDataset(_local(recipe["real"]), seed=recipe["seed"], speed_range=speed, **where,
                          speaker_weighting=recipe.get("speaker_weighting") or 0.0,
                          augment=parse_augment(recipe["augment"]),
                          formant_range=None if formants <= 0 else (1 - formants, 1 + formants), **common)
    synthetic = MixtureDataset(_local(recipe["synthetic"]), split="train", seed=recipe["seed"], **common)
    return MixedCorpusDataset(real, synthetic, tuple(recipe["proportions"]), seed=recipe["seed"], n_mixtures=2_000_000)


# The validation tables that choose the shipped model: (name, corpus, talkers, n_sources given
# to separate, seed). Seeds 11-14 are not the trainer's own validation mixtures (seed 1).
VALIDATION_TABLES = (
    ("2 real talkers", "real", 2, 2, 11),
    ("3 real talkers", "real", 3, 3, 12),
    ("counting, 2 and 3 real talkers", "real", (2, 3), "auto", 13),
    ("2 synthetic voices", "synthetic", 2, 2, 14),
    ("counting, 2 and 3 synthetic voices", "synthetic", (2, 3), "auto", 16),
)


def score_valid(
    model: embedseg.Model, corpus: Path, n: int, oracle: bool = False, *, talkers: int | tuple[int, ...] = 2,
    n_sources: int | str = 2, seed: int = 11, per_mixture: bool = False,
) -> dict:
    """SDRi / SI-SDRi (and count accuracy) on ``n`` mixtures of the validation speakers of
    ``corpus`` (real or synthetic), through the audio domain's accumulator, as
    benchmarks/bench_audio.py scores; with ``per_mixture`` also each mixture's model SDRi
    ("per_mixture_sdri"), for paired comparisons of models on the same mixtures."""
    ds = valid_set(corpus, n, seed=seed, talkers=talkers)
    metrics = {"model": AudioMetrics()}
    if oracle:
        metrics["ibm"] = AudioMetrics()
    each = []
    for i in range(n):
        item = ds[i]
        mix, src = item["mixture"], item["sources"]
        one = AudioMetrics()  # this mixture's scores, then pooled: each mixture is scored once
        one.update_items([src], [model.separate(mix, n_sources=n_sources)], [mix])
        if per_mixture:
            each.append(float(one.compute()["sdri"]))
        metrics["model"].merge(one)
        if oracle:
            metrics["ibm"].update_items([src], [oracle_separation(mix[None], src[None], "ibm")[0]], [mix])
    scores: dict = {name: {k: round(float(v), 3) for k, v in m.compute().items()} for name, m in metrics.items()}
    if per_mixture:
        scores["per_mixture_sdri"] = each
    return scores


def paired_difference(scores: list[float], reference: list[float]) -> tuple[float, float, int]:
    """Mean per-mixture difference, its standard error, and on how many mixtures ``scores`` is
    higher: a model against another on the same mixtures."""
    d = np.asarray(scores) - np.asarray(reference)
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    return float(d.mean()), se, int((d > 0).sum())


def spectrum_of(points: list[np.ndarray]) -> dict:
    """How many directions a model's embeddings use, from each mixture's (points, dim) rows.

    "variance_shares": eigenvalues of the pooled second-moment matrix over their sum (largest
    first); "effective_rank": the participation ratio 1 / sum(share**2) (2 when two equal
    directions hold everything); "plane_overlap": the mean, over pairs of mixtures, of how much
    their top-2 principal planes coincide (1: every mixture in the same plane, 2/dim for random
    planes). A network that puts every mixture in one plane codes "first" and "second" talker,
    not who talks: k-means then cannot find a third talker, nor count them.
    """
    pooled = np.concatenate(points)
    shares = np.linalg.eigvalsh(pooled.T @ pooled)[::-1]
    shares = shares / shares.sum()
    planes = [np.linalg.eigh(x.T @ x)[1][:, -2:] for x in points]  # each mixture's top-2 directions
    overlaps = [np.linalg.norm(a.T @ b) ** 2 / 2 for i, a in enumerate(planes) for b in planes[i + 1 :]]
    return {
        "variance_shares": [round(float(v), 3) for v in shares[:6]],
        "effective_rank": round(float(1 / (shares**2).sum()), 2),
        "plane_overlap": round(float(np.mean(overlaps)), 3) if overlaps else float("nan"),
    }


def embedding_spectrum(model: embedseg.Model, corpus: Path, n: int, *, talkers: int | tuple[int, ...] = (2, 3),
                       seed: int = 13, points: int = 1500) -> dict:
    """:func:`spectrum_of` the embeddings of the active bins (at most ``points`` drawn per
    mixture) of ``n`` validation mixtures of ``corpus``."""
    ds = valid_set(corpus, n, seed=seed, talkers=talkers)
    engine, domain = model.engine(), model.domain
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        batch = engine.encode(domain.collate([ds[i]]))
        output = model.embed(batch)
        x = embeddings_of(output)[0][domain.cluster_mask(batch, output)[0]].double().numpy()
        rows.append(x[rng.choice(len(x), size=min(points, len(x)), replace=False)])
    return spectrum_of(rows)


def freeze_except(network: torch.nn.Module, prefixes: tuple[str, ...]) -> None:
    """Train only the parameters whose names start with one of ``prefixes``.

    The frozen layers also run without dropout, so that the trained parts learn from the
    features they will be given at inference (a count head pools their statistics; an
    embedding layer maps them bin by bin); the saved network keeps its dropout option for any
    later stage.
    """
    names = [name for name, _ in network.named_parameters()]
    if not any(name.startswith(prefixes) for name in names):
        heads = sorted({name.split(".")[0] for name in names})
        raise SystemExit(f"--train-only must name parts of the network ({', '.join(heads)}). Got "
                         f"{', '.join(p.rstrip('.') for p in prefixes)}.")
    for name, param in network.named_parameters():
        param.requires_grad_(name.startswith(prefixes))
    for module in network.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        elif isinstance(module, torch.nn.LSTM):
            module.dropout = 0.0


def _portable(path: str | Path | None) -> str | None:
    """A path inside the checkout relative to it, so that a recipe holds on another machine."""
    if path is None:
        return None
    full = Path(path).resolve()
    return str(full.relative_to(REPO)) if full.is_relative_to(REPO) else str(full)


def _local(path: str | None) -> Path | None:
    """A recipe's path on this machine (relative ones are under the checkout)."""
    return None if path is None else (Path(path) if Path(path).is_absolute() else REPO / path)


def _recipe_of(args: argparse.Namespace) -> dict:
    recipe = {k: getattr(args, k) for k in RECIPE_KEYS}
    for k in ("init", "real", "synthetic"):
        recipe[k] = _portable(recipe[k])
    recipe["proportions"] = [float(v) for v in str(args.proportions).split(",")]
    if args.fill_pauses is not None:
        recipe["fill_pauses"] = [float(v) for v in str(args.fill_pauses).split(",")]
    return recipe


def cmd_train(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    log_file = run / "stages.json"
    stages = json.loads(log_file.read_text()) if log_file.is_file() else []
    resume: bool | str = False
    if args.resume is not None:
        resume = True if args.resume == "" else args.resume
        # the options of the run being continued: a resumed stage reproduces the uninterrupted run
        source = Path(args.resume) if args.resume else run
        recipe_file = source / "recipe.json"
        if not stages and (source / "stages.json").is_file():
            # a new run continuing a published checkpoint carries its history on, so that its
            # stages (and a checkpoint published from it) count steps from where that one stopped
            stages = json.loads((source / "stages.json").read_text())
        if stages:
            recipe = stages[0]["recipe"]
        elif recipe_file.is_file():
            recipe = json.loads(recipe_file.read_text())
        else:
            raise SystemExit(f"--resume needs {log_file} or {recipe_file} to know the run's options.")
    else:
        recipe = _recipe_of(args)
        if recipe.get("widen") and not recipe["init"]:
            raise SystemExit("--widen grows the network of --init: give both (a new network takes --network-params).")
        if recipe.get("train_only") and not recipe["init"]:
            raise SystemExit("--train-only trains parts of the network of --init: give both.")
        if recipe.get("attention") and not recipe["init"]:
            raise SystemExit("--attention adds layers to the network of --init: give both (a new network takes "
                             "'{\"attention_layers\": L}' in --network-params).")
        if recipe.get("count_head") and not recipe["init"]:
            raise SystemExit("--count-head teaches the network of --init to count: give both "
                             "(a new network takes '{\"count_sources\": K}' in --network-params).")
    net_params = json.loads(recipe["network_params"]) if recipe["network_params"] else {}
    network: str | torch.nn.Module = recipe["network"]
    recipe = {**recipe, **{k: _portable(_local(recipe[k])) for k in ("init", "real", "synthetic")}}
    if recipe["init"]:  # continue a saved model's network (its architecture and weights)
        network = embedseg.load(_local(recipe["init"])).network
        net_params = None
        if recipe.get("widen"):  # more units, the same function to start from
            network = widen_blstm(network, int(recipe["widen"]), seed=recipe["seed"])
        # a new count head, or parts named by --train-only, learn; everything else stays as it is
        trained = [f"{name.strip()}." for name in (recipe.get("train_only") or "").split(",") if name.strip()]
        if recipe.get("train_only") and not trained:
            raise SystemExit(f"--train-only must name parts of the network, comma-separated. Got {recipe['train_only']!r}.")
        if recipe.get("attention"):  # whole-utterance context, the same function to start from
            network = with_attention(network, int(recipe["attention"]), seed=recipe["seed"])
        if recipe.get("count_head"):
            network = with_count_head(network, int(recipe["count_head"]), seed=recipe["seed"])
            trained.append("count_head.")
        if trained:
            if recipe.get("attention"):  # new layers always learn, beside --train-only's parts or a new count head
                trained.append("attention.")
            freeze_except(network, tuple(trained))
    else:
        net_params.setdefault("mask_sources", 2)
    train = train_set(recipe)
    talkers: int | tuple[int, ...] = 2
    if recipe.get("count_head") or recipe.get("train_only"):  # validated on every count it trains on
        talkers = tuple(sorted(set(recipe_talkers(recipe))))
    decode, soft_kmeans = DECODE_OPTIONS[recipe.get("decode") or "head"]  # a recipe written before "decode": head
    valid = valid_set(_local(recipe["real"]), recipe["n_valid"], talkers=talkers)
    before = stages[-1]["steps_after"] if stages else 0
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0, c0 = time.perf_counter(), time.process_time()
    model = embedseg.fit(
        train,
        domain="audio",
        valid=valid,
        network=network,
        network_params=net_params,
        max_minutes=args.minutes,
        max_steps=args.max_steps,
        batch_size=recipe["batch_size"],
        lr=recipe["lr"],
        loss=recipe["loss"],
        # a recipe written before "cross_mixture" had none
        domain_options={"weights": "magnitude", "cross_mixture_weight": recipe.get("cross_mixture") or 0.0, **decode},
        clusterer={"name": "kmeans", "params": {**AudioDomain().clusterer_spec()["params"], **soft_kmeans}},
        warmup_steps=50,
        ema_decay=recipe.get("ema_decay"),  # a recipe written before "ema_decay" had none
        eval_every=recipe["eval_every"],
        monitor=recipe["monitor"],
        plateau_patience=3,
        checkpoint_every=recipe["eval_every"],
        keep_checkpoints=1,
        device="cpu",
        seed=recipe["seed"],
        out_dir=str(run),
        resume=resume,
        progress=args.progress,
    )
    wall, cpu = (time.perf_counter() - t0) / 60, (time.process_time() - c0) / 60
    steps = int(model.config["training"]["steps"])
    scores = score_valid(model, _local(recipe["real"]), args.score_n) if args.score_n else None
    stage = {
        "command": shlex.join(["python", *sys.argv]),
        "started": started,
        "machine": f"{platform.node()} {platform.machine()}, torch {torch.__version__}, {args.threads} threads",
        "wall_minutes": round(wall, 2),
        "cpu_minutes": round(cpu, 2),
        "steps_before": before,
        "steps_after": steps,
        "best_step": model.config["training"].get("best_step"),
        "best_valid": model.config["training"].get("best_valid"),
        "valid_score_n": args.score_n,
        "valid_scores": scores,
        "recipe": recipe,
    }
    stages.append(stage)
    log_file.write_text(json.dumps(stages, indent=1) + "\n")
    print(json.dumps({k: stage[k] for k in ("wall_minutes", "cpu_minutes", "steps_before", "steps_after", "best_step", "valid_scores")}))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    if args.counting:
        tables = tuple(t for t in VALIDATION_TABLES if t[3] == "auto")
    else:
        tables = VALIDATION_TABLES if args.all else VALIDATION_TABLES[:1]
    corpora = {"real": args.real, "synthetic": args.synthetic}
    models = {path: embedseg.load(path) for path in args.models}  # each read once for all tables
    for name, corpus, talkers, n_sources, seed in tables:
        seed += args.seed_offset
        print(f"{name}, n_sources={n_sources!r} ({args.n} validation mixtures of {corpora[corpus]}, seed {seed})")
        first = None
        for i, (path, model) in enumerate(models.items()):
            res = score_valid(model, corpora[corpus], args.n, oracle=i == 0 and n_sources != "auto",
                              talkers=talkers, n_sources=n_sources, seed=seed, per_mixture=args.paired)
            ibm = res.pop("ibm", None)
            if ibm:
                print(f"  oracle IBM: SDRi {ibm['sdri']:.2f} dB, SI-SDRi {ibm['si_sdri']:.2f} dB")
            m = res["model"]
            count = f", count right {100 * m['count_accuracy']:.0f}%" if n_sources == "auto" else ""
            paired = ""
            if args.paired:
                each = res["per_mixture_sdri"]
                first = each if first is None else first
                if i > 0:
                    mean, se, wins = paired_difference(each, first)
                    paired = f"; against the first, paired: {mean:+.2f} +- {se:.2f} dB, better on {wins}/{len(each)}"
            print(f"  {path}: SDRi {m['sdri']:.2f} dB, SI-SDRi {m['si_sdri']:.2f} dB{count}{paired}", flush=True)
    if args.spectrum:
        seed = 13 + args.seed_offset
        print(f"embedding spectrum ({args.n} validation mixtures of 2 and 3 talkers of {args.real}, seed {seed})")
        for path, model in models.items():
            spec = embedding_spectrum(model, args.real, args.n, seed=seed)
            shares = " ".join(f"{v:.3f}" for v in spec["variance_shares"])
            print(f"  {path}: variance shares {shares}; effective rank {spec['effective_rank']:.2f}; "
                  f"top-2 plane shared between mixtures {spec['plane_overlap']:.2f}", flush=True)
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    run = Path(args.run)
    latest = json.loads((run / "checkpoints" / "latest.json").read_text())
    src = run / "checkpoints" / latest["checkpoint"]
    dst = Path(args.to)
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for f in src.iterdir():
        shutil.copy2(f, dst / f.name)
    stages = json.loads((run / "stages.json").read_text())
    recipe = stages[0]["recipe"]
    recipe = {**recipe, **{k: _portable(_local(recipe[k])) for k in ("init", "real", "synthetic")}}
    (dst / "recipe.json").write_text(json.dumps(recipe, indent=1) + "\n")
    (dst / "stages.json").write_text(json.dumps(stages, indent=1) + "\n")
    print(f"copied {src} to {dst}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    run = Path(args.run)
    checkpoint = latest_checkpoint(run)
    if checkpoint is None:
        raise SystemExit(f"--run: '{run}' holds no checkpoint to export.")
    state, tensors = read_checkpoint(checkpoint)
    prefix = "average." if not args.raw and any(k.startswith("average.") for k in tensors) else "model."
    model = embedseg.load(run / "model")  # the run's architecture, domain and clusterer
    model.network.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
    model.config["training"] = {
        **model.config.get("training", {}),
        "exported": {"checkpoint": checkpoint.name, "step": state.step, "weights": prefix.rstrip(".")},
    }
    model.save(args.to)
    print(f"step {state.step} of {run} ({'its moving average' if prefix == 'average.' else 'its weights'}) -> {args.to}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="one training stage (a new run, or --resume)")
    t.add_argument("--run", required=True, help="the run folder (checkpoints, log, model, stages.json)")
    t.add_argument("--resume", nargs="?", const="", default=None,
                   help="continue the run folder's own checkpoints, or (with a path) a published checkpoint")
    t.add_argument("--minutes", type=float, required=True, help="wall-clock budget of this stage")
    t.add_argument("--max-steps", type=int, default=None, help="stop at this many steps in all (the run's, not the stage's)")
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--network", default="dc_compact")
    t.add_argument("--network-params", default=None, help='JSON, e.g. \'{"hidden": 256, "layers": 3}\'')
    t.add_argument("--init", default=None, help="start from this saved model's network (architecture and weights)")
    t.add_argument("--widen", type=int, default=None,
                   help="with --init: widen its BLSTM to this many units per direction, outputs unchanged")
    t.add_argument("--real", type=Path, default=REPO / "data" / "speech-real")
    t.add_argument("--synthetic", type=Path, default=REPO / "data" / "speech")
    t.add_argument("--segment", type=float, default=1.5, help="training segment length in seconds")
    t.add_argument("--talkers", default="2", help="talker counts, one drawn uniformly per mixture: '2,2,2,3' "
                   "makes a quarter of them 3-talker (those train the embeddings only: the mask head has 2 masks)")
    t.add_argument("--fill-pauses", default=None, help="'LOW,HIGH' seconds: fill each segment with more of a "
                   "talker's utterances after such pauses (default: a shorter utterance sits in silence)")
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--lr", type=float, default=5e-4)
    t.add_argument("--proportions", default="0.5,0.3,0.2", help="real+real, real+synthetic, synthetic+synthetic")
    t.add_argument("--speed", type=float, default=0.15, help="speed perturbation: factors in [1 - S, 1 + S]; 0: off")
    t.add_argument("--formants", type=float, default=0.0, help="formant shifts: factors in [1 - F, 1 + F], pitch "
                   "kept; with --speed each speaker stands for many voices; 0: off")
    t.add_argument("--augment", default="all", help="'none', 'all', 'all-GROUP,...' or 'only-GROUP,...' "
                   f"(groups: {', '.join(ChannelAugmentation.GROUPS)})")
    t.add_argument("--train-speakers", type=int, default=None,
                   help="train on this many of the real training speakers (spread over their sources); default all")
    t.add_argument("--speaker-weighting", type=float, default=0.0,
                   help="draw real speakers in proportion to their seconds of audio to this power "
                        "(0: equally often; 1: by amount of audio)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--eval-every", type=int, default=300)
    t.add_argument("--n-valid", type=int, default=24, help="validation mixtures the trainer monitors")
    t.add_argument("--cross-mixture", type=float, default=0.0, help="weight of the embedding loss over the whole "
                   "batch, each mixture's talkers their own classes: embeddings that say who talks (0: off)")
    t.add_argument("--ema-decay", type=float, default=None, help="validate, keep and publish a moving average of "
                   "the weights with this decay (e.g. 0.998); default: the weights themselves")
    t.add_argument("--count-head", type=int, default=None,
                   help="with --init: add a head that counts 1..K talkers and train it alone (the embeddings and "
                        "masks stay as they are); n_sources='auto' then takes its count")
    t.add_argument("--train-only", default=None,
                   help="with --init: train only these parts of its network, comma-separated ('embed': the "
                        "embedding layer, so that the mask head and the count head stay exactly as they are)")
    t.add_argument("--attention", type=int, default=None,
                   help="with --init: add this many self-attention layers over the BLSTM's frames (the network's "
                        "outputs unchanged at the start), so that every frame reads the whole mixture")
    t.add_argument("--decode", choices=sorted(DECODE_OPTIONS), default="soft",
                   help="how the trained model separates, and so how the trainer's validation scores it: 'soft' "
                        "(soft k-means masks fitted on the loud bins, as the shipped model) or 'head' (the mask head "
                        "for 2 talkers, binary k-means masks otherwise)")
    t.add_argument("--monitor", default="sdri", help="what picks the best weights and decays the lr "
                   "('loss' for a --count-head or --train-only stage, whose 2-talker separation does not change)")
    t.add_argument("--loss", default="whitened_kmeans")
    t.add_argument("--score-n", type=int, default=40, help="validation mixtures scored after the stage (0: none)")
    t.add_argument("--progress", action="store_true")
    t.set_defaults(func=cmd_train)
    v = sub.add_parser("validate", help="SDRi of saved models on the validation real speakers")
    v.add_argument("models", nargs="+", type=Path)
    v.add_argument("--real", type=Path, default=REPO / "data" / "speech-real")
    v.add_argument("--n", type=int, default=40)
    v.add_argument("--all", action="store_true", help="also 3 talkers, counting and synthetic voices")
    v.add_argument("--counting", action="store_true", help="only the counting tables (n_sources='auto'), real and "
                   "synthetic voices")
    v.add_argument("--synthetic", type=Path, default=REPO / "data" / "speech")
    v.add_argument("--paired", action="store_true",
                   help="also each model's per-mixture SDRi difference to the first model's (mean, SE, wins)")
    v.add_argument("--seed-offset", type=int, default=0,
                   help="add this to every table's seed: another draw of validation mixtures")
    v.add_argument("--spectrum", action="store_true",
                   help="also how many directions the embeddings use (a third talker needs a third)")
    v.add_argument("--threads", type=int, default=2)
    v.set_defaults(func=cmd_validate)
    b = sub.add_parser("publish", help="copy a run's newest checkpoint (model + optimizer) for a later stage")
    b.add_argument("--run", required=True)
    b.add_argument("--to", required=True)
    b.set_defaults(func=cmd_publish)
    e = sub.add_parser("export", help="a run's newest checkpoint as a model folder (its moving average with --ema-decay)")
    e.add_argument("--run", required=True)
    e.add_argument("--to", required=True)
    e.add_argument("--raw", action="store_true", help="the weights themselves, not their moving average")
    e.set_defaults(func=cmd_export)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
