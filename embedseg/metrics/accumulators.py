"""Accumulators any domain can use: a weighted mean, a mean of per-item scores, pooled
instance matching, and separation scores.

Each states how it pools in its docstring; feeding one the data in any split of batches, or
merging accumulators that saw parts of it, gives the figures of one pass over all of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from embedseg._validation import check_int, check_tensor, shape_str

from ._labels import items_of, same_length
from .base import Metric
from .matching import DEFAULT_THRESHOLDS, check_thresholds, pooled_counts, scores
from .separation import separation_scores

__all__ = ["MeanMetric", "ItemMean", "InstanceMatching", "SeparationMetrics"]


class MeanMetric(Metric):
    """Weighted mean of values: sum(weight * value) / sum(weight) over everything seen.

    Example:
        >>> m = MeanMetric()
        >>> m.update([1.0, 2.0]); m.update(4.0, weight=2.0)
        >>> m.compute()
        2.75
    """

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", 0.0)  # sum of weight * value
        self.add_state("weight", 0.0)  # sum of weights

    def update(self, value: Any, weight: Any = 1.0) -> None:
        """Add values (a number, or an array of them, each an item) with their weights.

        Args:
            value: a number, sequence, array or tensor; +-inf allowed, NaN is not.
            weight: non-negative finite weight(s), broadcast to ``value``'s shape.
        """
        v = torch.as_tensor(value, dtype=torch.float64).detach().cpu()
        w = torch.as_tensor(weight, dtype=torch.float64).detach().cpu()
        if bool(torch.isnan(v).any()):
            raise ValueError(f"'value' must not be NaN. Got {shape_str(v)} with {int(torch.isnan(v).sum())} NaN entries.")
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise ValueError(f"'weight' must be finite and >= 0. Got {w.tolist()!r} instead.")
        try:
            w = torch.broadcast_to(w, v.shape)
        except RuntimeError:
            raise ValueError(
                f"'weight' must be a number or have the shape of 'value' {tuple(v.shape)}. Got {tuple(w.shape)} instead."
            ) from None
        # A zero weight on an infinite value contributes nothing (not NaN).
        self.total = self.total + torch.where(w > 0, w * v, torch.zeros_like(v)).sum()
        self.weight = self.weight + w.sum()

    def compute(self) -> float:
        """The weighted mean.

        Raises:
            ValueError: no value with a positive weight was seen.
        """
        if float(self.weight) <= 0:
            raise self._no_items()
        return float(self.total / self.weight)


class ItemMean(Metric):
    """Mean over items of per-item scores: each item counts once, whatever its size.

    ``fn`` turns what :meth:`update` is given into scores: one mapping ``{name: score}`` (one
    item) or a sequence of them (one per item). This is the accumulator a domain's own metric
    needs when its figure is a per-item score.

    Args:
        fn: called as ``fn(*args, **kwargs)`` by ``update(*args, **kwargs)``; every item must
            give the same names.

    Example:
        >>> m = ItemMean(lambda truth, pred: [{"correct": float(t == p)} for t, p in zip(truth, pred)])
        >>> m.update([1, 2, 3], [1, 2, 0])
        >>> m.compute()
        {'correct': 0.6666666666666666}
    """

    _PREFIX = "sum:"

    def __init__(self, fn: Callable[..., Any]) -> None:
        super().__init__()
        if not callable(fn):
            raise TypeError(f"The 'fn' parameter of ItemMean must be callable. Got {fn!r} ({type(fn).__name__}) instead.")
        self.fn = fn
        self.add_state("n_items", 0)

    @property
    def names(self) -> list[str]:
        """The score names seen so far, in the order of the first item."""
        return [k[len(self._PREFIX) :] for k in self._states if k.startswith(self._PREFIX)]

    def _declare(self, names: Sequence[str]) -> None:
        """Drop the score states and declare one sum per name."""
        for key in [k for k in self._states if k.startswith(self._PREFIX)]:
            for table in (self._states, self._defaults, self._reductions):
                del table[key]
        for name in names:
            self.add_state(self._PREFIX + name, 0.0)

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Score items with ``fn(*args, **kwargs)`` and add them."""
        result = self.fn(*args, **kwargs)
        if isinstance(result, Mapping):
            items = [result]
        elif isinstance(result, Sequence) and not isinstance(result, str):
            items = list(result)
        else:
            raise TypeError(f"'fn' must return a mapping of scores, or a sequence of them. Got {result!r} instead.")
        if not items:
            return
        first = items[0]
        if not isinstance(first, Mapping) or not first:
            raise TypeError(f"'fn' must return a non-empty mapping of scores, or a sequence of them. Got {first!r} instead.")
        names = [str(k) for k in first]
        expected = set(self.names) if int(self.n_items) > 0 else set(names)
        sums = dict.fromkeys(names, 0.0)
        for i, item in enumerate(items):
            if not isinstance(item, Mapping) or set(map(str, item)) != expected:
                got = sorted(map(str, item)) if isinstance(item, Mapping) else repr(item)
                raise ValueError(f"'fn' must give the scores {sorted(expected)} for every item. Got {got} for item {i}.")
            for key, value in item.items():
                value = float(value)
                if math.isnan(value):
                    raise ValueError(f"'fn' must give scores that are not NaN. Got NaN for {key!r} of item {i}.")
                sums[str(key)] += value
        if int(self.n_items) == 0:
            self._declare(names)
        for name, value in sums.items():
            key = self._PREFIX + name
            self._states[key] = self._states[key] + value
        self.n_items = self.n_items + len(items)

    def compute(self) -> dict[str, float]:
        """``{name: mean over items}``.

        Raises:
            ValueError: no item was scored.
        """
        n = int(self.n_items)
        if n == 0:
            raise self._no_items()
        return {name: float(self._states[self._PREFIX + name]) / n for name in self.names}

    def reset(self) -> ItemMean:
        super().reset()
        self._declare([])
        return self

    def _check_state(self, state: Any) -> Mapping[str, Any]:
        """As :meth:`Metric._check_state`, for this accumulator's names declared on use."""
        if not isinstance(state, Mapping):
            raise TypeError(f"'state' must be a dict from ItemMean.state_dict(). Got {type(state).__name__} instead.")
        bad = [k for k in state if k != "n_items" and not str(k).startswith(self._PREFIX)]
        if "n_items" not in state or bad:
            raise ValueError(
                f"'state' must hold 'n_items' and '{self._PREFIX}NAME' states of ItemMean. Got {sorted(state)} instead."
            )
        for key, value in state.items():
            if not isinstance(value, torch.Tensor) or value.ndim != 0:
                raise ValueError(f"State {key!r} of ItemMean must be a 0-d tensor. Got {shape_str(value)} instead.")
        names = {k[len(self._PREFIX) :] for k in state if k != "n_items"}
        if int(state["n_items"]) > 0 and int(self.n_items) > 0 and names != set(self.names):
            raise ValueError(
                f"'state' must score the names {sorted(self.names)} of this ItemMean. Got {sorted(names)} instead."
            )
        return state

    def _merge_states(self, state: Mapping[str, Any]) -> None:
        if int(state["n_items"]) == 0:
            return
        if int(self.n_items) == 0:
            self._declare([k[len(self._PREFIX) :] for k in state if k != "n_items"])
        for key, value in state.items():
            self._states[key] = self._states[key] + value.detach().to("cpu", self._defaults[key].dtype)


