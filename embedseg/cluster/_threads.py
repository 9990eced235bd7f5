"""One torch thread for small CPU steps when OpenMP lets idle threads sleep.

Below :data:`SMALL_WORK` (point, center) scores per step, a Lloyd, k-means++ or EM step on the
CPU runs faster on one thread when OpenMP lets its idle threads sleep
(``OMP_WAIT_POLICY=passive``, as on shared machines): every parallel region (each matmul,
each large elementwise operation) then has to wake them, which costs more than the work it
splits. With OpenMP's default spin-waiting the second thread pays off, so nothing is
limited. ``EMBEDSEG_SMALL_WORK`` overrides the threshold (0: never limit). The measurements
behind the default are in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import os
import warnings

import torch

__all__ = ["SMALL_WORK", "OneThreadForSmallWork"]

_PASSIVE_OPENMP = os.environ.get("OMP_WAIT_POLICY", "").strip().lower() == "passive"


def _small_work_threshold() -> int:
    default = 1 << 22 if _PASSIVE_OPENMP else 0
    value = os.environ.get("EMBEDSEG_SMALL_WORK", "").strip()
    if not value:
        return default
    try:
        return max(0, int(float(value)))
    except ValueError:
        warnings.warn(
            f"EMBEDSEG_SMALL_WORK must be a number of scores (e.g. 4000000), got {value!r}; "
            f"using {default}",
            RuntimeWarning,
            stacklevel=2,
        )
        return default


SMALL_WORK = _small_work_threshold()


class OneThreadForSmallWork:
    """Holds torch's intra-op threads at one while small CPU work runs, and restores them.

    Like scikit-learn's k-means, which limits BLAS to one thread around its own loop, this
    changes the process-wide setting for the duration: ``engage(work)`` switches to one
    thread the first time it is called with fewer than :data:`SMALL_WORK` units on a CPU
    device; leaving the ``with`` block restores the count found then. Nothing changes on
    CUDA, or when torch already runs one thread (so nested or concurrent users leave the
    setting as they found it).
    """

    def __init__(self, device: torch.device) -> None:
        self.cpu = device.type == "cpu"
        self.saved: int | None = None

    def engage(self, work: int) -> None:
        """Switch to one thread if ``work`` is below the threshold (once per block)."""
        if self.cpu and self.saved is None and work < SMALL_WORK:
            threads = torch.get_num_threads()
            if threads > 1:
                self.saved = threads
                torch.set_num_threads(1)

    def __enter__(self) -> "OneThreadForSmallWork":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.saved is not None:
            torch.set_num_threads(self.saved)
            self.saved = None
