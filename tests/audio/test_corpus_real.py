"""The corpus of real speech gathered from Debian packages.

Most tests run on a small copy of the packages' folder layout written here (harmonic tones at a
known F0 stand in for speech), so the logic is checked without the packages; the last test
reads the installed packages, which scripts/test.sh installs before pytest runs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from domains.audio import MixtureDataset, build_real_speech_corpus
from domains.audio.corpus_real import (
    HELD_OUT_QUOTAS,
    REAL_SPEECH_PACKAGES,
    _split_speakers,
    missing_real_speech_packages,
    real_speech_speakers,
)
from embedseg.cli import main
from embedseg.errors import EmbedsegError

FEMALE, MALE = 220.0, 110.0
LEAD = 0.3  # seconds of silence before and after each fake clip's tone
MARGIN = 0.05  # what the trimming keeps around the speech (the module's documented margin)


def _tone(f0: float, seconds: float, rate: int) -> np.ndarray:
    """A voiced-speech stand-in: five harmonics of f0 with 20 ms fades, between silences."""
    t = np.arange(int(seconds * rate)) / rate
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6)) * 0.3
    fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.02)
    silence = np.zeros(int(LEAD * rate))
    return np.concatenate([silence, x * fade, silence]).astype(np.float32)


class FakeTree:
    """The packages' layout under ``root`` with the tone length of every clip written."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tone_seconds: dict[str, float] = {}
        self.n = 0

    def clip(self, rel: str, f0: float, rate: int, **kw) -> None:
        seconds = 0.4 + 0.1 * (self.n % 7)  # lengths vary from clip to clip
        self.n += 1
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, _tone(f0, seconds, rate) * (1 - 0.002 * self.n), rate, **kw)  # no two alike
        self.tone_seconds[rel] = seconds

    def raw(self, rel: str, data: bytes) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


ASTERISK = "usr/share/asterisk/sounds"
FILLETS = "usr/share/games/fillets-ng/sound"
KLETTRES = "usr/share/klettres"
KTUBERLING = "usr/share/ktuberling/sounds"
# KLettres languages of the fake tree with the F0 of their reader(s).
KLETTRES_F0 = {"cs": FEMALE, "da": MALE, "de": MALE, "en": MALE, "fr": MALE, "he": MALE, "it": FEMALE,
               "nl": MALE, "es": FEMALE, "ru": FEMALE}

# KTuberling languages: fr and es have a KLettres reader, lt none; sr@latin repeats sr.
KTUBERLING_F0 = {"es": MALE, "fr": FEMALE, "lt": MALE, "sr": FEMALE}


