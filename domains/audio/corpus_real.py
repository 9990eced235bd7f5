"""A built-in corpus of real recorded speech, gathered from Debian packages only.

The synthetic corpus (:func:`~domains.audio.build_speech_corpus`) teaches a network diphone
voices; this one holds recordings of people. ``scripts/install_speech_real.sh`` installs the
packages (as root, with apt); nothing else is downloaded. The sources:

* Asterisk's voice prompts, one professional speaker per folder (about 25 minutes each):
  ``en_US_f_Allison`` and ``es_MX_f_Allison`` (one person in two languages, one speaker here),
  ``fr_CA_f_June``, ``it_IT_m_Carlo``, ``it_IT_f_Menardi``, ``ru_RU_f_IvrvoiceRU``, and the
  smaller Colombian Spanish (``asterisk-prompt-es-co``) and French (``asterisk-prompt-fr-armelle``)
  prompt sets. The tones (beeps) and the ``silence`` folders are left out.
* Fish Fillets NG's dialogues spoken by actors, in Czech and Dutch. A speaker is a (language,
  character) pair; file names carry the character (``<level>-m-*``, ``m-*`` and ``*-m`` the
  small fish, the same with ``v`` the big fish, about 35 minutes each). The many minor
  characters (a few minutes each, some perhaps voiced by one actor twice, some perhaps by a
  fish's actor) are pooled per language into one training-only folder, ``fillets-<lang>-minor``;
  when either fish of a language is held out, that language's pool is left out of the corpus
  altogether, so no voice of a held-out actor can reach training.
* KLettres' letters and syllables read by native speakers, one folder per language. The
  program's handbook credits one person for most languages and two for Spanish, Low Saxon and
  Brazilian Portuguese; nobody for the others. A language is one speaker folder; only those
  credited to exactly one person may be held out (a person might have recorded two of the
  uncredited languages).
* KTuberling's words (the names of the toy's stamps) read by native speakers of about twenty
  languages, ten seconds to four and a half minutes each. A language is one speaker folder,
  for training only: nobody is credited, and a language's reader may be KLettres' reader of
  that language, so a KTuberling folder is left out when KLettres' reader of its language is
  held out. The Serbian script variants (``sr@latin`` and the like) are the ``sr`` recordings
  again and are skipped.
* Opt-in (``extra_sources=("tuxpaint",)``; ``scripts/install_speech_real.sh --tuxpaint``): Tux
  Paint's spoken stamp names (``tuxpaint-stamps-default``, files ``*_desc_<lang>.ogg`` or ``.wav``), about a
  second each, some 900 per language in Romanian, Catalan, Bulgarian, Spanish, French and
  Russian, 700 in Belarusian and Greek, fewer in others. A language is one speaker folder, for
  training only (nobody is credited; stamp variants share copies, skipped as duplicates), and
  it is left out when any held-out speaker speaks its language: a volunteer may have recorded
  for two programs. Opt-in, so that the default corpus, and every recipe trained on it, stays
  as it was.

Each clip loses its leading and trailing silence (frames 40 dB below the clip's loudest, 50 ms
kept on each side) and is resampled to the corpus rate. A speaker's clips, in an order drawn
from the seed, are joined into utterances of 3 to 8 seconds (the length drawn per utterance)
with 0.1 to 0.5 seconds of silence between clips, so that mixtures overlap the way conversation
does; a clip longer than 8 seconds is an utterance of its own, and a speaker's last utterance
may be shorter. Unreadable and empty (or silent) clips are skipped and counted, as are exact
duplicates (some game levels share files).

Sex comes from the package where it says so (the ``_f_`` / ``_m_`` of Asterisk's folder names);
otherwise it is measured: the median F0 (librosa's pYIN, 70 to 400 Hz, over the frames within
30 dB of the loudest) over up to a minute of the speaker's utterances, below 165 Hz male, else
female. The F0 is measured and recorded for every speaker.
A folder of several people (a pool, a language credited to two readers) is "mixed".

Whole speakers are held out. Test takes 3 Asterisk speakers, 1 fish and 4 KLettres readers,
validation 1 Asterisk speaker and 3 KLettres readers, from the speakers that are one identified
person; each held-out set has both sexes, test has at least three languages. The choice is
stratified by construction (one speaker of each sex first, then each source's quota, preferring
languages not yet in the set, ties broken by an order drawn from the seed). Everything is
deterministic given the seed: building twice gives identical files.

The layout is the one :class:`~domains.audio.MixtureDataset` reads::

    out/<speaker>/<speaker>_<nnnn>.wav   16-bit mono at ``sample_rate``
    out/<speaker>/clips.txt              "<file stem>\\t<clip>\\t<clip>..." (paths under the
                                         packages' root) per line
    out/splits.json                      {"train": [...], "valid": [...], "test": [...]}
    out/corpus.json                      the recipe: sources, speakers, split, seed, skips
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shutil
import tempfile
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embedseg._validation import check_float, check_int
from embedseg.errors import EmbedsegError, require

from .audio_io import resample, save_audio

__all__ = [
    "REAL_SPEECH_PACKAGES",
    "EXTRA_REAL_SPEECH_SOURCES",
    "HELD_OUT_QUOTAS",
    "RealSpeaker",
    "RealSpeechCorpus",
    "missing_real_speech_packages",
    "real_speech_speakers",
    "build_real_speech_corpus",
]

_INSTALL_HINT = "run scripts/install_speech_real.sh as root (it installs them with apt)"

_ASTERISK = "usr/share/asterisk/sounds"
_FILLETS = "usr/share/games/fillets-ng/sound"
_KLETTRES = "usr/share/klettres"
_KTUBERLING = "usr/share/ktuberling/sounds"
_KTUBERLING_SUFFIXES = (".ogg", ".wav", ".opus")  # the languages were recorded in all three
_FILLETS_LANGUAGES = ("cs", "nl")
_TUXPAINT = "usr/share/tuxpaint/stamps"
_TUXPAINT_DESCRIPTION = re.compile(r"_desc_([a-z]{2,3}(?:_[A-Z]{2})?)$")  # <stamp>_desc_<lang>.ogg
_TUXPAINT_SUFFIXES = (".ogg", ".wav")  # a few languages were recorded as WAV

#: Every package the corpus reads, with a pattern (under the packages' root) that matches some
#: of its files: a package is taken as missing when nothing matches.
REAL_SPEECH_PACKAGES: dict[str, str] = {
    "asterisk-core-sounds-en-wav": f"{_ASTERISK}/en_US_f_Allison/*.wav",
    "asterisk-core-sounds-es-wav": f"{_ASTERISK}/es_MX_f_Allison/*.wav",
    "asterisk-core-sounds-fr-wav": f"{_ASTERISK}/fr_CA_f_June/*.wav",
    "asterisk-core-sounds-it-wav": f"{_ASTERISK}/it_IT_m_Carlo/*.wav",
    "asterisk-core-sounds-ru-wav": f"{_ASTERISK}/ru_RU_f_IvrvoiceRU/*.wav",
    "asterisk-prompt-it-menardi-wav": f"{_ASTERISK}/it_IT_f_Menardi/*.wav",
    "asterisk-prompt-es-co": f"{_ASTERISK}/es/*.gsm",
    "asterisk-prompt-fr-armelle": f"{_ASTERISK}/fr/*.gsm",
    "fillets-ng-data-cs": f"{_FILLETS}/*/cs/*.ogg",
    "fillets-ng-data-nl": f"{_FILLETS}/*/nl/*.ogg",
    "klettres-data": f"{_KLETTRES}/*/alpha/*.ogg",
    "ktuberling-data": f"{_KTUBERLING}/*/*.ogg",
}

#: Opt-in sources (``extra_sources`` of :func:`build_real_speech_corpus`): name -> (package,
#: pattern under the packages' root that matches some of its recordings).
EXTRA_REAL_SPEECH_SOURCES: dict[str, tuple[str, str]] = {
    "tuxpaint": ("tuxpaint-stamps-default", f"{_TUXPAINT}/**/*_desc_*.ogg"),
}

#: Speakers held out per split and source. Test: 8 speakers from all three sources; the fish
#: count stays at one because holding out a fish also drops its language's minor characters.
HELD_OUT_QUOTAS: dict[str, dict[str, int]] = {
    "test": {"asterisk": 3, "fillets": 1, "klettres": 4},
    "valid": {"asterisk": 1, "fillets": 0, "klettres": 3},
}
_MIN_TEST_LANGUAGES = 3

# Asterisk's speakers: name -> [(package, folder under _ASTERISK, suffix, language)], note.
# The folder names of the core sounds carry language, sex and speaker.
_ASTERISK_SPEAKERS: dict[str, tuple[list[tuple[str, str, str, str]], str]] = {
    "asterisk-allison": (
        [("asterisk-core-sounds-en-wav", "en_US_f_Allison", ".wav", "en-US"),
         ("asterisk-core-sounds-es-wav", "es_MX_f_Allison", ".wav", "es-MX")],
        "one speaker in two languages",
    ),
    "asterisk-june": ([("asterisk-core-sounds-fr-wav", "fr_CA_f_June", ".wav", "fr-CA")], ""),
    "asterisk-carlo": ([("asterisk-core-sounds-it-wav", "it_IT_m_Carlo", ".wav", "it-IT")], ""),
    "asterisk-menardi": ([("asterisk-prompt-it-menardi-wav", "it_IT_f_Menardi", ".wav", "it-IT")], ""),
    "asterisk-ivrvoiceru": ([("asterisk-core-sounds-ru-wav", "ru_RU_f_IvrvoiceRU", ".wav", "ru-RU")], ""),
    "asterisk-es-co": (
        [("asterisk-prompt-es-co", "es", ".gsm", "es-CO")],
        "recorded by July E. Jimenez (the package's LEEME)",
    ),
    "asterisk-fr-armelle": (
        [("asterisk-prompt-fr-armelle", "fr", ".gsm", "fr-FR")],
        "recorded by Armelle Desjardins (the package's description)",
    ),
}
# Not speech: Asterisk's tones, and its folder of silence files of 1 to 10 seconds.
_ASTERISK_NOT_SPEECH = {"beep", "beeperr", "ascending-2tone", "descending-2tone"}

# KLettres' readers as its handbook ("Credits and License") names them.
_KLETTRES_CREDITS: dict[str, tuple[str, ...]] = {
    "cs": ("Eva Mikulčíková",),
    "da": ("Erik Kjaer Pedersen",),
    "de": ("Helmut Kriege",),
    "en": ("Robert Wadley",),
    "es": ("Ana Belén Caballero", "Juan Pedro Paredes"),
    "fr": ("Ludovic Grossard",),
    "he": ("Assaf Gorgon",),
    "it": ("Pietro Pasotti",),
    "nds": ("Manfred Wiese", "Sönke Dibbern"),
    "nl": ("Geert Stams",),
    "pt_BR": ("Lindonjohnson Monte", "Michelle Monte"),
}

_UTTERANCE_SECONDS = (3.0, 8.0)
_PAUSE_SECONDS = (0.1, 0.5)
_TRIM_TOP_DB = 40.0
_TRIM_FLOOR = 1e-4  # frame RMS (about -80 dBFS) below which a clip counts as silent
_TRIM_MARGIN = 0.05  # seconds kept before the first and after the last active frame
_F0_SECONDS = 60.0
_F0_MALE_BELOW = 165.0
_PEAK = 0.5
_SKIPS = ("unreadable", "empty", "duplicate")


@dataclass(frozen=True)
class RealSpeaker:
    """One speaker folder of the real corpus, as found in the installed packages.

    Attributes:
        name: the folder name in the corpus (the speaker id).
        source: "asterisk", "fillets", "klettres", "ktuberling" or "tuxpaint".
        packages: the Debian packages the recordings come from.
        paths: where they are, as patterns under the packages' root.
        languages: language tags (BCP 47).
        sex: "female" or "male" where the package says so, "mixed" for a folder of several
            people, None when it is to be measured.
        holdout: whether the folder is one identified person recorded nowhere else in the
            corpus, so that it may go to validation or test.
        shares_voices_with: speakers who may also be heard in this folder (a pool of minor
            characters, a reader who may have recorded for two programs): the folder is left
            out when any of them is held out.
        note: provenance, for the recipe.
        clips: the audio files, sorted.
    """

    name: str
    source: str
    packages: tuple[str, ...]
    paths: tuple[str, ...]
    languages: tuple[str, ...]
    sex: str | None
    holdout: bool
    shares_voices_with: tuple[str, ...] = ()
    note: str = ""
    clips: tuple[Path, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class RealSpeechCorpus:
    """What :func:`build_real_speech_corpus` built.

    Attributes:
        root: the corpus folder.
        splits: speaker names of "train", "valid" and "test" (as in ``splits.json``).
        speakers: each written speaker's entry of ``corpus.json`` (source, packages, paths,
            languages, sex and how it was found, median F0, minutes with and without the
            pauses, utterances, clips, skips, split).
        skipped: clips skipped over the whole corpus: "unreadable", "empty", "duplicate".
        excluded: speakers left out, with the reason.
        hours: audio written, in hours.
    """

    root: Path
    splits: dict[str, list[str]]
    speakers: dict[str, dict[str, Any]]
    skipped: dict[str, int]
    excluded: dict[str, str]
    hours: float


def _extra_sources(extra_sources: Sequence[str], owner: str) -> tuple[str, ...]:
    """``extra_sources`` checked against :data:`EXTRA_REAL_SPEECH_SOURCES`, in their order there."""
    if isinstance(extra_sources, str):
        extra_sources = (extra_sources,)
    unknown = [x for x in extra_sources if x not in EXTRA_REAL_SPEECH_SOURCES]
    if unknown:
        raise ValueError(
            f"The 'extra_sources' parameter of {owner} must name opt-in sources "
            f"({', '.join(map(repr, EXTRA_REAL_SPEECH_SOURCES))}). Got unknown {unknown}."
        )
    return tuple(x for x in EXTRA_REAL_SPEECH_SOURCES if x in extra_sources)


def missing_real_speech_packages(source_root: str | os.PathLike = "/", extra_sources: Sequence[str] = ()) -> list[str]:
    """The packages of :data:`REAL_SPEECH_PACKAGES`, and of the opt-in ``extra_sources``, whose
    files are not under ``source_root``."""
    root = Path(source_root)
    wanted = dict(REAL_SPEECH_PACKAGES)
    for x in _extra_sources(extra_sources, "missing_real_speech_packages"):
        package, pattern = EXTRA_REAL_SPEECH_SOURCES[x]
        wanted[package] = pattern
    return [p for p, pattern in wanted.items() if next(root.glob(pattern), None) is None]


def _walk(folder: Path, suffix: str | tuple[str, ...]) -> list[Path]:
    """Files with ``suffix`` (or any of them) under ``folder``, sorted, without following links
    to other folders and without Asterisk's ``silence`` folders."""
    out = []
    for here, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != "silence")
        out += [Path(here, f) for f in files if f.lower().endswith(suffix)]
    return sorted(out)


