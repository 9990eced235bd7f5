"""One trainer for every domain.

The trainer knows a network, a domain adapter, data and a loss; everything domain-specific goes
through the adapter (collate, encode, compute_loss, decode, metrics). It gives every domain:
AdamW or RMSprop, linear warm-up then plateau decay of the learning rate, gradient clipping,
mixed precision on CUDA (bf16 where supported, else fp16 with loss scaling; the loss itself is
always computed in fp32), optional ``torch.compile``, early stopping on the validation loss or a
domain metric, atomic checkpoints every N steps with exact resume, NaN/inf detection, a tqdm
progress bar, a CSV log, optional TensorBoard, a PNG of the training curves, and
DistributedDataParallel when launched under ``torchrun``.

Files in ``out_dir``::

    model/                    the best model (by validation when ``valid`` is given, else the
                              last), an embedseg model folder (embedseg.load reads it)
    checkpoints/step-NNNNNNNN/ resume checkpoints (checkpoint.json + checkpoint.safetensors)
    checkpoints/latest.json   which checkpoint is the newest complete one
    log.csv                   step, epoch, train_loss, valid_loss, metrics..., lr, time_s
    curves.png                the training curves
    tensorboard/              TensorBoard events (with ``tensorboard=True``)

With ``out_dir=None`` nothing is written: the best weights are kept in memory, and the run
cannot be resumed.

Resume reproduces the uninterrupted run exactly on CPU with ``num_workers=0``: each epoch's
order comes from a generator seeded with ``seed + epoch``, a resumed epoch skips the batches
already seen without loading them, and the checkpoint holds the model, optimizer, schedule,
early-stopping state and every RNG state (torch, CUDA, numpy, Python).
"""

from __future__ import annotations

import csv
import io as _io
import itertools
import math
import os
import random
import shutil
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from ._validation import check_bool, check_choice, check_float, check_int
from .distributed import DistContext, env_local_rank, setup, shard_indices
from .domain import Domain
from .errors import EmbedsegError
from .losses import LOSSES
from .model import Model
from .networks import embeddings_of

__all__ = ["TrainerConfig", "Trainer", "TrainingError", "resolve_device"]

CHECKPOINT_JSON = "checkpoint.json"
CHECKPOINT_TENSORS = "checkpoint.safetensors"


class TrainingError(EmbedsegError):
    """Training cannot go on (repeated non-finite losses, an unusable checkpoint)."""


DEFAULT_EPOCHS = 10  # passes over the data when nothing else bounds a run


