"""``embedseg segment MODEL IMAGE --out labels.png [--overlay overlay.png] [--overwrite]``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from embedseg.cli import count_argument, device_argument

__all__ = ["add_segment_command", "run_segment"]


def add_segment_command(subparsers: Any) -> None:
    """Add the ``segment`` subcommand to ``embedseg``'s parser."""
    p = subparsers.add_parser(
        "segment",
        help="segment an image into instances with a trained image model",
        description="Segment an image (png, tif, jpg; gray, RGB, 8/16-bit) into instances and "
        "write the label map (16-bit PNG or TIFF, 0 = background). The outputs are checked before "
        "anything runs: neither may be the input image, and an existing file is replaced only "
        "with --overwrite. Each file appears only once completely written.",
    )
    p.add_argument("model", metavar="MODEL", help="a saved image model folder")
    p.add_argument("image", metavar="IMAGE", help="the image file")
    p.add_argument("--out", required=True, help="output label map (.png, .tif or .tiff)")
    p.add_argument("--overlay", default=None, help="also write a colored overlay (.png, .jpg or .tif)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (never the input image)")
    p.add_argument("--n-instances", type=count_argument(0), default=None, help="the number of instances (default: automatic)")
    p.add_argument("--device", type=device_argument, default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    p.set_defaults(func=run_segment)


def run_segment(args: argparse.Namespace) -> int:
    """Run the ``segment`` command; returns the exit code.

    Errors are raised (``ValueError``, ``OSError``, ...) for ``embedseg.cli.main`` to report as
    one ``embedseg: error: ...`` line with exit status 2. The outputs are checked before the
    model runs (never the input image; an existing file only with ``--overwrite``), again just
    before they are written, and each file appears only once it is completely written.
    """
    import embedseg
    from embedseg.io import check_output_files

    from .imageio import IMAGE_SUFFIXES, LABEL_SUFFIXES, check_output_path, read_image, write_image, write_labels
    from .viz import overlay

    out = check_output_path(args.out, LABEL_SUFFIXES, "--out", "a label map file")
    outputs = [("--out", out)]
    if args.overlay is not None:
        outputs.append(("--overlay", check_output_path(args.overlay, IMAGE_SUFFIXES, "--overlay", "an image file")))
    inputs = [("input image", Path(args.image))]

    def check_outputs() -> None:
        check_output_files(outputs, inputs, overwrite=args.overwrite, how_to_overwrite="pass --overwrite")

    check_outputs()
    image = read_image(args.image)
    model = embedseg.load(args.model, device=args.device)
    if not callable(getattr(model, "segment", None)):
        raise ValueError(f"'MODEL' must be an image model. Got '{args.model}', a model of the {model.domain.name!r} domain.")
    labels = model.segment(image, n_instances=args.n_instances)
    check_outputs()  # a file may have appeared while the model ran
    write_labels(out, labels, name="--out")
    if args.overlay is not None:
        picture = (overlay(image, labels) * 255).round().astype("uint8")
        write_image(args.overlay, picture, name="--overlay")
    print(f"{int(labels.max())} instances -> {args.out}")
    return 0
