"""``embedseg separate``: ``--out`` and the inputs are checked before any work, errors are one
line with status 2, and a failed run leaves no (empty) output folder."""

from __future__ import annotations

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
    # An existing folder is fine too.
    assert main(["separate", SPEECH, str(mix), "--out", str(out), "--n-sources", "2"]) == 0
