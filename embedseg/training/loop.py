"""The trainer: its set-up, the step, the epoch loop, evaluation, and when it writes files.

Every step checks what it computed before it keeps anything: a non-finite loss (on any process)
or gradient (after unscaling, before the update) skips the step, and so does a forward pass that
left a buffer (BatchNorm statistics) non-finite. A skipped step changes nothing: the gradients
are dropped and the buffers are put back as they were before it. ``max_bad_steps`` skipped
steps in a row stop the run with a :class:`TrainingError` that names what was non-finite, and
the checkpoint and model writers refuse to write NaN or infinity.
"""

from __future__ import annotations

import itertools
import math
import random
import shutil
import signal
import sys
import threading
import time
import warnings
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from ..datasets import Shard, _empty_dataset, check_dataset, is_map_style
from ..device import resolve_device
from ..distributed import DistContext, setup, shard_indices
from ..domain import Domain
from ..errors import ModelFileError
from ..inference import InferenceEngine
from ..model import Model
from ..networks import float_output
from .averaging import WeightAverage
from .config import DEFAULT_EPOCHS, TrainerConfig
from .logging import Reporter, finite_or_none, progress_bar
from .state import (
    TrainingError,
    TrainingState,
    capture_rng,
    check_run_folder,
    clear_run,
    find_checkpoint,
    join_optimizer_state,
    nonfinite_names,
    read_checkpoint,
    restore_rng,
    split_optimizer_state,
    write_checkpoint,
)

__all__ = ["Trainer"]


