"""Which device a user's ``device`` argument means, for training and loading alike."""

from __future__ import annotations

import torch

from .distributed import env_local_rank

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device, owner: str = "fit") -> torch.device:
    """"auto" means CUDA when available (the local rank's GPU under torchrun), else CPU.

    Args:
        device: "auto", "cpu", "cuda", "cuda:N", or a torch.device (returned as it is).
        owner: the function the argument belongs to, named in error messages.

    Raises:
        TypeError: ``device`` is neither a str nor a torch.device.
        ValueError: an unknown device, or a CUDA device this machine does not have.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise TypeError(
            f"The 'device' parameter of {owner} must be a str such as 'auto', 'cpu' or 'cuda', or "
            f"a torch.device. Got {device!r} ({type(device).__name__}) instead."
        )
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", env_local_rank() % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(
            f"The 'device' parameter of {owner} must be 'auto', 'cpu', 'cuda' or 'cuda:N'. Got "
            f"{device!r} instead."
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"The 'device' parameter of {owner} asks for {device!r}, but CUDA is not available.")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(
            f"The 'device' parameter of {owner} asks for {device!r}, but this machine has "
            f"{torch.cuda.device_count()} CUDA device(s)."
        )
    return dev
