"""Declared parameter constraints, checked in one place (as scikit-learn's ``_parameter_constraints``).

A class or function declares, per parameter, the constraints a valid value meets (any one of
them), and :func:`validate_params` checks the values against that declaration, so that
every class gives the same messages and none repeats hand checks:

    _parameter_constraints = {
        "n_clusters": [Interval(Integral, 1, None, closed="left"), Options(str, ["auto"])],
        "tol": [Interval(Real, 0, None, closed="left")],
        "metric": [Options(str, ["euclidean", "cosine"])],
        "normalized": ["boolean"],
        "soft_temperature": [Interval(Real, 0, None, closed="neither"), None],
    }

A value of no accepted kind raises TypeError, listing every accepted form; a value of an
accepted kind that is out of range or not among the options raises ValueError: a number is
told the range it missed ("The 'n_init' parameter of KMeans must be an int in [1, inf). Got 0
instead."), any other value every accepted form. Declared values are ``None`` (the value None), ``"boolean"`` (a bool), a type
(an instance of it) or a :class:`Constraint`.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from ._validation import shape_str

__all__ = [
    "Constraint",
    "Interval",
    "Options",
    "HasMethods",
    "InstanceOf",
    "make_constraint",
    "validate_params",
    "describe",
]


class Constraint:
    """One kind of valid value. Subclasses say which values are of their kind (a value of
    another kind is a TypeError) and which of those are valid (the others a ValueError)."""

    def is_kind(self, value: Any) -> bool:
        """Whether ``value`` is of the kind this constraint is about."""
        raise NotImplementedError

    def is_satisfied_by(self, value: Any) -> bool:
        """Whether ``value`` meets the constraint."""
        raise NotImplementedError

    def __str__(self) -> str:
        """What a valid value is, as it reads in a message ("an int in [1, inf)")."""
        raise NotImplementedError

    def describe_failure(self, value: Any) -> str:
        """How a message shows a value of this kind that fails the constraint."""
        return describe(value)


class Interval(Constraint):
    """Numbers in an interval: ``Interval(Integral, 1, None, closed="left")`` is [1, inf).

    ``numbers.Integral`` accepts ints (not bools); ``numbers.Real`` accepts ints and floats (not
    bools), finite ones only, so ``[0, inf)`` means what it reads. None for a bound: unbounded.

    Args:
        type_: ``numbers.Integral`` or ``numbers.Real``.
        left: lower bound, or None.
        right: upper bound, or None.
        closed: which bounds belong to the interval: "left", "right", "both" or "neither".
    """

    def __init__(
        self, type_: type, left: float | None, right: float | None, *, closed: str = "both"
    ) -> None:
        if type_ not in (numbers.Integral, numbers.Real):
            raise TypeError(f"Interval() expects numbers.Integral or numbers.Real. Got {type_!r} instead.")
        if closed not in ("left", "right", "both", "neither"):
            raise ValueError(
                f"Interval() expects closed='left', 'right', 'both' or 'neither'. Got {closed!r} instead."
            )
        self.type_, self.left, self.right, self.closed = type_, left, right, closed

    def is_kind(self, value: Any) -> bool:
        return isinstance(value, self.type_) and not isinstance(value, (bool, np.bool_))

    def is_satisfied_by(self, value: Any) -> bool:
        if not self.is_kind(value):
            return False
        if self.type_ is numbers.Real:
            try:
                value = float(value)
            except OverflowError:  # an int too large for a float
                return False
            if not math.isfinite(value):
                return False
        if self.left is not None:
            if value < self.left or (value == self.left and self.closed in ("right", "neither")):
                return False
        if self.right is not None:
            if value > self.right or (value == self.right and self.closed in ("left", "neither")):
                return False
        return True

    def __str__(self) -> str:
        kind = "an int" if self.type_ is numbers.Integral else "a float"
        lb = "[" if self.left is not None and self.closed in ("left", "both") else "("
        rb = "]" if self.right is not None and self.closed in ("right", "both") else ")"
        return f"{kind} in {lb}{_bound(self.left, '-inf')}, {_bound(self.right, 'inf')}{rb}"


def _bound(value: float | None, unbounded: str) -> str:
    if value is None:
        return unbounded
    if isinstance(value, numbers.Integral):
        return str(int(value))
    return f"{value:g}"


class Options(Constraint):
    """One of a few values of a type: ``Options(str, ["euclidean", "cosine"])``; listed in the
    order given."""

    def __init__(self, type_: type, options: Iterable[Any]) -> None:
        self.type_ = type_
        self.options = tuple(options)

    def is_kind(self, value: Any) -> bool:
        return isinstance(value, self.type_)

    def is_satisfied_by(self, value: Any) -> bool:
        return self.is_kind(value) and value in self.options

    def __str__(self) -> str:
        listed = ", ".join(repr(o) for o in self.options)
        return listed if len(self.options) == 1 else f"one of {listed}"


class HasMethods(Constraint):
    """An object (not a class) with these methods: ``HasMethods(["fit_predict"])``."""

    def __init__(self, methods: Sequence[str]) -> None:
        self.methods = tuple(methods)

    def is_kind(self, value: Any) -> bool:
        return self.is_satisfied_by(value)

    def is_satisfied_by(self, value: Any) -> bool:
        return not isinstance(value, type) and all(callable(getattr(value, m, None)) for m in self.methods)

    def __str__(self) -> str:
        if len(self.methods) == 1:
            return f"an object with a {self.methods[0]} method"
        return f"an object with {_both(list(self.methods))} methods"


class InstanceOf(Constraint):
    """An instance of a type, described in messages as ``description`` (default: its name)."""

    def __init__(self, type_: type | tuple[type, ...], description: str | None = None) -> None:
        self.type_ = type_
        self.description = description

    def is_kind(self, value: Any) -> bool:
        return isinstance(value, self.type_)

    def is_satisfied_by(self, value: Any) -> bool:
        return self.is_kind(value)

    def __str__(self) -> str:
        if self.description is not None:
            return self.description
        types = self.type_ if isinstance(self.type_, tuple) else (self.type_,)
        return " or ".join(f"an instance of {t.__qualname__}" for t in types)


class _NoneConstraint(Constraint):
    def is_kind(self, value: Any) -> bool:
        return value is None

    def is_satisfied_by(self, value: Any) -> bool:
        return value is None

    def __str__(self) -> str:
        return "None"


class _Boolean(Constraint):
    def is_kind(self, value: Any) -> bool:
        return isinstance(value, (bool, np.bool_))

    def is_satisfied_by(self, value: Any) -> bool:
        return self.is_kind(value)

    def __str__(self) -> str:
        return "a bool"


def make_constraint(declared: Any) -> Constraint:
    """The :class:`Constraint` a declared entry stands for (None, "boolean", a type, or one)."""
    if isinstance(declared, Constraint):
        return declared
    if declared is None:
        return _NoneConstraint()
    if isinstance(declared, str) and declared == "boolean":
        return _Boolean()
    if isinstance(declared, type):
        return InstanceOf(declared)
    raise TypeError(
        f"A parameter constraint must be None, 'boolean', a type or a Constraint. Got {declared!r} instead."
    )


def describe(value: Any) -> str:
    """A value as a message shows it: tensors and arrays by shape and dtype, others by repr."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return shape_str(value)
    return repr(value)


