"""MixtureDataset: wsj0-2mix-style mixtures from a speaker folder."""

import contextlib

import numpy as np
import pytest
import soundfile as sf
import torch

from domains.audio.dataset import MixedCorpusDataset, MixtureDataset


def test_items_are_deterministic_and_well_formed(tiny_corpus):
    ds = MixtureDataset(tiny_corpus, n_sources=2, segment_seconds=2.0, seed=3, n_mixtures=10)
    a, b = ds[4], ds[4]
    assert torch.equal(a["mixture"], b["mixture"]) and a["speakers"] == b["speakers"]
    assert a["sources"].shape == (2, 16000) and a["mixture"].shape == (16000,)
    torch.testing.assert_close(a["sources"].sum(0), a["mixture"], atol=1e-6, rtol=0)
    assert len(set(a["speakers"])) == 2
    assert float(a["mixture"].abs().max()) <= 0.9 + 1e-6
    other = MixtureDataset(tiny_corpus, n_sources=2, segment_seconds=2.0, seed=4, n_mixtures=10)[4]
    assert not torch.equal(other["mixture"], a["mixture"])


def test_relative_levels_follow_snr_range(tiny_corpus):
    ds = MixtureDataset(tiny_corpus, segment_seconds=None, snr_range=(5, 5), n_mixtures=6)
    for i in range(6):
        s = ds[i]["sources"].double().numpy()
        # levels are set on the active part; compare on whole signals loosely, exactly via the code's rule
        from domains.audio.dataset import _active_rms

        ratio = 20 * np.log10(_active_rms(s[1], 8000) / _active_rms(s[0], 8000))
        assert abs(abs(ratio) - 5.0) < 0.05


def test_min_mode_and_split_and_counts(tiny_corpus):
    ds = MixtureDataset(tiny_corpus, n_sources=(2, 3), segment_seconds=None, split="test", n_mixtures=12)
    assert ds.speaker_names == ["mb-us3", "mb-de5", "fest-rab"]
    counts = {ds[i]["sources"].shape[0] for i in range(12)}
    assert counts == {2, 3}
    item = ds[0]
    assert set(item["speakers"]) <= {"mb-us3", "mb-de5", "fest-rab"}


def test_user_layout_with_nested_flac_and_resampling(tmp_path):
    g = np.random.default_rng(0)
    for spk in ("alice", "bob"):
        (tmp_path / spk / "ch1").mkdir(parents=True)
        sf.write(tmp_path / spk / "ch1" / "u1.flac", 0.1 * g.standard_normal(16000), 16000)
    ds = MixtureDataset(tmp_path, sample_rate=8000, segment_seconds=None, n_mixtures=2)
    item = ds[0]
    assert item["sources"].shape == (2, 8000)
    assert sorted(item["speakers"]) == ["alice", "bob"]


def test_bad_arguments(tiny_corpus, tmp_path):
    with pytest.raises(ValueError, match="needs at least 6 speakers"):
        MixtureDataset(tiny_corpus, n_sources=6)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        MixtureDataset(tmp_path / "nope")
    with pytest.raises(ValueError, match="'split' parameter of MixtureDataset"):
        MixtureDataset(tiny_corpus, split="dev")
    with pytest.raises(ValueError, match="'snr_range' parameter of MixtureDataset must have low <= high"):
        MixtureDataset(tiny_corpus, snr_range=(5, 0))
    with pytest.raises(IndexError):
        MixtureDataset(tiny_corpus, n_mixtures=3)[3]


def _tone_corpus(root, freqs, rate=8000, seconds=1.0):
    t = np.arange(int(rate * seconds)) / rate
    for name, f in freqs.items():
        (root / name).mkdir(parents=True)
        sf.write(root / name / "u.wav", 0.3 * np.sin(2 * np.pi * f * t), rate)
    return root


def _peak_hz(x, rate=8000):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / rate)[int(spec.argmax())]


