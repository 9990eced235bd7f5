"""The image domain adapter: instance segmentation by deep clustering of pixel embeddings.

Items are ``{"image": (C, H, W) | (H, W) | (H, W, C), "labels": (H, W) instance map}`` dicts or
``(image, labels)`` tuples (labels may be absent at inference). Features are percentile-
normalized intensities (plus optional coordinate channels); targets are instance ids with the
background as its own part or ignored; weights balance small and large instances. Decoding
handles hundreds of instances (see :mod:`domains.image.decode`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, ClassVar, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from embedseg._validation import check_bool, check_choice, check_float, check_int
from embedseg.domain import Domain, EncodedBatch
from embedseg.networks import embeddings_of

from .decode import decode_instances
from .folder import Augmented, _item_pair, make_augmentation
from .imageio import AUTO, normalize_intensity, to_channels, to_image_tensor, to_label_tensor
from .tiling import Stitcher, tile_windows

__all__ = ["ImageDomain"]


def _sequential(labels: torch.Tensor) -> torch.Tensor:
    """Ids mapped to 0..n (0 kept for background) so that gaps and 16-bit ids cost nothing."""
    ids, inverse = torch.unique(labels, return_inverse=True)
    if ids.numel() and int(ids[0]) != 0:
        inverse = inverse + 1
    return inverse.reshape(labels.shape)


# Registered as "image" by embedseg.domain (by module path, imported on first use).
class ImageDomain(Domain):
    """Instance segmentation of 2-D images (gray, RGB, RGBA; 8-bit, 16-bit or float).

    Args:
        channels: 1 (RGB is averaged to gray) or 3 (gray is repeated); alpha is dropped.
        coords: add two normalized coordinate channels (y, x) to the features.
        background: "part" (background is one more part of the partition the embeddings learn)
            or "ignore" (only instances shape the embeddings; the foreground head alone finds
            background).
        weighting: "balanced" (each pixel weighs 1/sqrt(size of its part), so every part
            contributes equally to the affinity loss whatever its size; Wang et al. 2018),
            "contact" (balanced, and pixels within ``CONTACT_RADIUS`` of another instance weigh
            ``1 + CONTACT_GAIN`` times more: the borders between touching objects, where
            merges arise, as U-Net's border weights for touching cells) or "none".
        local_window: side (pixels) of the square windows of a local affinity term added to
            the training loss; 0: none. The affinity loss over a whole image asks every pair of
            parts to be orthogonal, and with dozens of parts in a few dimensions it cannot be:
            a small object then weighs little against the rest and may keep its touching
            neighbour's embedding, which decoding merges. The local term is the same loss on
            each window (windows on a grid at a random offset each step, every window its own
            item, weighted like the whole image by ``weighting``): only parts that are near one
            another compete there, so telling neighbours apart counts for more. Training only;
            inference is unchanged.
        augment: wrap map-style training sets in flips, rotations and intensity changes.
        epoch_items: with ``augment``, small training sets are repeated (each repeat freshly
            augmented) so that one epoch holds at least this many items.
        n_groups: embedding groups of the over-segmentation before region merging.
        fg_threshold: foreground probability above which a pixel belongs to an object.
        merge_threshold: cosine similarity above which adjacent fragments merge.
        seed_consistency: 3 x 3 embedding agreement above which a pixel seeds an instance.
        min_size: instances smaller than this (pixels) are merged or dropped.
        split_threshold: cosine similarity with their instance's mean embedding below which
            parts of an instance are split off as instances of their own (-1: never).
        tile_size: images with a side above this are segmented tile by tile.
        tile_overlap: overlap of neighbouring tiles (pixels); each tile keeps its centre.
        flip_views: views of the image embedded at inference: 1 (as given), 2 (and mirrored
            left-right) or 4 (and mirrored top-bottom, and both). Each view's embeddings are
            mapped back, and the views are concatenated and scaled by 1/sqrt(views): still unit
            norm, and the cosine affinity of two pixels becomes the mean of their affinities
            over the views, which steadies the seams between touching objects; foreground
            probabilities are averaged. Costs one network pass per view, and grouping and
            decoding work on views x dim embeddings. Applies to ``segment``,
            ``tune_decoding``, ``evaluate`` and validation metrics alike. Not used with
            ``coords`` (coordinate channels do not mirror with the content).
        percentiles: the (low, high) intensity percentiles mapped to 0 and 1.

    Example:
        >>> import embedseg
        >>> from domains.image import SyntheticScenes
        >>> model = embedseg.fit(SyntheticScenes(64), domain="image", max_minutes=2)  # doctest: +SKIP
        >>> model.segment(image)  # (H, W) int64 labels                                 # doctest: +SKIP
    """

    name: ClassVar[str] = "image"
    default_loss: ClassVar[str] = "affinity"
    primary_metric: ClassVar[str | None] = "ap50"
    primary_metric_higher_is_better: ClassVar[bool] = True
    model_class: ClassVar[Any] = "domains.image.model:ImageModel"
    # Decoding reads the groups of foreground pixels only (the clustered ones).
    labels_every_point: ClassVar[bool] = False

    # "contact" weighting: how near another instance a pixel counts as on a contact border,
    # and how much more it then weighs.
    CONTACT_RADIUS = 2
    CONTACT_GAIN = 4.0

    def __init__(
        self,
        *,
        channels: int = 1,
        coords: bool = False,
        background: str = "part",
        weighting: str = "balanced",
        local_window: int = 0,
        augment: bool = True,
        epoch_items: int = 512,
        n_groups: int = 12,
        fg_threshold: float = 0.5,
        merge_threshold: float = 0.5,
        seed_consistency: float = 0.95,
        min_size: int = 16,
        split_threshold: float = 0.5,
        tile_size: int = 512,
        tile_overlap: int = 64,
        percentiles: tuple[float, float] = (1.0, 99.8),
        flip_views: int = 2,
    ) -> None:
        owner = "ImageDomain"
        check_choice(channels, "channels", owner, (1, 3))
        check_bool(coords, "coords", owner)
        check_choice(background, "background", owner, ("part", "ignore"))
        check_choice(weighting, "weighting", owner, ("balanced", "contact", "none"))
        check_int(local_window, "local_window", owner, 0)
        if 0 < local_window < 4:
            raise ValueError(
                f"The 'local_window' parameter of {owner} must be 0 (no local term) or a window "
                f"side of at least 4 pixels. Got {local_window!r} instead."
            )
        check_bool(augment, "augment", owner)
        check_int(epoch_items, "epoch_items", owner, 1)
        check_int(n_groups, "n_groups", owner, 1)
        check_float(fg_threshold, "fg_threshold", owner, 0.0, 1.0)
        check_float(merge_threshold, "merge_threshold", owner, -1.0, 1.0)
        check_float(seed_consistency, "seed_consistency", owner, 0.0, 1.0)
        check_int(min_size, "min_size", owner, 1)
        check_float(split_threshold, "split_threshold", owner, -1.0, 1.0)
        check_int(tile_size, "tile_size", owner, 32)
        check_int(tile_overlap, "tile_overlap", owner, 0, tile_size // 2 - 1)
        check_int(flip_views, "flip_views", owner, 1)
        check_choice(flip_views, "flip_views", owner, (1, 2, 4))
        if not (isinstance(percentiles, (tuple, list)) and len(percentiles) == 2):
            raise TypeError(
                f"The 'percentiles' parameter of {owner} must be a (low, high) pair. Got {percentiles!r} instead."
            )
        lo = check_float(percentiles[0], "percentiles[0]", owner, 0.0, 100.0)
        check_float(percentiles[1], "percentiles[1]", owner, lo, 100.0, closed="right")
        self.channels = channels
        self.coords = coords
        self.background = background
        self.weighting = weighting
        self.local_window = local_window
        self.augment = augment
        self.epoch_items = epoch_items
        self.n_groups = n_groups
        self.fg_threshold = fg_threshold
        self.merge_threshold = merge_threshold
        self.seed_consistency = seed_consistency
        self.min_size = min_size
        self.split_threshold = split_threshold
        self.tile_size = tile_size
        self.tile_overlap = tile_overlap
        self.percentiles = tuple(percentiles)
        self.flip_views = flip_views

    def get_config(self) -> dict[str, Any]:
        return {
            "channels": self.channels,
            "coords": self.coords,
            "background": self.background,
            "weighting": self.weighting,
            "local_window": self.local_window,
            "augment": self.augment,
            "epoch_items": self.epoch_items,
            "n_groups": self.n_groups,
            **self._decoding_settings(),
            "tile_size": self.tile_size,
            "tile_overlap": self.tile_overlap,
            "percentiles": list(self.percentiles),
            "flip_views": self.flip_views,
        }

    # -- data -----------------------------------------------------------------------------------
    def prepare_image(self, image: Any, name: str = "image", channel_axis: Any = AUTO, strict: bool = False) -> torch.Tensor:
        """(C, H, W) float32 features of one raw image: channel conversion + normalization.

        ``channel_axis`` says where the image's channels are (see
        :func:`~domains.image.imageio.to_image_tensor`); with ``strict`` a constant image is an
        error naming ``name`` (what a user asks to segment), else it maps to zeros (a flat crop
        in training).
        """
        x = to_channels(to_image_tensor(image, name, channel_axis), self.channels)
        return normalize_intensity(x, *self.percentiles, name=name if strict else None)

    def training_data(self, dataset: Any) -> Any:
        """The training set as the trainer should see it: augmented and, when small, repeated.

        Iterable datasets and ``augment=False`` pass through unchanged.
        """
        if not self.augment or isinstance(dataset, torch.utils.data.IterableDataset):
            return dataset
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")) or len(dataset) == 0:
            return dataset
        repeats = max(1, math.ceil(self.epoch_items / len(dataset)))
        return Augmented(dataset, make_augmentation(), repeats=repeats)

    def load_dataset(self, path: str, split: str) -> Any:
        """An :class:`~domains.image.InstanceFolder` at ``path`` (``images/`` + ``masks/``);
        the training split is augmented by :meth:`training_data`, not here."""
        from .folder import InstanceFolder

        return InstanceFolder(path)

    def collate(self, items: Sequence[Any]) -> dict[str, Any]:
        """Normalize, convert and pad items to one batch.

        Returns:
            ``{"image": (B, C, H, W) float32, "valid": (B, H, W) bool, "labels": (B, H, W)
            int64 with ids 0..n per item (0 = background, -1 = padding) or None, "sizes":
            [(h, w), ...]}``.
        """
        items = list(items)
        if not items:
            raise ValueError("'items' must hold at least one image.")
        images, labels = [], []
        for i, item in enumerate(items):
            raw_image, raw_labels = _item_pair(item)
            x = self.prepare_image(raw_image, f"items[{i}]['image']")
            images.append(x)
            if raw_labels is None:
                labels.append(None)
            else:
                lab = to_label_tensor(raw_labels, tuple(x.shape[-2:]), f"items[{i}]['labels']")
                labels.append(_sequential(lab))
        annotated = [lab is not None for lab in labels]
        if any(annotated) and not all(annotated):
            raise ValueError("Either every item in a batch has 'labels' or none has.")
        return self.collate_prepared(images, labels if all(annotated) else None)

    def batch_key(self, item: Any) -> Any:
        """The image's shape: images of one size share a batch (a convolution near padding
        would see what the image alone does not)."""
        image, _ = _item_pair(item)
        return tuple(np.shape(image))

    def collate_prepared(self, images: Sequence[torch.Tensor], labels: Sequence[torch.Tensor] | None = None) -> dict[str, Any]:
        """:meth:`collate` of images already through :meth:`prepare_image` (and their label
        maps with ids 0..n, or None): zero padding to the largest size."""
        h = max(x.shape[1] for x in images)
        w = max(x.shape[2] for x in images)
        n = len(images)
        image = torch.zeros(n, self.channels, h, w)
        valid = torch.zeros(n, h, w, dtype=torch.bool)
        lab_out = torch.full((n, h, w), -1, dtype=torch.int64) if labels is not None else None
        for i, x in enumerate(images):
            image[i, :, : x.shape[1], : x.shape[2]] = x
            valid[i, : x.shape[1], : x.shape[2]] = True
            if lab_out is not None:
                lab_out[i, : x.shape[1], : x.shape[2]] = labels[i]
        sizes = [(int(x.shape[1]), int(x.shape[2])) for x in images]
        return {"image": image, "valid": valid, "labels": lab_out, "sizes": sizes}

    def _features(self, image: torch.Tensor) -> torch.Tensor:
        """Network input: the image, plus coordinate channels when enabled."""
        if not self.coords:
            return image
        b, _, h, w = image.shape
        ys = torch.linspace(-1, 1, h, device=image.device)
        xs = torch.linspace(-1, 1, w, device=image.device)
        grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"))  # (2, H, W)
        return torch.cat([image, grid.expand(b, -1, -1, -1)], dim=1)  # (B, C + 2, H, W)

    def encode(self, batch: dict[str, Any], device: torch.device) -> EncodedBatch:
        image = batch["image"].to(device, non_blocking=True)  # (B, C, H, W)
        valid = batch["valid"].to(device, non_blocking=True)  # (B, H, W)
        b, _, h, w = image.shape
        mask = valid.reshape(b, h * w)  # (B, N)
        context: dict[str, Any] = {"sizes": batch["sizes"], "shape": (h, w)}
        labels = weights = None
        if batch.get("labels") is not None:
            gt = batch["labels"].to(device, non_blocking=True)  # (B, H, W)
            context["gt"] = gt
            labels = gt.reshape(b, h * w).clone()  # (B, N)
            context["fg_target"] = (labels > 0).float()
            if self.background == "ignore":
                labels[labels == 0] = -1
            labels[~mask] = -1
            weights = None
            if self.weighting != "none":
                boost = None
                if self.weighting == "contact":
                    touching = self.contact_pixels(gt, self.CONTACT_RADIUS).reshape(b, h * w)
                    boost = 1.0 + self.CONTACT_GAIN * touching.float()
                weights = self._weights(labels, boost)
                context["boost"] = boost
        return EncodedBatch(
            features=self._features(image), mask=mask, labels=labels, weights=weights, context=context
        )

    @staticmethod
    def _weights(labels: torch.Tensor, boost: torch.Tensor | None = None) -> torch.Tensor:
        """1/sqrt(part size) per pixel, times ``boost`` (B, N) if given, normalized to mean 1
        over each item's labelled pixels."""
        b, n = labels.shape
        n_parts = int(labels.max()) + 1 if labels.numel() else 1
        active = labels >= 0  # (B, N)
        flat = (labels.clamp_min(0) + torch.arange(b, device=labels.device)[:, None] * n_parts).flatten()
        counts = torch.zeros(b * n_parts, device=labels.device)
        counts.index_add_(0, flat, active.flatten().float())
        w = counts[flat].reshape(b, n).clamp_min(1.0).rsqrt() * active  # (B, N)
        if boost is not None:
            w = w * boost
        mean = w.sum(1, keepdim=True) / active.sum(1, keepdim=True).clamp_min(1)  # (B, 1)
        return w / mean.clamp_min(1e-12)

    @staticmethod
    def contact_pixels(gt: torch.Tensor, radius: int) -> torch.Tensor:
        """(B, H, W) bool: instance pixels with a pixel of another instance (not background)
        within ``radius`` (Chebyshev distance), by max pooling the ids from above and below."""
        ids = gt.to(torch.float32)[:, None]  # (B, 1, H, W); float32 holds ids up to 2**24 exactly
        k = 2 * radius + 1
        above = F.max_pool2d(ids, k, stride=1, padding=radius)  # largest id nearby (pads: -inf)
        # smallest instance id nearby: background lifted above every id first
        lifted = torch.where(ids > 0, ids, torch.full_like(ids, float(2**24)))
        below = -F.max_pool2d(-lifted, k, stride=1, padding=radius)
        return ((ids > 0) & ((above > ids) | (below < ids)))[:, 0]

    # -- model ----------------------------------------------------------------------------------
    def network_spec(self, name: str | None = None, **params: Any) -> dict[str, Any]:
        """``image_unet`` by default, sized for this domain's channels; ``params`` override."""
        in_channels = self.channels + (2 if self.coords else 0)
        if name is None or name == "image_unet":
            if "in_channels" in params and params["in_channels"] != in_channels:
                raise ValueError(
                    f"The 'in_channels' network parameter must be {in_channels} for this image domain "
                    f"(channels={self.channels}, coords={self.coords}). Got {params['in_channels']!r} "
                    f"instead; set the domain's 'channels' (1 or 3) or 'coords' options rather than "
                    f"the network's input channels."
                )
            full = {"in_channels": in_channels, "dim": 16, "size": "cpu", "foreground": True}
            full.update(params)
            return {"name": "image_unet", "params": full}
        return {"name": name, "params": dict(params)}

    def clusterer_spec(self) -> dict[str, Any]:
        return {"name": "kmeans", "params": {"n_clusters": self.n_groups, "n_init": 1, "max_iter": 30, "seed": 0}}

    def compute_loss(self, output: Any, batch: EncodedBatch, loss: str) -> torch.Tensor:
        """The embedding loss, plus its local term over windows (``local_window``), plus, with
        a foreground head, binary cross-entropy on valid pixels."""
        total = super().compute_loss(output, batch, loss)
        if self.local_window and batch.labels is not None:
            total = total + self.local_loss(output, batch, loss)
        if isinstance(output, dict) and "foreground" in output and "fg_target" in batch.context:
            logits = output["foreground"].float()  # (B, N)
            bce = F.binary_cross_entropy_with_logits(logits, batch.context["fg_target"], reduction="none")
            m = batch.mask.float()
            total = total + (bce * m).sum() / m.sum().clamp_min(1.0)
        return total

    def local_loss(self, output: Any, batch: EncodedBatch, loss: str, offset: tuple[int, int] | None = None) -> torch.Tensor:
        """The embedding loss on ``local_window`` x ``local_window`` windows of the batch, each
        window an item weighted as ``weighting`` says, averaged over the windows that hold
        labelled pixels. The windows tile the image from ``offset`` (y, x); None draws it at
        random (torch's generator, so a seeded run repeats), so that no seam stays put.
        Pixels outside the whole windows (less than one window side per edge) sit this step
        out; an image smaller than one window adds nothing."""
        from embedseg.losses import get_loss

        fn = get_loss(loss, f"{type(self).__name__}.local_loss")
        s = self.local_window
        h, w = batch.context["shape"]
        if offset is None:
            # Any offset below one window side, but keep at least one whole window per axis.
            offset = tuple(int(torch.randint(0, max(1, min(s, n - s + 1)), ())) for n in (h, w))
        oy, ox = offset
        ny, nx = (h - oy) // s, (w - ox) // s
        if ny == 0 or nx == 0:
            return torch.zeros((), device=batch.mask.device)
        emb = embeddings_of(output)  # (B, N, D)
        b = emb.shape[0]
        labels = batch.labels.masked_fill(~batch.mask, -1)
        boost = batch.context.get("boost")

        def windows(x: torch.Tensor) -> torch.Tensor:
            """(B, H*W, ...) -> (B * ny * nx, s * s, ...), one row per window."""
            tail = x.shape[2:]
            g = x.reshape(b, h, w, *tail)[:, oy : oy + ny * s, ox : ox + nx * s]
            g = g.reshape(b, ny, s, nx, s, *tail).transpose(2, 3)
            return g.reshape(b * ny * nx, s * s, *tail)

        win_labels = windows(labels)
        win_weights = None
        if self.weighting != "none":
            win_weights = self._weights(win_labels, None if boost is None else windows(boost))
        per_window = fn(windows(emb), win_labels, win_weights, reduction="none")
        active = (win_labels >= 0).any(1)
        return per_window.sum() / active.sum().clamp_min(1)

    # -- inference ------------------------------------------------------------------------------
    def _foreground(self, output: Any) -> torch.Tensor | None:
        if isinstance(output, dict) and "foreground" in output:
            return torch.sigmoid(output["foreground"].float())  # (B, N)
        return None

    def _decoding_settings(self) -> dict[str, Any]:
        """The keyword settings :func:`decode_instances` takes from this domain."""
        return {
            "fg_threshold": self.fg_threshold,
            "merge_threshold": self.merge_threshold,
            "seed_consistency": self.seed_consistency,
            "min_size": self.min_size,
            "split_threshold": self.split_threshold,
        }

    # The flips of each inference view, as dims counted from the end of a (..., H, W) image:
    # none, left-right, top-bottom, both.
    _VIEW_FLIPS: ClassVar[tuple[tuple[int, ...], ...]] = ((), (-1,), (-2,), (-2, -1))

    def _n_views(self) -> int:
        return 1 if self.coords else self.flip_views

    def _merged_views(self, embed_view: Any, hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The views' unit embeddings, each mapped back, concatenated and scaled by
        1/sqrt(views) (unit norm; the cosine affinity is the mean over the views), and the mean
        foreground probability. ``embed_view(dims)`` gives one view's (..., H*W, dim)
        embeddings and (..., H*W) foreground probabilities (or None) of the image flipped
        along ``dims``."""
        flips = self._VIEW_FLIPS[: self._n_views()]
        merged: torch.Tensor | None = None  # (..., H, W, views * dim)
        fgs = []
        for v, dims in enumerate(flips):
            emb, fg = embed_view(dims)
            dim = emb.shape[-1]
            if merged is None:
                merged = torch.empty(*emb.shape[:-2], *hw, len(flips) * dim, dtype=emb.dtype, device=emb.device)
            # Flipped back as a (..., dim, H, W) view of the view's embeddings (in whatever
            # layout the network gives them) and written straight into its slice: one copy per
            # view, no concatenation; the 1/sqrt(views) scale is applied in place below.
            grid = emb.transpose(-1, -2).unflatten(-1, hw)
            merged[..., v * dim : (v + 1) * dim] = (grid.flip(dims) if dims else grid).movedim(-3, -1)
            if fg is not None:
                fgs.append(fg.unflatten(-1, hw).flip(dims).flatten(-2) if dims else fg)
        assert merged is not None  # at least one view
        merged.mul_(1.0 / math.sqrt(len(flips)))
        return merged.flatten(-3, -2), torch.stack(fgs).mean(0) if fgs else None

    def forward(self, run: Any, batch: EncodedBatch) -> Any:
        """The network output that clustering and decoding use: with ``flip_views`` > 1, the
        mirrored views of the batch merged (see the class notes); foreground as logits."""
        if self._n_views() == 1:
            return run(batch.features)

        def view(dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor | None]:
            out = run(batch.features.flip(dims) if dims else batch.features)
            return embeddings_of(out), self._foreground(out)

        emb, fg = self._merged_views(view, tuple(batch.features.shape[-2:]))
        if fg is None:
            return {"embeddings": emb}
        p = fg.clamp(1e-7, 1 - 1e-7)
        return {"embeddings": emb, "foreground": torch.log(p) - torch.log1p(-p)}  # logits again

    def cluster_mask(self, batch: EncodedBatch, output: Any) -> torch.Tensor:
        """The foreground pixels (probability above ``fg_threshold``) when the network has a
        foreground head, else every valid pixel: the embedding groups over-segment objects."""
        fg = self._foreground(output)
        return batch.mask if fg is None else batch.mask & (fg > self.fg_threshold)

    def cluster_counts(self, batch: EncodedBatch, mask: torch.Tensor, n_clusters: Any, output: Any = None) -> Any:
        """The clusterer's group count (``n_groups`` unless it has an int of its own), at most
        each item's number of clustered pixels."""
        k = n_clusters if isinstance(n_clusters, int) and not isinstance(n_clusters, bool) else self.n_groups
        return mask.sum(1).clamp(1, k).tolist()  # items without pixels are not clustered

    def decode(
        self,
        batch: EncodedBatch,
        labels: torch.Tensor,
        proba: torch.Tensor | None,
        output: Any,
    ) -> list[torch.Tensor]:
        """One (h, w) int64 label map per item (padding cropped), 0 = background."""
        h, w = batch.context["shape"]
        embeddings = embeddings_of(output)  # (B, N, dim)
        fg = self._foreground(output)
        counts = batch.context.get("n_instances")
        out = []
        for i, (hi, wi) in enumerate(batch.context["sizes"]):
            if hi == 0 or wi == 0:  # a tile outside this item's image
                out.append(torch.zeros(hi, wi, dtype=torch.int64))
                continue
            emb = embeddings[i].reshape(h, w, -1)[:hi, :wi]  # (hi, wi, dim)
            grp = labels[i].reshape(h, w)[:hi, :wi]
            fgi = None if fg is None else fg[i].reshape(h, w)[:hi, :wi]
            lab = decode_instances(
                emb.reshape(hi * wi, -1), (hi, wi), grp, fgi,
                **self._decoding_settings(), n_instances=None if counts is None else counts[i],
            )
            out.append(torch.from_numpy(lab))
        return out

    def tiles(self, batch: EncodedBatch) -> Iterator[EncodedBatch] | None:
        """Tiles of ``tile_size`` overlapping by ``tile_overlap`` when the batch's images are
        larger than a tile (None otherwise); see :mod:`domains.image.tiling`."""
        h, w = batch.context["shape"]
        if max(h, w) <= self.tile_size:
            return None
        counts = batch.context.get("n_instances")
        if counts is not None and any(c is not None for c in counts):
            raise ValueError(
                f"A count of instances ('n_instances') can only be given for images of at most "
                f"tile_size={self.tile_size} pixels a side, which are decoded whole. Got an image "
                f"of {h} x {w}."
            )
        return self._tiles(batch)

    def _tiles(self, batch: EncodedBatch) -> Iterator[EncodedBatch]:
        h, w = batch.context["shape"]
        b = batch.batch_size
        valid = batch.mask.reshape(b, h, w)
        for y0, x0, th, tw, core in tile_windows(h, w, self.tile_size, self.tile_overlap):
            sizes = [(max(0, min(th, hi - y0)), max(0, min(tw, wi - x0))) for hi, wi in batch.context["sizes"]]
            yield EncodedBatch(
                features=batch.features[..., y0 : y0 + th, x0 : x0 + tw],
                mask=valid[:, y0 : y0 + th, x0 : x0 + tw].reshape(b, th * tw),
                context={"shape": (th, tw), "sizes": sizes, "window": (y0, x0, core)},
            )

    def stitch(self, batch: EncodedBatch, solved: Iterable[tuple[EncodedBatch, list[Any]]]) -> list[torch.Tensor]:
        """Each item's label map from its tiles' (see :class:`~domains.image.tiling.Stitcher`)."""
        stitchers = [Stitcher(hi, wi) for hi, wi in batch.context["sizes"]]
        for tile, outputs in solved:
            y0, x0, core = tile.context["window"]
            for i, (st, lab) in enumerate(zip(stitchers, outputs)):
                hi, wi = tile.context["sizes"][i]
                if hi == 0 or wi == 0:
                    continue
                top, left, bottom, right = core
                st.add(y0, x0, lab.numpy(), (top, left, min(bottom, hi), min(right, wi)))
        return [torch.from_numpy(st.result()) for st in stitchers]

    def metrics(self) -> Any:
        """AP50, F1, mean AP (IoU 0.5:0.9), PQ and mean matched IoU pooled over all instances of
        all images (StarDist's matching_dataset), and the mean per-image ARI
        (:class:`~domains.image.metrics.ImageMetrics`)."""
        from .metrics import ImageMetrics

        return ImageMetrics()

    # -- command line ---------------------------------------------------------------------------
    @classmethod
    def add_cli_commands(cls, subparsers: Any) -> None:
        from .cli import add_segment_command

        add_segment_command(subparsers)
