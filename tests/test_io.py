"""Safe model files: atomic writes, pickle refusal, clear errors for corrupt or missing files."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import embedseg
from embedseg import Domain, EncodedBatch, ModelFileError, Model
from embedseg.cluster import KMeans
from embedseg.io import (
    MODEL_FORMAT_VERSION,
    atomic_write_bytes,
    atomic_write_json,
    check_no_pickle,
    check_output_files,
    migrate_config,
    read_model_folder,
    same_file,
    to_jsonable,
    write_model_folder,
)
from embedseg.networks import PointMLP

from toys import one_thread  # noqa: F401  (an autouse fixture)


@embedseg.register_domain("toy-io", override=True)
class ToyDomain(Domain):
    def __init__(self, *, scale: float = 1.0) -> None:
        self.scale = scale

    def get_config(self):
        return {"scale": self.scale}

    def encode(self, batch, device):
        return EncodedBatch(batch.to(device) * self.scale, torch.ones(batch.shape[:2], dtype=torch.bool, device=device))

    def network_spec(self, name=None, **params):
        return {"name": name or "point_mlp", "params": {"in_features": 2, **params}}

    def decode(self, batch, labels, proba, embeddings):
        return list(labels)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = Model(PointMLP(in_features=2), ToyDomain(scale=2.0), KMeans(n_clusters=2),
                  {"network": {"name": "point_mlp", "params": {"in_features": 2}}})
    path = tmp_path / "model"
    model.save(path)
    return model, path


class Exploit:
    """A pickle that would create a file when unpickled."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


# -- writing ---------------------------------------------------------------------------------------
def test_atomic_writes_replace_and_leave_no_temporary_files(tmp_path):
    path = tmp_path / "sub" / "x.json"
    atomic_write_json(path, {"a": (1, 2)})
    atomic_write_bytes(path, b'{"b": 1}')
    assert json.loads(path.read_text()) == {"b": 1}
    assert os.listdir(path.parent) == ["x.json"]
    with pytest.raises(ValueError):
        atomic_write_json(path, {"a": float("nan")})
    assert json.loads(path.read_text()) == {"b": 1}  # the failed write left the old file
    assert os.listdir(path.parent) == ["x.json"]


def test_model_folder_layout_and_round_trip(saved):
    model, path = saved
    assert sorted(os.listdir(path)) == ["config.json", "model.safetensors"]
    config = json.loads((path / "config.json").read_text())
    assert config["format"] == "embedseg-model" and config["format_version"] == MODEL_FORMAT_VERSION == 5
    assert config["domain"] == {"name": "toy-io", "options": {"scale": 2.0}}
    assert config["network"] == {"name": "point_mlp", "params": {"in_features": 2}}
    assert config["clusterer"]["name"] == "kmeans" and config["clusterer"]["params"]["n_clusters"] == 2
    loaded = embedseg.load(path)
    assert loaded.domain.scale == 2.0
    x = torch.randn(2, 9, 2)
    batch = loaded.domain.encode(x, "cpu")
    torch.testing.assert_close(model.embed(batch), loaded.embed(batch), rtol=0, atol=0)


def test_saving_again_replaces_the_folder_atomically(saved):
    model, path = saved
    torch.nn.init.zeros_(model.network.head.proj.bias)
    model.save(path)
    assert sorted(os.listdir(path)) == ["config.json", "model.safetensors"]
    assert not any(p.name.endswith((".old", ".tmp")) for p in path.parent.iterdir())
    assert torch.equal(embedseg.load(path).network.head.proj.bias, torch.zeros(16))


@pytest.mark.skipif(os.name != "posix", reason="POSIX paths and symbolic links")
def test_saving_to_a_path_without_a_folder_name_is_refused_before_writing(saved, tmp_path, monkeypatch):
    """"", ".", ".." or "/" would replace the current folder, a parent or a root (and copy all
    that is in it as "the user's other files")."""
    model, _ = saved

    def never(*args, **kwargs):  # a regression must not start copying a whole tree
        raise AssertionError("write_model_folder went on to write")

    monkeypatch.setattr("embedseg.io.make_temp_folder", never)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    (tmp_path / "work" / "to-root").symlink_to("/", target_is_directory=True)
    for bad, shown in [("", "an empty path"), (".", "'.'"), ("..", "'..'"), ("/", "'/'"),
                       ("x/..", "'x/..'"), ("to-root", "'to-root' \\(a link to '/'\\)")]:
        with pytest.raises(ValueError, match=f"'path' must name the model's own folder .* Got {shown} instead"):
            model.save(bad)
    assert sorted(os.listdir(tmp_path / "work")) == ["to-root"]


