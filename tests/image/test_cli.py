"""``embedseg segment``: one-line errors with status 2, outputs checked before the model runs
(never an input, an existing file only with --overwrite), and no empty or partial output file
on failure."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import io as skio

from embedseg.api import build_model
from embedseg.cli import main
from domains.image import imageio
from domains.image.imageio import read_image, write_image, write_labels

PRETRAINED = Path(__file__).resolve().parents[2] / "pretrained"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    m = build_model("image", network_params={"dim": 8, "base": 8},
                    clusterer={"name": "kmeans", "params": {"n_clusters": 4, "n_init": 1, "max_iter": 10}})
    m.network.eval()
    folder = tmp_path_factory.mktemp("model") / "m"
    m.save(folder)
    return str(folder)


@pytest.fixture()
def image(tmp_path):
    path = tmp_path / "x.png"
    skio.imsave(path, (np.random.default_rng(0).random((24, 24)) * 255).astype(np.uint8), check_contrast=False)
    return path


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("embedseg: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_segment_writes_label_map_and_overlay(model_dir, image, tmp_path, capsys):
    for out, ov in (("l.png", "o.png"), ("l.tif", "o.jpg"), ("l.TIFF", "o.tif")):
        assert main(["segment", model_dir, str(image), "--out", str(tmp_path / out), "--overlay", str(tmp_path / ov)]) == 0
        assert read_image(tmp_path / out).shape == (24, 24)
        assert read_image(tmp_path / ov).shape == (24, 24, 3)
    assert "instances ->" in capsys.readouterr().out
    assert not [n for n in _files(tmp_path) if n.startswith(".")]  # no temporary files left


@pytest.mark.parametrize("out", ["l.jpg", "noext", "l.xyz", "l.jpeg"])
def test_bad_out_suffix_fails_before_the_model_runs(out, image, tmp_path, capsys):
    before = _files(tmp_path)
    # The model folder does not exist: the check must come first, so this costs nothing.
    assert main(["segment", str(tmp_path / "no-model"), str(image), "--out", str(tmp_path / out)]) == 2
    err = _error(capsys)
    assert "'--out'" in err and ".png, .tif or .tiff" in err and out in err
    assert _files(tmp_path) == before


@pytest.mark.parametrize("overlay", ["o.xyz", "noext", "o.gif"])
def test_bad_overlay_suffix_fails_before_anything_is_written(overlay, model_dir, image, tmp_path, capsys):
    before = _files(tmp_path)
    code = main(["segment", model_dir, str(image), "--out", str(tmp_path / "l.png"), "--overlay", str(tmp_path / overlay)])
    assert code == 2
    err = _error(capsys)
    assert "'--overlay'" in err and ".png" in err and ".jpg" in err and overlay in err
    assert _files(tmp_path) == before


def test_out_in_missing_folder_or_a_folder(image, tmp_path, capsys):
    assert main(["segment", "no-model", str(image), "--out", str(tmp_path / "nope" / "l.png")]) == 2
    assert "'--out'" in _error(capsys) and not (tmp_path / "nope").exists()
    (tmp_path / "d.png").mkdir()
    assert main(["segment", "no-model", str(image), "--out", str(tmp_path / "d.png")]) == 2
    err = _error(capsys)
    assert "'--out'" in err and "not a folder" in err


def test_out_and_overlay_must_differ(image, tmp_path, capsys):
    out = str(tmp_path / "l.png")
    assert main(["segment", "no-model", str(image), "--out", out, "--overlay", out]) == 2
    assert "'--overlay'" in _error(capsys) and not (tmp_path / "l.png").exists()


@pytest.mark.parametrize("content", [b"not an image\n", b"hi\n", None], ids=["text", "tiny", "truncated"])
@pytest.mark.parametrize("name", ["bad.png", "bad.tif", "bad.txt"])
def test_unreadable_image_names_the_file(content, name, image, tmp_path, capsys):
    bad = tmp_path / name
    bad.write_bytes(image.read_bytes()[:100] if content is None else content)
    assert main(["segment", "no-model", str(bad), "--out", str(tmp_path / "l.png")]) == 2
    err = _error(capsys)
    assert f"Could not read '{bad}' as an image" in err
    assert not (tmp_path / "l.png").exists()


def test_read_image_keeps_the_reason(image, tmp_path):
    bad = tmp_path / "t.png"
    bad.write_bytes(image.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"Could not read '.*t\.png' as an image.*: .+"):
        read_image(bad)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_image(tmp_path / "missing.png")


def test_missing_image_and_bad_count(model_dir, tmp_path, capsys):
    assert main(["segment", model_dir, str(tmp_path / "missing.png"), "--out", str(tmp_path / "l.png")]) == 2
    assert "missing.png" in _error(capsys)
    with pytest.raises(SystemExit) as exc:
        main(["segment", model_dir, str(tmp_path / "missing.png"), "--out", str(tmp_path / "l.png"), "--n-instances", "-1"])
    assert exc.value.code == 2 and "--n-instances" in capsys.readouterr().err
    assert _files(tmp_path) == set()


def test_wrong_model_kind(image, tmp_path, capsys):
    code = main(["segment", str(PRETRAINED / "audio-speech-8k"), str(image), "--out", str(tmp_path / "l.png")])
    assert code == 2
    err = _error(capsys)
    assert "'MODEL'" in err and "image model" in err and "'audio'" in err
    assert not (tmp_path / "l.png").exists()


def test_write_labels_checks_the_suffix_first(tmp_path):
    labels = np.array([[0, 1], [2, 2]])
    for name in ("l.jpg", "l", "l.xyz"):
        with pytest.raises(ValueError, match=r"'path' must be a label map file ending in \.png, \.tif or \.tiff"):
            write_labels(tmp_path / name, labels)
    with pytest.raises(ValueError, match="'--out'"):
        write_labels(tmp_path / "l.jpg", labels, name="--out")
    with pytest.raises(ValueError, match=">= 0"):
        write_labels(tmp_path / "l.png", -labels)
    with pytest.raises(ValueError, match=r"\.tif"):
        write_labels(tmp_path / "l.png", np.array([[0, 70000]]))
    with pytest.raises(ValueError, match="'path' must be an image file"):
        write_image(tmp_path / "o.xyz", np.zeros((2, 2, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_failed_write_leaves_no_file_and_keeps_the_old_one(suffix, tmp_path, monkeypatch):
    import skimage.io
    import tifffile

    def broken(path, *args, **kwargs):
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(skimage.io, "imsave", broken)
    monkeypatch.setattr(tifffile, "imwrite", broken)
    labels = np.array([[0, 1], [2, 2]])
    with pytest.raises(OSError, match="disk full"):
        write_labels(tmp_path / f"l{suffix}", labels)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / f"l{suffix}").write_bytes(b"old")
    with pytest.raises(OSError, match="disk full"):
        write_labels(tmp_path / f"l{suffix}", labels)
    with pytest.raises(OSError, match="disk full"):
        write_image(tmp_path / f"o{suffix}", np.zeros((2, 2, 3), np.uint8))
    assert _files(tmp_path) == {f"l{suffix}"} and (tmp_path / f"l{suffix}").read_bytes() == b"old"


def test_cli_write_failure_leaves_no_file(model_dir, image, tmp_path, monkeypatch, capsys):
    def broken(path, *args, **kwargs):
        Path(path).write_bytes(b"")
        raise OSError("cannot write")

    monkeypatch.setattr(imageio, "require", lambda module, extra: type("M", (), {"imsave": staticmethod(broken), "imread": staticmethod(skio.imread)}))
    before = _files(tmp_path)
    assert main(["segment", model_dir, str(image), "--out", str(tmp_path / "l.png"), "--overlay", str(tmp_path / "o.png")]) == 2
    assert "cannot write" in _error(capsys)
    assert _files(tmp_path) == before


# -- outputs never destroy user data ---------------------------------------------------------------
def _run(argv, capsys) -> tuple[int, str]:
    """Exit status and stderr of a command; argparse's own errors exit through SystemExit."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


