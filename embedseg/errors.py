"""The library's exception types.

Bad arguments raise the built-in ``ValueError``/``TypeError`` (one message naming the
argument, what was expected and what came). Everything embedseg raises for other reasons
derives from :class:`EmbedsegError`, so callers can catch the library's failures in one place.
"""

from __future__ import annotations

__all__ = ["EmbedsegError", "NotFittedError", "ModelFileError", "MissingExtraError"]


class EmbedsegError(Exception):
    """Base class of the errors embedseg raises (other than bad-argument errors)."""


class NotFittedError(EmbedsegError, AttributeError):
    """An estimator was used before ``fit`` (as scikit-learn's ``NotFittedError``)."""


class ModelFileError(EmbedsegError, ValueError):
    """A saved model or checkpoint is missing, corrupt, or unsafe to load."""


class MissingExtraError(EmbedsegError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def require(module: str, extra: str):
    """Import an optional dependency, or fail naming the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtraError(
            f"'{module}' is needed here but is not installed; install it with "
            f"`pip install 'embedseg-dc[{extra}]'`."
        ) from exc
