"""What a user measures is what a user gets: for the shipped speech model, ``evaluate`` equals the
public metrics of what ``separate`` returns, item for item, to 1e-6."""

from __future__ import annotations

import pytest
import torch

import embedseg
from domains.audio import AudioMetrics, MixtureDataset

def test_audio_evaluate_scores_what_separate_returns(tiny_corpus):
    model = embedseg.load("pretrained/audio-speech-8k")
    # Mixtures of two lengths, so that batches cannot be formed by padding.
    mixtures = [MixtureDataset(tiny_corpus, n_sources=2, segment_seconds=seconds, seed=5, n_mixtures=3)[i]
                for seconds in (1.0, 1.25) for i in range(3)]
    # evaluate's n_clusters is separate's n_sources: the model's own count (2), and "auto".
    for n_sources, n_clusters in ((2, None), ("auto", "auto")):
        metric = AudioMetrics()
        metric.update_items(
            [m["sources"] for m in mixtures],
            [torch.as_tensor(model.separate(m["mixture"], n_sources=n_sources)) for m in mixtures],
            [m["mixture"] for m in mixtures],
        )
        got = model.evaluate(mixtures, batch_size=4, n_clusters=n_clusters)
        assert got == pytest.approx(metric.compute(), abs=1e-6)
