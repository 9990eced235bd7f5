"""The ``embedseg`` command: fit, evaluate, info, list, domain commands, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import embedseg
from embedseg import Domain
from embedseg import cli
from embedseg.domain import DOMAINS

from embedseg.metrics import ItemMean
from toys import PaddedPoints, item_aris, one_thread  # noqa: F401  (one_thread: an autouse fixture)


@embedseg.register_domain("toy-cli", override=True)
class NpzDomain(PaddedPoints):
    """Items come from an .npz file with ``points`` (items, n, 2) and ``labels`` (items, n)."""

    def load_dataset(self, path, split):
        data = np.load(path)
        return [(torch.from_numpy(p), torch.from_numpy(y)) for p, y in zip(data["points"], data["labels"])]

    def metrics(self):
        return ItemMean(item_aris)

    @classmethod
    def add_cli_commands(cls, subparsers):
        p = subparsers.add_parser("toycount", help="count points")
        p.add_argument("path")
        p.set_defaults(func=lambda args: print(len(cls().load_dataset(args.path, "test"))) or 0)


@embedseg.register_domain("toy-cli-nodata", override=True)
class NoDataDomain(NpzDomain):
    load_dataset = Domain.load_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (16, 10))
    points = rng.normal(0, 0.3, (16, 10, 2)) + 2.0 * labels[..., None]
    path = tmp_path_factory.mktemp("data") / "blobs.npz"
    np.savez(path, points=points.astype(np.float32), labels=labels)
    return str(path)


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("run"))
    code = cli.main([
        "fit", "--domain", "toy-cli", "--train", data, "--valid", data, "--out", out, "--epochs", "3",
        "--batch-size", "4", "--lr", "0.01", "--device", "cpu", "--no-progress", "--network-param", "dim=5",
        "--clusterer", "gmm", "--clusterer-param", "n_clusters=2", "--no-plot",
    ])
    assert code == 0
    return out


def test_fit_trains_and_saves(run):
    model = embedseg.load(run)
    assert model.network.head.proj.out_features == 5
    assert model.config["clusterer"]["name"] == "gmm"
    assert model.config["training"]["steps"] == 12 and model.config["training"]["trainer"]["lr"] == 0.01
    assert not os.path.exists(os.path.join(run, "curves.png"))


def test_fit_refuses_a_folder_holding_a_run_unless_resumed_or_overwritten(data, tmp_path, capsys):
    out = str(tmp_path / "run")
    argv = ["fit", "--domain", "toy-cli", "--train", data, "--out", out, "--batch-size", "4", "--device", "cpu",
            "--no-progress", "--no-plot"]
    assert cli.main(argv + ["--epochs", "1"]) == 0
    first = embedseg.load(out).network.state_dict()
    capsys.readouterr()
    assert cli.main(argv + ["--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("embedseg: error: ") and err.count("\n") == 1
    assert "holds an earlier run" in err and "resume=True" in err and "overwrite=True" in err
    assert all(torch.equal(v, first[k]) for k, v in embedseg.load(out).network.state_dict().items())
    # --resume continues the run: 16 items in batches of 4 are 4 steps an epoch.
    assert cli.main(argv + ["--epochs", "2", "--resume"]) == 0
    assert embedseg.load(out).config["training"]["steps"] == 8
    assert cli.main(argv + ["--epochs", "1", "--overwrite"]) == 0
    assert "model saved to" in capsys.readouterr().out
    assert embedseg.load(out).config["training"]["steps"] == 4
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["latest.json", "step-00000004"]
    assert cli.main(argv + ["--epochs", "1", "--overwrite", "--resume"]) == 2
    assert "exclude each other" in capsys.readouterr().err


def test_evaluate_prints_the_metrics(run, data, capsys):
    assert cli.main(["evaluate", run, data, "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    model = embedseg.load(run)
    assert metrics == pytest.approx(model.evaluate(model.domain.load_dataset(data, "test")))
    assert metrics["ari"] > 0.9
    assert cli.main(["evaluate", run, data, "--n-clusters", "3"]) == 0
    assert capsys.readouterr().out.startswith("ari")


def test_info_describes_the_model(run, capsys):
    assert cli.main(["info", run]) == 0
    out = capsys.readouterr().out
    assert "domain:     toy-cli" in out and "network:    point_mlp" in out and "clusterer:  gmm" in out
    assert "12 steps, 3 epochs" in out
    assert cli.main(["info", os.path.join(run, "model"), "--json"]) == 0
    config = json.loads(capsys.readouterr().out)
    assert config["format"] == "embedseg-model" and config["n_parameters"] > 0


def test_list(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "toy-cli" in out and "point_mlp" in out and "kmeans" in out


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"embedseg {embedseg.__version__}"


@pytest.mark.parametrize(
    "argv, match",
    [
        (["info", "/nonexistent/model"], "No saved model at '/nonexistent/model'"),
        (["fit", "--domain", "lidar", "--train", "x", "--out", "y"], "Unknown domain 'lidar'. Valid domains:"),
        (["fit", "--domain", "toy-cli-nodata", "--train", "x", "--out", "y"], "cannot load a dataset from a path"),
        (["fit", "--domain", "toy-cli", "--train", "DATA", "--out", "OUT", "--lr", "-1"], "'lr' parameter of fit"),
        (["evaluate", "RUN", "DATA", "--n-clusters", "many"], "'--n-clusters' must be an int or 'auto'"),
        # the command-line mistakes of evaluate, info and list (argparse's own included)
        (["evaluate"], "the following arguments are required: MODEL, PATH"),
        (["evaluate", "RUN", "DATA", "--n-clusters", "0"], r"'--n-clusters' must be an int or 'auto' \(an int >= 1\). Got '0'"),
        (["evaluate", "NOMODEL", "DATA", "--n-clusters", "-2"], r"'--n-clusters' must be .* Got '-2'"),  # before the model is read
        (["evaluate", "RUN", "DATA", "--batch-size", "0"], "argument --batch-size: expected an int >= 1, got '0'"),
        (["evaluate", "RUN", "DATA", "--batch-size", "eight"], "argument --batch-size: expected an int >= 1, got 'eight'"),
        (["evaluate", "RUN", "DATA", "--device", "gpu"], "argument --device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
        (["evaluate", "NOMODEL", "DATA"], "No saved model at '.*no-model'"),
        (["evaluate", "RUN", "MISSING"], r"'PATH' must be data the 'toy-cli' domain can read. Got '.*missing\.npz': .*missing\.npz"),
        (["evaluate", "RUN", "EMPTY"], r"'PATH' must hold at least one item. Got '.*empty\.npz', which holds none"),
        (["info"], "the following arguments are required: MODEL"),
        (["info", "DATA"], "A saved model is a folder .* Got the file '.*blobs.npz'"),
        (["info", "RUN", "--yaml"], "unrecognized arguments: --yaml"),
        (["list", "domains"], "unrecognized arguments: domains"),
        (["evaluat", "RUN", "DATA"], "argument COMMAND: invalid choice: 'evaluat'"),
    ],
)
def test_errors_are_one_line_and_exit_2(argv, match, data, run, tmp_path, capsys):
    np.savez(tmp_path / "empty.npz", points=np.zeros((0, 10, 2), np.float32), labels=np.zeros((0, 10), np.int64))
    paths = {"DATA": data, "OUT": str(tmp_path), "RUN": run, "NOMODEL": str(tmp_path / "no-model"),
             "MISSING": str(tmp_path / "missing.npz"), "EMPTY": str(tmp_path / "empty.npz")}
    argv = [paths.get(a, a) for a in argv]
    try:
        assert cli.main(argv) == 2
    except SystemExit as exc:  # argparse's own errors
        assert exc.code == 2
    err = capsys.readouterr().err
    assert err.startswith("embedseg: error: ") and err.count("\n") == 1 and "Traceback" not in err
    import re

    assert re.search(match, err), err


def test_domain_commands_are_added_and_a_missing_extra_is_skipped(data, monkeypatch, capsys):
    DOMAINS.register("toy-missing-extra", "embedseg_no_such_module:Domain", override=True)
    try:
        assert cli.main(["toycount", data]) == 0
        assert capsys.readouterr().out.strip() == "16"
        parser = cli.build_parser()
        assert "toycount" in parser.format_help()
    finally:
        DOMAINS.unregister("toy-missing-extra")


def test_an_installed_domain_is_found_through_its_entry_point_with_its_commands(tmp_path):
    """A package that declares a domain in the ``embedseg.domains`` entry-point group, installed
    (here: its code and dist-info on the path), gets listed and gets its commands."""
    pkg = tmp_path / "lidar_domain"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "import embedseg\n"
        "class LidarDomain(embedseg.Domain):\n"
        "    name = 'lidar'\n"
        "    @classmethod\n"
        "    def add_cli_commands(cls, subparsers):\n"
        "        p = subparsers.add_parser('lidar-scan', help='segment a point cloud scan')\n"
        "        p.set_defaults(func=lambda args: 0)\n"
    )
    info = tmp_path / "lidar_domain-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lidar-domain\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[embedseg.domains]\nlidar = lidar_domain:LidarDomain\n")
    exe = os.path.join(os.path.dirname(sys.executable), "embedseg")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0 and "lidar-scan" in proc.stdout, proc.stdout + proc.stderr
    proc = subprocess.run([exe, "list"], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0 and "lidar" in proc.stdout.splitlines()[0]


def test_console_script_runs():
    exe = os.path.join(os.path.dirname(sys.executable), "embedseg")
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"embedseg {embedseg.__version__}"
    proc = subprocess.run([exe, "info", "/nonexistent"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("embedseg: error: No saved model")


def test_count_argument_parses_counts_and_words():
    import argparse

    from embedseg.cli import count_argument

    parse = count_argument(1, ("auto",))
    assert parse("3") == 3 and parse("auto") == "auto"
    for bad in ("0", "-2", "2.5", "three", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="expected an int >= 1 or 'auto'"):
            parse(bad)
    assert count_argument(0)("0") == 0


def test_info_tells_the_files_format_and_what_it_is_read_as(run, tmp_path, capsys):
    import shutil

    from embedseg.io import MODEL_FORMAT_VERSION

    old = tmp_path / "old"
    shutil.copytree(os.path.join(run, "model"), old)
    config = json.loads((old / "config.json").read_text())
    config["format_version"] = 1
    (old / "config.json").write_text(json.dumps(config))
    assert cli.main(["info", str(old)]) == 0
    assert f"(format 1, read as {MODEL_FORMAT_VERSION})" in capsys.readouterr().out
    assert cli.main(["info", str(old), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["file_format_version"] == 1 and shown["format_version"] == MODEL_FORMAT_VERSION
    assert cli.main(["info", run]) == 0
    assert f"(format {MODEL_FORMAT_VERSION})" in capsys.readouterr().out


def test_info_and_evaluate_refuse_a_model_with_non_finite_weights(run, data, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file, save_file

    bad = tmp_path / "bad"
    shutil.copytree(os.path.join(run, "model"), bad)
    state = load_file(bad / "model.safetensors")
    name = next(iter(state))
    state[name] = torch.full_like(state[name], float("nan"))
    save_file(state, bad / "model.safetensors")
    for argv in (["info", str(bad)], ["evaluate", str(bad), data]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"hold non-finite values in '{name}' ({state[name].numel()} NaN, 0 inf)" in err
