import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import io as skio

import embedseg
from embedseg.api import build_model
from embedseg.inference import Runner
from embedseg.metrics import matching
from embedseg.networks import embeddings_of
from domains.image import ImageDomain, SyntheticScenes
from domains.image.folder import Augmented
from toys import network_inputs


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_model("image", network_params={"dim": 8, "base": 8}, clusterer={"name": "kmeans", "params": {"n_clusters": 4, "n_init": 1, "max_iter": 10}})
    m.network.eval()
    return m


def _item(h, w, ids=(0, 1, 300), seed=0):
    rng = np.random.default_rng(seed)
    lab = np.zeros((h, w), dtype=np.int64)
    lab[: h // 2, : w // 2] = ids[1]
    lab[h // 2 :, w // 2 :] = ids[2]
    img = rng.random((h, w)).astype(np.float32) + (lab > 0)
    return {"image": img, "labels": lab}


def test_registered_by_name():
    assert "image" in embedseg.list_domains()
    d = embedseg.create_domain("image", channels=3)
    assert isinstance(d, ImageDomain) and d.get_config()["channels"] == 3


def test_collate_pads_relabels_and_masks():
    d = ImageDomain()
    batch = d.collate([_item(10, 12), _item(7, 15, ids=(0, 5, 65535))])
    assert batch["image"].shape == (2, 1, 10, 15)
    assert batch["valid"][1, 7:].sum() == 0 and batch["valid"][1, :7].all()
    assert batch["valid"][0, :, 12:].sum() == 0
    lab = batch["labels"]
    assert lab[1, :7, :15].unique().tolist() == [0, 1, 2]  # 16-bit ids with gaps -> 0..n
    assert (lab[~batch["valid"]] == -1).all()
    assert batch["sizes"] == [(10, 12), (7, 15)]


def test_intensity_normalization_ignores_dtype_and_range():
    d = ImageDomain()
    rng = np.random.default_rng(0)
    img8 = rng.integers(0, 256, size=(20, 20)).astype(np.uint8)
    a = d.prepare_image(img8)
    b = d.prepare_image(img8.astype(np.uint16) * 257)
    c = d.prepare_image(img8.astype(np.float64) / 255.0)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)
    # RGBA: alpha dropped, RGB averaged to gray.
    rgba = np.dstack([img8, img8, img8, np.full_like(img8, 7)])
    torch.testing.assert_close(d.prepare_image(rgba), a)
    assert ImageDomain(channels=3).prepare_image(img8).shape == (3, 20, 20)
    # A constant image is all zeros, not a division by zero.
    assert d.prepare_image(np.full((5, 5), 9, np.uint16)).abs().max() == 0


def test_encode_labels_background_modes_and_weights():
    item = {"image": np.zeros((4, 4), np.float32), "labels": np.array([[0] * 4] * 3 + [[7, 7, 7, 9]])}
    for background, bg_label in (("part", 0), ("ignore", -1)):
        d = ImageDomain(background=background)
        enc = d.encode(d.collate([item]), torch.device("cpu"))
        assert enc.labels.shape == (1, 16) and enc.mask.all()
        assert (enc.labels[0, :12] == bg_label).all()
        assert enc.labels[0, 12:].tolist() == [1, 1, 1, 2]
    # Balanced weights: 1/sqrt(part size), normalized to mean 1 over labelled pixels.
    d = ImageDomain()
    enc = d.encode(d.collate([item]), torch.device("cpu"))
    raw = np.array([1 / np.sqrt(12)] * 12 + [1 / np.sqrt(3)] * 3 + [1.0])
    np.testing.assert_allclose(enc.weights[0].numpy(), raw / raw.mean(), rtol=1e-6)
    assert ImageDomain(weighting="none").encode(d.collate([item]), torch.device("cpu")).weights is None


def test_contact_pixels_are_instance_pixels_near_another_instance():
    # Two instances touching along a column, a third apart, background between: only the
    # pixels of 1 and 2 within 1 pixel (Chebyshev) of each other are on a contact border.
    gt = torch.tensor([[
        [1, 1, 2, 2, 0, 0, 3],
        [1, 1, 2, 2, 0, 0, 3],
        [1, 1, 0, 0, 0, 0, 3],
        [0, 0, 0, 0, 0, 0, 0],
    ]])
    got = ImageDomain.contact_pixels(gt, 1)[0]
    want = torch.zeros_like(got)
    want[0:2, 1] = want[0:2, 2] = True  # the touching columns
    want[2, 1] = True  # diagonal neighbour of a 2
    assert torch.equal(got, want)
    # brute force at radius 2 on a random map
    g = torch.Generator().manual_seed(0)
    gt = torch.randint(0, 4, (2, 9, 11), generator=g)
    got = ImageDomain.contact_pixels(gt, 2)
    for b, y, x in itertools.product(range(2), range(9), range(11)):
        own = int(gt[b, y, x])
        win = gt[b, max(0, y - 2):y + 3, max(0, x - 2):x + 3]
        assert bool(got[b, y, x]) == (own > 0 and bool(((win > 0) & (win != own)).any()))


def test_contact_weighting_raises_touching_pixels_and_keeps_mean_one():
    labels = np.zeros((8, 8), np.int64)
    labels[1:5, 1:4], labels[1:5, 4:7] = 1, 2  # touching along x = 3 | 4
    item = {"image": np.zeros((8, 8), np.float32), "labels": labels}
    plain = ImageDomain(weighting="balanced")
    contact = ImageDomain(weighting="contact")
    w0 = plain.encode(plain.collate([item]), torch.device("cpu")).weights[0].reshape(8, 8)
    w1 = contact.encode(contact.collate([item]), torch.device("cpu")).weights[0].reshape(8, 8)
    assert w1.mean().item() == pytest.approx(1.0)
    border = ImageDomain.contact_pixels(torch.from_numpy(labels)[None], ImageDomain.CONTACT_RADIUS)[0]
    ratio = w1 / w0
    # Border pixels weigh 1 + CONTACT_GAIN times the others, relative to balanced weights.
    assert torch.allclose(ratio[border], ratio[~border].max() * (1 + ImageDomain.CONTACT_GAIN))
    assert torch.allclose(ratio[~border], ratio[~border][0])


def test_weights_zero_on_padding_and_ignored():
    d = ImageDomain(background="ignore")
    enc = d.encode(d.collate([_item(6, 6), _item(4, 8)]), torch.device("cpu"))
    assert (enc.weights[enc.labels < 0] == 0).all()
    active = enc.labels >= 0
    for b in range(2):
        assert enc.weights[b][active[b]].mean() == pytest.approx(1.0)


def test_compute_loss_is_affinity_plus_foreground_bce(model):
    d = model.domain
    enc = d.encode(d.collate([_item(12, 16), _item(9, 16)]), torch.device("cpu"))
    out = model.network(enc.features)
    got = d.compute_loss(out, enc, "affinity")
    labels = enc.labels.masked_fill(~enc.mask, -1)
    emb_loss = embedseg.affinity_loss(out["embeddings"], labels, enc.weights)
    m = enc.mask.float()
    bce = F.binary_cross_entropy_with_logits(out["foreground"], enc.context["fg_target"], reduction="none")
    torch.testing.assert_close(got, emb_loss + (bce * m).sum() / m.sum())


def _dense_window_loss(emb, labels, boost, weighting):
    """The weighted affinity loss of one window from its n x n affinity matrix, in float64."""
    active = labels >= 0
    v, lab = emb[active].double(), labels[active]
    if weighting == "none":
        w = torch.ones(len(lab), dtype=torch.float64)
    else:
        ids, counts = torch.unique(lab, return_counts=True)
        w = counts[torch.searchsorted(ids, lab)].double().rsqrt()
        if boost is not None:
            w = w * boost[active].double()
        w = w / w.mean()
    y = (lab[:, None] == lab[None, :]).double()
    return ((w[:, None] * w[None, :]) * (v @ v.T - y).square()).sum() / w.sum().square()


@pytest.mark.parametrize("weighting", ["contact", "balanced", "none"])
def test_local_loss_is_the_affinity_loss_of_each_window(weighting):
    d = ImageDomain(weighting=weighting, local_window=8)
    scenes = SyntheticScenes(3, size=32, max_objects=6, seed=4)
    items = [scenes[0], scenes[1], {"image": scenes[2]["image"][:, :27, :22], "labels": scenes[2]["labels"][:27, :22]}]
    enc = d.encode(d.collate(items), torch.device("cpu"))
    b, n = enc.labels.shape
    emb = F.normalize(torch.randn(b, n, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64), dim=-1)
    got = d.local_loss({"embeddings": emb}, enc, "affinity", offset=(3, 6))
    labels = enc.labels.masked_fill(~enc.mask, -1).reshape(b, 32, 32)
    boost = enc.context.get("boost")  # set with "contact" weighting only
    grid_e, grid_b = emb.reshape(b, 32, 32, 5), None if boost is None else boost.reshape(b, 32, 32)
    losses = []
    for i in range(b):
        for y in range(3, 32 - 7, 8):  # whole windows from the offset: rows 3..26, columns 6..29
            for x in range(6, 32 - 7, 8):
                lab = labels[i, y : y + 8, x : x + 8].reshape(-1)
                if (lab >= 0).any():  # windows of padding only are left out of the mean
                    e = grid_e[i, y : y + 8, x : x + 8].reshape(-1, 5)
                    bo = None if grid_b is None else grid_b[i, y : y + 8, x : x + 8].reshape(-1)
                    losses.append(_dense_window_loss(e, lab, bo, weighting))
    assert len(losses) == 2 * 9 + 6  # the cropped item's last window column (x 22-29) is padding
    torch.testing.assert_close(got, torch.stack(losses).mean())


def test_compute_loss_adds_the_local_term_and_random_offsets_vary(model):
    d = ImageDomain(weighting="contact", local_window=8)
    enc = d.encode(d.collate([_item(20, 24), _item(17, 30)]), torch.device("cpu"))
    out = model.network(enc.features)
    plain = ImageDomain(weighting="contact").compute_loss(out, enc, "affinity")
    torch.manual_seed(3)
    got = d.compute_loss(out, enc, "affinity")
    torch.manual_seed(3)
    torch.testing.assert_close(got, plain + d.local_loss(out, enc, "affinity"))
    offsets = set()
    for seed in range(20):
        torch.manual_seed(seed)
        offsets.add(d.local_loss(out, enc, "affinity").item())
    assert len(offsets) > 1
    # A window larger than the batch's images adds nothing.
    big = ImageDomain(local_window=64)
    assert big.local_loss(out, enc, "affinity").item() == 0.0
    with pytest.raises(ValueError, match="'loss'"):
        d.local_loss(out, enc, "l2")
    assert "local_window" in d.get_config() and d.get_config()["local_window"] == 8


def test_predict_items_crops_padding_and_reports_metrics(model):
    items = [_item(20, 24), _item(17, 30)]
    outs = model.predict_items(items)
    assert [tuple(o.shape) for o in outs] == [(20, 24), (17, 30)]
    assert all(o.dtype == torch.int64 and int(o.min()) >= 0 for o in outs)
    metrics = model.evaluate(items, batch_size=2)
    assert set(metrics) == {"ap50", "ap75", "f1", "ap", "pq", "mean_matched_iou", "ari"}


@pytest.mark.parametrize(
    "image",
    [
        np.random.default_rng(0).integers(0, 65535, (33, 41)).astype(np.uint16),
        np.random.default_rng(0).random((33, 41, 3)),
        np.random.default_rng(0).integers(0, 255, (33, 41, 4)).astype(np.uint8),
        torch.rand(1, 33, 41),
        np.random.default_rng(0).random((33, 41)) * 1e-9 + 7.0,  # low contrast, in physical units
    ],
    ids=["uint16", "rgb-float-hwc", "rgba", "tensor-chw", "low-contrast"],
)
def test_segment_accepts_many_image_kinds(model, image):
    lab = model.segment(image)
    assert lab.shape == (33, 41) and lab.dtype == torch.int64
    assert model.predict(image).shape == (33, 41)


def test_segment_bad_input(model):
    with pytest.raises(ValueError, match="finite"):
        model.segment(np.full((8, 8), np.nan))
    with pytest.raises(ValueError, match="empty"):
        model.segment(np.zeros((0, 8)))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        model.segment(np.zeros((2, 3, 8, 8)))
    with pytest.raises(ValueError, match="n_instances"):
        model.segment(np.random.default_rng(0).random((8, 8)), n_instances=-1)
    with pytest.raises(ValueError, match="'image' is constant"):
        model.segment(np.full((8, 8), 3, np.uint8))


def test_intensity_normalization_is_scale_invariant(model):
    img = SyntheticScenes(1, size=48, max_objects=4, seed=9)[0]["image"]
    x = np.asarray(img, dtype=np.float64)
    base = model.segment(x)
    for scale, offset in ((1e-9, 0.0), (1e6, -3.0), (1e-12, 1e-6)):
        assert torch.equal(model.segment(x * scale + offset), base)


@pytest.mark.parametrize(
    "shape,channel_axis,want",
    [
        ((3, 20, 3), "auto", (3, 20)),  # a 3-pixel-high RGB image, not 3 slices of (20, 3)
        ((20, 30, 4), "auto", (20, 30)),
        ((3, 20, 30), 0, (20, 30)),
        ((20, 30, 3), -1, (20, 30)),
        ((20, 30), None, (20, 30)),
        ((1, 20, 30), "auto", (20, 30)),
    ],
)
def test_channel_axis_is_explicit_or_the_convention(model, shape, channel_axis, want):
    img = np.random.default_rng(0).random(shape)
    assert tuple(model.segment(img, channel_axis=channel_axis).shape) == want


@pytest.mark.parametrize(
    "shape,channel_axis,match",
    [
        ((3, 20, 30), "auto", "ambiguous.*channel_axis=0"),  # a stack of 3 slices, or RGB?
        ((2, 20, 30), "auto", "ambiguous"),
        ((20, 30, 3), None, "channel_axis=None must be a 2-D"),
        ((20, 30), 0, "must name an axis of a 3-D image"),
        ((20, 30, 7), -1, "1 \\(gray\\), 2 \\(gray \\+ alpha\\), 3 \\(RGB\\) or 4"),
    ],
)
def test_an_ambiguous_or_wrong_channel_layout_is_refused(model, shape, channel_axis, match):
    with pytest.raises(ValueError, match=match):
        model.segment(np.random.default_rng(0).random(shape), channel_axis=channel_axis)
    with pytest.raises(TypeError, match="'channel_axis' must be None, an int or 'auto'"):
        model.segment(np.zeros((4, 4)), channel_axis="last")


def _embed(domain, model, x):
    """The (H*W, dim) embeddings and (H*W,) foreground probabilities inference clusters for one
    prepared image (the domain's forward: its views merged)."""
    encoded = domain.encode(domain.collate_prepared([x]), torch.device("cpu"))
    out = domain.forward(Runner(model.network), encoded)
    return embeddings_of(out)[0], torch.sigmoid(out["foreground"][0])


def test_large_images_are_segmented_tile_by_tile_like_whole(model):
    scene = SyntheticScenes(1, size=150, min_objects=12, max_objects=12, seed=4)[0]
    trained = embedseg.load("pretrained/image-shapes")
    whole = trained.segment(scene["image"]).numpy()
    tiled_model = embedseg.load("pretrained/image-shapes")
    tiled_model.domain.tile_size, tiled_model.domain.tile_overlap = 64, 24
    with network_inputs(tiled_model.network) as shapes:
        tiled = tiled_model.segment(scene["image"]).numpy()
    assert max(max(s[-2:]) for s in shapes) == 64  # no pass saw more than a tile
    truth = np.asarray(scene["labels"])
    # Objects cut by tile borders come out whole: as good as the whole-image segmentation.
    assert matching(truth, tiled, 0.5)["f1"] >= matching(truth, whole, 0.5)["f1"] - 0.1
    assert matching(whole, tiled, 0.5)["f1"] > 0.85


def test_a_count_of_instances_needs_an_image_decoded_whole(model):
    m = build_model("image", network_params={"dim": 8, "base": 8}, domain_options={"tile_size": 32, "tile_overlap": 8})
    with pytest.raises(ValueError, match="'n_instances'.*tile_size=32"):
        m.segment(np.random.default_rng(0).random((40, 40)), n_instances=2)


def test_flip_views_average_the_affinities_of_mirrored_views(model):
    x = ImageDomain().prepare_image(np.random.default_rng(2).random((20, 28)))
    single, fg_single = _embed(ImageDomain(flip_views=1), model, x)
    mirrored, fg_mirrored = _embed(ImageDomain(flip_views=1), model, x.flip(2))
    mirrored = mirrored.reshape(20, 28, -1).flip(1).reshape(20 * 28, -1)
    fg_mirrored = fg_mirrored.reshape(20, 28).flip(1).reshape(-1)
    two, fg_two = _embed(ImageDomain(flip_views=2), model, x)
    assert two.shape == (20 * 28, 2 * single.shape[1])
    torch.testing.assert_close(two.norm(dim=-1), torch.ones(20 * 28))
    # The cosine affinity of any two pixels is the mean of their affinities in the two views.
    want = 0.5 * (single @ single.T + mirrored @ mirrored.T)
    torch.testing.assert_close(two @ two.T, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(fg_two, 0.5 * (fg_single + fg_mirrored), atol=1e-6, rtol=1e-5)


def test_four_flip_views_make_affinities_mirror_invariant(model):
    x = ImageDomain().prepare_image(np.random.default_rng(3).random((16, 24)))
    d = ImageDomain(flip_views=4)
    emb, fg = _embed(d, model, x)
    emb_m, fg_m = _embed(d, model, x.flip(1))  # the image mirrored top-bottom
    emb_m = emb_m.reshape(16, 24, -1).flip(0).reshape(16 * 24, -1)
    torch.testing.assert_close(emb_m @ emb_m.T, emb @ emb.T, atol=1e-5, rtol=0)
    torch.testing.assert_close(fg_m.reshape(16, 24).flip(0).reshape(-1), fg, atol=1e-6, rtol=0)


def test_evaluate_scores_what_segment_returns(model):
    items = [_item(20, 28, seed=s) for s in range(3)]
    metric = model.domain.metrics()
    for item in items:
        batch = model.domain.encode(model.domain.collate([item]), torch.device("cpu"))
        metric.update([model.segment(item["image"])], batch)
    assert model.evaluate(items, batch_size=1) == pytest.approx(metric.compute(), abs=1e-12)


def test_flip_views_are_not_used_with_coordinate_channels():
    torch.manual_seed(0)
    m = build_model("image", domain_options={"coords": True}, network_params={"dim": 8, "base": 8})
    x = m.domain.prepare_image(np.random.default_rng(4).random((16, 16)))
    encoded = m.domain.encode(m.domain.collate_prepared([x]), torch.device("cpu"))
    assert m.domain.flip_views == 2 and embeddings_of(m.embed(encoded)).shape == (1, 256, 8)


def test_segment_batch_and_counts(model):
    imgs = [np.random.default_rng(i).random((24, 24)) for i in range(3)]
    out = model.segment_batch(imgs)
    assert len(out) == 3 and all(o.shape == (24, 24) for o in out)
    with pytest.raises(ValueError, match="one count per image"):
        model.segment_batch(imgs, n_instances=[1, 2])
    stacked = model.segment_batch(np.stack(imgs))
    assert all(torch.equal(a, b) for a, b in zip(out, stacked))


def test_segment_batch_shares_network_passes_and_matches_segment():
    torch.manual_seed(0)
    m = build_model(
        "image", network_params={"dim": 8, "base": 8}, domain_options={"tile_size": 32, "tile_overlap": 8},
        clusterer={"name": "kmeans", "params": {"n_clusters": 4, "n_init": 1, "max_iter": 10}},
    )
    # Two sizes that fit in a tile (three images of one, so a batch of 2 leaves a remainder)
    # and one that is segmented tile by tile.
    shapes = [(24, 24), (24, 30), (24, 24), (40, 40), (24, 24)]
    imgs = [_item(h, w, seed=i)["image"] for i, (h, w) in enumerate(shapes)]
    with network_inputs(m.network) as shapes:
        batched = m.segment_batch(imgs, batch_size=2)
    calls = [s[0] for s in shapes]  # the batch size of every pass
    # Per view: (24, 24) x 3 -> passes of 2 and 1, (24, 30) -> 1, (40, 40) -> its tiles, 1 each.
    views = m.domain.flip_views
    assert sorted(calls).count(2) == views and max(calls) == 2
    for img, got in zip(imgs, batched):
        assert torch.equal(got, m.segment(img))
    with pytest.raises(ValueError, match="'batch_size' parameter of segment_batch"):
        m.segment_batch(imgs, batch_size=0)


@pytest.mark.filterwarnings("ignore:'n_instances.*asked for")  # random images hold no objects
def test_segment_batch_bad_input_names_the_image(model):
    imgs = [np.random.default_rng(i).random((24, 24)) for i in range(3)]
    for bad in (None, 5, "images.png", {"image": imgs[0]}):
        with pytest.raises(TypeError, match="'images' must be a sequence of images"):
            model.segment_batch(bad)
    with pytest.raises(ValueError, match=r"use segment\(\) for a single image"):
        model.segment_batch(imgs[0])
    with pytest.raises(ValueError, match=r"images\[1\]"):
        model.segment_batch([imgs[0], np.full((24, 24), np.nan)])
    with pytest.raises(ValueError, match=r"n_instances\[2\]"):
        model.segment_batch(imgs, n_instances=[1, 2, -1])
    per_image = model.segment_batch(imgs, n_instances=np.array([1, 2, 0]))  # an array of counts
    assert all(torch.equal(a, b) for a, b in zip(model.segment_batch(imgs, n_instances=np.array(2)), model.segment_batch(imgs, n_instances=2)))
    for img, n, got in zip(imgs, (1, 2, 0), per_image):
        assert torch.equal(got, model.segment(img, n_instances=n))


def test_tune_decoding_rejects_a_single_item_and_odd_tuples(model):
    item = _item(24, 24)
    with pytest.raises(TypeError, match="wrap a single item in a list"):
        model.tune_decoding(item)
    with pytest.raises(TypeError, match="'items' must be a sequence"):
        model.tune_decoding(None)
    with pytest.raises(ValueError, match=r"\(image,\) or \(image, labels\).*3 entries"):
        model.tune_decoding([(item["image"], item["labels"], "extra")])


def test_network_input_channels_must_match_the_domain():
    with pytest.raises(ValueError, match="'in_channels' network parameter must be 1"):
        build_model("image", network_params={"in_channels": 3})
    assert build_model("image", domain_options={"channels": 3}, network_params={"in_channels": 3, "dim": 4, "base": 4})


def test_save_load_round_trip_and_cli(model, tmp_path, capsys):
    img = (np.random.default_rng(0).random((30, 30)) * 255).astype(np.uint8)
    expected = model.segment(img)
    model.save(tmp_path / "m")
    loaded = embedseg.load(tmp_path / "m")
    assert isinstance(loaded.domain, ImageDomain)
    assert torch.equal(loaded.segment(img), expected)
    skio.imsave(tmp_path / "x.png", img, check_contrast=False)
    from embedseg.cli import main

    code = main(["segment", str(tmp_path / "m"), str(tmp_path / "x.png"), "--out", str(tmp_path / "l.png"), "--overlay", str(tmp_path / "o.png")])
    assert code == 0
    np.testing.assert_array_equal(skio.imread(tmp_path / "l.png"), expected.numpy())
    assert skio.imread(tmp_path / "o.png").shape == (30, 30, 3)
    assert main(["segment", str(tmp_path / "m"), str(tmp_path / "missing.png"), "--out", str(tmp_path / "l.png")]) != 0


def test_training_data_augments_and_repeats_small_sets():
    d = ImageDomain(epoch_items=40)
    items = [_item(16, 16, seed=i) for i in range(8)]
    wrapped = d.training_data(items)
    assert isinstance(wrapped, Augmented) and len(wrapped) == 40
    assert ImageDomain(augment=False).training_data(items) is items


def test_fit_runs_a_few_steps_on_synthetic_scenes():
    model = embedseg.fit(
        SyntheticScenes(8, size=48, max_objects=4, seed=0),
        domain="image",
        max_steps=2,
        batch_size=4,
        network_params={"base": 8, "dim": 4},
        progress=False,
        seed=0,
    )
    assert isinstance(model.domain, ImageDomain)
    assert model.segment(SyntheticScenes(1, size=48, max_objects=4, seed=9)[0]["image"]).shape == (48, 48)


@pytest.mark.parametrize(
    "kwargs",
    [{"channels": 2}, {"background": "drop"}, {"weighting": "sqrt"}, {"tile_size": 16}, {"tile_overlap": 400}, {"percentiles": (5, 1)}, {"flip_views": 3}, {"flip_views": 2.0}, {"flip_views": True}, {"local_window": 2}, {"local_window": -8}, {"local_window": 8.5}],
)
def test_bad_options(kwargs):
    with pytest.raises((ValueError, TypeError)):
        ImageDomain(**kwargs)


def test_mismatched_labels_and_negative_ids():
    d = ImageDomain()
    with pytest.raises(ValueError, match="size"):
        d.collate([{"image": np.zeros((4, 4)), "labels": np.zeros((4, 5), int)}])
    with pytest.raises(ValueError, match=">= 0"):
        d.collate([{"image": np.zeros((4, 4)), "labels": -np.ones((4, 4), int)}])
    with pytest.raises(ValueError, match="every item"):
        d.collate([{"image": np.zeros((4, 4)), "labels": np.zeros((4, 4), int)}, {"image": np.zeros((4, 4))}])


def test_tune_decoding_picks_the_best_setting_and_keeps_it():
    from pathlib import Path

    from domains.image import matching_dataset

    model = embedseg.load(Path(__file__).resolve().parents[2] / "pretrained" / "image-shapes")
    scenes = SyntheticScenes(3, size=96, min_objects=8, max_objects=14, seed=3)
    items = [scenes[i] for i in range(3)]
    grid = {"seed_consistency": [0.8, 0.99], "merge_threshold": [0.0, 0.8]}
    dom = model.domain
    # Reference: segment the images with each setting through the public path and score them.
    scores = {}
    for sc in grid["seed_consistency"]:
        for mt in grid["merge_threshold"]:
            dom.seed_consistency, dom.merge_threshold = sc, mt
            preds = [model.segment(it["image"]).numpy() for it in items]
            m = matching_dataset([it["labels"].numpy() for it in items], preds, [0.5, 0.75])
            scores[(sc, mt)] = (m[0.5]["ap"], m[0.75]["ap"])
    result = model.tune_decoding(items, grid=grid)
    chosen = (result["settings"]["seed_consistency"], result["settings"]["merge_threshold"])
    assert scores[chosen] == max(scores.values())
    assert (result["ap50"], result["ap75"]) == scores[chosen]
    assert (dom.seed_consistency, dom.merge_threshold) == chosen
    assert dom.get_config()["seed_consistency"] == chosen[0]
    assert len(set(scores.values())) > 1  # the settings matter on these scenes


def test_tune_decoding_bad_input(model):
    item = _item(24, 24)
    with pytest.raises(ValueError, match="'grid' must map some of"):
        model.tune_decoding([item], grid={"fg_threshold": [0.5]})
    with pytest.raises(ValueError, match=r"grid\['min_size'\]"):
        model.tune_decoding([item], grid={"min_size": []})
    with pytest.raises(ValueError, match="seed_consistency"):
        model.tune_decoding([item], grid={"seed_consistency": [1.5]})
    with pytest.raises(ValueError, match="must have labels"):
        model.tune_decoding([item["image"]])
    with pytest.raises(ValueError, match="at least one annotated image"):
        model.tune_decoding([])
    with pytest.raises(ValueError, match=r"items\[0\] labels"):
        model.tune_decoding([(item["image"], item["labels"][:10])])
    with pytest.raises(TypeError, match="'grid' must be a dict"):
        model.tune_decoding([item], grid=[0.9])


def test_asking_for_more_instances_than_exist_warns(model):
    img = np.zeros((24, 24), dtype=np.float32)
    img[4:12, 4:12] = 1.0
    with pytest.warns(UserWarning, match="asked for 500 instances") as caught:
        out = model.segment(img, n_instances=500)
    assert int(out.max()) < 500
    with pytest.warns(UserWarning, match=r"images\[1\] holds only") as caught_batch:
        model.segment_batch([img, img], n_instances=[None, 500])
    # Both warnings point at the call in this file, not inside the library.
    assert {w.filename for w in [*caught, *caught_batch]} == {__file__}


def test_models_saved_before_views_and_split_off_decode_as_before(model, tmp_path):
    import json

    model.save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["domain"]["options"]["flip_views"] == 2
    assert embedseg.load(tmp_path / "m").domain.flip_views == 2  # saved explicitly: kept
    for key in ("flip_views", "split_threshold"):
        del config["domain"]["options"][key]
    config["format_version"] = 1  # a file of the first format, written before the options existed
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    old = embedseg.load(tmp_path / "m").domain
    assert (old.flip_views, old.split_threshold) == (1, -1.0)
    assert ImageDomain().flip_views == 2  # new models get the current defaults
