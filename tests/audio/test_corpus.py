"""The built-in speech corpus builder."""

import json

import numpy as np
import pytest
import soundfile as sf

from domains.audio import corpus as corpus_module
from domains.audio.corpus import SPLITS, VOICE_SETS, VOICES, available_voices, build_speech_corpus, wordnet_sentences
from embedseg.errors import EmbedsegError

TINY_VOICES = ["mb-us1", "mb-us3", "mb-de5", "flite-slt", "fest-rab"]  # as in conftest.py


def test_voice_table_and_splits_are_consistent():
    assert len(VOICES) == 57
    split_voices = [v for vs in SPLITS.values() for v in vs]
    assert sorted(split_voices) == sorted(VOICES)  # every voice in exactly one split
    assert len(set(split_voices)) == len(split_voices)


def test_voice_sets_keep_the_standard_voices_first_and_the_extended_ones_for_training():
    standard, every = VOICE_SETS["standard"], VOICE_SETS["all"]
    assert len(standard) == 27 and every == list(VOICES)
    # A voice's place in VOICES picks its sentences: the standard 27 keep the first places, so
    # corpora built before the extension are rebuilt the same.
    assert every[:27] == standard
    extended = every[27:]
    assert len(extended) == 30 and all(VOICES[v].engine == "espeak-mbrola" for v in extended)
    assert set(extended) <= set(SPLITS["train"])
    held_out = set(SPLITS["valid"]) | set(SPLITS["test"])
    assert held_out <= set(standard)
    assert all(("female" in VOICES[v].description) != ("male" in VOICES[v].description.replace("female", "")) for v in every)


def test_voices_name_a_set_or_a_list(monkeypatch, tmp_path):
    assert corpus_module._voice_names(None) == VOICE_SETS["standard"]
    assert corpus_module._voice_names("all") == list(VOICES)
    assert corpus_module._voice_names(["mb-br2", "mb-us1"]) == ["mb-br2", "mb-us1"]
    with pytest.raises(ValueError, match="'voices' parameter of build_speech_corpus must be a list of voice names or a set's name .*Got 'everything'"):
        build_speech_corpus(tmp_path, voices="everything")
    with pytest.raises(ValueError, match="at least one voice"):
        build_speech_corpus(tmp_path, voices=[])
    # Missing extended voices: the message names them and the install option that brings them.
    monkeypatch.setattr(corpus_module, "available_voices", lambda: list(VOICE_SETS["standard"]))
    with pytest.raises(EmbedsegError, match=r"not installed: \['mb-br1'.*install_speech_voices.sh --extended"):
        build_speech_corpus(tmp_path, voices="all")


def test_missing_speech_tools_checks_the_voices_asked_for(monkeypatch):
    # The install script without --extended brings the standard voices: a machine with only
    # those is ready for the standard corpus (and the tests), and lacks the extended ones.
    monkeypatch.setattr(corpus_module.shutil, "which", lambda tool: f"/usr/bin/{tool}")  # the programs are there
    monkeypatch.setattr(corpus_module, "available_voices", lambda: list(VOICE_SETS["standard"]))
    ready = corpus_module.missing_speech_tools()
    assert not [m for m in ready if m.startswith("voice ")]
    assert corpus_module.missing_speech_tools("standard") == ready
    lacking = corpus_module.missing_speech_tools("all")
    assert [m for m in lacking if m.startswith("voice ")] == [f"voice {v}" for v in VOICE_SETS["all"][27:]]
    monkeypatch.setattr(corpus_module, "available_voices", lambda: ["mb-us1"])
    assert [m for m in corpus_module.missing_speech_tools(["mb-us1", "flite-slt"]) if m.startswith("voice ")] == ["voice flite-slt"]
    with pytest.raises(ValueError, match="'voices' parameter of missing_speech_tools must be"):
        corpus_module.missing_speech_tools("everything")


