"""A U-Net that gives every pixel a unit-norm embedding, plus a foreground logit.

Built from torchvision's ``Conv2dNormActivation`` blocks; weights start random (nothing is
downloaded). Two presets: ``size="cpu"`` runs the U-Net (widths 16-32-64-128) at half
resolution behind a strided stem, and restores full resolution at the end by fusing the
upsampled features with a light full-resolution branch, so a 512 x 512 image takes a fraction
of a second on two cores; ``size="gpu"`` runs a wider, deeper U-Net (widths 32-64-128-256-512)
at full resolution.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from embedseg._validation import check_bool, check_choice, check_int, check_tensor
from embedseg.errors import require
from embedseg.networks import normalize_embeddings, register_network

__all__ = ["UNetEmbedding", "UNET_SIZES"]

#: preset (base width, depth) per size name.
UNET_SIZES: dict[str, tuple[int, int, int]] = {"cpu": (16, 3, 2), "gpu": (32, 4, 1)}


def _norm(channels: int) -> nn.Module:
    # BatchNorm: in eval mode it is per-pixel affine, so the network stays translation-
    # equivariant and tiles of a large image agree with each other (GroupNorm would not).
    return nn.BatchNorm2d(channels)


class _DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        ops = require("torchvision.ops", "image")
        block = partial(ops.Conv2dNormActivation, kernel_size=3, norm_layer=_norm, activation_layer=nn.SiLU)
        super().__init__(block(cin, cout), block(cout, cout))


@register_network("image_unet")
class UNetEmbedding(nn.Module):
    """U-Net encoder-decoder mapping (batch, C, H, W) images to per-pixel embeddings.

    Any H, W works: the input is reflect-padded to a multiple of ``2**depth`` and the output
    cropped back. Pixels are flattened row-major, so embedding ``i`` is pixel ``(i // W, i % W)``.

    Args:
        in_channels: image channels (after the domain's channel conversion and coordinates).
        dim: embedding dimension.
        size: preset "cpu" or "gpu" for ``base``, ``depth`` and ``stride`` when those are None.
        base: width of the first level (doubles at each level).
        depth: number of downsampling steps.
        stride: 1 (U-Net at full resolution) or 2 (at half resolution, with a full-resolution
            fusion branch).
        foreground: add a foreground-logit head (used by the image domain's decoding).
        init: start from the network weights of a saved model (transfer learning): a model
            folder, or the name of a model shipped in the repository's ``pretrained/`` folder
            (e.g. "image-shapes"). The architecture parameters must match. None = random.

    Shape:
        input (batch, in_channels, H, W) -> ``{"embeddings": (batch, H*W, dim) unit-norm,
        "foreground": (batch, H*W) logits}``, or just the embeddings tensor when
        ``foreground=False``.

    Example:
        >>> net = UNetEmbedding(in_channels=1, dim=8)
        >>> out = net(torch.zeros(2, 1, 30, 40))
        >>> out["embeddings"].shape, out["foreground"].shape
        (torch.Size([2, 1200, 8]), torch.Size([2, 1200]))
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        dim: int = 16,
        size: str = "cpu",
        base: int | None = None,
        depth: int | None = None,
        stride: int | None = None,
        foreground: bool = True,
        init: str | None = None,
    ) -> None:
        super().__init__()
        owner = "UNetEmbedding"
        check_int(in_channels, "in_channels", owner, 1)
        check_int(dim, "dim", owner, 2)
        check_choice(size, "size", owner, tuple(UNET_SIZES))
        check_bool(foreground, "foreground", owner)
        self.in_channels = in_channels
        self.dim = dim
        self.size = size
        self.base = base
        self.depth = depth
        self.stride = stride
        self.foreground = foreground
        b, d, st = UNET_SIZES[size]
        b = b if base is None else check_int(base, "base", owner, 4)
        d = d if depth is None else check_int(depth, "depth", owner, 1, 6)
        st = st if stride is None else check_choice(stride, "stride", owner, (1, 2))
        widths = [b * 2**i for i in range(d + 1)]
        self.levels = d
        self.scale = st
        ops = require("torchvision.ops", "image")
        if st == 2:
            fine = max(b // 2, 4)
            self.fine = ops.Conv2dNormActivation(in_channels, fine, 3, norm_layer=_norm, activation_layer=nn.SiLU)
            self.stem = nn.Sequential(
                ops.Conv2dNormActivation(fine, widths[0], 3, stride=2, norm_layer=_norm, activation_layer=nn.SiLU),
                ops.Conv2dNormActivation(widths[0], widths[0], 3, norm_layer=_norm, activation_layer=nn.SiLU),
            )
            self.fuse = ops.Conv2dNormActivation(widths[0] + fine, widths[0], 1, norm_layer=_norm, activation_layer=nn.SiLU)
        else:
            self.fine = None
            self.stem = _DoubleConv(in_channels, widths[0])
            self.fuse = None
        self.down = nn.ModuleList(_DoubleConv(widths[i], widths[i + 1]) for i in range(d))
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], kernel_size=2, stride=2) for i in reversed(range(d))
        )
        self.merge = nn.ModuleList(_DoubleConv(2 * widths[i], widths[i]) for i in reversed(range(d)))
        self.embed = nn.Conv2d(widths[0], dim, kernel_size=1)
        self.fg = nn.Conv2d(widths[0], 1, kernel_size=1) if foreground else None
        self.init = init
        if init is not None:
            self._load_init(init)
        # Channels-last memory (weights here, activations from the input in forward): oneDNN's
        # convolutions run this U-Net faster on CPU in this layout, in training and at inference
        # (benchmarks/RESULTS.md), and GPUs favour it too. ``.to(device)``
        # keeps the layout; saving writes contiguous copies, so files do not depend on it.
        self.to(memory_format=torch.channels_last)

    def _load_init(self, init: str) -> None:
        """Copy the weights of a saved model's network (a folder, or a shipped model's name)."""
        from pathlib import Path

        import embedseg

        if not isinstance(init, str):
            raise TypeError(f"The 'init' parameter of UNetEmbedding must be a str or None. Got {init!r} instead.")
        path = Path(init)
        if not path.is_dir():
            path = Path(__file__).resolve().parents[2] / "pretrained" / init
        if not path.is_dir():
            raise ValueError(
                f"The 'init' parameter of UNetEmbedding must name a saved model folder or a shipped "
                f"model in pretrained/. Got {init!r}, which is neither."
            )
        source = embedseg.load(str(path)).network.state_dict()
        mine = self.state_dict()
        bad = [k for k in mine if k not in source or source[k].shape != mine[k].shape]
        if bad:
            raise ValueError(
                f"The network of '{path}' does not fit this UNetEmbedding ({len(bad)} tensors differ, "
                f"e.g. '{bad[0]}'); give the same in_channels, dim, size, base, depth and stride."
            )
        self.load_state_dict(source)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor] | torch.Tensor:
        check_tensor(x, "x", ndim=4, floating=True, what="(batch, channels, H, W)")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"'x' must have {self.in_channels} channels (batch, channels, H, W). Got shape {tuple(x.shape)}."
            )
        batch, _, h, w = x.shape
        m = 2**self.levels * self.scale
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            # Reflection needs the pad smaller than the side; replicate covers tiny images.
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        x = x.contiguous(memory_format=torch.channels_last)
        skips = []
        fine = self.fine(x) if self.fine is not None else None  # (batch, base/2, H, W)
        y = self.stem(fine if fine is not None else x)  # (batch, base, H / scale, W / scale)
        for block in self.down:
            skips.append(y)
            y = block(F.max_pool2d(y, 2))
        for up, merge in zip(self.up, self.merge):
            y = merge(torch.cat([up(y), skips.pop()], dim=1))
        if fine is not None:
            y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)  # (batch, base, H, W)
            y = self.fuse(torch.cat([y, fine], dim=1))
        y = y[:, :, :h, :w]  # (batch, base, h, w)
        # Normalized over the channels, innermost in channels-last memory; the transpose is
        # then a contiguous (batch, h*w, dim) view.
        emb = normalize_embeddings(torch.tanh(self.embed(y)), dim=1).flatten(2).transpose(1, 2)  # (batch, h*w, dim)
        if self.fg is None:
            return emb
        fg = self.fg(y).reshape(batch, h * w)  # (batch, h*w)
        return {"embeddings": emb, "foreground": fg}

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, dim={self.dim}, size={self.size!r}, levels={self.levels}, "
            f"stride={self.scale}"
        )


def network_params(module: nn.Module) -> dict[str, Any]:
    """The keyword parameters that rebuild a :class:`UNetEmbedding`."""
    return {k: getattr(module, k) for k in ("in_channels", "dim", "size", "base", "depth", "stride", "foreground", "init")}
