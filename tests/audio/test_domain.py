"""AudioDomain: encode, decode, losses, metrics, Model.separate, saving, the commands."""


import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

import embedseg
from embedseg.api import build_model
from domains.audio import AudioDomain, MixtureDataset
from domains.audio.features import ideal_binary_labels, stft
from domains.audio.metrics import oracle_separation, separation_scores
from toys import network_inputs

SMALL_NET = {"hidden": 12, "layers": 1, "dim": 8}


@pytest.fixture(scope="module")
def items(tiny_corpus):
    ds = MixtureDataset(tiny_corpus, segment_seconds=None, n_mixtures=4, seed=5)
    return [ds[i] for i in range(4)]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("audio", network_params=SMALL_NET)


def test_collate_pads_lengths_and_counts():
    d = AudioDomain()
    a = {"mixture": torch.randn(1000), "sources": torch.randn(2, 1000)}
    b = {"mixture": torch.randn(700), "sources": torch.randn(3, 700)}
    batch = d.collate([a, b])
    assert batch["mixture"].shape == (2, 1000) and batch["lengths"].tolist() == [1000, 700]
    assert batch["sources"].shape == (2, 3, 1000) and batch["n_sources"].tolist() == [2, 3]
    assert torch.all(batch["sources"][0, 2] == 0) and torch.all(batch["mixture"][1, 700:] == 0)
    with pytest.raises(ValueError, match="'sources' of item 0 must have shape"):
        d.collate([{"mixture": torch.randn(10), "sources": torch.randn(2, 9)}])


def test_encode_targets_weights_and_masks(items):
    d = AudioDomain()
    enc = d.encode(d.collate(items), "cpu")
    b, t, f = enc.features.shape
    assert (b, f) == (4, 129) and enc.mask.shape == enc.labels.shape == enc.weights.shape == (4, t * f)
    # labels: the dominant source, computed independently per item, ignoring inactive bins
    for i, it in enumerate(items):
        own = ideal_binary_labels(stft(it["sources"][None]))[0]
        n = own.shape[0]
        lab = enc.labels[i, :n]
        active = enc.mask[i, :n]
        assert torch.equal(lab[active], own[active]) and torch.all(lab[~active] == -1)
        assert not enc.mask[i, n:].any()  # padding frames are never active
    assert torch.equal(enc.weights, enc.mask.float())
    mag = AudioDomain(weights="magnitude").encode(d.collate(items), "cpu").weights
    assert torch.all(mag[~enc.mask] == 0)
    torch.testing.assert_close(mag.sum(1), enc.mask.sum(1).float())


def test_oracle_labels_decode_to_the_oracle_ibm(items, model):
    d = model.domain
    enc = d.encode(d.collate(items[:2]), "cpu")
    # every bin labelled by its dominant source: decoding must reproduce the oracle IBM
    full = ideal_binary_labels(enc.context["source_specs"])  # (batch, frames * freqs)
    dummy = torch.zeros(2, enc.mask.shape[1], 2)
    outs = d.decode(enc, full, None, dummy)
    for i, it in enumerate(items[:2]):
        oracle = oracle_separation(it["mixture"][None], it["sources"][None], "ibm")[0]
        assert outs[i].shape == it["sources"].shape
        torch.testing.assert_close(outs[i], oracle, atol=1e-5, rtol=0)


