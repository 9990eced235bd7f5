"""Multi-process training through ``torch.distributed``.

Launched under ``torchrun`` (the environment holds ``RANK`` and ``WORLD_SIZE``), the trainer
joins the process group (gloo on CPU, nccl on CUDA), wraps the network in
DistributedDataParallel, gives each rank its own shard of every epoch, and logs and writes
checkpoints on rank 0 only. Without those variables everything here is a no-op, so a single
process pays nothing.

Example::

    torchrun --nproc_per_node 4 train.py      # train.py calls embedseg.fit(...)
"""

from __future__ import annotations

import collections
import os
import pickle
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.distributed as dist

__all__ = ["DistContext", "setup", "shard_indices"]


@dataclass
class DistContext:
    """Where this process stands in a (possibly one-process) run."""

    rank: int = 0  # global rank; 0 logs and writes files
    world_size: int = 1  # number of processes
    local_rank: int = 0  # rank on this machine; picks the CUDA device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over ranks in place (no-op for one process); returns it."""
        if self.enabled:
            _finish(dist.all_reduce(tensor, op=dist.ReduceOp.SUM, async_op=True))
        return tensor

    def all_gather_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        """Stack a same-shaped tensor from every rank: (world_size, *tensor.shape)."""
        if not self.enabled:
            return tensor.unsqueeze(0)
        out = [torch.empty_like(tensor) for _ in range(self.world_size)]
        _finish(dist.all_gather(out, tensor, async_op=True))
        return torch.stack(out)

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (small Python values between this run's own processes)."""
        if not self.enabled:
            return [obj]
        # torch's own all_gather_object would run its collectives on tensors this module does
        # not keep (see _finish), so the same exchange is written here on the kept path.
        device = _collective_device()
        payload = torch.frombuffer(bytearray(pickle.dumps(obj)), dtype=torch.uint8).to(device)  # (n_bytes,)
        sizes = self.all_gather_tensor(torch.tensor([payload.numel()], device=device))  # (world, 1)
        longest = int(sizes.max())
        padded = torch.zeros(longest, dtype=torch.uint8, device=device)
        padded[: payload.numel()] = payload
        gathered = self.all_gather_tensor(padded).cpu()  # (world, longest) uint8
        return [
            pickle.loads(gathered[r, : int(sizes[r, 0])].numpy().tobytes())  # bytes this run's own ranks sent
            for r in range(self.world_size)
        ]

    def barrier(self) -> None:
        if self.enabled:
            _finish(dist.barrier(async_op=True))


# The handles of this process's recent collectives. A finished collective's tensors came from
# Python, so whichever thread drops the last reference to its work must take the GIL to release
# them. If that is a gloo worker thread and it happens to run while the interpreter shuts down,
# the thread cannot get the GIL and the process aborts ("terminate called without an active
# exception"), after training succeeded. Keeping the handles here, until many newer
# collectives have finished or the interpreter itself clears this module, makes the main thread
# the last owner.
_recent_work: collections.deque[Any] = collections.deque(maxlen=64)


def _finish(work: Any) -> None:
    """Wait for an asynchronous collective and keep its handle (see ``_recent_work``)."""
    if work is not None:
        _recent_work.append(work)
        work.wait()


def _collective_device() -> torch.device:
    """Where the process group's collectives take their tensors: the CUDA device for nccl."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _destroy_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def setup(device: torch.device | None = None) -> DistContext:
    """Join the process group described by torchrun's environment variables, if any.

    Args:
        device: the training device; CUDA selects the nccl backend, anything else gloo.

    Returns:
        The context (rank 0 of 1 when not launched by torchrun).
    """
    if dist.is_available() and dist.is_initialized():
        return DistContext(
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            local_rank=env_local_rank(),
        )
    world_size = env_world_size()
    if world_size <= 1 or not dist.is_available():
        return DistContext()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    use_cuda = device is not None and device.type == "cuda"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    # The group lives until the process ends, so that a script may call fit() more than once:
    # joining torchrun's rendezvous a second time after leaving it is not supported.
    import atexit

    atexit.register(_destroy_group)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank)


def env_world_size() -> int:
    """WORLD_SIZE from the environment (1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_local_rank() -> int:
    """LOCAL_RANK from the environment (0 when not launched by torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def shard_indices(indices: Sequence[int], rank: int, world_size: int, pad: bool = True) -> list[int]:
    """This rank's share of an epoch's index order, as ``DistributedSampler`` does it.

    With ``pad`` the order is first extended by wrapping around so every rank gets the same
    number of items (and so the same number of steps: DDP needs every rank in each all-reduce).

    Example:
        >>> shard_indices([0, 1, 2, 3, 4], rank=1, world_size=2)
        [1, 3, 0]
    """
    indices = list(indices)
    if world_size <= 1:
        return indices
    if pad and indices:
        total = -(-len(indices) // world_size) * world_size
        while len(indices) < total:
            indices += indices[: total - len(indices)]
    return indices[rank::world_size]