def test_speed_perturbation_scales_duration_and_pitch(tmp_path):
    root = _tone_corpus(tmp_path, {"low": 400.0, "high": 1000.0})
    plain = MixtureDataset(root, segment_seconds=None, n_mixtures=3)
    fast = MixtureDataset(root, segment_seconds=None, n_mixtures=3, speed_range=(1.1, 1.1))
    slow = MixtureDataset(root, segment_seconds=None, n_mixtures=3, speed_range=(0.8, 0.8))
    assert plain[0]["sources"].shape[1] == 8000
    assert abs(fast[0]["sources"].shape[1] - 8000 / 1.1) <= 1
    assert abs(slow[0]["sources"].shape[1] - 8000 / 0.8) <= 1
    for ds, factor in ((plain, 1.0), (fast, 1.1), (slow, 0.8)):
        item = ds[1]
        for src, who in zip(item["sources"].numpy(), item["speakers"]):
            base = 400.0 if who == "low" else 1000.0
            assert abs(_peak_hz(src) - base * factor) < 5.0, (who, factor)
    a, b = fast[2], fast[2]
    assert torch.equal(a["mixture"], b["mixture"])  # still deterministic per index


def test_speed_factors_vary_within_the_range(tmp_path):
    root = _tone_corpus(tmp_path, {"a": 500.0, "b": 700.0})
    ds = MixtureDataset(root, segment_seconds=None, n_mixtures=40, speed_range=(0.9, 1.1))
    factors = set()
    for i in range(40):
        item = ds[i]
        for src, who in zip(item["sources"].numpy(), item["speakers"]):
            factors.add(round(_peak_hz(src) / (500.0 if who == "a" else 700.0), 2))
    assert min(factors) >= 0.89 and max(factors) <= 1.11
    assert len(factors) >= 4


@pytest.mark.parametrize(
    "bad, error, match",
    [((0.9,), TypeError, "pair of speed factors"), ((1.2, 1.1), ValueError, "speed_range"),
     ((0.1, 1.0), ValueError, r"\[0.5, 2\]"), ("fast", TypeError, "pair of speed factors")],
)
def test_bad_speed_range(tmp_path, bad, error, match):
    root = _tone_corpus(tmp_path, {"a": 500.0, "b": 700.0})
    with pytest.raises(error, match=match):
        MixtureDataset(root, speed_range=bad)


def _burst_corpus(root, tones, rate=8000, seconds=0.5):
    """One folder per speaker, one file per tone: a speaker's utterances are its tones."""
    t = np.arange(int(rate * seconds)) / rate
    for name, freqs in tones.items():
        (root / name).mkdir(parents=True)
        for f in freqs:
            sf.write(root / name / f"{int(f)}.wav", 0.3 * np.sin(2 * np.pi * f * t), rate)
    return root


def _runs(active):
    """(value, length) of each run of equal values in a boolean sequence."""
    edges = np.flatnonzero(np.diff(active.astype(int))) + 1
    bounds = np.concatenate([[0], edges, [len(active)]])
    return [(bool(active[a]), int(b - a)) for a, b in zip(bounds[:-1], bounds[1:])]


@pytest.mark.parametrize("speed", [None, (0.8, 0.8)])
def test_fill_pauses_join_a_speakers_utterances_with_pauses(tmp_path, speed):
    tones = {"low": (300.0, 400.0, 500.0), "high": (1000.0, 1250.0, 1500.0)}
    root = _burst_corpus(tmp_path, tones)
    ds = MixtureDataset(root, segment_seconds=4.0, n_mixtures=6, speed_range=speed, fill_pauses=(0.25, 0.25), seed=2)
    factor = 1.0 if speed is None else speed[0]
    burst, pause = 4000 / factor, 2000  # samples: a 0.5 s utterance at the speed, a 0.25 s pause
    for i in range(6):
        item = ds[i]
        assert item["sources"].shape == (2, 32000)
        for src, who in zip(item["sources"].numpy(), item["speakers"]):
            frames = src.reshape(-1, 100)  # 12.5 ms frames
            active = np.abs(frames).max(axis=1) > 1e-3
            runs = _runs(active)
            inner = runs[1:-1]  # the first and last runs are cut by the segment
            assert len(inner) >= 6  # 4 s hold at least 4 utterances and their pauses
            for on, n in inner:  # every utterance whole, every pause as drawn (to a frame)
                assert abs(n * 100 - (burst if on else pause)) <= 100, (who, on, n)
            start = 0
            for on, n in runs:  # each utterance is one of the speaker's, at the one speed
                if on and n * 100 >= 0.9 * burst:
                    peak = _peak_hz(src[start * 100 : (start + n) * 100])
                    assert min(abs(peak - f * factor) for f in tones[who]) < 20.0, (who, peak)
                start += n
    assert torch.equal(ds[3]["mixture"], ds[3]["mixture"])  # still deterministic per index


