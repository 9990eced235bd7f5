"""The domain registry and the adapter contract, checked for every registered domain."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import embedseg
from embedseg import Domain, EncodedBatch, create_domain, list_domains, register_domain
from embedseg.cluster import list_clusterers
from embedseg.domain import DOMAINS, resolve_domain
from embedseg.losses import affinity_loss
from embedseg.networks import list_networks

from toys import one_thread  # noqa: F401  (an autouse fixture)


class Minimal(Domain):
    """The smallest useful domain: encode, decode and network_spec; items are (points, labels)."""

    def encode(self, batch, device):
        points, labels = batch  # default_collate stacks equal-size items
        mask = torch.ones(labels.shape, dtype=torch.bool, device=device)
        return EncodedBatch(points.to(device), mask, labels.to(device))

    def network_spec(self, name=None, **params):
        return {"name": name or "point_mlp", "params": {"in_features": 2, "dim": 3, **params}}

    def decode(self, batch, labels, proba, embeddings):
        return list(labels)


def test_importing_embedseg_does_not_import_the_domains():
    code = (
        "import sys, embedseg; names = embedseg.list_domains(); "
        "assert 'audio' in names and 'image' in names, names; "
        "assert not any(m == 'domains' or m.startswith('domains.') for m in sys.modules), 'imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_register_as_decorator_and_as_call():
    try:
        deco = register_domain("toy-deco")(type("Deco", (Minimal,), {}))
        assert deco.name == "toy-deco" and isinstance(create_domain("toy-deco"), deco)
        called = type("Called", (Minimal,), {})
        assert register_domain("toy-called", called) is called
        assert {"toy-deco", "toy-called"} <= set(list_domains())
    finally:
        DOMAINS.unregister("toy-deco")
        DOMAINS.unregister("toy-called")


def test_duplicates_unknown_names_and_non_domains():
    register_domain("toy-dup", type("A", (Minimal,), {}))
    try:
        with pytest.raises(ValueError, match="'toy-dup' is already registered; pass override=True"):
            register_domain("toy-dup", type("B", (Minimal,), {}))
        replacement = register_domain("toy-dup", type("C", (Minimal,), {}), override=True)
        assert type(create_domain("toy-dup")) is replacement
    finally:
        DOMAINS.unregister("toy-dup")
    with pytest.raises(ValueError, match="Unknown domain 'lidar'. Valid domains: 'audio', .*'image'"):
        create_domain("lidar")
    with pytest.raises(TypeError, match="expects a subclass of embedseg.Domain"):
        register_domain("toy-bad", object)
    with pytest.raises(TypeError, match="'domain' must be a registered name"):
        resolve_domain(42)
    with pytest.raises(ValueError, match="only be given with a domain name"):
        resolve_domain(Minimal(), {"x": 1})


class WithOptions(Minimal):
    def __init__(self, *, scale: float = 1.0, shift: float = 0.0) -> None:
        self.scale, self.shift = scale, shift


def test_domain_options_must_be_a_mapping_of_known_options():
    register_domain("toy-options", WithOptions, override=True)
    register_domain("toy-no-options", Minimal, override=True)
    try:
        assert create_domain("toy-options", scale=2.0).scale == 2.0
        with pytest.raises(TypeError, match=r"The 'domain_options' parameter of fit must be a dict. Got \[1\] \(list\)"):
            resolve_domain("toy-options", [1])
        with pytest.raises(TypeError, match="The 'domain_options' parameter of fit must be a dict"):
            embedseg.fit([1], domain="toy-options", domain_options=[1])
        with pytest.raises(
            TypeError,
            match=r"The 'domain_options' parameter of fit has option\(s\) 'bogus' that the domain "
            r"'toy-options' \(WithOptions\) does not take. Valid options: scale, shift\.",
        ):
            embedseg.fit([1], domain="toy-options", domain_options={"bogus": 1, "scale": 2.0})
        with pytest.raises(TypeError, match=r"option names \(str\) as keys. Got 1 \(int\)"):
            resolve_domain("toy-options", {1: 2})
        with pytest.raises(TypeError, match=r"The domain 'toy-options' \(WithOptions\) has no option\(s\) 'bogus'"):
            create_domain("toy-options", bogus=1)
        with pytest.raises(TypeError, match=r"has no option\(s\) 'x'. Valid options: none \(it takes no options\)"):
            create_domain("toy-no-options", x=1)
    finally:
        DOMAINS.unregister("toy-options")
        DOMAINS.unregister("toy-no-options")


def test_base_contract_defaults():
    base = Domain()
    with pytest.raises(NotImplementedError, match="must implement encode"):
        base.encode(None, "cpu")
    with pytest.raises(NotImplementedError, match="must implement network_spec"):
        base.network_spec()
    with pytest.raises(NotImplementedError, match="cannot load a dataset from a path"):
        base.load_dataset("x", "train")
    assert base.get_config() == {} and base.metrics() is None
    assert base.clusterer_spec()["name"] in list_clusterers()
    # Inference hooks: one plain pass, the encoded mask, the counts as given, no tiles.
    batch = EncodedBatch(torch.ones(2, 3), torch.tensor([[True, False, True]] * 2))
    assert torch.equal(base.forward(lambda f: f * 2, batch), torch.full((2, 3), 2.0))
    assert base.cluster_mask(batch, None) is batch.mask
    assert base.cluster_counts(batch, batch.mask, 3) == 3 and base.tiles(batch) is None
    with pytest.raises(NotImplementedError, match="must implement decode"):
        base.decode(batch, torch.zeros(2, 3, dtype=torch.long), None, None)


def test_default_loss_is_the_core_loss_with_padding_ignored():
    torch.manual_seed(0)
    v = torch.nn.functional.normalize(torch.randn(2, 7, 3), dim=-1)
    labels = torch.randint(0, 2, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 5:] = False
    batch = EncodedBatch(None, mask, labels)
    got = Minimal().compute_loss(v, batch, "affinity")
    torch.testing.assert_close(got, affinity_loss(v, labels.masked_fill(~mask, -1)))
    with pytest.raises(ValueError, match="Training needs labels"):
        Minimal().compute_loss(v, EncodedBatch(None, mask, None), "affinity")
    with pytest.raises(ValueError, match="The 'loss' parameter of Minimal.compute_loss must be one of "
                       "'affinity', 'whitened_kmeans'. Got 'l2' instead"):
        Minimal().compute_loss(v, batch, "l2")


def test_a_minimal_domain_trains_and_predicts():
    register_domain("toy-minimal", Minimal, override=True)
    g = torch.Generator().manual_seed(0)
    items = []
    for _ in range(8):
        y = torch.randint(0, 2, (10,), generator=g)
        items.append((torch.randn(10, 2, generator=g) * 0.3 + 2.0 * y[:, None].float(), y))
    model = embedseg.fit(items, domain="toy-minimal", epochs=1, batch_size=4, device="cpu", progress=False)
    out = model.predict(items[0])
    assert out.shape == (10,) and out.dtype == torch.int64


# -- every registered domain meets the contract -----------------------------------------------------
@pytest.mark.parametrize("name", list_domains())
def test_registered_domain_contract(name):
    cls = DOMAINS.get(name)
    assert issubclass(cls, Domain) and cls.name
    domain = create_domain(name)
    config = domain.get_config()
    assert json.loads(json.dumps(config)) == config  # JSON data, so a saved model rebuilds it
    assert create_domain(name, **config).get_config() == config
    spec = domain.network_spec()
    assert set(spec) == {"name", "params"} and spec["name"] in list_networks()
    json.dumps(spec["params"])
    cspec = domain.clusterer_spec()
    assert cspec["name"] in list_clusterers()
    json.dumps(cspec.get("params", {}))
    assert domain.default_loss in ("affinity", "whitened_kmeans")
    from embedseg.model import Model, model_class_of

    assert issubclass(model_class_of(domain), Model)
    if cls.primary_metric is not None:
        assert isinstance(cls.primary_metric, str)
