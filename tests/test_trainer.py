"""The shared trainer: options, exact resume, NaN handling, schedules, stopping, files."""

from __future__ import annotations

import csv
import math
import os
import warnings

import pytest
import torch

import embedseg
from embedseg.networks import EmbeddingHead
from embedseg.trainer import TrainerConfig, TrainingError

from embedseg.metrics import ItemMean
from toys import PaddedPoints, item_aris, one_thread  # noqa: F401  (one_thread: autouse fixture)


@embedseg.register_domain("toy-trainer", override=True)
class BlobsDomain(PaddedPoints):
    """Items: (points (n, 2), labels (n,)); two Gaussian blobs per item."""

    primary_metric = "ari"

    def __init__(self, *, loss_mode: str = "normal") -> None:
        self.loss_mode = loss_mode

    def get_config(self):
        return {"loss_mode": self.loss_mode}

    def compute_loss(self, output, batch, loss):
        value = super().compute_loss(output, batch, loss)
        if self.loss_mode == "nan":
            return value * float("nan")
        if self.loss_mode == "nan-some":  # NaN whenever the batch's first point sits in blob 1
            return value * float("nan") if bool(batch.labels[0, 0] == 1) else value
        if self.loss_mode == "constant":  # never improves: exercises the plateau decay
            return value * 0 + 1.0
        return value

    def metrics(self):
        return ItemMean(lambda outputs, batch: [{**score, "const": 1.0} for score in item_aris(outputs, batch)])


def blobs(n_items: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n_items):
        n = 12 + i % 4
        y = torch.randint(0, 2, (n,), generator=g)
        items.append((torch.randn(n, 2, generator=g) * 0.4 + 2.0 * y[:, None].float(), y))
    return items


TRAIN, VALID = blobs(20), blobs(6, seed=1)
BASE = dict(domain="toy-trainer", batch_size=4, device="cpu", progress=False, warmup_steps=2, log_every=1)


