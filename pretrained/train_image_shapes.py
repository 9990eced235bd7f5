"""Recipe of the shipped ``image-shapes`` model: trained on synthetic scenes, on CPU.

Run from the repository root:

    python pretrained/train_image_shapes.py --minutes 20 --out pretrained/image-shapes

It trains the CPU-size U-Net on 128 x 128 synthetic scenes with at most 12 objects (or
``--max-objects``), chooses the decoding settings on tuning scenes drawn like the held-out ones
from another seed, then scores it on held-out 256 x 256 scenes with 30-60 objects (more than
any training scene) and writes ``scores.json`` next to the model. ``--compare A B ...``
scores saved models on a third set of such scenes, to choose between candidates that tie on
the tuning scenes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import embedseg
from domains.image import SyntheticScenes, adjusted_rand_index, matching_dataset


def held_out() -> SyntheticScenes:
    """The held-out benchmark scenes: larger, denser than any training scene, unseen seed."""
    return SyntheticScenes(20, size=256, min_objects=30, max_objects=60, seed=1001)


def tuning_scenes() -> SyntheticScenes:
    """Scenes drawn like the held-out ones but from another seed, for choosing decoding
    settings without looking at the held-out scenes."""
    return SyntheticScenes(20, size=256, min_objects=30, max_objects=60, seed=2002)


def selection_scenes() -> SyntheticScenes:
    """More scenes drawn like the held-out ones, from a third seed: they decide between
    candidates that tie on the tuning scenes, again without looking at the held-out scenes."""
    return SyntheticScenes(40, size=256, min_objects=30, max_objects=60, seed=3003)


def tune_decoding(path: str) -> dict:
    """Choose the decoding settings on the tuning scenes (``ImageDomain.DECODING_GRID``, best
    AP50) and save them in the model at ``path`` (its weights are unchanged)."""
    model = embedseg.load(path)
    scenes = tuning_scenes()
    result = model.tune_decoding([scenes[i] for i in range(len(scenes))])
    model.save(path)
    print(f"decoding settings saved with the model: {result['settings']} (tuning AP50 {result['ap50']:.4f})")
    return result["settings"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--out", default="pretrained/image-shapes")
    parser.add_argument("--run-dir", default=None, help="checkpoints and logs (default: none)")
    parser.add_argument("--init", default=None, help="continue training the network of this saved model")
    parser.add_argument("--seed", type=int, default=0, help="training seed (scene order, augmentation)")
    parser.add_argument("--evaluate-only", action="store_true", help="only score the model at --out")
    parser.add_argument("--tune-only", action="store_true", help="only choose the decoding settings of the model at --out, then score it")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    parser.add_argument("--max-objects", type=int, default=12, help="most objects in a training scene (the held-out scenes have 30-60)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 avoids stalls on a shared CPU)")
    parser.add_argument("--weighting", default="balanced", choices=("balanced", "contact", "none"),
                        help="pixel weights of the affinity loss (ImageDomain's 'weighting')")
    parser.add_argument("--local-window", type=int, default=0,
                        help="window side of the local affinity term (ImageDomain's 'local_window'; 0: none)")
    parser.add_argument("--compare", nargs="+", metavar="MODEL", default=None,
                        help="only score these saved models on the selection scenes (seed 3003)")
    parser.add_argument("--flip-views", type=int, default=4, choices=(1, 2, 4),
                        help="mirrored views embedded at inference (ImageDomain's 'flip_views')")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.compare:
        scenes = selection_scenes()
        for path in args.compare:
            m, _, _ = score(path, scenes, [0.5, 0.75])
            print(f"{path}: AP50 {m[0.5]['ap']:.4f}, AP75 {m[0.75]['ap']:.4f}, F1 {m[0.5]['f1']:.4f}, "
                  f"{m[0.5]['n_pred']} predicted for {m[0.5]['n_true']} objects")
        return
    if args.evaluate_only:
        evaluate(args.out)
        return
    if args.tune_only:
        evaluate(args.out, {"decoding": tune_decoding(args.out)})
        return
    torch.manual_seed(args.seed)
    train = SyntheticScenes(4000, size=128, max_objects=args.max_objects, seed=0)
    init = {"network": embedseg.load(args.init).network} if args.init else {}
    t0 = time.time()
    model = embedseg.fit(
        train,
        domain="image",
        **init,
        max_minutes=args.minutes,
        epochs=100,
        batch_size=8,
        lr=args.lr,
        warmup_steps=20,
        domain_options={"weighting": args.weighting, "local_window": args.local_window, "flip_views": args.flip_views},
        seed=args.seed,
        progress=False,
        out_dir=args.run_dir,
    )
    train_s = time.time() - t0
    model.save(args.out)
    evaluate(args.out, {
        "train": f"SyntheticScenes(4000, size=128, max_objects={args.max_objects}, seed=0), augmented, "
                 f"{args.weighting} weights" + (f", local term on {args.local_window}-pixel windows" if args.local_window else ""),
        "train_minutes": round(train_s / 60, 1),
        "decoding": tune_decoding(args.out),
    })


def score(path: str, scenes: SyntheticScenes, thresholds: list[float]) -> tuple[dict, list, list]:
    """Matching scores (``matching_dataset``) of the saved model at ``path`` on ``scenes``,
    with the true and predicted label maps."""
    model = embedseg.load(path)
    gts, preds = [], []
    for i in range(len(scenes)):
        item = scenes[i]
        gts.append(item["labels"].numpy())
        preds.append(model.segment(item["image"]).numpy())
    m = matching_dataset(gts, preds, thresholds)
    return m, gts, preds


def evaluate(path: str, extra: dict | None = None) -> dict:
    """Score the saved model at ``path`` on the held-out scenes; writes ``path/scores.json``,
    keeping what an earlier run recorded there about training."""
    scores_path = Path(path, "scores.json")
    earlier = json.loads(scores_path.read_text()) if scores_path.is_file() else {}
    extra = {**{k: earlier[k] for k in ("train", "train_minutes", "decoding") if k in earlier}, **(extra or {})}
    m, gts, preds = score(path, held_out(), [0.5, 0.75])
    scores = {
        "held_out": "SyntheticScenes(20, size=256, min_objects=30, max_objects=60, seed=1001)",
        "train": "SyntheticScenes(4000, size=128, max_objects=12, seed=0), augmented",
        **extra,
        "ap50": round(m[0.5]["ap"], 4),
        "f1_50": round(m[0.5]["f1"], 4),
        "ap75": round(m[0.75]["ap"], 4),
        "pq_50": round(m[0.5]["panoptic_quality"], 4),
        "ari": round(float(np.mean([adjusted_rand_index(g, p) for g, p in zip(gts, preds)])), 4),
        "n_true": m[0.5]["n_true"],
        "n_pred": m[0.5]["n_pred"],
    }
    scores_path.write_text(json.dumps(scores, indent=2) + "\n")
    print(json.dumps(scores, indent=2))
    return scores

if __name__ == "__main__":
    main()
