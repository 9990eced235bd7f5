"""Trained instance-segmentation models: :class:`ImageModel` adds ``segment``, ``segment_batch``
and ``tune_decoding`` to :class:`embedseg.Model`.

Each is the model's one inference path (:class:`embedseg.inference.InferenceEngine`) on images
given as arrays: ``model.evaluate`` scores exactly what ``segment`` returns.
"""

from __future__ import annotations

import copy
import itertools
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from embedseg._validation import check_float, check_int
from embedseg.model import Model
from embedseg.networks import embeddings_of

from .folder import _item_pair
from .imageio import AUTO, to_label_tensor
from .metrics import matching_dataset

__all__ = ["ImageModel"]


def _counts(n_instances: Any, n_images: int) -> list[int | None]:
    """One instance count (or None) per image from one count for all or a sequence."""
    if isinstance(n_instances, (np.ndarray, torch.Tensor)) and n_instances.ndim == 0:
        n_instances = n_instances.item()  # one count for all, given as a 0-d array
    if isinstance(n_instances, (list, tuple, np.ndarray, torch.Tensor)):
        counts = [None if c is None else (c.item() if hasattr(c, "item") else c) for c in list(n_instances)]
    else:
        counts = [n_instances] * n_images
    if len(counts) != n_images:
        raise ValueError(f"'n_instances' must give one count per image ({n_images}). Got {len(counts)} instead.")
    for i, n in enumerate(counts):
        if n is not None:
            check_int(n, f"n_instances[{i}]" if n_images > 1 or isinstance(n_instances, (list, tuple)) else "n_instances", "segment", 0)
    return counts