def test_silent_bins_share_and_soft_masks(items):
    d = AudioDomain(silent_bins="share", soft_masks=True)
    enc = d.encode(d.collate(items[:1]), "cpu")
    n = enc.mask.shape[1]
    proba = torch.zeros(1, n, 2)
    proba[..., 0] = 0.7
    proba[..., 1] = 0.3
    out = d.decode(enc, torch.zeros(1, n, dtype=torch.long) + torch.arange(2).repeat(n // 2 + 1)[:n], proba, torch.zeros(1, n, 2))[0]
    mix = items[0]["mixture"]
    torch.testing.assert_close(out.sum(0), mix, atol=1e-4, rtol=0)  # masks still sum to one


def test_cluster_threshold_fits_the_clusterer_on_the_loud_bins_only(items, model):
    d = AudioDomain(cluster_threshold_db=20.0)
    enc = d.encode(d.collate(items), "cpu")
    assert torch.equal(AudioDomain().cluster_mask(enc, None), enc.mask)  # the default: every active bin
    got = d.cluster_mask(enc, None)
    # float64 reference: the active bins within 20 dB of the item's loudest bin
    mag = enc.context["mixture_spec"].abs().reshape(enc.mask.shape).double()
    for i in range(len(items)):
        level = 20 * torch.log10(mag[i].clamp_min(1e-300))
        loud = enc.mask[i] & (level >= level[enc.context["valid"][i]].max() - 20.0)
        assert 0 < int(loud.sum()) < int(enc.mask[i].sum())
        assert torch.equal(got[i], loud if int(loud.sum()) >= d.CLUSTER_MIN_BINS else enc.mask[i])
    # an item with too few loud bins keeps all its active bins
    few = AudioDomain(cluster_threshold_db=0.0)
    assert torch.equal(few.cluster_mask(enc, None), enc.mask)
    # separation: soft masks from clusters fitted on the loud bins still cover every bin
    dom = model.domain
    before = (dom.cluster_threshold_db, dom.soft_masks, dom.inference)
    dom.cluster_threshold_db, dom.soft_masks, dom.inference = 20.0, True, "clusters"
    try:
        out = model.separate(items[0]["mixture"], n_sources=2)
    finally:
        dom.cluster_threshold_db, dom.soft_masks, dom.inference = before
    torch.testing.assert_close(out.sum(0), items[0]["mixture"], atol=1e-4, rtol=0)
    assert AudioDomain(cluster_threshold_db=20.0).get_config()["cluster_threshold_db"] == 20.0
    with pytest.raises(ValueError, match="'cluster_threshold_db' parameter of AudioDomain"):
        AudioDomain(cluster_threshold_db=-3.0)


def test_compute_loss_with_and_without_mask_head(items):
    d = AudioDomain()
    enc = d.encode(d.collate(items[:2]), "cpu")
    net = embedseg.create_network("dc_compact", mask_sources=2, **SMALL_NET)
    out = net(enc.features)
    dc = d.compute_loss(out["embeddings"], enc, "affinity").detach()
    both = d.compute_loss(out, enc, "affinity").detach()
    assert float(both) > float(dc) > 0
    # oracle IBM masks give a smaller mask loss than their swap (permutation invariance)
    ibm = torch.nn.functional.one_hot(ideal_binary_labels(enc.context["source_specs"]), 2).float()
    t, f = enc.features.shape[1:]
    ibm = ibm.reshape(2, t, f, 2).permute(0, 3, 1, 2)
    good = d._mask_loss(ibm, enc)
    torch.testing.assert_close(good, d._mask_loss(ibm.flip(1), enc))
    assert float(good) < float(d._mask_loss(torch.full_like(ibm, 0.5), enc))


def _weighted_affinity_reference(v, y, w):
    """||W^1/2 (V V^T - Y Y^T) W^1/2||_F^2 / (sum w)^2 on the full N x N matrices, float64."""
    a = v @ v.T - y @ y.T
    return float((w[:, None] * a**2 * w[None, :]).sum() / w.sum() ** 2)


def test_cross_mixture_loss_is_the_loss_of_the_batch_as_one_mixture(items, tiny_corpus):
    plain, cross = AudioDomain(weights="magnitude"), AudioDomain(weights="magnitude", cross_mixture_weight=0.5)
    # two 2-talker mixtures and a 3-talker one of another length (padded, with a padded source)
    three = MixtureDataset(tiny_corpus, n_sources=3, segment_seconds=None, n_mixtures=1, seed=9)[0]
    enc = cross.encode(cross.collate([*items[:2], three]), "cpu")
    emb = torch.nn.functional.normalize(torch.randn(*enc.labels.shape, 5, generator=torch.Generator().manual_seed(1)), dim=-1)
    extra = float(cross.compute_loss(emb, enc, "affinity") - plain.compute_loss(emb, enc, "affinity"))
    # reference: every bin of the three mixtures in one N x N affinity, mixture i's talkers
    # numbered from 3i (the most talkers of a mixture is 3), inactive and padded bins left out
    keep = enc.mask.reshape(-1)
    labels = (enc.labels + 3 * torch.arange(3)[:, None]).reshape(-1)[keep]
    assert set(labels.tolist()) == {0, 1, 3, 4, 6, 7, 8}
    v = emb.reshape(-1, 5)[keep].double()
    y = torch.nn.functional.one_hot(labels, 9).double()
    ref = _weighted_affinity_reference(v, y, enc.weights.reshape(-1)[keep].double())
    assert extra == pytest.approx(0.5 * ref, rel=1e-4)
    assert cross.get_config()["cross_mixture_weight"] == 0.5
    with pytest.raises(ValueError, match="cross_mixture_weight"):
        AudioDomain(cross_mixture_weight=-1.0)


def test_cross_mixture_loss_tells_voices_from_a_shared_plane(items):
    """Embeddings that put every mixture's first talker on e0 and second on e1 are perfect for
    each mixture alone; only the cross-mixture loss prefers a direction per talker."""
    d = AudioDomain(weights="magnitude")
    enc = d.encode(d.collate(items[:2]), "cpu")
    labels = enc.labels.clamp_min(0)
    eye = torch.eye(4)
    shared = eye[labels]  # (2, n, 4): talker k of any mixture -> e_k
    own = eye[labels + 2 * torch.arange(2)[:, None]]  # talker k of mixture i -> e_{2i+k}
    for loss in ("affinity", "whitened_kmeans"):
        per_mixture = [float(d.compute_loss(e, enc, loss)) for e in (shared, own)]
        assert per_mixture[0] == pytest.approx(per_mixture[1], abs=1e-5)
        across = [float(d._cross_mixture_loss(e, enc, loss)) for e in (shared, own)]
        assert across[0] > across[1] + 0.1, loss


def test_mask_loss_leaves_out_mixtures_with_more_sources_than_masks():
    g = torch.Generator().manual_seed(0)
    sources = [0.1 * torch.randn(k, 4000, generator=g) for k in (2, 3, 2)]
    items = [{"mixture": s.sum(0), "sources": s} for s in sources]
    d = AudioDomain()
    masks = torch.rand(3, 2, *d.encode(d.collate(items[:1]), "cpu").features.shape[1:], generator=g)
    together = d._mask_loss(masks, d.encode(d.collate(items), "cpu"))
    # the 3-talker mixture adds nothing (two masks cannot hold three sources); the others count
    # as they do in a batch of their own
    alone = [d._mask_loss(masks[i : i + 1], d.encode(d.collate([items[i]]), "cpu")) for i in (0, 2)]
    torch.testing.assert_close(together, (alone[0] + alone[1]) / 2)
    only_three = d._mask_loss(masks[1:2], d.encode(d.collate(items[1:2]), "cpu"))
    assert float(only_three) == 0.0


def test_auto_inference_uses_the_mask_head_where_the_count_matches(items):
    torch.manual_seed(0)
    models = {
        mode: build_model("audio", network_params={**SMALL_NET, "mask_sources": 2}, domain_options={"inference": mode})
        for mode in ("auto", "masks", "clusters")
    }
    state = models["auto"].network.state_dict()
    for m in models.values():
        m.network.load_state_dict(state)
    n = min(items[0]["mixture"].shape[0], items[1]["mixture"].shape[0])
    mix = torch.stack([items[0]["mixture"][:n], items[1]["mixture"][:n]])  # (2, time)
    two = {mode: m.separate(mix, n_sources=2) for mode, m in models.items()}
    torch.testing.assert_close(two["auto"], two["masks"])
    assert not torch.allclose(two["auto"], two["clusters"])
    # Another count than the head's: clustering, as inference="clusters" does.
    torch.testing.assert_close(models["auto"].separate(mix, n_sources=3), models["clusters"].separate(mix, n_sources=3))
    # Per item within one batch: 2 clusters -> the head, 3 clusters -> clustering.
    d = models["auto"].domain
    enc = d.encode(d.collate(items[:2]), "cpu")
    output = models["auto"].network.eval()(enc.features)
    labels = torch.randint(0, 2, enc.mask.shape, generator=torch.Generator().manual_seed(0))
    labels[1, :3] = torch.tensor([0, 1, 2])
    decoded = {mode: models[mode].domain.decode(enc, labels, None, output) for mode in models}
    assert [o.shape[0] for o in decoded["auto"]] == [2, 3]
    torch.testing.assert_close(decoded["auto"][0], decoded["masks"][0])
    torch.testing.assert_close(decoded["auto"][1], decoded["clusters"][1])
    # A network without a head: "auto" is clustering.
    torch.manual_seed(0)
    plain = build_model("audio", network_params=SMALL_NET, domain_options={"inference": "auto"})
    torch.manual_seed(0)
    clusters = build_model("audio", network_params=SMALL_NET, domain_options={"inference": "clusters"})
    torch.testing.assert_close(plain.separate(mix, n_sources=2), clusters.separate(mix, n_sources=2))


def test_metrics_match_direct_computation(items, model):
    d = model.domain
    outs = model.predict_items(items[:2])
    enc = d.encode(d.collate(items[:2]), "cpu")
    metric = d.metrics()
    metric.update(outs, enc)
    got = metric.compute()
    want = [separation_scores(it["sources"][None].double(), o[None].double(), it["mixture"][None].double()) for it, o in zip(items[:2], outs)]
    assert got["sdri"] == pytest.approx(np.mean([float(w["sdri"].mean()) for w in want]), abs=1e-6)
    assert got["si_sdri"] == pytest.approx(np.mean([float(w["si_sdri"].mean()) for w in want]), abs=1e-6)
    assert got["count_accuracy"] == 1.0


def test_separate_shapes_rates_and_kinds(model, items):
    mix = items[0]["mixture"]
    one = model.separate(mix, n_sources=2)
    assert isinstance(one, torch.Tensor) and one.shape == (2, mix.shape[0])
    torch.testing.assert_close(one.sum(0), mix, atol=1e-4, rtol=0)  # binary masks partition the mixture
    batch = model.separate(np.stack([mix.numpy(), mix.numpy()]), n_sources=3)
    assert isinstance(batch, np.ndarray) and batch.shape == (2, 3, mix.shape[0])
    up = torch.from_numpy(np.interp(np.arange(2 * len(mix)) / 2, np.arange(len(mix)), mix.numpy())).float()
    at16k = model.separate(up, n_sources=2, sample_rate=16000)
    assert at16k.shape == (2, up.shape[0])
    auto = model.separate(mix)  # "auto": between 2 and max_sources
    assert 2 <= auto.shape[0] <= model.domain.max_sources


def test_separate_files_and_stereo(model, items, tmp_path):
    mix = items[1]["mixture"].numpy()
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([mix, mix], 1), 16000)
    with pytest.warns(UserWarning, match="downmixing to mono"):
        out = model.separate(str(path), n_sources=2)
    assert out.shape == (2, len(mix))


def test_separate_rejects_bad_input(model):
    with pytest.raises(ValueError, match="finite"):
        model.separate(torch.tensor([0.1, float("nan")] * 1000))
    with pytest.raises(ValueError, match="silent or constant"):
        model.separate(torch.full((4000,), 0.3))
    with pytest.raises(ValueError, match="at least one STFT frame"):
        model.separate(torch.randn(100))
    with pytest.raises(ValueError, match="more than the input can hold"):
        x = torch.zeros(2000)
        x[1000] = 1.0  # a click: a handful of active bins
        model.separate(x, n_sources=5000)
    with pytest.raises(TypeError, match="'mixture' must be a tensor, an array or a file path"):
        model.separate([0.1, 0.2])
    with pytest.raises(ValueError, match="'n_sources' parameter of separate"):
        model.separate(torch.randn(4000), n_sources=0)
    clipped = torch.randn(8000, generator=torch.Generator().manual_seed(0)).clamp(-0.3, 0.3) / 0.3
    with pytest.warns(UserWarning, match="clipped"):
        model.separate(clipped, n_sources=2)
    with pytest.warns(UserWarning, match="clipped"):  # clipped, then scaled down
        model.separate(0.25 * clipped, n_sources=2)
    clean = torch.randn(8000, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean signal at full scale is not clipped
        model.separate(clean / clean.abs().max(), n_sources=2)


def test_separate_more_bad_input(model, items, tmp_path):
    with pytest.raises(ValueError, match="at least one mixture"):
        model.separate(np.zeros((0, 8000), np.float32))
    with pytest.raises(ValueError, match=r"\(time, channels\) recording"):
        model.separate(np.zeros((8000, 2), np.float32) + np.random.default_rng(0).random((8000, 2)))
    path = tmp_path / "mix.wav"
    sf.write(path, items[0]["mixture"].numpy(), 8000)
    with pytest.raises(TypeError, match="'sample_rate' parameter of separate"):
        model.separate(str(path), sample_rate="8k")
    with pytest.raises(ValueError, match="'mixture' waveform.*Item 1 has keys \\['image'\\]"):
        model.domain.collate([items[0], {"image": np.zeros(8)}])


def test_separation_is_scale_invariant_even_near_float32_limits(model, items):
    mix = items[2]["mixture"]
    ref = model.separate(mix, n_sources=2)
    for scale in (1e-10, 1e-3, 1e5, 3e37):  # 3e37: the STFT would overflow float32 without rescaling
        out = model.separate(mix.double() * scale, n_sources=2) / scale
        assert bool(torch.isfinite(out).all())
        # Equal up to source order, and up to the odd time-frequency bin whose nearest center
        # flips with float rounding (an untrained network's clusters are close together).
        err = min((out - ref).norm(), (out - ref.flip(0)).norm())
        assert float(err) < 0.02 * float(ref.norm())


def test_save_load_roundtrip_and_cli(model, items, tmp_path):
    path = model.save(tmp_path / "m")
    loaded = embedseg.load(path)
    assert loaded.domain.get_config() == model.domain.get_config()
    mix = items[0]["mixture"]
    torch.testing.assert_close(loaded.separate(mix, n_sources=2), model.separate(mix, n_sources=2))
    from embedseg.cli import main

    wav = tmp_path / "mix.wav"
    sf.write(wav, mix.numpy(), 8000)
    assert main(["separate", str(path), str(wav), "--out", str(tmp_path / "out"), "--n-sources", "2"]) == 0
    a, rate = sf.read(tmp_path / "out" / "mix_s1.wav")
    assert rate == 8000 and a.shape == (len(mix),)
    with pytest.raises(SystemExit):  # argparse rejects the count before anything runs
        main(["separate", str(path), str(wav), "--out", str(tmp_path / "o2"), "--n-sources", "0"])


def test_fit_reduces_the_loss(items):
    model = embedseg.fit(items, domain="audio", network_params=SMALL_NET, epochs=8, batch_size=4, lr=5e-3, seed=0, progress=False, device="cpu")
    d = model.domain
    enc = d.encode(d.collate(items), "cpu")
    trained = float(d.compute_loss(model.embed(enc), enc, "affinity"))
    torch.manual_seed(0)
    fresh = build_model("audio", network_params=SMALL_NET)
    before = float(d.compute_loss(fresh.embed(enc), enc, "affinity"))
    assert trained < before


def test_shipped_model_loads_and_separates(items):
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "pretrained" / "audio-speech-8k"
    size = sum(f.stat().st_size for f in folder.iterdir())
    assert size < 20 * 2**20
    model = embedseg.load(folder)
    assert model.full_config()["network"]["name"] == "dc_compact"
    out = model.separate(items[0]["mixture"], n_sources=2)
    assert out.shape == (2, items[0]["mixture"].shape[0]) and torch.isfinite(out).all()


def test_chunk_masks_are_put_in_one_source_order():
    from domains.audio.domain import _align_sources

    g = torch.Generator().manual_seed(0)
    prev = torch.rand(2, 2, 30, 5, generator=g)
    prev = torch.stack([prev[:, 0], 1 - prev[:, 0]], 1)  # (batch, 2 sources, frames, freqs)
    # The next window starts 10 frames into the previous one; item 0 has its sources swapped.
    cur = torch.cat([prev[:, :, 10:], torch.rand(2, 2, 10, 5, generator=g)], 2)
    cur[0] = cur[0].flip(0)
    aligned = _align_sources((0, prev), (10, cur))
    torch.testing.assert_close(aligned[:, :, :20], prev[:, :, 10:])


def test_long_recordings_are_embedded_in_chunks_and_separate_as_well(items):
    model = embedseg.load("pretrained/audio-speech-8k")
    # One conversation of two speakers, several seconds long: their utterances said again and
    # again, so each speaker is one source throughout.
    item = next(it for it in items if it["sources"].shape[0] == 2)
    refs = torch.cat([item["sources"]] * 6, dim=1)  # (2, time)
    mix = refs.sum(0)
    whole = model.separate(mix, n_sources=2)
    chunked_model = embedseg.load("pretrained/audio-speech-8k")
    chunked_model.domain.CHUNK_FRAMES, chunked_model.domain.CONTEXT_FRAMES = 200, 100
    with network_inputs(chunked_model.network) as shapes:
        chunked = chunked_model.separate(mix, n_sources=2)
    frames = [s[1] for s in shapes]
    assert max(frames) <= 200 + 2 * 100 and len(frames) > 2  # no pass saw more than a chunk and its context
    # The clustering saw the whole recording: the speakers do not swap between chunks, and the
    # separation is as good as embedding the recording whole.
    score = {name: float(separation_scores(refs[None].double(), out[None].double(), mix[None].double())["sdri"].mean())
             for name, out in (("whole", whole), ("chunked", chunked))}
    assert score["chunked"] > score["whole"] - 1.5, score


def test_count_loss_is_the_cross_entropy_of_the_counts(tiny_corpus):
    """The count head's term: float64 cross-entropy against each mixture's talkers, mixtures
    of more talkers than the head counts left out, scaled by ``count_weight``."""
    g = torch.Generator().manual_seed(0)
    sources = [0.1 * torch.randn(k, 4000, generator=g) for k in (2, 3, 4, 2)]
    batch = [{"mixture": s.sum(0), "sources": s} for s in sources]
    d = AudioDomain(count_weight=0.5)
    enc = d.encode(d.collate(batch), "cpu")
    logits = torch.randn(4, 3, generator=g, dtype=torch.float64)  # counts 1..3: the 4-talker one is out
    emb = torch.nn.functional.normalize(torch.randn(*enc.labels.shape, 5, generator=g), dim=-1)
    extra = float(d.compute_loss({"embeddings": emb, "counts": logits.float()}, enc, "affinity")
                  - d.compute_loss(emb, enc, "affinity"))
    log_p = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    reference = -float((log_p[0, 1] + log_p[1, 2] + log_p[3, 1]) / 3)
    assert extra == pytest.approx(0.5 * reference, rel=1e-5)
    assert d.get_config()["count_weight"] == 0.5
    none_fit = d._count_loss(torch.zeros(1, 3, requires_grad=True), d.encode(d.collate(batch[2:3]), "cpu"))
    assert float(none_fit.detach()) == 0.0 and none_fit.requires_grad
    off = AudioDomain(count_weight=0.0)
    assert float(off.compute_loss({"embeddings": emb, "counts": logits.float()}, enc, "affinity")) == pytest.approx(
        float(off.compute_loss(emb, enc, "affinity")))
    with pytest.raises(ValueError, match="'count_weight' parameter of AudioDomain"):
        AudioDomain(count_weight=-1.0)


def test_auto_count_comes_from_the_count_head():
    d = AudioDomain(max_sources=3)
    mask = torch.ones(3, 50, dtype=torch.bool)
    mask[2, 2:] = False  # two active bins: at most two sources
    logits = torch.tensor([[9.0, 0.0, 1.0, 5.0], [0.0, 3.0, 1.0, 0.0], [0.0, 0.0, 4.0, 0.0]])
    # class i is i + 1 talkers; "auto" chooses between 2 and max_sources (3), never 1 or 4
    counts = d.cluster_counts(None, mask, "auto", output={"embeddings": None, "counts": logits})
    assert counts.tolist() == [3, 2, 2]
    assert d.cluster_counts(None, mask, 2, output={"counts": logits}) == 2  # a given count stands
    assert d.cluster_counts(None, mask, "auto", output=torch.zeros(3, 50, 4)) == "auto"  # no head: the clusterer counts
    assert d.cluster_counts(None, mask, "auto") == "auto"


def test_separate_auto_clusters_into_the_head_count(items, tmp_path):
    torch.manual_seed(0)
    model = build_model("audio", network_params={**SMALL_NET, "mask_sources": 2, "count_sources": 4})
    n = min(items[0]["mixture"].shape[0], items[1]["mixture"].shape[0])
    mix = torch.stack([items[0]["mixture"][:n], items[1]["mixture"][:n]])  # (2, time)
    for talkers in (2, 3, 4):
        with torch.no_grad():  # a head sure of this count whatever it hears
            model.network.count_head.classify.weight.zero_()
            model.network.count_head.classify.bias.copy_(10.0 * torch.nn.functional.one_hot(torch.tensor(talkers - 1), 4))
        out = model.separate(mix, n_sources="auto")
        assert out.shape == (2, talkers, n)
        # clustering into the head's count separates as a given count does
        torch.testing.assert_close(out, model.separate(mix, n_sources=talkers))
    model.save(tmp_path / "counting")
    loaded = embedseg.load(tmp_path / "counting")
    assert loaded.network.count_sources == 4 and loaded.domain.count_weight == 1.0
    torch.testing.assert_close(loaded.separate(mix, n_sources="auto"), out)


def test_long_recordings_count_over_all_their_chunks(items):
    """A chunked pass averages the chunks' count log-probabilities, weighted by their frames."""
    torch.manual_seed(0)
    model = build_model("audio", network_params={**SMALL_NET, "mask_sources": 2, "count_sources": 4})
    model.network.eval()
    mix = torch.cat([items[0]["mixture"]] * 4)
    d = model.domain
    enc = d.encode(d.collate([mix]), "cpu")
    t = enc.features.shape[1]
    d.CHUNK_FRAMES, d.CONTEXT_FRAMES = 150, 40
    assert t > 2 * 150
    out = d.forward(model.engine().run, enc)
    expected = 0
    for start in range(0, t, 150):
        stop, lo, hi = min(start + 150, t), max(0, start - 40), min(t, start + 150 + 40)
        with torch.no_grad():
            logits = model.network(enc.features[:, lo:hi])["counts"]
        expected = expected + torch.log_softmax(logits, -1) * (stop - start) / t
    torch.testing.assert_close(out["counts"], expected)
    assert set(out) == {"embeddings", "masks", "counts"}
