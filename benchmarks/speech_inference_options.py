"""How a speech model's inference options separate the validation speakers and voices: each
variant (domain options, clusterer parameters) beside the model's own config, on the same
mixtures, paired per mixture.

    python benchmarks/speech_inference_options.py --model pretrained/audio-speech-8k \\
        --variant 'before={"domain": {"inference": "auto", "soft_masks": false, "cluster_threshold_db": null}}' \\
        --variant 'T0.5={"clusterer": {"soft_temperature": 0.5}}'

A variant is ``NAME=JSON`` with optional "domain" (AudioDomain options) and "clusterer"
(parameters of the model's clusterer, or {"name": ..., ...} for another registered one) keys.
Tables (validation splits only; the test speakers are never read here): 2 real talkers, 40
mixtures (seed 11) and 60 (seed 15); 3 real talkers, 40 (seed 12); 2 synthetic voices, 40
(seed 14), with the true number of talkers given. Scores: BSS-Eval SDR improvement.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import embedseg  # noqa: E402
from embedseg.cluster import create_clusterer  # noqa: E402
from probe_speech_errors import mixtures, sdri  # noqa: E402

TABLES = (("real", 2, 40, 11), ("real", 2, 60, 15), ("real", 3, 40, 12), ("synthetic", 2, 40, 14))


def with_options(path: Path, options: dict):
    """The model at ``path`` with a variant's domain options and clusterer parameters."""
    model = embedseg.load(path)
    unknown = set(options) - {"domain", "clusterer"}
    if unknown:
        raise ValueError(f"a variant has 'domain' and 'clusterer' keys only. Got also {sorted(unknown)}.")
    for key, value in options.get("domain", {}).items():
        if key not in model.domain.get_config():
            raise ValueError(f"'{key}' is not an option of the model's domain ({sorted(model.domain.get_config())}).")
        setattr(model.domain, key, value)
    if "clusterer" in options:
        params = dict(options["clusterer"])
        name = params.pop("name", None)
        base = model.clusterer.get_params() if name is None else {
            k: v for k, v in model.clusterer.get_params().items() if k in ("n_clusters", "max_clusters", "seed")}
        model.clusterer = create_clusterer(name or embedseg.cluster.CLUSTERERS.name_of(type(model.clusterer)), **{**base, **params})
    return model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=REPO / "pretrained" / "audio-speech-8k")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=JSON")
    p.add_argument("--real", type=Path, default=REPO / "data" / "speech-real")
    p.add_argument("--synthetic", type=Path, default=REPO / "data" / "speech")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    variants = {}
    for text in args.variant:
        name, sep, spec = text.partition("=")
        if not sep:
            p.error(f"--variant must be NAME=JSON. Got {text!r}.")
        variants[name] = json.loads(spec)
    base = embedseg.load(args.model)
    models = {name: with_options(args.model, spec) for name, spec in variants.items()}
    corpora = {"real": args.real, "synthetic": args.synthetic}
    print(f"| validation, SDRi (dB; paired against `{args.model.name}` +- SE) | {args.model.name} | "
          + " | ".join(models) + " |")
    print("| --- | ---: |" + " ---: |" * len(models))
    for corpus, talkers, n, seed in TABLES:
        data = mixtures(corpora[corpus], n, talkers, seed)
        items = [data[i] for i in range(n)]

        def scores(model) -> np.ndarray:
            return np.array([sdri(it["sources"], torch.as_tensor(model.separate(it["mixture"], n_sources=talkers)),
                                  it["mixture"]) for it in items])

        ref = scores(base)
        cells = []
        for model in models.values():
            d = scores(model) - ref
            cells.append(f"{ref.mean() + d.mean():.2f} ({d.mean():+.2f} +- {d.std(ddof=1) / np.sqrt(n):.2f})")
        print(f"| {talkers} {corpus} talkers, {n} mixtures (seed {seed}) | {ref.mean():.2f} | " + " | ".join(cells) + " |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