@dataclass
class TrainerConfig:
    """Every option of the trainer (``embedseg.fit`` accepts each field as a keyword)."""

    # -- length ---------------------------------------------------------------------------------
    epochs: int | None = None  # passes over the data; None: 10, unlimited when max_steps/max_minutes bound the run
    max_steps: int | None = None  # stop after this many steps in all (None: epochs or max_minutes decide)
    max_minutes: float | None = None  # wall-clock budget of this call (a resumed call gets it afresh)
    # -- data -----------------------------------------------------------------------------------
    batch_size: int = 8  # items per step and per process
    shuffle: bool = True  # a new order every epoch, seeded by seed + epoch
    num_workers: int = 0  # DataLoader worker processes
    # -- optimization ---------------------------------------------------------------------------
    optimizer: str = "adamw"  # "adamw" or "rmsprop"
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.0  # decoupled for AdamW, L2 for RMSprop
    momentum: float = 0.0  # RMSprop momentum
    warmup_steps: int | None = None  # linear warm-up; None: 2% of the planned steps (of 10 epochs if time-bound), <= 500
    plateau_patience: int = 3  # evaluations without improvement before the lr is decayed
    plateau_factor: float = 0.5  # lr multiplier at each plateau
    min_lr: float = 1e-6  # the lr never decays below this
    grad_clip: float | None = 5.0  # max global gradient norm (None: no clipping)
    loss: str | None = None  # "affinity" or "whitened_kmeans" (None: the domain's default)
    # -- hardware -------------------------------------------------------------------------------
    device: str = "auto"  # "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...
    precision: str = "auto"  # "auto" (bf16/fp16 on CUDA, fp32 on CPU), "fp32", "bf16", "fp16"
    compile: bool = False  # torch.compile the network
    seed: int = 0  # seeds torch, numpy and random; epoch orders use seed + epoch
    find_unused_parameters: bool = False  # DDP: set when some network outputs take no part in the loss
    # -- validation and stopping ---------------------------------------------------------------
    eval_every: int | None = None  # validate every N steps (None: at the end of each epoch)
    valid_metrics: bool = True  # also cluster, decode and compute the domain metrics
    monitor: str = "loss"  # "loss", "metric" (the domain's primary metric) or a metric name
    patience: int | None = None  # early stopping after N evaluations without improvement
    max_bad_steps: int = 10  # consecutive non-finite losses tolerated (each step is skipped)
    # -- files and reporting --------------------------------------------------------------------
    out_dir: str | None = None  # checkpoints, logs, curves and the model (None: nothing written)
    resume: bool | str = False  # True: from out_dir's latest checkpoint if any; or a checkpoint path
    checkpoint_every: int | None = None  # steps between checkpoints (None: end of each epoch)
    keep_checkpoints: int = 2  # newest checkpoints kept on disk
    log_every: int = 10  # steps between rows of the CSV log
    progress: bool | None = None  # tqdm progress bar (None: only on a terminal)
    tensorboard: bool = False  # also write TensorBoard events to out_dir/tensorboard
    plot: bool = True  # write out_dir/curves.png (needs matplotlib)

    @property
    def epoch_limit(self) -> int | None:
        """The number of epochs to run; None when only max_steps / max_minutes stop the run."""
        if self.epochs is not None:
            return self.epochs
        return None if (self.max_steps is not None or self.max_minutes is not None) else DEFAULT_EPOCHS

    def validate(self) -> "TrainerConfig":
        """Check every field; raises ValueError/TypeError naming the bad one. Returns self."""
        owner = "fit"
        if self.epochs is not None:
            check_int(self.epochs, "epochs", owner, 1)
        if self.max_steps is not None:
            check_int(self.max_steps, "max_steps", owner, 1)
        if self.max_minutes is not None:
            # inf: no time limit, but (unlike None) no default number of epochs either.
            check_float(self.max_minutes, "max_minutes", owner, 0.0, None, closed="neither", allow_inf=True)
        check_int(self.batch_size, "batch_size", owner, 1)
        check_bool(self.shuffle, "shuffle", owner)
        check_int(self.num_workers, "num_workers", owner, 0)
        check_choice(self.optimizer, "optimizer", owner, ("adamw", "rmsprop"))
        check_float(self.lr, "lr", owner, 0.0, None, closed="neither")
        check_float(self.weight_decay, "weight_decay", owner, 0.0)
        check_float(self.momentum, "momentum", owner, 0.0, 1.0, closed="left")
        if self.warmup_steps is not None:
            check_int(self.warmup_steps, "warmup_steps", owner, 0)
        check_int(self.plateau_patience, "plateau_patience", owner, 1)
        check_float(self.plateau_factor, "plateau_factor", owner, 0.0, 1.0, closed="right")
        check_float(self.min_lr, "min_lr", owner, 0.0)
        if self.grad_clip is not None:
            check_float(self.grad_clip, "grad_clip", owner, 0.0, None, closed="neither")
        if self.loss is not None:
            check_choice(self.loss, "loss", owner, LOSSES)
        if not isinstance(self.device, (str, torch.device)):
            raise TypeError(
                f"The 'device' parameter of fit must be a str such as 'auto', 'cpu' or 'cuda'. "
                f"Got {self.device!r} ({type(self.device).__name__}) instead."
            )
        check_choice(self.precision, "precision", owner, ("auto", "fp32", "bf16", "fp16"))
        check_bool(self.compile, "compile", owner)
        check_int(self.seed, "seed", owner, 0)
        check_bool(self.find_unused_parameters, "find_unused_parameters", owner)
        if self.eval_every is not None:
            check_int(self.eval_every, "eval_every", owner, 1)
        check_bool(self.valid_metrics, "valid_metrics", owner)
        if not isinstance(self.monitor, str) or not self.monitor:
            raise TypeError(
                f"The 'monitor' parameter of fit must be 'loss', 'metric' or a metric name. "
                f"Got {self.monitor!r} instead."
            )
        if self.patience is not None:
            check_int(self.patience, "patience", owner, 1)
        check_int(self.max_bad_steps, "max_bad_steps", owner, 1)
        if self.out_dir is not None:
            _check_out_dir(self.out_dir)
        if not isinstance(self.resume, (bool, str, os.PathLike)):
            raise TypeError(
                f"The 'resume' parameter of fit must be a bool or a checkpoint path. Got "
                f"{self.resume!r} ({type(self.resume).__name__}) instead."
            )
        if self.resume is True and self.out_dir is None:
            raise ValueError(
                "The 'resume' parameter of fit needs 'out_dir' (where the checkpoints are). Got "
                "resume=True with out_dir=None."
            )
        if self.checkpoint_every is not None:
            check_int(self.checkpoint_every, "checkpoint_every", owner, 1)
        check_int(self.keep_checkpoints, "keep_checkpoints", owner, 1)
        check_int(self.log_every, "log_every", owner, 1)
        if self.progress is not None:
            check_bool(self.progress, "progress", owner)
        check_bool(self.tensorboard, "tensorboard", owner)
        check_bool(self.plot, "plot", owner)
        return self

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def to_json(self) -> dict[str, Any]:
        """The options as JSON data (paths as strings; ``max_minutes=inf``, no time limit, as
        null since JSON has no infinity)."""
        out = asdict(self)
        if isinstance(out["max_minutes"], (int, float)) and not math.isfinite(out["max_minutes"]):
            out["max_minutes"] = None
        for key in ("out_dir", "resume", "device"):
            if out[key] is not None and not isinstance(out[key], bool):
                out[key] = os.fspath(out[key]) if not isinstance(out[key], torch.device) else str(out[key])
        return out


def _check_out_dir(out_dir: Any) -> None:
    """Raise unless ``out_dir`` is a path that is, or can become, a folder."""
    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(
            f"The 'out_dir' parameter of fit must be a path or None. Got {out_dir!r} "
            f"({type(out_dir).__name__}) instead."
        )
    text = os.fspath(out_dir)
    if isinstance(text, bytes) or not text:
        raise ValueError(
            f"The 'out_dir' parameter of fit must be a folder path (or None to write nothing). "
            f"Got {out_dir!r} instead."
        )
    path = Path(text)
    # The folder itself, or the nearest part of its path that exists, must be a folder.
    for part in (path, *path.parents):
        if not part.exists():
            continue
        if part.is_dir():
            break
        got = f"the existing file '{text}'" if part == path else f"'{text}', below the existing file '{part}',"
        raise ValueError(
            f"The 'out_dir' parameter of fit must be a folder (or not exist yet). Got {got} instead."
        )


def check_dataset(data: Any, name: str) -> None:
    """Raise unless ``data`` is a map-style dataset (``__len__`` and ``__getitem__``, e.g. a
    list) with at least one item, or a torch IterableDataset."""
    expected = (
        f"'{name}' must be a map-style dataset (with __len__ and __getitem__, e.g. a list), or a "
        f"torch IterableDataset, of domain-native items."
    )
    if data is None:
        raise TypeError(f"{expected} Got None instead.")
    if isinstance(data, Mapping):
        raise TypeError(
            f"{expected} Got a {type(data).__name__} instead: a mapping is not a dataset (pass a "
            f"list of items, each item as the domain documents it)."
        )
    if isinstance(data, (str, bytes, os.PathLike)):
        raise TypeError(
            f"{expected} Got the {type(data).__name__} {data!r} instead (to read a dataset from a "
            f"path, use the domain's load_dataset(path, split))."
        )
    if not (_is_map_style(data) or isinstance(data, torch.utils.data.IterableDataset)):
        raise TypeError(f"{expected} Got {type(data).__name__} instead.")
    if _is_map_style(data) and len(data) == 0:
        raise _empty_dataset(name, data)  # now, not after an epoch of training


