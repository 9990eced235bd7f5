import pytest
import torch

from embedseg.networks import (
    PointMLP,
    create_network,
    embeddings_of,
    list_networks,
    normalize_embeddings,
)


def test_point_mlp_gives_unit_norm_embeddings():
    net = create_network("point_mlp", in_features=3, dim=8, hidden=16, layers=2)
    assert isinstance(net, PointMLP)
    out = net(torch.randn(2, 50, 3))  # (batch, n_points, dim)
    assert out.shape == (2, 50, 8)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2, 50))


def test_point_mlp_rejects_bad_params():
    with pytest.raises(ValueError, match="'dim' parameter of PointMLP"):
        PointMLP(in_features=3, dim=1)
    with pytest.raises(ValueError, match="'activation' parameter of PointMLP must be one of"):
        PointMLP(in_features=3, activation="tanh")


def test_registry_lists_point_mlp():
    assert "point_mlp" in list_networks()


def test_normalize_and_embeddings_of():
    x = torch.tensor([[[3.0, 4.0], [0.0, 0.0]]])
    y = normalize_embeddings(x)
    torch.testing.assert_close(y[0, 0], torch.tensor([0.6, 0.8]))
    assert torch.isfinite(y).all()
    assert embeddings_of({"embeddings": y, "masks": x}) is y
    assert embeddings_of(y) is y
    with pytest.raises(ValueError, match="'embeddings'"):
        embeddings_of({"masks": x})


def test_normalize_embeddings_along_a_channel_axis_matches_float64():
    x = torch.randn(2, 5, 7, 3, dtype=torch.float64)
    expected = x / x.norm(dim=1, keepdim=True)
    y = normalize_embeddings(x.float(), dim=1)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.double(), expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(normalize_embeddings(x.float().movedim(1, -1)), y.movedim(1, -1))


def test_only_module_classes_can_be_registered():
    from embedseg.networks import register_network

    for bad in (PointMLP(in_features=2), lambda **kw: PointMLP(**kw), "embedseg.networks:PointMLP"):
        with pytest.raises(TypeError, match="register_network\\(\\) expects a subclass of torch.nn.Module"):
            register_network("not-a-network", bad)
    assert "not-a-network" not in list_networks()