def make_tree(root: Path) -> FakeTree:
    """Every package of the corpus, two to four clips per speaker, and some bad files."""
    tree = FakeTree(root)
    gsm = {"format": "RAW", "subtype": "GSM610"}
    for folder, f0 in [("en_US_f_Allison", FEMALE), ("es_MX_f_Allison", FEMALE), ("fr_CA_f_June", FEMALE),
                       ("it_IT_m_Carlo", MALE), ("it_IT_f_Menardi", FEMALE), ("ru_RU_f_IvrvoiceRU", FEMALE)]:
        for i in range(3):
            tree.clip(f"{ASTERISK}/{folder}/prompt{i}.wav", f0, 8000)
        tree.clip(f"{ASTERISK}/{folder}/digits/{folder[:2]}1.wav", f0, 8000)
    # not speech: the folder of silences and the tones are left out, not counted as skipped
    sf.write(root / ASTERISK / "en_US_f_Allison/silence-1.wav", np.zeros(800, np.float32), 8000)  # (a silent clip: empty)
    (root / ASTERISK / "en_US_f_Allison/silence").mkdir()
    sf.write(root / ASTERISK / "en_US_f_Allison/silence/1.wav", np.zeros(8000, np.float32), 8000)
    sf.write(root / ASTERISK / "en_US_f_Allison/beep.wav", 0.5 * np.sin(np.arange(4000) * 0.8).astype(np.float32), 8000)
    sf.write(root / ASTERISK / "fr_CA_f_June/nothing.wav", np.zeros(0, np.float32), 8000)  # no samples: empty
    for folder, f0 in [("es", FEMALE), ("fr", FEMALE)]:
        for i in range(3):
            tree.clip(f"{ASTERISK}/{folder}/prompt{i}.gsm", f0, 8000, **gsm)
        tree.clip(f"{ASTERISK}/{folder}/digits/1.gsm", f0, 8000, **gsm)
    ogg = {"format": "OGG", "subtype": "VORBIS"}
    for lang, (small, big) in {"cs": (FEMALE, MALE), "nl": (FEMALE, MALE)}.items():
        # the three ways the levels name the fish's lines, and other characters
        tree.clip(f"{FILLETS}/airplane/{lang}/let-m-ahoj.ogg", small, 22050, **ogg)
        tree.clip(f"{FILLETS}/hanoi/{lang}/m-bude.ogg", small, 22050, **ogg)
        tree.clip(f"{FILLETS}/fdto/{lang}/agenti-m.ogg", small, 22050, **ogg)
        tree.clip(f"{FILLETS}/airplane/{lang}/let-v-tady.ogg", big, 22050, **ogg)
        tree.clip(f"{FILLETS}/hanoi/{lang}/v-alehrac.ogg", big, 22050, **ogg)
        tree.clip(f"{FILLETS}/fdto/{lang}/hybeme-v.ogg", big, 22050, **ogg)
        tree.clip(f"{FILLETS}/barrel/{lang}/bar-x-vypr.ogg", 150.0, 22050, **ogg)
        tree.clip(f"{FILLETS}/keys/{lang}/init-0-0.ogg", 180.0, 22050, **ogg)
        tree.clip(f"{FILLETS}/briefcase/{lang}/help1.ogg", 130.0, 22050, **ogg)
    # two levels sharing one file: the copy is a duplicate
    (root / FILLETS / "cabin1/cs").mkdir(parents=True)
    shutil.copy(root / FILLETS / "airplane/cs/let-v-tady.ogg", root / FILLETS / "cabin1/cs/let-v-tady.ogg")
    tree.tone_seconds[f"{FILLETS}/cabin1/cs/let-v-tady.ogg"] = tree.tone_seconds[f"{FILLETS}/airplane/cs/let-v-tady.ogg"]
    tree.raw(f"{FILLETS}/airplane/nl/let-v-kapot.ogg", b"OggS" + bytes(range(256)) * 4)  # corrupt: unreadable
    tree.raw(f"{FILLETS}/airplane/nl/let-m-leeg.ogg", b"")  # a file of no bytes: unreadable
    for lang, f0 in KLETTRES_F0.items():
        for letter in "ABC":
            tree.clip(f"{KLETTRES}/{lang}/alpha/{letter}.ogg", f0, 44100, **ogg)
        tree.clip(f"{KLETTRES}/{lang}/syllab/ba.ogg", f0, 44100, **ogg)
    sf.write(root / KLETTRES / "en/alpha/Z.ogg", np.zeros(22050, np.float32), 44100, **ogg)  # silent: empty
    (root / KLETTRES / "icons").mkdir()  # a folder without sounds is no language
    for (lang, f0), kind in zip(KTUBERLING_F0.items(), ("wav", "ogg", "opus", "ogg")):
        # the three formats the languages come in
        fmt = {"wav": {}, "ogg": ogg, "opus": {"format": "OGG", "subtype": "OPUS"}}[kind]
        for word in ("ball", "hat"):
            tree.clip(f"{KTUBERLING}/{lang}/{word}.{kind}", f0, 48000 if kind == "opus" else 44100, **fmt)
    shutil.copytree(root / KTUBERLING / "sr", root / KTUBERLING / "sr@latin")  # a script variant: the same files
    return tree


