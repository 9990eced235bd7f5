"""The image domain: instance segmentation by deep clustering of per-pixel embeddings.

``embedseg.fit(dataset, domain="image")`` trains a U-Net whose pixel embeddings group pixels of
one object together; ``model.segment(image)`` returns an instance label map for an image of any
size. Data: :class:`SyntheticScenes` (textured shapes, deterministic), :class:`InstanceFolder`
(``images/`` + ``masks/``). Metrics: StarDist-style matching (AP, F1, PQ at IoU thresholds)
and the adjusted Rand index.
"""

from .decode import decode_instances
from .domain import ImageDomain
from .model import ImageModel
from .folder import Augmented, InstanceFolder, make_augmentation
from .metrics import ImageMetrics, adjusted_rand_index, instance_metrics, matching, matching_dataset
from .network import UNetEmbedding
from .synthetic import SyntheticScenes

__all__ = [
    "ImageDomain",
    "ImageModel",
    "UNetEmbedding",
    "SyntheticScenes",
    "InstanceFolder",
    "Augmented",
    "make_augmentation",
    "decode_instances",
    "ImageMetrics",
    "matching",
    "matching_dataset",
    "adjusted_rand_index",
    "instance_metrics",
]
