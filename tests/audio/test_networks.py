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