EXPECTED_SPEAKERS = (
    ["asterisk-allison", "asterisk-june", "asterisk-carlo", "asterisk-menardi", "asterisk-ivrvoiceru",
     "asterisk-es-co", "asterisk-fr-armelle"]
    + [f"fillets-{lang}-{c}" for lang in ("cs", "nl") for c in ("small", "big", "minor")]
    + [f"klettres-{lang}" for lang in sorted(KLETTRES_F0)]
    + [f"ktuberling-{lang}" for lang in sorted(KTUBERLING_F0)]
)
F0_OF = {  # the generated F0 of each single-person speaker
    **{n: FEMALE for n in EXPECTED_SPEAKERS if n.startswith("asterisk")}, "asterisk-carlo": MALE,
    **{f"fillets-{lang}-small": FEMALE for lang in ("cs", "nl")}, **{f"fillets-{lang}-big": MALE for lang in ("cs", "nl")},
    **{f"klettres-{lang}": f0 for lang, f0 in KLETTRES_F0.items() if lang != "es"},  # es: two readers
    **{f"ktuberling-{lang}": f0 for lang, f0 in KTUBERLING_F0.items()},
}


@pytest.fixture(scope="module")
def fake(tmp_path_factory) -> FakeTree:
    return make_tree(tmp_path_factory.mktemp("packages"))


@pytest.fixture(scope="module")
def built(fake, tmp_path_factory):
    out = tmp_path_factory.mktemp("speech-real")
    return build_real_speech_corpus(out, seed=0, source_root=fake.root), out


def _check_split(splits: dict, entries: dict) -> None:
    """The documented constraints of the held-out speakers."""
    train, valid, test = (set(splits[k]) for k in ("train", "valid", "test"))
    assert not (train & valid or train & test or valid & test)
    for split, names in (("valid", valid), ("test", test)):
        assert len(names) == sum(HELD_OUT_QUOTAS[split].values())
        assert {entries[n]["sex"] for n in names} == {"female", "male"}
        assert all(entries[n]["holdout_eligible"] for n in names)
        for source, k in HELD_OUT_QUOTAS[split].items():
            assert sum(entries[n]["source"] == source for n in names) == k
    assert len(test) >= 8
    assert len({lang for n in test for lang in entries[n]["languages"]}) >= 3
    assert len({p for n in test for p in entries[n]["packages"]}) >= 3


def test_layout_and_speakers(built, fake):
    corpus, out = built
    recipe = json.loads((out / "corpus.json").read_text())
    splits = json.loads((out / "splits.json").read_text())
    assert splits == corpus.splits and set(splits) == {"train", "valid", "test"}
    held = splits["valid"] + splits["test"]
    held_fish = [n for n in held if n.startswith("fillets")]
    assert len(held_fish) == 1
    # a fish's language pool, and KTuberling's reader of a held-out KLettres language
    dropped = {f"fillets-{held_fish[0].split('-')[1]}-minor"}
    dropped |= {f"ktuberling-{lang}" for lang in KTUBERLING_F0 if f"klettres-{lang}" in held}
    assert "ktuberling-fr" in dropped or "klettres-fr" in splits["train"]
    expected = [n for n in EXPECTED_SPEAKERS if n not in dropped]
    assert sorted(recipe["speakers"]) == sorted(expected) == sorted(corpus.speakers)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(expected)
    assert all(n in corpus.excluded and not (out / n).exists() for n in dropped)
    assert not any(n.startswith("ktuberling") for n in held)  # nobody credited: training only
    assert "ktuberling-lt" in splits["train"] and "ktuberling-sr@latin" not in corpus.speakers
    assert sorted(n for names in splits.values() for n in names) == sorted(expected)
    for name in expected:
        wavs = sorted((out / name).glob("*.wav"))
        assert wavs and wavs[0].name == f"{name}_0000.wav"
        for w in wavs:
            info = sf.info(w)
            assert info.samplerate == 8000 and info.channels == 1 and info.subtype == "PCM_16"
        lines = (out / name / "clips.txt").read_text().splitlines()
        assert [ln.split("\t")[0] for ln in lines] == [w.stem for w in wavs]
        entry = recipe["speakers"][name]
        assert entry["utterances"] == len(wavs) and entry["split"] in splits and name in splits[entry["split"]]
    allison = recipe["speakers"]["asterisk-allison"]
    assert allison["packages"] == ["asterisk-core-sounds-en-wav", "asterisk-core-sounds-es-wav"]
    assert allison["languages"] == ["en-US", "es-MX"]
    # the silence folder and the beep are not clips; the silent clip is found, then skipped
    assert allison["clips_found"] == 4 + 4 + 1 and allison["clips"] == 8
    # which character each fish line belongs to, from the three naming patterns
    for lang in ("cs", "nl"):
        for character, stems in (("small", {"let-m-ahoj", "m-bude", "agenti-m"}), ("big", {"let-v-tady", "hybeme-v", "v-alehrac"})):
            folder = out / f"fillets-{lang}-{character}"
            used = {Path(p).stem for ln in (folder / "clips.txt").read_text().splitlines() for p in ln.split("\t")[1:]}
            assert used == stems
    assert MixtureDataset(out, split="test", n_mixtures=2)[0]["sources"].shape[0] == 2


