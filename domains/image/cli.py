"""``embedseg segment MODEL IMAGE --out labels.png [--overlay overlay.png]``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_segment_command", "run_segment"]


def add_segment_command(subparsers: Any) -> None:
    """Add the ``segment`` subcommand to ``embedseg``'s parser."""
    p = subparsers.add_parser(
        "segment",
        help="segment an image into instances with a trained image model",
        description="Segment an image (png, tif, jpg; gray, RGB, 8/16-bit) into instances and "
        "write the label map (16-bit PNG or TIFF, 0 = background).",
    )
    p.add_argument("model", help="a saved image model folder")
    p.add_argument("image", help="the image file")
    p.add_argument("--out", required=True, help="output label map (.png or .tif)")
    p.add_argument("--overlay", default=None, help="also write a colored overlay PNG")
    p.add_argument("--n-instances", type=int, default=None, help="the number of instances (default: automatic)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.set_defaults(func=run_segment)


def run_segment(args: argparse.Namespace) -> int:
    """Run the ``segment`` command; returns the exit code."""
    import embedseg
    from skimage import io as skio

    from .imageio import read_image, write_labels
    from .viz import overlay

    try:
        model = embedseg.load(args.model, device=args.device)
        if "segment" not in type(model.domain).model_methods:
            print(f"error: '{args.model}' is a {model.domain.name!r} model, not an image model.", file=sys.stderr)
            return 2
        image = read_image(args.image)
        labels = model.segment(image, n_instances=args.n_instances)
        write_labels(args.out, labels)
        if args.overlay:
            picture = (overlay(image, labels) * 255).round().astype("uint8")
            skio.imsave(args.overlay, picture, check_contrast=False)
    except (OSError, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{int(labels.max())} instances -> {args.out}")
    return 0
