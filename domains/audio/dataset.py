"""Speech mixtures made on the fly from a folder of speakers, wsj0-2mix style."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from embedseg._validation import check_choice, check_float, check_int
from embedseg.errors import require

from .audio_io import load_audio, resample_span, resampled_length
from .augment import ChannelAugmentation, _active_rms
from .features import check_snr_range
from .voice import shift_formants

__all__ = ["MixedCorpusDataset", "MixtureDataset"]

_EXTENSIONS = (".wav", ".flac")
# Speed factors are rounded to multiples of 1/_SPEED_STEPS so that the polyphase resampler
# works with small up/down ratios (40 -> 44 for 1.1x) instead of co-prime rates.
_SPEED_STEPS = 40


class MixtureDataset(Dataset):
    """Mixtures of utterances by different speakers, built on the fly from ``root/<speaker>/``.

    Works for any corpus in that layout (the built-in speech corpus, wsj0, LibriSpeech with
    its chapter folders: files are found recursively under each speaker's folder). Item ``i``
    is the same every time for a given seed, so validation and test sets are fixed.

    For each mixture: ``n_sources`` different speakers and one utterance each are drawn; each
    utterance is scaled to unit active RMS; source k (k >= 1) gets a level relative to the
    first drawn uniformly from ``snr_range`` dB (split symmetrically, as in wsj0-2mix); the
    sum is scaled to a peak of 0.9 when it would exceed it.

    Args:
        root: the corpus folder, one subfolder per speaker.
        n_sources: speakers per mixture, or a sequence of counts to draw from per item.
        sample_rate: rate of the returned signals (files are resampled when needed).
        segment_seconds: mixture length; longer utterances are cropped at a random offset,
            shorter ones placed at a random offset in silence. None = the shortest drawn
            utterance's length (wsj0-2mix "min" mode).
        snr_range: (low, high) relative level of the sources in dB.
        seed: the seed of every random choice.
        n_mixtures: number of items.
        speakers: the speaker folders to use; None = all, or those of ``split``.
        split: "train", "valid" or "test" to read the speaker list from ``root/splits.json``.
        speed_range: (low, high) speed perturbation for training sets, or None (off): each
            utterance is played faster or slower by a factor drawn uniformly from the range
            (rounded to steps of 0.025), which shifts its pitch and formants together, as the
            speed perturbation of Kaldi and ESPnet recipes; a corpus with few speakers then
            shows the network many more distinct voices. (0.9, 1.1) is a common choice.
        augment: a :class:`~domains.audio.augment.ChannelAugmentation` (True: its defaults)
            for training sets, or None (off): each source goes through a random channel of its
            own (room, equalization, band, hiss and hum, clipping, codec) after the relative
            levels are set; the targets are the sources as they sound in the mixture, the
            mixture their sum. Drawn from a generator of its own, so that the utterances,
            offsets and levels are those of the same dataset without it.
        formant_range: (low, high) formant shift factors for training sets, or None (off):
            each talker's formants are moved by a factor drawn uniformly from the range, their
            pitch and timing kept (:func:`~domains.audio.voice.shift_formants`); with speed
            perturbation, which moves both, each speaker stands for many vocal tracts and
            pitches. (0.9, 1.1) is a moderate choice. Drawn from a generator of its own, as
            the channel is.
        fill_pauses: (low, high) seconds, or None (off): a drawn utterance shorter than the
            segment is followed by more of the same speaker's utterances, each after a pause
            drawn from the range, until the segment is full, and the segment is cut from that
            stream at a random offset (all at the first utterance's speed). Each voice then
            stops and comes back within a segment, as in a conversation, so that the network
            learns to keep a voice on its output across its pauses. None: a shorter utterance
            is placed at a random offset in silence. Mixtures as long as their shortest
            utterance (``segment_seconds=None``) need no filling and ignore it.
        speaker_weighting: how often each speaker is drawn: in proportion to the seconds of
            audio in the speaker's folder raised to this power. 0 (the default): every speaker
            equally often. 1: every second of audio equally often, so that a speaker with a few
            seconds of speech (a corpus of short clips) is not replayed over and over, which
            teaches the network those clips rather than voices; 0.5 lies in between. The
            seconds are read from the files' headers once, when the dataset is made.

    Items are dicts: "mixture" (time,) float32, "sources" (n_sources, time) float32,
    "speakers" (list of str), "index" (int).

    Example:
        >>> ds = MixtureDataset("data/speech", split="test", n_mixtures=100)  # doctest: +SKIP
        >>> ds[0]["sources"].shape  # doctest: +SKIP
        torch.Size([2, 32000])
    """

    def __init__(
        self,
        root: str | os.PathLike,
        n_sources: int | Sequence[int] = 2,
        sample_rate: int = 8000,
        segment_seconds: float | None = 4.0,
        snr_range: tuple[float, float] = (0, 5),
        seed: int = 0,
        *,
        n_mixtures: int = 1000,
        speakers: Sequence[str] | None = None,
        split: str | None = None,
        speed_range: tuple[float, float] | None = None,
        augment: ChannelAugmentation | bool | None = None,
        fill_pauses: tuple[float, float] | None = None,
        formant_range: tuple[float, float] | None = None,
        speaker_weighting: float = 0.0,
    ) -> None:
        owner = "MixtureDataset"
        self.root = Path(root)
        self.n_sources = n_sources
        self.sample_rate = sample_rate
        self.segment_seconds = segment_seconds
        self.snr_range = snr_range
        self.seed = seed
        self.n_mixtures = n_mixtures
        self.speakers = speakers
        self.split = split
        self.speed_range = speed_range
        self.augment = augment
        self.fill_pauses = fill_pauses
        self.formant_range = formant_range
        self.speaker_weighting = speaker_weighting
        counts = [n_sources] if isinstance(n_sources, int) else list(n_sources)
        if not counts:
            raise ValueError(f"The 'n_sources' parameter of {owner} must be an int >= 1 or a non-empty sequence of them. Got {n_sources!r} instead.")
        self._counts = [check_int(c, "n_sources", owner, 1) for c in counts]
        check_int(sample_rate, "sample_rate", owner, 1000)
        if segment_seconds is not None:
            check_float(segment_seconds, "segment_seconds", owner, 0, None, closed="neither")
        self._snr = check_snr_range(snr_range, "snr_range", owner)
        check_int(seed, "seed", owner, 0)
        check_int(n_mixtures, "n_mixtures", owner, 1)
        self._speed = None if speed_range is None else _check_range(
            speed_range, "speed_range", owner, (0.5, 2.0), "speed factors such as (0.9, 1.1)")
        self._augment = _check_augment(augment, owner)
        self._fill = None if fill_pauses is None else _check_range(
            fill_pauses, "fill_pauses", owner, (0.0, 10.0), "pause lengths in seconds such as (0.2, 1.0)")
        self._formant = None if formant_range is None else _check_range(
            formant_range, "formant_range", owner, (0.7, 1.4))
        check_float(speaker_weighting, "speaker_weighting", owner, 0.0, 2.0)
        if not self.root.is_dir():
            raise FileNotFoundError(f"The 'root' folder of {owner} does not exist: '{self.root}'.")
        if split is not None:
            check_choice(split, "split", owner, ("train", "valid", "test"))
            if speakers is not None:
                raise ValueError(f"Give either 'speakers' or 'split' to {owner}, not both.")
            split_file = self.root / "splits.json"
            if not split_file.is_file():
                raise FileNotFoundError(f"'split' needs '{split_file}' listing the speakers of each split.")
            names = json.loads(split_file.read_text())[split]
        elif speakers is not None:
            names = list(speakers)
        else:
            names = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        self._files: list[list[Path]] = []
        self._speakers: list[str] = []
        for name in names:
            folder = self.root / name
            if not folder.is_dir():
                raise FileNotFoundError(f"Speaker folder '{folder}' does not exist.")
            files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in _EXTENSIONS)
            if files:
                self._speakers.append(name)
                self._files.append(files)
        if len(self._speakers) < max(self._counts):
            raise ValueError(
                f"{owner} needs at least {max(self._counts)} speakers with audio files (*.wav, *.flac) "
                f"under '{self.root}' to mix different speakers. Got {len(self._speakers)}: {self._speakers}."
            )
        # None keeps the uniform draw exactly as it always was (the same items for a seed)
        self._speaker_p: np.ndarray | None = None
        if speaker_weighting > 0:
            seconds = np.array([sum(_seconds_of(f) for f in files) for files in self._files])
            weights = np.maximum(seconds, 1e-3) ** float(speaker_weighting)
            self._speaker_p = weights / weights.sum()

    @property
    def speaker_names(self) -> list[str]:
        """The speakers mixtures are drawn from."""
        return list(self._speakers)

    def __len__(self) -> int:
        return self.n_mixtures

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.n_mixtures:
            raise IndexError(f"MixtureDataset index {index} out of range [0, {self.n_mixtures}).")
        rng = np.random.default_rng([self.seed, int(index)])
        count = self._counts[int(rng.integers(len(self._counts)))]
        files, names = self._draw_speakers(rng, count)
        return self._render(rng, files, names, self.seed, int(index))

    def _draw_speakers(self, rng: np.random.Generator, count: int) -> tuple[list[list[Path]], list[str]]:
        """``count`` different speakers (their files and names), drawn as ``speaker_weighting`` says."""
        who = rng.choice(len(self._speakers), size=count, replace=False, p=self._speaker_p)
        return [self._files[int(s)] for s in who], [self._speakers[int(s)] for s in who]

    def _stream(self, rng: np.random.Generator, speaker_files: list[Path], first: Any, steps: int | None, length: int) -> "_Samples":
        """``first`` followed by more of the speaker's utterances, each after a pause from
        ``fill_pauses`` and at the same speed, until at least ``length`` samples."""
        parts = [first[0 : len(first)]]
        total = len(parts[0])
        empty = 0  # empty files drawn in a row: a speaker with nothing more to say stops the stream
        while total < length and empty < 2 * len(speaker_files):
            with _open_wave(speaker_files[int(rng.integers(len(speaker_files)))], self.sample_rate) as wave:
                if steps is not None:
                    wave = _Sped(wave, steps)
                utterance = wave[0 : len(wave)]
            if len(utterance) == 0:  # an empty file adds neither speech nor a second pause
                empty += 1
                continue
            empty = 0
            pause = int(round(rng.uniform(*self._fill) * self.sample_rate))
            parts += [np.zeros(pause), utterance]
            total += pause + len(utterance)
        return _Samples(np.concatenate(parts))

    def _render(self, rng: np.random.Generator, files: list[list[Path]], names: list[str], seed: int, index: int) -> dict[str, Any]:
        """The item of one utterance from each of ``files`` (one list per speaker), with this
        dataset's length, levels, speed and channel settings."""
        count = len(files)
        with contextlib.ExitStack() as files_open:
            waves = []
            speeds = []
            for speaker_files in files:
                wave = files_open.enter_context(_open_wave(speaker_files[int(rng.integers(len(speaker_files)))], self.sample_rate))
                steps = None
                if self._speed is not None:  # drawn only when enabled: other datasets stay as they were
                    steps = int(round(rng.uniform(*self._speed) * _SPEED_STEPS))
                    wave = _Sped(wave, steps)  # 1/factor as many samples
                waves.append(wave)
                speeds.append(steps)
            if self.segment_seconds is None:
                length = min(len(w) for w in waves)
            else:
                length = int(round(self.segment_seconds * self.sample_rate))
                if self._fill is not None:
                    waves = [
                        w if len(w) >= length else self._stream(rng, speaker_files, w, steps, length)
                        for w, speaker_files, steps in zip(waves, files, speeds)
                    ]
            # Only the samples a source keeps are read (and speed-resampled): a segment is a
            # fraction of an utterance, and the samples are those of the whole one's (a stream
            # filled with pauses holds its later utterances whole).
            sources = np.zeros((count, length))
            for k, w in enumerate(waves):
                if len(w) >= length:
                    start = int(rng.integers(len(w) - length + 1))
                    sources[k] = w[start : start + length]
                else:
                    start = int(rng.integers(length - len(w) + 1))
                    sources[k, start : start + len(w)] = w[0 : len(w)]
        if self._formant is not None:
            # A generator of its own, as the channel's: the same utterances, offsets and levels
            # with or without the shifts.
            factors = np.random.default_rng([seed, index, 2]).uniform(*self._formant, size=count)
            for k, factor in enumerate(factors):
                sources[k] = shift_formants(sources[k], float(factor), self.sample_rate)
        levels_db = np.concatenate([[0.0], rng.uniform(*self._snr, size=count - 1)])
        levels_db -= levels_db.mean()  # symmetric around 0 dB, as wsj0-2mix's +-snr/2
        for k in range(count):
            rms = _active_rms(sources[k], self.sample_rate)
            if rms > 0:
                sources[k] *= 10 ** (levels_db[k] / 20) / rms
        if self._augment is not None:
            # A generator of its own: the same utterances, offsets and levels with or without
            # the channel, so that runs with and without it see the same mixtures.
            sources = self._augment(sources, self.sample_rate, np.random.default_rng([seed, index, 1]))
        mixture = sources.sum(axis=0)
        peak = np.abs(mixture).max()
        if peak > 0.9:
            sources *= 0.9 / peak
            mixture *= 0.9 / peak
        return {
            "mixture": torch.from_numpy(mixture.astype(np.float32)),
            "sources": torch.from_numpy(sources.astype(np.float32)),
            "speakers": names,
            "index": index,
        }

    def __repr__(self) -> str:
        return (
            f"MixtureDataset(root='{self.root}', n_sources={self.n_sources!r}, sample_rate={self.sample_rate}, "
            f"segment_seconds={self.segment_seconds!r}, snr_range={self.snr_range!r}, seed={self.seed}, "
            f"n_mixtures={self.n_mixtures}, speakers={len(self._speakers)}"
            + ("" if self.speed_range is None else f", speed_range={self.speed_range!r}")
            + ("" if self._augment is None else f", augment={self._augment!r}")
            + ("" if self.fill_pauses is None else f", fill_pauses={self.fill_pauses!r}")
            + ("" if self.formant_range is None else f", formant_range={self.formant_range!r}")
            + ("" if not self.speaker_weighting else f", speaker_weighting={self.speaker_weighting!r}")
            + ")"
        )


class MixedCorpusDataset(Dataset):
    """Mixtures whose talkers come from two corpora in given proportions.

    Each item is, with the probabilities of ``proportions``, a mixture of talkers of ``first``
    only, of both corpora (at least one talker of each; how many of each drawn uniformly), or of
    ``second`` only: for instance real + real, real + synthetic and synthetic + synthetic
    speakers. The speakers are those of each dataset (its ``split`` or ``speakers``); everything
    else (talker counts, length, relative levels, speed perturbation, formant shifts, channel
    augmentation, filling with pauses, sample rate) is ``first``'s. Item ``i`` is the same
    every time for a given seed.

    Args:
        first: the first corpus and the mixing settings.
        second: the second corpus (its own mixing settings are not used; same sample rate).
        proportions: (first only, both, second only), non-negative, normalized to sum 1.
        seed: the seed of every random choice.
        n_mixtures: number of items.

    Items are those of :class:`MixtureDataset`.

    Example:
        >>> real = MixtureDataset("data/speech-real", split="train", speed_range=(0.9, 1.1))  # doctest: +SKIP
        >>> synthetic = MixtureDataset("data/speech", split="train")  # doctest: +SKIP
        >>> train = MixedCorpusDataset(real, synthetic, (0.5, 0.3, 0.2), n_mixtures=200_000)  # doctest: +SKIP
    """

    def __init__(
        self,
        first: MixtureDataset,
        second: MixtureDataset,
        proportions: Sequence[float] = (1 / 3, 1 / 3, 1 / 3),
        *,
        seed: int = 0,
        n_mixtures: int = 1000,
    ) -> None:
        owner = "MixedCorpusDataset"
        for name, ds in (("first", first), ("second", second)):
            if not isinstance(ds, MixtureDataset):
                raise TypeError(f"The '{name}' parameter of {owner} must be a MixtureDataset. Got {type(ds).__name__} instead.")
        if second.sample_rate != first.sample_rate:
            raise ValueError(
                f"The corpora of {owner} must share a sample rate. Got {first.sample_rate} Hz and {second.sample_rate} Hz."
            )
        if not isinstance(proportions, (tuple, list)) or len(proportions) != 3:
            raise TypeError(
                f"The 'proportions' parameter of {owner} must be a (first only, both, second only) triple. "
                f"Got {proportions!r} instead."
            )
        p = np.array([check_float(v, "proportions", owner, 0.0) for v in proportions])
        if p.sum() <= 0:
            raise ValueError(f"The 'proportions' parameter of {owner} must not be all zero. Got {proportions!r} instead.")
        counts = first._counts
        if p[1] > 0 and min(counts) < 2:
            raise ValueError(
                f"Mixtures of both corpora need at least 2 talkers; {owner}'s 'first' mixes {first.n_sources!r}. "
                f"Give proportions[1] = 0 or more talkers."
            )
        for k, ds in ((0, first), (2, second)):
            if p[k] > 0 and len(ds.speaker_names) < max(counts):
                raise ValueError(
                    f"{owner} needs at least {max(counts)} speakers in each corpus it mixes alone. "
                    f"Got {len(ds.speaker_names)} under '{ds.root}'."
                )
        self.first = first
        self.second = second
        self.proportions = tuple(float(v) for v in proportions)
        self.seed = check_int(seed, "seed", owner, 0)
        self.n_mixtures = check_int(n_mixtures, "n_mixtures", owner, 1)
        self._p = p / p.sum()

    def __len__(self) -> int:
        return self.n_mixtures

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.n_mixtures:
            raise IndexError(f"MixedCorpusDataset index {index} out of range [0, {self.n_mixtures}).")
        rng = np.random.default_rng([self.seed, int(index)])
        first, second = self.first, self.second
        count = first._counts[int(rng.integers(len(first._counts)))]
        kind = int(rng.choice(3, p=self._p))
        if kind == 0:
            n_first = count
        elif kind == 2:
            n_first = 0
        else:
            # at least one of each, within what each corpus holds
            low = max(1, count - len(second._speakers))
            high = min(count - 1, len(first._speakers))
            n_first = int(rng.integers(low, high + 1))
        files: list[list[Path]] = []
        names: list[str] = []
        for ds, n in ((first, n_first), (second, count - n_first)):
            drawn_files, drawn_names = ds._draw_speakers(rng, n)  # each corpus by its own weighting
            files += drawn_files
            names += drawn_names
        order = rng.permutation(count)  # the first source is not always the first corpus's
        return first._render(rng, [files[i] for i in order], [names[i] for i in order], self.seed, int(index))

    def __repr__(self) -> str:
        return (
            f"MixedCorpusDataset(first={self.first!r}, second={self.second!r}, proportions={self.proportions!r}, "
            f"seed={self.seed}, n_mixtures={self.n_mixtures})"
        )


class _Samples:
    """A decoded waveform as (time,) float64 samples: ``len`` and slices."""

    def __init__(self, wave: np.ndarray) -> None:
        self.wave = wave

    def __len__(self) -> int:
        return len(self.wave)

    def __getitem__(self, span: slice) -> np.ndarray:
        return self.wave[span]


class _FileSamples:
    """A mono file at the dataset's rate, its samples read on demand (what ``load_audio`` reads)."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.frames = int(handle.frames)

    def __len__(self) -> int:
        return self.frames

    def __getitem__(self, span: slice) -> np.ndarray:
        start, stop, _ = span.indices(self.frames)
        self.handle.seek(start)
        data = self.handle.read(max(0, stop - start), dtype="float32", always_2d=True)
        return data[:, 0].astype(np.float64)


def _seconds_of(path: Path) -> float:
    """The duration of an audio file from its header; 0 for a file that cannot be read (such a
    file weighs nothing here; drawn, it is read by ``load_audio``, which says what is wrong)."""
    sf = require("soundfile", "audio")
    try:
        info = sf.info(str(path))
    except Exception:
        return 0.0
    return info.frames / info.samplerate if info.samplerate else 0.0


@contextlib.contextmanager
def _open_wave(path: Path, sample_rate: int) -> Any:
    """The utterance at ``path`` at ``sample_rate``: read on demand when it is a mono file at that
    rate, else decoded whole by ``load_audio`` (downmixing and resampling as it does)."""
    sf = require("soundfile", "audio")
    try:
        handle = sf.SoundFile(str(path))
    except Exception:  # load_audio says what is wrong with the file
        handle = None
    if handle is None or handle.channels != 1 or handle.samplerate != sample_rate or not handle.seekable():
        if handle is not None:
            handle.close()
        yield _Samples(load_audio(path, sample_rate)[0].double().numpy())
        return
    try:
        yield _FileSamples(handle)
    finally:
        handle.close()


class _Sped:
    """A waveform played ``_SPEED_STEPS / steps`` times as fast (resampled from ``steps`` to
    ``_SPEED_STEPS`` samples per unit), its samples resampled on demand."""

    def __init__(self, wave: Any, steps: int) -> None:
        self.wave = wave
        self.steps = steps
        self.length = resampled_length(len(wave), steps, _SPEED_STEPS)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, span: slice) -> np.ndarray:
        start, stop, _ = span.indices(self.length)
        return resample_span(self.wave, self.steps, _SPEED_STEPS, start, stop)


def _check_range(
    value: Any, name: str, owner: str, bounds: tuple[float, float], what: str = "factors such as (0.9, 1.1)"
) -> tuple[float, float]:
    """A (low, high) pair of ``what`` with bounds[0] <= low <= high <= bounds[1]."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(
            f"The '{name}' parameter of {owner} must be a (low, high) pair of {what}, or None. Got {value!r} instead."
        )
    low = check_float(value[0], name, owner, bounds[0], bounds[1])
    high = check_float(value[1], name, owner, low, bounds[1])
    return low, high


def _check_augment(value: Any, owner: str) -> ChannelAugmentation | None:
    """A ChannelAugmentation, True for its defaults, or None/False for none."""
    if value is None or value is False:
        return None
    if value is True:
        return ChannelAugmentation()
    if not isinstance(value, ChannelAugmentation):
        raise TypeError(
            f"The 'augment' parameter of {owner} must be a ChannelAugmentation, True (its defaults) or None. "
            f"Got {value!r} ({type(value).__name__}) instead."
        )
    return value