def test_sex_from_folder_names_or_measured_f0(built):
    corpus, _ = built
    for name, entry in corpus.speakers.items():
        if name in F0_OF:
            assert entry["median_f0_hz"] == pytest.approx(F0_OF[name], rel=0.05)
            assert entry["sex"] == ("male" if F0_OF[name] < 165 else "female")
        if name.startswith("asterisk") and name not in ("asterisk-es-co", "asterisk-fr-armelle"):
            assert entry["sex_from"] == "Asterisk folder name"
        elif name in F0_OF:
            assert entry["sex_from"] == "median F0"
        else:  # pools of characters, languages read by two people
            assert entry["sex"] == "mixed" and not entry["holdout_eligible"]
    assert not corpus.speakers["klettres-ru"]["holdout_eligible"]  # nobody credited
    assert corpus.speakers["klettres-de"]["holdout_eligible"]


def test_clips_are_trimmed_resampled_and_joined(built, fake):
    corpus, out = built
    for name in corpus.speakers:
        for line in (out / name / "clips.txt").read_text().splitlines():
            stem, *clips = line.split("\t")
            x, rate = sf.read(out / name / f"{stem}.wav")
            speech = sum(fake.tone_seconds[c] for c in clips)
            k = len(clips)
            # each clip keeps its tone plus at most the margin and one 10 ms frame on each side,
            # and the pauses between clips are 0.1 to 0.5 s
            low = speech + 0.1 * (k - 1) - 0.002
            high = speech + k * 2 * (MARGIN + 0.01) + 0.5 * (k - 1) + 0.002
            assert low <= len(x) / rate <= high, (name, stem, clips)
            assert len(x) / rate <= 8.0 or k == 1
            assert np.abs(x).max() == pytest.approx(0.5, abs=1e-3)
    # the rate is converted, not relabelled: a 44.1 kHz tone keeps its pitch at 8 kHz
    x, rate = sf.read(out / "klettres-cs" / "klettres-cs_0000.wav")
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    assert np.fft.rfftfreq(len(x), 1 / rate)[spectrum.argmax()] == pytest.approx(KLETTRES_F0["cs"], abs=3)