def _fillets_character(stem: str) -> str:
    """'small', 'big' or 'minor' from a Fish Fillets file name.

    The levels name lines ``<level>-m-<word>``, ``m-<word>`` or ``<word>-m`` for the small fish
    (``v`` for the big one); every other pattern is some other character.
    """
    parts = stem.replace("_", "-").split("-")
    fish = {"m": "small", "v": "big"}
    if len(parts) >= 3 and parts[1] in fish:
        return fish[parts[1]]
    if len(parts) == 2 and parts[0] in fish and parts[1] not in fish:
        return fish[parts[0]]
    if len(parts) == 2 and parts[1] in fish and parts[0] not in fish:
        return fish[parts[1]]
    return "minor"


def real_speech_speakers(source_root: str | os.PathLike = "/", extra_sources: Sequence[str] = ()) -> list[RealSpeaker]:
    """The speaker folders of the real corpus, found in the packages installed under ``source_root``.

    Args:
        source_root: the folder holding the packages' ``usr/share/...`` (the system's root by
            default; a copy of that layout elsewhere works the same).
        extra_sources: opt-in sources to add (:data:`EXTRA_REAL_SPEECH_SOURCES`: "tuxpaint").

    Returns:
        the speakers in a fixed order (Asterisk, Fish Fillets, KLettres, KTuberling, then the
        opt-in sources), each with its clips.

    Raises:
        EmbedsegError: packages are missing (the message names them and says how to install).
    """
    root = Path(source_root)
    base = root.as_posix().rstrip("/")
    extras = _extra_sources(extra_sources, "real_speech_speakers")
    missing = missing_real_speech_packages(root, extras)
    if missing:
        opt_in = [x for x in extras if EXTRA_REAL_SPEECH_SOURCES[x][0] in missing]
        hint = _INSTALL_HINT + "".join(f"; with --{x} for the opt-in '{x}' source" for x in opt_in)
        raise EmbedsegError(
            f"The recordings of these Debian packages were not found under '{root}': "
            f"{', '.join(missing)}; {hint}."
        )
    speakers = []
    for name, (folders, note) in _ASTERISK_SPEAKERS.items():
        clips: list[Path] = []
        for _, folder, suffix, _ in folders:
            clips += [p for p in _walk(root / _ASTERISK / folder, suffix) if p.stem not in _ASTERISK_NOT_SPEECH]
        tag = folders[0][1].split("_")  # <lang>_<COUNTRY>_<f|m>_<Name> for the core sounds
        sex = {"f": "female", "m": "male"}.get(tag[2]) if len(tag) == 4 else None
        speakers.append(RealSpeaker(
            name=name, source="asterisk", packages=tuple(dict.fromkeys(p for p, _, _, _ in folders)),
            paths=tuple(f"{base}/{_ASTERISK}/{f}/**/*{s}" for _, f, s, _ in folders),
            languages=tuple(lang for _, _, _, lang in folders), sex=sex, holdout=True, note=note,
            clips=tuple(clips),
        ))
    for lang in _FILLETS_LANGUAGES:
        groups: dict[str, list[Path]] = {"small": [], "big": [], "minor": []}
        for path in sorted((root / _FILLETS).glob(f"*/{lang}/*.ogg")):
            groups[_fillets_character(path.stem)].append(path)
        fish = (f"fillets-{lang}-small", f"fillets-{lang}-big")
        for character, clips in groups.items():
            pool = character == "minor"
            speakers.append(RealSpeaker(
                name=f"fillets-{lang}-{character}", source="fillets", packages=(f"fillets-ng-data-{lang}",),
                paths=(f"{base}/{_FILLETS}/*/{lang}/*.ogg",), languages=(lang,), sex="mixed" if pool else None,
                holdout=not pool, shares_voices_with=fish if pool else (),
                note=("the minor characters, several actors" if pool else f"the {character} fish"),
                clips=tuple(clips),
            ))
    for folder in sorted(p for p in (root / _KLETTRES).iterdir() if p.is_dir()):
        clips = _walk(folder, ".ogg")
        if not clips:
            continue
        code = folder.name
        credits = _KLETTRES_CREDITS.get(code, ())
        speakers.append(RealSpeaker(
            name=f"klettres-{code.lower().replace('_', '-')}", source="klettres", packages=("klettres-data",),
            paths=(f"{base}/{_KLETTRES}/{code}/**/*.ogg",), languages=(code.replace("_", "-"),),
            sex="mixed" if len(credits) > 1 else None, holdout=len(credits) == 1,
            note=("read by " + " and ".join(credits)) if credits else "reader not credited",
            clips=tuple(clips),
        ))
    klettres_by_language: dict[str, list[str]] = {}
    for s in speakers:
        if s.source == "klettres":
            klettres_by_language.setdefault(_primary_language(s.languages[0]), []).append(s.name)
    for folder in sorted(p for p in (root / _KTUBERLING).iterdir() if p.is_dir() and "@" not in p.name):
        clips = _walk(folder, _KTUBERLING_SUFFIXES)
        if not clips:
            continue
        code = folder.name
        speakers.append(RealSpeaker(
            name=f"ktuberling-{code.lower().replace('_', '-')}", source="ktuberling", packages=("ktuberling-data",),
            paths=tuple(f"{base}/{_KTUBERLING}/{code}/*{x}" for x in _KTUBERLING_SUFFIXES),
            languages=(code.replace("_", "-"),), sex=None,
            holdout=False, shares_voices_with=tuple(klettres_by_language.get(_primary_language(code), ())),
            note="reader not credited; training only", clips=tuple(clips),
        ))
    if "tuxpaint" in extras:
        speakers += _tuxpaint_speakers(root, base, speakers)
    return speakers


