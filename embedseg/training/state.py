"""Where a run stands, and the files that keep it: checkpoints and the run folder.

A checkpoint is a folder ``checkpoints/step-NNNNNNNN/`` of two files::

    checkpoint.json           {"format": "embedseg-checkpoint", "format_version": 1, ...}:
                              a TrainingState as JSON
    checkpoint.safetensors    the tensors: "model.<name>" (the network), "best.<name>" (the best
                              weights so far, when validating), "average.<name>" (the moving
                              average of the weights, with ema_decay), "optim.<param id>.<name>" (the
                              optimizer's per-parameter state), "rng.torch" (one row per process),
                              "rng.cuda", "rng.numpy"

``checkpoints/latest.json`` names the newest complete one. Both files are written through
:mod:`embedseg.io`'s atomic functions into a temporary folder that replaces the final one
whole, so a crash leaves the previous checkpoint usable. Nothing non-finite is ever written.
"""

from __future__ import annotations

import math
import random
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from .. import io as eio
from ..errors import EmbedsegError, ModelFileError

__all__ = [
    "TrainingError",
    "TrainingState",
    "CHECKPOINT_JSON",
    "CHECKPOINT_TENSORS",
    "write_checkpoint",
    "read_checkpoint",
    "latest_checkpoint",
    "run_entries",
    "check_run_folder",
    "clear_run",
    "nonfinite_names",
]

CHECKPOINT_FORMAT = "embedseg-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1
CHECKPOINT_JSON = "checkpoint.json"
CHECKPOINT_TENSORS = "checkpoint.safetensors"
LATEST = "latest.json"
#: what a trainer writes in its out_dir ("model.old": a model save that a crash interrupted).
RUN_ENTRIES = ("checkpoints", "log.csv", "model", "model.old", "curves.png", "tensorboard")


class TrainingError(EmbedsegError):
    """Training cannot go on (repeated non-finite steps, non-finite weights to save, an
    unusable checkpoint)."""


@dataclass
class TrainingState:
    """Everything about a run a checkpoint holds besides its tensors, as one JSON object.

    The trainer counts in this object as it trains; a checkpoint fills in the parts that live
    elsewhere (optimizer, scaler, RNG, log rows, options) when it is written. The field order is
    the key order of ``checkpoint.json``.
    """

    step: int = 0  # steps taken, skipped ones included
    epoch: int = 0  # epochs finished
    batch_in_epoch: int = 0  # batches of the current epoch already taken
    world_size: int = 1  # processes of the run that wrote the checkpoint
    lr_scale: float = 1.0  # product of the plateau decays so far
    plateau_best: float | None = None  # best monitored value since the lr last decayed
    plateau_bad: int = 0  # evaluations without improvement on plateau_best
    best_value: float | None = None  # best monitored value so far
    best_step: int | None = None  # the step that gave best_value
    best_record: dict[str, float | None] = field(default_factory=dict)  # validation values at best_step
    stale_evals: int = 0  # evaluations without improvement on best_value (early stopping)
    bad_streak: int = 0  # consecutive skipped steps
    skipped_steps: int = 0  # skipped steps in all
    round_loss: list[float] = field(default_factory=lambda: [0.0, 0])  # train-loss sum and count since the last evaluation
    log_loss: list[float] = field(default_factory=lambda: [0.0, 0])  # train-loss sum and count since the last log row
    last_eval_step: int = -1  # step of the last evaluation
    elapsed_s: float = 0.0  # training seconds: of the earlier calls while training, of all in a checkpoint
    optimizer: dict[str, Any] = field(default_factory=dict)  # {"param_groups", "scalars"}: the non-tensor optimizer state
    scaler: dict[str, Any] | None = None  # the fp16 GradScaler's state
    rng: dict[str, Any] = field(default_factory=dict)  # {"numpy", "python"}: RNG states but their key arrays
    log_rows: list[dict[str, Any]] = field(default_factory=list)  # the rows of log.csv
    trainer: dict[str, Any] = field(default_factory=dict)  # the options of the run (TrainerConfig.to_json())

    #: keys a checkpoint must hold; the others have had defaults since format version 1.
    REQUIRED = (
        "step", "epoch", "batch_in_epoch", "lr_scale", "plateau_best", "plateau_bad", "best_value",
        "best_step", "best_record", "stale_evals", "bad_streak", "skipped_steps", "round_loss",
        "log_loss", "last_eval_step", "optimizer", "rng",
    )

    def to_json(self) -> dict[str, Any]:
        """The state as the JSON object of ``checkpoint.json`` (a deep copy)."""
        return {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], source: str = "checkpoint") -> "TrainingState":
        """The state a :meth:`to_json` object describes.

        Raises:
            ModelFileError: ``obj`` is not an embedseg checkpoint, is of a newer format, or lacks
                a key.
        """
        if obj.get("format") != CHECKPOINT_FORMAT:
            raise ModelFileError(f"'{source}' is not an embedseg checkpoint.")
        version = obj.get("format_version")
        if not isinstance(version, int) or version > CHECKPOINT_FORMAT_VERSION:
            raise ModelFileError(
                f"'{source}' has checkpoint format version {version!r}; this embedseg reads "
                f"versions up to {CHECKPOINT_FORMAT_VERSION}."
            )
        missing = [key for key in cls.REQUIRED if key not in obj]
        if missing:
            raise ModelFileError(f"'{source}' lacks {', '.join(repr(k) for k in missing)}.")
        return cls(**{f.name: obj[f.name] for f in fields(cls) if f.name in obj})