def test_bad_clips_are_skipped_and_counted(built):
    corpus, out = built
    recipe = json.loads((out / "corpus.json").read_text())
    # unreadable: the corrupt ogg and the file of no bytes; empty: a wav of no samples and two
    # silent clips; duplicate: one file of two levels
    assert corpus.skipped == recipe["skipped"] == {"unreadable": 2, "empty": 3, "duplicate": 1}
    speakers = recipe["speakers"]
    nl_files = speakers["fillets-nl-big"]["skipped_files"].get("unreadable", []) + speakers["fillets-nl-small"]["skipped_files"].get("unreadable", [])
    assert sorted(Path(p).name for p in nl_files) == ["let-m-leeg.ogg", "let-v-kapot.ogg"]
    assert speakers["fillets-cs-big"]["skipped"]["duplicate"] == 1
    assert speakers["klettres-en"]["skipped_files"]["empty"] == [f"{KLETTRES}/en/alpha/Z.ogg"]


def test_split_constraints_hold(built):
    corpus, _ = built
    _check_split(corpus.splits, corpus.speakers)


def test_build_is_deterministic(built, fake, tmp_path):
    _, out = built
    again = build_real_speech_corpus(tmp_path / "again", seed=0, source_root=fake.root)
    first = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    second = sorted(p.relative_to(again.root) for p in again.root.rglob("*") if p.is_file())
    assert first == second
    for rel in first:
        assert (out / rel).read_bytes() == (again.root / rel).read_bytes(), rel


def test_split_is_stratified_for_every_seed():
    # a table like the installed packages': 19 speakers who may be held out, a few who may not
    entries = {}
    for name, sex, langs in [("asterisk-allison", "female", ["en-US", "es-MX"]), ("asterisk-june", "female", ["fr-CA"]),
                             ("asterisk-carlo", "male", ["it-IT"]), ("asterisk-menardi", "female", ["it-IT"]),
                             ("asterisk-ivrvoiceru", "female", ["ru-RU"]), ("asterisk-es-co", "female", ["es-CO"]),
                             ("asterisk-fr-armelle", "female", ["fr-FR"])]:
        entries[name] = {"source": "asterisk", "sex": sex, "languages": langs, "holdout_eligible": True, "packages": [name]}
    for lang in ("cs", "nl"):
        for c, sex in (("small", "female"), ("big", "male")):
            entries[f"fillets-{lang}-{c}"] = {"source": "fillets", "sex": sex, "languages": [lang], "holdout_eligible": True, "packages": [f"fillets-ng-data-{lang}"]}
    for lang, sex in [("cs", "female"), ("da", "male"), ("de", "male"), ("en", "male"), ("fr", "male"), ("he", "male"),
                      ("it", "female"), ("nl", "female"), ("ru", "female"), ("es", "mixed")]:
        entries[f"klettres-{lang}"] = {"source": "klettres", "sex": sex, "languages": [lang], "packages": ["klettres-data"],
                                       "holdout_eligible": sex != "mixed" and lang != "ru"}
    seen = set()
    for seed in range(40):
        splits = _split_speakers(entries, seed)
        _check_split(splits, entries)
        assert sorted(n for names in splits.values() for n in names) == sorted(entries)
        assert splits == _split_speakers(entries, seed)
        seen.add(tuple(splits["test"]))
    assert len(seen) > 10  # the seed matters


def test_split_that_cannot_be_filled_says_why():
    entries = {f"asterisk-{i}": {"source": "asterisk", "sex": "female", "languages": ["en"], "holdout_eligible": True} for i in range(8)}
    with pytest.raises(EmbedsegError, match="test split needs a male speaker"):
        _split_speakers(entries, 0)


def test_missing_packages_are_named_with_the_install_script(tmp_path, fake):
    assert missing_real_speech_packages(fake.root) == []
    with pytest.raises(EmbedsegError, match="install_speech_real.sh") as info:
        build_real_speech_corpus(tmp_path / "out", source_root=tmp_path)
    assert all(p in str(info.value) for p in REAL_SPEECH_PACKAGES)
    partial = tmp_path / "partial"
    shutil.copytree(fake.root, partial)
    shutil.rmtree(partial / KLETTRES)
    for f in (partial / FILLETS).glob("*/nl/*"):
        f.unlink()
    assert missing_real_speech_packages(partial) == ["fillets-ng-data-nl", "klettres-data"]
    with pytest.raises(EmbedsegError, match=r"not found under .*: fillets-ng-data-nl, klettres-data; run scripts/install_speech_real.sh as root"):
        real_speech_speakers(partial)
    assert not (tmp_path / "out").exists()


