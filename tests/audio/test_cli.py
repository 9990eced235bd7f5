"""``embedseg separate``: ``--out`` and the inputs are checked before any work, errors are one
line with status 2, a failed run leaves no (empty) output folder, outputs never replace an input
or (without --overwrite) an existing file, and inputs that share a name get distinct outputs."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from embedseg.cli import main

PRETRAINED = Path(__file__).resolve().parents[2] / "pretrained"
SPEECH = str(PRETRAINED / "audio-speech-8k")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def mix(tmp_path):
    path = tmp_path / "mix.wav"
    t = np.arange(4000) / 8000
    wave = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.3 * np.sin(2 * np.pi * 1500 * t)
    sf.write(path, wave.astype(np.float32), 8000)
    return path


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("embedseg: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_out_is_an_existing_file(mix, tmp_path, capsys):
    (tmp_path / "taken").write_text("x")
    # A missing model proves --out is checked before any work is done.
    assert main(["separate", str(tmp_path / "no-model"), str(mix), "--out", str(tmp_path / "taken")]) == 2
    err = _error(capsys)
    assert "'--out'" in err and "must be a folder" in err and "taken" in err and "an existing file" in err
    assert (tmp_path / "taken").read_text() == "x"


def test_out_under_a_file(mix, tmp_path, capsys):
    (tmp_path / "taken").write_text("x")
    assert main(["separate", SPEECH, str(mix), "--out", str(tmp_path / "taken" / "sub")]) == 2
    err = _error(capsys)
    assert "'--out'" in err and "is a file" in err


@pytest.mark.parametrize("bad", ["missing", "text", "folder"])
def test_bad_inputs_create_no_folder(bad, mix, tmp_path, capsys):
    path = tmp_path / "bad.wav"
    if bad == "text":
        path.write_text("not audio\n")
    elif bad == "folder":
        path.mkdir()
    out = tmp_path / "out"
    # The bad file comes second: nothing is separated or written for the good one either.
    assert main(["separate", str(tmp_path / "no-model"), str(mix), str(path), "--out", str(out)]) == 2
    err = _error(capsys)
    assert "'MIXTURE'" in err and str(path) in err
    if bad == "text":
        assert "Could not read" in err and "as audio" in err
    assert not out.exists()


def test_wrong_model_kind_creates_no_folder(mix, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["separate", str(PRETRAINED / "image-shapes"), str(mix), "--out", str(out)]) == 2
    err = _error(capsys)
    assert "'MODEL'" in err and "audio model" in err and "'image'" in err
    assert not out.exists()


def test_separate_creates_the_folder_and_writes_sources(mix, tmp_path, capsys):
    out = tmp_path / "a" / "b"
    assert main(["separate", SPEECH, str(mix), "--out", str(out), "--n-sources", "2"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["mix_s1.wav", "mix_s2.wav"]
    assert "2 sources" in capsys.readouterr().out
    # An existing folder is fine too; its files are replaced only with --overwrite.
    assert main(["separate", SPEECH, str(mix), "--out", str(out), "--n-sources", "2", "--overwrite"]) == 0
    (out / "notes.txt").write_text("mine")
    other = tmp_path / "other.wav"
    other.write_bytes(mix.read_bytes())
    assert main(["separate", SPEECH, str(other), "--out", str(out), "--n-sources", "2"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["mix_s1.wav", "mix_s2.wav", "notes.txt", "other_s1.wav", "other_s2.wav"]


# -- outputs never destroy user data ---------------------------------------------------------------
def _run(argv, capsys) -> tuple[int, str]:
    """Exit status and stderr of a command; argparse's own errors exit through SystemExit."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def _tones(path, freqs, rate=8000):
    t = np.arange(4000) / rate
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, sum(0.3 * np.sin(2 * np.pi * f * t) for f in freqs).astype(np.float32), rate)
    return path


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def inputs(tmp_path):
    paths = {
        "A": _tones(tmp_path / "a" / "mix.wav", (220, 1500)),
        "B": _tones(tmp_path / "b" / "mix.wav", (330, 2100)),
        "ALIAS": tmp_path / "a" / ".." / "a" / "mix.wav",
        "LINK": tmp_path / "link.wav",
        "SRC": _tones(tmp_path / "a" / "mix_s1.wav", (440,)),  # a source of an earlier run, given as input
        "OLD": _tones(tmp_path / "d" / "mix_s1.wav", (550,)),  # an earlier run's, or the user's
        "D": tmp_path / "d",
        "E": tmp_path / "e",
        "A_DIR": tmp_path / "a",
        "NOMODEL": tmp_path / "no-model",
    }
    paths["LINK"].symlink_to(paths["A"])
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "a").write_text("a file where a folder of sources would go")
    return paths


