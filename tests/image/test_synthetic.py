import numpy as np
import pytest
import torch

from domains.image import SyntheticScenes


def test_items_are_deterministic_per_index_and_independent_of_order():
    ds = SyntheticScenes(5, size=64, max_objects=6, seed=3)
    later_first = ds[4]
    for i in range(4):
        ds[i]
    again = ds[4]
    assert torch.equal(later_first["image"], again["image"])
    assert torch.equal(later_first["labels"], again["labels"])
    other_seed = SyntheticScenes(5, size=64, max_objects=6, seed=4)[4]
    assert not torch.equal(later_first["image"], other_seed["image"])


def test_item_format_and_sequential_ids():
    ds = SyntheticScenes(6, size=96, max_objects=10, seed=0)
    for i in range(len(ds)):
        item = ds[i]
        img, lab = item["image"], item["labels"]
        assert img.shape == (1, 96, 96) and img.dtype == torch.float32
        assert lab.shape == (96, 96) and lab.dtype == torch.int64
        assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0
        ids = torch.unique(lab)
        assert ids[0] == 0
        assert torch.equal(ids, torch.arange(len(ids)))  # no gaps
        counts = torch.bincount(lab.flatten())[1:]
        assert bool((counts >= ds.min_area).all())


def test_counts_vary_and_respect_the_maximum():
    ds = SyntheticScenes(20, size=128, max_objects=8, seed=1)
    counts = [int(ds[i]["labels"].max()) for i in range(len(ds))]
    assert max(counts) <= 8
    assert len(set(counts)) >= 4


def test_objects_differ_from_background_and_touch():
    ds = SyntheticScenes(10, size=128, min_objects=10, max_objects=14, touching=0.9, seed=2)
    touching = 0
    for i in range(len(ds)):
        img, lab = ds[i]["image"][0].numpy(), ds[i]["labels"].numpy()
        # Every object's mean intensity stands out from the background's, up or down.
        bg = img[lab == 0].mean()
        for k in range(1, lab.max() + 1):
            assert abs(img[lab == k].mean() - bg) > 0.04
        # Two different instances side by side somewhere (horizontal neighbours).
        a, b = lab[:, :-1], lab[:, 1:]
        touching += int(np.any((a > 0) & (b > 0) & (a != b)))
    assert touching >= 8


def test_many_objects_in_large_scenes():
    lab = SyntheticScenes(1, size=384, min_objects=120, max_objects=120, touching=0.2, seed=0)[0]["labels"]
    assert int(lab.max()) >= 100


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        ({"n_images": -1}, ValueError),
        ({"n_images": 2, "size": 8}, ValueError),
        ({"n_images": 2, "max_objects": 2, "min_objects": 3}, ValueError),
        ({"n_images": 2, "radius": 5}, TypeError),
        ({"n_images": 2, "radius": (10.0, 5.0)}, ValueError),
        ({"n_images": 2.5}, TypeError),
    ],
)
def test_bad_parameters(kwargs, exc):
    with pytest.raises(exc):
        SyntheticScenes(**kwargs)


def test_index_errors():
    ds = SyntheticScenes(2, size=32, max_objects=2)
    assert torch.equal(ds[-1]["labels"], ds[1]["labels"])
    with pytest.raises(IndexError):
        ds[2]
    with pytest.raises(TypeError):
        ds[0.5]