def _tuxpaint_speakers(root: Path, base: str, others: Sequence[RealSpeaker]) -> list[RealSpeaker]:
    """One training-only folder per language of Tux Paint's spoken stamp names, each sharing
    voices with every speaker of the corpus that may be held out and speaks its language."""
    by_language: dict[str, list[Path]] = {}
    for path in _walk(root / _TUXPAINT, _TUXPAINT_SUFFIXES):
        found = _TUXPAINT_DESCRIPTION.search(path.stem)
        if found:  # a name without a language (<stamp>_desc.ogg) is left out: its language is unknown
            by_language.setdefault(found.group(1), []).append(path)
    held_out_eligible: dict[str, list[str]] = {}
    for s in others:
        if s.holdout:
            for lang in {_primary_language(t) for t in s.languages}:
                held_out_eligible.setdefault(lang, []).append(s.name)
    return [
        RealSpeaker(
            name=f"tuxpaint-{code.lower().replace('_', '-')}", source="tuxpaint", packages=("tuxpaint-stamps-default",),
            paths=tuple(f"{base}/{_TUXPAINT}/**/*_desc_{code}{x}" for x in _TUXPAINT_SUFFIXES), languages=(code.replace("_", "-"),), sex=None,
            holdout=False, shares_voices_with=tuple(held_out_eligible.get(_primary_language(code), ())),
            note="Tux Paint's spoken stamp names; reader not credited; training only", clips=tuple(clips),
        )
        for code, clips in sorted(by_language.items())
    ]


