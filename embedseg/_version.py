"""The version of embedseg (one place, read by the package, saved models and the command line)."""

__version__ = "0.1.0"