def test_fill_pauses_skip_empty_files(tmp_path):
    root = _burst_corpus(tmp_path, {"low": (300.0, 400.0), "high": (1000.0, 1250.0)})
    for name in ("low", "high"):
        sf.write(root / name / "empty.wav", np.zeros(0), 8000)
    ds = MixtureDataset(root, segment_seconds=3.0, n_mixtures=5, fill_pauses=(0.0, 0.0), seed=1)
    for i in range(5):
        frames = ds[i]["sources"].numpy().reshape(2, -1, 100)
        # back-to-back utterances, no gap from an empty file: active nearly throughout
        assert (np.abs(frames).max(axis=2) > 1e-3).mean() > 0.95


def test_fill_pauses_leave_utterances_that_fill_the_segment_alone(tiny_corpus):
    kw = {"n_sources": 2, "segment_seconds": 0.5, "seed": 5, "n_mixtures": 5}
    plain, filled = MixtureDataset(tiny_corpus, **kw), MixtureDataset(tiny_corpus, fill_pauses=(0.1, 0.4), **kw)
    for i in range(5):
        assert torch.equal(plain[i]["sources"], filled[i]["sources"])
    assert "fill_pauses=(0.1, 0.4)" in repr(filled)


@pytest.mark.parametrize(
    "bad, error, match",
    [((0.2,), TypeError, "pair of pause lengths"), ((1.0, 0.5), ValueError, "fill_pauses"),
     ((-0.1, 0.5), ValueError, "fill_pauses"), ("long", TypeError, "pair of pause lengths")],
)
def test_bad_fill_pauses(tmp_path, bad, error, match):
    root = _tone_corpus(tmp_path, {"a": 500.0, "b": 700.0})
    with pytest.raises(error, match=match):
        MixtureDataset(root, fill_pauses=bad)


@pytest.mark.parametrize("power", [0.0, 0.5, 1.0])
def test_speaker_weighting_draws_speakers_by_their_seconds_of_audio(tmp_path, power):
    rate = 8000
    seconds = {"short": 1.0, "middle": 4.0, "long": 16.0}
    for name, total in seconds.items():  # the seconds spread over files of different lengths
        (tmp_path / name).mkdir()
        for j, part in enumerate((0.25, 0.75)):
            sf.write(tmp_path / name / f"{j}.wav", 0.1 * np.ones(int(rate * total * part)), rate)
    ds = MixtureDataset(tmp_path, n_sources=1, segment_seconds=0.05, n_mixtures=3000, seed=4,
                        speaker_weighting=power)
    assert ("speaker_weighting=" in repr(ds)) == (power > 0)
    # a corpus mixed with another one draws its speakers the same way
    mixed = MixedCorpusDataset(ds, ds, (1, 0, 0), seed=5, n_mixtures=3000)
    weights = {n: s ** power for n, s in seconds.items()}
    for data in (ds, mixed):
        drawn = [data[i]["speakers"][0] for i in range(len(data))]
        for name in seconds:
            expected = weights[name] / sum(weights.values())
            share = drawn.count(name) / len(drawn)
            assert share == pytest.approx(expected, abs=4 * np.sqrt(expected * (1 - expected) / len(drawn)))
    # two talkers: each mixture still has different speakers
    pairs = MixtureDataset(tmp_path, segment_seconds=0.05, n_mixtures=50, speaker_weighting=power)
    assert all(len(set(pairs[i]["speakers"])) == 2 for i in range(len(pairs)))


def test_uniform_speaker_weighting_keeps_the_items(tiny_corpus):
    # weighting 0 is the draw of every dataset made before the option existed
    a = MixtureDataset(tiny_corpus, n_mixtures=6, seed=3)
    b = MixtureDataset(tiny_corpus, n_mixtures=6, seed=3, speaker_weighting=0)
    for i in range(6):
        assert a[i]["speakers"] == b[i]["speakers"]
        torch.testing.assert_close(a[i]["mixture"], b[i]["mixture"], rtol=0, atol=0)


@pytest.mark.parametrize("bad", [-0.5, 3.0, float("nan")])
def test_bad_speaker_weighting(tiny_corpus, bad):
    with pytest.raises(ValueError, match="'speaker_weighting' parameter of MixtureDataset"):
        MixtureDataset(tiny_corpus, speaker_weighting=bad)