def test_sentence_budget_depends_on_the_last_voice_asked_for(monkeypatch, tmp_path):
    # Voice k reads sentences [k n, (k + 1) n): the standard voices alone may read more each.
    monkeypatch.setattr(corpus_module, "available_voices", lambda: list(VOICES))
    n_total = len(wordnet_sentences())
    with pytest.raises(ValueError, match=f"must be at most {n_total // 57} "):
        build_speech_corpus(tmp_path, voices=["mb-us1", "mb-tr2"], n_sentences=n_total // 57 + 1)
    with pytest.raises(ValueError, match=f"must be at most {n_total // 27} "):
        build_speech_corpus(tmp_path, voices=["mb-us1", "fest-don"], n_sentences=n_total // 27 + 1)
    assert not any(tmp_path.iterdir())  # refused before anything was written


@pytest.mark.skipif("mb-br2" not in available_voices(), reason="needs scripts/install_speech_voices.sh --extended")
def test_an_extended_voice_reads_its_own_sentences(tmp_path):
    root = build_speech_corpus(tmp_path, voices=["mb-us1", "mb-br2"], n_sentences=3, seed=0)
    data, rate = sf.read(min((root / "mb-br2").glob("*.wav")))
    assert rate == 8000 and len(data) > rate and 0.4 < np.abs(data).max() <= 0.51
    texts = [ln.split("\t")[1] for v in ("mb-us1", "mb-br2") for ln in (root / v / "transcripts.txt").read_text().splitlines()]
    assert len(set(texts)) == 6
    assert json.loads((root / "splits.json").read_text())["train"] == ["mb-us1", "mb-br2"]


def test_wordnet_sentences_are_clean():
    s = wordnet_sentences()
    assert len(s) > 15000
    assert all(6 <= len(x.split()) <= 14 and x.endswith(".") and x[0].isupper() for x in s[::97])
    assert len(set(s)) == len(s)


def test_tiny_corpus_layout(tiny_corpus):
    for v in TINY_VOICES:
        wavs = sorted((tiny_corpus / v).glob("*.wav"))
        assert len(wavs) == 4
        data, rate = sf.read(wavs[0])
        assert rate == 8000 and data.ndim == 1 and 0.4 < np.abs(data).max() <= 0.51
        # leading and trailing silence of at least 50 ms
        assert np.all(data[:400] == 0) and np.all(data[-400:] == 0)
        lines = (tiny_corpus / v / "transcripts.txt").read_text().splitlines()
        assert len(lines) == 4 and lines[0].startswith(f"{v}_000\t")
    splits = json.loads((tiny_corpus / "splits.json").read_text())
    assert splits["test"] == ["mb-us3", "mb-de5", "fest-rab"]
    # no sentence is read by two voices
    texts = [ln.split("\t")[1] for v in TINY_VOICES for ln in (tiny_corpus / v / "transcripts.txt").read_text().splitlines()]
    assert len(set(texts)) == len(texts)


def test_corpus_is_deterministic(tiny_corpus, tmp_path):
    again = build_speech_corpus(tmp_path, voices=["mb-us1", "flite-slt"], n_sentences=4, seed=0)
    for v in ("mb-us1", "flite-slt"):
        a, _ = sf.read(tiny_corpus / v / f"{v}_002.wav")
        b, _ = sf.read(again / v / f"{v}_002.wav")
        np.testing.assert_array_equal(a, b)


def test_corpus_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="'voices' parameter of build_speech_corpus"):
        build_speech_corpus(tmp_path, voices=["mb-xx9"])
    with pytest.raises(ValueError, match="'n_sentences'"):
        build_speech_corpus(tmp_path, n_sentences=0)


@pytest.mark.parametrize("arg, expected", [(None, None), ("all", "all"), ("standard", "standard"), ("mb-us1,flite-slt", ["mb-us1", "flite-slt"])])
def test_command_line_passes_a_set_name_or_the_listed_voices(arg, expected, monkeypatch, tmp_path):
    from embedseg.cli import main

    seen = {}

    def fake_build(out, **kwargs):
        seen.update(kwargs)
        return tmp_path

    monkeypatch.setattr(corpus_module, "build_speech_corpus", fake_build)
    argv = ["data", "speech", "--out", str(tmp_path)] + ([] if arg is None else ["--voices", arg])
    assert main(argv) == 0
    assert seen["voices"] == expected


def test_the_install_script_installs_exactly_the_voices_of_each_set():
    import re
    from pathlib import Path

    script = (Path(__file__).resolve().parents[2] / "scripts" / "install_speech_voices.sh").read_text()
    listed = {name: set(re.search(rf'^{name}="([^"]*)"', script, re.M).group(1).split()) for name in ("MBROLA_VOICES", "MBROLA_EXTENDED")}
    mbrola = [v for v in VOICES if VOICES[v].engine == "espeak-mbrola"]
    assert listed["MBROLA_VOICES"] == {v[3:] for v in mbrola if v in VOICE_SETS["standard"]}
    assert listed["MBROLA_EXTENDED"] == {v[3:] for v in mbrola if v not in VOICE_SETS["standard"]}
