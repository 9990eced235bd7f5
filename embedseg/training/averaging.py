"""An exponential moving average of a network's weights (Polyak averaging), for the trainer.

Fine-tuning with few speakers or images makes the weights of one step a noisy draw: validation
scores of neighbouring evaluations differ by more than the options being compared. The average
of the recent weights is a smoother, usually better model at no cost in training steps; the
trainer validates, keeps and saves the average while the optimizer goes on with the raw weights.

The decay warms up as ``min(decay, (1 + step) / (10 + step))``, so that the first steps of a run
(far from a random or pretrained start) are not averaged with the start for long. The rate
depends on the step only, so a resumed run averages exactly as the uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["WeightAverage", "average_decay"]


def average_decay(decay: float, step: int) -> float:
    """The decay used for the update after training step ``step`` (1 for the first step)."""
    return min(decay, (1.0 + step) / (10.0 + step))


class WeightAverage:
    """The moving average of every floating-point entry of a network's ``state_dict``.

    Parameters and floating-point buffers (BatchNorm statistics) are averaged; integer buffers
    (BatchNorm's batch counter) follow the network. The average lives on the network's device.

    Args:
        network: the network whose weights are averaged; the average starts at its weights.
        decay: the weight of the old average at each update, in (0, 1).
    """

    def __init__(self, network: nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.shadow: dict[str, torch.Tensor] = {k: v.detach().clone() for k, v in network.state_dict().items()}

    @torch.no_grad()
    def update(self, network: nn.Module, step: int) -> None:
        """Move the average towards the network's weights after training step ``step``."""
        rate = 1.0 - average_decay(self.decay, step)
        state = network.state_dict()
        for key, value in self.shadow.items():
            if value.is_floating_point():
                value.lerp_(state[key].detach(), rate)
            else:
                value.copy_(state[key])

    @torch.no_grad()
    def copy_to(self, network: nn.Module) -> None:
        """Load the average into ``network``."""
        network.load_state_dict(self.shadow, strict=True)

    @contextmanager
    def applied(self, network: nn.Module) -> Iterator[None]:
        """Within the block ``network`` holds the average; its own weights come back after it."""
        saved = {k: v.detach().clone() for k, v in network.state_dict().items()}
        self.copy_to(network)
        try:
            yield
        finally:
            with torch.no_grad():
                network.load_state_dict(saved, strict=True)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The average, by ``state_dict`` key, for a checkpoint."""
        return dict(self.shadow)

    def load(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Continue from an average a checkpoint held (the same keys as the network's)."""
        if set(tensors) != set(self.shadow):
            missing = sorted(set(self.shadow) - set(tensors))
            extra = sorted(set(tensors) - set(self.shadow))
            raise KeyError(f"the averaged weights do not match the network (missing {missing[:3]}, unexpected {extra[:3]})")
        with torch.no_grad():
            for key, value in tensors.items():
                self.shadow[key].copy_(value)