def test_formant_range_moves_each_talkers_formants_and_keeps_the_rest(tiny_corpus):
    from domains.audio.voice import shift_formants

    kw = {"n_sources": 2, "segment_seconds": 1.0, "seed": 7, "n_mixtures": 4, "snr_range": (0, 5)}
    plain, shifted = MixtureDataset(tiny_corpus, **kw), MixtureDataset(tiny_corpus, formant_range=(1.1, 1.1), **kw)
    for i in range(4):
        a, b = plain[i], shifted[i]
        assert a["speakers"] == b["speakers"]  # the same utterances, offsets and levels
        for src, ref in zip(b["sources"].double().numpy(), a["sources"].double().numpy()):
            want = shift_formants(ref, 1.1, 8000)
            # the same talker, shifted, at the same active level (float32 items)
            scale = np.dot(src, want) / np.dot(want, want)
            np.testing.assert_allclose(src, scale * want, atol=2e-4 * np.abs(src).max())
            assert 0.8 < scale < 1.25
        torch.testing.assert_close(b["sources"].sum(0), b["mixture"], atol=1e-6, rtol=0)
    assert "formant_range=(1.1, 1.1)" in repr(shifted)
    with pytest.raises(ValueError, match="formant_range"):
        MixtureDataset(tiny_corpus, formant_range=(0.5, 1.0))


def test_channel_augmentation_keeps_targets_consistent(tiny_corpus):
    from domains.audio.augment import ChannelAugmentation

    kw = {"n_sources": 2, "segment_seconds": 2.0, "seed": 3, "n_mixtures": 6}
    plain = MixtureDataset(tiny_corpus, **kw)
    aug = ChannelAugmentation(room_prob=1.0, hiss_prob=1.0, eq_prob=1.0)
    noisy = MixtureDataset(tiny_corpus, augment=aug, **kw)
    for i in range(6):
        a, b = plain[i], noisy[i]
        assert a["speakers"] == b["speakers"]  # the same draws, the channel on top
        assert b["sources"].shape == a["sources"].shape
        assert bool(torch.isfinite(b["sources"]).all())
        # the targets are the sources as heard in the mixture: they add up to it
        torch.testing.assert_close(b["sources"].sum(0), b["mixture"], atol=1e-6, rtol=0)
        assert float(b["mixture"].abs().max()) <= 0.9 + 1e-6
        assert not torch.allclose(a["sources"], b["sources"])
    torch.testing.assert_close(noisy[2]["mixture"], noisy[2]["mixture"], atol=0, rtol=0)
    off = MixtureDataset(tiny_corpus, augment=aug.without(*ChannelAugmentation.GROUPS), **kw)
    torch.testing.assert_close(off[1]["sources"], plain[1]["sources"], atol=1e-6, rtol=0)
    assert "augment=" in repr(MixtureDataset(tiny_corpus, augment=True, **kw))
    with pytest.raises(TypeError, match="'augment' parameter of MixtureDataset must be a ChannelAugmentation"):
        MixtureDataset(tiny_corpus, augment="reverb")


def _two_corpora(tmp_path, rate=8000):
    first = _tone_corpus(tmp_path / "real", {"r1": 300.0, "r2": 500.0, "r3": 700.0}, rate=rate)
    second = _tone_corpus(tmp_path / "synth", {"s1": 900.0, "s2": 1100.0}, rate=rate)
    return first, second


@pytest.mark.parametrize("proportions", [(1, 0, 0), (0, 1, 0), (0, 0, 1)])
def test_mixed_corpora_draw_the_asked_pairs(tmp_path, proportions):
    from domains.audio.dataset import MixedCorpusDataset

    a, b = _two_corpora(tmp_path)
    first = MixtureDataset(a, segment_seconds=0.5)
    second = MixtureDataset(b, segment_seconds=3.0)
    ds = MixedCorpusDataset(first, second, proportions, n_mixtures=20, seed=1)
    for i in range(20):
        item = ds[i]
        from_first = sum(s.startswith("r") for s in item["speakers"])
        assert from_first == {(1, 0, 0): 2, (0, 1, 0): 1, (0, 0, 1): 0}[proportions]
        assert len(set(item["speakers"])) == 2
        assert item["sources"].shape == (2, 4000)  # the first dataset's settings
        torch.testing.assert_close(item["sources"].sum(0), item["mixture"], atol=1e-6, rtol=0)