def resolve_device(device: str | torch.device, owner: str = "fit") -> torch.device:
    """"auto" means CUDA when available (the local rank's GPU under torchrun), else CPU.

    Raises:
        TypeError: ``device`` is neither a str nor a torch.device.
        ValueError: an unknown device, or a CUDA device this machine does not have.
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


# -- small helpers ----------------------------------------------------------------------------
def _to_float(output: Any) -> Any:
    """Cast a network output (tensor or mapping of tensors) to fp32 so the loss runs in fp32."""
    if isinstance(output, torch.Tensor):
        return output.float() if output.is_floating_point() else output
    if isinstance(output, Mapping):
        return {k: _to_float(v) for k, v in output.items()}
    return output


def _is_map_style(dataset: Any) -> bool:
    return (
        not isinstance(dataset, torch.utils.data.IterableDataset)
        and hasattr(dataset, "__len__")
        and hasattr(dataset, "__getitem__")
    )


def _empty_dataset(name: str, data: Any) -> ValueError:
    return ValueError(f"'{name}' must hold at least one item. Got an empty {type(data).__name__} instead.")


class _Shard(torch.utils.data.IterableDataset):
    """Every ``world_size``-th item of an iterable dataset, starting at ``rank``."""

    def __init__(self, dataset: Any, rank: int, world_size: int) -> None:
        self.dataset, self.rank, self.world_size = dataset, rank, world_size

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(iter(self.dataset), self.rank, None, self.world_size)


def _clean(record: Mapping[str, float]) -> dict[str, float | None]:
    """A metrics record with NaN/inf as None (JSON has no NaN; the CSV shows an empty cell)."""
    return {k: (float(v) if math.isfinite(float(v)) else None) for k, v in record.items()}


class _Log:
    """The CSV log: rows appended as they come; the file is rewritten when a column appears."""

    base_columns = ["step", "epoch", "train_loss", "valid_loss"]

    def __init__(self, path: Path | None, rows: list[dict[str, Any]] | None = None) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = list(rows or [])
        self.columns = self._columns()
        if self.path is not None:
            self._rewrite()

    def _columns(self) -> list[str]:
        extra: list[str] = []
        for row in self.rows:
            for key in row:
                if key not in self.base_columns and key not in ("lr", "time_s") and key not in extra:
                    extra.append(key)
        return self.base_columns + extra + ["lr", "time_s"]

    def _line(self, row: Mapping[str, Any]) -> str:
        buf = _io.StringIO()
        csv.writer(buf).writerow(["" if row.get(c) is None else row.get(c) for c in self.columns])
        return buf.getvalue()

    def _rewrite(self) -> None:
        from .io import atomic_write_bytes

        text = ",".join(self.columns) + "\n" + "".join(self._line(r) for r in self.rows)
        atomic_write_bytes(self.path, text.encode("utf-8"))

    def add(self, row: dict[str, Any]) -> None:
        """Add a row, merging into the last one when both are for the same step."""
        if self.rows and self.rows[-1]["step"] == row["step"]:
            self.rows[-1].update({k: v for k, v in row.items() if v is not None})
            row, merged = self.rows[-1], True
        else:
            self.rows.append(row)
            merged = False
        if self.path is None:
            return
        if merged or any(k not in self.columns for k in row):
            self.columns = self._columns()
            self._rewrite()
        else:
            with open(self.path, "a", encoding="utf-8", newline="") as f:
                f.write(self._line(row))


# -- the trainer --------------------------------------------------------------------------------
class Trainer:
    """Trains a :class:`~embedseg.Model`'s network on a domain's data.

    Args:
        model: the model to train (its network is trained in place).
        config: the options (validated here).

    Example:
        >>> trainer = Trainer(model, TrainerConfig(epochs=5, out_dir="runs/a"))  # doctest: +SKIP
        >>> model = trainer.fit(train_set, valid_set)                            # doctest: +SKIP
    """

    def __init__(self, model: Model, config: TrainerConfig) -> None:
        if not isinstance(model, Model):
            raise TypeError(f"'model' must be an embedseg.Model. Got {type(model).__name__} instead.")
        if not isinstance(config, TrainerConfig):
            raise TypeError(f"'config' must be a TrainerConfig. Got {type(config).__name__} instead.")
        self.model = model
        self.config = config.validate()

    # -- setup ------------------------------------------------------------------------------------
    def _setup(self, train: Any, valid: Any) -> None:
        cfg = self.config
        check_dataset(train, "dataset")
        if valid is not None:  # None: no validation
            check_dataset(valid, "valid")
        self.device = resolve_device(cfg.device)
        self.dist: DistContext = setup(self.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        self.domain = self.model.domain
        self.loss_name = cfg.loss or self.domain.default_loss
        self.network = self.model.network.to(self.device)
        self.network.train()
        self.out_dir = Path(cfg.out_dir) if cfg.out_dir is not None else None
        if self.out_dir is not None and self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.plot_curves = cfg.plot and self.out_dir is not None and self.dist.is_main

        # Precision: the network runs under autocast; the loss is always computed in fp32.
        precision = cfg.precision
        if self.device.type != "cuda":
            if precision in ("bf16", "fp16"):
                warnings.warn(f"precision={precision!r} needs CUDA; training in fp32 on {self.device}.")
            precision = "fp32"
        elif precision == "auto":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        self.precision = precision
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None

        params = [p for p in self.network.parameters() if p.requires_grad]
        if not params:
            raise ValueError(
                f"The network must have trainable parameters. Got a {type(self.network).__name__} "
                f"whose parameters all have requires_grad=False (or none at all)."
            )
        self.params = params
        if cfg.optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:
            self.optimizer = torch.optim.RMSprop(
                params, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum
            )

        module: nn.Module = self.network
        if cfg.compile:
            module = torch.compile(module)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            module = DistributedDataParallel(
                module,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=cfg.find_unused_parameters,
            )
        self.train_module = module

        # The domain may wrap the training set (augmentation); validation data stays as given.
        train = self.domain.training_data(train)
        self.train_set = train
        self.valid_set = valid
        self.map_style = _is_map_style(train)
        if self.map_style:
            n_items = len(shard_indices(range(len(train)), self.dist.rank, self.dist.world_size))
            self.steps_per_epoch: int | None = -(-n_items // cfg.batch_size)
        else:
            self.steps_per_epoch = None
        planned = None
        if self.steps_per_epoch is not None and cfg.epoch_limit is not None:
            planned = cfg.epoch_limit * self.steps_per_epoch
        if cfg.max_steps is not None:
            planned = cfg.max_steps if planned is None else min(planned, cfg.max_steps)
        self.planned_steps = planned
        # A run bounded by time alone warms up as one of the default length would.
        warm_basis = planned
        if warm_basis is None and self.steps_per_epoch is not None:
            warm_basis = DEFAULT_EPOCHS * self.steps_per_epoch
        if cfg.warmup_steps is not None:
            self.warmup = cfg.warmup_steps
        else:
            self.warmup = 0 if warm_basis is None else min(500, warm_basis // 50)

        if cfg.monitor == "loss":
            self.monitor_key, self.higher_is_better = "valid_loss", False
        else:
            metric = self.domain.primary_metric if cfg.monitor == "metric" else cfg.monitor
            if metric is None:
                raise ValueError(
                    f"The 'monitor' parameter of fit is 'metric', but the domain "
                    f"{type(self.domain).__name__} defines no primary_metric. Use monitor='loss'."
                )
            self.monitor_key = metric
            self.higher_is_better = (
                self.domain.primary_metric_higher_is_better if metric == self.domain.primary_metric else True
            )
            if valid is None:
                raise ValueError(
                    f"The 'monitor' parameter of fit is {cfg.monitor!r}, which needs a 'valid' dataset."
                )
            if not cfg.valid_metrics:
                raise ValueError(
                    f"The 'monitor' parameter of fit is {cfg.monitor!r}, which needs valid_metrics=True."
                )

        # Training state: everything a checkpoint must hold to continue exactly.
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.lr_scale = 1.0
        self.plateau_best: float | None = None
        self.plateau_bad = 0
        self.best_value: float | None = None
        self.best_step: int | None = None
        self.best_record: dict[str, float] = {}
        self.stale_evals = 0
        self.bad_streak = 0
        self.skipped_steps = 0
        self.round_loss = [0.0, 0]  # train-loss sum and count since the last evaluation
        self.log_loss = [0.0, 0]  # since the last log row
        self.last_eval_step = -1
        self.last_checkpoint_step = -1
        self.elapsed_before = 0.0  # training seconds of the interrupted runs
        self.best_state: dict[str, torch.Tensor] | None = None
        log_rows: list[dict[str, Any]] = []

        # Seed this process; ranks differ so that dropout masks differ between shards.
        seed = cfg.seed + self.dist.rank
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)

        checkpoint = self._find_checkpoint()
        rng_state = None
        if checkpoint is not None:
            log_rows, rng_state = self._load_checkpoint(checkpoint)
        elif self.out_dir is not None and self.dist.is_main and (self.out_dir / "checkpoints").is_dir():
            # A fresh run in a used out_dir replaces that run: its checkpoints would otherwise
            # outrank this run's in the rotation and be picked up by a later resume.
            warnings.warn(f"Starting a fresh run in '{self.out_dir}': its earlier checkpoints are removed.")
            shutil.rmtree(self.out_dir / "checkpoints")
        self.dist.barrier()
        self.log = _Log(self.out_dir / "log.csv" if self.out_dir is not None and self.dist.is_main else None, log_rows)
        self.writer = None
        if cfg.tensorboard and self.out_dir is not None and self.dist.is_main:
            from .errors import require

            require("tensorboard", "dev")  # a clear message naming the extra when it is missing
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.out_dir / "tensorboard"), purge_step=self.step or None)
        if rng_state is not None:
            self._set_rng_state(rng_state)  # last: nothing above may consume random numbers after it

    # -- data -------------------------------------------------------------------------------------
    def _epoch_loader(self, epoch: int, start: int) -> Any:
        """The loader of ``epoch``'s batches from batch ``start`` on (order seeded by seed + epoch)."""
        cfg = self.config
        generator = torch.Generator().manual_seed(cfg.seed + epoch)
        if self.map_style:
            n = len(self.train_set)
            order = torch.randperm(n, generator=generator).tolist() if cfg.shuffle else list(range(n))
            mine = shard_indices(order, self.dist.rank, self.dist.world_size)
            batches = [mine[i : i + cfg.batch_size] for i in range(0, len(mine), cfg.batch_size)]
            return torch.utils.data.DataLoader(
                self.train_set,
                batch_sampler=batches[start:],
                collate_fn=self.domain.collate,
                num_workers=cfg.num_workers,
                generator=generator,
                pin_memory=self.device.type == "cuda",
            )
        data = self.train_set
        if self.dist.enabled:
            data = _Shard(data, self.dist.rank, self.dist.world_size)
        loader = torch.utils.data.DataLoader(
            data,
            batch_size=cfg.batch_size,
            collate_fn=self.domain.collate,
            num_workers=cfg.num_workers,
            generator=generator,
            pin_memory=self.device.type == "cuda",
        )
        return itertools.islice(loader, start, None)

    def _synced(self, batches: Any) -> Iterator[Any]:
        """Yield batches while every rank still has one.

        Map-style data is padded to equal shards, but the shards of an iterable dataset may
        differ in length, and a rank that stopped early would leave the others waiting forever
        in DDP's all-reduce.
        """
        if not self.dist.enabled or self.map_style:
            yield from batches
            return
        # (With num_workers > 0 each worker process iterates the shard: an iterable dataset must
        # split itself between workers with torch.utils.data.get_worker_info(), as usual.)
        it = iter(batches)
        while True:
            batch = next(it, None)
            have = torch.tensor([0.0 if batch is None else 1.0], device=self.device)
            if self.dist.all_reduce_sum(have).item() < self.dist.world_size:
                return
            yield batch

    def _valid_loader(self) -> Any:
        data = self.valid_set
        if self.dist.enabled:
            if _is_map_style(data):
                data = torch.utils.data.Subset(
                    data, shard_indices(range(len(data)), self.dist.rank, self.dist.world_size, pad=False)
                )
            else:
                data = _Shard(data, self.dist.rank, self.dist.world_size)
        return torch.utils.data.DataLoader(
            data, batch_size=self.config.batch_size, shuffle=False, collate_fn=self.domain.collate,
            num_workers=self.config.num_workers,
        )

    # -- one step ---------------------------------------------------------------------------------
    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _loss(self, module: nn.Module, encoded: Any) -> torch.Tensor:
        with self._autocast():
            output = module(encoded.features)
        with torch.autocast(self.device.type, enabled=False):
            return self.domain.compute_loss(_to_float(output), encoded, self.loss_name).float()

    def _set_lr(self) -> float:
        cfg = self.config
        warm = min(1.0, (self.step + 1) / self.warmup) if self.warmup > 0 else 1.0
        lr = max(cfg.lr * self.lr_scale, min(cfg.min_lr, cfg.lr)) * warm
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _train_step(self, batch: Any) -> tuple[float, bool]:
        """Forward, backward and update; returns (loss averaged over ranks, whether applied)."""
        encoded = self.domain.encode(batch, self.device)
        loss = self._loss(self.train_module, encoded)
        self.optimizer.zero_grad(set_to_none=True)
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.config.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip)
        else:
            # The norm only tells whether the gradient is finite (clipping with max_norm=inf
            # would compute the same, then scale every gradient by one).
            norms = [torch.linalg.vector_norm(p.grad.detach().float()) for p in self.params if p.grad is not None]
            norm = torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros((), device=self.device)
        value = loss.detach().float()
        finite = torch.isfinite(value)
        # One small all-reduce: summed loss, number of ranks with a non-finite loss.
        stats = torch.stack([torch.where(finite, value, torch.zeros_like(value)), (~finite).float()])
        stats = self.dist.all_reduce_sum(stats.to(self.device))
        loss_sum, n_bad = stats.tolist()
        ok = n_bad == 0
        if ok:
            if self.scaler is not None:
                # An fp16 gradient overflow is routine: the scaler skips the step and lowers its scale.
                self.scaler.step(self.optimizer)
            elif bool(torch.isfinite(norm)):
                self.optimizer.step()
            else:
                ok = False
        if self.scaler is not None:
            self.scaler.update()
        if not ok:
            self.optimizer.zero_grad(set_to_none=True)
        n_good = self.dist.world_size - n_bad
        return (loss_sum / n_good if n_good else math.nan), ok

    # -- validation -------------------------------------------------------------------------------
    def _validate(self) -> dict[str, float]:
        """Validation loss (and domain metrics), averaged over items and ranks."""
        network = self.network
        was_training = network.training
        network.eval()
        sums: dict[str, float] = {}
        count = 0
        unlabeled = 0  # items of batches that came without labels
        # Clustering and decoding are only worth it when the domain has metrics to compute.
        has_metrics = self.config.valid_metrics and type(self.domain).metrics is not Domain.metrics
        try:
            with torch.no_grad():
                for batch in self._valid_loader():
                    encoded = self.domain.encode(batch, self.device)
                    with self._autocast():
                        output = network(encoded.features)
                    output = _to_float(output)
                    n = encoded.batch_size
                    if encoded.labels is not None:
                        loss = self.domain.compute_loss(output, encoded, self.loss_name)
                        sums["valid_loss"] = sums.get("valid_loss", 0.0) + float(loss) * n
                    else:
                        unlabeled += n
                    if has_metrics:

                        def run(features: Any) -> Any:
                            with self._autocast():
                                return _to_float(network(features))

                        output = self.domain.inference_output(run, encoded, output)
                        encoded.context.setdefault("network_output", output)
                        embeddings = embeddings_of(output)  # (batch, n_points, dim)
                        labels, proba = self.model.cluster(embeddings, encoded.mask)
                        outputs = self.domain.decode(encoded, labels, proba, embeddings)
                        for key, value in self.domain.metrics(outputs, encoded).items():
                            sums[key] = sums.get(key, 0.0) + float(value) * n
                    count += n
        finally:
            network.train(was_training)
        if self.dist.enabled:
            gathered = self.dist.all_gather_object((sums, count, unlabeled))
            sums, count, unlabeled = {}, 0, 0
            for part, n, n_unlabeled in gathered:
                count += n
                unlabeled += n_unlabeled
                for key, value in part.items():
                    sums[key] = sums.get(key, 0.0) + value
        self.valid_unlabeled = unlabeled
        if count == 0:  # an iterable dataset that yielded nothing
            raise _empty_dataset("valid", self.valid_set)
        return {k: v / count for k, v in sums.items()}

    def _evaluate(self) -> bool:
        """Validate (or use the train loss of the round), update plateau and early stopping.

        Returns True when early stopping says stop.
        """
        cfg = self.config
        self.last_eval_step = self.step
        train_loss = self.round_loss[0] / self.round_loss[1] if self.round_loss[1] else None
        self.round_loss = [0.0, 0]
        record: dict[str, float] = {}
        if self.valid_set is not None:
            record = self._validate()
            value = self._monitored(record)
        else:
            value = train_loss
        if value is None or not math.isfinite(value):
            return False
        # Plateau decay of the learning rate.
        if self._better(value, self.plateau_best):
            self.plateau_best, self.plateau_bad = value, 0
        else:
            self.plateau_bad += 1
            if self.plateau_bad >= cfg.plateau_patience and cfg.lr * self.lr_scale > cfg.min_lr:
                self.lr_scale *= cfg.plateau_factor
                self.plateau_bad = 0
        # Best model and early stopping.
        stop = False
        if self._better(value, self.best_value):
            self.stale_evals = 0
            # Without validation data the best model is the last one: nothing to snapshot.
            self._keep_best(value, record, snapshot=self.valid_set is not None)
            if self.valid_set is not None:
                self._save_model()
        else:
            self.stale_evals += 1
            stop = cfg.patience is not None and self.stale_evals >= cfg.patience
        self._log_record(record)
        if self.writer is not None:  # rank 0 only
            for key, v in record.items():
                self.writer.add_scalar(f"valid/{key}", v, self.step)
        self._plot()
        return stop

    def _consider_final(self) -> None:
        """Validate the last weights as a candidate for the best model, changing nothing else."""
        record = self._validate()
        try:
            value = self._monitored(record)
        except ValueError as exc:
            # The training is done: keep its weights (and save them) rather than lose them to
            # a validation set that cannot give the monitored value.
            warnings.warn(f"{exc} The final weights are kept without that comparison.", stacklevel=2)
            self._log_record(record)
            return
        if not math.isfinite(value):
            return
        if self._better(value, self.best_value):
            self._keep_best(value, record, snapshot=True)
        self._log_record(record)

    def _monitored(self, record: Mapping[str, float]) -> float:
        """The monitored value of a validation record; raises when validation did not give it."""
        if self.monitor_key in record:
            return record[self.monitor_key]
        gave = f"gave only {sorted(record)}" if record else "gave no values"
        why = ""
        n_unlabeled = getattr(self, "valid_unlabeled", 0)
        if n_unlabeled:
            lacking = "no validation loss" if self.monitor_key == "valid_loss" else "no metric that needs labels"
            why = (
                f" {n_unlabeled} validation item(s) came without labels (the domain's encode() "
                f"returned labels=None), which give {lacking}: give labelled 'valid' items."
            )
        elif self.monitor_key != "valid_loss" and type(self.domain).metrics is Domain.metrics:
            why = f" The domain {type(self.domain).__name__} defines no metrics."
        raise ValueError(
            f"The 'monitor' parameter of fit names {self.monitor_key!r}, but validation {gave}.{why}"
        )

    def _better(self, value: float, than: float | None) -> bool:
        """Whether ``value`` improves on ``than`` (None: nothing to beat) for the monitor."""
        return than is None or (value > than if self.higher_is_better else value < than)

    def _keep_best(self, value: float, record: Mapping[str, float], snapshot: bool) -> None:
        """Record the current weights as the best so far (a CPU copy of them with ``snapshot``)."""
        self.best_value, self.best_step, self.best_record = value, self.step, _clean(record)
        if snapshot:
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.network.state_dict().items()}

    def _log_record(self, record: Mapping[str, float]) -> None:
        """Add an evaluation's values to the log (rank 0); the train loss has its own rows."""
        if not self.dist.is_main:
            return
        row: dict[str, Any] = {"step": self.step, "epoch": self.epoch}
        row.update(_clean(record))
        row.update({"lr": self.optimizer.param_groups[0]["lr"], "time_s": round(self._elapsed(), 3)})
        self.log.add(row)

    # -- files ------------------------------------------------------------------------------------
    def _elapsed(self) -> float:
        return self.elapsed_before + (time.monotonic() - self.start_time)

    def _plot(self, final: bool = False) -> None:
        if not self.plot_curves:
            return
        # Drawing costs about a second; during training the curves are refreshed at most twice a
        # minute, and always at the end.
        now = time.monotonic()
        if not final and now - getattr(self, "_last_plot", -math.inf) < 30.0:
            return
        self._last_plot = now
        from .errors import MissingExtraError
        from .plotting import plot_training_curves

        try:
            plot_training_curves(self.log.rows, self.out_dir / "curves.png")
        except MissingExtraError as exc:
            # matplotlib is an optional extra: the run goes on without the picture (log.csv
            # holds the same numbers), and says so once.
            self.plot_curves = False
            warnings.warn(f"{exc} Training goes on without writing curves.png (plot=False hides this).")

    def _summary(self, stopped: str) -> dict[str, Any]:
        return {
            "steps": self.step,
            "epochs": self.epoch,
            "stopped": stopped,
            "loss": self.loss_name,
            "best_step": self.best_step,
            "monitor": self.monitor_key if self.valid_set is not None else "train_loss",
            "best_value": self.best_value,
            "best_valid": self.best_record,
            "skipped_steps": self.skipped_steps,
            "time_s": round(self._elapsed(), 3),
            "world_size": self.dist.world_size,
            "precision": self.precision,
            "trainer": self.config.to_json(),
        }

    def _save_model(self) -> None:
        """Save the best model so far to out_dir/model (rank 0), so a crash keeps it."""
        if self.out_dir is None or not self.dist.is_main:
            return
        self.model.config["training"] = self._summary("running")
        self.model.save(self.out_dir / "model")

    def _checkpoint(self) -> None:
        """Write a resume checkpoint (rank 0), atomically: a finished folder, then the pointer."""
        self.last_checkpoint_step = self.step
        if self.out_dir is None:
            return
        # Gathered through the device: nccl moves CUDA tensors only.
        torch_states = self.dist.all_gather_tensor(torch.get_rng_state().to(self.device)).cpu()  # (world, n) uint8
        if not self.dist.is_main:
            return
        from .io import atomic_save_tensors, atomic_write_json, make_temp_folder, replace_folder

        tensors: dict[str, torch.Tensor] = {}
        for k, v in self.network.state_dict().items():
            tensors[f"model.{k}"] = v
        if self.best_state is not None:
            for k, v in self.best_state.items():
                tensors[f"best.{k}"] = v
        optim = self.optimizer.state_dict()
        optim_scalars: dict[str, dict[str, Any]] = {}
        for pid, state in optim["state"].items():
            for name, value in state.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim.{pid}.{name}"] = value
                else:
                    optim_scalars.setdefault(str(pid), {})[name] = value
        tensors["rng.torch"] = torch_states
        if torch.cuda.is_available() and self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        np_state = np.random.get_state()
        tensors["rng.numpy"] = torch.from_numpy(np.asarray(np_state[1], dtype=np.int64))
        py_state = random.getstate()
        state = {
            "format": "embedseg-checkpoint",
            "format_version": 1,
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "world_size": self.dist.world_size,
            "lr_scale": self.lr_scale,
            "plateau_best": self.plateau_best,
            "plateau_bad": self.plateau_bad,
            "best_value": self.best_value,
            "best_step": self.best_step,
            "best_record": self.best_record,
            "stale_evals": self.stale_evals,
            "bad_streak": self.bad_streak,
            "skipped_steps": self.skipped_steps,
            "round_loss": self.round_loss,
            "log_loss": self.log_loss,
            "last_eval_step": self.last_eval_step,
            "elapsed_s": self._elapsed(),
            "optimizer": {"param_groups": optim["param_groups"], "scalars": optim_scalars},
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": {
                "numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
                "python": [py_state[0], list(py_state[1]), py_state[2]],
            },
            "log_rows": self.log.rows,
            "trainer": self.config.to_json(),
        }
        root = self.out_dir / "checkpoints"
        root.mkdir(parents=True, exist_ok=True)
        name = f"step-{self.step:08d}"
        tmp = make_temp_folder(root, name)
        try:
            atomic_save_tensors(tmp / CHECKPOINT_TENSORS, tensors, {"format": "embedseg-checkpoint"})
            atomic_write_json(tmp / CHECKPOINT_JSON, state)
            replace_folder(tmp, root / name, marker=CHECKPOINT_JSON)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        atomic_write_json(root / "latest.json", {"checkpoint": name, "step": self.step})
        saved = sorted(
            (int(p.name[5:]), p) for p in root.iterdir()
            if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit()
        )  # by step number: past 10^8 steps the names no longer sort
        # Checkpoints past this step are from a run this one went back on (resumed from an
        # earlier checkpoint): nothing would resume them, and left in place they would outrank
        # this run's in the rotation, which could delete the one latest.json names.
        later = [p for step, p in saved if step > self.step]
        earlier = [p for step, p in saved if step <= self.step]
        # Half-written folders of a process that was killed mid-write (rank 0 is the only
        # writer here, and its own write is complete by now).
        killed = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(".step-") and p.name.endswith(".tmp")]
        for old in later + earlier[: -self.config.keep_checkpoints] + killed:
            shutil.rmtree(old, ignore_errors=True)

    @staticmethod
    def _latest_in(run: Path) -> Path | None:
        """The checkpoint that ``run/checkpoints/latest.json`` names, or None without one."""
        from .io import read_json

        pointer = run / "checkpoints" / "latest.json"
        if not pointer.is_file():
            return None
        name = read_json(pointer, "checkpoint pointer").get("checkpoint")
        if not isinstance(name, str) or "/" in name or "\\" in name or name.startswith("."):
            raise TrainingError(f"The checkpoint pointer '{pointer}' names no checkpoint: {name!r}.")
        return pointer.parent / name

    def _find_checkpoint(self) -> Path | None:
        cfg = self.config
        if cfg.resume is False:
            return None
        if cfg.resume is True:
            # Nothing to resume yet means a fresh run (handy for jobs that may be preempted).
            return self._latest_in(self.out_dir)
        path = Path(cfg.resume)
        latest = self._latest_in(path)
        if latest is not None:
            return latest
        if not (path / CHECKPOINT_JSON).is_file():
            raise TrainingError(
                f"The 'resume' path '{path}' is neither a checkpoint folder (with {CHECKPOINT_JSON}) "
                f"nor a run folder with checkpoints/latest.json."
            )
        return path

    def _load_checkpoint(self, path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        from .errors import ModelFileError
        from .io import check_no_pickle, read_json, read_tensors, settled_folder

        path = settled_folder(path, marker=CHECKPOINT_JSON)
        check_no_pickle(path)
        state = read_json(path / CHECKPOINT_JSON, "checkpoint")
        tensors, _ = read_tensors(path / CHECKPOINT_TENSORS, "checkpoint tensors")
        if state.get("format") != "embedseg-checkpoint":
            raise ModelFileError(f"'{path / CHECKPOINT_JSON}' is not an embedseg checkpoint.")
        saved = state.get("trainer", {})
        for key in ("batch_size", "seed", "shuffle"):
            if saved.get(key) != getattr(self.config, key):
                warnings.warn(
                    f"Resuming with {key}={getattr(self.config, key)!r} where the checkpoint used "
                    f"{saved.get(key)!r}: the run will not reproduce the uninterrupted one."
                )
        if state.get("world_size") != self.dist.world_size:
            warnings.warn(
                f"Resuming on {self.dist.world_size} process(es) a run checkpointed on "
                f"{state.get('world_size')}: data order and RNG streams differ from the original run."
            )
        model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        try:
            self.network.load_state_dict(model_state, strict=True)
        except RuntimeError as exc:
            raise ModelFileError(
                f"The checkpoint '{path}' does not match this network: {str(exc).splitlines()[0]}"
            ) from None
        best = {k[len("best.") :]: v for k, v in tensors.items() if k.startswith("best.")}
        self.best_state = best or None
        optim_state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, pid, name = key.split(".", 2)
                optim_state.setdefault(int(pid), {})[name] = value
        for pid, scalars in state["optimizer"]["scalars"].items():
            optim_state.setdefault(int(pid), {}).update(scalars)
        if saved.get("optimizer", self.config.optimizer) != self.config.optimizer:
            raise ModelFileError(
                f"The optimizer state in '{path}' does not fit this run's {type(self.optimizer).__name__}: "
                f"the checkpoint was written with optimizer={saved.get('optimizer')!r}."
            )
        try:
            self.optimizer.load_state_dict({"state": optim_state, "param_groups": state["optimizer"]["param_groups"]})
        except (ValueError, KeyError, RuntimeError) as exc:
            raise ModelFileError(
                f"The optimizer state in '{path}' does not fit this run's {type(self.optimizer).__name__} "
                f"(was the checkpoint written with another optimizer or network?): {exc}"
            ) from None
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        for key in (
            "step", "epoch", "batch_in_epoch", "lr_scale", "plateau_best", "plateau_bad", "best_value",
            "best_step", "best_record", "stale_evals", "bad_streak", "skipped_steps", "round_loss",
            "log_loss", "last_eval_step",
        ):
            setattr(self, key, state[key])
        self.elapsed_before = float(state.get("elapsed_s", 0.0))
        rows = [r for r in state.get("log_rows", []) if r["step"] <= self.step]
        rng = dict(state["rng"])
        torch_states = tensors["rng.torch"]
        rng["torch"] = torch_states[min(self.dist.rank, torch_states.shape[0] - 1)]
        rng["cuda"] = tensors.get("rng.cuda")
        rng["numpy_keys"] = tensors["rng.numpy"]
        return rows, rng

    def _set_rng_state(self, rng: Mapping[str, Any]) -> None:
        torch.set_rng_state(rng["torch"].to(torch.uint8))
        if self.dist.rank == 0:
            if rng.get("cuda") is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"].to(torch.uint8), self.device)
            name, pos, has_gauss, cached = rng["numpy"]
            np.random.set_state((name, rng["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
            version, internal, gauss = rng["python"]
            random.setstate((version, tuple(internal), gauss))
        else:
            # Only rank 0's numpy/Python streams are saved; the others restart from a seed that
            # depends on the step, so a resumed multi-process run stays deterministic.
            seed = self.config.seed + 7919 * self.dist.rank + self.step
            np.random.seed(seed % 2**32)
            random.seed(seed)

    # -- the loop ---------------------------------------------------------------------------------
    def fit(self, train: Any, valid: Any = None) -> Model:
        """Train on ``train`` (validating on ``valid``) and return the model with the best weights.

        Args:
            train: a map-style or iterable dataset, or a list, of domain-native items.
            valid: the same kind of dataset, or None.

        Returns:
            ``self.model``, its network holding the best weights (by the monitored validation
            value when ``valid`` is given, else the last), in eval mode.

        Raises:
            TrainingError: ``max_bad_steps`` consecutive steps had a non-finite loss.
        """
        self.start_time = time.monotonic()
        self._setup(train, valid)
        try:
            return self._loop()
        finally:
            if self.writer is not None:
                self.writer.close()

    def _loop(self) -> Model:
        cfg = self.config
        budget = None if cfg.max_minutes is None else cfg.max_minutes * 60.0
        call_start = time.monotonic()
        show = cfg.progress if cfg.progress is not None else sys.stderr.isatty()
        from tqdm.auto import tqdm

        bar = tqdm(
            total=self.planned_steps, initial=self.step, disable=not (show and self.dist.is_main),
            unit="step", dynamic_ncols=True, desc="training",
        )
        def time_up() -> bool:
            if budget is None:
                return False
            flag = torch.tensor([float(time.monotonic() - call_start >= budget)], device=self.device)
            if not self.dist.is_main:
                flag.zero_()  # rank 0's clock decides, so every rank stops together
            return self.dist.all_reduce_sum(flag).item() > 0

        stopped = "epochs"
        done = cfg.max_steps is not None and self.step >= cfg.max_steps
        try:
            while not done and (cfg.epoch_limit is None or self.epoch < cfg.epoch_limit):
                epoch_start = self.step if self.batch_in_epoch == 0 else None
                for batch in self._synced(self._epoch_loader(self.epoch, self.batch_in_epoch)):
                    lr = self._set_lr()
                    loss, ok = self._train_step(batch)
                    self.step += 1
                    self.batch_in_epoch += 1
                    if ok:
                        self.bad_streak = 0
                        self.round_loss[0] += loss
                        self.round_loss[1] += 1
                        self.log_loss[0] += loss
                        self.log_loss[1] += 1
                    else:
                        self.bad_streak += 1
                        self.skipped_steps += 1
                        if self.bad_streak >= cfg.max_bad_steps:
                            raise TrainingError(
                                f"Training stopped at step {self.step}: the last {self.bad_streak} "
                                f"steps had a non-finite loss or gradient (NaN or inf). Lower 'lr', "
                                f"set 'grad_clip', use precision='fp32', or check the data."
                            )
                    bar.update(1)
                    if math.isfinite(loss):
                        bar.set_postfix(loss=f"{loss:.4g}", lr=f"{lr:.2e}", refresh=False)
                    if self.step % cfg.log_every == 0 and self.dist.is_main:
                        mean = self.log_loss[0] / self.log_loss[1] if self.log_loss[1] else None
                        self.log.add({"step": self.step, "epoch": self.epoch, "train_loss": mean,
                                      "lr": lr, "time_s": round(self._elapsed(), 3)})
                        if self.writer is not None and mean is not None:
                            self.writer.add_scalar("train/loss", mean, self.step)
                            self.writer.add_scalar("train/lr", lr, self.step)
                    if self.step % cfg.log_every == 0:
                        self.log_loss = [0.0, 0]
                    if cfg.eval_every is not None and self.step % cfg.eval_every == 0:
                        if self._evaluate():
                            done, stopped = True, "early_stopping"
                    if cfg.checkpoint_every is not None and self.step % cfg.checkpoint_every == 0:
                        self._checkpoint()
                    if cfg.max_steps is not None and self.step >= cfg.max_steps:
                        done, stopped = True, "max_steps"
                    if not done and time_up():
                        done, stopped = True, "max_minutes"
                    if done:
                        break
                else:
                    # The epoch ran to its end.
                    if epoch_start is not None and self.step == epoch_start:
                        # An iterable dataset that yields nothing (a generator used up by an
                        # earlier pass) would otherwise spin through empty epochs until the
                        # time or step budget ends, which may be never.
                        done, stopped = True, "data_exhausted"
                        break
                    self.epoch += 1
                    self.batch_in_epoch = 0
                    if cfg.eval_every is None and self._evaluate():
                        done, stopped = True, "early_stopping"
                    if not done and (cfg.epoch_limit is None or self.epoch < cfg.epoch_limit) and time_up():
                        done, stopped = True, "max_minutes"
                    if cfg.checkpoint_every is None or done:
                        self._checkpoint()
                    continue
                break
            # The checkpoint comes first so that a run stopped by max_steps or max_minutes and
            # resumed later continues exactly as if it had never stopped.
            if self.last_checkpoint_step != self.step:
                self._checkpoint()
            if self.valid_set is not None and self.last_eval_step != self.step:
                self._consider_final()
        finally:
            bar.close()
        if self.valid_set is not None and self.best_state is not None:
            self.network.load_state_dict(self.best_state)
        self.network.eval()
        self.model.config["training"] = self._summary(stopped)
        if self.dist.is_main and self.out_dir is not None:
            self.model.save(self.out_dir / "model")
            self._plot(final=True)
        return self.model
