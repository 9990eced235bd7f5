"""Synthetic instance-segmentation scenes: textured shapes on textured backgrounds.

Every scene is drawn from a generator seeded with ``(seed, index)``, so item ``i`` is the same
on every call, in every process, whatever was drawn before it. Textures come from the
photographs bundled with scikit-image (brick, grass, gravel, ...), so nothing is downloaded.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from embedseg._validation import check_float, check_int
from embedseg.errors import require

__all__ = ["SyntheticScenes", "SHAPES", "TEXTURES"]

#: shape families drawn by :class:`SyntheticScenes`.
SHAPES = ("ellipse", "polygon", "star", "blob")
#: scikit-image bundled grayscale images used as textures.
TEXTURES = ("brick", "grass", "gravel", "text", "page", "camera", "moon", "coins")
#: the first textures serve as backgrounds: clutter without object-like blobs.
_N_BACKGROUNDS = 5


@lru_cache(maxsize=1)
def _textures() -> tuple[np.ndarray, ...]:
    """The bundled texture images as float32 in [0, 1], loaded once per process."""
    data = require("skimage.data", "image")
    out = []
    for name in TEXTURES:
        img = np.asarray(getattr(data, name)(), dtype=np.float32)
        if img.ndim == 3:
            img = img[..., :3].mean(axis=-1)
        img = (img - img.min()) / max(float(img.max() - img.min()), 1e-6)
        out.append(img)
    return tuple(out)


def _texture_patch(
    rng: np.random.Generator, size: int, exclude: int = -1, background: bool = False
) -> tuple[np.ndarray, int]:
    """A size x size random crop of a random texture (rescaled, flipped), and its index."""
    textures = _textures()
    pool = range(_N_BACKGROUNDS) if background else range(len(textures))
    choices = [i for i in pool if i != exclude]
    t = int(rng.choice(choices))
    tex = textures[t]
    # Stride 1 or 2 changes the texture's scale; crops stay inside the source image.
    stride = int(rng.integers(1, 3)) if min(tex.shape) >= 2 * size + 2 else 1
    span = size * stride
    if min(tex.shape) < span:
        reps = int(np.ceil(span / min(tex.shape)))
        tex = np.tile(tex, (reps, reps))
    y = int(rng.integers(0, tex.shape[0] - span + 1))
    x = int(rng.integers(0, tex.shape[1] - span + 1))
    patch = tex[y : y + span : stride, x : x + span : stride]
    patch = np.rot90(patch, int(rng.integers(0, 4)))
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    return np.ascontiguousarray(patch), t


def _outline(rng: np.random.Generator, kind: str, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Polygon vertices (dy, dx) around the origin for a shape of the given family."""
    if kind == "ellipse":
        n = 48
        theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
        a, b = radius, radius * rng.uniform(0.5, 1.0)
        phi = rng.uniform(0, np.pi)
        x, y = a * np.cos(theta), b * np.sin(theta)
        return x * np.sin(phi) + y * np.cos(phi), x * np.cos(phi) - y * np.sin(phi)
    if kind == "polygon":
        n = int(rng.integers(3, 8))
        theta = np.sort(rng.uniform(0, 2 * np.pi, n))
        # Spread the vertices so the polygon is not a sliver.
        theta = np.linspace(0, 2 * np.pi, n, endpoint=False) * 0.5 + theta * 0.5
        r = radius * rng.uniform(0.75, 1.0, n)
    elif kind == "star":
        n = int(rng.integers(4, 8))
        theta = np.linspace(0, 2 * np.pi, 2 * n, endpoint=False) + rng.uniform(0, np.pi)
        r = np.where(np.arange(2 * n) % 2 == 0, radius, radius * rng.uniform(0.45, 0.7))
    else:  # blob: a smooth random radial function
        n = 64
        theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
        r = np.ones(n)
        for k in range(2, 5):
            r += rng.uniform(0, 0.25 / (k - 1)) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        r = radius * r / r.max()
    return r * np.sin(theta), r * np.cos(theta)