class InstanceMatching(Metric):
    """Instance matching pooled over a dataset, as StarDist's ``matching_dataset``.

    True positives, the number of true and of predicted instances, and the IoU of the matched
    pairs are pooled over all instances of all images seen, then scored: :meth:`compute` is
    exactly :func:`embedseg.metrics.matching_dataset` of every image seen, at each threshold.

    Args:
        thresholds: one IoU threshold in (0, 1] or a sequence of them.

    Example:
        >>> import numpy as np
        >>> m = InstanceMatching(0.5)
        >>> m.update([np.array([[1, 1, 0, 2, 2]])], [np.array([[1, 1, 0, 2, 0]])])
        >>> m.update([np.array([[1, 1, 1, 0]])], [np.array([[0, 0, 0, 3]])])
        >>> r = m.compute()
        >>> r["tp"], r["fp"], r["fn"], r["ap"]
        (2, 1, 1, 0.5)
    """

    def __init__(self, thresholds: float | Sequence[float] = DEFAULT_THRESHOLDS) -> None:
        super().__init__()
        self._single, self.thresholds = check_thresholds(thresholds, "InstanceMatching")
        k = len(self.thresholds)
        self.add_state("tp", torch.zeros(k, dtype=torch.int64))  # true positives per threshold
        self.add_state("sum_iou", torch.zeros(k, dtype=torch.float64))  # IoU of the true positives
        self.add_state("n_true", 0)  # true instances
        self.add_state("n_pred", 0)  # predicted instances
        self.add_state("n_items", 0)  # images

    def update(self, y_true: Any, y_pred: Any) -> None:
        """Match and add images.

        Args:
            y_true: sequence of true integer label maps (0 = background).
            y_pred: sequence of predicted label maps, each of the shape of its true map.
        """
        tp, sum_iou, n_true, n_pred, n_items = pooled_counts(y_true, y_pred, self.thresholds, ("y_true", "y_pred"))
        self.tp = self.tp + torch.from_numpy(tp)
        self.sum_iou = self.sum_iou + torch.from_numpy(sum_iou)
        self.n_true = self.n_true + n_true
        self.n_pred = self.n_pred + n_pred
        self.n_items = self.n_items + n_items

    def compute(self) -> dict[float, dict[str, float]] | dict[str, float]:
        """As :func:`embedseg.metrics.matching`: for one threshold a dict of scores, else a dict
        from each threshold to one.

        Raises:
            ValueError: no image was scored.
        """
        if int(self.n_items) == 0:
            raise self._no_items()
        out = {
            th: scores(self.tp[k], self.n_true, self.n_pred, self.sum_iou[k], th)
            for k, th in enumerate(self.thresholds)
        }
        return out[self.thresholds[0]] if self._single else out

    def _check_mergeable(self, other: Metric) -> None:
        if other.thresholds != self.thresholds:  # type: ignore[attr-defined]
            raise ValueError(
                f"'other' must match at the thresholds {list(self.thresholds)}. "
                f"Got {list(other.thresholds)} instead."  # type: ignore[attr-defined]
            )

    def __repr__(self) -> str:
        return f"InstanceMatching(thresholds={self.thresholds[0] if self._single else list(self.thresholds)})"


