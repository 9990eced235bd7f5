"""One trainer for every domain.

The trainer knows a network, a domain adapter, data and a loss; everything domain-specific goes
through the adapter (collate, encode, compute_loss, decode, metrics). It gives every domain:
AdamW or RMSprop, linear warm-up then plateau decay of the learning rate, gradient clipping,
mixed precision on CUDA (bf16 where supported, else fp16 with loss scaling; the loss itself is
always computed in fp32), optional ``torch.compile``, early stopping on the validation loss or a
domain metric, atomic checkpoints every N steps with exact resume, checks that skip steps with a
non-finite loss, gradient or buffer (and never save NaN or infinity), a tqdm progress bar, a CSV
log, optional TensorBoard, a PNG of the training curves, an optional moving average of the
weights (``ema_decay``: validated, kept and saved in place of the weights themselves), and
DistributedDataParallel when launched under ``torchrun``.

The package's rooms: :mod:`~embedseg.training.config` (the options), :mod:`~.loop` (the
:class:`Trainer`), :mod:`~.state` (checkpoint state and the run folder), :mod:`~.averaging`
(the moving average of the weights) and :mod:`~.logging`
(log, progress bar, TensorBoard, curves); what counts as a dataset is :mod:`embedseg.datasets`'s,
since evaluation checks datasets too.

Files in ``out_dir``::

    model/                    the best model (by validation when ``valid`` is given, else the
                              last), an embedseg model folder (embedseg.load reads it)
    checkpoints/step-NNNNNNNN/ resume checkpoints (checkpoint.json + checkpoint.safetensors)
    checkpoints/latest.json   which checkpoint is the newest complete one
    log.csv                   step, epoch, train_loss, valid_loss, metrics..., lr, time_s
                              (and skipped_steps, the steps skipped so far, once there are any)
    curves.png                the training curves
    tensorboard/              TensorBoard events (with ``tensorboard=True``)

A folder that already holds a run (checkpoints, ``log.csv`` or ``model/``) is refused unless
``resume`` (continue it) or ``overwrite`` (replace it) is set. With ``out_dir=None`` nothing is
written: the best weights are kept in memory, and the run cannot be resumed.

Resume reproduces the uninterrupted run exactly on CPU with ``num_workers=0``: each epoch's
order comes from a generator seeded with ``seed + epoch``, a resumed epoch skips the batches
already seen without loading them, and the checkpoint holds the model, optimizer, schedule,
early-stopping state, the moving average of the weights and every RNG state (torch, CUDA,
numpy, Python).
"""

from __future__ import annotations

from ..device import resolve_device
from .averaging import WeightAverage
from .config import TrainerConfig
from .loop import Trainer
from .state import TrainingError, TrainingState

__all__ = ["TrainerConfig", "Trainer", "TrainingError", "TrainingState", "WeightAverage", "resolve_device"]
