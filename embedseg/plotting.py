"""Small plotting helpers (matplotlib, Agg backend): training curves and label maps.

matplotlib is an optional extra (``pip install 'embedseg-dc[plot]'``); these functions import it
on call and never change the user's global backend.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["plot_training_curves", "figure", "save_figure"]


def figure(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] | None = None, **subplots: Any):
    """A matplotlib ``(fig, axes)`` made without pyplot, so no GUI backend is ever touched.

    Args:
        nrows, ncols: the grid of axes.
        figsize: inches (width, height).
        **subplots: passed to ``Figure.subplots`` (``squeeze``, ``sharex``, ...).
    """
    from .errors import require

    require("matplotlib", "plot")
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **subplots)


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Write a figure as PNG atomically (temporary file, then rename); returns the path."""
    import io as _io

    from .io import atomic_write_bytes

    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def _series(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for row in rows:
        value = row.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            xs.append(float(row["step"]))
            ys.append(float(value))
    return xs, ys


def plot_training_curves(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path | None:
    """Plot losses, learning rate and validation metrics of a training log to a PNG.

    Args:
        rows: log rows with ``step`` and any of ``train_loss``, ``valid_loss``, ``lr`` and
            metric columns (what the trainer writes to ``log.csv``).
        path: the PNG to write.

    Returns:
        The path written, or None when there is nothing to plot yet.
    """
    skip = {"step", "epoch", "train_loss", "valid_loss", "lr", "time_s"}
    metrics: list[str] = []
    for row in rows:
        for key in row:
            if key not in skip and key not in metrics and _series(rows, key)[0]:
                metrics.append(key)
    if not _series(rows, "train_loss")[0] and not _series(rows, "valid_loss")[0]:
        return None
    n_panels = 2 + (1 if metrics else 0)
    fig, axes = figure(1, n_panels, figsize=(4.2 * n_panels, 3.4), squeeze=False)
    axes = axes[0]
    ax = axes[0]
    for key, style in (("train_loss", "-"), ("valid_loss", "o-")):
        xs, ys = _series(rows, key)
        if xs:
            ax.plot(xs, ys, style, label=key.replace("_", " "), markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    xs, ys = _series(rows, "lr")
    axes[1].plot(xs, ys)
    axes[1].set_xlabel("step")
    axes[1].set_title("learning rate")
    if ys and min(ys) > 0:
        axes[1].set_yscale("log")
    axes[1].grid(alpha=0.3)
    if metrics:
        ax = axes[2]
        for key in metrics:
            xs, ys = _series(rows, key)
            ax.plot(xs, ys, "o-", label=key, markersize=3)
        ax.set_xlabel("step")
        ax.set_title("validation metrics")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)
