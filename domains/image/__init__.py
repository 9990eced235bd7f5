"""The image domain: instance segmentation by deep clustering of per-pixel embeddings."""

from .folder import Augmented, InstanceFolder, make_augmentation
from .metrics import adjusted_rand_index, instance_metrics, matching, matching_dataset
from .synthetic import SyntheticScenes

__all__ = [
    "SyntheticScenes",
    "InstanceFolder",
    "Augmented",
    "make_augmentation",
    "matching",
    "matching_dataset",
    "adjusted_rand_index",
    "instance_metrics",
]
