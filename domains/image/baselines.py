"""Classic instance-segmentation pipelines from scikit-image, with parameter tuning.

These are the baselines embedseg is compared against: Otsu threshold + distance-transform
watershed (the textbook nuclei pipeline), Felzenszwalb's graph segmentation and SLIC
superpixels (both restricted to the Otsu foreground, so the background is not counted as
instances). :func:`tune` picks each pipeline's parameters on annotated training images by
grid search on AP at IoU 0.5, so the comparison is with the best each method can do there.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Sequence

import numpy as np

from embedseg._validation import check_choice

from .imageio import normalize_intensity, to_channels, to_image_tensor
from .metrics import matching_dataset

__all__ = ["PIPELINES", "GRIDS", "segment_classic", "tune"]


def _gray(image: Any) -> np.ndarray:
    """(H, W) float image in about [0, 1] (1st-99.8th percentile)."""
    x = normalize_intensity(to_channels(to_image_tensor(image), 1))[0]
    return x.clamp(-0.5, 1.5).numpy().astype(np.float64)


def _foreground(img: np.ndarray, sigma: float, polarity: str = "bright") -> np.ndarray:
    """Otsu foreground of bright objects, dark objects ("dark"), or both ("both": the absolute
    deviation from the median, the background level when objects cover less than half)."""
    from skimage.filters import gaussian, threshold_otsu

    sm = gaussian(img, sigma) if sigma > 0 else img
    if polarity == "dark":
        sm = -sm
    elif polarity == "both":
        sm = np.abs(sm - np.median(sm))
    if sm.max() - sm.min() < 1e-9:
        return np.zeros(img.shape, dtype=bool)
    return sm > threshold_otsu(sm)


def _clean(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Split disconnected pieces, drop instances smaller than min_size, ids 1..n."""
    from skimage.measure import label

    lab = label(labels, background=0, connectivity=1)
    sizes = np.bincount(lab.ravel())
    small = sizes < min_size
    small[0] = True
    lab[small[lab]] = 0
    return _sequential(lab)


def _sequential(lab: np.ndarray) -> np.ndarray:
    from skimage.segmentation import relabel_sequential

    return relabel_sequential(lab)[0].astype(np.int64)


def otsu_watershed(
    image: Any, *, sigma: float = 1.0, min_distance: int = 5, polarity: str = "bright", min_size: int = 16
) -> np.ndarray:
    """Otsu foreground, distance-transform peaks as markers, watershed on the distance."""
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    img = _gray(image)
    fg = _foreground(img, sigma, polarity)
    if not fg.any():
        return np.zeros(img.shape, dtype=np.int64)
    dist = ndi.distance_transform_edt(fg)
    peaks = peak_local_max(dist, min_distance=min_distance, labels=ndi.label(fg)[0], exclude_border=False)
    markers = np.zeros(img.shape, dtype=np.int64)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    lab = watershed(-dist, markers, mask=fg)
    return _clean(lab, min_size)


def felzenszwalb(
    image: Any,
    *,
    scale: float = 100.0,
    sigma: float = 0.8,
    min_size: int = 20,
    fg_sigma: float = 1.0,
    polarity: str = "bright",
) -> np.ndarray:
    """Felzenszwalb-Huttenlocher graph segmentation inside the Otsu foreground."""
    from skimage.segmentation import felzenszwalb as fz

    img = _gray(image)
    fg = _foreground(img, fg_sigma, polarity)
    seg = fz(img, scale=scale, sigma=sigma, min_size=min_size) + 1
    return _clean(np.where(fg, seg, 0), min_size)


def slic(
    image: Any,
    *,
    pixels_per_segment: int = 200,
    compactness: float = 0.1,
    fg_sigma: float = 1.0,
    polarity: str = "bright",
    min_size: int = 16,
) -> np.ndarray:
    """SLIC superpixels inside the Otsu foreground."""
    from skimage.segmentation import slic as sk_slic

    img = _gray(image)
    fg = _foreground(img, fg_sigma, polarity)
    if not fg.any():
        return np.zeros(img.shape, dtype=np.int64)
    n = max(1, int(fg.sum() / pixels_per_segment))
    seg = sk_slic(img, n_segments=n, compactness=compactness, mask=fg, channel_axis=None, start_label=1)
    return _clean(seg, min_size)


PIPELINES: dict[str, Callable[..., np.ndarray]] = {
    "otsu_watershed": otsu_watershed,
    "felzenszwalb": felzenszwalb,
    "slic": slic,
}

#: the parameter grids :func:`tune` searches.
GRIDS: dict[str, dict[str, Sequence[Any]]] = {
    "otsu_watershed": {"sigma": [0.0, 1.0, 2.0], "min_distance": [3, 5, 8, 12], "polarity": ["bright", "both"]},
    "felzenszwalb": {"scale": [30.0, 100.0, 300.0, 1000.0], "sigma": [0.5, 1.0], "polarity": ["bright", "both"]},
    "slic": {"pixels_per_segment": [50, 150, 400], "compactness": [0.01, 0.1, 1.0], "polarity": ["bright", "both"]},
}


def segment_classic(name: str, image: Any, **params: Any) -> np.ndarray:
    """Run the classic pipeline ``name`` (see :data:`PIPELINES`) on one image."""
    check_choice(name, "name", "segment_classic", tuple(PIPELINES))
    return PIPELINES[name](image, **params)


def tune(
    name: str, images: Sequence[Any], labels: Sequence[Any], grid: dict[str, Sequence[Any]] | None = None
) -> tuple[dict[str, Any], float]:
    """Grid-search a pipeline's parameters for the best pooled AP at IoU 0.5.

    Args:
        name: a key of :data:`PIPELINES`.
        images: training images.
        labels: their instance maps.
        grid: parameter lists (default :data:`GRIDS` ``[name]``).

    Returns:
        ``(best parameters, their AP50 on the given images)``.
    """
    check_choice(name, "name", "tune", tuple(PIPELINES))
    grid = GRIDS[name] if grid is None else grid
    keys = list(grid)
    best: tuple[dict[str, Any], float] = ({}, -1.0)
    gts = [np.asarray(lab) for lab in labels]
    for values in itertools.product(*(grid[k] for k in keys)):
        params = dict(zip(keys, values))
        preds = [PIPELINES[name](img, **params) for img in images]
        score = matching_dataset(gts, preds, 0.5)["ap"]
        if score > best[1]:
            best = (params, float(score))
    return best
