"""What a user measures is what a user gets: for the shipped image model, ``evaluate`` equals the
public metrics of what ``segment`` returns, item for item, to 1e-6."""

from __future__ import annotations

import numpy as np
import pytest

import embedseg
from domains.image import ImageMetrics, SyntheticScenes

def test_image_evaluate_scores_what_segment_returns():
    model = embedseg.load("pretrained/image-shapes")
    scenes = SyntheticScenes(4, size=256, min_objects=30, max_objects=60, seed=1001)  # held-out seed
    metric = ImageMetrics()
    metric.update_maps([np.asarray(s["labels"]) for s in scenes], [model.segment(s["image"]).numpy() for s in scenes])
    assert model.evaluate(scenes, batch_size=3) == pytest.approx(metric.compute(), abs=1e-6)
