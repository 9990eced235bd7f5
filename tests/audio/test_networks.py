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


def _attention_reference(layer, h):
    """A float64 Transformer layer written out: softmax(QK^T / sqrt(d)) V per head, no fused kernel."""
    w = {k: v.double() for k, v in layer.state_dict().items()}
    h = h.double()
    b, t, f = h.shape
    heads, d = layer.heads, f // layer.heads
    x = torch.nn.functional.layer_norm(h, (f,), w["attn_norm.weight"], w["attn_norm.bias"])
    q, k, v = (x @ w["qkv.weight"].T + w["qkv.bias"]).split(f, dim=-1)
    q, k, v = (m.reshape(b, t, heads, d).transpose(1, 2) for m in (q, k, v))  # (b, heads, t, d)
    att = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, dim=-1)
    a = (att @ v).transpose(1, 2).reshape(b, t, f)
    h = h + a @ w["attn_out.weight"].T + w["attn_out.bias"]
    y = torch.nn.functional.layer_norm(h, (f,), w["ff_norm.weight"], w["ff_norm.bias"])
    y = torch.nn.functional.gelu(y @ w["ff_in.weight"].T + w["ff_in.bias"])
    return h + y @ w["ff_out.weight"].T + w["ff_out.bias"]


def test_frame_attention_matches_a_float64_reference_and_starts_as_the_identity():
    torch.manual_seed(5)
    layer = networks.FrameAttention(12, heads=3).eval()
    h = torch.randn(2, 9, 12)
    torch.testing.assert_close(layer(h), h)  # new: both branches end in zeros
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, 0.3)
    torch.testing.assert_close(layer(h).double(), _attention_reference(layer, h), rtol=1e-5, atol=1e-5)
    # content, not position: permuting the frames permutes the output
    order = torch.randperm(9)
    torch.testing.assert_close(layer(h[:, order]), layer(h)[:, order], rtol=1e-5, atol=1e-5)
    # every frame reads all the others: changing the last frame changes the first frame's output
    far = h.clone()
    far[:, -1] += torch.randn(12)  # not a constant: the layer norm would remove that
    assert not torch.allclose(layer(far)[:, 0], layer(h)[:, 0])


@pytest.mark.parametrize("name", ["dc_blstm", "dc_compact"])
def test_attention_layers_sit_between_the_blstm_and_the_heads(name):
    torch.manual_seed(6)
    net = embedseg.create_network(
        name, mask_sources=2, count_sources=3, attention_layers=2, attention_heads=4, **SMALL_PARAMS[name]
    ).eval()
    with torch.no_grad():
        for p in net.attention.parameters():
            p.normal_(0, 0.3)
    x = torch.randn(2, 7, 17)
    out = net(x)
    h, _ = net.blstm(x)
    for layer in net.attention:
        h = layer(h)
    torch.testing.assert_close(out["masks"], torch.softmax(
        net.mask_head(h).reshape(2, 7, 17, 2), dim=-1).permute(0, 3, 1, 2))
    # the count head reads the BLSTM itself
    torch.testing.assert_close(out["counts"], net.count_head(net.blstm(x)[0]))
    net.train()
    loss = sum(v.sum() for v in net(x).values())
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())


def test_with_attention_keeps_the_outputs_and_saves_and_loads(tmp_path):
    torch.manual_seed(7)
    net = embedseg.create_network("dc_compact", mask_sources=2, count_sources=3, **SMALL).eval()
    grown = networks.with_attention(net, 2, heads=4, seed=1)
    x = torch.randn(2, 6, 17)
    assert grown.attention_layers == 2 and not grown.training and net.attention is None
    for key, value in net(x).items():
        torch.testing.assert_close(grown(x)[key], value)
    again = networks.with_attention(net, 2, heads=4, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(grown.parameters(), again.parameters()))
    # the new layers learn from the first step
    grown.train()
    sum(v.sum() for v in grown(x).values()).backward()
    assert grown.attention[0].attn_out.weight.grad.abs().sum() > 0
    # a saved model rebuilds them from its config
    from embedseg.api import build_model

    full = networks.with_attention(embedseg.create_network("dc_compact", hidden=8, layers=1, dim=6, mask_sources=2), 1)
    build_model("audio", network=full).save(tmp_path / "m")
    loaded = embedseg.load(tmp_path / "m").network
    assert loaded.attention_layers == 1 and loaded.attention_heads == 4
    for (name, p), q in zip(full.state_dict().items(), loaded.state_dict().values()):
        torch.testing.assert_close(p, q, msg=name)


def test_attention_bad_arguments():
    with pytest.raises(ValueError, match="'attention_heads' parameter of CompactBLSTMEmbedding must divide"):
        networks.CompactBLSTMEmbedding(attention_layers=1, attention_heads=5, **SMALL)
    with pytest.raises(ValueError, match="'attention_layers' parameter"):
        networks.BLSTMEmbedding(attention_layers=-1, **SMALL)
    with pytest.raises(ValueError, match="'features' parameter of FrameAttention must be divisible"):
        networks.FrameAttention(10, heads=3)
    attended = networks.CompactBLSTMEmbedding(attention_layers=1, **SMALL)
    with pytest.raises(ValueError, match="already has 1 attention layers"):
        networks.with_attention(attended, 1)
    with pytest.raises(ValueError, match="'layers' parameter of with_attention"):
        networks.with_attention(networks.CompactBLSTMEmbedding(**SMALL), 0)
    with pytest.raises(TypeError, match="'network' must be a BLSTMEmbedding"):
        networks.with_attention(networks.DilatedConvEmbedding(), 1)
    with pytest.raises(ValueError, match="widen the network first"):
        networks.widen_blstm(attended, 16)
