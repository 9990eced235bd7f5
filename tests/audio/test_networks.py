"""The audio embedding networks, over every audio network in the registry."""

import pytest
import torch

import embedseg
from domains.audio import networks  # noqa: F401  (registers the audio networks)

SMALL_PARAMS = {
    "dc_blstm": {"hidden": 8, "layers": 2, "dim": 6, "n_freqs": 17},
    "dc_compact": {"hidden": 8, "layers": 2, "dim": 6, "n_freqs": 17},
    "dc_tcn": {"channels": 8, "blocks": 3, "repeats": 2, "dim": 6, "n_freqs": 17},
    "dc_conv_blstm": {"channels": 8, "blocks": 2, "hidden": 6, "dim": 6, "n_freqs": 17},
}
AUDIO_NETWORKS = sorted(SMALL_PARAMS)
SMALL = SMALL_PARAMS["dc_compact"]


@pytest.mark.parametrize("name", AUDIO_NETWORKS)
def test_registered_and_unit_norm(name):
    assert name in embedseg.list_networks()
    net = embedseg.create_network(name, **SMALL_PARAMS[name]).eval()
    out = net(torch.randn(3, 5, 17))
    assert out.shape == (3, 5 * 17, 6)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3, 85))


@pytest.mark.parametrize("name", AUDIO_NETWORKS)
def test_mask_head_gives_softmax_masks_and_gradients(name):
    net = embedseg.create_network(name, mask_sources=3, **SMALL_PARAMS[name])
    x = torch.randn(2, 4, 17)
    out = net(x)
    assert set(out) == {"embeddings", "masks"}
    assert out["masks"].shape == (2, 3, 4, 17)
    torch.testing.assert_close(out["masks"].sum(1), torch.ones(2, 4, 17))
    (out["embeddings"].sum() + out["masks"][:, 0].sum()).backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("name", AUDIO_NETWORKS)
def test_items_are_independent_of_batch_mates(name):
    net = embedseg.create_network(name, **SMALL_PARAMS[name]).eval()
    x = torch.randn(2, 6, 17)
    torch.testing.assert_close(net(x)[:1], net(x[:1]))


def test_tcn_receptive_field_is_as_documented():
    net = embedseg.create_network("dc_tcn", channels=4, blocks=3, repeats=1, dim=3, n_freqs=5).eval()
    x = torch.randn(1, 40, 5)
    y = x.clone()
    y[0, 0] += 1.0  # change the first frame only
    diff = (net(x) - net(y)).reshape(40, 5, 3).abs().amax((1, 2))
    reach = 1 + 1 + 2 + 4  # kernel 3, dilations 1, 2, 4: frames 0..7 see frame 0
    assert bool((diff[:reach] > 0).all()) and bool((diff[reach:] == 0).all())


def test_conv_blstm_sees_the_whole_utterance():
    # The BLSTM after the convolutions carries context beyond their receptive field (1 + 2 + 4
    # frames with kernel 3 and 3 blocks): a change in the first frame reaches the last.
    torch.manual_seed(0)
    # float64: the LSTM's memory of frame 0 fades over the frames, below float32's resolution
    net = embedseg.create_network("dc_conv_blstm", channels=4, blocks=3, hidden=3, dim=3, n_freqs=5).double().eval()
    x = torch.randn(1, 24, 5, dtype=torch.float64)
    y = x.clone()
    y[0, 0] += 1.0
    diff = (net(x) - net(y)).reshape(24, 5, 3).abs().amax((1, 2))
    assert bool((diff > 0).all())


def test_defaults_match_the_documented_sizes():
    paper = embedseg.create_network("dc_blstm")
    assert (paper.hidden, paper.layers, paper.dim, paper.n_freqs) == (300, 2, 40, 129)
    compact = embedseg.create_network("dc_compact")
    assert (compact.hidden, compact.dim) == (160, 20)


def test_bad_parameters_and_input():
    with pytest.raises(ValueError, match="'dim' parameter of BLSTMEmbedding"):
        embedseg.create_network("dc_blstm", dim=1)
    with pytest.raises(TypeError, match="'hidden' parameter of CompactBLSTMEmbedding"):
        embedseg.create_network("dc_compact", hidden=1.5)
    with pytest.raises(ValueError, match="'kernel' parameter of DilatedConvEmbedding must be an odd int"):
        embedseg.create_network("dc_tcn", kernel=4)
    with pytest.raises(ValueError, match="'kernel' parameter of ConvBLSTMEmbedding must be an odd int"):
        embedseg.create_network("dc_conv_blstm", kernel=2)
    with pytest.raises(ValueError, match="'hidden' parameter of ConvBLSTMEmbedding"):
        embedseg.create_network("dc_conv_blstm", hidden=0)
    net = embedseg.create_network("dc_compact", **SMALL)
    with pytest.raises(ValueError, match="must have 17 frequency bins"):
        net(torch.zeros(1, 3, 16))


@pytest.mark.parametrize("name, layers, mask_sources", [("dc_compact", 2, 2), ("dc_blstm", 3, 0), ("dc_compact", 1, 3)])
def test_widen_blstm_keeps_the_outputs_and_trains_the_new_units(name, layers, mask_sources):
    torch.manual_seed(0)
    net = embedseg.create_network(name, n_freqs=17, dim=5, hidden=6, layers=layers, mask_sources=mask_sources).eval()
    wide = networks.widen_blstm(net, 10, seed=3).eval()
    assert type(wide) is type(net) and wide.hidden == 10 and wide.blstm.hidden_size == 10
    features = torch.randn(2, 23, 17, dtype=torch.float64)

    def outputs(network):  # {"embeddings": ..., "masks": ...} with or without a mask head
        out = network(features)
        return out if isinstance(out, dict) else {"embeddings": out}

    before, after = outputs(net.double()), outputs(wide.double())
    for key in before:
        torch.testing.assert_close(after[key], before[key], rtol=0, atol=1e-12)
    # the new units start silent, but the gradient reaches their weights from the first step
    out = outputs(wide.train())
    loss = out["embeddings"].sum() + sum(v.square().sum() for k, v in out.items() if k != "embeddings")
    loss.backward()
    grad = wide.blstm.weight_hh_l0.grad
    new_rows = torch.cat([g * 10 + torch.arange(6, 10) for g in range(4)])
    assert grad[new_rows].abs().sum() > 0
    assert networks.widen_blstm(net, 6).hidden == 6  # same width: a copy


