"""The image domain's metrics: the re-exported functions and ImageMetrics, which reads the
ground truth from a batch and pools over a dataset."""

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

import embedseg.metrics as core
from domains.image import metrics as image_metrics
from domains.image.metrics import (
    ImageMetrics,
    instance_metrics,
    matching,
    matching_dataset,
)
from embedseg.domain import EncodedBatch


def _scene(rng, h, w, n):
    """A true label map of n rectangles and a prediction that shifts, merges or misses them."""
    t = np.zeros((h, w), np.int64)
    p = np.zeros((h, w), np.int64)
    for k in range(1, n + 1):
        y, x = rng.integers(0, h - 4), rng.integers(0, w - 4)
        a, b = rng.integers(3, 7, 2)
        t[y : y + a, x : x + b] = k
        if rng.random() < 0.8:
            p[max(0, y - 1) : y + a, x : x + b + 1] = 7 + k
    return t, p


def _batch(pairs):
    """An encoded batch as the image domain makes it: truth padded to the largest image."""
    H = max(t.shape[0] for t, _ in pairs)
    W = max(t.shape[1] for t, _ in pairs)
    gt = torch.zeros(len(pairs), H, W, dtype=torch.int64)
    for i, (t, _) in enumerate(pairs):
        gt[i, : t.shape[0], : t.shape[1]] = torch.from_numpy(t)
    mask = torch.ones(len(pairs), H * W, dtype=torch.bool)
    context = {"gt": gt, "sizes": [t.shape for t, _ in pairs]}
    return EncodedBatch(features=None, mask=mask, context=context), [torch.from_numpy(p) for _, p in pairs]


def _reference(pairs):
    """StarDist's pooled matching over the dataset, and the mean per-image ARI from sklearn."""
    m = matching_dataset([t for t, _ in pairs], [p for _, p in pairs])
    return {
        "ap50": m[0.5]["ap"],
        "ap75": m[0.75]["ap"],
        "ap": float(np.mean([v["ap"] for v in m.values()])),
        "f1": m[0.5]["f1"],
        "pq": m[0.5]["panoptic_quality"],
        "mean_matched_iou": m[0.5]["mean_matched_iou"],
        "ari": float(np.mean([adjusted_rand_score(t.ravel(), p.ravel()) for t, p in pairs])),
    }


def _pairs(seed, n=6):
    rng = np.random.default_rng(seed)
    return [_scene(rng, int(rng.integers(16, 28)), int(rng.integers(16, 28)), int(rng.integers(1, 7))) for _ in range(n)]


def test_old_import_paths_are_the_core_functions():
    for name in ("iou_matrix", "matching", "matching_dataset", "adjusted_rand_index", "DEFAULT_THRESHOLDS"):
        assert getattr(image_metrics, name) is getattr(core, name)


@pytest.mark.parametrize("seed", range(3))
def test_batches_pool_over_the_dataset(seed):
    pairs = _pairs(seed)
    want = _reference(pairs)
    metric = ImageMetrics()
    for start in (0, 2, 5):  # batches of 2, 3 and 1 images of different sizes
        stop = {0: 2, 2: 5, 5: 6}[start]
        batch, outputs = _batch(pairs[start:stop])
        metric.update(outputs, batch)
    got = metric.compute()
    assert list(got) == list(want)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key


def test_merge_state_dict_and_label_map_path_agree():
    pairs = _pairs(4)
    whole = ImageMetrics()
    whole.update_maps([t for t, _ in pairs], [p for _, p in pairs])
    a, b = ImageMetrics(), ImageMetrics()
    for metric, part in ((a, pairs[:3]), (b, pairs[3:])):
        batch, outputs = _batch(part)
        metric.update(outputs, batch)
    merged = ImageMetrics().load_state_dict(a.state_dict()).merge(b)
    for key, value in whole.compute().items():
        assert merged.compute()[key] == pytest.approx(value, abs=1e-12), key
    assert set(merged.state_dict()) == {"matching", "ari"}


def test_pooling_differs_from_the_mean_of_per_image_scores():
    # One image with many objects, all found, and one with a single missed object: pooled AP50
    # weighs objects (10 of 11 found), a per-image mean weighs images ((1 + 0) / 2).
    big = np.zeros((20, 40), np.int64)
    for k in range(10):
        big[2:6, 4 * k : 4 * k + 3] = k + 1
    small = np.zeros((8, 8), np.int64)
    small[2:5, 2:5] = 1
    metric = ImageMetrics()
    metric.update_maps([big, small], [big, np.zeros_like(small)])
    assert metric.compute()["ap50"] == pytest.approx(10 / 11)
    assert np.mean([instance_metrics(big, big)["ap50"], instance_metrics(small, 0 * small)["ap50"]]) == 0.5


def test_a_batch_without_truth_scores_nothing():
    batch, outputs = _batch(_pairs(1, n=2))
    del batch.context["gt"]
    metric = ImageMetrics()
    metric.update(outputs, batch)
    assert metric.empty
    with pytest.raises(ValueError, match="no items were scored"):
        metric.compute()


def test_update_checks_counts():
    batch, outputs = _batch(_pairs(2, n=2))
    with pytest.raises(ValueError, match="'outputs' must hold one label map per image"):
        ImageMetrics().update(outputs[:1], batch)
    with pytest.raises(ValueError, match="'y_true' and 'y_pred' must hold as many"):
        ImageMetrics().update_maps([np.zeros((2, 2), int)], [])


def test_instance_metrics_is_one_image_of_image_metrics():
    t = np.array([[1, 1, 0, 2, 2], [0, 0, 0, 3, 3]])
    m = instance_metrics(t, t * 2)
    assert m["ap50"] == m["ap"] == m["f1"] == m["pq"] == m["ari"] == pytest.approx(1.0)
    t, p = _pairs(5, n=1)[0]
    got = instance_metrics(torch.from_numpy(t), p)
    m50 = matching(t, p, 0.5)
    assert got == pytest.approx({**_reference([(t, p)]), "precision": m50["precision"], "recall": m50["recall"]})
    assert got["ap50"] == m50["ap"]
