"""A built-in multi-voice speech corpus, synthesized from Debian packages only.

Twenty-seven voices (the standard set) read English sentences: espeak-ng driving 20 MBROLA
diphone voices of real speakers, flite's four voices and three festival diphone voices; the
extended set adds 30 more MBROLA voices (``voices="all"``, installed by
``scripts/install_speech_voices.sh --extended``), for training only. The text is WordNet's
usage examples (about 21,000 clean sentences of 6 to 14 words). Pitch and rate vary per
utterance and each utterance gets random leading and trailing silence. Everything is
deterministic given the seed. ``scripts/install_speech_voices.sh`` installs the packages (as
root, with apt); nothing else is downloaded.

The layout is the one :class:`~domains.audio.MixtureDataset` reads::

    out/<voice>/<voice>_<nnn>.wav     16-bit mono at ``sample_rate``
    out/<voice>/transcripts.txt       "<file stem>\\t<sentence>" per line
    out/splits.json                   {"train": [...], "valid": [...], "test": [...]}
    out/corpus.json                   the recipe (voices, sentences, seed, rate)

Synthetic voices are harder to separate than real speech in one respect (the oracle ideal
binary mask reaches about 9.8 dB SDR improvement on these mixtures against about 13.5 dB on
wsj0-2mix) and easier in another (few voices), so always report a model next to the oracle.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from embedseg._validation import check_int
from embedseg.errors import EmbedsegError

from .audio_io import load_audio, resample, save_audio

__all__ = [
    "VOICES",
    "VOICE_SETS",
    "SPLITS",
    "Voice",
    "available_voices",
    "missing_speech_tools",
    "wordnet_sentences",
    "build_speech_corpus",
]


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker.

    Attributes:
        name: the folder name in the corpus (the speaker id).
        engine: "espeak-mbrola", "flite" or "festival".
        voice: the engine's own voice name.
        description: language of the diphone database and sex, for the docs.
    """

    name: str
    engine: str
    voice: str
    description: str


_MBROLA = {
    "us1": "American English, female", "us2": "American English, male", "us3": "American English, male",
    "en1": "British English, male", "af1": "Afrikaans, male", "de1": "German, female",
    "de2": "German, male", "de3": "German, female", "de4": "German, male", "de5": "German, female",
    "de6": "German, male", "fr1": "French, male", "fr4": "French, female", "gr2": "Greek, male",
    "hu1": "Hungarian, female", "nl2": "Dutch, male", "pl1": "Polish, female", "ro1": "Romanian, male",
    "sw1": "Swedish, male", "sw2": "Swedish, female",
}

# More MBROLA voices, each the diphones of one more real speaker: the voices of Debian's
# mbrola-* packages that espeak-ng drives and that read English text with at most about one
# diphone in ten missing from their database (replaced by a short silence). Left out: ar1-2,
# cz1, de8, es1-4, hb1-2, in1-2, jp1-3, ma1, mx1-2, nl1, nz1, tl1, vz1 (more missing diphones),
# bz1, cn1, hn1 (no espeak-ng voice).
_MBROLA_EXTENDED = {
    "br1": "Brazilian Portuguese, male", "br2": "Brazilian Portuguese, female",
    "br3": "Brazilian Portuguese, male", "br4": "Brazilian Portuguese, female",
    "ca1": "Canadian French, male", "ca2": "Canadian French, male", "cr1": "Croatian, male",
    "cz2": "Czech, male", "de7": "German, female", "ee1": "Estonian, male", "fr2": "French, female",
    "fr3": "French, male", "fr5": "Belgian French, male", "fr6": "French, male",
    "fr7": "Belgian French, male", "gr1": "Greek, male", "ic1": "Icelandic, male",
    "id1": "Indonesian, male", "ir1": "Farsi, male", "it1": "Italian, male", "it2": "Italian, female",
    "it3": "Italian, male", "it4": "Italian, female", "la1": "Latin, male", "lt1": "Lithuanian, male",
    "lt2": "Lithuanian, male", "nl3": "Dutch, female", "pt1": "European Portuguese, female",
    "tr1": "Turkish, male", "tr2": "Turkish, female",
}


def _mbrola_voice(code: str, description: str) -> Voice:
    return Voice(f"mb-{code}", "espeak-mbrola", f"mb-{code}", f"MBROLA {code}: {description}")


