"""``embedseg segment MODEL IMAGE --out labels.png [--overlay overlay.png]``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from embedseg.cli import count_argument

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
    p.add_argument("--out", required=True, help="output label map (.png, .tif or .tiff)")
    p.add_argument("--overlay", default=None, help="also write a colored overlay (.png, .jpg or .tif)")
    p.add_argument("--n-instances", type=count_argument(0), default=None, help="the number of instances (default: automatic)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.set_defaults(func=run_segment)


def run_segment(args: argparse.Namespace) -> int:
    """Run the ``segment`` command; returns the exit code.

    Errors are raised (``ValueError``, ``OSError``, ...) for ``embedseg.cli.main`` to report as
    one ``embedseg: error: ...`` line with exit status 2. The outputs are checked before the
    model runs, and each file appears only once it is completely written.
    """
    import embedseg

    from .imageio import IMAGE_SUFFIXES, LABEL_SUFFIXES, check_output_path, read_image, write_image, write_labels
    from .viz import overlay

    out = check_output_path(args.out, LABEL_SUFFIXES, "--out", "a label map file")
    if args.overlay is not None:
        check_output_path(args.overlay, IMAGE_SUFFIXES, "--overlay", "an image file")
        if Path(args.overlay).resolve() == out.resolve():
            raise ValueError(f"'--overlay' must differ from '--out'. Got '{args.overlay}' for both.")
    image = read_image(args.image)
    model = embedseg.load(args.model, device=args.device)
    if "segment" not in type(model.domain).model_methods:
        raise ValueError(f"'MODEL' must be an image model. Got '{args.model}', a model of the {model.domain.name!r} domain.")
    labels = model.segment(image, n_instances=args.n_instances)
    write_labels(out, labels, name="--out")
    if args.overlay is not None:
        picture = (overlay(image, labels) * 255).round().astype("uint8")
        write_image(args.overlay, picture, name="--overlay")
    print(f"{int(labels.max())} instances -> {args.out}")
    return 0