def _either(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def _both(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def validate_params(
    constraints: Mapping[str, Sequence[Any]], params: Mapping[str, Any], owner: str
) -> None:
    """Check every declared parameter in ``params`` against its constraints.

    Args:
        constraints: per parameter name, the declared constraints (any one suffices).
        params: the values, by name; names without a declaration are not checked.
        owner: the class or function the parameters belong to, as messages name it.

    Raises:
        TypeError: a value of no accepted kind.
        ValueError: a value of an accepted kind that meets none of the constraints.

    Example:
        >>> from numbers import Integral
        >>> validate_params({"n_init": [Interval(Integral, 1, None, closed="left")]},
        ...                 {"n_init": 0}, "KMeans")
        Traceback (most recent call last):
        ...
        ValueError: The 'n_init' parameter of KMeans must be an int in [1, inf). Got 0 instead.
    """
    for name, declared in constraints.items():
        if name not in params:
            continue
        value = params[name]
        checks = [make_constraint(c) for c in declared]
        if any(c.is_satisfied_by(value) for c in checks):
            continue
        kinds = [c for c in checks if c.is_kind(value)]
        if kinds:
            # A number out of range is answered with the range it missed; any other value of
            # an accepted kind (a word that is not an option, say) with every accepted form.
            shown = kinds if all(isinstance(c, Interval) for c in kinds) else checks
            raise ValueError(
                f"The '{name}' parameter of {owner} must be {_either([str(c) for c in shown])}. "
                f"Got {kinds[0].describe_failure(value)} instead."
            )
        expected = _either([str(c) for c in checks])
        got = describe(value)
        if not isinstance(value, (torch.Tensor, np.ndarray)):
            got = f"{got} ({type(value).__name__})"
        raise TypeError(f"The '{name}' parameter of {owner} must be {expected}. Got {got} instead.")