#: All built-in voices, in a fixed order (a voice's place seeds its choices and picks its
#: sentences, so voices are only ever added at the end).
VOICES: dict[str, Voice] = {
    **{f"mb-{k}": _mbrola_voice(k, d) for k, d in _MBROLA.items()},
    "flite-kal": Voice("flite-kal", "flite", "kal", "flite kal: American English, male"),
    "flite-awb": Voice("flite-awb", "flite", "awb", "flite awb: Scottish English, male"),
    "flite-rms": Voice("flite-rms", "flite", "rms", "flite rms: American English, male"),
    "flite-slt": Voice("flite-slt", "flite", "slt", "flite slt: American English, female"),
    "fest-ked": Voice("fest-ked", "festival", "ked_diphone", "festival ked: American English, male"),
    "fest-rab": Voice("fest-rab", "festival", "rab_diphone", "festival rab: British English, male"),
    "fest-don": Voice("fest-don", "festival", "don_diphone", "festival don: British English, male"),
    **{f"mb-{k}": _mbrola_voice(k, d) for k, d in _MBROLA_EXTENDED.items()},
}

_EXTENDED = {f"mb-{k}" for k in _MBROLA_EXTENDED}  # their names in VOICES

#: Named sets of voices: "standard", the 27 of every corpus this project has built (the default),
#: and "all", which adds the 30 extended MBROLA voices as more training voices.
VOICE_SETS: dict[str, list[str]] = {
    "standard": [n for n in VOICES if n not in _EXTENDED],
    "all": list(VOICES),
}

#: The fixed split of the voices. Test and validation voices are never heard in training and
#: mix all three synthesizers and both sexes.
SPLITS: dict[str, list[str]] = {
    "test": ["mb-us3", "mb-de5", "mb-hu1", "flite-awb", "fest-rab"],
    "valid": ["mb-de3", "mb-sw1", "flite-kal"],
    "train": [
        "mb-us1", "mb-us2", "mb-en1", "mb-af1", "mb-de1", "mb-de2", "mb-de4", "mb-de6", "mb-fr1",
        "mb-fr4", "mb-gr2", "mb-nl2", "mb-pl1", "mb-ro1", "mb-sw2", "flite-rms", "flite-slt",
        "fest-ked", "fest-don", *(n for n in VOICES if n in _EXTENDED),
    ],
}

_TOOLS = {"espeak-mbrola": "espeak-ng", "flite": "flite", "festival": "festival"}
_WORDNET_DIRS = ("/usr/share/wordnet", "/usr/share/wordnet/dict")
_INSTALL_HINT = "run scripts/install_speech_voices.sh as root (it installs them with apt)"


def _mbrola_installed(voice: str) -> bool:
    code = voice.split("-", 1)[1]
    return any(Path(d, code).exists() for d in ("/usr/share/mbrola", "/usr/share/mbrola/voices"))


def _festival_installed(voice: str) -> bool:
    base = voice.replace("_diphone", "")
    return any(Path("/usr/share/festival/voices/english").glob(f"{base}_diphone*"))


def available_voices() -> list[str]:
    """Names of the built-in voices whose synthesizer and voice data are installed."""
    out = []
    for name, v in VOICES.items():
        if shutil.which(_TOOLS[v.engine]) is None:
            continue
        if v.engine == "espeak-mbrola" and not _mbrola_installed(v.voice):
            continue
        if v.engine == "festival" and not _festival_installed(v.voice):
            continue
        out.append(name)
    return out


def missing_speech_tools(voices: Iterable[str] | str | None = None) -> list[str]:
    """What is missing to build a corpus of ``voices`` (programs, voices, WordNet); empty when ready.

    Args:
        voices: as in :func:`build_speech_corpus`: names, a set's name ("standard", "all") or
            None for the standard set, the one ``scripts/install_speech_voices.sh`` installs
            without ``--extended``.
    """
    names = _voice_names(voices, "missing_speech_tools")
    missing = [tool for tool in ("espeak-ng", "flite", "festival") if shutil.which(tool) is None]
    have = set(available_voices())
    missing += [f"voice {n}" for n in names if n not in have and _TOOLS[VOICES[n].engine] not in missing]
    if not any(Path(d, "data.noun").is_file() for d in _WORDNET_DIRS):
        missing.append("wordnet-base")
    return missing


_CLEAN = re.compile(r"^[A-Za-z][A-Za-z ,'-]*$")


