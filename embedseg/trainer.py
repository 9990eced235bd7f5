"""The trainer's public names, where they have always been imported from.

The trainer lives in :mod:`embedseg.training`; this module re-exports it so that
``from embedseg.trainer import Trainer, TrainerConfig`` keeps working.
"""

from __future__ import annotations

from .device import resolve_device
from .training import Trainer, TrainerConfig, TrainingError, TrainingState

__all__ = ["TrainerConfig", "Trainer", "TrainingError", "TrainingState", "resolve_device"]