def test_saving_again_keeps_the_users_other_files(saved):
    model, path = saved
    (path / "scores.json").write_text('{"ap50": 0.5}')
    (path / "notes").mkdir()
    (path / "notes" / "README.md").write_text("trained on my data")
    torch.nn.init.zeros_(model.network.head.proj.bias)
    model.save(path)
    assert sorted(os.listdir(path)) == ["config.json", "model.safetensors", "notes", "scores.json"]
    assert (path / "scores.json").read_text() == '{"ap50": 0.5}'
    assert (path / "notes" / "README.md").read_text() == "trained on my data"
    assert torch.equal(embedseg.load(path).network.head.proj.bias, torch.zeros(16))


def test_to_jsonable():
    import numpy as np

    assert to_jsonable({"a": (1, np.float32(2.5)), "b": torch.tensor(3)}) == {"a": [1, 2.5], "b": 3}
    with pytest.raises(ValueError, match="JSON data"):
        to_jsonable({"f": object()})
    with pytest.raises(ValueError, match="non-finite"):
        to_jsonable([float("inf")])


# -- pickle is refused -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["extra.pt", "weights.pth", "state.pkl", "x.ckpt", "y.pickle"])
def test_pickle_files_are_refused_by_name(saved, name):
    _, path = saved
    (path / name).write_bytes(b"not even a real pickle")
    with pytest.raises(ModelFileError, match=f"'{name}' is a pickle payload"):
        embedseg.load(path)


def test_pickle_payload_is_refused_and_never_runs(saved, tmp_path):
    _, path = saved
    target = tmp_path / "pwned"
    (path / "extra.bin").write_bytes(pickle.dumps(Exploit(str(target)), protocol=4))
    with pytest.raises(ModelFileError, match="'extra.bin' is a pickle payload"):
        embedseg.load(path)
    assert not target.exists()


def test_torch_save_archive_in_place_of_the_weights_is_refused(saved):
    model, path = saved
    torch.save(model.network.state_dict(), path / "model.safetensors")
    with pytest.raises(ModelFileError, match="'model.safetensors' is a pickle payload"):
        embedseg.load(path)


def test_a_save_stopped_between_its_two_renames_keeps_the_old_model(saved):
    model, path = saved
    aside = path.with_name(path.name + ".old")
    os.replace(path, aside)  # where a crash inside replace_folder leaves things
    state, _ = read_model_folder(path)
    assert all(torch.equal(state[k], v) for k, v in model.network.state_dict().items())
    assert embedseg.load(path).config["network"]["name"] == "point_mlp"
    model.save(path)  # the next save completes the interrupted one
    assert path.is_dir() and not aside.exists()
    read_model_folder(path)


def test_pickle_in_a_subfolder_is_refused(saved):
    _, path = saved
    (path / "sub").mkdir()
    (path / "sub" / "data").write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(ModelFileError, match="pickle payload"):
        check_no_pickle(path)


# -- missing or corrupt files ---------------------------------------------------------------------
def test_missing_folder_or_a_file_instead(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        embedseg.load(tmp_path / "nope")
    (tmp_path / "f").write_text("x")
    with pytest.raises(ModelFileError, match="is a folder holding 'config.json'"):
        embedseg.load(tmp_path / "f")


def test_empty_current_and_root_paths_are_not_model_folders(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"'path' must name a model folder. Got an empty path"):
        embedseg.load("")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelFileError, match=r"No saved model at '\.' \(.*\): the model config file 'config.json' is missing"):
        embedseg.load(".")
    with pytest.raises(ModelFileError, match=r"No saved model at '/': the model config file '/config.json' is missing"):
        embedseg.load("/")
    with pytest.raises(TypeError, match="'path' must be a str or os.PathLike"):
        embedseg.load(None)


