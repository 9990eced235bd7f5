"""The ``embedseg`` command.

Core commands::

    embedseg fit --domain NAME --train PATH [--valid PATH] --out DIR [options]
    embedseg evaluate MODEL PATH [--batch-size N] [--json]
    embedseg info MODEL [--json]
    embedseg list
    embedseg --version

Domains add their own commands (``embedseg separate`` for audio, ``embedseg segment`` for
images) through :meth:`embedseg.Domain.add_cli_commands`; a domain whose extra is not installed
is left out and the core commands still work. What ``PATH`` means is the domain's own
(:meth:`embedseg.Domain.load_dataset`). Errors print one line to stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields
from typing import Any, NoReturn, Sequence

__all__ = ["main", "build_parser", "count_argument", "device_argument"]

CORE_COMMANDS = ("fit", "evaluate", "info", "list")
#: trainer options the fit command names differently or handles itself.
_FIT_SPECIAL = {"out_dir", "resume", "overwrite", "progress", "device"}


def count_argument(low: int, words: tuple[str, ...] = ()) -> Any:
    """An argparse ``type`` for a count: an int >= ``low``, or one of ``words`` (kept as text),
    e.g. ``count_argument(1, ("auto",))``."""
    expected = f"an int >= {low}" + "".join(f" or {w!r}" for w in words)

    def parse(text: str) -> int | str:
        if text in words:
            return text
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


def device_argument(text: str) -> str:
    """An argparse ``type`` for ``--device``: "auto" or a device torch can name ("cpu", "cuda",
    "cuda:1"); whether this machine has it is checked where the model is loaded."""
    import torch

    if text != "auto":
        try:
            torch.device(text)
        except RuntimeError:
            raise argparse.ArgumentTypeError(f"expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {text!r}") from None
    return text


def _key_value(text: str) -> tuple[str, Any]:
    """Parse ``KEY=VALUE``; VALUE is read as JSON when it parses (numbers, true, lists), else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.replace("-", "_"), json.loads(value)
    except json.JSONDecodeError:
        return key.replace("-", "_"), value


def _field_type(annotation: str):
    if "bool" in annotation and "str" not in annotation:
        return bool
    if "int" in annotation:
        return int
    if "float" in annotation:
        return float
    return str


def _add_fit_parser(subparsers: Any) -> None:
    from .training import TrainerConfig

    p = subparsers.add_parser(
        "fit",
        help="train a model on a domain's dataset",
        description="Train a deep-clustering model. PATH is read by the domain's load_dataset().",
    )
    p.add_argument("--domain", required=True, help="registered domain name (see `embedseg list`)")
    p.add_argument("--train", required=True, metavar="PATH", help="training data")
    p.add_argument("--valid", metavar="PATH", help="validation data")
    p.add_argument("--out", required=True, metavar="DIR", help="checkpoints, logs, curves and model/")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--resume", action="store_true", help="continue from DIR's latest checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run DIR holds (without --resume or --overwrite such a DIR is refused)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: only on a terminal)")
    p.add_argument("--network", help="registered network name (default: the domain's)")
    p.add_argument("--network-param", action="append", type=_key_value, default=[], metavar="KEY=VALUE")
    p.add_argument("--clusterer", help="registered clusterer name (default: the domain's)")
    p.add_argument("--clusterer-param", action="append", type=_key_value, default=[], metavar="KEY=VALUE")
    p.add_argument("--domain-option", action="append", type=_key_value, default=[], metavar="KEY=VALUE")
    group = p.add_argument_group("trainer options (see embedseg.training.TrainerConfig)")
    defaults = TrainerConfig()
    for f in fields(TrainerConfig):
        if f.name in _FIT_SPECIAL:
            continue
        kind = _field_type(str(f.type))
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            group.add_argument(flag, type=kind, default=default, metavar=kind.__name__.upper())
    p.set_defaults(func=_cmd_fit)