def _primary_language(tag: str) -> str:
    """'pt' of 'pt_BR', 'pt-BR' or 'pt': readers are matched across programs by language alone."""
    return tag.replace("_", "-").split("-")[0].lower()


def _read_clip(path: Path) -> tuple[bytes, np.ndarray, int]:
    """The file's bytes and its mono float64 samples at the file's rate."""
    sf = require("soundfile", "audio")
    data = path.read_bytes()
    if path.suffix.lower() == ".gsm":  # headerless GSM 6.10 at 8 kHz, Asterisk's format
        wave, rate = sf.read(io.BytesIO(data), dtype="float64", format="RAW", subtype="GSM610", samplerate=8000, channels=1, always_2d=True)
    else:
        wave, rate = sf.read(io.BytesIO(data), dtype="float64", always_2d=True)
    return data, wave.mean(axis=1), int(rate)


def _trim(x: np.ndarray, rate: int) -> np.ndarray:
    """The clip without its leading and trailing silence; empty when it is silent throughout."""
    frame = max(1, rate // 100)
    n = len(x) // frame
    if n == 0:
        return x[:0]
    rms = np.sqrt((x[: n * frame].reshape(n, frame) ** 2).mean(axis=1))
    loudest = float(rms.max())
    if loudest < _TRIM_FLOOR:
        return x[:0]
    active = np.flatnonzero(rms >= loudest * 10 ** (-_TRIM_TOP_DB / 20))
    margin = int(_TRIM_MARGIN * rate)
    return x[max(0, active[0] * frame - margin) : min(len(x), (active[-1] + 1) * frame + margin)]


def _join(n_samples: list[int], rng: np.random.Generator, rate: int) -> list[list[tuple[int, int]]]:
    """Group clips (by length) into utterances: a list of (clip index, pause before it) per utterance."""
    low, high = (int(s * rate) for s in _UTTERANCE_SECONDS)
    groups = []
    i = 0
    while i < len(n_samples):
        target = rng.uniform(low, high)
        group = [(i, 0)]
        length = n_samples[i]
        i += 1
        while i < len(n_samples) and length < target:
            pause = int(rng.uniform(*_PAUSE_SECONDS) * rate)
            if length + pause + n_samples[i] > high:
                break
            group.append((i, pause))
            length += pause + n_samples[i]
            i += 1
        groups.append(group)
    return groups


def _median_f0(utterances: list[np.ndarray], rate: int) -> float:
    """Median F0 (Hz) of the voiced frames over up to a minute of speech; NaN when none is voiced.

    Only frames within 30 dB of the loudest count: in the pauses pYIN calls mains hum voiced.
    """
    librosa = require("librosa", "audio")
    take, total = [], 0
    for u in utterances:
        take.append(u)
        total += len(u)
        if total >= _F0_SECONDS * rate:
            break
    x = np.concatenate(take)[: int(_F0_SECONDS * rate)] if take else np.zeros(0)
    frame = 2 ** math.ceil(math.log2(0.1 * rate))  # 128 ms at 8 kHz: several periods at 70 Hz
    if len(x) < frame:
        return float("nan")
    # 70 Hz floor: below the lowest usual speaking F0's median, above 50 and 60 Hz hum
    f0, voiced, _ = librosa.pyin(x, fmin=70.0, fmax=400.0, sr=rate, frame_length=frame)
    rms = librosa.feature.rms(y=x, frame_length=frame, hop_length=frame // 4)[0][: len(f0)]
    keep = voiced[: len(rms)] & np.isfinite(f0[: len(rms)]) & (rms >= rms.max() * 10 ** (-30 / 20))
    f0 = f0[: len(rms)][keep]
    return float(np.median(f0)) if f0.size else float("nan")


def _speaker_seed(seed: int, name: str) -> np.random.Generator:
    """A generator per speaker that does not depend on which other speakers exist."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _build_speaker(
    speaker: RealSpeaker, root: Path, out: Path, sample_rate: int, seed: int, max_samples: int | None
) -> dict[str, Any]:
    """Read, trim, resample and join one speaker's clips; write the folder; return its recipe entry."""
    rng = _speaker_seed(seed, speaker.name)
    order = rng.permutation(len(speaker.clips))
    skipped = {k: 0 for k in _SKIPS}
    skipped_files: dict[str, list[str]] = {"unreadable": [], "empty": []}
    seen: set[bytes] = set()
    clips: list[np.ndarray] = []
    names: list[str] = []
    total = 0
    for k in order:
        if max_samples is not None and total >= max_samples:
            break
        path = speaker.clips[int(k)]
        rel = path.relative_to(root).as_posix()
        try:
            data, wave, rate = _read_clip(path)
        except (RuntimeError, ValueError, OSError, EOFError):  # libsndfile's errors, unreadable files
            data, wave, rate = b"", None, 0
        if wave is None or not np.isfinite(wave).all():
            skipped["unreadable"] += 1
            skipped_files["unreadable"].append(rel)
            continue
        digest = hashlib.sha1(data).digest()
        if digest in seen:
            skipped["duplicate"] += 1
            continue
        seen.add(digest)
        wave = _trim(wave - wave.mean() if wave.size else wave, rate)
        if wave.size == 0:
            skipped["empty"] += 1
            skipped_files["empty"].append(rel)
            continue
        clips.append(resample(torch.from_numpy(wave), rate, sample_rate).numpy().astype(np.float32))
        names.append(rel)
        total += len(clips[-1])

    folder = out / speaker.name
    if folder.exists():
        shutil.rmtree(folder)
    groups = _join([len(c) for c in clips], rng, sample_rate)
    seconds = 0.0
    sample: list[np.ndarray] = []  # the first minute, for the F0
    if groups:
        with tempfile.TemporaryDirectory(prefix=f".{speaker.name}-", dir=out) as tmp:
            staging = Path(tmp) / "speaker"
            lines = []
            for j, group in enumerate(groups):
                stem = f"{speaker.name}_{j:04d}"
                pieces = []
                for i, pause in group:
                    pieces += [np.zeros(pause, np.float32), clips[i]]
                u = np.concatenate(pieces)
                u *= _PEAK / np.abs(u).max()
                save_audio(staging / f"{stem}.wav", torch.from_numpy(u), sample_rate)
                lines.append("\t".join([stem] + [names[i] for i, _ in group]) + "\n")
                seconds += len(u) / sample_rate
                if sum(len(x) for x in sample) < _F0_SECONDS * sample_rate:
                    sample.append(u)
            (staging / "clips.txt").write_text("".join(lines))
            os.replace(staging, folder)  # the folder appears complete or not at all

    f0 = _median_f0(sample, sample_rate)
    if speaker.sex is not None:
        sex, sex_from = speaker.sex, ("several people" if speaker.sex == "mixed" else "Asterisk folder name")
    elif math.isfinite(f0):
        sex, sex_from = ("male" if f0 < _F0_MALE_BELOW else "female"), "median F0"
    else:
        sex, sex_from = "unknown", "median F0 (no voiced frames)"
    return {
        "source": speaker.source,
        "packages": list(speaker.packages),
        "paths": list(speaker.paths),
        "languages": list(speaker.languages),
        "sex": sex,
        "sex_from": sex_from,
        "median_f0_hz": round(f0, 1) if math.isfinite(f0) else None,
        "holdout_eligible": speaker.holdout and sex in ("female", "male"),
        "minutes": round(seconds / 60, 3),
        "speech_minutes": round(total / sample_rate / 60, 3),  # without the pauses between clips
        "utterances": len(groups),
        "clips": len(clips),
        "clips_found": len(speaker.clips),
        "skipped": skipped,
        "skipped_files": {k: v for k, v in skipped_files.items() if v},
        "note": speaker.note,
    }


def _take(candidates: list[str], entries: dict[str, dict[str, Any]], free: list[str], state: dict[str, Any]) -> bool:
    """Move the first candidate that adds a language (else the first) from ``free`` into the split."""
    if not candidates:
        return False
    fresh = [n for n in candidates if not set(entries[n]["languages"]) <= state["languages"]]
    pick = (fresh or candidates)[0]
    free.remove(pick)
    state["chosen"].append(pick)
    state["left"][entries[pick]["source"]] -= 1
    state["languages"].update(entries[pick]["languages"])
    return True


def _split_speakers(entries: dict[str, dict[str, Any]], seed: int) -> dict[str, list[str]]:
    """Held-out speakers by construction: for each split, one speaker of each sex, then each
    source's quota, preferring new languages; ties broken by an order drawn from the seed."""
    rng = np.random.default_rng([seed, 1])
    names = sorted(n for n, e in entries.items() if e["holdout_eligible"])
    rank = {n: int(r) for n, r in zip(names, rng.permutation(len(names)))}
    free = sorted(names, key=rank.__getitem__)
    splits: dict[str, list[str]] = {}
    for split, quota in HELD_OUT_QUOTAS.items():
        state: dict[str, Any] = {"chosen": [], "left": dict(quota), "languages": set()}
        left = state["left"]
        for sex in rng.permutation(["female", "male"]).tolist():
            if not _take([n for n in free if entries[n]["sex"] == sex and left.get(entries[n]["source"], 0) > 0], entries, free, state):
                raise EmbedsegError(
                    f"The {split} split needs a {sex} speaker among the sources with held-out places "
                    f"({', '.join(s for s, k in quota.items() if k)}), and none is left."
                )
        for source in sorted(left):
            while left[source] > 0:
                if not _take([n for n in free if entries[n]["source"] == source], entries, free, state):
                    raise EmbedsegError(
                        f"The {split} split needs {quota[source]} held-out speakers from {source}; "
                        f"only {quota[source] - left[source]} are eligible."
                    )
        if split == "test" and len(state["languages"]) < _MIN_TEST_LANGUAGES:
            raise EmbedsegError(f"The test split needs {_MIN_TEST_LANGUAGES} languages. Got {sorted(state['languages'])}.")
        splits[split] = sorted(state["chosen"])
    held = {n for s in splits.values() for n in s}
    splits["train"] = sorted(n for n in entries if n not in held)
    return {k: splits[k] for k in ("train", "valid", "test")}


def build_real_speech_corpus(
    out_dir: str | os.PathLike,
    *,
    sample_rate: int = 8000,
    seed: int = 0,
    max_minutes_per_speaker: float | None = None,
    workers: int = 2,
    source_root: str | os.PathLike = "/",
    extra_sources: Sequence[str] = (),
) -> RealSpeechCorpus:
    """Gather the corpus of real speech (see the module docstring for sources, split and layout).

    Speaker folders are rebuilt every time (they are deterministic given the seed); other
    folders under ``out_dir`` are left alone, except those of this corpus's speakers that the
    split leaves out, which are removed.

    Args:
        out_dir: the corpus folder.
        sample_rate: output rate in Hz.
        seed: the seed of every random choice (clip order, utterance lengths, pauses, split).
        max_minutes_per_speaker: stop reading a speaker's clips after this many minutes of
            trimmed speech (the clips are taken in the seeded order); None reads them all.
        workers: speakers processed in parallel.
        source_root: the folder holding the packages' ``usr/share/...``.
        extra_sources: opt-in sources added as training speakers (:data:`EXTRA_REAL_SPEECH_SOURCES`:
            "tuxpaint"); the held-out speakers are the same with or without them.

    Returns:
        the corpus folder, splits, speakers' entries, skip counts and hours written.

    Raises:
        EmbedsegError: a package is missing (the message names it and says how to install), or
            the installed speakers cannot fill the held-out splits.
        FileNotFoundError: ``source_root`` is not a folder.

    Example:
        >>> corpus = build_real_speech_corpus("data/speech-real")  # doctest: +SKIP
        >>> corpus.splits["test"]  # doctest: +SKIP
    """
    owner = "build_real_speech_corpus"
    sample_rate = check_int(sample_rate, "sample_rate", owner, 4000)
    seed = check_int(seed, "seed", owner, 0)
    workers = check_int(workers, "workers", owner, 1)
    if max_minutes_per_speaker is not None:
        max_minutes_per_speaker = check_float(max_minutes_per_speaker, "max_minutes_per_speaker", owner, 0, None, closed="neither")
    root = Path(source_root)
    if not root.is_dir():
        raise FileNotFoundError(f"The 'source_root' folder of {owner} does not exist: '{root}'.")
    require("soundfile", "audio")  # here, not counted as unreadable clips later
    require("librosa", "audio")
    extras = _extra_sources(extra_sources, owner)
    speakers = real_speech_speakers(root, extras)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    max_samples = None if max_minutes_per_speaker is None else int(max_minutes_per_speaker * 60 * sample_rate)

    def build(group: Sequence[RealSpeaker]) -> dict[str, dict[str, Any]]:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            done = pool.map(lambda s: _build_speaker(s, root, out, sample_rate, seed, max_samples), group)
            return {s.name: e for s, e in zip(group, done)}

    processed = build([s for s in speakers if not s.shares_voices_with])
    excluded = {n: "no readable clip" for n, e in processed.items() if e["utterances"] == 0}
    splits = _split_speakers({n: e for n, e in processed.items() if n not in excluded}, seed)
    held = set(splits["valid"]) | set(splits["test"])
    pools = []
    for s in speakers:
        heard = sorted(held & set(s.shares_voices_with))
        if heard:
            excluded[s.name] = f"may share a voice with held-out {', '.join(heard)}"
            if (out / s.name).is_dir():
                shutil.rmtree(out / s.name)
        elif s.shares_voices_with:
            pools.append(s)
    pool_entries = build(pools)
    excluded.update({n: "no readable clip" for n, e in pool_entries.items() if e["utterances"] == 0})
    processed.update(pool_entries)
    skipped = {k: sum(e["skipped"][k] for e in processed.values()) for k in _SKIPS}
    entries = {n: e for n, e in processed.items() if n not in excluded}
    splits["train"] = sorted(n for n in entries if n not in held)
    for split, names in splits.items():
        for name in names:
            entries[name]["split"] = split
    hours = sum(e["minutes"] for e in entries.values()) / 60
    recipe = {
        "corpus": "real recorded speech from Debian packages",
        "source_root": str(root),
        "sample_rate": sample_rate,
        "seed": seed,
        "max_minutes_per_speaker": max_minutes_per_speaker,
        "utterance_seconds": list(_UTTERANCE_SECONDS),
        "pause_seconds": list(_PAUSE_SECONDS),
        "trim": {"top_db": _TRIM_TOP_DB, "floor_rms": _TRIM_FLOOR, "margin_seconds": _TRIM_MARGIN},
        "sex_rule": f"Asterisk folder name where it carries _f_/_m_, else median F0 (pYIN) below {_F0_MALE_BELOW:g} Hz male",
        "fillets_rule": "small and big fish are one speaker each per language; minor characters pooled per "
        "language for training only, and left out when a fish of that language is held out",
        "klettres_rule": "one folder per language; held out only when the handbook credits exactly one reader",
        "ktuberling_rule": "one folder per language, training only; left out when KLettres' reader of that "
        "language is held out; script variants (sr@latin, ...) skipped",
        "extra_sources": list(extras),
        **({"tuxpaint_rule": "one folder per language of the spoken stamp names (*_desc_<lang>.ogg), training "
            "only; left out when any held-out speaker speaks that language"} if "tuxpaint" in extras else {}),
        "held_out_quotas": HELD_OUT_QUOTAS,
        "splits": splits,
        "excluded": excluded,
        "skipped": skipped,
        "hours": round(hours, 4),
        "speakers": {n: entries[n] for n in sorted(entries)},
    }
    (out / "splits.json").write_text(json.dumps(splits, indent=1) + "\n")
    (out / "corpus.json").write_text(json.dumps(recipe, indent=1, ensure_ascii=False) + "\n")
    return RealSpeechCorpus(
        root=out, splits=splits, speakers=recipe["speakers"], skipped=skipped, excluded=excluded, hours=hours
    )
