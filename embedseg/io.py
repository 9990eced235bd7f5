"""Safe model files and training checkpoints: safetensors for tensors, JSON for everything else.

A saved model is a folder::

    model/
        config.json          {"format": "embedseg-model", "format_version": 2, "embedseg_version",
                              "domain": {"name", "options"}, "network": {"name", "params"},
                              "clusterer": {"name", "params"}, "training": {...}}
        model.safetensors    the network's state dict

Reading a model upgrades its config to the current format (:func:`migrate_config`), so the rest
of the library only ever sees the current version; weights holding NaN or infinity are refused.

A resume checkpoint is a folder of the same two kinds of file (``checkpoint.json`` and
``checkpoint.safetensors``: model and optimizer tensors, RNG states). Nothing here ever
unpickles: a folder holding a pickle payload (``*.pt``, ``*.pth``, ``*.pkl``, ``*.ckpt``, or any
file that starts like a pickle or a ``torch.save`` archive) is refused before anything is read.

Every write is atomic: the bytes go to a temporary file in the destination folder, are flushed
to disk, then renamed over the target, so a crash leaves either the old file or the new one.
"""

from __future__ import annotations

import copy
import json
import math
import os
import secrets
import shutil
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from .errors import ModelFileError

__all__ = [
    "MODEL_FORMAT",
    "MODEL_FORMAT_VERSION",
    "CONFIG_FILE",
    "migrate_config",
    "WEIGHTS_FILE",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_save_tensors",
    "make_temp_folder",
    "replace_folder",
    "settled_folder",
    "check_no_pickle",
    "read_json",
    "read_tensors",
    "write_model_folder",
    "model_folder",
    "read_model_folder",
    "check_output_files",
    "same_file",
    "to_jsonable",
]

MODEL_FORMAT = "embedseg-model"
#: The version :meth:`Model.save <embedseg.Model.save>` writes. Every version from 2 on lists
#: every domain option of its time in the config; version 1 could leave out options added after
#: a model was saved. Version 3 adds the audio domain's ``cross_mixture_weight``, version 4
#: its ``count_weight``, version 5 its ``cluster_threshold_db``.
MODEL_FORMAT_VERSION = 5
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

