"""Instance segmentation by deep clustering, end to end, on CPU in a few minutes.

    python examples/image_segmentation.py                 # train ~3 minutes, then evaluate
    python examples/image_segmentation.py --pretrained    # use pretrained/image-shapes instead
    python examples/image_segmentation.py --init image-shapes   # fine-tune the shipped model

1. Generates synthetic scenes (textured shapes on textured backgrounds, touching and occluding).
2. Trains the CPU-size U-Net on 128 x 128 scenes with at most 12 objects.
3. Segments held-out 256 x 256 scenes holding 30-60 objects, more than any training scene.
4. Prints AP50 / F1 / ARI next to the classic Otsu + watershed pipeline, tuned on training
   scenes, and writes a PNG: image, ground truth, prediction, embedding projection.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import embedseg
from domains.image import SyntheticScenes
from domains.image.baselines import segment_classic, tune
from domains.image.metrics import ImageMetrics

ROOT = Path(__file__).resolve().parents[1]


def score(gts: list[np.ndarray], preds: list[np.ndarray]) -> dict[str, float]:
    """The image domain's figures (as ``model.evaluate`` reports them): matching pooled over all
    objects of all scenes, ARI averaged over scenes."""
    metric = ImageMetrics()
    metric.update_maps(gts, preds)
    s = metric.compute()
    n_pred = metric.matching.compute()[0.5]["n_pred"]
    return {"AP50": s["ap50"], "F1": s["f1"], "PQ": s["pq"], "ARI": s["ari"], "predicted": n_pred}


def figure(path: Path, model: embedseg.Model, item: dict, pred: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from domains.image.viz import display_image, embedding_rgb, overlay

    emb, _ = model.embed_image(item["image"])
    h, w = np.asarray(item["labels"]).shape
    panels = [
        ("image", display_image(item["image"])),
        (f"ground truth ({int(item['labels'].max())})", overlay(item["image"], item["labels"])),
        (f"embedseg ({int(pred.max())})", overlay(item["image"], pred)),
        ("embeddings (3 principal components)", embedding_rgb(emb, (h, w))),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4))
    for ax, (title, img) in zip(axes, panels):
        ax.imshow(img)
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description="Deep-clustering instance segmentation on synthetic scenes.")
    parser.add_argument("--minutes", type=float, default=3.0, help="training budget (default 3)")
    parser.add_argument("--pretrained", action="store_true", help="use pretrained/image-shapes")
    parser.add_argument("--init", default=None, help="start training from this model's network (e.g. image-shapes)")
    parser.add_argument("--n-test", type=int, default=6, help="held-out scenes (default 6)")
    parser.add_argument("--out", default="image_segmentation.png", help="the figure (default ./image_segmentation.png)")
    args = parser.parse_args()
    torch.manual_seed(0)

    train = SyntheticScenes(2000, size=128, max_objects=12, seed=0)
    test = SyntheticScenes(args.n_test, size=256, min_objects=30, max_objects=60, seed=1001)
    max_train = max(int(train[i]["labels"].max()) for i in range(50))
    print(f"training scenes: 128 x 128, up to {train.max_objects} objects (e.g. {max_train} in the first 50)")
    print(f"held-out scenes: 256 x 256, 30-60 objects ({args.n_test} scenes)")

    if args.pretrained:
        model = embedseg.load(ROOT / "pretrained" / "image-shapes")
        print("model: pretrained/image-shapes")
    else:
        t0 = time.time()
        init = {"network_params": {"init": args.init}} if args.init else {}
        model = embedseg.fit(
            train, domain="image", max_minutes=args.minutes, epochs=100, batch_size=8, lr=3e-3,
            warmup_steps=20, seed=0, progress=False, **init,
        )
        print(f"trained for {(time.time() - t0) / 60:.1f} min")

    # Both methods choose their settings on the same 8 training scenes.
    tune_set = [train[i] for i in range(8)]
    if not args.pretrained:  # the shipped model carries settings chosen on its own tuning scenes
        tuned = model.tune_decoding(tune_set)
        print(f"decoding settings tuned on 8 training scenes: {tuned['settings']}")

    items = [test[i] for i in range(len(test))]
    gts = [it["labels"].numpy() for it in items]
    t0 = time.time()
    preds = [model.segment(it["image"]).numpy() for it in items]
    seg_s = (time.time() - t0) / len(items)

    params, _ = tune("otsu_watershed", [t["image"] for t in tune_set], [t["labels"].numpy() for t in tune_set])
    classic = [segment_classic("otsu_watershed", it["image"], **params) for it in items]

    rows = [("embedseg", score(gts, preds)), ("Otsu + watershed (tuned)", score(gts, classic))]
    print(f"\n{'method':28s} {'AP50':>6s} {'F1':>6s} {'PQ':>6s} {'ARI':>6s} {'predicted':>9s}   (true: {sum(int(g.max()) for g in gts)})")
    for name, s in rows:
        print(f"{name:28s} {s['AP50']:6.3f} {s['F1']:6.3f} {s['PQ']:6.3f} {s['ARI']:6.3f} {s['predicted']:9d}")
    print(f"\nembedseg: {seg_s:.2f} s per 256 x 256 scene; watershed parameters {params}")
    figure(Path(args.out), model, items[0], preds[0])
    print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
