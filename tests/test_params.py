"""Declared parameter constraints: which values each kind accepts, TypeError for a value of no
accepted kind and ValueError for one out of range, and messages in scikit-learn's form."""

from __future__ import annotations

import doctest
from numbers import Integral, Real

import numpy as np
import pytest
import torch

import embedseg._params as params_module
from embedseg._params import (
    HasMethods,
    InstanceOf,
    Interval,
    Options,
    make_constraint,
    validate_params,
)


@pytest.mark.parametrize(
    "constraint, good, bad",
    [
        (Interval(Integral, 1, None, closed="left"), [1, 7, np.int64(3), 10**30], [0, -1]),
        (Interval(Integral, 0, 5, closed="both"), [0, 5], [-1, 6]),
        (Interval(Integral, 0, 5, closed="neither"), [1, 4], [0, 5]),
        (Interval(Real, 0, None, closed="left"), [0, 0.0, 1e300, 3, np.float32(0.5)], [-1e-9, float("nan"), float("inf"), 10**400]),
        (Interval(Real, 0, 1, closed="right"), [1.0, 0.5], [0.0, 1.5]),
        (Options(str, ["a", "b"]), ["a", "b"], ["c", "A"]),
        (make_constraint("boolean"), [True, False, np.bool_(True)], []),
        (make_constraint(None), [None], []),
        (HasMethods(["fit_predict"]), [type("E", (), {"fit_predict": lambda self, X: X})()], []),
        (InstanceOf(dict), [{}, {"a": 1}], []),
    ],
)
def test_constraints_accept_and_reject(constraint, good, bad):
    for value in good:
        assert constraint.is_satisfied_by(value), value
    for value in bad:
        assert not constraint.is_satisfied_by(value), value
        assert constraint.is_kind(value), value  # of the right kind: a ValueError, not a TypeError


@pytest.mark.parametrize(
    "constraint, value",
    [
        (Interval(Integral, 1, None, closed="left"), True),  # bools are not ints here
        (Interval(Integral, 1, None, closed="left"), 2.0),
        (Interval(Real, 0, None, closed="left"), "1"),
        (Options(str, ["a"]), 1),
        (make_constraint("boolean"), 1),
        (make_constraint(None), 0),
        (HasMethods(["fit_predict"]), type("E", (), {"fit_predict": lambda self, X: X})),  # a class
        (HasMethods(["fit_predict"]), object()),
    ],
)
def test_values_of_another_kind_are_not_of_the_constraints_kind(constraint, value):
    assert not constraint.is_kind(value) and not constraint.is_satisfied_by(value)


def test_descriptions_read_as_in_scikit_learn():
    assert str(Interval(Integral, 1, None, closed="left")) == "an int in [1, inf)"
    assert str(Interval(Real, 0, 1, closed="neither")) == "a float in (0, 1)"
    assert str(Interval(Real, None, 0.5, closed="right")) == "a float in (-inf, 0.5]"
    assert str(Interval(Integral, 0, 2**32 - 1, closed="both")) == "an int in [0, 4294967295]"
    assert str(Options(str, ["auto"])) == "'auto'"
    assert str(Options(str, ["euclidean", "cosine"])) == "one of 'euclidean', 'cosine'"
    assert str(HasMethods(["fit", "predict"])) == "an object with fit and predict methods"
    assert str(InstanceOf(dict, "a spec")) == "a spec"


CONSTRAINTS = {
    "n_clusters": [Interval(Integral, 1, None, closed="left"), Options(str, ["auto"])],
    "tol": [Interval(Real, 0, None, closed="left")],
    "metric": [Options(str, ["euclidean", "cosine"])],
    "normalized": ["boolean"],
    "temperature": [Interval(Real, 0, None, closed="neither"), None],
}
VALID = {"n_clusters": 3, "tol": 1e-4, "metric": "cosine", "normalized": True, "temperature": None}


@pytest.mark.parametrize(
    "name, value, error, message",
    [
        # a number out of range is told its range; a word that is no option, every form
        ("n_clusters", 0, ValueError, r"The 'n_clusters' parameter of KMeans must be an int in \[1, inf\)\. Got 0 instead\."),
        ("n_clusters", "two", ValueError, r"must be an int in \[1, inf\) or 'auto'\. Got 'two' instead\."),
        ("n_clusters", 2.5, TypeError, r"an int in \[1, inf\) or 'auto'\. Got 2\.5 \(float\) instead\."),
        ("n_clusters", True, TypeError, r"Got True \(bool\) instead"),
        ("tol", -1.0, ValueError, r"The 'tol' parameter of KMeans must be a float in \[0, inf\)\. Got -1\.0 instead\."),
        ("tol", float("nan"), ValueError, r"'tol'.*Got nan instead"),
        ("tol", "small", TypeError, r"'tol'.*Got 'small' \(str\) instead"),
        ("metric", "l1", ValueError, r"must be one of 'euclidean', 'cosine'\. Got 'l1' instead\."),
        ("normalized", 1, TypeError, r"The 'normalized' parameter of KMeans must be a bool\. Got 1 \(int\)"),
        ("temperature", 0.0, ValueError, r"must be a float in \(0, inf\)\. Got 0\.0 instead"),
        ("temperature", torch.ones(2), TypeError, r"Got a tensor of shape \(2,\) and dtype torch\.float32 instead"),
    ],
)
def test_validate_params_raises_with_the_parameter_named(name, value, error, message):
    with pytest.raises(error, match=message):
        validate_params(CONSTRAINTS, {**VALID, name: value}, "KMeans")


def test_valid_and_undeclared_values_pass():
    validate_params(CONSTRAINTS, VALID, "KMeans")
    validate_params(CONSTRAINTS, {**VALID, "undeclared": object()}, "KMeans")
    validate_params(CONSTRAINTS, {"tol": 0}, "KMeans")  # declared but absent parameters are skipped


def test_a_declaration_must_be_a_constraint():
    with pytest.raises(TypeError, match="must be None, 'boolean', a type or a Constraint"):
        make_constraint("bool")
    with pytest.raises(TypeError, match="numbers.Integral or numbers.Real"):
        Interval(int, 0, 1)
    with pytest.raises(ValueError, match="closed="):
        Interval(Integral, 0, 1, closed="open")


def test_examples_run():
    assert doctest.testmod(params_module).failed == 0
