"""The accumulator base class: states declared once, each with the way it pools.

A :class:`Metric` keeps only summaries of what it has seen (counts, sums, extremes, or
concatenated values), each declared with :meth:`Metric.add_state` together with its
reduction. Two accumulators that saw different parts of the data :meth:`~Metric.merge` into
the accumulator that saw all of it, which is how the processes of a distributed run pool their
states (:meth:`Metric.sync`): a figure is defined once and is the same on 1 or N processes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

__all__ = ["Metric", "REDUCTIONS"]

#: how a state pools: "sum" adds, "max" / "min" keep the extreme (elementwise), "cat"
#: concatenates along the first dimension.
REDUCTIONS: tuple[str, ...] = ("sum", "cat", "max", "min")


def _as_state_tensor(value: Any, name: str) -> torch.Tensor:
    """A detached CPU copy; Python floats become float64 and ints int64, so sums stay exact."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"'default' of state '{name}' must be a tensor, an int, a float or [] (for reduce='cat'). "
            f"Got {value!r} ({type(value).__name__}) instead."
        )
    return torch.tensor(value, dtype=torch.int64 if isinstance(value, int) else torch.float64)


class Metric:
    """Base class of accumulators, in the style of torchmetrics' ``Metric``.

    A subclass declares its states in ``__init__`` with :meth:`add_state`, adds to them in
    :meth:`update` and turns them into scores in :meth:`compute`. States are CPU tensors (a
    list of tensors for ``reduce="cat"``) read and written as attributes, so they pickle and
    travel between processes as they are. An attribute holding another Metric is a child: its
    states are reset, merged, saved and loaded with this one's.

    :meth:`compute` of an accumulator that has scored nothing raises ``ValueError`` ("no items
    were scored ...") rather than returning an empty dict or NaN.

    Example:
        >>> import torch
        >>> class Largest(Metric):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.add_state("largest", torch.tensor(float("-inf")), reduce="max")
        ...     def update(self, x):
        ...         self.largest = torch.maximum(self.largest, torch.as_tensor(x, dtype=torch.float32).max())
        ...     def compute(self):
        ...         return float(self.largest)
        >>> a, b = Largest(), Largest()
        >>> a.update([1.0, 4.0]); b.update([3.0])
        >>> a.merge(b).compute()
        4.0
    """

    def __init__(self) -> None:
        object.__setattr__(self, "_states", {})
        object.__setattr__(self, "_defaults", {})
        object.__setattr__(self, "_reductions", {})
        object.__setattr__(self, "_children", {})

    # -- states ---------------------------------------------------------------------------------
    def add_state(self, name: str, default: Any, reduce: str = "sum") -> None:
        """Declare a state, set to ``default`` now and by :meth:`reset`.

        Args:
            name: the attribute that holds it.
            default: a tensor or a Python number (kept as a CPU tensor: float64 for a float,
                int64 for an int), or ``[]`` for ``reduce="cat"``.
            reduce: how two accumulators' states combine in :meth:`merge`: "sum", "max", "min"
                (elementwise) or "cat" (the lists of tensors are joined).

        Raises:
            ValueError: an unknown ``reduce``, a name already in use, or a "cat" state whose
                default is not ``[]``.
            TypeError: a default of another type.
        """
        if "_states" not in self.__dict__:
            raise TypeError(f"{type(self).__name__}.__init__ must call Metric.__init__ before add_state.")
        if reduce not in REDUCTIONS:
            raise ValueError(f"The 'reduce' parameter of add_state must be one of {list(REDUCTIONS)}. Got {reduce!r} instead.")
        if not isinstance(name, str) or not name or name.startswith("_"):
            raise ValueError(f"The 'name' parameter of add_state must be a non-empty str not starting with '_'. Got {name!r} instead.")
        if name in self._states or name in self.__dict__ or hasattr(type(self), name):
            raise ValueError(f"The 'name' parameter of add_state must be a new name. Got {name!r}, already in use.")
        if reduce == "cat":
            if not (isinstance(default, list) and not default):
                raise ValueError(f"The 'default' of a 'cat' state must be []. Got {default!r} instead.")
            self._defaults[name] = []
            self._states[name] = []
        else:
            tensor = _as_state_tensor(default, name)
            self._defaults[name] = tensor
            self._states[name] = tensor.clone()
        self._reductions[name] = reduce

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: the states live in one dict, not in __dict__.
        states = self.__dict__.get("_states")
        if states is not None and name in states:
            return states[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        states = self.__dict__.get("_states")
        if states is not None and name in states:
            states[name] = value
            return
        children = self.__dict__.get("_children")
        if children is not None:
            if isinstance(value, Metric):
                children[name] = value
            else:
                children.pop(name, None)
        object.__setattr__(self, name, value)

    # -- the accumulator's life -----------------------------------------------------------------
    def update(self, *args: Any, **kwargs: Any) -> None:
        """Add what one batch (or one item) contributes to the states."""
        raise NotImplementedError(f"{type(self).__name__} must define update().")

    def compute(self) -> Any:
        """The scores of everything seen since creation or the last :meth:`reset`."""
        raise NotImplementedError(f"{type(self).__name__} must define compute().")

    def reset(self) -> Metric:
        """Forget everything seen: every state (children's too) back to its default."""
        for name, default in self._defaults.items():
            self._states[name] = [] if isinstance(default, list) else default.clone()
        for child in self._children.values():
            child.reset()
        return self

    @property
    def empty(self) -> bool:
        """True while every state (children's too) holds its default: nothing was scored."""
        for name, default in self._defaults.items():
            value = self._states[name]
            if isinstance(default, list):
                if value:
                    return False
            elif not torch.equal(value, default):
                return False
        return all(child.empty for child in self._children.values())

    def _no_items(self) -> ValueError:
        """The error of :meth:`compute` before anything was scored."""
        return ValueError(
            f"{type(self).__name__}.compute(): no items were scored since it was created or reset; "
            "call update() with at least one item first."
        )

    # -- moving states between accumulators ----------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Copies of the states as plain CPU tensors, a child's as a nested dict.

        A "cat" state is saved as one tensor (its parts joined along the first dimension; an
        empty tensor when it has none).
        """
        out: dict[str, Any] = {}
        for name, value in self._states.items():
            if isinstance(value, list):
                out[name] = torch.cat([v.reshape(-1, *v.shape[1:]) for v in value]) if value else torch.empty(0)
            else:
                out[name] = value.clone()
        for name, child in self._children.items():
            out[name] = child.state_dict()
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> Metric:
        """Replace the states by those of ``state`` (from :meth:`state_dict` of an accumulator
        built with the same arguments).

        Raises:
            ValueError: ``state`` lacks states this accumulator has, holds others, or a state's
                shape differs.
        """
        state = self._check_state(state)
        self.reset()
        self._merge_states(state)
        return self

    def _check_state(self, state: Any) -> Mapping[str, Any]:
        """``state`` as a mapping with exactly this accumulator's states (and its children's),
        of the right shapes; checked whole before anything is changed."""
        owner = type(self).__name__
        if not isinstance(state, Mapping):
            raise TypeError(f"'state' must be a dict from {owner}.state_dict(). Got {type(state).__name__} instead.")
        expected = set(self._states) | set(self._children)
        if set(state) != expected:
            raise ValueError(
                f"'state' must hold the states {sorted(expected)} of {owner}. Got {sorted(state)} instead."
            )
        for name, default in self._defaults.items():
            value = state[name]
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"State '{name}' of {owner} must be a tensor. Got {type(value).__name__} instead.")
            if not isinstance(default, list) and value.shape != default.shape:
                raise ValueError(
                    f"State '{name}' of {owner} must have shape {tuple(default.shape)}. Got {tuple(value.shape)} instead."
                )
        for name, child in self._children.items():
            child._check_state(state[name])
        return state

    def _check_mergeable(self, other: Metric) -> None:
        """Raise if ``other`` was built with settings that make its states mean something else."""

    def merge(self, other: Metric | Mapping[str, Any]) -> Metric:
        """Pool ``other``'s states into this accumulator, as if this one had also seen its data.

        Args:
            other: an accumulator of the same class and settings, or its :meth:`state_dict`.

        Returns:
            self.

        Raises:
            TypeError: ``other`` is another kind of accumulator.
            ValueError: its settings or states do not fit this one's.
        """
        if isinstance(other, Metric):
            if type(other) is not type(self):
                raise TypeError(
                    f"'other' must be a {type(self).__name__} to merge into one. Got {type(other).__name__} instead."
                )
            self._check_mergeable(other)
            other = other.state_dict()
        self._merge_states(self._check_state(other))
        return self

    def _merge_states(self, state: Mapping[str, Any]) -> None:
        """Merge a state dict that :meth:`_check_state` accepted into this accumulator and its
        children."""
        for name, reduce in self._reductions.items():
            default = self._defaults[name]
            value = state[name]
            if reduce == "cat":
                if value.numel():
                    self._states[name] = self._states[name] + [value.detach().cpu().clone()]
                continue
            value = value.detach().to("cpu", default.dtype)
            mine = self._states[name]
            if reduce == "sum":
                self._states[name] = mine + value
            elif reduce == "max":
                self._states[name] = torch.maximum(mine, value)
            else:
                self._states[name] = torch.minimum(mine, value)
        for name, child in self._children.items():
            child._merge_states(state[name])

    def sync(self, all_gather_object: Callable[[Any], list[Any]]) -> Metric:
        """Pool the states of every process of a distributed run into this accumulator.

        Every process calls it at the same point; afterwards each holds the accumulator of the
        whole run, so :meth:`compute` gives the same figures on every process and the same as
        one process that saw all the data.

        Args:
            all_gather_object: takes this process's object and returns the list of every
                process's, as ``embedseg.distributed.DistContext.all_gather_object`` does (on
                one process it returns ``[obj]``, and this is a no-op).

        Returns:
            self.
        """
        gathered = [self._check_state(state) for state in all_gather_object(self.state_dict())]
        self.reset()
        for state in gathered:
            self._merge_states(state)
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
