"""The image domain adapter: instance segmentation by deep clustering of pixel embeddings.

Items are ``{"image": (C, H, W) | (H, W) | (H, W, C), "labels": (H, W) instance map}`` dicts or
``(image, labels)`` tuples (labels may be absent at inference). Features are percentile-
normalized intensities (plus optional coordinate channels); targets are instance ids with the
background as its own part or ignored; weights balance small and large instances. Decoding
handles hundreds of instances (see :mod:`domains.image.decode`).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from embedseg._validation import check_bool, check_choice, check_float, check_int
from embedseg.domain import Domain, EncodedBatch
from embedseg.networks import embeddings_of

from .decode import decode_instances
from .folder import Augmented, _item_pair, make_augmentation
from .imageio import normalize_intensity, to_channels, to_image_tensor, to_label_tensor
from .metrics import instance_metrics, matching_dataset

if TYPE_CHECKING:  # pragma: no cover
    from embedseg.model import Model

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
    model_methods: ClassVar[tuple[str, ...]] = ("segment", "segment_batch", "tune_decoding")
    # Models saved before mirrored views and the split-off step decode as they did.
    older_model_options: ClassVar[dict[str, Any]] = {"flip_views": 1, "split_threshold": -1.0}

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
    def prepare_image(self, image: Any, name: str = "image") -> torch.Tensor:
        """(C, H, W) float32 features of one raw image: channel conversion + normalization."""
        x = to_channels(to_image_tensor(image, name), self.channels)
        return normalize_intensity(x, *self.percentiles)

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
        h = max(x.shape[1] for x in images)
        w = max(x.shape[2] for x in images)
        n = len(images)
        image = torch.zeros(n, self.channels, h, w)
        valid = torch.zeros(n, h, w, dtype=torch.bool)
        lab_out = torch.full((n, h, w), -1, dtype=torch.int64) if all(annotated) else None
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
        from embedseg.losses import LOSSES

        fn = LOSSES[check_choice(loss, "loss", f"{type(self).__name__}.local_loss", LOSSES)]
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

    def decode(
        self,
        batch: EncodedBatch,
        labels: torch.Tensor,
        proba: torch.Tensor | None,
        embeddings: torch.Tensor,
    ) -> list[torch.Tensor]:
        """One (h, w) int64 label map per item (padding cropped), 0 = background."""
        h, w = batch.context["shape"]
        fg = self._foreground(batch.context.get("network_output"))
        out = []
        for i, (hi, wi) in enumerate(batch.context["sizes"]):
            emb = embeddings[i].reshape(h, w, -1)[:hi, :wi]  # (hi, wi, dim)
            grp = labels[i].reshape(h, w)[:hi, :wi]
            fgi = None if fg is None else fg[i].reshape(h, w)[:hi, :wi]
            lab = decode_instances(
                emb.reshape(hi * wi, -1), (hi, wi), grp, fgi,
                **self._decoding_settings(), n_instances=batch.context.get("n_instances"),
            )
            out.append(torch.from_numpy(lab))
        return out

    def metrics(self, outputs: Sequence[Any], batch: EncodedBatch) -> dict[str, float]:
        """Batch means of AP50, F1, mean AP (0.5:0.9), PQ, mean matched IoU and ARI."""
        gt = batch.context.get("gt")
        if gt is None:
            return {}
        sums: dict[str, float] = {}
        for i, (pred, (hi, wi)) in enumerate(zip(outputs, batch.context["sizes"])):
            m = instance_metrics(gt[i, :hi, :wi].cpu().numpy(), np.asarray(pred))
            for k in ("ap50", "f1", "ap", "pq", "mean_matched_iou", "ari"):
                sums[k] = sums.get(k, 0.0) + m[k]
        return {k: v / len(outputs) for k, v in sums.items()}

    def predict(self, model: "Model", x: Any, **options: Any) -> torch.Tensor:
        """``model.predict(image)`` is :meth:`segment`."""
        return self.segment(model, x, **options)

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

    def inference_output(self, run: Any, batch: EncodedBatch, output: Any) -> Any:
        """The network output that clustering and decoding use (``evaluate``, validation metrics):
        with ``flip_views`` > 1, the mirrored views of the batch merged as in :meth:`segment`."""
        if self._n_views() == 1:
            return output

        def view(dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor | None]:
            out = run(batch.features.flip(dims)) if dims else output
            return embeddings_of(out), self._foreground(out)

        emb, fg = self._merged_views(view, tuple(batch.features.shape[-2:]))
        if fg is None:
            return {"embeddings": emb}
        p = fg.clamp(1e-7, 1 - 1e-7)
        return {"embeddings": emb, "foreground": torch.log(p) - torch.log1p(-p)}  # logits again

    def _embed_image(self, model: "Model", x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embeddings (H*W, dim * views) and foreground probabilities (H*W,) of one prepared
        image, over its ``flip_views`` mirrored views (see the class notes)."""
        if max(x.shape[1:]) <= self.tile_size:
            emb, fg = self._embed_stack(model, x[None])
            return emb[0], None if fg is None else fg[0]
        x = x.to(model.device)
        if self._n_views() == 1:
            return self._embed_tiled(model, x)
        return self._merged_views(lambda dims: self._embed_tiled(model, x.flip(dims) if dims else x), tuple(x.shape[1:]))

    def _embed_stack(self, model: "Model", xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embeddings (B, H*W, dim * views) and foreground probabilities (B, H*W) of a stack
        (B, C, H, W) of prepared images of one size (at most ``tile_size``), one network pass
        per view for the whole stack."""
        xs = xs.to(model.device)

        def view(dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor | None]:
            out = model._run_network(self._features(xs.flip(dims) if dims else xs))  # eval, no grad
            return embeddings_of(out), self._foreground(out)

        if self._n_views() == 1:
            return view(())
        return self._merged_views(view, tuple(xs.shape[-2:]))

    def _embed_images(
        self, model: "Model", xs: Sequence[torch.Tensor], batch_size: int
    ) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """:meth:`_embed_image` of many prepared images: those of one size that fit in a tile
        share network passes, ``batch_size`` at a time; larger ones go tile by tile."""
        out: list[tuple[torch.Tensor, torch.Tensor | None] | None] = [None] * len(xs)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, x in enumerate(xs):
            if max(x.shape[1:]) <= self.tile_size:
                by_shape.setdefault(tuple(x.shape), []).append(i)
            else:
                out[i] = self._embed_image(model, x)
        for same in by_shape.values():
            for start in range(0, len(same), batch_size):
                chunk = same[start : start + batch_size]
                emb, fg = self._embed_stack(model, torch.stack([xs[i] for i in chunk]))
                for row, i in enumerate(chunk):
                    out[i] = (emb[row], None if fg is None else fg[row])
        return out  # type: ignore[return-value]  # every slot is filled above

    def _embed_tiled(self, model: "Model", x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embeddings (H*W, dim) and foreground probabilities (H*W,) of one prepared image
        (on the model's device) larger than a tile: tiles of ``tile_size`` overlapping by
        ``tile_overlap``; each contributes its centre (the network is translation-equivariant
        away from tile borders, so centres agree)."""
        _, h, w = x.shape
        t, o = self.tile_size, self.tile_overlap
        step = t - o

        def starts(n: int) -> list[int]:
            if n <= t:
                return [0]
            s = list(range(0, n - t, step)) + [n - t]
            return sorted(set(s))

        emb_out = torch.zeros(0)
        fg_out: torch.Tensor | None = None
        ys, xs = starts(h), starts(w)
        for y0 in ys:
            for x0 in xs:
                tile = x[:, y0 : y0 + t, x0 : x0 + t]
                out = model._run_network(self._features(tile[None]))  # eval, no grad
                th, tw = tile.shape[1:]
                emb = embeddings_of(out)[0].reshape(th, tw, -1)  # (th, tw, dim)
                fg = self._foreground(out)
                if emb_out.numel() == 0:
                    emb_out = torch.zeros(h, w, emb.shape[-1], device=x.device)
                    fg_out = torch.zeros(h, w, device=x.device) if fg is not None else None
                # Keep the centre: drop half the overlap on sides that have a neighbour.
                top = 0 if y0 == 0 else o // 2
                left = 0 if x0 == 0 else o // 2
                bottom = th if y0 + th >= h else th - o // 2
                right = tw if x0 + tw >= w else tw - o // 2
                emb_out[y0 + top : y0 + bottom, x0 + left : x0 + right] = emb[top:bottom, left:right]
                if fg_out is not None:
                    fgt = fg[0].reshape(th, tw)
                    fg_out[y0 + top : y0 + bottom, x0 + left : x0 + right] = fgt[top:bottom, left:right]
        return emb_out.reshape(h * w, -1), None if fg_out is None else fg_out.reshape(h * w)

    def _groups(self, model: "Model", emb: torch.Tensor, fg: torch.Tensor | None) -> torch.Tensor:
        """Over-segmentation of one image's pixels into embedding groups with the model's
        clusterer, fitted on (a sample of) the foreground pixels."""
        n = emb.shape[0]
        active = torch.ones(n, dtype=torch.bool, device=emb.device) if fg is None else fg > self.fg_threshold
        n_active = int(active.sum())
        groups = torch.zeros(n, dtype=torch.int64, device=emb.device)
        if n_active == 0:
            return groups
        k = model.clusterer.get_params().get("n_clusters", self.n_groups)
        k = k if isinstance(k, int) else self.n_groups
        k = min(k, n_active)
        pts = emb[active].float()  # (n_active, dim)
        clusterer = model.clusterer.clone(n_clusters=k) if "n_clusters" in model.clusterer.get_params() else model.clusterer.clone()
        # Fitting on a fixed-size sample keeps large images fast; every pixel is then assigned.
        limit = 40_000
        if n_active > limit:
            gen = torch.Generator(device="cpu").manual_seed(0)
            idx = torch.randperm(n_active, generator=gen)[:limit].to(emb.device)
            clusterer.fit(pts[idx][None])
            try:
                groups[active] = clusterer.predict(pts[None])[0]
                return groups
            except NotImplementedError:
                clusterer = clusterer.clone()
        groups[active] = clusterer.fit_predict(pts[None])[0]
        return groups

    def segment(
        self,
        model: "Model",
        image: Any,
        n_instances: int | None = None,
    ) -> torch.Tensor:
        """Instance labels of one image of any size.

        Args:
            model: a trained image model.
            image: (H, W), (C, H, W) or (H, W, C) array or tensor; any dtype and range.
            n_instances: the number of instances wanted; None = automatic.

        Returns:
            (H, W) int64 tensor on the CPU: 0 = background, instances 1..n.

        Raises:
            ValueError, TypeError: a malformed image (wrong rank, NaN, empty) or bad
                ``n_instances``.
        """
        if n_instances is not None:
            check_int(n_instances, "n_instances", "segment", 0)
        x = self.prepare_image(image, "image")
        emb, fg = self._embed_image(model, x)
        return self._decode_one(model, tuple(x.shape[1:]), emb, fg, n_instances, "image", "n_instances")

    def _decode_one(
        self,
        model: "Model",
        hw: tuple[int, int],
        emb: torch.Tensor,
        fg: torch.Tensor | None,
        n_instances: int | None,
        name: str,
        count_name: str,
    ) -> torch.Tensor:
        """The label map of one embedded image (the steps of :meth:`segment` after the network).
        Called straight from :meth:`segment` and :meth:`segment_batch` (no frame between), so
        a shortfall warning points at the user's call."""
        groups = self._groups(model, emb, fg)
        lab = decode_instances(emb, hw, groups, fg, **self._decoding_settings(), n_instances=n_instances)
        found = int(lab.max())
        if n_instances is not None and found < n_instances:
            warnings.warn(
                f"'{count_name}' asked for {n_instances} instances, but {name} holds only {found} "
                f"regions of at least min_size={self.min_size} foreground pixels that can be told apart.",
                stacklevel=3,
            )
        return torch.from_numpy(lab)

    def segment_batch(
        self,
        model: "Model",
        images: Sequence[Any],
        n_instances: int | Sequence[int | None] | None = None,
        *,
        batch_size: int = 8,
    ) -> list[torch.Tensor]:
        """:meth:`segment` for a sequence of images (sizes may differ).

        Images of the same size that fit in one tile go through the network together,
        ``batch_size`` at a time (one pass per inference view); decoding is per image. The
        label maps are those :meth:`segment` gives, up to float rounding in the network.

        Args:
            images: a sequence of images, or a (B, C, H, W) / (B, H, W) array or tensor.
            n_instances: one count for all, one per image (a sequence, array or tensor), or
                None.
            batch_size: most images per network pass.
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
        if isinstance(n_instances, (np.ndarray, torch.Tensor)) and n_instances.ndim == 0:
            n_instances = n_instances.item()  # one count for all, given as a 0-d array
        if isinstance(n_instances, (list, tuple, np.ndarray, torch.Tensor)):
            counts = [None if c is None else (c.item() if hasattr(c, "item") else c) for c in list(n_instances)]
        else:
            counts = [n_instances] * len(images)
        if len(counts) != len(images):
            raise ValueError(
                f"'n_instances' must give one count per image ({len(images)}). Got {len(counts)} instead."
            )
        for i, n in enumerate(counts):
            if n is not None:
                check_int(n, f"n_instances[{i}]", "segment", 0)
        prepared = [self.prepare_image(img, f"images[{i}]") for i, img in enumerate(images)]
        embedded = self._embed_images(model, prepared, batch_size)
        labels = []
        # A loop, not a comprehension: whether a comprehension is a frame of its own depends on
        # the Python version, and the shortfall warning counts frames up to the user's call.
        for i, (x, (emb, fg), n) in enumerate(zip(prepared, embedded, counts)):
            labels.append(self._decode_one(model, tuple(x.shape[1:]), emb, fg, n, f"images[{i}]", f"n_instances[{i}]"))
        return labels

    # Settings :meth:`tune_decoding` tries by default: seed consistency decides which pixels seed
    # an instance (higher keeps seeds off the seams between touching objects), the merge
    # threshold how alike adjacent fragments must be to join, the split threshold how unlike
    # its instance a part must be to stand alone (-1: never).
    DECODING_GRID: ClassVar[dict[str, tuple[Any, ...]]] = {
        "seed_consistency": (0.95, 0.97, 0.98, 0.99),
        "merge_threshold": (0.5, 0.6),
        "split_threshold": (-1.0, 0.4, 0.5, 0.6),
    }

    def tune_decoding(
        self,
        model: "Model",
        items: Sequence[Any],
        grid: dict[str, Sequence[Any]] | None = None,
    ) -> dict[str, Any]:
        """Choose the decoding settings with the best AP50 (ties: the best AP75) on annotated
        images, and keep them in the model (they are saved with it).

        The network and the embedding grouping run once per image; only the decoding is
        repeated for each combination. On a full tie the current settings stay. Tune on
        images that are not the ones you report scores on (a classic pipeline tuned on the
        same images is the fair comparison).

        Args:
            model: a trained image model.
            items: annotated images: dicts {"image", "labels"} or (image, labels) pairs.
            grid: values to try per setting, among "seed_consistency", "merge_threshold",
                "split_threshold" and "min_size"; every combination is scored. None:
                :attr:`DECODING_GRID`.

        Returns:
            ``{"settings": {...}, "ap50": ..., "ap75": ...}``: the chosen settings (now the
            domain's) and their scores on ``items``.
        """
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
        images, truths = [], []
        for i, item in enumerate(items):
            image, labels = _item_pair(item)
            if labels is None:
                raise ValueError(f"'items[{i}]' must have labels to tune against. Got an image without labels.")
            x = self.prepare_image(image, f"items[{i}] image")
            truths.append(to_label_tensor(labels, tuple(x.shape[1:]), f"items[{i}] labels").numpy())
            images.append(x)
        # The network and the grouping run once per image; only the decoding is repeated below.
        prepared = [
            (tuple(x.shape[1:]), emb, fg, self._groups(model, emb, fg))
            for x, (emb, fg) in zip(images, self._embed_images(model, images, batch_size=8))
        ]
        current = self._decoding_settings()
        best, best_key = None, None
        for combo in itertools.product(*grid.values()):
            settings = {**current, **dict(zip(grid, combo))}
            preds = [decode_instances(emb, hw, groups, fg, **settings) for hw, emb, fg, groups in prepared]
            m = matching_dataset(truths, preds, [0.5, 0.75])
            key = (m[0.5]["ap"], m[0.75]["ap"])
            is_current = all(current[name] == value for name, value in zip(grid, combo))
            if best_key is None or key > best_key or (key == best_key and is_current):
                best, best_key = dict(zip(grid, combo)), key
        for name, value in best.items():
            setattr(self, name, value)
        return {"settings": best, "ap50": best_key[0], "ap75": best_key[1]}

    # -- command line ---------------------------------------------------------------------------
    @classmethod
    def add_cli_commands(cls, subparsers: Any) -> None:
        from .cli import add_segment_command

        add_segment_command(subparsers)