def test_a_folder_without_a_model_is_refused_before_any_scan(tmp_path, monkeypatch):
    """A folder without config.json is not a model: no pickle scan (slow on a big tree), and
    no blame on an unrelated pickle file in it."""
    (tmp_path / "deep" / "er").mkdir(parents=True)
    (tmp_path / "deep" / "er" / "old.pth").write_bytes(b"x")
    scanned = []
    monkeypatch.setattr("embedseg.io.check_no_pickle", lambda folder: scanned.append(folder))
    with pytest.raises(ModelFileError, match=r"No saved model at '.*': the model config file '.*config.json' is missing"):
        embedseg.load(tmp_path)
    assert scanned == []


def test_a_model_folder_with_a_pickle_in_a_subfolder_is_refused_on_load(saved):
    _, path = saved
    (path / "sub").mkdir()
    (path / "sub" / "old.pth").write_bytes(b"x")
    with pytest.raises(ModelFileError, match="'sub/old.pth' is a pickle payload"):
        embedseg.load(path)


def test_missing_config(saved):
    _, path = saved
    (path / "config.json").unlink()
    with pytest.raises(ModelFileError, match="model config file '.*config.json' is missing"):
        embedseg.load(path)


def test_missing_weights(saved):
    _, path = saved
    (path / "model.safetensors").unlink()
    with pytest.raises(ModelFileError, match="model weights file '.*model.safetensors' is missing"):
        embedseg.load(path)


def test_corrupt_config(saved):
    _, path = saved
    (path / "config.json").write_text('{"format": "embedseg-model", ')
    with pytest.raises(ModelFileError, match="config.json' is not valid JSON"):
        embedseg.load(path)
    (path / "config.json").write_text("[1, 2]")
    with pytest.raises(ModelFileError, match="must hold a JSON object"):
        embedseg.load(path)


def test_truncated_weights(saved):
    _, path = saved
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="model.safetensors' is not a readable safetensors file"):
        embedseg.load(path)


def edit_config(path, **changes):
    config = json.loads((path / "config.json").read_text())
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key].update(value)
        else:
            config[key] = value
    (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"format": "other"}, 'must have "format": "embedseg-model"'),
        ({"format_version": 99}, "format_version 99.*Upgrade embedseg"),
        ({"format_version": 0}, "format_version 0.*reads versions 1 to"),
        ({"format_version": "1"}, "format_version '1'.*reads versions 1 to"),
        ({"format_version": True}, "format_version True.*reads versions 1 to"),
        ({"network": "point_mlp"}, "must have a 'network' entry with a 'name'"),
        ({"domain": {"options": [1]}}, "'domain.options' entry .* must be a JSON object"),
        ({"domain": {"name": "lidar"}}, "Unknown domain 'lidar'. Valid domains: .*'audio'.*'toy-io'"),
        ({"network": {"name": "resnet"}}, "Unknown network 'resnet'. Valid networks: .*'point_mlp'"),
        ({"clusterer": {"name": "dbscan"}}, "Unknown clusterer 'dbscan'. Valid clusterers: .*'kmeans'"),
        ({"network": {"params": {"in_features": 2, "dim": 32}}}, "weights of the model .* do not match the network"),
        ({"network": {"params": {"in_features": 2, "depth": 3}}}, "Cannot rebuild the network"),
        # A bad saved parameter fails on load, naming the entry, not at the first prediction.
        ({"clusterer": {"params": {"n_clusters": 0}}},
         r"Cannot rebuild the clusterer of the model at '.*' from the 'clusterer' entry of its "
         r"config.json: The 'n_clusters' parameter of KMeans must be an int in \[1, inf\).* Got 0"),
        ({"clusterer": {"params": {"n_clusters": 2, "metric": "manhattan"}}}, "'metric' parameter of KMeans"),
        ({"domain": {"options": {"scale": 1.0, "bogus": 1}}},
         r"the 'domain' entry of its config.json: The domain 'toy-io' \(ToyDomain\) has no option\(s\) "
         r"'bogus'. Valid options: scale"),
    ],
)
def test_bad_config_entries_give_clear_errors(saved, changes, match):
    _, path = saved
    edit_config(path, **changes)
    with pytest.raises(ModelFileError, match=match):
        embedseg.load(path)