def test_widen_blstm_bad_arguments():
    net = networks.CompactBLSTMEmbedding(hidden=8)
    with pytest.raises(ValueError, match="'hidden' parameter of widen_blstm"):
        networks.widen_blstm(net, 4)
    with pytest.raises(TypeError, match="'network' must be a BLSTMEmbedding"):
        networks.widen_blstm(networks.DilatedConvEmbedding(), 16)


@pytest.mark.parametrize("name", AUDIO_NETWORKS)
def test_count_head_gives_logits_and_leaves_the_other_heads(name):
    torch.manual_seed(0)
    net = embedseg.create_network(name, mask_sources=2, count_sources=4, **SMALL_PARAMS[name]).eval()
    x = torch.randn(3, 7, 17)
    out = net(x)
    assert set(out) == {"embeddings", "masks", "counts"} and out["counts"].shape == (3, 4)
    # without the mask head: embeddings and counts
    alone = embedseg.create_network(name, count_sources=3, **SMALL_PARAMS[name]).eval()
    assert set(alone(x)) == {"embeddings", "counts"}
    # a network with the same other weights gives the same embeddings and masks
    plain = embedseg.create_network(name, mask_sources=2, **SMALL_PARAMS[name]).eval()
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("count_head.")})
    torch.testing.assert_close(plain(x)["embeddings"], out["embeddings"])
    torch.testing.assert_close(plain(x)["masks"], out["masks"])
    # each item is counted from its own frames only
    torch.testing.assert_close(net(x[1:2])["counts"], out["counts"][1:2], rtol=1e-4, atol=1e-5)


def test_count_head_pools_like_a_float64_reference():
    torch.manual_seed(1)
    head = networks.CountHead(5, 3, hidden=4).double()
    h = torch.randn(2, 9, 5, dtype=torch.float64)
    # reference: per-frame ReLU projection, softmax attention over frames, weighted mean and std
    z = torch.relu(h @ head.frame.weight.T + head.frame.bias)
    scores = (h @ head.attention.weight.T + head.attention.bias)[..., 0]
    w = torch.exp(scores - scores.max(1, keepdim=True).values)
    w = w / w.sum(1, keepdim=True)
    mean = torch.einsum("bt,btk->bk", w, z)
    std = torch.einsum("bt,btk->bk", w, (z - mean[:, None]) ** 2).clamp_min(1e-6).sqrt()
    expected = torch.cat([mean, std], -1) @ head.classify.weight.T + head.classify.bias
    torch.testing.assert_close(head(h).double(), expected, rtol=1e-5, atol=1e-6)
    # frames the attention ignores do not count
    with torch.no_grad():
        head.attention.weight.zero_()
        head.attention.bias.zero_()
    doubled = torch.cat([h, h], dim=1)  # uniform weights: the same statistics twice over
    torch.testing.assert_close(head(doubled), head(h))


def test_with_count_head_keeps_the_network_and_adds_a_seeded_head():
    torch.manual_seed(2)
    net = embedseg.create_network("dc_compact", mask_sources=2, **SMALL).eval()
    counted = networks.with_count_head(net, 4, seed=3)
    x = torch.randn(2, 6, 17)
    assert counted.count_sources == 4 and not counted.training
    torch.testing.assert_close(counted(x)["embeddings"], net(x)["embeddings"])
    torch.testing.assert_close(counted(x)["masks"], net(x)["masks"])
    again = networks.with_count_head(net, 4, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(counted.count_head.parameters(), again.count_head.parameters()))
    other = networks.with_count_head(net, 4, seed=4)
    assert not torch.equal(counted.count_head.frame.weight, other.count_head.frame.weight)
    assert net.count_head is None  # the original is left alone
    for name in ("dc_tcn", "dc_conv_blstm"):
        small = embedseg.create_network(name, **SMALL_PARAMS[name])
        assert networks.with_count_head(small, 2).count_head.max_count == 2


def test_count_head_bad_arguments():
    with pytest.raises(ValueError, match="'count_sources' parameter of CompactBLSTMEmbedding must be 0"):
        networks.CompactBLSTMEmbedding(count_sources=1, **SMALL)
    with pytest.raises(ValueError, match="'count_sources' parameter"):
        networks.DilatedConvEmbedding(count_sources=-1)
    with pytest.raises(ValueError, match="'max_count' parameter of CountHead"):
        networks.CountHead(8, 1)
    counted = networks.CompactBLSTMEmbedding(count_sources=3, **SMALL)
    with pytest.raises(ValueError, match="already has a count head"):
        networks.with_count_head(counted, 3)
    with pytest.raises(ValueError, match="'max_count' parameter of with_count_head"):
        networks.with_count_head(networks.CompactBLSTMEmbedding(**SMALL), 1)
    with pytest.raises(TypeError, match="'network' must be one of"):
        networks.with_count_head(torch.nn.Linear(2, 2), 3)
    with pytest.raises(ValueError, match="widen the network first"):
        networks.widen_blstm(counted, 16)
