"""Annotated image folders and joint image/mask augmentation.

A folder holds ``images/`` and ``masks/`` with files of matching names (stems), in png, tif or
jpg; masks may be 16-bit. Augmentation transforms image and mask together with torchvision's
v2 transforms, so geometry stays aligned (masks are resampled with nearest neighbour), and
intensity changes touch the image only.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from embedseg._validation import check_bool, check_int
from embedseg.errors import require

from .imageio import IMAGE_SUFFIXES, read_image, read_labels, to_image_tensor, to_label_tensor

__all__ = ["InstanceFolder", "Augmented", "RandomIntensity", "make_augmentation", "augment_pair"]


class RandomIntensity(torch.nn.Module):
    """Random gain, offset, gamma and Gaussian noise on the image only (masks pass through).

    Works on any value range: the image is scaled to [0, 1] by its own min/max, changed, and
    scaled back, so 8-bit, 16-bit and float inputs are treated alike.

    Args:
        gain: maximal relative contrast change (0.2 means factors in [0.8, 1.2]).
        offset: maximal brightness shift as a fraction of the range.
        gamma: maximal |log gamma|.
        noise: maximal noise standard deviation as a fraction of the range.
        p: probability of applying the change.
    """

    def __init__(
        self, *, gain: float = 0.25, offset: float = 0.1, gamma: float = 0.3, noise: float = 0.03, p: float = 0.8
    ) -> None:
        super().__init__()
        self.gain = gain
        self.offset = offset
        self.gamma = gamma
        self.noise = noise
        self.p = p

    def forward(self, *inputs: Any) -> Any:
        tv_tensors = require("torchvision.tv_tensors", "image")
        flat = inputs[0] if len(inputs) == 1 else inputs
        if isinstance(flat, dict):
            return {k: self._apply(v, tv_tensors) for k, v in flat.items()}
        if isinstance(flat, (tuple, list)):
            return type(flat)(self._apply(v, tv_tensors) for v in flat)
        return self._apply(flat, tv_tensors)

    def _apply(self, x: Any, tv_tensors: Any) -> Any:
        if not isinstance(x, tv_tensors.Image) or float(torch.rand(())) >= self.p:
            return x
        img = x.as_subclass(torch.Tensor).float()
        lo, hi = img.min(), img.max()
        span = (hi - lo).clamp_min(1e-6)
        u = (img - lo) / span
        g = math.exp(float(torch.empty(()).uniform_(-self.gamma, self.gamma)))
        u = u.clamp(0, 1) ** g
        u = u * float(torch.empty(()).uniform_(1 - self.gain, 1 + self.gain))
        u = u + float(torch.empty(()).uniform_(-self.offset, self.offset))
        if self.noise > 0:
            u = u + torch.randn_like(u) * float(torch.empty(()).uniform_(0, self.noise))
        return tv_tensors.wrap(lo + u * span, like=x)


def make_augmentation(
    *,
    crop_size: int | None = None,
    flips: bool = True,
    rotate: bool = True,
    intensity: bool = True,
) -> Callable[..., Any]:
    """A torchvision v2 pipeline that transforms an image and its mask together.

    Args:
        crop_size: random square crop (padded when the image is smaller); None = no crop.
        flips: random horizontal and vertical flips.
        rotate: random multiples of 90 degrees plus small arbitrary rotations (mask with
            nearest-neighbour resampling, no interpolated ids).
        intensity: :class:`RandomIntensity` on the image only.

    Returns:
        a callable taking and returning ``(tv_tensors.Image, tv_tensors.Mask)``.
    """
    v2 = require("torchvision.transforms.v2", "image")
    steps: list[Any] = []
    if crop_size is not None:
        check_int(crop_size, "crop_size", "make_augmentation", 8)
        steps.append(v2.RandomCrop(crop_size, pad_if_needed=True))
    if flips:
        steps += [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()]
    if rotate:
        steps.append(_RandomRot90())
        steps.append(v2.RandomApply([v2.RandomRotation(15)], p=0.3))
    if intensity:
        steps.append(RandomIntensity())
    return v2.Compose(steps)


class _RandomRot90(torch.nn.Module):
    """Rotate image and mask by the same random multiple of 90 degrees (exact, no resampling)."""

    def forward(self, *inputs: Any) -> Any:
        tv_tensors = require("torchvision.tv_tensors", "image")
        k = int(torch.randint(0, 4, ()))
        flat = inputs[0] if len(inputs) == 1 else inputs

        def rot(v: Any) -> Any:
            if isinstance(v, (tv_tensors.Image, tv_tensors.Mask)):
                return tv_tensors.wrap(torch.rot90(v.as_subclass(torch.Tensor), k, dims=(-2, -1)), like=v)
            return v

        if isinstance(flat, dict):
            return {key: rot(v) for key, v in flat.items()}
        if isinstance(flat, (tuple, list)):
            return type(flat)(rot(v) for v in flat)
        return rot(flat)


def augment_pair(image: torch.Tensor, labels: torch.Tensor, transform: Callable[..., Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply a joint transform to a (C, H, W) image and an (H, W) mask; returns plain tensors."""
    tv_tensors = require("torchvision.tv_tensors", "image")
    img, mask = transform(tv_tensors.Image(image), tv_tensors.Mask(labels[None]))
    return img.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)[0]