def test_load_accepts_a_training_run_folder(saved, tmp_path):
    model, path = saved
    run = tmp_path / "run"
    write_model_folder(run / "model", model.network.state_dict(), model.full_config())
    state, config = read_model_folder(run / "model")
    assert set(state) == set(model.network.state_dict())
    assert isinstance(embedseg.load(run), Model)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_saved_files_get_the_usual_permissions(saved, tmp_path):
    _, path = saved
    old = os.umask(0o027)
    try:
        embedseg.load(path).save(tmp_path / "again")
        atomic_write_json(tmp_path / "x.json", {"a": 1})
        assert os.umask(0o027) == 0o027  # the umask was left as it was
    finally:
        os.umask(old)
    assert (tmp_path / "again").stat().st_mode & 0o777 == 0o750
    for name in ("config.json", "model.safetensors"):
        assert (tmp_path / "again" / name).stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o640


def test_saving_after_an_interrupted_replace_keeps_the_users_files(saved):
    model, path = saved
    (path / "scores.json").write_text("{}")
    os.replace(path, path.with_name(path.name + ".old"))  # a replace that stopped halfway
    model.save(path)
    assert sorted(os.listdir(path)) == ["config.json", "model.safetensors", "scores.json"]
    assert not path.with_name(path.name + ".old").exists()


@pytest.mark.skipif(os.name != "posix", reason="symbolic links")
def test_saving_through_a_link_replaces_its_target_and_keeps_the_link(saved, tmp_path):
    model, path = saved
    link = tmp_path / "link"
    link.symlink_to(path, target_is_directory=True)
    torch.nn.init.zeros_(model.network.head.proj.bias)
    model.save(link)
    assert link.is_symlink() and link.resolve() == path.resolve()
    assert torch.equal(embedseg.load(path).network.head.proj.bias, torch.zeros(16))


def test_saving_never_replaces_a_folder_of_other_work(tmp_path):
    from embedseg.io import write_model_folder

    work = tmp_path / "project"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds other files and no 'config.json'"):
        write_model_folder(work, {"w": torch.zeros(2)}, {"a": 1})
    assert sorted(p.name for p in work.iterdir()) == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    write_model_folder(empty, {"w": torch.zeros(2)}, {"a": 1})  # an empty folder is fine
    assert (empty / "config.json").is_file()


def test_an_unrelated_old_folder_is_neither_used_nor_an_obstacle(tmp_path):
    from embedseg.io import write_model_folder

    (tmp_path / "results.old").mkdir()
    (tmp_path / "results.old" / "table.csv").write_text("a,b")
    write_model_folder(tmp_path / "results", {"w": torch.zeros(2)}, {"a": 1})  # a new folder
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["config.json", "model.safetensors"]
    # Replacing it would set the old version aside as results.old: that name is taken.
    with pytest.raises(FileExistsError, match="is not an earlier version of it"):
        write_model_folder(tmp_path / "results", {"w": torch.ones(2)}, {"a": 2})
    assert (tmp_path / "results.old" / "table.csv").read_text() == "a,b"
    assert json.loads((tmp_path / "results" / "config.json").read_text())["a"] == 1
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / ".DS_Store").write_bytes(b"x")  # a folder holding only hidden files counts as empty
    write_model_folder(hidden, {"w": torch.zeros(2)}, {"a": 1})


