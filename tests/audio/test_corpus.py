"""The built-in speech corpus builder."""

import json

import numpy as np
import pytest
import soundfile as sf

from domains.audio.corpus import SPLITS, VOICES, build_speech_corpus, wordnet_sentences
TINY_VOICES = ["mb-us1", "mb-us3", "mb-de5", "flite-slt", "fest-rab"]  # as in conftest.py


def test_voice_table_and_splits_are_consistent():
    assert len(VOICES) == 27
    split_voices = [v for vs in SPLITS.values() for v in vs]
    assert sorted(split_voices) == sorted(VOICES)  # every voice in exactly one split
    assert len(set(split_voices)) == len(split_voices)


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
