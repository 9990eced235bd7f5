import pytest
import torch

import embedseg
from domains.image import UNetEmbedding


@pytest.mark.parametrize("size", ["cpu", "gpu"])
@pytest.mark.parametrize("hw", [(32, 32), (37, 51), (8, 100)])
def test_shapes_unit_norm_and_any_size(size, hw):
    torch.manual_seed(0)
    net = UNetEmbedding(in_channels=3, dim=8, size=size, base=8 if size == "gpu" else None).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, *hw))
    n = hw[0] * hw[1]
    assert out["embeddings"].shape == (2, n, 8)
    assert out["foreground"].shape == (2, n)
    torch.testing.assert_close(out["embeddings"].norm(dim=-1), torch.ones(2, n))


def test_without_foreground_head_returns_a_tensor():
    net = UNetEmbedding(dim=4, foreground=False).eval()
    out = net(torch.rand(1, 1, 16, 16))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 256, 4)


def test_translation_equivariance_in_eval_mode():
    # A shift by a multiple of the total stride moves the embeddings with it (away from borders).
    torch.manual_seed(0)
    net = UNetEmbedding(dim=8).eval()
    x = torch.rand(1, 1, 96, 96)
    shifted = torch.roll(x, shifts=16, dims=3)
    with torch.no_grad():
        a = net(x)["embeddings"].reshape(96, 96, 8)
        b = net(shifted)["embeddings"].reshape(96, 96, 8)
    torch.testing.assert_close(a[40:56, 40:56], b[40:56, 56:72], atol=2e-4, rtol=0)


def test_gradients_flow_to_every_parameter():
    net = UNetEmbedding(dim=4)
    out = net(torch.rand(2, 1, 32, 32))
    (out["embeddings"][..., 0].sum() + out["foreground"].sum()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_registered_and_built_by_name():
    assert "image_unet" in embedseg.list_networks()
    net = embedseg.create_network("image_unet", in_channels=1, dim=6)
    assert isinstance(net, UNetEmbedding) and net.dim == 6


@pytest.mark.parametrize(
    "kwargs, exc",
    [({"dim": 1}, ValueError), ({"size": "huge"}, ValueError), ({"stride": 3}, ValueError), ({"in_channels": 0}, ValueError)],
)
def test_bad_parameters(kwargs, exc):
    with pytest.raises(exc):
        UNetEmbedding(**kwargs)


def test_bad_input_names_the_argument():
    net = UNetEmbedding(in_channels=1)
    with pytest.raises(ValueError, match="channels"):
        net(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="4 dimensions"):
        net(torch.rand(16, 16))


def test_init_copies_a_saved_models_network(tmp_path):
    from embedseg.api import build_model

    model = build_model("image", network_params={"dim": 4, "base": 8})
    model.save(tmp_path / "m")
    net = UNetEmbedding(dim=4, base=8, init=str(tmp_path / "m"))
    for (k, a), b in zip(model.network.state_dict().items(), net.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="does not fit"):
        UNetEmbedding(dim=6, base=8, init=str(tmp_path / "m"))
    with pytest.raises(ValueError, match="neither"):
        UNetEmbedding(init=str(tmp_path / "nowhere"))
