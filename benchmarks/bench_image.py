"""Image instance segmentation: embedseg against tuned classic pipelines, and inference speed.

    python benchmarks/bench_image.py synthetic [--model pretrained/image-shapes]
    python benchmarks/bench_image.py nuclei [--minutes 8]
    python benchmarks/bench_image.py speed [--model pretrained/image-shapes]

synthetic: held-out 256 x 256 scenes with 30-60 objects (training scenes have at most 12);
    classic pipelines tuned on 12 training scenes.
nuclei: the small-data story. One annotated fluorescence image of nuclei (512 x 512, 125
    nuclei; from the 2018 Data Science Bowl, as shipped in the ``stardist`` package's test
    data, BSD-3). Left half: 64 random 128 x 128 crops -> ``embedseg.fit(crops, domain="image",
    max_minutes=8)``, then ``model.tune_decoding`` on the whole left half; the classic
    pipelines are tuned on the whole left half too. All are scored on the right half.
speed: ``model.segment`` on a 512 x 512 image (median of 5 runs after a warm-up), and the
    network alone, with the CPU-size network, with 1 and with 2 torch threads.

Every section prints a markdown table.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

import embedseg
from domains.image import SyntheticScenes
from domains.image.baselines import PIPELINES, segment_classic, tune
from domains.image.metrics import ImageMetrics

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path.home() / ".cache" / "embedseg" / "nuclei"


def scores(gts: list[np.ndarray], preds: list[np.ndarray]) -> dict[str, float]:
    """The image domain's figures (as ``model.evaluate`` reports them): matching pooled over all
    objects of all images, ARI averaged over images."""
    metric = ImageMetrics()
    metric.update_maps(gts, preds)
    s = metric.compute()
    m50 = metric.matching.compute()[0.5]
    return {
        "AP50": s["ap50"],
        "F1@0.5": s["f1"],
        "AP75": s["ap75"],
        "PQ": s["pq"],
        "ARI": s["ari"],
        "predicted/true": f"{m50['n_pred']}/{m50['n_true']}",
    }


def table(rows: list[tuple[str, dict]]) -> str:
    keys = list(rows[0][1])
    out = ["| method | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, s in rows:
        cells = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in s.values()]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def classic_rows(train_imgs, train_labs, test_imgs, test_labs) -> list[tuple[str, dict]]:
    rows = []
    for name in PIPELINES:
        params, train_ap = tune(name, train_imgs, train_labs)
        preds = [segment_classic(name, img, **params) for img in test_imgs]
        print(f"  {name}: tuned {params} (train AP50 {train_ap:.3f})", file=sys.stderr)
        rows.append((f"{name} (tuned)", scores(test_labs, preds)))
    return rows


def bench_synthetic(args: argparse.Namespace) -> None:
    model = embedseg.load(args.model)
    train = SyntheticScenes(12, size=128, max_objects=12, seed=0)
    test = SyntheticScenes(20, size=256, min_objects=30, max_objects=60, seed=1001)
    tr = [train[i] for i in range(len(train))]
    te = [test[i] for i in range(len(test))]
    gts = [t["labels"].numpy() for t in te]
    preds = [model.segment(t["image"]).numpy() for t in te]
    rows = [("embedseg", scores(gts, preds))]
    rows += classic_rows([t["image"] for t in tr], [t["labels"].numpy() for t in tr], [t["image"] for t in te], gts)
    print(f"Synthetic held-out scenes (20 x 256^2, 30-60 objects; training scenes <= 20), model {args.model}\n")
    print(table(rows))


def load_nuclei(directory: str | None) -> tuple[np.ndarray, np.ndarray]:
    """The DSB 2018 nuclei image and mask (``img2d.tif``, ``mask2d.tif``) from a folder, an
    installed ``stardist``, or stardist's wheel fetched once with pip into the cache."""
    import tifffile

    candidates = []
    if directory:
        candidates.append(Path(directory))
    spec = importlib.util.find_spec("stardist")
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).parent / "data" / "images")
    candidates.append(CACHE)
    for d in candidates:
        if (d / "img2d.tif").is_file() and (d / "mask2d.tif").is_file():
            return tifffile.imread(d / "img2d.tif"), tifffile.imread(d / "mask2d.tif")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-d", tmp, "stardist==0.9.2"],
            check=True, capture_output=True,
        )
        wheel = next(Path(tmp).glob("stardist-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            for name in ("img2d.tif", "mask2d.tif"):
                (CACHE / name).write_bytes(z.read(f"stardist/data/images/{name}"))
    return tifffile.imread(CACHE / "img2d.tif"), tifffile.imread(CACHE / "mask2d.tif")


def bench_nuclei(args: argparse.Namespace) -> None:
    image, mask = load_nuclei(args.nuclei_dir)
    w = image.shape[1] // 2
    left_img, left_lab = image[:, :w], mask[:, :w].astype(np.int64)
    right_img, right_lab = image[:, w:], mask[:, w:].astype(np.int64)
    rng = np.random.default_rng(0)
    crops = []
    for _ in range(64):
        y = int(rng.integers(0, left_img.shape[0] - 128 + 1))
        x = int(rng.integers(0, left_img.shape[1] - 128 + 1))
        crops.append((left_img[y : y + 128, x : x + 128], left_lab[y : y + 128, x : x + 128]))
    t0 = time.time()
    extra = {"network_params": {"init": args.init}} if args.init else {}
    if args.epochs is not None:
        extra["epochs"] = args.epochs
    model = embedseg.fit(crops, domain="image", max_minutes=args.minutes, progress=False, seed=0, **extra)
    train_min = (time.time() - t0) / 60
    rows = [("embedseg, default decoding", scores([right_lab], [model.segment(right_img).numpy()]))]
    if not args.no_tune:
        # The decoding settings are chosen on the left half, as the classic pipelines' are.
        tuned = model.tune_decoding([(left_img, left_lab)])
        print(f"  embedseg: tuned decoding {tuned['settings']} (train AP50 {tuned['ap50']:.3f})", file=sys.stderr)
        rows.append(("embedseg, decoding tuned on the left half", scores([right_lab], [model.segment(right_img).numpy()])))
    if args.save:
        model.save(args.save)
    rows += classic_rows([left_img], [left_lab], [right_img], [right_lab])
    n_left = len(np.unique(left_lab)) - 1
    n_right = len(np.unique(right_lab)) - 1
    start = f"from {args.init}" if args.init else "from random weights"
    print(
        f"Nuclei ({start}): train on 64 crops of the left half ({n_left} nuclei, {train_min:.1f} min of "
        f"training), test on the right half ({n_right} nuclei)\n"
    )
    print(table(rows))


def bench_speed(args: argparse.Namespace) -> None:
    model = embedseg.load(args.model)
    image = SyntheticScenes(1, size=512, min_objects=150, max_objects=150, seed=7)[0]["image"]
    x = model.domain.prepare_image(image)

    def timed(fn, n=5) -> float:
        fn()
        runs = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t)
        return statistics.median(runs)

    rows = []
    for threads in (1, 2):
        # Two threads stall on a core that another process holds; one thread does not.
        torch.set_num_threads(threads)
        with torch.no_grad():
            net_s = timed(lambda: model.network.eval()(x[None]))
        seg_s = timed(lambda: model.segment(image))
        rows.append((threads, net_s, seg_s))
    n_params = sum(p.numel() for p in model.network.parameters())
    print(f"Inference on one 512 x 512 image with 150 objects ({n_params:,} parameters)\n")
    print("| torch threads | network forward (s) | model.segment, all steps (s) |\n|---|---|---|")
    for threads, net_s, seg_s in rows:
        print(f"| {threads} | {net_s:.3f} | {seg_s:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("section", choices=("synthetic", "nuclei", "speed"))
    parser.add_argument("--model", default=str(ROOT / "pretrained" / "image-shapes"))
    parser.add_argument("--minutes", type=float, default=8.0, help="nuclei: training budget")
    parser.add_argument("--nuclei-dir", default=None, help="nuclei: folder with img2d.tif and mask2d.tif")
    parser.add_argument("--save", default=None, help="nuclei: save the trained model here")
    parser.add_argument("--epochs", type=int, default=None, help="nuclei: passes over the (augmented) crops; default: fit's")
    parser.add_argument("--no-tune", action="store_true", help="nuclei: keep the default decoding settings")
    parser.add_argument("--init", default=None, help="nuclei: start from this model's network (e.g. image-shapes)")
    parser.add_argument(
        "--threads", type=int, default=None,
        help="torch threads for synthetic/nuclei (one is much faster when another job holds a core)",
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    {"synthetic": bench_synthetic, "nuclei": bench_nuclei, "speed": bench_speed}[args.section](args)


if __name__ == "__main__":
    main()
