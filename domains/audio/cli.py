"""The audio domain's commands: ``embedseg separate`` and ``embedseg data speech``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from embedseg.cli import count_argument

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


def _cmd_separate(args: argparse.Namespace) -> int:
    import embedseg

    from .audio_io import load_audio, save_audio

    out = Path(args.out)
    _check_out_folder(out)
    _check_inputs(args.inputs)
    model = embedseg.load(args.model, device=args.device)
    if not hasattr(model.domain, "separate"):
        raise ValueError(f"'MODEL' must be an audio model. Got '{args.model}', a model of the {model.domain.name!r} domain.")
    for path in args.inputs:
        wave, rate = load_audio(path)
        sources = model.separate(wave, n_sources=args.n_sources, sample_rate=rate)  # (k, time)
        stem = Path(path).stem
        out.mkdir(parents=True, exist_ok=True)  # only now that there is something to write
        for i, s in enumerate(sources):
            save_audio(out / f"{stem}_s{i + 1}.wav", s, rate)
        print(f"{path}: {sources.shape[0]} sources -> {out}/{stem}_s*.wav")
    return 0


def _cmd_data_speech(args: argparse.Namespace) -> int:
    from .corpus import build_speech_corpus

    voices = args.voices.split(",") if args.voices else None
    root = build_speech_corpus(
        args.out, voices=voices, n_sentences=args.n_sentences, sample_rate=args.sample_rate,
        seed=args.seed, workers=args.workers, overwrite=args.overwrite,
    )
    n = sum(1 for _ in root.glob("*/*.wav"))
    print(f"speech corpus: {n} utterances in {root} (splits in {root / 'splits.json'})")
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
        description="Separate each input file into sources written as DIR/<name>_s1.wav, _s2.wav, ...",
    )
    p.add_argument("model", metavar="MODEL", help="model folder (e.g. pretrained/audio-speech-8k)")
    p.add_argument("inputs", metavar="MIXTURE", nargs="+", help="audio files (wav, flac, ...)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--n-sources", type=count_argument(1, ("auto",)), default="auto", metavar="K|auto", help="sources per mixture (default: auto)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    p.set_defaults(func=_cmd_separate)

    data = subparsers.choices.get("data") if hasattr(subparsers, "choices") else None
    if data is None:
        data = subparsers.add_parser("data", help="build built-in datasets")
    sub = _subparsers_of(data)
    q = sub.add_parser(
        "speech", help="synthesize the multi-voice speech corpus (needs scripts/install_speech_voices.sh)",
        description="27 synthetic voices reading WordNet sentences, in root/<voice>/*.wav with a fixed train/valid/test split.",
    )
    q.add_argument("--out", required=True, metavar="DIR")
    q.add_argument("--n-sentences", type=int, default=50, help="sentences per voice (default 50)")
    q.add_argument("--voices", default=None, help="comma-separated voice names (default: all 27)")
    q.add_argument("--sample-rate", type=int, default=8000)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--workers", type=int, default=2)
    q.add_argument("--overwrite", action="store_true")
    q.set_defaults(func=_cmd_data_speech)
