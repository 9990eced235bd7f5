import numpy as np
import pytest
import tifffile
import torch
from skimage import io as skio

from domains.image import Augmented, InstanceFolder, make_augmentation
from domains.image.imageio import read_labels, to_image_tensor, to_label_tensor, write_labels


def _scene(h=40, w=50):
    labels = np.zeros((h, w), dtype=np.uint16)
    labels[5:15, 5:20] = 1
    labels[20:35, 10:18] = 300  # 16-bit id with a gap
    labels[22:30, 30:45] = 40000
    image = (labels > 0).astype(np.uint16) * 1000 + 100
    return image, labels


@pytest.fixture()
def folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    image, labels = _scene()
    skio.imsave(tmp_path / "images" / "a.png", image, check_contrast=False)
    tifffile.imwrite(tmp_path / "masks" / "a.tif", labels)
    rgb = np.stack([(image // 8).astype(np.uint8)] * 3, -1)
    skio.imsave(tmp_path / "images" / "b.jpg", rgb, check_contrast=False)
    skio.imsave(tmp_path / "masks" / "b.png", labels, check_contrast=False)
    return tmp_path


def test_reads_pairs_with_16bit_masks(folder):
    ds = InstanceFolder(folder)
    assert len(ds) == 2
    a = ds[0]
    assert a["name"] == "a"
    assert a["image"].shape == (1, 40, 50) and a["image"].dtype == torch.float32
    assert float(a["image"].max()) == 1100.0  # raw 16-bit values kept
    assert a["labels"].dtype == torch.int64
    assert sorted(torch.unique(a["labels"]).tolist()) == [0, 1, 300, 40000]
    b = ds[1]
    assert b["image"].shape == (3, 40, 50)  # channels-last jpg moved to (C, H, W)
    assert torch.equal(b["labels"], a["labels"])


def test_joint_augmentation_keeps_image_and_mask_aligned(folder):
    torch.manual_seed(0)
    ds = InstanceFolder(folder, augment=True, crop_size=32)
    for _ in range(20):
        item = ds[0]
        img, lab = item["image"][0], item["labels"]
        assert img.shape == (32, 32) and lab.shape == (32, 32)
        # Ids are never interpolated.
        assert set(torch.unique(lab).tolist()) <= {0, 1, 300, 40000}
        # Object pixels stay brighter than background pixels under the same geometry.
        if (lab > 0).sum() > 10 and (lab == 0).sum() > 10:
            assert img[lab > 0].mean() > img[lab == 0].mean()


def test_augmented_wrapper_repeats_and_accepts_tuples():
    image, labels = _scene()
    ds = Augmented([(image, labels)], make_augmentation(crop_size=24), repeats=3)
    assert len(ds) == 3
    item = ds[2]
    assert item["image"].shape == (1, 24, 24) and item["labels"].shape == (24, 24)


def test_missing_mask_and_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="images"):
        InstanceFolder(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(FileNotFoundError, match="No images"):
        InstanceFolder(tmp_path)
    skio.imsave(tmp_path / "images" / "x.png", np.zeros((8, 8), np.uint8), check_contrast=False)
    with pytest.raises(FileNotFoundError, match="x.png"):
        InstanceFolder(tmp_path)


def test_mask_size_mismatch(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    skio.imsave(tmp_path / "images" / "x.png", np.zeros((8, 8), np.uint8), check_contrast=False)
    tifffile.imwrite(tmp_path / "masks" / "x.tif", np.zeros((8, 9), np.uint16))
    with pytest.raises(ValueError, match="size"):
        InstanceFolder(tmp_path)[0]


def test_image_conversions():
    assert to_image_tensor(np.zeros((5, 6), np.uint8)).shape == (1, 5, 6)
    assert to_image_tensor(np.zeros((5, 6, 4), np.uint8)).shape == (4, 5, 6)  # RGBA channels-last
    assert to_image_tensor(torch.zeros(3, 5, 6, dtype=torch.float16)).dtype == torch.float32
    assert to_image_tensor(torch.zeros(3, 5, 6, dtype=torch.float64)).dtype == torch.float64  # kept until normalized
    assert to_image_tensor(np.ones((5, 6), bool)).max() == 1.0
    with pytest.raises(ValueError, match="finite"):
        to_image_tensor(np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match="channels"):
        to_image_tensor(np.zeros((7, 5, 6)))
    with pytest.raises(ValueError, match="empty"):
        to_image_tensor(np.zeros((0, 5)))
    with pytest.raises(TypeError):
        to_image_tensor([[1, 2], [3, 4]])


def test_label_conversions():
    assert to_label_tensor(np.array([[0, 2.0]])).dtype == torch.int64
    with pytest.raises(ValueError, match=">= 0"):
        to_label_tensor(np.array([[0, -1]]))
    with pytest.raises(TypeError, match="integer"):
        to_label_tensor(np.array([[0, 0.5]]))
    with pytest.raises(ValueError, match="size"):
        to_label_tensor(np.zeros((3, 3), int), (3, 4))


def test_label_files_round_trip(tmp_path):
    labels = np.array([[0, 1, 70000], [5, 5, 0]])
    write_labels(tmp_path / "l.tif", labels)
    np.testing.assert_array_equal(read_labels(tmp_path / "l.tif"), labels)
    with pytest.raises(ValueError, match=".tif"):
        write_labels(tmp_path / "l.png", labels)
    small = np.array([[0, 1, 65535]])
    write_labels(tmp_path / "s.png", small)
    np.testing.assert_array_equal(read_labels(tmp_path / "s.png"), small)
    # Color-coded masks: one instance per color.
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[1, 2] = (0, 255, 0)
    skio.imsave(tmp_path / "c.png", rgb, check_contrast=False)
    got = read_labels(tmp_path / "c.png")
    assert len(np.unique(got)) == 3 and got[0, 1] == 0
