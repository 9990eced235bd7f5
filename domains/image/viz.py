"""Pictures of segmentations: colored label overlays and embedding projections."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from embedseg.errors import require

__all__ = ["overlay", "embedding_rgb", "display_image"]


def display_image(image: Any) -> np.ndarray:
    """An image as (H, W, 3) float in [0, 1] for display (percentile-normalized, gray repeated)."""
    from .imageio import normalize_intensity, to_channels, to_image_tensor

    x = normalize_intensity(to_channels(to_image_tensor(image), 3)).clamp(0, 1)
    return x.permute(1, 2, 0).numpy()


def overlay(image: Any, labels: Any, alpha: float = 0.35) -> np.ndarray:
    """Instances colored over the image with their boundaries drawn; (H, W, 3) float in [0, 1]."""
    color = require("skimage.color", "image")
    seg = require("skimage.segmentation", "image")
    lab = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    base = display_image(image)
    out = color.label2rgb(lab, image=base, bg_label=0, alpha=alpha, image_alpha=1.0)
    return seg.mark_boundaries(out, lab, color=(1, 1, 0), mode="inner")


def embedding_rgb(embeddings: Any, shape: tuple[int, int]) -> np.ndarray:
    """The first three principal components of pixel embeddings as colors; (H, W, 3) in [0, 1].

    Args:
        embeddings: (H*W, dim) pixel embeddings.
        shape: (H, W).
    """
    e = embeddings.detach().cpu().double() if isinstance(embeddings, torch.Tensor) else torch.as_tensor(embeddings).double()
    e = e - e.mean(0)
    _, _, v = torch.linalg.svd(e[:: max(1, e.shape[0] // 20000)], full_matrices=False)
    p = e @ v[:3].T  # (H*W, 3)
    lo, hi = p.quantile(0.01, dim=0), p.quantile(0.99, dim=0)
    p = ((p - lo) / (hi - lo).clamp_min(1e-9)).clamp(0, 1)
    if p.shape[1] < 3:
        p = torch.cat([p, torch.zeros(p.shape[0], 3 - p.shape[1], dtype=p.dtype)], 1)
    return p.reshape(shape[0], shape[1], 3).numpy()