@pytest.fixture()
def files(image, tmp_path):
    """The input image, links to it, and files of the user's that exist already."""
    paths = {"IMG": image, "LINK": tmp_path / "link.png", "HARD": tmp_path / "hard.png",
             "OLD": tmp_path / "old.png", "OLDTIF": tmp_path / "old.tif", "NEW": tmp_path / "new.png",
             "NEW2": tmp_path / "new2.png", "NOMODEL": tmp_path / "no-model"}
    paths["LINK"].symlink_to(image)
    os.link(image, paths["HARD"])
    paths["OLD"].write_bytes(b"mine")
    paths["OLDTIF"].write_bytes(b"mine too")
    return paths


@pytest.mark.skipif(os.name != "posix", reason="symbolic and hard links")
@pytest.mark.parametrize(
    "argv, match",
    [
        (["segment"], r"the following arguments are required: MODEL, IMAGE, --out"),
        (["segment", "NOMODEL", "IMG"], r"required: --out"),
        (["segment", "NOMODEL", "IMG", "--out", "NEW", "--n-instances", "-1"], r"argument --n-instances: expected an int >= 0, got '-1'"),
        (["segment", "NOMODEL", "IMG", "--out", "NEW", "--n-instances", "two"], r"argument --n-instances: expected an int >= 0, got 'two'"),
        (["segment", "NOMODEL", "IMG", "--out", "NEW", "--device", "gpu0"], r"argument --device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu0'"),
        (["segment", "NOMODEL", "IMG", "--out", "NEW", "--colour"], r"unrecognized arguments: --colour"),
        (["segment", "NOMODEL", "IMG", "--out", "new.jpg"], r"'--out' must be a label map file ending in \.png, \.tif or \.tiff"),
        # Outputs that are the input, however named: refused even with --overwrite.
        (["segment", "NOMODEL", "IMG", "--out", "IMG"], r"'--out' must not name an input file. Got '.*x\.png', the same file as the input image '.*x\.png'"),
        (["segment", "NOMODEL", "IMG", "--out", "IMG", "--overwrite"], r"'--out' must not name an input file"),
        (["segment", "NOMODEL", "IMG", "--out", "NEW", "--overlay", "IMG", "--overwrite"], r"'--overlay' must not name an input file"),
        (["segment", "NOMODEL", "IMG", "--out", "LINK", "--overwrite"], r"'--out' must not name an input file. Got '.*link\.png', the same file as the input image '.*x\.png'"),
        (["segment", "NOMODEL", "IMG", "--out", "HARD", "--overwrite"], r"'--out' must not name an input file. Got '.*hard\.png'"),
        (["segment", "NOMODEL", "LINK", "--out", "IMG", "--overwrite"], r"'--out' must not name an input file. Got '.*x\.png', the same file as the input image '.*link\.png'"),
        # Existing files of the user's: only with --overwrite.
        (["segment", "NOMODEL", "IMG", "--out", "OLD"], r"'--out' would replace the existing file '.*old\.png'; pass --overwrite to replace it"),
        (["segment", "NOMODEL", "IMG", "--out", "NEW", "--overlay", "OLD"], r"'--overlay' would replace the existing file '.*old\.png'; pass --overwrite"),
        (["segment", "NOMODEL", "IMG", "--out", "OLDTIF", "--overlay", "OLD"],
         r"'--out' and '--overlay' would replace 2 existing files: '.*old\.tif' and '.*old\.png'; pass --overwrite to replace them"),
        (["segment", "NOMODEL", "IMG", "--out", "NEW", "--overlay", "NEW"], r"'--overlay' must differ from '--out'. Got '.*new\.png' and '.*new\.png', the same file"),
        (["segment", "NOMODEL", "IMG", "--out", "OLD", "--overwrite"], r"No saved model at '.*no-model'"),  # the checks passed
    ],
)
def test_bad_command_lines_get_one_line_naming_the_argument(argv, match, files, tmp_path, capsys):
    argv = [str(files[a]) if a in files else a for a in argv]
    contents = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    code, err = _run(argv, capsys)
    assert code == 2
    assert err.startswith("embedseg: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert re.search(match, err), err
    # Nothing was written, replaced or removed: a missing model proves the checks come first.
    assert {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == contents
    assert _files(tmp_path) == {p.name for p in contents} | {"link.png"}


def test_overwrite_replaces_existing_outputs(model_dir, image, tmp_path, capsys):
    out, over = tmp_path / "l.png", tmp_path / "o.png"
    out.write_bytes(b"old")
    over.write_bytes(b"old")
    assert main(["segment", model_dir, str(image), "--out", str(out), "--overlay", str(over), "--overwrite"]) == 0
    assert read_image(out).shape == (24, 24) and read_image(over).shape == (24, 24, 3)
    assert "instances ->" in capsys.readouterr().out
    # A second run without --overwrite leaves them as they are.
    before = out.read_bytes(), over.read_bytes()
    code, err = _run(["segment", model_dir, str(image), "--out", str(out), "--overlay", str(over)], capsys)
    assert code == 2 and "pass --overwrite" in err
    assert (out.read_bytes(), over.read_bytes()) == before


def test_a_file_that_appears_while_the_model_runs_is_kept(model_dir, image, tmp_path, monkeypatch, capsys):
    import embedseg

    out = tmp_path / "l.png"
    model = embedseg.load(model_dir)
    segment = model.segment

    def slow_segment(*args, **kwargs):
        out.write_bytes(b"written meanwhile")  # by another program, while this one computes
        return segment(*args, **kwargs)

    monkeypatch.setattr(model, "segment", slow_segment)
    monkeypatch.setattr(embedseg, "load", lambda *args, **kwargs: model)
    code, err = _run(["segment", model_dir, str(image), "--out", str(out)], capsys)
    assert code == 2 and "'--out' would replace the existing file" in err
    assert out.read_bytes() == b"written meanwhile"