def weights_equal(a: embedseg.Model, b: embedseg.Model) -> bool:
    sa, sb = a.network.state_dict(), b.network.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def read_log(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class Crashing(list):
    """A dataset that raises after ``after`` item reads, as a crash in the middle of an epoch."""

    def __init__(self, items, after):
        super().__init__(items)
        self.reads, self.after = 0, after

    def __getitem__(self, i):
        self.reads += 1
        if self.reads > self.after:
            raise RuntimeError("simulated crash")
        return list.__getitem__(self, i)


# -- options --------------------------------------------------------------------------------------
def test_unknown_option_is_rejected_listing_valid_ones():
    with pytest.raises(TypeError, match="unknown option.*'epoch'.*Valid options:.*epochs.*max_minutes"):
        embedseg.fit(TRAIN, domain="toy-trainer", epoch=3)


@pytest.mark.parametrize(
    "option, value, error, match",
    [
        ("lr", -1.0, ValueError, "'lr' parameter of fit must be a float in \\(0, inf\\). Got -1.0"),
        ("epochs", 0, ValueError, "'epochs' parameter of fit must be an int in \\[1, inf\\)"),
        ("batch_size", 2.5, TypeError, "'batch_size'"),
        ("optimizer", "sgd", ValueError, "'optimizer'.*'adamw', 'rmsprop'. Got 'sgd'"),
        ("precision", "fp8", ValueError, "'precision'"),
        ("device", "tpu", ValueError, "'device'"),
        ("loss", "dice", ValueError, "'loss'.*'affinity', 'whitened_kmeans'"),
        ("progress", "yes", TypeError, "'progress'"),
    ],
)
def test_bad_option_values(option, value, error, match):
    with pytest.raises(error, match=match):
        embedseg.fit(TRAIN, **{**BASE, option: value})


def test_monitor_metric_needs_validation_data_and_existing_metric():
    with pytest.raises(ValueError, match="needs a 'valid' dataset"):
        embedseg.fit(TRAIN, **BASE, monitor="metric", epochs=1)
    with pytest.raises(ValueError, match="names 'nope'.*gave only"):
        embedseg.fit(TRAIN, valid=VALID, **BASE, monitor="nope", epochs=1)


def test_datasets_must_be_datasets():
    with pytest.raises(TypeError, match="'dataset' must be a map-style dataset .* Got generator instead"):
        embedseg.fit((item for item in TRAIN), **BASE)
    with pytest.raises(TypeError, match="'valid' must be a map-style dataset .* Got int instead"):
        embedseg.fit(TRAIN, valid=3, **BASE)


@pytest.mark.parametrize(
    "option", ["lr", "min_lr", "grad_clip", "weight_decay", "plateau_factor", "momentum"],
)
def test_infinite_option_values_are_rejected(option):
    for bad in (float("inf"), -float("inf")):
        with pytest.raises(ValueError, match=f"The '{option}' parameter of fit must be a float in .*\\. Got -?inf instead"):
            embedseg.fit(TRAIN, **{**BASE, option: bad})


def test_max_minutes_inf_means_no_time_limit(tmp_path):
    model = embedseg.fit(TRAIN, **BASE, max_steps=2, max_minutes=float("inf"), out_dir=str(tmp_path / "run"))
    summary = model.config["training"]
    assert summary["steps"] == 2 and summary["stopped"] == "max_steps"
    assert summary["trainer"]["max_minutes"] is None  # JSON has no infinity
    assert embedseg.load(tmp_path / "run").config["training"]["steps"] == 2
    with pytest.raises(ValueError, match=r"The 'max_minutes' parameter of fit must be a float in \(0, inf\]. Got -inf"):
        embedseg.fit(TRAIN, **BASE, max_minutes=-float("inf"))


def test_none_and_mappings_are_not_datasets():
    with pytest.raises(TypeError, match="'dataset' must be a map-style dataset .* Got None instead"):
        embedseg.fit(None, **BASE, max_steps=2)
    with pytest.raises(TypeError, match="'dataset' must be a map-style dataset .* Got a dict instead: a mapping is not a dataset"):
        embedseg.fit({"image": 1}, **BASE, max_steps=2)
    with pytest.raises(TypeError, match="'valid' must be a map-style dataset .* Got a dict instead: a mapping"):
        embedseg.fit(TRAIN, valid={0: VALID[0]}, **BASE, max_steps=2)
    with pytest.raises(TypeError, match="'dataset' must be .* Got the str 'data/train' instead .*load_dataset"):
        embedseg.fit("data/train", **BASE, max_steps=2)


def test_out_dir_must_be_a_folder_path(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="The 'out_dir' parameter of fit must be a folder .* Got the existing file '.*file' instead"):
        embedseg.fit(TRAIN, **BASE, max_steps=2, out_dir=str(tmp_path / "file"))
    with pytest.raises(ValueError, match="The 'out_dir' parameter of fit must be a folder .* below the existing file '.*file'"):
        embedseg.fit(TRAIN, **BASE, max_steps=2, out_dir=tmp_path / "file" / "run")
    with pytest.raises(ValueError, match="The 'out_dir' parameter of fit must be a folder path .* Got ''"):
        embedseg.fit(TRAIN, **BASE, max_steps=2, out_dir="")
    assert (tmp_path / "file").read_text() == "x"


def test_a_monitor_validation_does_not_give_is_reported_at_the_end_of_a_run_keeping_the_model(tmp_path):
    # max_steps=2 ends the run before the first epoch's evaluation: only the final one runs,
    # after the training is done, so the trained weights are kept (and saved) with a warning.
    with pytest.warns(UserWarning, match=r"names 'nope', but validation gave only \['ari', 'const', 'valid_loss'\]"):
        model = embedseg.fit(TRAIN, valid=VALID, **BASE, monitor="nope", max_steps=2, out_dir=str(tmp_path))
    assert isinstance(model, embedseg.Model) and (tmp_path / "model" / "config.json").is_file()


@embedseg.register_domain("toy-trainer-unlabeled", override=True)
class UnlabeledValidation(BlobsDomain):
    """Items whose labels are all negative come without labels (labels=None)."""

    def encode(self, batch, device):
        encoded = super().encode(batch, device)
        if not bool((encoded.labels >= 0).any()):
            encoded.labels = None
        return encoded


def test_validation_items_without_labels_are_named_when_the_monitor_needs_them():
    unlabeled = [(p, torch.full_like(y, -1)) for p, y in VALID]
    base = {**BASE, "domain": "toy-trainer-unlabeled", "valid_metrics": False}
    message = r"names 'valid_loss', but validation gave no values. 6 validation item\(s\) came without labels .* no validation loss"
    with pytest.raises(ValueError, match=message):  # at the end of an epoch: the run stops
        embedseg.fit(TRAIN, valid=unlabeled, **base, max_steps=8)
    with pytest.warns(UserWarning, match=message):  # at the end of the run: reported, model kept
        embedseg.fit(TRAIN, valid=unlabeled, **base, max_steps=2)


def test_empty_datasets_and_frozen_networks_are_rejected_naming_them():
    with pytest.raises(ValueError, match="'dataset' must hold at least one item. Got an empty list"):
        embedseg.fit([], **BASE)
    with pytest.raises(ValueError, match="'valid' must hold at least one item. Got an empty list"):
        embedseg.fit(TRAIN, valid=[], **BASE)
    frozen = embedseg.create_network("point_mlp", in_features=2, dim=4, hidden=16).requires_grad_(False)
    with pytest.raises(ValueError, match="network must have trainable parameters. Got a PointMLP"):
        embedseg.fit(TRAIN, **BASE, network=frozen)


def test_resume_true_needs_out_dir():
    with pytest.raises(ValueError, match="'resume' parameter of fit needs 'out_dir'"):
        embedseg.fit(TRAIN, **BASE, resume=True)


def test_every_config_field_is_a_fit_option():
    from embedseg.api import FIT_OPTIONS

    assert set(TrainerConfig.field_names()) <= set(FIT_OPTIONS)
    assert {"network", "network_params", "clusterer", "domain_options"} <= set(FIT_OPTIONS)


# -- learning ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "optimizer, loss, grad_clip", [("adamw", "affinity", 5.0), ("rmsprop", "whitened_kmeans", None)]
)
def test_training_lowers_the_validation_loss_and_separates_blobs(optimizer, loss, grad_clip):
    opts = dict(BASE, optimizer=optimizer, loss=loss, grad_clip=grad_clip)
    untrained = embedseg.fit(TRAIN, valid=VALID, **{**opts, "max_steps": 1, "lr": 1e-9})
    first = untrained.config["training"]["best_valid"]["valid_loss"]
    model = embedseg.fit(TRAIN, valid=VALID, **opts, epochs=8, lr=1e-2)
    summary = model.config["training"]
    assert summary["loss"] == loss and summary["steps"] == 8 * 5
    # The whitened k-means loss is bounded below by dim - n_classes (= 2 here), not by 0.
    floor = 0.0 if loss == "affinity" else 4 - 2
    assert summary["best_valid"]["valid_loss"] - floor < 0.5 * (first - floor)
    assert model.evaluate(VALID)["ari"] > 0.9


def test_iterable_dataset_trains():
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(TRAIN)

    model = embedseg.fit(Stream(), **BASE, epochs=2)
    assert model.config["training"]["steps"] == 2 * 5


def test_model_options_network_and_clusterer():
    from embedseg.cluster import GaussianMixture

    model = embedseg.fit(
        TRAIN, **BASE, max_steps=2, network_params={"dim": 6},
        clusterer={"name": "gmm", "params": {"n_clusters": 3}},
    )
    assert model.network.head.proj.out_features == 6
    assert isinstance(model.clusterer, GaussianMixture) and model.clusterer.n_clusters == 3
    # A bare name keeps the domain's number of clusters.
    model = embedseg.fit(TRAIN, **BASE, max_steps=1, clusterer="gmm")
    assert isinstance(model.clusterer, GaussianMixture) and model.clusterer.n_clusters == 2


def test_unsaveable_network_fails_before_training(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(2, 4))
    with pytest.raises(ValueError, match="register_network"):
        embedseg.fit(TRAIN, **BASE, network=net, out_dir=str(tmp_path))
    assert not (tmp_path / "log.csv").exists()