def test_mixed_corpora_follow_the_proportions_deterministically(tmp_path):
    from domains.audio.dataset import MixedCorpusDataset

    a, b = _two_corpora(tmp_path)
    first = MixtureDataset(a, segment_seconds=0.25, speed_range=(0.9, 1.1))
    ds = MixedCorpusDataset(first, MixtureDataset(b), (0.5, 0.3, 0.2), n_mixtures=400, seed=2)
    kinds = np.array([2 - sum(s.startswith("r") for s in ds[i]["speakers"]) for i in range(400)])
    for k, p in enumerate((0.5, 0.3, 0.2)):
        # within 4 binomial standard deviations of the asked share
        assert abs((kinds == k).mean() - p) < 4 * np.sqrt(p * (1 - p) / 400)
    assert torch.equal(ds[7]["mixture"], ds[7]["mixture"])
    # the first source is the first corpus's in about half of the mixed items
    firsts = [ds[i]["speakers"][0].startswith("r") for i in range(400) if kinds[i] == 1]
    assert 0.3 < np.mean(firsts) < 0.7


def test_mixed_corpora_bad_arguments(tmp_path):
    from domains.audio.dataset import MixedCorpusDataset

    a, b = _two_corpora(tmp_path)
    first = MixtureDataset(a)
    with pytest.raises(ValueError, match="must share a sample rate"):
        MixedCorpusDataset(first, MixtureDataset(b, sample_rate=16000))
    with pytest.raises(TypeError, match="'second' parameter of MixedCorpusDataset must be a MixtureDataset"):
        MixedCorpusDataset(first, str(b))
    with pytest.raises(ValueError, match="'proportions' parameter of MixedCorpusDataset must not be all zero"):
        MixedCorpusDataset(first, MixtureDataset(b), (0, 0, 0))
    with pytest.raises(TypeError, match="triple"):
        MixedCorpusDataset(first, MixtureDataset(b), (0.5, 0.5))
    with pytest.raises(ValueError, match="at least 3 speakers in each corpus"):
        MixedCorpusDataset(MixtureDataset(a, n_sources=3), MixtureDataset(b), (0.5, 0.5, 0.5))
    with pytest.raises(IndexError):
        MixedCorpusDataset(first, MixtureDataset(b), n_mixtures=2)[2]


def _speech_like_corpus(root, seconds=(0.9, 2.3, 3.1), rate=8000):
    """Two speakers, utterances of several lengths (noise bursts: every sample differs)."""
    g = np.random.default_rng(7)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for k, s in enumerate(seconds):
            n = int(rate * s)
            sf.write(root / name / f"u{k}.wav", 0.3 * g.standard_normal(n) * np.hanning(n), rate, subtype="PCM_16")
    return root


@pytest.mark.parametrize("segment, speed", [(0.5, None), (0.5, (0.85, 1.15)), (None, (0.7, 1.3)), (2.9, (0.9, 1.1))])
def test_segments_read_on_demand_equal_the_whole_utterance_decoded(tmp_path, monkeypatch, segment, speed):
    """A segment read from its file span (and speed-resampled from that span alone) holds the
    samples of decoding and resampling the whole utterance, as ``load_audio`` and ``resample`` do."""
    import domains.audio.dataset as dataset
    from domains.audio.audio_io import load_audio, resample

    root = _speech_like_corpus(tmp_path)
    ds = MixtureDataset(root, segment_seconds=segment, n_mixtures=12, speed_range=speed)
    lazy = [ds[i] for i in range(12)]

    class Whole:  # the reference: the utterance decoded and resampled whole, then sliced
        def __init__(self, path, rate):
            self.wave = load_audio(path, rate)[0].double()

        def __len__(self):
            return len(self.wave)

        def __getitem__(self, span):
            return self.wave.numpy()[span]

    class WholeSped(Whole):
        def __init__(self, wave, steps):
            self.wave = resample(wave.wave, steps, dataset._SPEED_STEPS)

    monkeypatch.setattr(dataset, "_open_wave", lambda path, rate: contextlib.nullcontext(Whole(path, rate)))
    monkeypatch.setattr(dataset, "_Sped", WholeSped)
    for i, item in enumerate(lazy):
        whole = ds[i]
        assert torch.equal(item["sources"], whole["sources"]) and torch.equal(item["mixture"], whole["mixture"])