# -- non-finite values -----------------------------------------------------------------------------
def nonfinite_names(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors that hold NaN or infinity, in order."""
    named = [(k, t) for k, t in tensors.items() if t.is_floating_point() and t.numel()]
    by_device: dict[torch.device, list[int]] = {}
    for i, (_, t) in enumerate(named):
        by_device.setdefault(t.device, []).append(i)
    bad = set()
    # One flag per tensor and one transfer per device, rather than a synchronization each.
    for index in by_device.values():
        flags = torch.stack([torch.isfinite(named[i][1].detach()).all() for i in index]).tolist()
        bad.update(i for i, ok in zip(index, flags) if not ok)
    return [named[i][0] for i in sorted(bad)]


def _nonfinite_json(value: Any, where: str) -> str | None:
    """The path of the first NaN or infinity in JSON data, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return where
    if isinstance(value, Mapping):
        for key, item in value.items():
            found = _nonfinite_json(item, f"{where}.{key}" if where else str(key))
            if found:
                return found
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = _nonfinite_json(item, f"{where}[{i}]")
            if found:
                return found
    return None


# -- optimizer and RNG state -------------------------------------------------------------------------
def split_optimizer_state(state_dict: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """An optimizer's ``state_dict()`` as (JSON part, tensors named ``optim.<param id>.<name>``)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, state in state_dict["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return {"param_groups": state_dict["param_groups"], "scalars": scalars}, tensors


def join_optimizer_state(part: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The ``state_dict()`` that :func:`split_optimizer_state` split."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for pid, scalars in part["scalars"].items():
        state.setdefault(int(pid), {}).update(scalars)
    return {"state": state, "param_groups": part["param_groups"]}


def capture_rng(torch_states: torch.Tensor, device: torch.device) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """This process's RNG states as (JSON part, tensors); ``torch_states`` (world_size, n) holds
    every process's torch CPU RNG state."""
    tensors = {"rng.torch": torch_states}
    if device.type == "cuda" and torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    np_state = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(np_state[1], dtype=np.int64))
    py_state = random.getstate()
    part = {
        "numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    return part, tensors


def restore_rng(part: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], rank: int, device: torch.device) -> None:
    """Set the RNG states :func:`capture_rng` saved: rank ``rank``'s torch state; CUDA, numpy
    and Python only for rank 0, the one process whose states are saved."""
    torch_states = tensors["rng.torch"]
    torch.set_rng_state(torch_states[min(rank, torch_states.shape[0] - 1)].to(torch.uint8))
    if rank != 0:
        return
    if tensors.get("rng.cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(tensors["rng.cuda"].to(torch.uint8), device)
    name, pos, has_gauss, cached = part["numpy"]
    np.random.set_state((name, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = part["python"]
    random.setstate((version, tuple(internal), gauss))


# -- checkpoint files --------------------------------------------------------------------------------
def write_checkpoint(root: Path, state: TrainingState, tensors: Mapping[str, torch.Tensor], keep: int) -> Path:
    """Write ``checkpoints/step-NNNNNNNN`` under ``root`` atomically, point ``latest.json`` at
    it, and keep the newest ``keep`` checkpoints.

    Returns:
        The checkpoint folder.

    Raises:
        TrainingError: a tensor or a value of ``state`` is NaN or infinite (nothing is written).
    """
    bad = nonfinite_names(tensors)
    where = _nonfinite_json(state.to_json(), "")
    if bad or where:
        what = f"the tensor(s) {', '.join(repr(k) for k in bad[:5])}" if bad else f"the value {where!r}"
        raise TrainingError(
            f"Refusing to write the checkpoint of step {state.step}: {what} hold(s) NaN or "
            f"infinity. Nothing was written; the previous checkpoint is unchanged."
        )
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{state.step:08d}"
    tmp = eio.make_temp_folder(root, name)
    try:
        eio.atomic_save_tensors(tmp / CHECKPOINT_TENSORS, tensors, {"format": CHECKPOINT_FORMAT})
        eio.atomic_write_json(tmp / CHECKPOINT_JSON, state.to_json())
        eio.replace_folder(tmp, root / name, marker=CHECKPOINT_JSON)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    eio.atomic_write_json(root / LATEST, {"checkpoint": name, "step": state.step})
    saved = sorted(
        (int(p.name[5:]), p) for p in root.iterdir()
        if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit()
    )  # by step number: past 10^8 steps the names no longer sort
    # Checkpoints past this step are from a run this one went back on (resumed from an
    # earlier checkpoint): nothing would resume them, and left in place they would outrank
    # this run's in the rotation, which could delete the one latest.json names.
    later = [p for step, p in saved if step > state.step]
    earlier = [p for step, p in saved if step <= state.step]
    # Half-written folders of a process that was killed mid-write (a run has one writer, and
    # its own write is complete by now).
    killed = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(".step-") and p.name.endswith(".tmp")]
    for old in later + earlier[:-keep] + killed:
        shutil.rmtree(old, ignore_errors=True)
    return root / name


def read_checkpoint(path: Path) -> tuple[TrainingState, dict[str, torch.Tensor]]:
    """The state and tensors of the checkpoint folder ``path`` (or of the complete version a
    replace interrupted by a crash set aside).

    Raises:
        ModelFileError: the folder holds a pickle payload, or a missing or corrupt file.
    """
    path = eio.settled_folder(path, marker=CHECKPOINT_JSON)
    eio.check_no_pickle(path)
    obj = eio.read_json(path / CHECKPOINT_JSON, "checkpoint")
    tensors, _ = eio.read_tensors(path / CHECKPOINT_TENSORS, "checkpoint tensors")
    return TrainingState.from_json(obj, str(path / CHECKPOINT_JSON)), tensors


def latest_checkpoint(run: Path) -> Path | None:
    """The checkpoint that ``run/checkpoints/latest.json`` names, or None without one."""
    pointer = Path(run) / "checkpoints" / LATEST
    if not pointer.is_file():
        return None
    name = eio.read_json(pointer, "checkpoint pointer").get("checkpoint")
    if not isinstance(name, str) or "/" in name or "\\" in name or name.startswith("."):
        raise TrainingError(f"The checkpoint pointer '{pointer}' names no checkpoint: {name!r}.")
    return pointer.parent / name


def find_checkpoint(resume: bool | str, out_dir: Path | None) -> Path | None:
    """The checkpoint ``resume`` asks for: out_dir's latest (None when it has none yet, so a
    job that may be preempted can always pass resume=True), or the given checkpoint or run."""
    if resume is False:
        return None
    if resume is True:
        return latest_checkpoint(out_dir) if out_dir is not None else None
    path = Path(resume)
    latest = latest_checkpoint(path)
    if latest is not None:
        return latest
    if not (path / CHECKPOINT_JSON).is_file():
        raise TrainingError(
            f"The 'resume' path '{path}' is neither a checkpoint folder (with {CHECKPOINT_JSON}) "
            f"nor a run folder with checkpoints/{LATEST}."
        )
    return path


# -- the run folder ----------------------------------------------------------------------------------
def run_entries(out_dir: Path) -> list[str]:
    """What in ``out_dir`` shows that it holds a run: checkpoints, ``log.csv`` or ``model/``."""
    out_dir = Path(out_dir)
    found = []
    checkpoints = out_dir / "checkpoints"
    if checkpoints.is_dir() and any(checkpoints.iterdir()):
        found.append("checkpoints/")
    if (out_dir / "log.csv").exists():
        found.append("log.csv")
    if (out_dir / "model").exists() or (out_dir / "model.old").exists():
        found.append("model/")
    return found


def check_run_folder(out_dir: Path | None, resume: bool | str, overwrite: bool) -> None:
    """Refuse to start a fresh run in a folder that holds one, unless told to resume or replace it.

    Raises:
        ValueError: ``out_dir`` holds a run, and neither ``resume`` nor ``overwrite`` is set.
    """
    if out_dir is None or resume is not False or overwrite:
        return
    found = run_entries(out_dir)
    if found:
        raise ValueError(
            f"The 'out_dir' parameter of fit names '{out_dir}', which holds an earlier run "
            f"({', '.join(found)}). Pass resume=True to continue it, overwrite=True to replace "
            f"it, or choose another folder."
        )


def clear_run(out_dir: Path) -> None:
    """Remove what a trainer wrote in ``out_dir`` (and only that): the run it held is replaced."""
    for name in RUN_ENTRIES:
        entry = Path(out_dir) / name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        elif entry.exists() or entry.is_symlink():
            entry.unlink()