# -- resume --------------------------------------------------------------------------------------
def test_resume_after_a_crash_reproduces_the_uninterrupted_run(tmp_path):
    opts = dict(BASE, valid=VALID, epochs=3, checkpoint_every=3, plateau_patience=1)
    straight = embedseg.fit(TRAIN, out_dir=str(tmp_path / "a"), **opts)
    # 20 items / batch 4 = 5 steps per epoch; the crash comes while reading step 8's batch,
    # so the latest checkpoint is step 6 (in the middle of the second epoch).
    with pytest.raises(RuntimeError, match="simulated crash"):
        embedseg.fit(Crashing(TRAIN, after=4 * 7 + 2), out_dir=str(tmp_path / "b"), **opts)
    latest = (tmp_path / "b" / "checkpoints" / "latest.json").read_text()
    assert "step-00000006" in latest
    resumed = embedseg.fit(TRAIN, out_dir=str(tmp_path / "b"), resume=True, **opts)
    assert weights_equal(straight, resumed)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time_s"} for r in rows]  # noqa: E731
    assert strip(read_log(tmp_path / "a" / "log.csv")) == strip(read_log(tmp_path / "b" / "log.csv"))
    assert straight.config["training"]["best_step"] == resumed.config["training"]["best_step"]
    # The saved best models are the same too.
    assert weights_equal(embedseg.load(tmp_path / "a"), embedseg.load(tmp_path / "b"))


def test_resume_after_a_step_budget_continues_exactly(tmp_path):
    straight = embedseg.fit(TRAIN, **BASE, epochs=2, out_dir=str(tmp_path / "a"))
    part = embedseg.fit(TRAIN, **BASE, epochs=2, max_steps=7, out_dir=str(tmp_path / "b"))
    assert part.config["training"]["stopped"] == "max_steps" and part.config["training"]["steps"] == 7
    resumed = embedseg.fit(TRAIN, **BASE, epochs=2, out_dir=str(tmp_path / "b"), resume=True)
    assert resumed.config["training"]["steps"] == 10
    assert weights_equal(straight, resumed)


def test_resume_uses_a_checkpoint_left_aside_by_an_interrupted_rewrite(tmp_path):
    straight = embedseg.fit(TRAIN, **BASE, epochs=2, out_dir=str(tmp_path / "a"))
    embedseg.fit(TRAIN, **BASE, epochs=2, max_steps=7, out_dir=str(tmp_path / "b"))
    ckpt = tmp_path / "b" / "checkpoints" / "step-00000007"
    os.replace(ckpt, ckpt.with_name(ckpt.name + ".old"))  # where a crash inside replace_folder leaves it
    resumed = embedseg.fit(TRAIN, **BASE, epochs=2, out_dir=str(tmp_path / "b"), resume=True)
    assert weights_equal(straight, resumed)


# -- moving average of the weights ----------------------------------------------------------------
def _toy_network() -> torch.nn.Module:
    from embedseg.networks import create_network

    spec = BlobsDomain().network_spec()
    torch.manual_seed(0)
    return create_network(spec["name"], **dict(spec.get("params") or {}))


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _last_checkpoint(run):
    from embedseg.training.state import latest_checkpoint, read_checkpoint

    return read_checkpoint(latest_checkpoint(run))[1]


@pytest.mark.parametrize("value", [0.0, 1.0, -0.5, float("nan")])
def test_ema_decay_must_lie_strictly_between_0_and_1(value):
    with pytest.raises(ValueError, match="'ema_decay' parameter of fit must be a float in \\(0, 1\\)"):
        embedseg.fit(TRAIN, **BASE, ema_decay=value)


def test_the_average_follows_a_float64_reference_of_the_raw_weights():
    import copy

    from embedseg.training.averaging import average_decay

    start = _toy_network()
    n_steps, decay = 6, 0.8
    # The raw weights after each step: runs of 1..n steps from the same start, without averaging.
    raw = [_weights(start)] + [
        _weights(embedseg.fit(TRAIN, **BASE, network=copy.deepcopy(start), max_steps=k).network)
        for k in range(1, n_steps + 1)
    ]
    assert not all(torch.equal(raw[0][k], raw[-1][k]) for k in raw[0])  # training moved them
    averaged = embedseg.fit(TRAIN, **BASE, network=copy.deepcopy(start), max_steps=n_steps, ema_decay=decay)
    got = averaged.network.state_dict()
    for key, first in raw[0].items():
        if not first.is_floating_point():
            continue
        reference = first.double()
        for step in range(1, n_steps + 1):
            d = average_decay(decay, step)
            reference = d * reference + (1 - d) * raw[step][key].double()
        torch.testing.assert_close(got[key].double(), reference, rtol=1e-5, atol=1e-6)
    # The warm-up: the first update keeps 2/11 of the start, later ones `decay` at most.
    assert average_decay(decay, 1) == pytest.approx(2 / 11) and average_decay(decay, 10**6) == decay


