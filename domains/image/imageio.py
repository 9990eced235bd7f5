"""Reading, checking and normalizing images and instance label maps.

Images arrive in many layouts: (H, W), (C, H, W) or (H, W, C); uint8, uint16, float or bool;
gray, RGB or RGBA. Everything here turns them into a (C, H, W) float32 tensor in a fixed
number of channels, and checks label maps (non-negative integer ids, same size as the image).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embedseg._validation import shape_str
from embedseg.errors import require
from embedseg.io import atomic_write_with

__all__ = [
    "IMAGE_SUFFIXES",
    "to_image_tensor",
    "to_label_tensor",
    "to_channels",
    "normalize_intensity",
    "read_image",
    "read_labels",
    "write_labels",
    "write_image",
    "check_output_path",
]

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
#: formats that hold an integer label map losslessly (16-bit PNG, 16/32-bit TIFF).
LABEL_SUFFIXES = (".png", ".tif", ".tiff")


def _as_array(x: Any, name: str) -> np.ndarray | torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "__array__"):  # PIL images, tv_tensors, xarray ...
        return np.asarray(x)
    raise TypeError(f"'{name}' must be a numpy array or torch tensor. Got {shape_str(x)} instead.")


#: ``channel_axis`` left to the default rule (see :func:`to_image_tensor`).
AUTO = "auto"


def _channel_axis(x: Any, channel_axis: Any, name: str) -> int | None:
    """The axis of ``x`` holding channels, or None for a single-channel 2-D image."""
    if channel_axis is None:
        if x.ndim != 2:
            raise ValueError(
                f"'{name}' with channel_axis=None must be a 2-D (H, W) image. Got {shape_str(x)}; pass "
                f"channel_axis=0 for (C, H, W) or -1 for (H, W, C)."
            )
        return None
    if isinstance(channel_axis, str) and channel_axis == AUTO:
        if x.ndim == 2:
            return None
        if x.ndim != 3:
            raise ValueError(
                f"'{name}' must be (H, W), (C, H, W) or (H, W, C) with C in 1, 3, 4. Got {shape_str(x)} instead."
            )
        first, last = int(x.shape[0]), int(x.shape[-1])
        if last in (3, 4):  # scikit-image's convention: colour is the last axis
            return 2
        if isinstance(x, torch.Tensor) and first in (1, 2, 3, 4):
            return 0  # torch's convention: (C, H, W)
        if first == 1 or last == 1:
            return 0 if first == 1 else 2
        raise ValueError(
            f"'{name}' of shape {tuple(x.shape)} is ambiguous: a (C, H, W) image or a stack of slices? "
            f"Pass channel_axis=0 for channels first, -1 for channels last, or segment each slice alone."
        )
    if isinstance(channel_axis, bool) or not isinstance(channel_axis, (int, np.integer)):
        raise TypeError(f"'channel_axis' must be None, an int or 'auto'. Got {channel_axis!r} instead.")
    if x.ndim != 3 or not -3 <= int(channel_axis) <= 2:
        raise ValueError(
            f"'channel_axis' ({channel_axis}) must name an axis of a 3-D image. Got '{name}' of {shape_str(x)}."
        )
    return int(channel_axis) % 3


def to_image_tensor(image: Any, name: str = "image", channel_axis: Any = AUTO) -> torch.Tensor:
    """An image as a (C, H, W) float tensor of its raw values (no rescaling): float32, or
    float64 for float64 input.

    Args:
        image: a 2-D image, or a 3-D one with 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA)
            channels along ``channel_axis``.
        name: the argument's name in messages.
        channel_axis: the axis holding channels, scikit-image's convention: None for a 2-D
            image, an int for a 3-D one. "auto" (the default): none for 2-D arrays; the last
            axis of a 3-D array whose last axis is 3 or 4; the first axis of a 3-D torch tensor
            (torch's (C, H, W)); an axis of length 1; anything else is ambiguous and an error.

    Raises:
        TypeError: not an array, or a complex/object dtype, or a bad ``channel_axis``.
        ValueError: wrong rank, an ambiguous layout, an empty image, or non-finite values.
    """
    x = _as_array(image, name)
    axis = _channel_axis(x, channel_axis, name)
    if axis is None:
        x = x[None]
    elif axis != 0:
        x = x.movedim(axis, 0) if isinstance(x, torch.Tensor) else np.moveaxis(x, axis, 0)
    if x.shape[0] not in (1, 2, 3, 4):
        raise ValueError(
            f"'{name}' must have 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA) channels along its "
            f"channel axis. Got {shape_str(x)} (channels first) instead."
        )
    if x.shape[1] == 0 or x.shape[2] == 0:
        raise ValueError(f"'{name}' must not be empty. Got {shape_str(x)} instead.")
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biuf":
            raise TypeError(f"'{name}' must have a bool, integer or float dtype. Got {shape_str(x)} instead.")
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif x.is_complex():
        raise TypeError(f"'{name}' must have a bool, integer or float dtype. Got {shape_str(x)} instead.")
    # float64 stays float64 until normalized: a small contrast on a large offset (a float image
    # in physical units) would vanish in float32's 24 bits.
    x = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"'{name}' must contain only finite values. Got {shape_str(x)} with NaN or inf.")
    return x


def to_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """Bring a (C, H, W) image to ``channels`` (1 or 3): alpha is dropped, RGB averaged to
    gray, gray repeated to RGB."""
    c = image.shape[0]
    if c in (2, 4):  # gray+alpha or RGBA: the alpha channel carries no intensity
        image = image[: c - 1]
        c -= 1
    if c == channels:
        return image
    if channels == 1:
        return image.mean(dim=0, keepdim=True)
    return image.expand(3, -1, -1).clone()


def normalize_intensity(
    image: torch.Tensor, low: float = 1.0, high: float = 99.8, name: str | None = None
) -> torch.Tensor:
    """Percentile normalization per channel: the ``low`` percentile maps to 0 and ``high`` to 1
    (csbdeep / StarDist's normalization).

    Scale-invariant: an image times any positive factor (a float image in physical units, a
    range of 1e-9) normalizes to the same result. A channel whose percentiles coincide but that
    is not constant (a few bright spots on an even background) is normalized by its minimum
    and maximum instead. A truly constant channel maps to zeros; with ``name`` given, a
    constant image (every channel constant) is an error naming it, since nothing can be found
    in it.

    Shape:
        image (C, H, W) -> (C, H, W) float32.
    """
    flat = image.reshape(image.shape[0], -1)  # (C, H*W), float32 or float64
    if flat.shape[1] > 1_000_000:
        # Percentiles of a large image are estimated from a fixed stride sample.
        flat_q = flat[:, :: flat.shape[1] // 1_000_000 + 1]
    else:
        flat_q = flat
    q = torch.tensor([low / 100.0, high / 100.0], device=image.device, dtype=flat.dtype)
    lo, hi = torch.quantile(flat_q, q, dim=1)  # (C,), (C,)
    vmin, vmax = flat.amin(1), flat.amax(1)  # (C,)
    narrow = hi <= lo  # percentiles coincide: fall back to the full range
    lo, hi = torch.where(narrow, vmin, lo), torch.where(narrow, vmax, hi)
    constant = vmax <= vmin  # (C,): every pixel of the channel the same
    if name is not None and bool(constant.all()):
        raise ValueError(
            f"'{name}' is constant (every pixel {float(vmin[0]):g}): there is nothing to segment."
        )
    span = torch.where(constant, torch.ones_like(hi), hi - lo)
    out = ((image - lo[:, None, None]) / span[:, None, None]).float()
    if bool(constant.any()):
        out[constant] = 0.0
    return out


def to_label_tensor(labels: Any, shape: tuple[int, int] | None = None, name: str = "labels") -> torch.Tensor:
    """An instance map as an (H, W) int64 tensor: 0 = background, ids >= 1 (gaps allowed).

    Raises:
        TypeError: not an integer map (floats holding whole numbers are accepted).
        ValueError: wrong rank, negative ids, or a size that differs from ``shape``.
    """
    x = _as_array(labels, name)
    if isinstance(x, np.ndarray):
        if x.dtype.kind == "f" and x.size and np.all(np.mod(x, 1) == 0):
            x = x.astype(np.int64)
        if x.dtype.kind not in "biu":
            raise TypeError(f"'{name}' must be an integer instance map. Got {shape_str(x)} instead.")
        x = torch.from_numpy(np.ascontiguousarray(x).astype(np.int64, copy=False))
    else:
        if x.is_floating_point() and x.numel() and bool((x == x.round()).all()):
            x = x.round()
        elif x.is_floating_point() or x.is_complex():
            raise TypeError(f"'{name}' must be an integer instance map. Got {shape_str(x)} instead.")
        x = x.to(torch.int64)
    if x.ndim == 3 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 2:
        raise ValueError(f"'{name}' must be an (H, W) instance map. Got {shape_str(x)} instead.")
    if shape is not None and tuple(x.shape) != tuple(shape):
        raise ValueError(
            f"'{name}' must have the image's size {tuple(shape)}. Got {shape_str(x)} instead."
        )
    if x.numel() and int(x.min()) < 0:
        raise ValueError(
            f"'{name}' must hold instance ids >= 0 (0 = background). Got minimum {int(x.min())}."
        )
    return x


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file (png, tif, jpg) into a numpy array of its stored dtype.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file cannot be decoded as an image (the message names the file and
            keeps the reader's reason).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No image file at '{path}'.")
    if path.suffix.lower() in (".tif", ".tiff"):
        tifffile = require("tifffile", "image")
        reader = tifffile.imread
    else:
        reader = require("skimage.io", "image").imread
    try:
        return np.asarray(reader(str(path)))
    except Exception as exc:  # PIL, imageio and tifffile raise many unrelated error types
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = lines[0] if lines else type(exc).__name__  # later lines are install hints
        raise ValueError(f"Could not read '{path}' as an image (png, tif, jpg): {reason}") from exc


def read_labels(path: str | Path) -> np.ndarray:
    """Read an instance mask file; an RGB(A) mask whose channels are equal is reduced to one."""
    x = read_image(path)
    if x.ndim == 3 and x.shape[-1] in (3, 4):
        rgb = x[..., :3]
        if np.all(rgb == rgb[..., :1]):
            x = rgb[..., 0]
        else:
            # Color-coded instances: each distinct color is one instance, black is background.
            flat = rgb.reshape(-1, 3).astype(np.int64)
            code = (flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]
            _, inv = np.unique(code, return_inverse=True)
            inv = inv.reshape(x.shape[:2])
            x = np.where(code.reshape(x.shape[:2]) == 0, 0, inv + 1)
    return x


def _suffix_list(suffixes: tuple[str, ...]) -> str:
    return ", ".join(suffixes[:-1]) + " or " + suffixes[-1]


def check_output_path(path: str | Path, suffixes: tuple[str, ...], name: str = "path", what: str = "a file") -> Path:
    """Check, before anything is computed or written, that ``path`` can take an output file.

    The suffix must be one of ``suffixes`` (case-insensitive), ``path`` must not be a folder,
    and its parent folder must exist.

    Raises:
        ValueError: a wrong or missing suffix, or ``path`` is a folder.
        FileNotFoundError: the parent folder does not exist.
    """
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise TypeError(f"'{name}' must be a file path. Got {path!r} instead.")
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        got = f"'{path.name}' (suffix '{path.suffix}')" if path.suffix else f"'{path.name}' (no suffix)"
        raise ValueError(f"'{name}' must be {what} ending in {_suffix_list(suffixes)}. Got {got} instead.")
    if path.is_dir():
        raise ValueError(f"'{name}' must be {what}, not a folder. Got '{path}', an existing folder.")
    parent = path.parent
    if not parent.is_dir():
        raise FileNotFoundError(f"'{name}' must be in an existing folder. Got '{path}', but '{parent}' is not a folder.")
    return path


def write_labels(path: str | Path, labels: Any, name: str = "path") -> None:
    """Write an instance map: 16-bit PNG/TIFF (ids up to 65535), else 32-bit TIFF.

    ``path`` must end in .png, .tif or .tiff (the formats that keep integer ids exactly); it is
    checked before anything is written, and the file appears only once it is complete.

    Raises:
        ValueError: another suffix, ids above 65535 for a .png, or a label map that is not an
            (H, W) map of ids >= 0.
        FileNotFoundError: the parent folder does not exist.
    """
    path = check_output_path(path, LABEL_SUFFIXES, name, "a label map file")
    arr = to_label_tensor(labels, name="labels").numpy()
    tif = path.suffix.lower() in (".tif", ".tiff")
    top = int(arr.max(initial=0))
    if top > 65535 and not tif:
        raise ValueError(
            f"'{name}' must be a .tif or .tiff file for label ids above 65535. Got '{path.name}' with ids up to {top}."
        )
    if tif:
        tifffile = require("tifffile", "image")
        data = arr.astype(np.uint16 if top <= 65535 else np.uint32)
        atomic_write_with(path, lambda tmp: tifffile.imwrite(tmp, data))
        return
    skio = require("skimage.io", "image")
    data = arr.astype(np.uint16)
    atomic_write_with(path, lambda tmp: skio.imsave(tmp, data, check_contrast=False))


def write_image(path: str | Path, image: Any, name: str = "path") -> None:
    """Write an 8-bit gray or RGB(A) picture (H, W) or (H, W, C) as png, tif or jpg.

    The suffix is checked before anything is written, and the file appears only once complete.

    Raises:
        ValueError: another suffix, or not an (H, W) / (H, W, 1|3|4) uint8-compatible array.
        FileNotFoundError: the parent folder does not exist.
    """
    path = check_output_path(path, IMAGE_SUFFIXES, name, "an image file")
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (1, 3, 4))) or arr.dtype != np.uint8:
        raise ValueError(f"'image' must be a uint8 (H, W) or (H, W, C) array with C in 1, 3, 4. Got {shape_str(arr)} instead.")
    if path.suffix.lower() in (".jpg", ".jpeg") and arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]  # JPEG has no alpha channel
    skio = require("skimage.io", "image")
    atomic_write_with(path, lambda tmp: skio.imsave(tmp, arr, check_contrast=False))
