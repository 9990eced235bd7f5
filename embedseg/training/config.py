"""The trainer's options: one dataclass, each field with its comment, checked in one place."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from .._validation import check_bool, check_choice, check_float, check_int
from ..losses import list_losses

__all__ = ["TrainerConfig", "DEFAULT_EPOCHS"]

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
    ema_decay: float | None = None  # validate, keep and save a moving average of the weights with this decay (e.g. 0.999); None: the weights themselves
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
    max_bad_steps: int = 10  # consecutive skipped steps (non-finite loss, gradient or buffer) before training stops
    # -- files and reporting --------------------------------------------------------------------
    out_dir: str | None = None  # checkpoints, logs, curves and the model (None: nothing written)
    resume: bool | str = False  # True: from out_dir's latest checkpoint if any; or a checkpoint path
    overwrite: bool = False  # replace the run out_dir already holds (without it, or resume, such a folder is refused)
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
        if self.ema_decay is not None:
            check_float(self.ema_decay, "ema_decay", owner, 0.0, 1.0, closed="neither")
        if self.loss is not None:
            check_choice(self.loss, "loss", owner, list_losses())
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
        check_bool(self.overwrite, "overwrite", owner)
        if self.overwrite and self.out_dir is None:
            raise ValueError(
                "The 'overwrite' parameter of fit needs 'out_dir' (the run folder to replace). Got "
                "overwrite=True with out_dir=None."
            )
        if self.overwrite and self.resume is not False:
            # Replacing the run would delete the checkpoint the resume is to start from.
            raise ValueError(
                f"The 'overwrite' and 'resume' parameters of fit exclude each other: overwrite=True "
                f"replaces the run in out_dir, resume continues one. Got overwrite=True with "
                f"resume={self.resume!r}."
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
        """The names of the options, in declaration order."""
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