def wordnet_sentences(min_words: int = 6, max_words: int = 14, wordnet_dir: str | None = None) -> list[str]:
    """WordNet's usage examples that read as plain sentences, sorted and without duplicates.

    Args:
        min_words: fewest words kept.
        max_words: most words kept.
        wordnet_dir: the folder of WordNet's ``data.*`` files; found automatically when None.

    Returns:
        sentences, first letter capitalized and a final period added.

    Raises:
        EmbedsegError: WordNet is not installed.
    """
    dirs = [wordnet_dir] if wordnet_dir else list(_WORDNET_DIRS)
    root = next((Path(d) for d in dirs if Path(d, "data.noun").is_file()), None)
    if root is None:
        raise EmbedsegError(f"WordNet's data files were not found in {dirs}; {_INSTALL_HINT}.")
    quoted = re.compile(r'"([^"]+)"')
    seen: set[str] = set()
    for part in ("adj", "adv", "noun", "verb"):
        path = root / f"data.{part}"
        if not path.is_file():
            continue
        with open(path, encoding="latin-1") as fh:
            for line in fh:
                if line.startswith("  "):  # the license header
                    continue
                for text in quoted.findall(line):
                    text = " ".join(text.split()).strip(" ,;")
                    if not _CLEAN.match(text) or "--" in text:
                        continue
                    n = len(text.split())
                    if min_words <= n <= max_words:
                        seen.add(text[0].upper() + text[1:] + ".")
    return sorted(seen)