def test_bad_arguments(tmp_path, fake):
    with pytest.raises(ValueError, match="'sample_rate' parameter of build_real_speech_corpus"):
        build_real_speech_corpus(tmp_path, sample_rate=100, source_root=fake.root)
    with pytest.raises(ValueError, match="'max_minutes_per_speaker' parameter of build_real_speech_corpus"):
        build_real_speech_corpus(tmp_path, max_minutes_per_speaker=0, source_root=fake.root)
    with pytest.raises(FileNotFoundError, match="'source_root'"):
        build_real_speech_corpus(tmp_path, source_root=tmp_path / "nowhere")


def test_command_line(fake, tmp_path, capsys):
    out = tmp_path / "corpus"
    assert main(["data", "speech-real", "--out", str(out), "--source-root", str(fake.root), "--max-minutes-per-speaker", "0.02"]) == 0
    printed = capsys.readouterr().out
    assert "real speech corpus:" in printed and "test 8" in printed and "valid 4" in printed
    assert (out / "splits.json").is_file() and (out / "corpus.json").is_file()
    assert json.loads((out / "corpus.json").read_text())["max_minutes_per_speaker"] == 0.02
    assert main(["data", "speech-real", "--out", str(tmp_path / "x"), "--source-root", str(tmp_path / "corpus")]) == 2
    err = capsys.readouterr().err
    assert "install_speech_real.sh" in err and err.count("\n") == 1


def test_installed_packages(tmp_path):
    """The real recordings, as scripts/install_speech_real.sh installs them (a few seconds of each speaker)."""
    missing = missing_real_speech_packages()
    if missing:
        pytest.fail(f"Debian packages with the real speech recordings are missing ({', '.join(missing)}); "
                    "run scripts/install_speech_real.sh as root (scripts/test.sh does).")
    speakers = {s.name: s for s in real_speech_speakers()}
    assert [n for n in speakers if n.startswith(("asterisk", "fillets"))] == EXPECTED_SPEAKERS[:13]
    assert sum(n.startswith("klettres") for n in speakers) >= 15
    assert sum(n.startswith("ktuberling") for n in speakers) >= 20
    assert not any("@" in n for n in speakers)
    for s in speakers.values():
        assert all(c.is_file() for c in s.clips[:5])
    assert len(speakers["asterisk-allison"].clips) > 1000  # both of her folders
    for lang in ("cs", "nl"):
        assert len(speakers[f"fillets-{lang}-small"].clips) > 500 and len(speakers[f"fillets-{lang}-big"].clips) > 500
    corpus = build_real_speech_corpus(tmp_path, max_minutes_per_speaker=0.05, seed=0)
    _check_split(corpus.splits, corpus.speakers)
    assert corpus.speakers["asterisk-carlo"]["sex"] == "male"
    assert all(entry["utterances"] >= 1 for entry in corpus.speakers.values())


TUXPAINT = "usr/share/tuxpaint/stamps"
# Tux Paint languages of the fake tree: nobody else speaks ro or pt-BR; fr has held-out-eligible
# speakers (Asterisk's June and Armelle, KLettres' fr reader).
TUXPAINT_F0 = {"ro": MALE, "fr": FEMALE, "pt_BR": FEMALE}