#: file suffixes that conventionally hold pickles; their presence alone refuses a folder.
PICKLE_SUFFIXES = frozenset({".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".dill"})


# -- atomic writes ------------------------------------------------------------------------------
def _fsync_dir(folder: Path) -> None:
    """Flush a folder's entry table so a rename inside it survives a power loss (POSIX only)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on folders
        pass
    finally:
        os.close(fd)


def _create_temp(parent: Path, stem: str, create: Any, suffix: str = "") -> Any:
    """``create(path)`` on a fresh name ``.<stem>.<random>.tmp<suffix>`` in ``parent``, drawing
    another name if that one exists; the system applies the umask to what ``create`` makes."""
    for _ in range(100):
        try:
            return create(parent / f".{stem}.{secrets.token_hex(6)}.tmp{suffix}")
        except FileExistsError:  # pragma: no cover - 48 random bits collided
            continue
    raise FileExistsError(f"Could not create a temporary entry in '{parent}'.")  # pragma: no cover


def make_temp_folder(parent: str | os.PathLike, stem: str) -> Path:
    """A new empty folder ``.<stem>.<random>.tmp`` in ``parent`` with the permissions mkdir()
    gives (0o777 less the umask), unlike mkdtemp's owner-only 0o700."""

    def mkdir(path: Path) -> Path:
        os.mkdir(path, 0o777)
        return path

    return _create_temp(Path(parent), stem, mkdir)


def _replace_through_temp(path: Path, write: Any, keep_suffix: bool) -> None:
    """``write(tmp)`` on a new empty temporary file next to ``path`` (named
    ``.<name>.<random>.tmp``, or ``.<stem>.<random>.tmp<suffix>`` with ``keep_suffix``), fsync
    it, rename it to ``path`` and fsync the folder; on failure the temporary file is removed."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    stem, suffix = (path.stem, path.suffix) if keep_suffix else (path.name, "")
    tmp = _create_temp(path.parent, stem, lambda p: (os.close(os.open(p, flags, 0o666)), p)[1], suffix)
    try:
        write(str(tmp))
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the data is on disk before the name points at it
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    _replace_through_temp(path, write, keep_suffix=False)


def atomic_write_with(path: str | os.PathLike, write: Any) -> None:
    """Call ``write(tmp)`` (a str path) on a new empty file next to ``path`` that ends in the
    same suffix (so writers that choose the format by the suffix choose the same), then rename
    it to ``path``: a failure leaves neither an empty nor a partial file, and an existing
    ``path`` untouched."""
    _replace_through_temp(Path(path), write, keep_suffix=True)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically (NaN and infinity are rejected)."""
    text = json.dumps(obj, indent=2, sort_keys=False, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode("utf-8"))


def atomic_save_tensors(
    path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> None:
    """Save named tensors as safetensors, atomically.

    Tensors are copied to contiguous CPU memory first: safetensors refuses views and storage
    shared between entries (tied weights are written twice and tied again by ``load_state_dict``).
    """
    from safetensors.torch import save

    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    atomic_write_bytes(path, save(flat, metadata=dict(metadata) if metadata else None))


def replace_folder(tmp_folder: str | os.PathLike, folder: str | os.PathLike, marker: str = CONFIG_FILE) -> None:
    """Move a fully written ``tmp_folder`` to ``folder``, replacing what was there.

    A folder cannot be renamed over a non-empty one, so the old folder is first renamed aside
    and removed only once the new one is in place. A crash in between leaves no ``folder`` but
    the complete old one under ``<name>.old``, which readers then use (:func:`settled_folder`);
    a later replace puts it back before anything else, so it is never lost. A ``<name>.old``
    without ``marker`` (the file every version of such a folder holds) is someone else's: it
    is never touched, and the replace is refused.

    Raises:
        FileExistsError: ``<name>.old`` exists and is not a version set aside by a replace.
    """
    tmp_folder, folder = Path(tmp_folder), Path(folder)
    old = folder.with_name(folder.name + ".old")
    ours = (old / marker).is_file()
    if ours and not folder.exists():
        os.replace(old, folder)  # an earlier replace stopped between its two renames
        ours = False
    if folder.exists():
        if old.exists() and not ours:
            raise FileExistsError(
                f"Cannot replace '{folder}': '{old}' exists and is not an earlier version of it set "
                f"aside by an interrupted save (it holds no '{marker}'); move or rename it first."
            )
        if old.exists():
            shutil.rmtree(old)
        os.replace(folder, old)
        os.replace(tmp_folder, folder)
        _fsync_dir(folder.parent)
        shutil.rmtree(old)
    else:
        os.replace(tmp_folder, folder)
        _fsync_dir(folder.parent)


def settled_folder(folder: str | os.PathLike, marker: str = CONFIG_FILE) -> Path:
    """``folder``, or its complete previous version ``<name>.old`` (one that holds ``marker``,
    the file every version of such a folder has) when a :func:`replace_folder` stopped between
    its two renames and left no ``folder``."""
    folder = Path(folder)
    if not folder.name:  # "", "." or "/": the current folder or a root, never set aside
        return folder
    aside = folder.with_name(folder.name + ".old")
    # Only a version set aside counts: an unrelated '<name>.old' folder is not ours.
    if not folder.exists() and (aside / marker).is_file():
        return aside
    return folder


def to_jsonable(value: Any, what: str = "value") -> Any:
    """``value`` with tuples as lists, numpy/torch scalars as numbers; raise if not JSON data."""
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{what} must be JSON data; got the non-finite float {value!r}.")
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return to_jsonable(value.item(), what)
    if type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return to_jsonable(value.item(), what)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{what} must be JSON data; got the non-string key {k!r}.")
            out[k] = to_jsonable(v, f"{what}[{k!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, f"{what}[{i}]") for i, v in enumerate(value)]
    raise ValueError(
        f"{what} must be JSON data (str, number, bool, None, list, dict). "
        f"Got {value!r} ({type(value).__name__}) instead."
    )


# -- output files -------------------------------------------------------------------------------
def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether ``a`` and ``b`` name one file: both exist and are the same file on disk (which
    catches hard links and case-insensitive names too), or their paths agree once links, ``.``
    and ``..`` are resolved."""
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:  # pragma: no cover - unreadable entries fall back to comparing paths
        pass
    return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b))


def _file_keys(path: str | os.PathLike) -> list[Any]:
    """What identifies the file ``path`` names: its resolved path and, when it exists, its
    device and inode (which hard links and case-insensitive names share)."""
    keys: list[Any] = [os.path.normcase(os.path.realpath(path))]
    try:
        st = os.stat(path)
    except OSError:
        return keys
    return keys + [(st.st_dev, st.st_ino)]


def _quoted(paths: Sequence[Any], most: int = 5) -> str:
    """'a', 'b' and 'c' (at most ``most`` paths, then a count of the others)."""
    shown = [f"'{p}'" for p in paths[:most]]
    if len(paths) > most:
        return ", ".join(shown) + f" and {len(paths) - most} more"
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]


def check_output_files(
    outputs: Sequence[tuple[str, str | os.PathLike]],
    inputs: Sequence[tuple[str, str | os.PathLike]] = (),
    *,
    overwrite: bool = False,
    how_to_overwrite: str = "pass overwrite=True",
) -> None:
    """Check, before any work, that writing ``outputs`` destroys no one's data.

    No output may be an input, whatever ``overwrite`` says; no two outputs may be one file; an
    existing output file is replaced only with ``overwrite``. Paths are compared once resolved,
    and as files on disk where both exist, so links and hard links are seen through.

    Args:
        outputs: ``(name, path)`` of each file to write; ``name`` is how the caller's user
            gave the path (e.g. ``"--out"``), for the messages.
        inputs: ``(name, path)`` of each file read (e.g. ``("IMAGE", "x.png")``).
        overwrite: whether existing output files may be replaced.
        how_to_overwrite: how the caller's user allows it (e.g. ``"pass --overwrite"``).

    Raises:
        ValueError: an output is an input, two outputs are one file, an output is a folder, or
            output files exist and ``overwrite`` is False (the message lists them).

    Example:
        >>> check_output_files([("out", "labels.png")], [("image", "labels.png")])
        Traceback (most recent call last):
        ...
        ValueError: 'out' must not name an input file. Got 'labels.png', the same file as the image 'labels.png'; choose another path.
    """
    read: dict[Any, tuple[str, Any]] = {}
    for in_name, given in inputs:
        for key in _file_keys(given):
            read.setdefault(key, (in_name, given))
    written: dict[Any, tuple[str, Any]] = {}
    for out_name, out in outputs:
        keys = _file_keys(out)
        for key in keys:
            if key in read:
                in_name, given = read[key]
                raise ValueError(
                    f"'{out_name}' must not name an input file. Got '{out}', the same file as the "
                    f"{in_name} '{given}'; choose another path."
                )
            if key in written:
                name, other = written[key]
                what = f"'{out_name}' must differ from '{name}'" if name != out_name else f"The files of '{out_name}' must differ"
                raise ValueError(f"{what}. Got '{out}' and '{other}', the same file.")
        for key in keys:
            written[key] = (out_name, out)
    existing: dict[str, list[Any]] = {}
    for name, out in outputs:
        if os.path.isdir(out):
            raise ValueError(f"'{name}' must name a file, not a folder. Got '{out}', an existing folder.")
        if os.path.lexists(out):  # a link counts, even a dangling one
            existing.setdefault(name, []).append(out)
    if existing and not overwrite:
        paths = [p for found in existing.values() for p in found]
        names = _quoted(list(existing))
        which = f"the existing file {_quoted(paths)}" if len(paths) == 1 else f"{len(paths)} existing files: {_quoted(paths)}"
        raise ValueError(
            f"{names} would replace {which}; {how_to_overwrite} to replace "
            f"{'it' if len(paths) == 1 else 'them'}, or choose another path."
        )


# -- safe reading -------------------------------------------------------------------------------
def _looks_pickled(path: Path) -> bool:
    """True when a file starts like a pickle (protocol 2+) or is a ``torch.save`` zip archive."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return True
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as zf:
                return any(n.endswith(".pkl") for n in zf.namelist())
        except (zipfile.BadZipFile, OSError):
            return False
    return False


def check_no_pickle(folder: str | os.PathLike) -> None:
    """Raise :class:`ModelFileError` if ``folder`` (recursively) holds a pickle payload.

    Nothing in the folder is executed or deserialized: the check looks at names and the first
    bytes of each file only.
    """
    folder = Path(folder)
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        if path.suffix.lower() in PICKLE_SUFFIXES or _looks_pickled(path):
            raise ModelFileError(
                f"Refusing to load '{folder}': '{path.relative_to(folder)}' is a pickle payload, "
                f"which can run arbitrary code when loaded. embedseg model folders hold only "
                f"JSON and safetensors files; remove the file if you trust the rest."
            )


def read_json(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """Read a JSON object, raising :class:`ModelFileError` naming the file on any problem."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"The {what} file '{path}' is missing.")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"The {what} file '{path}' is not valid JSON ({exc}).") from None
    if not isinstance(obj, dict):
        raise ModelFileError(
            f"The {what} file '{path}' must hold a JSON object. Got {type(obj).__name__} instead."
        )
    return obj


def read_tensors(path: str | os.PathLike, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file (tensors, metadata) on CPU; :class:`ModelFileError` if corrupt."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"The {what} file '{path}' is missing.")
    try:
        tensors: dict[str, torch.Tensor] = {}
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            for key in f.keys():
                tensors[key] = f.get_tensor(key)
    except Exception as exc:  # safetensors raises its own SafetensorError and OSError types
        raise ModelFileError(
            f"The {what} file '{path}' is not a readable safetensors file ({exc})."
        ) from None
    return tensors, metadata


# -- model folders ------------------------------------------------------------------------------
def write_model_folder(
    path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]
) -> Path:
    """Write weights and config to ``path`` (a folder), replacing an earlier model atomically.

    Other files in an existing model folder (scores, notes, a README) are carried over to the
    new version, so saving over a model never deletes what a user kept next to it; an existing
    folder that holds other files but no saved model is refused rather than replaced."""
    given = os.fspath(path)
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"'path' must be a folder (or not exist yet). Got the file '{path}' instead.")
    if path.is_symlink():  # replace the folder the link points to, and keep the link
        path = path.resolve()
    if path.name in ("", ".", ".."):
        # "", ".", ".." and "/" (or a link to one) name no folder of the model's own: saving
        # would replace the current folder, a parent or a root, and everything in it.
        raise ValueError(
            f"'path' must name the model's own folder (e.g. 'models/speech'). Got "
            f"{'an empty path' if not given else repr(given)}"
            f"{f' (a link to {str(path)!r})' if given and Path(given).is_symlink() else ''} instead."
        )
    earlier = settled_folder(path)
    if earlier.is_dir() and not (earlier / CONFIG_FILE).is_file() and any(
        not entry.name.startswith(".") for entry in earlier.iterdir()  # hidden files (.DS_Store) aside
    ):
        # Saving replaces the folder: only a saved model's folder (whose other files come
        # along) or an empty one may be replaced, never a folder of someone's other work.
        raise ValueError(
            f"'path' must be a new folder, an empty one or a saved model's folder. Got '{path}', "
            f"which holds other files and no '{CONFIG_FILE}'; choose another folder."
        )
    config = to_jsonable(dict(config), "the model config")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_folder(path.parent, path.name)
    try:
        # What a user kept next to the model comes along; the previous version may still be
        # set aside as <name>.old by a replace that stopped halfway.
        if earlier.is_dir():
            for entry in earlier.iterdir():
                if entry.name in (WEIGHTS_FILE, CONFIG_FILE) or (entry.name.startswith(".") and entry.name.endswith(".tmp")):
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.copytree(entry, tmp / entry.name, symlinks=True)
                else:
                    shutil.copy2(entry, tmp / entry.name, follow_symlinks=False)
        atomic_save_tensors(tmp / WEIGHTS_FILE, state_dict, {"format": MODEL_FORMAT})
        atomic_write_json(tmp / CONFIG_FILE, config)
        replace_folder(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def model_folder(path: str | os.PathLike) -> Path:
    """The model folder ``path`` names: itself, or the ``model/`` folder of a training run's
    ``out_dir`` when ``path`` holds no config of its own but that subfolder does."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file() and (path / "model" / CONFIG_FILE).is_file():
        return path / "model"
    return path


# -- format versions ----------------------------------------------------------------------------
#: The domain options a version-1 config of a built-in domain may lack (they were added after
#: such models were saved), with the values those models ran with. Frozen: this is the history
#: of the version-1 format. Configs of version 2 and later list every option of their domain.
_V1_DOMAIN_OPTIONS: dict[str, dict[str, Any]] = {
    "image": {
        "seed_consistency": 0.95,  # the threshold they have always been loaded with
        "split_threshold": -1.0,  # decoded without splitting parts off an instance
        "local_window": 0,  # trained without the local affinity term
        "flip_views": 1,  # embedded the image as given, without mirrored views
    },
    "audio": {"inference": "clusters"},  # separated by clustering alone
}


#: The domain options added in format version 3, with the values version-2 models ran with.
#: Frozen, as the version-1 table is.
_V2_DOMAIN_OPTIONS: dict[str, dict[str, Any]] = {
    "audio": {"cross_mixture_weight": 0.0},  # trained without the cross-mixture loss
}


#: The domain options added in format version 4, with the values version-3 models ran with.
#: Frozen, as the tables before it are.
_V3_DOMAIN_OPTIONS: dict[str, dict[str, Any]] = {
    "audio": {"count_weight": 1.0},  # the default; without a count head (none had one) it does nothing
}


#: The domain options added in format version 5, with the values version-4 models ran with.
#: Frozen, as the tables before it are.
_V4_DOMAIN_OPTIONS: dict[str, dict[str, Any]] = {
    "audio": {"cluster_threshold_db": None},  # the clusterer fitted on every active bin
}


def _with_options(config: dict[str, Any], added: dict[str, dict[str, Any]], version: int) -> dict[str, Any]:
    """``config`` as a version-``version`` file: the options of ``added`` for its domain that it
    lacks are written out with the values it ran with."""
    domain = config["domain"]
    options = dict(domain.get("options") or {})
    for key, value in added.get(domain["name"], {}).items():
        options.setdefault(key, copy.deepcopy(value))
    domain["options"] = options
    config["format_version"] = version
    return config


def _v1_to_v2(config: dict[str, Any]) -> dict[str, Any]:
    """Version 1 to 2: the domain options a version-1 file may lack are written out."""
    return _with_options(config, _V1_DOMAIN_OPTIONS, 2)


def _v2_to_v3(config: dict[str, Any]) -> dict[str, Any]:
    """Version 2 to 3: the options added since version 2 are written out (their values then)."""
    return _with_options(config, _V2_DOMAIN_OPTIONS, 3)


def _v3_to_v4(config: dict[str, Any]) -> dict[str, Any]:
    """Version 3 to 4: the options added since version 3 are written out (their values then)."""
    return _with_options(config, _V3_DOMAIN_OPTIONS, 4)


def _v4_to_v5(config: dict[str, Any]) -> dict[str, Any]:
    """Version 4 to 5: the options added since version 4 are written out (their values then)."""
    return _with_options(config, _V4_DOMAIN_OPTIONS, 5)


#: ``_UPGRADES[v]`` turns a version-``v`` config into a version-``v + 1`` one. A new format
#: version adds one step here (and bumps MODEL_FORMAT_VERSION); earlier steps never change.
_UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4, 4: _v4_to_v5}


def migrate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A model config upgraded to the current format version (:data:`MODEL_FORMAT_VERSION`).

    Each format version has one upgrade step to the next, applied in turn, so a model saved by
    any earlier embedseg loads as it ran then. Version 1 to 2 writes out the domain options a
    version-1 file may lack with the values those models ran with (e.g. an image model saved
    before mirrored inference views gets ``flip_views=1``), version 2 to 3 those added since
    (an audio model gets ``cross_mixture_weight=0.0``); a current config comes back as it is.
    :func:`read_model_folder` applies this, so a loaded config is always current.

    Args:
        config: a model config, as read from a model folder's ``config.json``. It is not
            modified.

    Returns:
        A new config of version :data:`MODEL_FORMAT_VERSION`.

    Raises:
        ValueError: ``format_version`` is not an int from 1 to :data:`MODEL_FORMAT_VERSION`,
            or the ``domain`` entry has no ``name``.

    Example:
        >>> old = {"format": "embedseg-model", "format_version": 1,
        ...        "domain": {"name": "audio", "options": {"n_sources": 2}},
        ...        "network": {"name": "dc_compact"}, "clusterer": {"name": "kmeans"}}
        >>> new = migrate_config(old)
        >>> new["format_version"], new["domain"]["options"]
        (3, {'n_sources': 2, 'inference': 'clusters', 'cross_mixture_weight': 0.0})
    """
    if not isinstance(config, Mapping):
        raise TypeError(f"'config' must be a mapping (a model config). Got {type(config).__name__} instead.")
    version = config.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MODEL_FORMAT_VERSION:
        raise ValueError(
            f"The 'format_version' of a model config must be an int from 1 to {MODEL_FORMAT_VERSION} "
            f"(a newer one needs a newer embedseg). Got {version!r} instead."
        )
    domain = config.get("domain")
    if not isinstance(domain, Mapping) or not isinstance(domain.get("name"), str):
        raise ValueError(f"The 'domain' entry of a model config must be an object with a 'name'. Got {domain!r} instead.")
    out = copy.deepcopy(dict(config))
    while out["format_version"] < MODEL_FORMAT_VERSION:
        out = _UPGRADES[out["format_version"]](out)
    return out


def _check_finite_weights(state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise :class:`ModelFileError` naming the floating tensors that hold NaN or infinity."""
    bad = []
    for name, tensor in state_dict.items():
        # One sum per tensor: any NaN or infinity makes it non-finite (several times faster than
        # an elementwise test); a sum that merely overflowed is told apart by the counts.
        if not (tensor.is_floating_point() or tensor.is_complex()) or bool(torch.isfinite(tensor.sum())):
            continue
        n_nan, n_inf = int(torch.isnan(tensor).sum()), int(torch.isinf(tensor).sum())
        if n_nan or n_inf:
            bad.append(f"'{name}' ({n_nan} NaN, {n_inf} inf)")
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more tensors" if len(bad) > 3 else "")
        raise ModelFileError(
            f"The weights of {source} hold non-finite values in {shown}: such a network gives no "
            f"usable output (its training most likely diverged). Retrain it, or save it again "
            f"from a checkpoint taken before the values went bad."
        )


def read_model_folder(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and check a model folder; returns (state_dict, config). Nothing is unpickled.

    The config comes back upgraded to the current format (:func:`migrate_config`).

    Raises:
        ModelFileError: the folder is missing, holds a pickle payload, its config or weights
            are missing or corrupt, or a floating tensor of the weights (buffers such as
            BatchNorm statistics included) holds NaN or infinity.
    """
    path = settled_folder(path)
    if not path.exists():
        raise ModelFileError(f"No saved model at '{path}': the folder does not exist.")
    if not path.is_dir():
        raise ModelFileError(
            f"A saved model is a folder holding '{CONFIG_FILE}' and '{WEIGHTS_FILE}'. "
            f"Got the file '{path}' instead."
        )
    # First whether this is a model folder at all: scanning any folder (a home or a data
    # folder) for pickles would take long and then blame a file that has nothing to do with it.
    if not (path / CONFIG_FILE).is_file():
        shown = f"'{path}'" if path.is_absolute() else f"'{path}' ({path.resolve()})"
        raise ModelFileError(
            f"No saved model at {shown}: the model config file '{path / CONFIG_FILE}' is missing "
            f"(a saved model is a folder holding '{CONFIG_FILE}' and '{WEIGHTS_FILE}')."
        )
    check_no_pickle(path)
    config = read_json(path / CONFIG_FILE, "model config")
    if config.get("format") != MODEL_FORMAT:
        raise ModelFileError(
            f"The model config '{path / CONFIG_FILE}' must have \"format\": \"{MODEL_FORMAT}\". "
            f"Got {config.get('format')!r} instead."
        )
    version = config.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version > MODEL_FORMAT_VERSION or version < 1:
        raise ModelFileError(
            f"The model config '{path / CONFIG_FILE}' has format_version {version!r}; this "
            f"embedseg reads versions 1 to {MODEL_FORMAT_VERSION}. Upgrade embedseg to load it."
        )
    for key in ("domain", "network", "clusterer"):
        entry = config.get(key)
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ModelFileError(
                f"The model config '{path / CONFIG_FILE}' must have a '{key}' entry with a "
                f"'name'. Got {entry!r} instead."
            )
        params_key = "options" if key == "domain" else "params"
        if not isinstance(entry.get(params_key, {}), dict):
            raise ModelFileError(
                f"The '{key}.{params_key}' entry of '{path / CONFIG_FILE}' must be a JSON object. "
                f"Got {entry.get(params_key)!r} instead."
            )
    state_dict, _ = read_tensors(path / WEIGHTS_FILE, "model weights")
    _check_finite_weights(state_dict, f"the model at '{path}'")
    return state_dict, migrate_config(config)
