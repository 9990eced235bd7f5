"""The audio domain's commands: ``embedseg separate``, ``embedseg data speech`` and
``embedseg data speech-real``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from embedseg.cli import count_argument, device_argument

__all__ = ["add_commands"]


def _check_out_folder(out: Path) -> None:
    """``--out`` must be a folder or not exist yet (under an existing folder, or a path of folders
    to create); checked before any work so a bad ``--out`` costs nothing and creates nothing."""
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"'--out' must be a folder or a path that does not exist yet. Got '{out}', an existing file.")
        return
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(
                    f"'--out' must be a folder or a path that does not exist yet. Got '{out}', but '{parent}' is a file."
                )
            return


def _check_inputs(paths: list[str]) -> None:
    """Every MIXTURE must be an existing audio file that libsndfile can open."""
    from embedseg.errors import require

    sf = require("soundfile", "audio")
    for path in paths:
        if not Path(path).is_file():
            what = "a folder" if Path(path).is_dir() else "no such file"
            raise FileNotFoundError(f"'MIXTURE' must be an audio file (wav, flac, ...). Got '{path}': {what}.")
        try:
            sf.info(str(path))
        except Exception as exc:  # libsndfile raises its own error type
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise ValueError(f"'MIXTURE' must be an audio file (wav, flac, ...). Could not read '{path}' as audio: {reason}") from exc


def _source_names(inputs: list[str]) -> list[Path]:
    """Where each input's sources go, relative to ``--out`` and without the ``_s<k>.wav``
    ending: its stem; when several inputs share a stem, its folder relative to the inputs'
    common folder, then its stem (a/mix.wav, b/mix.wav: a/mix, b/mix); and two inputs of one
    folder that differ only in their suffix (mix.wav, mix.flac) keep it (mix.flac)."""
    import os
    from collections import Counter

    stems = [Path(p).stem for p in inputs]
    # Compared without case: on case-insensitive file systems Mix_s1.wav is mix_s1.wav.
    if len({s.casefold() for s in stems}) == len(stems):
        return [Path(s) for s in stems]
    folders = [Path(os.path.abspath(p)).parent for p in inputs]
    common = os.path.commonpath(folders)
    names = [folder.relative_to(common) / stem for folder, stem in zip(folders, stems)]
    taken = Counter(str(n).casefold() for n in names)
    return [n.with_name(Path(p).name) if taken[str(n).casefold()] > 1 else n for n, p in zip(names, inputs)]


def _earlier_sources(plans: list[tuple[Path, str]]) -> list[list[Path]]:
    """The files ``<stem>_s<k>.wav`` already in each plan's folder, by ``k`` (each folder is
    listed once; a name counts when the file this command would write resolves to it, so
    case-insensitive file systems are served too)."""
    import os
    import re

    source = re.compile(r"(.+)_s([1-9][0-9]*)\.wav", re.IGNORECASE)
    numbers: dict[Path, dict[str, set[int]]] = {}
    found = []
    for folder, stem in plans:
        if folder not in numbers:
            numbers[folder] = {}
            for name in os.listdir(folder) if folder.is_dir() else ():
                if m := source.fullmatch(name):
                    numbers[folder].setdefault(m.group(1).casefold(), set()).add(int(m.group(2)))
        files = [folder / f"{stem}_s{k}.wav" for k in sorted(numbers[folder].get(stem.casefold(), ()))]
        found.append([f for f in files if os.path.lexists(f)])
    return found


def _plan_outputs(out: Path, inputs: list[str], overwrite: bool) -> tuple[list[tuple[Path, str]], list[list[Path]]]:
    """(folder, stem) of each input's sources and the source files already there, checked
    before any work: no input listed twice, no output folder that is a file, no output that is
    an input, and no existing output file unless ``overwrite``."""
    import os

    from embedseg.io import check_output_files

    first: dict[tuple[int, int], str] = {}
    for path in inputs:
        st = os.stat(path)
        if (st.st_dev, st.st_ino) in first:
            raise ValueError(f"'MIXTURE' must list each file once. Got '{first[st.st_dev, st.st_ino]}' and '{path}', the same file.")
        first[st.st_dev, st.st_ino] = path
    plans = [(out / name.parent, name.name) for name in _source_names(inputs)]
    for folder, _ in plans:
        rel = folder.relative_to(out)
        for where in (out / q for q in (rel, *rel.parents)):
            if where.exists() and not where.is_dir():
                raise ValueError(f"'--out' must leave room for the folder '{where}' of the sources. Got '{out}', in which '{where}' is a file.")
    earlier = _earlier_sources(plans)
    # An input in the folder its own or another input's sources go to, named like one of them,
    # is among these: refused whatever --overwrite says.
    check_output_files(
        [("--out", p) for found in earlier for p in found], [("input", p) for p in inputs],
        overwrite=overwrite, how_to_overwrite="pass --overwrite",
    )
    return plans, earlier


def _cmd_separate(args: argparse.Namespace) -> int:
    import sys

    import embedseg
    from embedseg.io import check_output_files

    from .audio_io import load_audio, save_audio

    out = Path(args.out)
    _check_out_folder(out)
    _check_inputs(args.inputs)
    plans, earlier = _plan_outputs(out, args.inputs, args.overwrite)
    model = embedseg.load(args.model, device=args.device)
    if not callable(getattr(model, "separate", None)):
        raise ValueError(f"'MODEL' must be an audio model. Got '{args.model}', a model of the {model.domain.name!r} domain.")
    for path, (folder, stem), found in zip(args.inputs, plans, earlier):
        wave, rate = load_audio(path)
        sources = model.separate(wave, n_sources=args.n_sources, sample_rate=rate)  # (k, time)
        files = [folder / f"{stem}_s{i + 1}.wav" for i in range(sources.shape[0])]
        # Again just before writing: a file may have appeared while the model ran.
        check_output_files([("--out", f) for f in files], overwrite=args.overwrite, how_to_overwrite="pass --overwrite")
        folder.mkdir(parents=True, exist_ok=True)  # only now that there is something to write
        for file, source in zip(files, sources):
            save_audio(file, source, rate)
        print(f"{path}: {len(files)} sources -> {folder / stem}_s*.wav")
        left = [p for p in found if p not in files]
        if left:  # never deleted: they may be all that is left of an earlier run's work
            print(f"embedseg: note: '{path}' gave {len(files)} sources; files of an earlier run "
                  f"beyond them were kept: {', '.join(repr(str(p)) for p in left)}", file=sys.stderr)
    return 0


def _cmd_data_speech(args: argparse.Namespace) -> int:
    from .corpus import VOICE_SETS, build_speech_corpus

    voices = None
    if args.voices:
        voices = args.voices if args.voices in VOICE_SETS else args.voices.split(",")
    root = build_speech_corpus(
        args.out, voices=voices, n_sentences=args.n_sentences, sample_rate=args.sample_rate,
        seed=args.seed, workers=args.workers, overwrite=args.overwrite,
    )
    n = sum(1 for _ in root.glob("*/*.wav"))
    print(f"speech corpus: {n} utterances in {root} (splits in {root / 'splits.json'})")
    return 0


def _cmd_data_speech_real(args: argparse.Namespace) -> int:
    import time

    from .corpus_real import build_real_speech_corpus

    _check_out_folder(Path(args.out))
    start = time.perf_counter()
    corpus = build_real_speech_corpus(
        args.out, sample_rate=args.sample_rate, seed=args.seed,
        max_minutes_per_speaker=args.max_minutes_per_speaker, workers=args.workers, source_root=args.source_root,
        extra_sources=tuple(x.strip() for x in args.extra_sources.split(",") if x.strip()),
    )
    counts = ", ".join(f"{k} {len(v)}" for k, v in corpus.splits.items())
    skipped = ", ".join(f"{k} {v}" for k, v in corpus.skipped.items())
    print(f"real speech corpus: {corpus.hours:.2f} h, {len(corpus.speakers)} speakers ({counts}) in {corpus.root} "
          f"(splits in {corpus.root / 'splits.json'}, recipe in {corpus.root / 'corpus.json'}); "
          f"clips skipped: {skipped}; {time.perf_counter() - start:.0f} s")
    return 0


def _subparsers_of(parser: argparse.ArgumentParser) -> Any:
    for action in parser._actions:  # argparse keeps no public handle on a parser's subcommands
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest="data_command", metavar="CORPUS")


def add_commands(subparsers: Any) -> None:
    """Register the audio commands on ``embedseg``'s subcommand parser."""
    p = subparsers.add_parser(
        "separate", help="separate speech mixtures with an audio model",
        description="Separate each MIXTURE into sources written as DIR/<name>_s1.wav, _s2.wav, ... "
        "When several inputs share a name (a/mix.wav b/mix.wav), each keeps its folder relative to "
        "the inputs' common folder: DIR/a/mix_s1.wav, DIR/b/mix_s1.wav (and mix.wav mix.flac in one "
        "folder give mix.wav_s1.wav, mix.flac_s1.wav). Everything is checked before the model runs: "
        "no output replaces an input, and existing output files are replaced only with --overwrite.",
    )
    p.add_argument("model", metavar="MODEL", help="model folder (e.g. pretrained/audio-speech-8k)")
    p.add_argument("inputs", metavar="MIXTURE", nargs="+", help="audio files (wav, flac, ...)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace existing <name>_s<k>.wav files (never an input)")
    p.add_argument("--n-sources", type=count_argument(1, ("auto",)), default="auto", metavar="K|auto", help="sources per mixture (default: auto)")
    p.add_argument("--device", type=device_argument, default="cpu", help="cpu, cuda, cuda:N or auto")
    p.set_defaults(func=_cmd_separate)

    data = subparsers.choices.get("data") if hasattr(subparsers, "choices") else None
    if data is None:
        data = subparsers.add_parser("data", help="build built-in datasets")
    sub = _subparsers_of(data)
    q = sub.add_parser(
        "speech", help="synthesize the multi-voice speech corpus (needs scripts/install_speech_voices.sh)",
        description="27 synthetic voices (57 with --voices all) reading WordNet sentences, in root/<voice>/*.wav "
        "with a fixed train/valid/test split.",
    )
    q.add_argument("--out", required=True, metavar="DIR")
    q.add_argument("--n-sentences", type=int, default=50, help="sentences per voice (default 50)")
    q.add_argument("--voices", default=None, help="comma-separated voice names, or 'standard' (the default: the 27 "
                   "voices of the fixed split) or 'all' (57: 30 more MBROLA voices for training, after "
                   "scripts/install_speech_voices.sh --extended)")
    q.add_argument("--sample-rate", type=int, default=8000)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--workers", type=int, default=2)
    q.add_argument("--overwrite", action="store_true")
    q.set_defaults(func=_cmd_data_speech)
    r = sub.add_parser(
        "speech-real", help="gather real recorded speech from Debian packages (needs scripts/install_speech_real.sh)",
        description="Asterisk's voice prompts, Fish Fillets NG's Czech and Dutch dialogues and KLettres' letters "
        "in 20 languages, joined into utterances of 3 to 8 s in root/<speaker>/*.wav, whole speakers held out "
        "for validation and test (splits.json), the recipe in corpus.json.",
    )
    r.add_argument("--out", required=True, metavar="DIR")
    r.add_argument("--sample-rate", type=int, default=8000)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--max-minutes-per-speaker", type=float, default=None, metavar="M", help="read at most M minutes of each speaker (default: all)")
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--source-root", default="/", metavar="DIR", help="the folder holding the packages' usr/share (default /)")
    r.add_argument("--extra-sources", default="", metavar="NAMES",
                   help="comma-separated opt-in sources of more training speakers: tuxpaint (Tux Paint's spoken stamp "
                   "names; scripts/install_speech_real.sh --tuxpaint installs them)")
    r.set_defaults(func=_cmd_data_speech_real)