def test_tuxpaint_is_an_opt_in_source_of_training_speakers(fake, built, tmp_path, capsys):
    root = tmp_path / "packages"
    shutil.copytree(fake.root, root)
    tree = FakeTree(root)
    ogg = {"format": "OGG", "subtype": "VORBIS"}
    for lang, f0 in TUXPAINT_F0.items():
        for stamp in ("animals/frog", "food/apple", "town/monuments/house"):
            tree.clip(f"{TUXPAINT}/{stamp}_desc_{lang}.ogg", f0, 44100, **ogg)
    tree.clip(f"{TUXPAINT}/food/pear_desc_pt_BR.wav", FEMALE, 22050)  # some languages are WAV files
    tree.clip(f"{TUXPAINT}/animals/frog_desc.ogg", MALE, 44100, **ogg)  # no language: left out
    tree.clip(f"{TUXPAINT}/animals/frog.ogg", MALE, 44100, **ogg)  # the stamp's own sound: not a description
    shutil.copy(root / TUXPAINT / "animals/frog_desc_ro.ogg", root / TUXPAINT / "animals/frog-1_desc_ro.ogg")  # a variant's copy
    # off by default: the default corpus stays as it was
    assert not any(s.source == "tuxpaint" for s in real_speech_speakers(root))
    assert missing_real_speech_packages(fake.root, ["tuxpaint"]) == ["tuxpaint-stamps-default"]
    with pytest.raises(EmbedsegError, match=r"tuxpaint-stamps-default; run scripts/install_speech_real.sh .* with --tuxpaint"):
        real_speech_speakers(fake.root, ["tuxpaint"])
    with pytest.raises(ValueError, match=r"'extra_sources' parameter of build_real_speech_corpus must name opt-in sources \('tuxpaint'\). Got unknown \['gcompris'\]"):
        build_real_speech_corpus(tmp_path / "never", source_root=root, extra_sources=["gcompris"])
    found = {s.name: s for s in real_speech_speakers(root, ["tuxpaint"]) if s.source == "tuxpaint"}
    assert sorted(found) == ["tuxpaint-fr", "tuxpaint-pt-br", "tuxpaint-ro"]
    assert len(found["tuxpaint-ro"].clips) == 4 and len(found["tuxpaint-pt-br"].clips) == 4
    assert found["tuxpaint-pt-br"].languages == ("pt-BR",)
    assert set(found["tuxpaint-fr"].shares_voices_with) == {"asterisk-june", "asterisk-fr-armelle", "klettres-fr"}
    assert found["tuxpaint-ro"].shares_voices_with == () and not any(s.holdout for s in found.values())

    out = tmp_path / "corpus"
    corpus = build_real_speech_corpus(out, seed=0, source_root=root, extra_sources=("tuxpaint",))
    reference, _ = built
    assert corpus.splits["valid"] == reference.splits["valid"] and corpus.splits["test"] == reference.splits["test"]
    held = set(corpus.splits["valid"]) | set(corpus.splits["test"])
    for name, speaker in found.items():  # training only, and out where a held-out speaker speaks its language
        if held & set(speaker.shares_voices_with):
            assert name in corpus.excluded and not (out / name).exists()
        else:
            assert name in corpus.splits["train"] and (out / name / f"{name}_0000.wav").is_file()
    ro = corpus.speakers["tuxpaint-ro"]
    assert ro["clips"] == 3 and ro["skipped"]["duplicate"] == 1 and ro["sex"] == "male"
    recipe = json.loads((out / "corpus.json").read_text())
    assert recipe["extra_sources"] == ["tuxpaint"] and "tuxpaint_rule" in recipe
    assert json.loads((built[1] / "corpus.json").read_text())["extra_sources"] == []
    # the command line
    assert main(["data", "speech-real", "--out", str(tmp_path / "cli"), "--source-root", str(root),
                 "--max-minutes-per-speaker", "0.02", "--extra-sources", "tuxpaint"]) == 0
    assert "real speech corpus:" in capsys.readouterr().out
    assert json.loads((tmp_path / "cli" / "corpus.json").read_text())["extra_sources"] == ["tuxpaint"]