def test_atomic_write_with_keeps_the_suffix_and_leaves_nothing_on_failure(tmp_path):
    from embedseg.io import atomic_write_with

    seen = []
    atomic_write_with(tmp_path / "out.wav", lambda tmp: (seen.append(tmp), open(tmp, "w").write("data")))
    assert seen[0].endswith(".wav") and (tmp_path / "out.wav").read_text() == "data"

    def fail(tmp):
        open(tmp, "w").write("partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write_with(tmp_path / "out.wav", fail)
    assert (tmp_path / "out.wav").read_text() == "data"  # the earlier file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]  # no temporary left


# -- format versions -------------------------------------------------------------------------------
REPO = Path(__file__).resolve().parents[1]

#: How version-1 files loaded before format version 2: the domain was built from the saved
#: options, then each option the file lacked and the domain listed here (its class attribute
#: ``older_model_options`` then) was set to this value instead of the current default.
OLDER_MODEL_OPTIONS = {"image": {"flip_views": 1, "split_threshold": -1.0}, "audio": {"inference": "clusters"}}


def config_by_the_version_1_rule(config):
    """The domain config a version-1 config gave before format version 2 existed."""
    from embedseg.domain import create_domain

    saved = config["domain"].get("options") or {}
    domain = create_domain(config["domain"]["name"], **saved)
    for key, value in OLDER_MODEL_OPTIONS.get(config["domain"]["name"], {}).items():
        if key not in saved:
            setattr(domain, key, value)
    return domain.get_config()


# The version-1 config files of shipped models that have been retrained (and so saved as
# version 2) since; the shipped weights of the network they describe go with them (a head
# added since, as the speech model's count head, is left out).
VERSION_1_CONFIGS = {"audio-speech-8k": REPO / "tests" / "fixtures" / "audio-speech-8k.v1.json"}


def copy_model(source, folder, drop=()):
    """A copy of the model folder ``source`` whose config lacks the domain options ``drop``."""
    folder.mkdir()
    config = json.loads((source / "config.json").read_text())
    for key in drop:
        del config["domain"]["options"][key]
    (folder / "config.json").write_text(json.dumps(config))
    shutil.copy(source / "model.safetensors", folder / "model.safetensors")
    return folder


@pytest.mark.parametrize(
    "name, drop",
    [
        ("image-shapes", ()),
        ("audio-speech-8k", ()),
        # what a version-1 file saved before these options existed lacks
        ("image-shapes", ("flip_views", "split_threshold", "local_window", "seed_consistency")),
        ("image-shapes", ("flip_views",)),
        ("audio-speech-8k", ("inference",)),
    ],
)
def test_version_1_models_load_as_they_did(name, drop, tmp_path, monkeypatch):
    from embedseg.domain import DOMAINS, create_domain

    source = REPO / "pretrained" / name
    if name in VERSION_1_CONFIGS:  # a model shipped as version 1 and saved again since
        shipped = source
        source = tmp_path / f"{name}-v1"
        source.mkdir()
        shutil.copy(VERSION_1_CONFIGS[name], source / "config.json")
        weights = load_file(shipped / "model.safetensors")
        save_file({k: v for k, v in weights.items() if not k.startswith("count_head.")}, source / "model.safetensors")
    config = json.loads((source / "config.json").read_text())
    assert config["format_version"] == 1  # the shipped models are version-1 files
    folder = copy_model(source, tmp_path / name, drop) if drop else source
    given = json.loads((folder / "config.json").read_text())
    expected = config_by_the_version_1_rule(given)
    if drop:  # the current defaults would change how the model runs
        assert expected != create_domain(given["domain"]["name"], **given["domain"]["options"]).get_config()
    # The migration alone keeps the behaviour, with no per-domain rule left at load.
    model = embedseg.load(folder)
    assert model.domain.get_config() == expected
    _, read = read_model_folder(folder)
    assert read["format_version"] == MODEL_FORMAT_VERSION
    assert read["domain"]["options"] == expected  # versions 2 and later list every option
    assert {k: read[k] for k in ("network", "clusterer", "training")} == {k: config[k] for k in ("network", "clusterer", "training")}
    # Saved again, it is a current file that loads the same.
    model.save(tmp_path / "again")
    again = json.loads((tmp_path / "again" / "config.json").read_text())
    assert again["format_version"] == MODEL_FORMAT_VERSION and again["domain"]["options"] == expected
    assert embedseg.load(tmp_path / "again").domain.get_config() == expected


def test_migrate_config_upgrades_step_by_step_and_leaves_its_input_alone():
    from embedseg import io

    # One step from each earlier version to the next.
    assert sorted(io._UPGRADES) == list(range(1, MODEL_FORMAT_VERSION))
    old = {"format": "embedseg-model", "format_version": 1, "domain": {"name": "image", "options": {"flip_views": 4}},
           "network": {"name": "image_unet", "params": {}}, "clusterer": {"name": "kmeans"}}
    before = json.loads(json.dumps(old))
    new = migrate_config(old)
    assert old == before  # not modified
    assert new["format_version"] == MODEL_FORMAT_VERSION
    assert new["domain"]["options"]["flip_views"] == 4  # a saved value is kept
    assert new["domain"]["options"]["split_threshold"] == OLDER_MODEL_OPTIONS["image"]["split_threshold"]
    assert {k: new[k] for k in ("format", "network", "clusterer")} == {k: old[k] for k in ("format", "network", "clusterer")}
    assert migrate_config(new) == new  # a current config comes back as it is
    # A version-2 audio file gets the option added in version 3 with the value it ran with.
    v2 = {**before, "format_version": 2, "domain": {"name": "audio", "options": {"inference": "auto"}}}
    assert migrate_config(v2)["domain"]["options"] == {
        "inference": "auto", "cross_mixture_weight": 0.0, "count_weight": 1.0, "cluster_threshold_db": None,
    }
    # ... and a version-3 one the option added in version 4
    v3 = {**before, "format_version": 3, "domain": {"name": "audio", "options": {"cross_mixture_weight": 3.0}}}
    assert migrate_config(v3)["domain"]["options"] == {
        "cross_mixture_weight": 3.0, "count_weight": 1.0, "cluster_threshold_db": None,
    }
    # ... and a version-4 one the option added in version 5
    v4 = {**before, "format_version": 4, "domain": {"name": "audio", "options": {"soft_masks": True}}}
    assert migrate_config(v4)["domain"]["options"] == {"soft_masks": True, "cluster_threshold_db": None}
    # A domain without a version-1 history (a user's) only changes version.
    user = {**before, "domain": {"name": "toy-io"}}
    assert migrate_config(user) == {**user, "format_version": MODEL_FORMAT_VERSION, "domain": {"name": "toy-io", "options": {}}}


@pytest.mark.parametrize(
    "config, error, match",
    [
        ({"format_version": 0, "domain": {"name": "x"}}, ValueError, r"'format_version' of a model config must be an int from 1 to \d+.*Got 0"),
        ({"format_version": 99, "domain": {"name": "x"}}, ValueError, r"needs a newer embedseg\). Got 99"),
        ({"format_version": "2", "domain": {"name": "x"}}, ValueError, "Got '2' instead"),
        ({"domain": {"name": "x"}}, ValueError, "Got None instead"),
        ({"format_version": 1, "domain": "image"}, ValueError, "'domain' entry .* with a 'name'. Got 'image'"),
        ([1], TypeError, "'config' must be a mapping"),
    ],
)
def test_migrate_config_rejects_what_it_cannot_read(config, error, match):
    with pytest.raises(error, match=match):
        migrate_config(config)


# -- non-finite weights ----------------------------------------------------------------------------
def corrupt_weights(path, changes):
    """Rewrite the model's safetensors with the entries of ``changes`` (name -> function)."""
    from safetensors.torch import load_file, save_file

    state = load_file(path / "model.safetensors")
    for name, change in changes.items():
        state[name] = change(state[name].clone())
    save_file(state, path / "model.safetensors", metadata={"format": "embedseg-model"})


def test_non_finite_weights_are_refused_naming_the_tensor(saved):
    _, path = saved

    def nan3(t):
        t.view(-1)[:3] = float("nan")
        return t

    corrupt_weights(path, {"head.proj.bias": nan3})
    with pytest.raises(ModelFileError, match=rf"The weights of the model at '{path}' hold non-finite values in "
                                             r"'head.proj.bias' \(3 NaN, 0 inf\)"):
        embedseg.load(path)


def test_non_finite_buffers_are_refused_too(tmp_path):
    """BatchNorm running statistics are buffers, saved with the weights."""
    torch.manual_seed(0)
    from embedseg.api import build_model

    model = build_model("image", network_params={"dim": 8, "base": 8})
    path = tmp_path / "m"
    model.save(path)
    state = model.network.state_dict()
    var = next(k for k in state if k.endswith("running_var"))
    mean = next(k for k in state if k.endswith("running_mean"))
    corrupt_weights(path, {
        var: lambda t: t.index_fill_(0, torch.tensor([0, 1]), float("inf")),
        mean: lambda t: t.index_fill_(0, torch.tensor([0]), float("nan")),
    })
    with pytest.raises(ModelFileError, match=r"non-finite values in .*'" + re.escape(var) + r"' \(0 NaN, 2 inf\)") as exc:
        read_model_folder(path)
    assert f"'{mean}' (1 NaN, 0 inf)" in str(exc.value)


def test_large_finite_weights_load(saved):
    _, path = saved
    # Finite values whose sum overflows float32: still a model that loads.
    corrupt_weights(path, {"head.proj.bias": lambda t: t.fill_(3.0e38)})
    embedseg.load(path)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64, torch.complex64])