class ImageModel(Model):
    """A trained model of the image domain (what :func:`embedseg.fit` returns for
    ``domain="image"`` and :func:`embedseg.load` gives for such a folder).

    Example:
        >>> import embedseg
        >>> model = embedseg.load("pretrained/image-shapes")  # doctest: +SKIP
        >>> labels = model.segment(image)                       # doctest: +SKIP
    """

    def segment(self, image: Any, n_instances: int | None = None, *, channel_axis: Any = AUTO) -> torch.Tensor:
        """Instance labels of one image of any size.

        Images larger than the domain's ``tile_size`` are segmented tile by tile and the tiles'
        instances stitched (memory is bounded by a tile).

        Args:
            image: (H, W), (C, H, W) or (H, W, C) array or tensor; any dtype and range (the
                intensities are normalized by their percentiles, so any scale works).
            n_instances: the number of instances wanted; None = automatic.
            channel_axis: the axis holding channels (scikit-image's convention): None for a
                2-D image, an int for a 3-D one; "auto" (default) takes the last axis of a 3-D
                array when it has 3 or 4 entries and refuses layouts it cannot tell apart (see
                :func:`~domains.image.imageio.to_image_tensor`).

        Returns:
            (H, W) int64 tensor on the CPU: 0 = background, instances 1..n.

        Raises:
            ValueError, TypeError: a malformed image (wrong rank, an ambiguous channel layout,
                NaN, empty, constant) or bad ``n_instances``.
        """
        counts = _counts(n_instances, 1)
        return self._segment([image], counts, ["image"], batch_size=1, channel_axis=channel_axis)[0]

    def segment_batch(
        self,
        images: Sequence[Any],
        n_instances: int | Sequence[int | None] | None = None,
        *,
        batch_size: int = 8,
        channel_axis: Any = AUTO,
    ) -> list[torch.Tensor]:
        """:meth:`segment` for a sequence of images (sizes may differ).

        Images of the same size go through the network together, ``batch_size`` at a time;
        each label map is the one :meth:`segment` gives.

        Args:
            images: a sequence of images, or a (B, C, H, W) / (B, H, W) array or tensor.
            n_instances: one count for all, one per image (a sequence, array or tensor), or
                None.
            batch_size: most images per network pass.
            channel_axis: as for :meth:`segment`, the same for every image.
        """
        check_int(batch_size, "batch_size", "segment_batch", 1)
        if isinstance(images, (np.ndarray, torch.Tensor)):
            if images.ndim not in (3, 4):
                raise ValueError(
                    f"'images' given as one array or tensor must be a stack (B, H, W) or (B, C, H, W). "
                    f"Got shape {tuple(images.shape)} instead; use segment() for a single image."
                )
        elif isinstance(images, (str, bytes, dict)) or not isinstance(images, Iterable):
            raise TypeError(
                f"'images' must be a sequence of images or a (B, H, W) / (B, C, H, W) array or tensor. "
                f"Got {type(images).__name__} instead."
            )
        images = list(images)  # a stacked array or tensor is a batch along its first axis
        counts = _counts(n_instances, len(images))
        return self._segment(images, counts, [f"images[{i}]" for i in range(len(images))], batch_size, channel_axis)

    def _segment(
        self, images: list[Any], counts: list[int | None], names: list[str], batch_size: int, channel_axis: Any = AUTO
    ) -> list[torch.Tensor]:
        """Prepare, group by size, predict through the engine, warn about shortfalls."""
        domain = self.domain
        prepared = [domain.prepare_image(img, name, channel_axis, strict=True) for img, name in zip(images, names)]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, x in enumerate(prepared):
            by_shape.setdefault(tuple(x.shape), []).append(i)
        engine = self.engine()
        out: list[torch.Tensor | None] = [None] * len(prepared)
        for same in by_shape.values():
            for start in range(0, len(same), batch_size):
                chunk = same[start : start + batch_size]
                encoded = engine.encode(domain.collate_prepared([prepared[i] for i in chunk]))
                encoded.context["n_instances"] = [counts[i] for i in chunk]
                for i, lab in zip(chunk, engine.predict_encoded(encoded)):
                    out[i] = lab
        for i, (lab, n) in enumerate(zip(out, counts)):
            found = int(lab.max()) if lab.numel() else 0
            if n is not None and found < n:
                what = "image" if len(out) == 1 and names[0] == "image" else names[i]
                warnings.warn(
                    f"'n_instances' asked for {n} instances, but {what} holds only {found} regions of "
                    f"at least min_size={domain.min_size} foreground pixels that can be told apart.",
                    stacklevel=3,
                )
        return out  # type: ignore[return-value]  # every slot is filled above

    def embed_image(self, image: Any, *, channel_axis: Any = AUTO) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The embeddings that :meth:`segment` clusters for one image (its inference views
        merged), e.g. to draw them.

        Args:
            image: as for :meth:`segment`, at most the domain's ``tile_size`` a side.

        Returns:
            (H*W, dim) float embeddings of unit norm, and (H*W,) foreground probabilities (None
            without a foreground head).
        """
        domain = self.domain
        x = domain.prepare_image(image, "image", channel_axis, strict=True)
        if max(x.shape[1:]) > domain.tile_size:
            raise ValueError(
                f"'image' must be at most tile_size={domain.tile_size} pixels a side to embed whole. "
                f"Got {tuple(x.shape[1:])}."
            )
        encoded = self.engine().encode(domain.collate_prepared([x]))
        output = self.embed(encoded)
        fg = domain._foreground(output)
        return embeddings_of(output)[0], None if fg is None else fg[0]

    def predict(self, x: Any, **options: Any) -> torch.Tensor:
        """Same as :meth:`segment`."""
        return self.segment(x, **options)

    # Settings :meth:`tune_decoding` tries by default: seed consistency decides which pixels seed
    # an instance (higher keeps seeds off the seams between touching objects), the merge
    # threshold how alike adjacent fragments must be to join, the split threshold how unlike
    # its instance a part must be to stand alone (-1: never).
    DECODING_GRID: ClassVar[dict[str, tuple[Any, ...]]] = {
        "seed_consistency": (0.95, 0.97, 0.98, 0.99),
        "merge_threshold": (0.5, 0.6),
        "split_threshold": (-1.0, 0.4, 0.5, 0.6),
    }

    def tune_decoding(self, items: Sequence[Any], grid: dict[str, Sequence[Any]] | None = None) -> dict[str, Any]:
        """Choose the decoding settings with the best AP50 (ties: the best AP75) on annotated
        images, and keep them in the model (they are saved with it).

        The network and the embedding grouping run once per image; only the decoding is
        repeated for each combination. On a full tie the current settings stay. Tune on
        images that are not the ones you report scores on (a classic pipeline tuned on the
        same images is the fair comparison).

        Args:
            items: annotated images: dicts {"image", "labels"} or (image, labels) pairs.
            grid: values to try per setting, among "seed_consistency", "merge_threshold",
                "split_threshold" and "min_size"; every combination is scored. None:
                :attr:`DECODING_GRID`.

        Returns:
            ``{"settings": {...}, "ap50": ..., "ap75": ...}``: the chosen settings (now the
            domain's) and their scores on ``items``.
        """
        domain = self.domain
        if grid is not None and not isinstance(grid, dict):
            raise TypeError(f"'grid' must be a dict of setting -> values to try. Got {type(grid).__name__} instead.")
        grid = dict(self.DECODING_GRID if grid is None else grid)
        checks = {
            "seed_consistency": lambda v: check_float(v, "seed_consistency", "tune_decoding", 0.0, 1.0),
            "merge_threshold": lambda v: check_float(v, "merge_threshold", "tune_decoding", -1.0, 1.0),
            "min_size": lambda v: check_int(v, "min_size", "tune_decoding", 1),
            "split_threshold": lambda v: check_float(v, "split_threshold", "tune_decoding", -1.0, 1.0),
        }
        unknown = sorted(set(grid) - set(checks))
        if not grid or unknown:
            raise ValueError(
                f"'grid' must map some of {sorted(checks)} to the values to try. Got keys {sorted(grid)} instead."
            )
        for name, values in grid.items():
            values = None if isinstance(values, (str, bytes)) else list(np.atleast_1d(np.asarray(values)).tolist())
            if not values:
                raise ValueError(f"'grid[{name!r}]' must be a non-empty list of values. Got {grid[name]!r} instead.")
            grid[name] = [checks[name](v) for v in values]
        if isinstance(items, (Mapping, str, bytes)) or not isinstance(items, Iterable):
            raise TypeError(
                "'items' must be a sequence of annotated images ({'image', 'labels'} dicts or "
                f"(image, labels) pairs). Got {type(items).__name__} instead"
                + ("; wrap a single item in a list." if isinstance(items, Mapping) else ".")
            )
        items = list(items)
        if not items:
            raise ValueError("'items' must hold at least one annotated image. Got none.")
        engine = self.engine()
        truths, solved = [], []
        for i, item in enumerate(items):
            image, labels = _item_pair(item)
            if labels is None:
                raise ValueError(f"'items[{i}]' must have labels to tune against. Got an image without labels.")
            x = domain.prepare_image(image, f"items[{i}] image", strict=True)
            truths.append(to_label_tensor(labels, tuple(x.shape[1:]), f"items[{i}] labels").numpy())
            encoded = engine.encode(domain.collate_prepared([x]))
            tiles = domain.tiles(encoded)
            # The network and the grouping run once per image (tile); only decoding repeats.
            parts = [(tile, *engine.solve(tile)) for tile in (tiles if tiles is not None else [encoded])]
            solved.append((encoded, tiles is not None, parts))
        current = domain._decoding_settings()
        best, best_key = None, None
        for combo in itertools.product(*grid.values()):
            trial = copy.copy(domain)
            for name, value in zip(grid, combo):
                setattr(trial, name, value)
            preds = []
            for encoded, tiled, parts in solved:
                decoded = [(tile, trial.decode(tile, labels, proba, output)) for tile, output, labels, proba in parts]
                preds.append((trial.stitch(encoded, decoded) if tiled else decoded[0][1])[0].numpy())
            m = matching_dataset(truths, preds, [0.5, 0.75])
            key = (m[0.5]["ap"], m[0.75]["ap"])
            is_current = all(current[name] == value for name, value in zip(grid, combo))
            if best_key is None or key > best_key or (key == best_key and is_current):
                best, best_key = dict(zip(grid, combo)), key
        for name, value in best.items():
            setattr(domain, name, value)
        return {"settings": best, "ap50": best_key[0], "ap75": best_key[1]}