class SeparationMetrics(Metric):
    """SDR, SDRi (BSS-Eval v3), SI-SDR, SI-SDRi and the source-count accuracy of separations.

    Pooling: the mean over items of the mean over each item's sources (every mixture counts
    once, whatever its length or number of sources). Estimates are assigned to references by
    the best permutation of each criterion, as :func:`embedseg.metrics.separation_scores` does.
    An item with fewer estimates than sources has the missing ones scored as the unprocessed
    mixture (an improvement of 0 dB), and counts as a wrong count; with more, the best-scoring
    subset is used.

    Args:
        bss_eval: also compute BSS-Eval SDR and SDRi (much slower than SI-SDR).
        filter_length: taps of BSS-Eval's distortion filter (512 in BSS-Eval v3).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> src = torch.randn(2, 4000, generator=g, dtype=torch.float64)
        >>> m = SeparationMetrics(bss_eval=False)
        >>> m.update([src], [src.flip(0) + 0.1 * torch.randn(2, 4000, generator=g, dtype=torch.float64)], [src.sum(0)])
        >>> round(m.compute()["si_sdr"]), m.compute()["count_accuracy"]
        (20, 1.0)
    """

    #: items scored in one batched call: bounds the memory of the BSS-Eval Gram matrices.
    CHUNK = 8

    def __init__(self, *, bss_eval: bool = True, filter_length: int = 512) -> None:
        super().__init__()
        if not isinstance(bss_eval, bool):
            raise TypeError(f"The 'bss_eval' parameter of SeparationMetrics must be a bool. Got {bss_eval!r} instead.")
        self.bss_eval = bss_eval
        self.filter_length = check_int(filter_length, "filter_length", "SeparationMetrics", 1)
        self.keys = ("sdr", "sdri", "si_sdr", "si_sdri") if bss_eval else ("si_sdr", "si_sdri")
        for key in self.keys:
            self.add_state(f"sum_{key}", 0.0)  # sum over items of the mean over sources, dB
        self.add_state("n_count_correct", 0)  # items with as many estimates as sources
        self.add_state("n_items", 0)

    def update(self, references: Any, estimates: Any, mixtures: Any) -> None:
        """Score and add separated items (they may differ in length and number of sources).

        Args:
            references: sequence of (n_sources, time) true sources, none silent.
            estimates: sequence of (n_estimates, time) separated sources.
            mixtures: sequence of (time,) mixtures.
        """
        refs = items_of(references, "references")
        ests = items_of(estimates, "estimates")
        mixes = items_of(mixtures, "mixtures")
        same_length(references=refs, estimates=ests, mixtures=mixes)
        groups: dict[tuple[Any, ...], list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {}
        n_correct = 0
        for i, (r, e, m) in enumerate(zip(refs, ests, mixes)):
            r = check_tensor(r, f"references[{i}]", ndim=2, floating=True, finite=True, what="(n_sources, time)")
            e = check_tensor(e, f"estimates[{i}]", ndim=2, floating=True, finite=True, what="(n_estimates, time)")
            m = check_tensor(m, f"mixtures[{i}]", ndim=1, floating=True, finite=True, what="(time,)")
            if not r.shape[1] == e.shape[1] == m.shape[0]:
                raise ValueError(
                    f"'references[{i}]', 'estimates[{i}]' and 'mixtures[{i}]' must have the same length. "
                    f"Got {tuple(r.shape)}, {tuple(e.shape)} and {tuple(m.shape)}."
                )
            r, e, m = r.double(), e.double(), m.to(r.device).double()
            c = r.shape[0]
            n_correct += int(e.shape[0] == c)
            if e.shape[0] < c:
                e = torch.cat([e.to(r.device), m.expand(c - e.shape[0], -1)])
            groups.setdefault((c, e.shape[0], r.shape[1], r.device), []).append((r, e.to(r.device), m))
        sums = dict.fromkeys(self.keys, 0.0)
        for group in groups.values():
            for start in range(0, len(group), self.CHUNK):
                part = group[start : start + self.CHUNK]
                got = separation_scores(
                    torch.stack([p[0] for p in part]),  # (items, n_sources, time)
                    torch.stack([p[1] for p in part]),  # (items, n_estimates, time)
                    torch.stack([p[2] for p in part]),  # (items, time)
                    bss_eval=self.bss_eval,
                    filter_length=self.filter_length,
                )
                for key in self.keys:
                    sums[key] += float(got[key].mean(-1).sum())
        for key in self.keys:
            self._states[f"sum_{key}"] = self._states[f"sum_{key}"] + sums[key]
        self.n_count_correct = self.n_count_correct + n_correct
        self.n_items = self.n_items + len(refs)

    def compute(self) -> dict[str, float]:
        """``{"sdr", "sdri", "si_sdr", "si_sdri", "count_accuracy"}`` (without "sdr" and "sdri"
        when ``bss_eval`` is False), in dB but for the accuracy.

        Raises:
            ValueError: no item was scored.
        """
        n = int(self.n_items)
        if n == 0:
            raise self._no_items()
        out = {key: float(self._states[f"sum_{key}"]) / n for key in self.keys}
        out["count_accuracy"] = int(self.n_count_correct) / n
        return out

    def _check_mergeable(self, other: Metric) -> None:
        mine = (self.bss_eval, self.filter_length)
        theirs = (other.bss_eval, other.filter_length)  # type: ignore[attr-defined]
        if mine != theirs:
            raise ValueError(f"'other' must have bss_eval, filter_length = {mine}. Got {theirs} instead.")

    def __repr__(self) -> str:
        return f"SeparationMetrics(bss_eval={self.bss_eval}, filter_length={self.filter_length})"