def _run(cmd: Sequence[str], stdin: str | None = None) -> None:
    res = subprocess.run(list(cmd), input=stdin, capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        raise EmbedsegError(f"Speech synthesis failed: {' '.join(cmd)!r} exited with {res.returncode}: {res.stderr.strip()[:300]}")


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _synthesize_voice(voice: Voice, jobs: list[dict], tmp: Path) -> list[Path]:
    """Raw synthesizer output for every job of one voice (festival runs once per voice)."""
    paths = []
    if voice.engine == "festival":
        script = [f"(voice_{voice.voice})"]
        for j in jobs:
            p = tmp / f"{j['stem']}.raw.wav"
            script.append(f"(Parameter.set 'Duration_Stretch {j['stretch']:.3f})")
            script.append(f"(utt.save.wave (utt.synth (Utterance Text {_scheme_string(j['text'])})) {_scheme_string(str(p))} 'riff)")
            paths.append(p)
        scm = tmp / f"{voice.name}.scm"
        scm.write_text("\n".join(script) + "\n")
        _run(["festival", "-b", str(scm)])
        return paths
    for j in jobs:
        p = tmp / f"{j['stem']}.raw.wav"
        if voice.engine == "espeak-mbrola":
            _run(["espeak-ng", "-v", voice.voice, "-p", str(j["pitch"]), "-s", str(j["wpm"]), "-w", str(p), j["text"]])
        else:
            _run(["flite", "-voice", voice.voice, "--setf", f"duration_stretch={j['stretch']:.3f}", "-t", j["text"], "-o", str(p)])
        paths.append(p)
    return paths


def _finish(raw: Path, job: dict, sample_rate: int, out: Path) -> None:
    wave, rate = load_audio(raw)
    # A pitch-and-tempo change by reinterpreting the rate (engines without a pitch control).
    rate_in = int(round(rate * job["speed"] / 80.0)) * 80
    wave = resample(wave, rate_in, sample_rate)
    peak = float(wave.abs().max())
    if peak <= 0:
        raise EmbedsegError(f"The synthesizer produced silence for {job['stem']!r}: {job['text']!r}.")
    wave = 0.5 * wave / peak
    lead = torch.zeros(int(job["lead"] * sample_rate))
    trail = torch.zeros(int(job["trail"] * sample_rate))
    save_audio(out, torch.cat([lead, wave, trail]), sample_rate)


def _voice_names(voices: Iterable[str] | str | None, owner: str = "build_speech_corpus") -> list[str]:
    """The voice names that ``voices`` (names, a set's name or None) stands for, checked; errors
    name ``owner``'s parameter."""
    if voices is None:
        return list(VOICE_SETS["standard"])
    if isinstance(voices, str):
        if voices not in VOICE_SETS:
            raise ValueError(
                f"The 'voices' parameter of {owner} must be a list of voice names or a set's "
                f"name ({', '.join(map(repr, VOICE_SETS))}). Got {voices!r} instead."
            )
        return list(VOICE_SETS[voices])
    names = list(voices)
    unknown = [n for n in names if n not in VOICES]
    if unknown:
        raise ValueError(f"The 'voices' parameter of {owner} must name built-in voices ({', '.join(VOICES)}). Got unknown {unknown}.")
    if not names:
        raise ValueError(f"The 'voices' parameter of {owner} must name at least one voice. Got none.")
    return names


def build_speech_corpus(
    out_dir: str | os.PathLike,
    *,
    voices: Iterable[str] | str | None = None,
    n_sentences: int = 50,
    sample_rate: int = 8000,
    seed: int = 0,
    workers: int = 2,
    overwrite: bool = False,
) -> Path:
    """Synthesize the built-in speech corpus (see the module docstring for the layout).

    Each voice reads its own ``n_sentences`` WordNet sentences (no sentence is read by two
    voices), with pitch and rate drawn per utterance and 50 to 400 ms of silence before and
    after. A voice folder that is already complete is kept unless ``overwrite``.

    Args:
        out_dir: the corpus folder.
        voices: names from :data:`VOICES`, or the name of a set in :data:`VOICE_SETS`
            ("standard": the 27 voices with the fixed validation and test split, "all": 57,
            the 30 extended MBROLA voices as more training voices); None means "standard".
        n_sentences: sentences per voice.
        sample_rate: output rate in Hz.
        seed: the seed of every random choice.
        workers: parallel synthesizer processes.
        overwrite: rebuild voice folders that already exist.

    Returns:
        the corpus folder.

    Raises:
        ValueError: unknown voice names.
        EmbedsegError: a synthesizer, a voice or WordNet is missing (the message says how to
            install them).

    Example:
        >>> build_speech_corpus("data/speech", voices=["mb-us1", "flite-slt"], n_sentences=5)  # doctest: +SKIP
    """
    n_sentences = check_int(n_sentences, "n_sentences", "build_speech_corpus", 1)
    sample_rate = check_int(sample_rate, "sample_rate", "build_speech_corpus", 4000)
    workers = check_int(workers, "workers", "build_speech_corpus", 1)
    names = _voice_names(voices)
    have = set(available_voices())
    absent = [n for n in names if n not in have]
    if absent:
        hint = _INSTALL_HINT
        if _EXTENDED.intersection(absent):
            hint = hint.replace(".sh as root", ".sh --extended as root")
        raise EmbedsegError(f"These voices are not installed: {absent}; {hint}.")
    sentences = wordnet_sentences()
    order = list(VOICES)
    # Voice k reads sentences [k n, (k + 1) n) of one shuffle, so the last voice asked for bounds n.
    slots = 1 + max(order.index(n) for n in names)
    if slots * n_sentences > len(sentences):
        raise ValueError(
            f"The 'n_sentences' parameter of build_speech_corpus must be at most {len(sentences) // slots} "
            f"(distinct sentences per voice for these voices). Got {n_sentences} instead."
        )
    shuffled = np.random.default_rng(seed).permutation(len(sentences))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    plans: list[tuple[Voice, list[dict]]] = []
    for name in names:
        k = order.index(name)
        rng = np.random.default_rng([seed, k])
        picks = shuffled[k * n_sentences : (k + 1) * n_sentences]
        jobs = []
        for i, s in enumerate(picks):
            jobs.append({
                "stem": f"{name}_{i:03d}",
                "text": sentences[int(s)],
                "pitch": int(rng.integers(30, 71)),  # espeak-ng pitch, 0-99 (default 50)
                "wpm": int(rng.integers(140, 196)),  # espeak-ng words per minute (default 175)
                "stretch": float(rng.uniform(0.88, 1.15)),  # flite / festival duration factor
                # flite and festival have no simple pitch control: shift pitch and tempo together
                "speed": float(rng.uniform(0.92, 1.08)) if VOICES[name].engine != "espeak-mbrola" else 1.0,
                "lead": float(rng.uniform(0.05, 0.4)),  # seconds of silence before
                "trail": float(rng.uniform(0.05, 0.4)),  # and after
            })
        folder = out / name
        done = folder.is_dir() and len(list(folder.glob("*.wav"))) == n_sentences and (folder / "transcripts.txt").is_file()
        if done and not overwrite:
            continue
        plans.append((VOICES[name], jobs))

    def work(plan: tuple[Voice, list[dict]]) -> None:
        voice, jobs = plan
        folder = out / voice.name
        if folder.exists():
            shutil.rmtree(folder)
        with tempfile.TemporaryDirectory(prefix=f"embedseg-{voice.name}-") as tmp:
            raws = _synthesize_voice(voice, jobs, Path(tmp))
            staging = Path(tmp) / "out"
            for raw, job in zip(raws, jobs):
                _finish(raw, job, sample_rate, staging / f"{job['stem']}.wav")
            (staging / "transcripts.txt").write_text("".join(f"{j['stem']}\t{j['text']}\n" for j in jobs))
            shutil.move(str(staging), str(folder))  # the folder appears complete or not at all

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(work, plans):
            pass

    splits = {k: [v for v in vs if v in names] for k, vs in SPLITS.items()}
    (out / "splits.json").write_text(json.dumps(splits, indent=1) + "\n")
    recipe = {
        "voices": {n: VOICES[n].description for n in names},
        "n_sentences": n_sentences,
        "sample_rate": sample_rate,
        "seed": seed,
        "text": "WordNet 3.0 usage examples, 6 to 14 words",
    }
    (out / "corpus.json").write_text(json.dumps(recipe, indent=1) + "\n")
    return out