def _grad_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The global 2-norm of ``grads``, in fp32, as ``clip_grad_norm_`` computes it."""
    grads = [g.float() for g in grads]
    if hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6: the foreach kernels
        return torch.nn.utils.get_total_norm(grads)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def _clip(params: list[nn.Parameter], max_norm: float, norm: torch.Tensor) -> None:
    """Scale the gradients of ``params`` so their global norm (``norm``) is at most ``max_norm``."""
    if hasattr(torch.nn.utils, "clip_grads_with_norm_"):  # torch >= 2.6
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
        return
    coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    for p in params:
        if p.grad is not None:
            p.grad.mul_(coef.to(p.grad.device, p.grad.dtype))


def _quoted(names: list[str], limit: int = 3) -> str:
    """'a', 'b', 'c' and 4 more."""
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


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
        self.out_dir = Path(cfg.out_dir) if cfg.out_dir is not None else None
        # Every process looks before any of them writes (the first write comes after a barrier).
        check_run_folder(self.out_dir, cfg.resume, cfg.overwrite)
        self.device = resolve_device(cfg.device)
        self.dist: DistContext = setup(self.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        self.domain = self.model.domain
        self.loss_name = cfg.loss or self.domain.default_loss
        self.network = self.model.network.to(self.device)
        self.network.train()
        if self.out_dir is not None and self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)

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
        self.map_style = is_map_style(train)
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

        # Where the run stands: everything a checkpoint holds but the tensors.
        self.state = TrainingState(world_size=self.dist.world_size)
        self.last_checkpoint_step = -1
        self.best_state: dict[str, torch.Tensor] | None = None
        self.bad_reason = ""  # what was non-finite at the last skipped step
        self.bad_reasons: list[str] = []  # the same, for each step of the current streak

        # Seed this process; ranks differ so that dropout masks differ between shards.
        seed = cfg.seed + self.dist.rank
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)

        # The moving average of the weights starts at the weights training starts from.
        self.average = WeightAverage(self.network, cfg.ema_decay) if cfg.ema_decay is not None else None
        checkpoint = find_checkpoint(cfg.resume, self.out_dir)
        rng = None
        if checkpoint is not None:
            rng = self._load_checkpoint(checkpoint)
        elif self.out_dir is not None and self.dist.is_main:
            if cfg.overwrite:
                clear_run(self.out_dir)
            elif (self.out_dir / "checkpoints").is_dir():
                # resume=True found nothing to resume, only what a killed first write left:
                # it would otherwise outrank this run's checkpoints in the rotation.
                shutil.rmtree(self.out_dir / "checkpoints")
        self.dist.barrier()
        self.report = Reporter(
            self.out_dir if self.dist.is_main else None, self.state.log_rows,
            tensorboard=cfg.tensorboard, plot=cfg.plot, purge_step=self.state.step or None,
        )
        if rng is not None:
            self._set_rng_state(*rng)  # last: nothing above may consume random numbers after it

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
            data = Shard(data, self.dist.rank, self.dist.world_size)
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

    def _valid_share(self) -> Any:
        """This process's share of the validation set."""
        data = self.valid_set
        if self.dist.enabled:
            if is_map_style(data):
                data = torch.utils.data.Subset(
                    data, shard_indices(range(len(data)), self.dist.rank, self.dist.world_size, pad=False)
                )
            else:
                data = Shard(data, self.dist.rank, self.dist.world_size)
        return data

    # -- one step ---------------------------------------------------------------------------------
    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _loss(self, module: nn.Module, encoded: Any) -> torch.Tensor:
        with self._autocast():
            output = module(encoded.features)
        with torch.autocast(self.device.type, enabled=False):
            return self.domain.compute_loss(float_output(output), encoded, self.loss_name).float()

    def _set_lr(self) -> float:
        cfg = self.config
        warm = min(1.0, (self.state.step + 1) / self.warmup) if self.warmup > 0 else 1.0
        lr = max(cfg.lr * self.state.lr_scale, min(cfg.min_lr, cfg.lr)) * warm
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _train_step(self, batch: Any) -> tuple[float, bool]:
        """Forward, backward and update; returns (loss averaged over ranks, whether applied).

        A step that is not applied changes nothing (see the module's notes); ``self.bad_reason``
        then says what was non-finite.
        """
        encoded = self.domain.encode(batch, self.device)
        # The forward pass updates buffers (BatchNorm statistics) in place: a copy puts them back
        # when the step is skipped. Buffers are small next to the weights.
        buffers = list(self.network.buffers())
        before = [b.detach().clone() for b in buffers]
        loss = self._loss(self.train_module, encoded)
        self.optimizer.zero_grad(set_to_none=True)
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grads = [p.grad for p in self.params if p.grad is not None]
        norm = _grad_norm(grads) if grads else torch.zeros((), device=self.device)
        value = loss.detach().float()
        finite = torch.isfinite(value)
        floating = [b for b in buffers if b.is_floating_point() and b.numel()]
        if floating:
            buffers_finite = torch.stack([torch.isfinite(b).all() for b in floating]).all()
        else:
            buffers_finite = torch.ones((), dtype=torch.bool, device=self.device)
        # One small all-reduce (and the step's one wait for the device): summed loss, and the
        # number of ranks with a non-finite loss, gradient norm and buffer.
        stats = torch.stack([
            torch.where(finite, value, torch.zeros_like(value)), (~finite).float(),
            (~torch.isfinite(norm)).float().to(value.device), (~buffers_finite).float().to(value.device),
        ])
        stats = self.dist.all_reduce_sum(stats.to(self.device))
        loss_sum, n_bad_loss, n_bad_grad, n_bad_buffers = stats.tolist()
        # Under fp16 loss scaling a non-finite gradient is routine (an overflow at too large a
        # scale): the scaler skips the update and lowers its scale itself.
        bad_grad = n_bad_grad > 0 and self.scaler is None
        ok = not (n_bad_loss or bad_grad or n_bad_buffers)
        if ok:
            if self.config.grad_clip is not None:
                _clip(self.params, self.config.grad_clip, norm)
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
            else:
                self.optimizer.step()
            if self.average is not None:
                self.average.update(self.network, self.state.step + 1)  # the step being taken
        else:
            self.bad_reason = self._nonfinite(bool(finite), n_bad_loss > 0, bad_grad, n_bad_buffers > 0)
        if self.scaler is not None:
            self.scaler.update()
        if not ok:
            self.optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                for buffer, saved in zip(buffers, before):
                    buffer.copy_(saved)
        n_good = self.dist.world_size - n_bad_loss
        return (loss_sum / n_good if n_good else math.nan), ok

    def _nonfinite(self, local_loss: bool, bad_loss: bool, bad_grad: bool, bad_buffers: bool) -> str:
        """What made a step non-finite, in words (before its gradients and buffers are reset)."""
        parts = []
        if bad_loss:  # its gradients are non-finite too: the loss is the cause to name
            parts.append("the loss" if not local_loss else "the loss on another process")
        elif bad_grad:
            names = [
                name for name, p in self.network.named_parameters()
                if p.grad is not None and not bool(torch.isfinite(p.grad).all())
            ]
            parts.append(
                f"the gradient of {_quoted(names)}" if names
                else "the gradient norm (every gradient is finite; their norm overflows float32)"
            )
        if bad_buffers:
            names = nonfinite_names(dict(self.network.named_buffers()))
            parts.append(f"the buffer {_quoted(names)}" if names else "a buffer on another process")
        return " and ".join(parts)

    def _bad_step_error(self) -> TrainingError:
        """The error that stops a run after ``max_bad_steps`` skipped steps in a row."""
        counts: dict[str, int] = {}
        for reason in self.bad_reasons:
            counts[reason] = counts.get(reason, 0) + 1
        what = "; ".join(f"{reason} ({n} step{'s' if n > 1 else ''})" for reason, n in counts.items())
        return TrainingError(
            f"Training stopped at step {self.state.step}: the last {self.state.bad_streak} steps had a "
            f"non-finite loss, gradient or buffer (NaN or inf) and were skipped. Non-finite: {what}. "
            f"Lower 'lr', set 'grad_clip', use precision='fp32', or check the data."
        )

    # -- validation -------------------------------------------------------------------------------
    def _validate(self) -> dict[str, float]:
        """Validation loss, and the domain's metrics of exactly what inference returns for the
        validation items (the model's inference engine), pooled over items and processes."""
        engine = InferenceEngine(self.network, self.domain, self.model.clusterer, autocast=self._autocast)
        metric = self.domain.metrics() if self.config.valid_metrics else None
        loss_sum, n_labeled, count, unlabeled = 0.0, 0, 0, 0
        try:
            for batch in engine.batches(self._valid_share(), self.config.batch_size, self.config.num_workers):
                encoded = engine.encode(batch)
                n = encoded.batch_size
                count += n
                if encoded.labels is None:  # nothing to score against
                    unlabeled += n
                    continue
                output = engine.run(encoded.features)  # eval mode, no gradients
                loss_sum += float(self.domain.compute_loss(output, encoded, self.loss_name)) * n
                n_labeled += n
                if metric is not None:
                    engine.run.remember(encoded.features, output)  # the plain pass is inference's first
                    metric.update(engine.predict_encoded(encoded), encoded)
                    engine.run.forget()
        finally:
            engine.run.forget()
        if self.dist.enabled:
            state = None if metric is None else metric.state_dict()
            gathered = self.dist.all_gather_object((loss_sum, n_labeled, count, unlabeled, state))
            loss_sum, n_labeled, count, unlabeled = (sum(part[i] for part in gathered) for i in range(4))
            if metric is not None:
                metric.reset()
                for part in gathered:
                    metric.merge(part[4])
        self.valid_unlabeled = unlabeled
        if count == 0:  # an iterable dataset that yielded nothing
            raise _empty_dataset("valid", self.valid_set)
        record: dict[str, float] = {}
        if n_labeled:
            record["valid_loss"] = loss_sum / n_labeled
        if metric is not None and not metric.empty:
            record.update({k: float(v) for k, v in metric.compute().items()})
        return record

    def _evaluated_weights(self) -> Any:
        """A context in which the network holds the weights that are validated, kept as the best
        and saved: the moving average with ``ema_decay``, else its own."""
        return self.average.applied(self.network) if self.average is not None else nullcontext()

    def _evaluate(self) -> bool:
        """Validate (or use the train loss of the round), update plateau and early stopping.

        Returns True when early stopping says stop.
        """
        with self._evaluated_weights():
            return self._evaluate_weights()

    def _evaluate_weights(self) -> bool:
        cfg, state = self.config, self.state
        state.last_eval_step = state.step
        train_loss = state.round_loss[0] / state.round_loss[1] if state.round_loss[1] else None
        state.round_loss = [0.0, 0]
        record: dict[str, float] = {}
        if self.valid_set is not None:
            record = self._validate()
            value = self._monitored(record)
        else:
            value = train_loss
        if value is None or not math.isfinite(value):
            return False
        # Plateau decay of the learning rate.
        if self._better(value, state.plateau_best):
            state.plateau_best, state.plateau_bad = value, 0
        else:
            state.plateau_bad += 1
            if state.plateau_bad >= cfg.plateau_patience and cfg.lr * state.lr_scale > cfg.min_lr:
                state.lr_scale *= cfg.plateau_factor
                state.plateau_bad = 0
        # Best model and early stopping.
        stop = False
        if self._better(value, state.best_value):
            state.stale_evals = 0
            # Without validation data the best model is the last one: nothing to snapshot.
            self._keep_best(value, record, snapshot=self.valid_set is not None)
            if self.valid_set is not None:
                self._save_model()
        else:
            state.stale_evals += 1
            stop = cfg.patience is not None and state.stale_evals >= cfg.patience
        self._log_record(record)
        self.report.eval_scalars(record, state.step)  # rank 0 only: the others have no writer
        self.report.plot()
        return stop

    def _consider_final(self) -> None:
        """Validate the last weights as a candidate for the best model, changing nothing else."""
        with self._evaluated_weights():
            self._consider_final_weights()

    def _consider_final_weights(self) -> None:
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
        if self._better(value, self.state.best_value):
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
        state = self.state
        state.best_value, state.best_step, state.best_record = value, state.step, finite_or_none(record)
        if snapshot:
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.network.state_dict().items()}

    def _log_record(self, record: Mapping[str, float]) -> None:
        """Add an evaluation's values to the log (rank 0); the train loss has its own rows."""
        if not self.dist.is_main:
            return
        row: dict[str, Any] = {"step": self.state.step, "epoch": self.state.epoch}
        row.update(finite_or_none(record))
        row.update({"lr": self.optimizer.param_groups[0]["lr"], "time_s": round(self._elapsed(), 3)})
        self.report.eval_row(row)

    # -- files ------------------------------------------------------------------------------------
    def _elapsed(self) -> float:
        """Training seconds: of the interrupted calls a resumed run continues, and of this one."""
        return self.state.elapsed_s + (time.monotonic() - self.start_time)

    def _summary(self, stopped: str) -> dict[str, Any]:
        state = self.state
        return {
            "steps": state.step,
            "epochs": state.epoch,
            "stopped": stopped,
            "loss": self.loss_name,
            "best_step": state.best_step,
            "monitor": self.monitor_key if self.valid_set is not None else "train_loss",
            "best_value": state.best_value,
            "best_valid": state.best_record,
            "skipped_steps": state.skipped_steps,
            "time_s": round(self._elapsed(), 3),
            "world_size": self.dist.world_size,
            "precision": self.precision,
            "trainer": self.config.to_json(),
        }

    def _check_weights(self) -> None:
        """Refuse to save a network that holds NaN or infinity."""
        bad = nonfinite_names(self.network.state_dict())
        if bad:
            raise TrainingError(
                f"Refusing to save the model at step {self.state.step}: {_quoted(bad)} hold(s) NaN "
                f"or infinity. Nothing was written."
            )

    def _save_model(self) -> None:
        """Save the best model so far to out_dir/model (rank 0), so a crash keeps it."""
        if self.out_dir is None or not self.dist.is_main:
            return
        self._check_weights()
        self.model.config["training"] = self._summary("running")
        self.model.save(self.out_dir / "model")

    def _checkpoint(self) -> None:
        """Write a resume checkpoint (rank 0), atomically: a finished folder, then the pointer."""
        self.last_checkpoint_step = self.state.step
        if self.out_dir is None:
            return
        # Gathered through the device: nccl moves CUDA tensors only.
        torch_states = self.dist.all_gather_tensor(torch.get_rng_state().to(self.device)).cpu()  # (world, n) uint8
        if not self.dist.is_main:
            return
        tensors: dict[str, torch.Tensor] = {f"model.{k}": v for k, v in self.network.state_dict().items()}
        if self.best_state is not None:
            tensors.update({f"best.{k}": v for k, v in self.best_state.items()})
        if self.average is not None:
            tensors.update({f"average.{k}": v for k, v in self.average.state_tensors().items()})
        optimizer, optimizer_tensors = split_optimizer_state(self.optimizer.state_dict())
        tensors.update(optimizer_tensors)
        rng, rng_tensors = capture_rng(torch_states, self.device)
        tensors.update(rng_tensors)
        # What the state does not count itself is filled in as it is written.
        written = replace(
            self.state,
            elapsed_s=self._elapsed(),
            optimizer=optimizer,
            scaler=self.scaler.state_dict() if self.scaler is not None else None,
            rng=rng,
            log_rows=self.report.rows,
            trainer=self.config.to_json(),
        )
        write_checkpoint(self.out_dir / "checkpoints", written, tensors, self.config.keep_checkpoints)

    def _load_checkpoint(self, path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """Continue from the checkpoint at ``path``; returns its RNG states (set last, by
        :meth:`_set_rng_state`)."""
        state, tensors = read_checkpoint(path)
        saved = state.trainer
        for key in ("batch_size", "seed", "shuffle"):
            if saved.get(key) != getattr(self.config, key):
                warnings.warn(
                    f"Resuming with {key}={getattr(self.config, key)!r} where the checkpoint used "
                    f"{saved.get(key)!r}: the run will not reproduce the uninterrupted one."
                )
        if state.world_size != self.dist.world_size:
            warnings.warn(
                f"Resuming on {self.dist.world_size} process(es) a run checkpointed on "
                f"{state.world_size}: data order and RNG streams differ from the original run."
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
        average = {k[len("average.") :]: v for k, v in tensors.items() if k.startswith("average.")}
        if self.average is not None:
            if average:
                try:
                    self.average.load(average)
                except KeyError as exc:
                    raise ModelFileError(f"The checkpoint '{path}' does not match this network: {exc.args[0]}") from None
            else:
                warnings.warn(
                    f"The checkpoint '{path}' holds no moving average of the weights (its run had no "
                    f"ema_decay): the average starts at the checkpoint's weights."
                )
                self.average.load(self.network.state_dict())
        elif average:
            warnings.warn(
                f"The checkpoint '{path}' holds a moving average of the weights, but this run has no "
                f"ema_decay: the average is dropped and the weights themselves are validated and saved."
            )
        if saved.get("optimizer", self.config.optimizer) != self.config.optimizer:
            raise ModelFileError(
                f"The optimizer state in '{path}' does not fit this run's {type(self.optimizer).__name__}: "
                f"the checkpoint was written with optimizer={saved.get('optimizer')!r}."
            )
        try:
            self.optimizer.load_state_dict(join_optimizer_state(state.optimizer, tensors))
        except (ValueError, KeyError, RuntimeError) as exc:
            raise ModelFileError(
                f"The optimizer state in '{path}' does not fit this run's {type(self.optimizer).__name__} "
                f"(was the checkpoint written with another optimizer or network?): {exc}"
            ) from None
        if self.scaler is not None and state.scaler:
            self.scaler.load_state_dict(state.scaler)
        rng = state.rng
        # The parts kept elsewhere while training (optimizer, scaler, options) are filled in
        # afresh by the next checkpoint; the log keeps the rows up to the checkpoint's step.
        self.state = replace(
            state,
            world_size=self.dist.world_size,
            optimizer={},
            scaler=None,
            rng={},
            log_rows=[r for r in state.log_rows if r["step"] <= state.step],
            trainer={},
        )
        return rng, tensors

    def _set_rng_state(self, rng: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> None:
        restore_rng(rng, tensors, self.dist.rank, self.device)
        if self.dist.rank != 0:
            # Only rank 0's numpy/Python streams are saved; the others restart from a seed that
            # depends on the step, so a resumed multi-process run stays deterministic.
            seed = self.config.seed + 7919 * self.dist.rank + self.state.step
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
            ValueError: ``out_dir`` holds an earlier run and neither ``resume`` nor ``overwrite``
                is set.
            TrainingError: ``max_bad_steps`` consecutive steps were skipped for a non-finite
                loss, gradient or buffer, or the weights to save hold NaN or infinity.
        """
        self.start_time = time.monotonic()
        self._setup(train, valid)
        try:
            return self._loop()
        finally:
            self.report.close()

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        """The first SIGINT / SIGTERM ends training after the current step, with a checkpoint
        and the model saved as at any other stop; a second one acts as it would have."""
        self._stop_signal = signal.Signals(signum).name
        self._restore_handlers()
        print(f"\n{self._stop_signal}: stopping after this step (checkpoint and model are saved); "
              "send it again to stop at once.", file=sys.stderr, flush=True)

    def _loop(self) -> Model:
        self._stop_signal: str | None = None
        self._previous_handlers: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous_handlers[sig] = signal.signal(sig, self._on_stop_signal)
        try:
            return self._steps()
        finally:
            self._restore_handlers()

    def _restore_handlers(self) -> None:
        for sig, previous in self._previous_handlers.items():
            signal.signal(sig, signal.SIG_DFL if previous is None else previous)  # None: set outside Python

    def _steps(self) -> Model:
        cfg, state = self.config, self.state
        budget = None if cfg.max_minutes is None else cfg.max_minutes * 60.0
        call_start = time.monotonic()
        show = cfg.progress if cfg.progress is not None else sys.stderr.isatty()
        bar = progress_bar(self.planned_steps, state.step, show and self.dist.is_main)

        def stop_reason() -> str | None:
            """"max_minutes" when the budget is spent, "signal" when a stop was asked for
            (SIGINT, SIGTERM), else None."""
            over = budget is not None and time.monotonic() - call_start >= budget
            asked = self._stop_signal is not None
            if self.dist.enabled and (budget is not None or state.step % cfg.log_every == 0):
                # rank 0's clock decides and any rank's signal counts, so every rank stops together
                flag = torch.tensor([float(over and self.dist.is_main), float(asked)], device=self.device)
                over, asked = (bool(v > 0) for v in self.dist.all_reduce_sum(flag).tolist())
            elif self.dist.enabled:
                over = asked = False  # agreed on every log_every steps only: no sync per step
            return "signal" if asked else ("max_minutes" if over else None)

        stopped = "epochs"
        done = cfg.max_steps is not None and state.step >= cfg.max_steps
        try:
            while not done and (cfg.epoch_limit is None or state.epoch < cfg.epoch_limit):
                epoch_start = state.step if state.batch_in_epoch == 0 else None
                for batch in self._synced(self._epoch_loader(state.epoch, state.batch_in_epoch)):
                    lr = self._set_lr()
                    loss, ok = self._train_step(batch)
                    state.step += 1
                    state.batch_in_epoch += 1
                    if ok:
                        state.bad_streak = 0
                        self.bad_reasons = []
                        state.round_loss[0] += loss
                        state.round_loss[1] += 1
                        state.log_loss[0] += loss
                        state.log_loss[1] += 1
                    else:
                        state.bad_streak += 1
                        state.skipped_steps += 1
                        self.bad_reasons.append(self.bad_reason)
                        if state.bad_streak >= cfg.max_bad_steps:
                            raise self._bad_step_error()
                    bar.update(1)
                    if math.isfinite(loss):
                        postfix = {"loss": f"{loss:.4g}", "lr": f"{lr:.2e}"}
                        if state.skipped_steps:
                            postfix["skipped"] = state.skipped_steps
                        bar.set_postfix(postfix, refresh=False)
                    if state.step % cfg.log_every == 0 and self.dist.is_main:
                        mean = state.log_loss[0] / state.log_loss[1] if state.log_loss[1] else None
                        row = {"step": state.step, "epoch": state.epoch, "train_loss": mean, "lr": lr,
                               "time_s": round(self._elapsed(), 3)}
                        if state.skipped_steps:
                            row["skipped_steps"] = state.skipped_steps
                        self.report.train_row(row)
                    if state.step % cfg.log_every == 0:
                        state.log_loss = [0.0, 0]
                    if cfg.eval_every is not None and state.step % cfg.eval_every == 0:
                        if self._evaluate():
                            done, stopped = True, "early_stopping"
                    if cfg.checkpoint_every is not None and state.step % cfg.checkpoint_every == 0:
                        self._checkpoint()
                    if cfg.max_steps is not None and state.step >= cfg.max_steps:
                        done, stopped = True, "max_steps"
                    if not done and (reason := stop_reason()):
                        done, stopped = True, reason
                    if done:
                        break
                else:
                    # The epoch ran to its end.
                    if epoch_start is not None and state.step == epoch_start:
                        # An iterable dataset that yields nothing (a generator used up by an
                        # earlier pass) would otherwise spin through empty epochs until the
                        # time or step budget ends, which may be never.
                        done, stopped = True, "data_exhausted"
                        break
                    state.epoch += 1
                    state.batch_in_epoch = 0
                    if cfg.eval_every is None and self._evaluate():
                        done, stopped = True, "early_stopping"
                    if not done and (cfg.epoch_limit is None or state.epoch < cfg.epoch_limit) and (reason := stop_reason()):
                        done, stopped = True, reason
                    if cfg.checkpoint_every is None or done:
                        self._checkpoint()
                    continue
                break
            # The checkpoint comes first so that a run stopped by max_steps or max_minutes and
            # resumed later continues exactly as if it had never stopped.
            if self.last_checkpoint_step != state.step:
                self._checkpoint()
            if self.valid_set is not None and state.last_eval_step != state.step:
                self._consider_final()
        finally:
            bar.close()
        if self.valid_set is not None and self.best_state is not None:
            self.network.load_state_dict(self.best_state)
        elif self.average is not None:  # the last weights are the model: their average
            self.average.copy_to(self.network)
        self.network.eval()
        self.model.config["training"] = self._summary(stopped)
        if self.dist.is_main and self.out_dir is not None:
            self._check_weights()
            self.model.save(self.out_dir / "model")
            self.report.plot(final=True)
        return self.model