def test_non_finite_values_of_every_floating_dtype_are_found(dtype, tmp_path):
    from embedseg.io import _check_finite_weights

    big = torch.finfo(dtype).max if not dtype.is_complex else 3.0e38
    _check_finite_weights({"w": torch.full((4,), big, dtype=dtype), "n": torch.tensor([7], dtype=torch.int64)}, "m")
    bad = torch.zeros(5, dtype=dtype)
    bad[1], bad[3] = float("nan"), float("-inf")
    with pytest.raises(ModelFileError, match=r"in 'w' \(1 NaN, 1 inf\)"):
        _check_finite_weights({"w": bad}, "m")


# -- output files ---------------------------------------------------------------------------------
@pytest.mark.skipif(os.name != "posix", reason="symbolic and hard links")
def test_same_file_sees_through_links(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "sym.png").symlink_to(tmp_path / "a.png")
    os.link(tmp_path / "a.png", tmp_path / "hard.png")
    (tmp_path / "d").mkdir()
    assert same_file(tmp_path / "a.png", tmp_path / "sym.png")
    assert same_file(tmp_path / "a.png", tmp_path / "hard.png")
    assert same_file(tmp_path / "d" / ".." / "a.png", tmp_path / "a.png")
    assert same_file(tmp_path / "new.png", tmp_path / "d" / ".." / "new.png")  # neither exists
    assert not same_file(tmp_path / "a.png", tmp_path / "b.png")