def _item_pair(item: Any) -> tuple[Any, Any]:
    if isinstance(item, dict):
        if "image" not in item:
            raise ValueError(f"Image items must have an 'image' entry. Got keys {sorted(item)}.")
        return item["image"], item.get("labels")
    if isinstance(item, (tuple, list)):
        if len(item) not in (1, 2):
            raise ValueError(
                f"Image items given as tuples must be (image,) or (image, labels). Got a "
                f"{type(item).__name__} of {len(item)} entries."
            )
        return item[0], (item[1] if len(item) == 2 else None)
    return item, None


class Augmented(torch.utils.data.Dataset):
    """Wrap a dataset of image items so each access returns a jointly augmented copy.

    Args:
        dataset: items ``{"image", "labels"}`` or ``(image, labels)`` pairs.
        transform: a joint transform (default :func:`make_augmentation`).
        repeats: the wrapper's length is ``repeats * len(dataset)``, so an epoch over a small
            dataset sees each item several times under different augmentations.
    """

    def __init__(self, dataset: Sequence[Any], transform: Callable[..., Any] | None = None, *, repeats: int = 1) -> None:
        self.dataset = dataset
        self.transform = transform if transform is not None else make_augmentation()
        self.repeats = check_int(repeats, "repeats", "Augmented", 1)

    def __len__(self) -> int:
        return len(self.dataset) * self.repeats

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image, labels = _item_pair(self.dataset[index % len(self.dataset)])
        image = to_image_tensor(image)
        if labels is None:
            raise ValueError("Augmented needs annotated items: this item has no 'labels'.")
        labels = to_label_tensor(labels, tuple(image.shape[-2:]))
        image, labels = augment_pair(image, labels, self.transform)
        return {"image": image, "labels": labels}


class InstanceFolder(torch.utils.data.Dataset):
    """Images and instance masks from ``root/images/*`` and ``root/masks/*``.

    Files pair up by name without suffix (``images/a.png`` with ``masks/a.tif``). Masks are
    integer instance maps (0 = background; 16-bit is fine; color-coded RGB masks are read as one
    instance per color).

    Args:
        root: the folder holding ``images/`` and ``masks/``.
        augment: apply :func:`make_augmentation` (flips, rotations, intensity) on every access.
        crop_size: random square crops of this size (with or without ``augment``).
        transform: a custom joint transform, used instead of the default one.

    Raises:
        FileNotFoundError: a missing folder, an empty ``images/``, or an image without a mask.

    Example:
        >>> import pathlib, tempfile, numpy as np, tifffile
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> (root / "images").mkdir(); (root / "masks").mkdir()
        >>> tifffile.imwrite(root / "images" / "a.tif", np.zeros((64, 64), np.uint16))
        >>> tifffile.imwrite(root / "masks" / "a.tif", np.ones((64, 64), np.uint16))
        >>> ds = InstanceFolder(root, augment=True, crop_size=32)
        >>> ds[0]["image"].shape, ds[0]["labels"].shape
        (torch.Size([1, 32, 32]), torch.Size([32, 32]))
    """

    def __init__(
        self,
        root: str | Path,
        *,
        augment: bool = False,
        crop_size: int | None = None,
        transform: Callable[..., Any] | None = None,
    ) -> None:
        self.root = root
        self.augment = check_bool(augment, "augment", "InstanceFolder")
        self.crop_size = crop_size
        if crop_size is not None:
            check_int(crop_size, "crop_size", "InstanceFolder", 8)
        self.transform = transform
        base = Path(root)
        img_dir, mask_dir = base / "images", base / "masks"
        for d in (img_dir, mask_dir):
            if not d.is_dir():
                raise FileNotFoundError(f"InstanceFolder expects '{d}' to be a folder (root/images and root/masks).")
        images = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise FileNotFoundError(f"No images ({', '.join(IMAGE_SUFFIXES)}) in '{img_dir}'.")
        masks = {p.stem: p for p in mask_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
        missing = [p.name for p in images if p.stem not in masks]
        if missing:
            raise FileNotFoundError(
                f"Images without a mask of the same name in '{mask_dir}': {', '.join(missing[:5])}"
                + (" ..." if len(missing) > 5 else "")
            )
        self.files = [(p, masks[p.stem]) for p in images]
        if transform is None and (augment or crop_size is not None):
            self._transform = make_augmentation(
                crop_size=crop_size, flips=augment, rotate=augment, intensity=augment
            )
        else:
            self._transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        img_path, mask_path = self.files[index]
        image = to_image_tensor(read_image(img_path), name=str(img_path))
        labels = to_label_tensor(read_labels(mask_path), tuple(image.shape[-2:]), name=str(mask_path))
        if self._transform is not None:
            image, labels = augment_pair(image, labels, self._transform)
        return {"image": image, "labels": labels, "name": img_path.stem}

    def __repr__(self) -> str:
        return f"InstanceFolder(root={str(self.root)!r}, n_images={len(self)}, augment={self.augment})"