def test_validation_keeps_and_saves_the_average_while_training_goes_on_with_the_weights(tmp_path, monkeypatch):
    from embedseg.training.loop import Trainer

    seen = []
    original = Trainer._validate

    def spy(self):
        seen.append((_weights(self.network), {k: v.clone() for k, v in self.average.shadow.items()}))
        return original(self)

    opts = dict(BASE, valid=VALID, epochs=2, eval_every=2, checkpoint_every=2)
    torch.manual_seed(0)  # the same starting weights for both runs
    plain = embedseg.fit(TRAIN, **opts, out_dir=str(tmp_path / "plain"))
    monkeypatch.setattr(Trainer, "_validate", spy)
    torch.manual_seed(0)
    averaged = embedseg.fit(TRAIN, **opts, ema_decay=0.9, out_dir=str(tmp_path / "ema"))
    assert len(seen) == 5  # steps 2, 4, 6, 8, 10
    for validated, shadow in seen:
        assert all(torch.equal(validated[k], shadow[k]) for k in shadow)
    # The optimizer saw only the weights themselves: the last raw weights are the plain run's.
    raw_plain, raw_ema = _last_checkpoint(tmp_path / "plain"), _last_checkpoint(tmp_path / "ema")
    model_keys = [k for k in raw_plain if k.startswith("model.")]
    assert model_keys and all(torch.equal(raw_plain[k], raw_ema[k]) for k in model_keys)
    assert any(k.startswith("average.") for k in raw_ema) and not any(k.startswith("average.") for k in raw_plain)
    # The model returned and saved is the average of the best evaluation, not a raw step.
    best = averaged.config["training"]["best_step"]
    best_shadow = seen[best // 2 - 1][1]
    saved = embedseg.load(tmp_path / "ema").network.state_dict()
    assert all(torch.equal(saved[k], best_shadow[k]) for k in best_shadow)
    assert weights_equal(averaged, embedseg.load(tmp_path / "ema"))
    assert not weights_equal(averaged, plain)


def test_resume_continues_the_average_exactly(tmp_path):
    opts = dict(BASE, epochs=2, ema_decay=0.7)
    straight = embedseg.fit(TRAIN, **opts, out_dir=str(tmp_path / "a"))
    embedseg.fit(TRAIN, **opts, max_steps=7, out_dir=str(tmp_path / "b"))
    resumed = embedseg.fit(TRAIN, **opts, out_dir=str(tmp_path / "b"), resume=True)
    assert weights_equal(straight, resumed)
    a, b = _last_checkpoint(tmp_path / "a"), _last_checkpoint(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a if not k.startswith("rng."))


def test_resuming_across_a_change_of_averaging_says_what_happens(tmp_path):
    embedseg.fit(TRAIN, **BASE, max_steps=3, out_dir=str(tmp_path / "plain"))
    with pytest.warns(UserWarning, match="holds no moving average.*starts at the checkpoint's weights"):
        model = embedseg.fit(TRAIN, **BASE, max_steps=3, ema_decay=0.9, out_dir=str(tmp_path / "plain"), resume=True)
    # No step was taken after the resume: the average is the checkpoint's weights.
    raw = _last_checkpoint(tmp_path / "plain")
    assert all(torch.equal(v, raw[f"model.{k}"]) for k, v in model.network.state_dict().items())
    embedseg.fit(TRAIN, **BASE, max_steps=3, ema_decay=0.9, out_dir=str(tmp_path / "ema"))
    with pytest.warns(UserWarning, match="holds a moving average.*no ema_decay"):
        embedseg.fit(TRAIN, **BASE, max_steps=4, out_dir=str(tmp_path / "ema"), resume=True)


def test_resume_from_an_explicit_checkpoint_folder_and_bad_paths(tmp_path):
    embedseg.fit(TRAIN, **BASE, epochs=2, out_dir=str(tmp_path / "a"))
    ckpt = tmp_path / "a" / "checkpoints" / "step-00000005"
    model = embedseg.fit(TRAIN, **BASE, epochs=2, resume=str(ckpt))
    assert model.config["training"]["steps"] == 10
    with pytest.raises(TrainingError, match="neither a checkpoint folder"):
        embedseg.fit(TRAIN, **BASE, epochs=2, resume=str(tmp_path))
    with pytest.raises(embedseg.ModelFileError, match="optimizer state .* does not fit this run's RMSprop"):
        embedseg.fit(TRAIN, **BASE, epochs=2, optimizer="rmsprop", resume=str(ckpt))
    torch.save({"x": 1}, ckpt / "extra.pt")
    with pytest.raises(embedseg.ModelFileError, match="pickle payload"):
        embedseg.fit(TRAIN, **BASE, epochs=2, resume=str(ckpt))


def test_checkpoints_are_rotated_and_written_whole(tmp_path):
    embedseg.fit(TRAIN, **BASE, epochs=2, checkpoint_every=2, keep_checkpoints=2, out_dir=str(tmp_path))
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["latest.json", "step-00000008", "step-00000010"]
    for name in names[1:]:
        assert sorted(os.listdir(tmp_path / "checkpoints" / name)) == ["checkpoint.json", "checkpoint.safetensors"]
    leftovers = [p for p in tmp_path.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert leftovers == []


def test_resuming_from_an_earlier_checkpoint_drops_the_abandoned_later_ones(tmp_path):
    opts = dict(BASE, epochs=2, checkpoint_every=2, out_dir=str(tmp_path))
    embedseg.fit(TRAIN, **opts, keep_checkpoints=3)  # keeps steps 6, 8, 10
    root = tmp_path / "checkpoints"
    killed = root / ".step-00000009.x1y2.tmp"  # a process killed while writing step 9
    killed.mkdir()
    (killed / "checkpoint.safetensors").write_bytes(b"partial")
    # Going back to step 6 abandons steps 8 and 10: the new step-7 checkpoint must not lose
    # to them in the rotation, or latest.json would name a deleted folder.
    embedseg.fit(TRAIN, **opts, keep_checkpoints=1, resume=str(root / "step-00000006"), max_steps=7)
    assert sorted(p.name for p in root.iterdir()) == ["latest.json", "step-00000007"]
    again = embedseg.fit(TRAIN, **BASE, epochs=2, out_dir=str(tmp_path), resume=True)
    assert again.config["training"]["steps"] == 10


# -- non-finite losses ----------------------------------------------------------------------------
def test_repeated_nan_loss_stops_with_a_clear_message():
    with pytest.raises(TrainingError, match="last 3 steps had a non-finite loss"):
        embedseg.fit(TRAIN, **BASE, epochs=3, max_bad_steps=3, domain_options={"loss_mode": "nan"})


def test_nan_steps_are_skipped_and_leave_the_weights_alone():
    torch.manual_seed(0)
    model = embedseg.fit(TRAIN, **BASE, epochs=2, lr=0.1, max_bad_steps=5, domain_options={"loss_mode": "nan-some"})
    summary = model.config["training"]
    assert 0 < summary["skipped_steps"] < summary["steps"]
    assert all(torch.isfinite(p).all() for p in model.network.parameters())
    # With every step non-finite nothing changes at all.
    base = embedseg.fit(TRAIN, **BASE, max_steps=1, lr=1e-12)
    frozen = embedseg.fit(TRAIN, **BASE, max_steps=4, max_bad_steps=10, domain_options={"loss_mode": "nan"})
    init = {k: v for k, v in base.network.state_dict().items()}
    for k, v in frozen.network.state_dict().items():
        torch.testing.assert_close(v, init[k], rtol=0, atol=1e-9)


@embedseg.register_network("toy_bn_mlp", override=True)
class BatchNormMLP(torch.nn.Module):
    """``layers`` linear layers, then BatchNorm: with a huge lr the weights grow until the
    BatchNorm statistics overflow while the normalized output (and so the loss) stays finite."""

    def __init__(self, *, in_features: int, dim: int = 4, hidden: int = 16, layers: int = 1) -> None:
        super().__init__()
        widths = [in_features] + [hidden] * layers
        linears = [torch.nn.Linear(a, b) for a, b in zip(widths, widths[1:])]
        self.body = torch.nn.Sequential(*linears, torch.nn.BatchNorm1d(hidden), torch.nn.ReLU())
        self.head = EmbeddingHead(hidden, dim)

    def forward(self, features):
        b, n, c = features.shape
        return self.head(self.body(features.reshape(b * n, c)).reshape(b, n, -1))  # (batch, n_points, dim)


def all_finite(tensors) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors.values() if t.is_floating_point())


def test_a_diverging_run_stops_naming_the_buffer_and_never_saves_it(tmp_path):
    with pytest.raises(TrainingError, match=(
        r"last 3 steps had a non-finite loss, gradient or buffer .* Non-finite: the buffer "
        r"'body.3.running_var' \(3 steps\)"
    )):
        embedseg.fit(
            TRAIN, **BASE, network="toy_bn_mlp", network_params={"layers": 3}, lr=1e6, epochs=4,
            max_bad_steps=3, checkpoint_every=1, out_dir=str(tmp_path),
        )
    from safetensors.torch import load_file

    checkpoints = sorted((tmp_path / "checkpoints").glob("step-*"))
    assert checkpoints  # the steps before the error were checkpointed
    for folder in checkpoints:
        assert all_finite(load_file(str(folder / "checkpoint.safetensors"))), folder.name
    rows = read_log(tmp_path / "log.csv")
    skipped = [int(r["skipped_steps"] or 0) for r in rows]
    assert skipped[-1] == 2 and skipped == sorted(skipped)  # the third one raised before its row


def test_skipped_steps_leave_the_batchnorm_statistics_as_they_were(tmp_path):
    torch.manual_seed(0)  # fit seeds with seed=0 before building the network
    init = embedseg.create_network("toy_bn_mlp", in_features=2, dim=4, hidden=16).state_dict()
    frozen = embedseg.fit(TRAIN, **BASE, network="toy_bn_mlp", max_steps=4, domain_options={"loss_mode": "nan"})
    assert frozen.config["training"]["skipped_steps"] == 4
    for key, value in frozen.network.state_dict().items():
        assert torch.equal(value, init[key]), key
    # Some steps skipped: the statistics count the forward passes of the applied steps only.
    model = embedseg.fit(
        TRAIN, **BASE, network="toy_bn_mlp", epochs=2, lr=0.1, max_bad_steps=5,
        domain_options={"loss_mode": "nan-some"}, out_dir=str(tmp_path),
    )
    summary = model.config["training"]
    assert 0 < summary["skipped_steps"] < summary["steps"]
    tracked = model.network.state_dict()["body.1.num_batches_tracked"]
    assert int(tracked) == summary["steps"] - summary["skipped_steps"]
    assert all_finite(embedseg.load(tmp_path).network.state_dict())
    rows = read_log(tmp_path / "log.csv")
    assert list(rows[0])[-3:] == ["lr", "time_s", "skipped_steps"]
    assert int(rows[-1]["skipped_steps"]) == summary["skipped_steps"]


@pytest.mark.parametrize("grad_clip", [5.0, None])
def test_a_non_finite_gradient_skips_the_step_and_is_named(grad_clip):
    net = embedseg.create_network("point_mlp", in_features=2, dim=4, hidden=16)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.head.proj.weight.register_hook(lambda g: g * float("nan"))
    with pytest.raises(TrainingError, match=r"Non-finite: the gradient of 'head.proj.weight' \(2 steps\)"):
        embedseg.fit(TRAIN, **BASE, network=net, epochs=1, max_bad_steps=2, grad_clip=grad_clip)
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_the_model_and_checkpoint_writers_refuse_non_finite_weights(tmp_path):
    import time

    from embedseg.api import build_model
    from embedseg.trainer import Trainer

    trainer = Trainer(build_model("toy-trainer"), TrainerConfig(device="cpu", progress=False, out_dir=str(tmp_path)))
    trainer.start_time = time.monotonic()
    trainer._setup(TRAIN, VALID)
    with torch.no_grad():
        trainer.network.head.proj.bias[1] = float("inf")
    with pytest.raises(TrainingError, match=r"Refusing to save the model at step 0: 'head.proj.bias' hold\(s\) NaN"):
        trainer._save_model()
    with pytest.raises(TrainingError, match=r"Refusing to write the checkpoint of step 0: the tensor\(s\) 'model.head.proj.bias'"):
        trainer._checkpoint()
    assert sorted(os.listdir(tmp_path)) == ["log.csv"]


# -- checkpoint state ------------------------------------------------------------------------------
#: the keys of checkpoint.json, format version 1, in order: checkpoints written before keep resuming.
CHECKPOINT_KEYS_V1 = [
    "format", "format_version", "step", "epoch", "batch_in_epoch", "world_size", "lr_scale",
    "plateau_best", "plateau_bad", "best_value", "best_step", "best_record", "stale_evals",
    "bad_streak", "skipped_steps", "round_loss", "log_loss", "last_eval_step", "elapsed_s",
    "optimizer", "scaler", "rng", "log_rows", "trainer",
]


def test_training_state_round_trips_every_field_through_a_checkpoint(tmp_path):
    import dataclasses
    import json

    from embedseg.training.state import TrainingState, read_checkpoint, write_checkpoint

    state = TrainingState(
        step=7, epoch=1, batch_in_epoch=2, world_size=2, lr_scale=0.25, plateau_best=0.5, plateau_bad=1,
        best_value=0.4, best_step=5, best_record={"valid_loss": 0.4, "ari": None}, stale_evals=1,
        bad_streak=1, skipped_steps=3, round_loss=[1.5, 2], log_loss=[0.5, 1], last_eval_step=5,
        elapsed_s=12.5, optimizer={"param_groups": [{"lr": 0.1, "params": [0]}], "scalars": {"0": {"k": 1}}},
        scaler={"scale": 256.0, "_growth_tracker": 3}, rng={"numpy": ["MT19937", 3, 0, 0.0], "python": [3, [1, 2], None]},
        log_rows=[{"step": 1, "epoch": 0, "train_loss": 0.5, "lr": 0.1, "time_s": 0.2}], trainer={"seed": 3},
    )
    default = TrainingState()
    assert all(getattr(state, f.name) != getattr(default, f.name) for f in dataclasses.fields(TrainingState))
    tensors = {
        "model.w": torch.randn(3, 2), "model.n": torch.tensor(4), "optim.0.exp_avg": torch.randn(3, 2),
        "rng.torch": torch.get_rng_state()[None], "rng.numpy": torch.arange(624, dtype=torch.int64),
    }
    folder = write_checkpoint(tmp_path / "checkpoints", state, tensors, keep=2)
    assert folder.name == "step-00000007"
    assert list(json.loads((folder / "checkpoint.json").read_text())) == CHECKPOINT_KEYS_V1
    read_state, read_tensors = read_checkpoint(folder)
    assert read_state == state
    assert read_tensors.keys() == tensors.keys()
    assert all(torch.equal(read_tensors[k], tensors[k]) for k in tensors)
    assert TrainingState.from_json(state.to_json()) == state
    with pytest.raises(embedseg.ModelFileError, match="format version 2; this embedseg reads versions up to 1"):
        TrainingState.from_json({**state.to_json(), "format_version": 2})
    with pytest.raises(embedseg.ModelFileError, match="lacks 'step'"):
        TrainingState.from_json({k: v for k, v in state.to_json().items() if k != "step"})


def test_a_trainer_checkpoint_keeps_the_format_and_refuses_non_finite_values(tmp_path):
    import json

    from embedseg.training.state import TrainingState, read_checkpoint, write_checkpoint

    embedseg.fit(TRAIN, **BASE, epochs=2, out_dir=str(tmp_path))
    folder = tmp_path / "checkpoints" / "step-00000010"
    assert list(json.loads((folder / "checkpoint.json").read_text())) == CHECKPOINT_KEYS_V1
    state, tensors = read_checkpoint(folder)
    assert state.step == 10 and state.epoch == 2 and len(state.log_rows) == 10
    assert {k.split(".")[0] for k in tensors} == {"model", "optim", "rng"}  # "best" comes with validation
    root = tmp_path / "again"
    bad = {**tensors, "model.head.proj.weight": tensors["model.head.proj.weight"] * float("nan")}
    with pytest.raises(TrainingError, match="'model.head.proj.weight' hold"):
        write_checkpoint(root, state, bad, keep=2)
    with pytest.raises(TrainingError, match="the value 'best_value' hold"):
        write_checkpoint(root, TrainingState(step=3, best_value=float("inf")), tensors, keep=2)
    assert not root.exists() or os.listdir(root) == []


def test_loading_a_model_does_not_import_the_trainer():
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = (
        "import embedseg, sys; embedseg.load('pretrained/image-shapes'); "
        "assert not any(m.startswith(('embedseg.trainer', 'embedseg.training')) for m in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


# -- schedule, stopping ----------------------------------------------------------------------------
def test_warmup_then_plateau_decay_of_the_learning_rate(tmp_path):
    embedseg.fit(
        TRAIN, **{**BASE, "warmup_steps": 4}, epochs=4, lr=0.01, plateau_patience=1, plateau_factor=0.5,
        domain_options={"loss_mode": "constant"}, out_dir=str(tmp_path),
    )
    lrs = {int(r["step"]): float(r["lr"]) for r in read_log(tmp_path / "log.csv") if r["lr"]}
    assert [lrs[s] for s in (1, 2, 3, 4, 5)] == pytest.approx([0.0025, 0.005, 0.0075, 0.01, 0.01])
    # Epoch 1 sets the reference; every later epoch fails to improve and halves the lr.
    assert lrs[6] == pytest.approx(0.01) and lrs[11] == pytest.approx(0.005) and lrs[16] == pytest.approx(0.0025)


def test_early_stopping_on_a_domain_metric():
    model = embedseg.fit(TRAIN, valid=VALID, **BASE, epochs=10, monitor="const", patience=2)
    summary = model.config["training"]
    assert summary["stopped"] == "early_stopping"
    assert summary["epochs"] == 3 and summary["best_step"] == 5


def test_best_model_by_validation_is_returned(tmp_path):
    model = embedseg.fit(TRAIN, valid=VALID, **BASE, epochs=3, monitor="metric", out_dir=str(tmp_path))
    summary = model.config["training"]
    assert summary["monitor"] == "ari"
    rows = [r for r in read_log(tmp_path / "log.csv") if r["ari"]]
    best = max(rows, key=lambda r: float(r["ari"]))
    assert summary["best_step"] == int(best["step"])
    assert model.evaluate(VALID)["ari"] == pytest.approx(float(best["ari"]))


def test_time_budget_stops_cleanly_and_keeps_a_model(tmp_path):
    model = embedseg.fit(TRAIN, valid=VALID, **BASE, epochs=1000, max_minutes=1e-6, out_dir=str(tmp_path))
    summary = model.config["training"]
    assert summary["stopped"] == "max_minutes" and summary["steps"] == 1
    assert weights_equal(model, embedseg.load(tmp_path / "model"))


# -- files -----------------------------------------------------------------------------------------
def test_out_dir_holds_log_curves_tensorboard_and_model(tmp_path):
    model = embedseg.fit(TRAIN, valid=VALID, **BASE, epochs=2, tensorboard=True, out_dir=str(tmp_path))
    rows = read_log(tmp_path / "log.csv")
    assert list(rows[0]) == ["step", "epoch", "train_loss", "valid_loss", "ari", "const", "lr", "time_s"]
    assert [int(r["step"]) for r in rows] == list(range(1, 11))
    assert all(math.isfinite(float(r["train_loss"])) for r in rows)
    assert [int(r["step"]) for r in rows if r["valid_loss"]] == [5, 10]
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tensorboard").iterdir())
    loaded = embedseg.load(tmp_path / "model")
    assert weights_equal(model, loaded)
    assert loaded.config["training"]["trainer"]["epochs"] == 2


def test_without_matplotlib_training_goes_on_without_the_curves(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    with pytest.warns(UserWarning, match=r"embedseg-dc\[plot\].*without writing curves.png"):
        model = embedseg.fit(TRAIN, valid=VALID, **BASE, epochs=1, out_dir=str(tmp_path))
    assert not (tmp_path / "curves.png").exists()
    assert weights_equal(model, embedseg.load(tmp_path / "model"))


def test_without_out_dir_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = embedseg.fit(TRAIN, valid=VALID, **BASE, epochs=1)
    assert os.listdir(tmp_path) == []
    assert model.config["training"]["steps"] == 5


def test_config_dataclass_has_a_comment_per_field():
    import inspect

    import embedseg.trainer as trainer

    source = inspect.getsource(trainer.TrainerConfig)
    for name in TrainerConfig.field_names():
        line = next(line for line in source.splitlines() if line.strip().startswith(f"{name}:"))
        assert "#" in line, name


def test_a_folder_holding_a_run_is_refused_and_left_untouched(tmp_path):
    embedseg.fit(TRAIN, **BASE, epochs=3, out_dir=str(tmp_path))
    before = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match=(
        r"The 'out_dir' parameter of fit names '.*', which holds an earlier run \(checkpoints/, "
        r"log.csv, model/\). Pass resume=True to continue it, overwrite=True to replace it"
    )):
        embedseg.fit(TRAIN, **BASE, epochs=1, out_dir=str(tmp_path))
    after = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before


def test_overwrite_replaces_the_run_without_a_warning(tmp_path):
    embedseg.fit(TRAIN, **BASE, epochs=3, tensorboard=True, out_dir=str(tmp_path))
    (tmp_path / "notes.txt").write_text("mine")  # not the trainer's: kept
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = embedseg.fit(TRAIN, **BASE, epochs=1, overwrite=True, out_dir=str(tmp_path))
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["latest.json", "step-00000005"]
    assert [int(r["step"]) for r in read_log(tmp_path / "log.csv")] == [1, 2, 3, 4, 5]
    assert sorted(os.listdir(tmp_path)) == ["checkpoints", "curves.png", "log.csv", "model", "notes.txt"]
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert weights_equal(model, embedseg.load(tmp_path))
    assert embedseg.load(tmp_path).config["training"]["steps"] == 5


@pytest.mark.parametrize("entry", ["log.csv", "model", "checkpoints/latest.json", "checkpoints/step-00000003"])
def test_each_sign_of_a_run_is_enough_to_refuse_the_folder(tmp_path, entry):
    path = tmp_path / entry
    path.parent.mkdir(parents=True, exist_ok=True)
    path.mkdir() if entry in ("model", "checkpoints/step-00000003") else path.write_text("{}")
    with pytest.raises(ValueError, match="holds an earlier run"):
        embedseg.fit(TRAIN, **BASE, max_steps=1, out_dir=str(tmp_path))
    assert path.exists()


def test_an_empty_or_unrelated_folder_is_used_as_it_is(tmp_path):
    (tmp_path / "empty").mkdir()
    embedseg.fit(TRAIN, **BASE, max_steps=1, out_dir=str(tmp_path / "empty"))
    other = tmp_path / "other"
    (other / "data").mkdir(parents=True)
    (other / "data" / "x.txt").write_text("x")
    (other / "checkpoints").mkdir()  # an empty checkpoints folder holds no run
    embedseg.fit(TRAIN, **BASE, max_steps=1, out_dir=str(other))
    assert (other / "data" / "x.txt").read_text() == "x" and (other / "model" / "config.json").is_file()


def test_resume_continues_a_finished_run_in_its_folder(tmp_path):
    embedseg.fit(TRAIN, **BASE, epochs=1, out_dir=str(tmp_path))
    model = embedseg.fit(TRAIN, **BASE, epochs=2, resume=True, out_dir=str(tmp_path))
    assert model.config["training"]["steps"] == 10
    assert [int(r["step"]) for r in read_log(tmp_path / "log.csv")] == list(range(1, 11))


def test_overwrite_needs_out_dir_and_excludes_resume(tmp_path):
    with pytest.raises(ValueError, match="'overwrite' parameter of fit needs 'out_dir'"):
        embedseg.fit(TRAIN, **BASE, overwrite=True)
    with pytest.raises(ValueError, match="'overwrite' and 'resume' parameters of fit exclude each other"):
        embedseg.fit(TRAIN, **BASE, overwrite=True, resume=True, out_dir=str(tmp_path))
    with pytest.raises(TypeError, match="'overwrite' parameter of fit must be a bool. Got 'yes'"):
        embedseg.fit(TRAIN, **BASE, overwrite="yes", out_dir=str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_progress_bar_shows_loss_rate_and_eta(capsys):
    embedseg.fit(TRAIN, **{**BASE, "progress": True}, epochs=2)
    err = capsys.readouterr().err
    assert "training" in err and "10/10" in err and "loss=" in err and "<" in err  # "<": the ETA
    assert "step/s" in err or "s/step" in err


def test_compile_flag_trains_the_compiled_module(monkeypatch):
    real_compile = torch.compile
    compiled = []

    def eager_compile(module, **kwargs):  # the eager backend: no C++ toolchain, same graph capture
        compiled.append(module)
        return real_compile(module, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    plain = embedseg.fit(TRAIN, **BASE, epochs=1)
    model = embedseg.fit(TRAIN, **BASE, epochs=1, compile=True)
    assert compiled == [model.network]
    assert list(model.network.state_dict()) == list(plain.network.state_dict())  # no "_orig_mod." prefix
    for a, b in zip(plain.network.parameters(), model.network.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_half_precision_on_cpu_falls_back_to_fp32():
    with pytest.warns(UserWarning, match="needs CUDA; training in fp32"):
        model = embedseg.fit(TRAIN, **BASE, max_steps=1, precision="bf16")
    assert model.config["training"]["precision"] == "fp32"


def test_mixed_precision_step_with_loss_scaling():
    """The CUDA fp16 path (autocast + GradScaler) exercised on the CPU's own autocast and scaler."""
    import time

    from embedseg.api import build_model
    from embedseg.trainer import Trainer

    trainer = Trainer(build_model("toy-trainer"), TrainerConfig(device="cpu", progress=False, batch_size=4))
    trainer.start_time = time.monotonic()
    trainer._setup(TRAIN, None)
    trainer.amp_dtype = torch.bfloat16
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    batch = trainer.domain.collate(TRAIN[:4])
    before = [p.detach().clone() for p in trainer.params]
    loss, ok = trainer._train_step(batch)
    assert ok and math.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.params))
    # A gradient overflow (as fp16 gives at too large a scale): the scaler skips the update and
    # halves its scale, and the step is not counted as a bad one (the loss itself is finite).
    hook = trainer.params[0].register_hook(lambda g: g * float("inf"))
    before = [p.detach().clone() for p in trainer.params]
    loss, ok = trainer._train_step(batch)
    hook.remove()
    assert ok and math.isfinite(loss)
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.params))
    assert trainer.scaler.get_scale() == 2.0**7


def test_a_crash_while_writing_a_checkpoint_leaves_the_previous_one_usable(tmp_path, monkeypatch):
    import embedseg.io as eio

    real = eio.atomic_write_json
    calls = {"n": 0}

    def failing(path, obj):
        if path.name == "checkpoint.json":
            calls["n"] += 1
            if calls["n"] == 2:  # the second checkpoint dies half-written
                raise OSError("disk full")
        return real(path, obj)

    monkeypatch.setattr(eio, "atomic_write_json", failing)
    with pytest.raises(OSError, match="disk full"):
        embedseg.fit(TRAIN, **BASE, epochs=2, checkpoint_every=2, out_dir=str(tmp_path))
    monkeypatch.setattr(eio, "atomic_write_json", real)
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest.json", "step-00000002"]
    resumed = embedseg.fit(TRAIN, **BASE, epochs=2, checkpoint_every=2, out_dir=str(tmp_path), resume=True)
    straight = embedseg.fit(TRAIN, **BASE, epochs=2, checkpoint_every=2)
    assert weights_equal(straight, resumed)


def test_a_time_budget_alone_is_used_in_full_rather_than_stopping_after_ten_epochs():
    # One epoch of TRAIN is a few steps: ten epochs end long before 2 seconds are up.
    cfg = TrainerConfig(max_minutes=2 / 60)
    assert cfg.epochs is None and cfg.epoch_limit is None
    assert TrainerConfig().epoch_limit == 10 and TrainerConfig(epochs=3, max_minutes=1).epoch_limit == 3
    ten = embedseg.fit(TRAIN, **BASE)
    timed = embedseg.fit(TRAIN, **BASE, max_minutes=2 / 60)
    assert ten.config["training"]["stopped"] == "epochs" and ten.config["training"]["epochs"] == 10
    assert timed.config["training"]["stopped"] == "max_minutes"
    assert timed.config["training"]["steps"] > ten.config["training"]["steps"]
    capped = embedseg.fit(TRAIN, **BASE, max_steps=3 * ten.config["training"]["steps"])
    assert capped.config["training"]["steps"] == 3 * ten.config["training"]["steps"]


def test_an_iterable_that_runs_dry_ends_the_run_instead_of_spinning():
    class OneShot(torch.utils.data.IterableDataset):
        def __init__(self, items):
            self.items = iter(items)

        def __iter__(self):
            return self.items  # a generator-like source: empty after the first pass

    model = embedseg.fit(OneShot(TRAIN), **BASE, max_steps=1000)
    assert model.config["training"]["stopped"] == "data_exhausted"
    assert model.config["training"]["steps"] == 5  # 20 items in batches of 4, once


class Signalling(list):
    """A dataset that sends this process ``sig`` when item read number ``at`` is made, as a user
    pressing Ctrl-C (SIGINT) or a scheduler ending the job (SIGTERM) in the middle of a step."""

    def __init__(self, items, at, sig):
        super().__init__(items)
        self.reads, self.at, self.sig = 0, at, sig

    def __getitem__(self, i):
        self.reads += 1
        if self.reads == self.at:
            os.kill(os.getpid(), self.sig)
        return list.__getitem__(self, i)


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_a_stop_signal_ends_training_after_the_step_with_everything_saved(tmp_path, signame, capsys):
    import signal

    sig = getattr(signal, signame)
    before = signal.getsignal(sig)
    straight = embedseg.fit(TRAIN, **BASE, epochs=2, out_dir=str(tmp_path / "a"))
    # batch 4: the signal comes while step 3's batch is read; step 3 still completes
    part = embedseg.fit(Signalling(TRAIN, at=4 * 2 + 2, sig=sig), **BASE, epochs=2, out_dir=str(tmp_path / "b"))
    assert part.config["training"]["stopped"] == "signal" and part.config["training"]["steps"] == 3
    assert f"{signame}: stopping after this step" in capsys.readouterr().err
    assert "step-00000003" in (tmp_path / "b" / "checkpoints" / "latest.json").read_text()
    assert embedseg.load(tmp_path / "b").config["training"]["stopped"] == "signal"
    assert signal.getsignal(sig) is before  # the handlers are the caller's again
    resumed = embedseg.fit(TRAIN, **BASE, epochs=2, out_dir=str(tmp_path / "b"), resume=True)
    assert resumed.config["training"]["steps"] == 10
    assert weights_equal(straight, resumed)