def _cmd_fit(args: argparse.Namespace) -> int:
    from .api import fit
    from .domain import create_domain
    from .training import TrainerConfig

    domain = create_domain(args.domain, **dict(args.domain_option))
    train = domain.load_dataset(args.train, "train")
    valid = domain.load_dataset(args.valid, "valid") if args.valid else None
    options: dict[str, Any] = {
        f.name: getattr(args, f.name) for f in fields(TrainerConfig) if f.name not in _FIT_SPECIAL
    }
    options.update(
        out_dir=args.out, resume=args.resume, overwrite=args.overwrite, progress=args.progress, device=args.device
    )
    if args.network is not None or args.network_param:
        options["network"] = args.network
        options["network_params"] = dict(args.network_param)
    if args.clusterer is not None or args.clusterer_param:
        name = args.clusterer or domain.clusterer_spec()["name"]
        params = dict(domain.clusterer_spec().get("params") or {}) if args.clusterer is None else {}
        params.update(dict(args.clusterer_param))
        options["clusterer"] = {"name": name, "params": params}
    model = fit(train, domain=domain, valid=valid, **options)
    if os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun, rank 0 reports
    summary = model.config.get("training", {})
    print(f"model saved to {os.path.join(args.out, 'model')}")
    print(f"steps: {summary.get('steps')}, stopped by: {summary.get('stopped')}, "
          f"time: {summary.get('time_s')} s")
    if summary.get("skipped_steps"):
        print(f"skipped steps (non-finite loss, gradient or buffer): {summary['skipped_steps']}")
    for key, value in (summary.get("best_valid") or {}).items():
        print(f"best {key}: {value}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .api import load

    n_clusters = args.n_clusters  # checked before the model and the data are read
    if n_clusters is not None and n_clusters != "auto":
        try:
            n_clusters = int(n_clusters)
        except ValueError:
            n_clusters = 0
        if n_clusters < 1:
            raise ValueError(f"'--n-clusters' must be an int or 'auto' (an int >= 1). Got {args.n_clusters!r} instead.")
    model = load(args.model, device=args.device)
    try:
        dataset = model.domain.load_dataset(args.path, "test")
    except (ValueError, OSError) as exc:
        raise ValueError(f"'PATH' must be data the '{model.domain.name}' domain can read. Got '{args.path}': {exc}") from exc
    try:
        size = len(dataset)
    except TypeError:  # an iterable dataset: its size shows only once read
        size = None
    if size == 0:
        # Metrics over no items would be reported as "no metrics", hiding the mistake.
        raise ValueError(f"'PATH' must hold at least one item. Got '{args.path}', which holds none.")
    metrics = model.evaluate(dataset, batch_size=args.batch_size, n_clusters=n_clusters)
    if args.json:
        print(json.dumps(metrics, indent=2))
    elif not metrics:
        print("the domain defines no metrics")
    else:
        width = max(len(k) for k in metrics)
        for key, value in metrics.items():
            print(f"{key:<{width}}  {value:.4f}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from .io import CONFIG_FILE, model_folder, read_json, read_model_folder, settled_folder

    folder = os.fspath(model_folder(args.model))
    state, config = read_model_folder(folder)  # upgraded to the current format
    file_version = read_json(settled_folder(folder) / CONFIG_FILE, "model config").get("format_version")
    n_params = sum(int(t.numel()) for t in state.values())
    if args.json:
        print(json.dumps({**config, "file_format_version": file_version, "n_parameters": n_params}, indent=2))
        return 0
    training = config.get("training") or {}
    read_as = f", read as {config['format_version']}" if file_version != config["format_version"] else ""
    lines = [
        f"model:      {os.path.abspath(folder)}",
        f"embedseg:   {config.get('embedseg_version')} (format {file_version}{read_as})",
        f"domain:     {config['domain']['name']} {json.dumps(config['domain'].get('options') or {})}",
        f"network:    {config['network']['name']} {json.dumps(config['network'].get('params') or {})}",
        f"parameters: {n_params:,}",
        f"clusterer:  {config['clusterer']['name']} {json.dumps(config['clusterer'].get('params') or {})}",
    ]
    if training:
        lines.append(
            f"training:   {training.get('steps')} steps, {training.get('epochs')} epochs, loss "
            f"{training.get('loss')}, stopped by {training.get('stopped')}, {training.get('time_s')} s"
        )
        for key, value in (training.get("best_valid") or {}).items():
            lines.append(f"  best {key}: {value}")
    print("\n".join(lines))
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from .cluster import list_clusterers
    from .domain import DOMAINS, list_domains
    from .networks import list_networks

    for name in list_domains():  # importing a domain registers its networks
        try:
            DOMAINS.get(name)
        except (ImportError, AttributeError):
            pass
    print("domains:    " + ", ".join(list_domains()))
    print("networks:   " + ", ".join(list_networks()))
    print("clusterers: " + ", ".join(list_clusterers()))
    return 0


def _wants_domain_commands(argv: Sequence[str]) -> bool:
    """Domain commands are loaded unless the command is a core one (which keeps those fast and
    independent of the domains' extras)."""
    if "--version" in argv:
        return False
    command = next((a for a in argv if not a.startswith("-")), None)
    return command not in CORE_COMMANDS


class _Parser(argparse.ArgumentParser):
    """argparse reporting a usage mistake like every other error: one line, exit status 2 (the
    subcommands' parsers are of this class too)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"embedseg: error: {message} (see '{self.prog} --help')\n")


def build_parser(with_domains: bool = True) -> argparse.ArgumentParser:
    """The argument parser, with the built-in domains' commands when ``with_domains``."""
    from . import __version__

    parser = _Parser(prog="embedseg", description="Segmentation by deep clustering: train, evaluate, inspect.")
    parser.add_argument("--version", action="version", version=f"embedseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_fit_parser(sub)
    p = sub.add_parser("evaluate", help="a saved model's metrics on a dataset")
    p.add_argument("model", metavar="MODEL", help="model folder (or a training run's --out)")
    p.add_argument("path", metavar="PATH", help="data, read by the domain's load_dataset()")
    p.add_argument("--batch-size", type=count_argument(1), default=8, metavar="N")
    p.add_argument("--n-clusters", default=None, help="an int, or 'auto' (default: the model's)")
    p.add_argument("--device", type=device_argument, default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=_cmd_evaluate)
    p = sub.add_parser("info", help="what a saved model holds")
    p.add_argument("model", metavar="MODEL", help="model folder (or a training run's --out)")
    p.add_argument("--json", action="store_true", help="print the whole config (in the current format) as JSON")
    p.set_defaults(func=_cmd_info)
    p = sub.add_parser("list", help="registered domains, networks and clusterers")
    p.set_defaults(func=_cmd_list)
    if with_domains:
        from .domain import DOMAINS

        added = set()  # a hook shared by several domains (a subclass, two names) adds its commands once
        for name in DOMAINS.names():  # built-ins, registered and installed (entry points)
            try:
                cls = DOMAINS.get(name)
            except ImportError:
                continue  # the domain's extra is not installed; its commands are simply absent
            except AttributeError as exc:  # a broken install must not take the core commands down
                print(f"embedseg: warning: the '{name}' domain could not be loaded ({exc})", file=sys.stderr)
                continue
            hook = getattr(cls.add_cli_commands, "__func__", cls.add_cli_commands)
            if hook in added:
                continue
            added.add(hook)
            try:
                cls.add_cli_commands(sub)
            except argparse.ArgumentError as exc:  # two domains naming one command: the first keeps it
                print(f"embedseg: warning: the '{name}' domain's commands were not added ({exc})", file=sys.stderr)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 on success, 2 on an error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    from .errors import EmbedsegError

    try:
        parser = build_parser(with_domains=_wants_domain_commands(argv))
        args = parser.parse_args(argv)
        if getattr(args, "func", None) is None:
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("embedseg: interrupted", file=sys.stderr)
        return 130
    except (EmbedsegError, ValueError, TypeError, NotImplementedError, OSError, ImportError) as exc:
        if os.environ.get("EMBEDSEG_DEBUG"):
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"embedseg: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