@pytest.mark.parametrize(
    "outputs, inputs, overwrite, match",
    [
        ([("--out", "IN")], [("IMAGE", "IN")], False, r"'--out' must not name an input file. Got '.*in.png', the same file as the IMAGE '.*in.png'"),
        ([("--out", "IN")], [("IMAGE", "IN")], True, "must not name an input file"),  # never, even with overwrite
        ([("--out", "LINK")], [("IMAGE", "IN")], True, "must not name an input file"),
        ([("--out", "NEW"), ("--overlay", "NEW")], [], False, r"'--overlay' must differ from '--out'. Got '.*new.png' and '.*new.png', the same file"),
        ([("--out", "OLD")], [], False, r"'--out' would replace the existing file '.*old.png'; pass --overwrite to replace it, or choose"),
        ([("--out", "OLD"), ("--overlay", "OLD2")], [], False, r"'--out' and '--overlay' would replace 2 existing files: '.*old.png' and '.*old2.png'; pass --overwrite to replace them"),
        ([("--out", "DIR")], [], True, r"'--out' must name a file, not a folder. Got '.*d', an existing folder"),
    ],
)
def test_check_output_files_refuses_what_would_destroy_data(outputs, inputs, overwrite, match, tmp_path):
    paths = {"IN": tmp_path / "in.png", "LINK": tmp_path / "link.png", "NEW": tmp_path / "new.png",
             "OLD": tmp_path / "old.png", "OLD2": tmp_path / "old2.png", "DIR": tmp_path / "d"}
    for key in ("IN", "OLD", "OLD2"):
        paths[key].write_bytes(b"keep")
    paths["LINK"].symlink_to(paths["IN"])
    paths["DIR"].mkdir()
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(ValueError, match=match):
        check_output_files([(n, paths[k]) for n, k in outputs], [(n, paths[k]) for n, k in inputs],
                           overwrite=overwrite, how_to_overwrite="pass --overwrite")
    assert sorted(os.listdir(tmp_path)) == before and paths["IN"].read_bytes() == b"keep"


def test_check_output_files_allows_new_files_and_replacing_with_overwrite(tmp_path):
    (tmp_path / "old.png").write_bytes(b"x")
    check_output_files([("--out", tmp_path / "new.png")], [("IMAGE", tmp_path / "old.png")])
    check_output_files([("--out", tmp_path / "old.png")], overwrite=True)
    with pytest.raises(ValueError, match="pass overwrite=True to replace it"):
        check_output_files([("out", tmp_path / "old.png")])
