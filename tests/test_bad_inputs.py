"""Bad input at every public entry point gets a clear error that names the argument.

One table per entry point: each row is a call that must fail, the exception type, and a
pattern the message must match (the argument's name, what was expected). Add a row when you
find an input that gets a worse answer. The command line has its own tables in
tests/test_cli.py, tests/audio/test_cli.py and tests/image/test_cli.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import embedseg
from embedseg import KMeans, affinity_loss, create_clusterer, create_domain, whitened_kmeans_loss

from toys import one_thread  # noqa: F401  (one_thread: autouse fixture)


@pytest.fixture(scope="module")
def image_model():
    return embedseg.load("pretrained/image-shapes")


@pytest.fixture(scope="module")
def audio_model():
    return embedseg.load("pretrained/audio-speech-8k")


V = torch.nn.functional.normalize(torch.randn(2, 10, 3), dim=-1)
Y = torch.randint(0, 2, (2, 10))

CORE = [
    # losses
    (lambda: affinity_loss(V[0], Y), ValueError, r"'embeddings'.*\(batch, n_points, dim\)"),
    (lambda: affinity_loss(V, Y[:, :5]), ValueError, r"'labels'.*\(2, 10\)"),
    (lambda: affinity_loss(V.masked_fill(V > 0.5, float("nan")), Y), ValueError, r"'embeddings'.*finite"),
    (lambda: affinity_loss(V, Y.float()), TypeError, r"'labels'.*int"),
    (lambda: affinity_loss(V, Y, torch.full((2, 10), -1.0)), ValueError, r"'weights'.*>= 0"),
    (lambda: affinity_loss(V, Y, reduction="avg"), ValueError, r"'reduction'"),
    (lambda: whitened_kmeans_loss(V, Y, torch.ones(2, 9)), ValueError, r"'weights'"),
    # clusterers
    (lambda: create_clusterer("kmeans", n_clusters=0).fit(V), ValueError, r"'n_clusters' parameter of KMeans"),
    (lambda: create_clusterer("k-means"), ValueError, r"Unknown clusterer 'k-means'. Valid clusterers: .*'kmeans'"),
    (lambda: create_clusterer("kmeans", k=2), ValueError, r"Invalid parameters \['k'\]"),
    (lambda: create_clusterer("sklearn", estimator="not an estimator").fit(V), TypeError, r"'estimator'"),
    (lambda: KMeans(n_clusters=2).fit(V.numpy()), TypeError, r"'X'"),
    (lambda: KMeans(n_clusters=2).fit(V, torch.ones(2, 9, dtype=torch.bool)), ValueError, r"'mask'"),
    (lambda: KMeans(n_clusters=20).fit(V), ValueError, r"'n_clusters'.*active points"),
    (lambda: KMeans(n_clusters=2).fit(V).predict(torch.randn(2, 10, 4)), ValueError, r"'X'.*3 features"),
    (lambda: KMeans(n_clusters=2).predict(V), embedseg.NotFittedError, r"not fitted"),
    # registries and training
    (lambda: create_domain("lidar"), ValueError, r"Unknown domain 'lidar'. Valid domains: .*'audio'"),
    (lambda: create_domain("image", channel=3), TypeError, r"no option\(s\) 'channel'"),
    (lambda: embedseg.create_network("unet"), ValueError, r"Unknown network 'unet'"),
    (lambda: embedseg.fit([], domain="image"), ValueError, r"'dataset' must hold at least one item"),
    (lambda: embedseg.fit({"a": 1}, domain="image"), TypeError, r"'dataset'.*mapping is not a dataset"),
    (lambda: embedseg.fit([1], domain="image", epochs=0), ValueError, r"'epochs' parameter of fit"),
    (lambda: embedseg.fit([1], domain="image", lr=-1.0), ValueError, r"'lr' parameter of fit"),
    (lambda: embedseg.fit([1], domain="image", loss="l2"), ValueError, r"'loss' parameter of fit must be one of"),
    (lambda: embedseg.fit([1], domain="image", epoch=3), TypeError, r"unknown option\(s\) 'epoch'"),
    (lambda: embedseg.load(""), ValueError, r"'path' must name a model folder"),
    (lambda: embedseg.load(3), TypeError, r"'path' must be a str"),
    (lambda: embedseg.load("/nonexistent/model"), embedseg.ModelFileError, r"No saved model"),
]


@pytest.mark.parametrize("call,error,match", CORE, ids=[f"core-{i}" for i in range(len(CORE))])
def test_core_entry_points(call, error, match):
    with pytest.raises(error, match=match):
        call()


IMAGE = [
    (lambda m: m.segment(np.full((8, 8), np.nan)), ValueError, r"'image' must contain only finite values"),
    (lambda m: m.segment(np.zeros((0, 8))), ValueError, r"'image' must not be empty"),
    (lambda m: m.segment(np.zeros((2, 3, 8, 8))), ValueError, r"'image' must be \(H, W\)"),
    (lambda m: m.segment(np.full((8, 8), 5.0)), ValueError, r"'image' is constant"),
    (lambda m: m.segment(np.random.rand(3, 20, 30)), ValueError, r"ambiguous.*channel_axis"),
    (lambda m: m.segment(np.random.rand(8, 8), n_instances=-1), ValueError, r"'n_instances'"),
    (lambda m: m.segment("image.png"), TypeError, r"'image' must be a numpy array or torch tensor"),
    (lambda m: m.segment(np.random.rand(8, 8).astype(complex)), TypeError, r"'image'.*dtype"),
    (lambda m: m.segment_batch(np.random.rand(8, 8)), ValueError, r"'images'.*use segment\(\)"),
    (lambda m: m.segment_batch([np.random.rand(8, 8)], n_instances=[1, 2]), ValueError, r"'n_instances' must give one count per image"),
    (lambda m: m.segment_batch([np.random.rand(8, 8)], batch_size=0), ValueError, r"'batch_size' parameter of segment_batch"),
    (lambda m: m.tune_decoding([]), ValueError, r"'items' must hold at least one"),
    (lambda m: m.tune_decoding([np.random.rand(8, 8)]), (TypeError, ValueError), r"'items\[0\]'|labels"),
    (lambda m: m.evaluate([]), ValueError, r"'dataset' must hold at least one item"),
    (lambda m: m.evaluate([{"mixture": np.zeros(800)}]), ValueError, r"'image'"),
    (lambda m: m.evaluate([{"image": np.random.rand(8, 8)}]), ValueError, r"no items were scored"),
]


@pytest.mark.parametrize("call,error,match", IMAGE, ids=[f"image-{i}" for i in range(len(IMAGE))])
def test_image_model_entry_points(image_model, call, error, match):
    with pytest.raises(error, match=match):
        call(image_model)


AUDIO = [
    (lambda m: m.separate(torch.tensor([0.1, float("nan")] * 1000)), ValueError, r"'mixture' must contain only finite values"),
    (lambda m: m.separate(torch.zeros(4000)), ValueError, r"'mixture' item 0 is silent or constant"),
    (lambda m: m.separate(torch.randn(100)), ValueError, r"'mixture' must be at least one STFT frame long"),
    (lambda m: m.separate(np.zeros((0, 8000), np.float32)), ValueError, r"'mixture' must hold at least one mixture"),
    (lambda m: m.separate(np.zeros((2, 3, 800), np.float32)), ValueError, r"'mixture' must be \(time,\) or \(batch, time\)"),
    (lambda m: m.separate((np.random.rand(64, 300) * 255).astype(np.uint8)), TypeError, r"'mixture'.*looks like an image"),
    (lambda m: m.separate(torch.randn(4000), n_sources=0), ValueError, r"'n_sources' parameter of separate"),
    (lambda m: m.separate(torch.randn(300), n_sources=5000), ValueError, r"'n_sources' \(5000\) is more than the input can hold"),
    (lambda m: m.separate(torch.randn(4000), sample_rate="8k"), TypeError, r"'sample_rate' parameter of separate"),
    (lambda m: m.separate([0.1, 0.2]), TypeError, r"'mixture' must be a tensor, an array or a file path"),
    (lambda m: m.separate("/nonexistent.wav"), FileNotFoundError, r"Audio file not found: '/nonexistent.wav'"),
    (lambda m: m.evaluate([]), ValueError, r"'dataset' must hold at least one item"),
    (lambda m: m.evaluate([{"image": np.zeros((8, 8))}]), ValueError, r"'mixture'"),
    (lambda m: m.evaluate([{"mixture": np.random.randn(8000).astype(np.float32)}]), ValueError, r"no items were scored"),
]


@pytest.mark.parametrize("call,error,match", AUDIO, ids=[f"audio-{i}" for i in range(len(AUDIO))])
def test_audio_model_entry_points(audio_model, call, error, match):
    with pytest.raises(error, match=match):
        call(audio_model)