class SyntheticScenes(torch.utils.data.Dataset):
    """Random textured shapes (ellipses, polygons, stars, blobs) on textured backgrounds.

    Objects are filled with textures cut from scikit-image's bundled photographs, brighter or
    darker than the background (so no global threshold finds them all), fading towards their
    rims, and placed with touching neighbours and occlusion (later objects cover
    earlier ones); counts vary between ``min_objects`` and ``max_objects``. Objects covered to
    fewer than ``min_area`` pixels are dropped from the scene (image and labels alike).

    Args:
        n_images: number of scenes.
        size: height and width of each scene in pixels.
        max_objects: largest number of objects drawn in a scene.
        min_objects: smallest number of objects drawn in a scene.
        radius: (min, max) object radius in pixels, the same at every scene size, so larger
            scenes hold more objects of the same scale.
        touching: probability that an object is placed against an earlier one.
        noise: standard deviation of the additive Gaussian noise.
        min_area: objects left with fewer visible pixels are removed.
        seed: base seed; item ``i`` is drawn from ``numpy.random.default_rng([seed, i])``.

    Returns (per item):
        ``{"image": (1, size, size) float32 in [0, 1], "labels": (size, size) int64}`` with
        instance ids 1..n and 0 for background.

    Example:
        >>> ds = SyntheticScenes(4, size=64, max_objects=5, seed=0)
        >>> item = ds[0]
        >>> item["image"].shape, item["labels"].shape
        (torch.Size([1, 64, 64]), torch.Size([64, 64]))
        >>> bool((ds[0]["labels"] == item["labels"]).all())
        True
    """

    def __init__(
        self,
        n_images: int,
        size: int = 128,
        max_objects: int = 12,
        *,
        min_objects: int = 1,
        radius: tuple[float, float] = (6.0, 14.0),
        touching: float = 0.4,
        noise: float = 0.03,
        min_area: int = 12,
        seed: int = 0,
    ) -> None:
        owner = "SyntheticScenes"
        self.n_images = check_int(n_images, "n_images", owner, 0)
        self.size = check_int(size, "size", owner, 16)
        self.max_objects = check_int(max_objects, "max_objects", owner, 0)
        self.min_objects = check_int(min_objects, "min_objects", owner, 0, self.max_objects)
        if not (isinstance(radius, (tuple, list)) and len(radius) == 2):
            raise TypeError(
                f"The 'radius' parameter of {owner} must be a (min, max) pair of floats. "
                f"Got {radius!r} instead."
            )
        lo = check_float(radius[0], "radius[0]", owner, 1.0, self.size / 2)
        hi = check_float(radius[1], "radius[1]", owner, lo, self.size / 2)
        self.radius = (lo, hi)
        self.touching = check_float(touching, "touching", owner, 0.0, 1.0)
        self.noise = check_float(noise, "noise", owner, 0.0)
        self.min_area = check_int(min_area, "min_area", owner, 1)
        self.seed = check_int(seed, "seed", owner, 0)

    def __len__(self) -> int:
        return self.n_images

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"SyntheticScenes indices must be ints. Got {index!r} instead.")
        if index < 0:
            index += self.n_images
        if not 0 <= index < self.n_images:
            raise IndexError(f"index {index} is out of range for {self.n_images} scenes")
        image, labels = self.render(int(index))
        return {"image": torch.from_numpy(image)[None], "labels": torch.from_numpy(labels)}

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw scene ``index``: a (size, size) float32 image and int64 instance map."""
        draw = require("skimage.draw", "image")
        ndi = require("scipy.ndimage", "image")
        rng = np.random.default_rng([self.seed, index])
        s = self.size
        background, bg_tex = _texture_patch(rng, s, background=True)
        lo, hi = rng.uniform(0.25, 0.45), rng.uniform(0.1, 0.25)
        image = (lo + hi * background).astype(np.float32)
        level = lo + hi * float(background.mean())
        labels = np.zeros((s, s), dtype=np.int64)
        n_objects = int(rng.integers(self.min_objects, self.max_objects + 1))
        centers: list[tuple[float, float, float]] = []
        for k in range(1, n_objects + 1):
            radius = rng.uniform(*self.radius)
            if centers and rng.random() < self.touching:
                cy, cx, cr = centers[int(rng.integers(len(centers)))]
                angle = rng.uniform(0, 2 * np.pi)
                dist = (cr + radius) * rng.uniform(0.8, 1.0)
                cy, cx = cy + dist * np.sin(angle), cx + dist * np.cos(angle)
            else:
                cy, cx = rng.uniform(0, s), rng.uniform(0, s)
            centers.append((cy, cx, radius))
            kind = SHAPES[int(rng.integers(len(SHAPES)))]
            dy, dx = _outline(rng, kind, radius)
            rr, cc = draw.polygon(cy + dy, cx + dx, shape=(s, s))
            if rr.size == 0:
                continue
            shape = np.zeros((s, s), dtype=bool)
            shape[rr, cc] = True
            # Shading falls towards the rim so that touching objects show a boundary.
            depth = ndi.distance_transform_edt(np.pad(shape, 1))[1:-1, 1:-1]
            shade = 0.5 + 0.5 * np.clip(depth / max(0.45 * radius, 1.0), 0, 1)
            texture, _ = _texture_patch(rng, s, exclude=bg_tex)
            # Objects are brighter or darker than the background, so no global threshold
            # finds them all; towards the rim they fade to the background level.
            delta = rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.45)
            gain = rng.uniform(0.1, 0.3)
            fill = level + (delta + gain * (texture - float(texture.mean()))) * shade
            image[shape] = fill[shape]
            labels[shape] = k
        # Drop objects occluded down to a sliver: paint the background back over them.
        ids, counts = np.unique(labels, return_counts=True)
        for i, c in zip(ids, counts):
            if i != 0 and c < self.min_area:
                gone = labels == i
                image[gone] = (lo + hi * background)[gone]
                labels[gone] = 0
        # Sequential ids 1..n in drawing order.
        present = np.unique(labels)
        lut = np.zeros(n_objects + 1, dtype=np.int64)
        lut[present] = np.arange(len(present))
        labels = lut[labels]
        if self.noise > 0:
            image = image + rng.normal(0.0, self.noise, image.shape).astype(np.float32)
        return np.clip(image, 0.0, 1.0).astype(np.float32), labels

    def __repr__(self) -> str:
        return (
            f"SyntheticScenes(n_images={self.n_images}, size={self.size}, "
            f"max_objects={self.max_objects}, seed={self.seed})"
        )
