"""The speech recipe (pretrained/train_audio_speech.py) end to end on tiny corpora: a stage,
a resumed stage, the validation tables and publishing a checkpoint."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import embedseg

sf = pytest.importorskip("soundfile")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def recipe():
    spec = importlib.util.spec_from_file_location("train_audio_speech", REPO / "pretrained" / "train_audio_speech.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _corpus(root: Path, prefix: str, f0s: list[float]) -> Path:
    """Speakers of harmonic tones (one F0 each), two 2-second utterances; 3 train, 3 valid."""
    rate = 8000
    t = np.arange(2 * rate) / rate
    names = [f"{prefix}{i}" for i in range(len(f0s))]
    for name, f0 in zip(names, f0s):
        (root / name).mkdir(parents=True)
        for j in range(2):
            wave = sum(np.sin(2 * np.pi * f0 * (1 + 0.05 * j) * h * t) / h for h in range(1, 6))
            wave *= 0.5 + 0.5 * np.sin(2 * np.pi * (2 + j) * t) ** 2  # syllable-like envelope
            sf.write(root / name / f"{name}_{j}.wav", (0.2 * wave).astype(np.float32), rate)
    (root / "splits.json").write_text(json.dumps({"train": names[:3], "valid": names[3:], "test": []}))
    return root


def test_stage_resume_validate_publish(recipe, tmp_path, capsys):
    real = _corpus(tmp_path / "real", "r", [110, 170, 230, 130, 190, 250])
    synthetic = _corpus(tmp_path / "synthetic", "s", [100, 150, 210, 120, 180, 240])
    run = tmp_path / "run"
    small = json.dumps({"hidden": 8, "layers": 1, "dim": 6, "mask_sources": 2})
    common = ["--real", str(real), "--synthetic", str(synthetic)]
    assert recipe.main([
        "train", "--run", str(run), "--minutes", "10", "--max-steps", "4", "--network-params", small,
        "--segment", "3", "--fill-pauses", "0.1,0.3", "--formants", "0.1", "--cross-mixture", "0.5", "--batch-size", "2", "--talkers", "2,3", "--eval-every", "2",
        "--n-valid", "2", "--score-n", "2", *common,
    ]) == 0
    stages = json.loads((run / "stages.json").read_text())
    assert [(s["steps_before"], s["steps_after"]) for s in stages] == [(0, 4)]
    assert stages[0]["recipe"]["talkers"] == "2,3"
    assert stages[0]["recipe"]["fill_pauses"] == [0.1, 0.3]
    train = recipe.train_set(stages[0]["recipe"])  # 3 s segments of the 2 s utterances, filled
    assert train.first.fill_pauses == (0.1, 0.3)
    for i in range(3):  # without filling a talker would be silent for a third of the segment
        sources = train[i]["sources"].numpy()  # 2 or 3 talkers
        frames = sources.reshape(len(sources), -1, 80)
        assert frames.shape[1] == 300 and (np.abs(frames).max(axis=2) > 1e-3).mean() > 0.85
    assert train.first.formant_range == pytest.approx((0.9, 1.1))
    fewer = recipe.train_set({**stages[0]["recipe"], "talkers": "2", "train_speakers": 2})
    assert len(fewer.first.speaker_names) == 2 and set(fewer.first.speaker_names) < {"r0", "r1", "r2"}
    assert fewer.second.speaker_names == ["s0", "s1", "s2"]  # the synthetic voices are all kept
    assert fewer.first.speaker_weighting == 0.0 and fewer.second.speaker_weighting == 0.0
    weighted = recipe.train_set({**stages[0]["recipe"], "speaker_weighting": 0.5})
    assert weighted.first.speaker_weighting == 0.5 and weighted.second.speaker_weighting == 0.0
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["domain"]["options"]["cross_mixture_weight"] == 0.5
    # it separates (and was validated) as the shipped model does: soft k-means on the loud bins
    options = config["domain"]["options"]
    assert (options["inference"], options["soft_masks"], options["cluster_threshold_db"]) == ("clusters", True, 20.0)
    assert config["clusterer"]["params"]["soft_temperature"] == 0.3
    assert math.isfinite(stages[0]["valid_scores"]["model"]["sdri"])  # scored on the validation speakers
    # a resumed stage reads the options back and continues at step 4; a recipe written before
    # "decode" existed decodes as every model did then (the mask head, binary k-means masks)
    del stages[0]["recipe"]["decode"]
    (run / "stages.json").write_text(json.dumps(stages))
    assert recipe.main(["train", "--run", str(run), "--resume", "--minutes", "10", "--max-steps", "6", "--score-n", "0"]) == 0
    stages = json.loads((run / "stages.json").read_text())
    assert [(s["steps_before"], s["steps_after"]) for s in stages] == [(0, 4), (4, 6)]
    assert stages[1]["recipe"] == stages[0]["recipe"]
    options = json.loads((run / "model" / "config.json").read_text())["domain"]["options"]
    assert (options["inference"], options["soft_masks"], options["cluster_threshold_db"]) == ("auto", False, None)
    capsys.readouterr()
    shutil.copytree(run / "model", tmp_path / "same-model")
    assert recipe.main(["validate", str(run / "model"), str(tmp_path / "same-model"), "--all", "--spectrum", "--paired",
                        "--seed-offset", "4", "--n", "2", "--threads", "1", *common]) == 0
    printed = capsys.readouterr().out
    assert "seed 15" in printed and "paired: +0.00 +- 0.00 dB, better on 0/2" in printed  # a model against itself
    for table in ("2 real talkers", "3 real talkers", "counting, 2 and 3 real talkers", "2 synthetic voices",
                  "counting, 2 and 3 synthetic voices", "effective rank"):
        assert table in printed
    assert "count right" in printed and "oracle IBM" in printed
    assert recipe.main(["validate", str(run / "model"), "--counting", "--n", "2", "--threads", "1", *common]) == 0
    printed = capsys.readouterr().out  # the counting tables alone
    assert printed.count("count right") == 2 and "2 real talkers, n_sources=2" not in printed
    published = tmp_path / "published"
    assert recipe.main(["publish", "--run", str(run), "--to", str(published)]) == 0
    assert (published / "checkpoint.safetensors").is_file()
    assert json.loads((published / "recipe.json").read_text())["talkers"] == "2,3"
    # a new run resumed from the published checkpoint carries its stages on and counts from step 6
    onward = tmp_path / "onward"
    assert recipe.main(["train", "--run", str(onward), "--resume", str(published), "--minutes", "10",
                        "--max-steps", "7", "--score-n", "0"]) == 0
    stages = json.loads((onward / "stages.json").read_text())
    assert [(s["steps_before"], s["steps_after"]) for s in stages] == [(0, 4), (4, 6), (6, 7)]
    assert stages[2]["recipe"] == stages[0]["recipe"]
    # a wider copy of the trained network goes on training from it
    wide = tmp_path / "wide"
    assert recipe.main(["train", "--run", str(wide), "--init", str(run / "model"), "--widen", "12", "--minutes", "10",
                        "--max-steps", "2", "--segment", "1", "--batch-size", "2", "--score-n", "0", "--n-valid", "2",
                        "--ema-decay", "0.9", *common]) == 0
    config = json.loads((wide / "model" / "config.json").read_text())
    assert config["network"]["params"]["hidden"] == 12 and config["network"]["params"]["dim"] == 6
    # the moving average is the run's option and its checkpoint's, and a resumed stage keeps it
    assert config["training"]["trainer"]["ema_decay"] == 0.9
    assert json.loads((wide / "stages.json").read_text())[0]["recipe"]["ema_decay"] == 0.9
    assert stages[0]["recipe"]["ema_decay"] is None
    # the last step as a model: its moving average, or with --raw its weights
    from embedseg.training.state import latest_checkpoint, read_checkpoint

    _, tensors = read_checkpoint(latest_checkpoint(wide))
    for raw, prefix in ((False, "average."), (True, "model.")):
        out = tmp_path / f"last-{prefix}"
        assert recipe.main(["export", "--run", str(wide), "--to", str(out)] + ["--raw"] * raw) == 0
        exported = embedseg.load(out).network.state_dict()
        assert all(torch.equal(v, tensors[prefix + k]) for k, v in exported.items())
    assert not all(torch.equal(tensors["average." + k], tensors["model." + k]) for k in exported)
    with pytest.raises(SystemExit, match="holds no checkpoint"):
        recipe.main(["export", "--run", str(tmp_path), "--to", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="--widen grows the network of --init"):
        recipe.main(["train", "--run", str(tmp_path / "nothing"), "--widen", "12", "--minutes", "1", *common])
    # a stage that teaches the trained network to count: only the new head changes
    counting = tmp_path / "counting"
    assert recipe.main(["train", "--run", str(counting), "--init", str(run / "model"), "--count-head", "3",
                        "--talkers", "2,3", "--monitor", "loss", "--lr", "1e-2", "--minutes", "10", "--max-steps", "3",
                        "--segment", "1", "--batch-size", "2", "--score-n", "0", "--n-valid", "2", *common]) == 0
    counted = embedseg.load(counting / "model")
    assert counted.network.count_sources == 3
    # the frozen layers trained without dropout, and the saved network keeps its option
    assert counted.network.dropout == embedseg.load(run / "model").network.dropout > 0
    before = embedseg.load(run / "model").network.state_dict()
    after = counted.network.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert any(not torch.equal(v, counted_init) for v, counted_init in zip(
        counted.network.count_head.state_dict().values(),
        recipe.with_count_head(embedseg.load(run / "model").network, 3, seed=0).count_head.state_dict().values()))
    assert json.loads((counting / "stages.json").read_text())[0]["recipe"]["count_head"] == 3
    with pytest.raises(SystemExit, match="--count-head teaches the network of --init"):
        recipe.main(["train", "--run", str(tmp_path / "nothing"), "--count-head", "3", "--minutes", "1", *common])
    # a stage that trains the embedding layer alone: the mask head, the count head and the BLSTM stay
    embedding = tmp_path / "embedding"
    assert recipe.main(["train", "--run", str(embedding), "--init", str(counting / "model"), "--train-only", "embed",
                        "--talkers", "2,3", "--monitor", "loss", "--lr", "1e-2", "--minutes", "10", "--max-steps", "3",
                        "--segment", "1", "--batch-size", "2", "--score-n", "0", "--n-valid", "2", *common]) == 0
    embedded = embedseg.load(embedding / "model").network.state_dict()
    changed = {k for k, v in after.items() if not torch.equal(embedded[k], v)}
    assert changed and all(k.startswith("embed.") for k in changed)
    assert json.loads((embedding / "stages.json").read_text())[0]["recipe"]["train_only"] == "embed"
    with pytest.raises(SystemExit, match="--train-only must name parts of the network"):
        recipe.main(["train", "--run", str(tmp_path / "nothing"), "--init", str(run / "model"), "--train-only", "head",
                     "--minutes", "1", *common])
    with pytest.raises(SystemExit, match="--train-only must name parts of the network, comma-separated"):
        recipe.main(["train", "--run", str(tmp_path / "nothing"), "--init", str(run / "model"), "--train-only", ",",
                     "--minutes", "1", *common])
    with pytest.raises(SystemExit, match="--train-only trains parts of the network of --init"):
        recipe.main(["train", "--run", str(tmp_path / "nothing"), "--train-only", "embed", "--minutes", "1", *common])
    # a stage that adds self-attention: the new layers learn beside the named parts, the BLSTM and the
    # count head stay, and a resumed stage rebuilds the same network
    attended = tmp_path / "attended"
    attend = ["train", "--run", str(attended), "--init", str(counting / "model"), "--attention", "1",
              "--train-only", "embed", "--talkers", "2,3", "--lr", "1e-2", "--minutes", "10", "--max-steps", "2",
              "--segment", "1", "--batch-size", "2", "--score-n", "0", "--n-valid", "2", *common]
    assert recipe.main(attend) == 0
    assert recipe.main(["train", "--run", str(attended), "--resume", "--minutes", "10", "--max-steps", "3",
                        "--score-n", "0"]) == 0
    net = embedseg.load(attended / "model").network
    assert net.attention_layers == 1
    changed = {k for k, v in net.state_dict().items() if k not in after or not torch.equal(after[k], v)}
    assert {k.split(".")[0] for k in changed} == {"attention", "embed"}
    stages = json.loads((attended / "stages.json").read_text())
    assert stages[0]["recipe"]["attention"] == 1 and stages[-1]["steps_after"] == 3
    with pytest.raises(SystemExit, match="--attention adds layers to the network of --init"):
        recipe.main(["train", "--run", str(tmp_path / "nothing"), "--attention", "1", "--minutes", "1", *common])


def test_spectrum_tells_a_shared_plane_from_talker_directions(recipe):
    g = np.random.default_rng(0)
    dim = 8

    def mixture(directions):  # unit rows on given directions, a little noise
        rows = np.concatenate([np.outer(np.ones(200), d) for d in directions])
        rows += 0.05 * g.standard_normal(rows.shape)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    eye = np.eye(dim)
    plane = recipe.spectrum_of([mixture([eye[0], eye[1]]) for _ in range(6)])  # "first" and "second" talker
    assert plane["plane_overlap"] > 0.99 and 1.9 < plane["effective_rank"] < 2.2
    assert sum(plane["variance_shares"][:2]) > 0.98
    talkers = recipe.spectrum_of([mixture([eye[i], eye[(i + 3) % dim]]) for i in range(6)])  # each talker its own
    assert talkers["plane_overlap"] < 0.4 and talkers["effective_rank"] > 5
    # worked by hand: noise-free mixtures in the planes (e0, e1) and (e0, e2), 200 rows per
    # direction, share one direction of two: overlap 1/2; the pooled variance is 400 rows on
    # e0 and 200 on each of e1 and e2 of 800: shares 1/2, 1/4, 1/4, rank 1 / (1/4 + 2/16) = 8/3
    halves = [np.repeat(np.stack([eye[0], eye[k]]), 200, axis=0) for k in (1, 2)]
    worked = recipe.spectrum_of(halves)
    assert worked["plane_overlap"] == pytest.approx(0.5, abs=1e-3)
    np.testing.assert_allclose(worked["variance_shares"][:4], [0.5, 0.25, 0.25, 0.0], atol=1e-3)
    assert worked["effective_rank"] == pytest.approx(8 / 3, abs=0.01)


def test_paired_difference(recipe):
    mean, se, wins = recipe.paired_difference([3.0, 5.0, 4.0, 6.0], [2.0, 5.5, 3.0, 4.0])
    d = np.array([1.0, -0.5, 1.0, 2.0])
    assert mean == pytest.approx(d.mean()) and se == pytest.approx(d.std(ddof=1) / 2) and wins == 3


def test_speaker_subset_spreads_over_sources(recipe):
    names = [f"asterisk-{i}" for i in range(3)] + [f"klettres-{i}" for i in range(10)] + ["fillets-a", "fillets-b"]
    subset = recipe.speaker_subset(names, 6, seed=0)
    assert len(subset) == len(set(subset)) == 6 and set(subset) <= set(names)
    sources = [n.split("-")[0] for n in subset]
    # two of each of the three sources: the subset keeps the variety of recordings
    assert sorted(sources) == ["asterisk"] * 2 + ["fillets"] * 2 + ["klettres"] * 2
    assert subset == recipe.speaker_subset(list(reversed(names)), 6, seed=0)  # given order does not matter
    # a small source runs out: the others fill the subset
    subset = recipe.speaker_subset(names, 11, seed=3)
    assert sum(n.startswith("fillets") for n in subset) == 2 and sum(n.startswith("asterisk") for n in subset) == 3
    assert set(recipe.speaker_subset(names, len(names), seed=0)) == set(names)
    for bad in (1, len(names) + 1):
        with pytest.raises(ValueError, match="'train_speakers'.*Got"):
            recipe.speaker_subset(names, bad, seed=0)