@pytest.mark.skipif(os.name != "posix", reason="symbolic links")
@pytest.mark.parametrize(
    "argv, match",
    [
        (["separate"], r"the following arguments are required: MODEL, MIXTURE, --out"),
        (["separate", "NOMODEL", "A"], r"required: --out"),
        (["separate", "NOMODEL", "A", "--out", "E", "--n-sources", "0"], r"argument --n-sources: expected an int >= 1 or 'auto', got '0'"),
        (["separate", "NOMODEL", "A", "--out", "E", "--device", "gpu"], r"argument --device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
        (["separate", "NOMODEL", "A", "--out", "A"], r"'--out' must be a folder .* Got '.*mix\.wav', an existing file"),
        (["separate", "NOMODEL", "A", "ALIAS", "--out", "E"], r"'MIXTURE' must list each file once. Got '.*a/mix\.wav' and '.*a/\.\./a/mix\.wav', the same file"),
        (["separate", "NOMODEL", "LINK", "A", "--out", "E"], r"'MIXTURE' must list each file once. Got '.*link\.wav' and '.*a/mix\.wav'"),
        # mix.wav's first source would go where an input is: refused even with --overwrite.
        (["separate", "NOMODEL", "A", "SRC", "--out", "A_DIR", "--overwrite"],
         r"'--out' must not name an input file. Got '.*a/mix_s1\.wav', the same file as the input '.*a/mix_s1\.wav'"),
        (["separate", "NOMODEL", "A", "--out", "D"], r"'--out' would replace the existing file '.*d/mix_s1\.wav'; pass --overwrite to replace it"),
        (["separate", "NOMODEL", "A", "B", "--out", "E"], r"'--out' must leave room for the folder '.*e/a' of the sources"),
        (["separate", "NOMODEL", "A", "--out", "E", "--overwrite"], r"No saved model at '.*no-model'"),  # the checks passed
    ],
)
def test_bad_command_lines_get_one_line_naming_the_argument(argv, match, inputs, tmp_path, capsys):
    argv = [str(inputs[a]) if a in inputs else a for a in argv]
    before = _tree(tmp_path)
    code, err = _run(argv, capsys)
    assert code == 2
    assert err.startswith("embedseg: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert re.search(match, err), err
    assert _tree(tmp_path) == before  # nothing written, replaced or removed


def test_inputs_sharing_a_name_keep_their_folders(inputs, tmp_path, capsys):
    a, b = inputs["A"], inputs["B"]
    out = tmp_path / "out"
    assert main(["separate", SPEECH, str(a), str(b), "--out", str(out), "--n-sources", "2"]) == 0
    assert sorted(_tree(out)) == ["a/mix_s1.wav", "a/mix_s2.wav", "b/mix_s1.wav", "b/mix_s2.wav"]
    # Each input's own sources: the same as separating it alone.
    for path, sub in ((a, "a"), (b, "b")):
        alone = tmp_path / f"alone-{sub}"
        assert main(["separate", SPEECH, str(path), "--out", str(alone), "--n-sources", "2"]) == 0
        assert _tree(alone) == {k[2:]: v for k, v in _tree(out).items() if k.startswith(f"{sub}/")}
    assert _tree(out)["a/mix_s1.wav"] != _tree(out)["b/mix_s1.wav"]
    printed = capsys.readouterr().out
    assert f"-> {out / 'a' / 'mix'}_s*.wav" in printed and f"-> {out / 'b' / 'mix'}_s*.wav" in printed


def test_inputs_of_one_folder_differing_in_suffix_keep_it(tmp_path, capsys):
    wav = _tones(tmp_path / "mix.wav", (220, 1500))
    flac = tmp_path / "mix.flac"
    sf.write(flac, sf.read(wav)[0], 8000)
    out = tmp_path / "out"
    assert main(["separate", SPEECH, str(wav), str(flac), "--out", str(out), "--n-sources", "2"]) == 0
    assert sorted(_tree(out)) == ["mix.flac_s1.wav", "mix.flac_s2.wav", "mix.wav_s1.wav", "mix.wav_s2.wav"]


def test_overwrite_replaces_and_keeps_what_it_does_not_replace(mix, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["separate", SPEECH, str(mix), "--out", str(out), "--n-sources", "3"]) == 0
    third = (out / "mix_s3.wav").read_bytes()
    before = _tree(out)
    code, err = _run(["separate", SPEECH, str(mix), "--out", str(out), "--n-sources", "2"], capsys)
    assert code == 2 and "would replace 3 existing files" in err and "pass --overwrite" in err
    assert _tree(out) == before
    assert main(["separate", SPEECH, str(mix), "--out", str(out), "--n-sources", "2", "--overwrite"]) == 0
    assert (out / "mix_s3.wav").read_bytes() == third  # never deleted; the run says so
    assert "files of an earlier run beyond them were kept" in capsys.readouterr().err
