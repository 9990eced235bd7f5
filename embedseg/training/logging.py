"""What a run shows and writes as it goes: the progress bar, ``log.csv``, TensorBoard events and
``curves.png``."""

from __future__ import annotations

import csv
import io as _io
import math
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

__all__ = ["CsvLog", "Reporter", "finite_or_none", "progress_bar"]

#: seconds between redraws of curves.png while training (it is always drawn at the end):
#: drawing takes far longer than a step, so redrawing at every evaluation would slow short runs.
PLOT_INTERVAL_S = 30.0


def finite_or_none(record: Mapping[str, float]) -> dict[str, float | None]:
    """A metrics record with NaN/inf as None (JSON has no NaN; the CSV shows an empty cell)."""
    return {k: (float(v) if math.isfinite(float(v)) else None) for k, v in record.items()}


class CsvLog:
    """The CSV log: rows appended as they come; the file is rewritten when a column appears.

    Columns: step, epoch, train_loss, valid_loss, the validation metrics, lr, time_s, and
    skipped_steps (the steps skipped so far) once a run has skipped one.
    """

    base_columns = ["step", "epoch", "train_loss", "valid_loss"]
    tail_columns = ["lr", "time_s", "skipped_steps"]

    def __init__(self, path: Path | None, rows: list[dict[str, Any]] | None = None) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = list(rows or [])
        self.columns = self._columns()
        if self.path is not None:
            self._rewrite()

    def _columns(self) -> list[str]:
        keys: list[str] = []
        for row in self.rows:
            keys += [key for key in row if key not in keys]
        extra = [k for k in keys if k not in self.base_columns and k not in self.tail_columns]
        # skipped_steps only once a step was skipped: a healthy run's log has no such column.
        tail = [c for c in self.tail_columns if c != "skipped_steps" or c in keys]
        return self.base_columns + extra + tail

    def _line(self, row: Mapping[str, Any]) -> str:
        buf = _io.StringIO()
        csv.writer(buf).writerow(["" if row.get(c) is None else row.get(c) for c in self.columns])
        return buf.getvalue()

    def _rewrite(self) -> None:
        from ..io import atomic_write_bytes

        text = ",".join(self.columns) + "\n" + "".join(self._line(r) for r in self.rows)
        atomic_write_bytes(self.path, text.encode("utf-8"))

    def add(self, row: dict[str, Any]) -> None:
        """Add a row, merging into the last one when both are for the same step."""
        if self.rows and self.rows[-1]["step"] == row["step"]:
            self.rows[-1].update({k: v for k, v in row.items() if v is not None})
            row, merged = self.rows[-1], True
        else:
            self.rows.append(row)
            merged = False
        if self.path is None:
            return
        if merged or any(k not in self.columns for k in row):
            self.columns = self._columns()
            self._rewrite()
        else:
            with open(self.path, "a", encoding="utf-8", newline="") as f:
                f.write(self._line(row))


def progress_bar(total: int | None, initial: int, show: bool) -> Any:
    """A tqdm bar over the steps (hidden unless ``show``)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not show, unit="step", dynamic_ncols=True, desc="training")


class Reporter:
    """The files a run writes as it goes: ``log.csv``, TensorBoard events and ``curves.png``.

    Args:
        out_dir: the run folder, or None to keep the log in memory and write nothing (a run
            without out_dir, or a process other than rank 0).
        rows: the log rows of the interrupted runs a resumed run continues.
        tensorboard: also write TensorBoard events to ``out_dir/tensorboard``.
        plot: draw ``out_dir/curves.png``.
        purge_step: a resumed run's step: TensorBoard events past it are dropped.
    """

    def __init__(
        self, out_dir: Path | None, rows: list[dict[str, Any]], *, tensorboard: bool, plot: bool,
        purge_step: int | None,
    ) -> None:
        self.log = CsvLog(out_dir / "log.csv" if out_dir is not None else None, rows)
        self.curves_path = out_dir / "curves.png" if plot and out_dir is not None else None
        self._last_plot = -math.inf
        self.writer = None
        if tensorboard and out_dir is not None:
            from ..errors import require

            require("tensorboard", "dev")  # a clear message naming the extra when it is missing
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(out_dir / "tensorboard"), purge_step=purge_step)

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The log's rows, as a checkpoint keeps them."""
        return self.log.rows

    def train_row(self, row: dict[str, Any]) -> None:
        """Log the train loss (``row["train_loss"]``, None when every step since the last row was
        skipped) and learning rate at ``row["step"]``."""
        self.log.add(row)
        if self.writer is not None and row.get("train_loss") is not None:
            self.writer.add_scalar("train/loss", row["train_loss"], row["step"])
            self.writer.add_scalar("train/lr", row["lr"], row["step"])

    def eval_row(self, row: dict[str, Any]) -> None:
        """Log an evaluation's values (NaN as None) at ``row["step"]``."""
        self.log.add(row)

    def eval_scalars(self, record: Mapping[str, float], step: int) -> None:
        """An evaluation's values as TensorBoard scalars."""
        if self.writer is not None:
            for key, value in record.items():
                self.writer.add_scalar(f"valid/{key}", value, step)

    def plot(self, final: bool = False) -> None:
        """Redraw ``curves.png``: at most every PLOT_INTERVAL_S seconds while training, always when ``final``."""
        if self.curves_path is None:
            return
        now = time.monotonic()
        if not final and now - self._last_plot < PLOT_INTERVAL_S:
            return
        self._last_plot = now
        from ..errors import MissingExtraError
        from ..plotting import plot_training_curves

        # The count of skipped steps is not a validation metric: the metrics panel leaves it out.
        rows = [{k: v for k, v in row.items() if k != "skipped_steps"} for row in self.log.rows]
        try:
            plot_training_curves(rows, self.curves_path)
        except MissingExtraError as exc:
            # matplotlib is an optional extra: the run goes on without the picture (log.csv
            # holds the same numbers), and says so once.
            self.curves_path = None
            warnings.warn(f"{exc} Training goes on without writing curves.png (plot=False hides this).")

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
