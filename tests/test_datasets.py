"""Tests of the dataset registry: bundled, generated and file-based loaders.

The file-based loaders read tiny datasets that the fixtures write in each on-disk format, so
no test downloads anything.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import scipy.io
import torch
import torchvision.datasets
import torchvision.datasets.utils
from PIL import Image

from fedsign import datasets as datasets_module
from fedsign.datasets import DatasetSplits, list_datasets, load_dataset, register_dataset
from fedsign.errors import DatasetNotFoundError, UserInputError

FILE_BASED = ["mnist", "fashion_mnist", "cifar10", "cifar100", "svhn", "cinic10"]
CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"
]


@pytest.fixture
def accept_any_checksum(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let torchvision accept the tiny fixture files, whose MD5 cannot match the originals."""
    monkeypatch.setattr(torchvision.datasets.utils, "check_md5", lambda *args, **kwargs: True)


def assert_standardised_per_channel(values: torch.Tensor) -> None:
    reduce_dims = [dim for dim in range(values.dim()) if dim != 1]
    std, mean = torch.std_mean(values.double(), dim=reduce_dims, correction=0)
    torch.testing.assert_close(mean, torch.zeros_like(mean), atol=1e-5, rtol=0)
    torch.testing.assert_close(std, torch.ones_like(std), atol=1e-4, rtol=0)


def expected_standardised(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Standardise (N, C, ...) arrays per channel with the train statistics, in float64."""
    reduce_axes = tuple(axis for axis in range(train.ndim) if axis != 1)
    mean = train.astype(np.float64).mean(axis=reduce_axes, keepdims=True)
    std = train.astype(np.float64).std(axis=reduce_axes, keepdims=True)
    return (train - mean) / std, (test - mean) / std


# ---------------------------------------------------------------------------------------
# Writers of tiny datasets in each on-disk format
# ---------------------------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array in the big-endian IDX format of the MNIST files."""
    header = bytes([0, 0, 0x08, array.ndim])
    dims = b"".join(int(size).to_bytes(4, "big") for size in array.shape)
    path.write_bytes(header + dims + array.astype(np.uint8).tobytes())


def write_mnist_folder(root: Path, class_folder: str, rng: np.random.Generator) -> dict:
    raw = root / class_folder / "raw"
    raw.mkdir(parents=True)
    arrays = {
        "train_x": rng.integers(0, 256, size=(20, 28, 28), dtype=np.uint8),
        "train_y": np.arange(20, dtype=np.uint8) % 10,
        "test_x": rng.integers(0, 256, size=(10, 28, 28), dtype=np.uint8),
        "test_y": np.arange(10, dtype=np.uint8)[::-1].copy(),
    }
    write_idx(raw / "train-images-idx3-ubyte", arrays["train_x"])
    write_idx(raw / "train-labels-idx1-ubyte", arrays["train_y"])
    write_idx(raw / "t10k-images-idx3-ubyte", arrays["test_x"])
    write_idx(raw / "t10k-labels-idx1-ubyte", arrays["test_y"])
    return arrays


def write_pickle(path: Path, content: dict) -> None:
    with path.open("wb") as file:
        pickle.dump(content, file)


def write_cifar10_folder(root: Path, rng: np.random.Generator) -> dict:
    """Write five 2-image training batches, a 3-image test batch and the metadata."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_rows, train_labels = [], []
    for batch in range(1, 6):
        rows = rng.integers(0, 256, size=(2, 3 * 32 * 32), dtype=np.uint8)
        labels = [(2 * batch) % 10, (2 * batch + 1) % 10]
        write_pickle(folder / f"data_batch_{batch}", {"data": rows, "labels": labels})
        train_rows.append(rows)
        train_labels.extend(labels)
    test_rows = rng.integers(0, 256, size=(3, 3 * 32 * 32), dtype=np.uint8)
    write_pickle(folder / "test_batch", {"data": test_rows, "labels": [9, 0, 4]})
    write_pickle(folder / "batches.meta", {"label_names": CIFAR10_CLASSES})
    return {
        "train_x": np.concatenate(train_rows).reshape(-1, 3, 32, 32),
        "train_y": np.asarray(train_labels),
        "test_x": test_rows.reshape(-1, 3, 32, 32),
        "test_y": np.asarray([9, 0, 4]),
    }


def write_cifar100_folder(root: Path, rng: np.random.Generator) -> dict:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    train_rows = rng.integers(0, 256, size=(6, 3 * 32 * 32), dtype=np.uint8)
    test_rows = rng.integers(0, 256, size=(2, 3 * 32 * 32), dtype=np.uint8)
    train_fine, test_fine = [0, 17, 42, 99, 5, 63], [99, 1]
    write_pickle(
        folder / "train",
        {"data": train_rows, "fine_labels": train_fine, "coarse_labels": [0] * 6},
    )
    write_pickle(
        folder / "test", {"data": test_rows, "fine_labels": test_fine, "coarse_labels": [0] * 2}
    )
    write_pickle(folder / "meta", {"fine_label_names": [f"class_{i}" for i in range(100)]})
    return {
        "train_x": train_rows.reshape(-1, 3, 32, 32),
        "train_y": np.asarray(train_fine),
        "test_x": test_rows.reshape(-1, 3, 32, 32),
        "test_y": np.asarray(test_fine),
    }


def write_svhn_files(root: Path, rng: np.random.Generator) -> dict:
    """Write train/test .mat files with images as (H, W, C, N) and the digit 0 stored as 10."""
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, labels in (("train", [10, 1, 2, 3, 10, 9]), ("test", [5, 10, 7])):
        images = rng.integers(0, 256, size=(32, 32, 3, len(labels)), dtype=np.uint8)
        scipy.io.savemat(
            root / f"{split}_32x32.mat",
            {"X": images, "y": np.asarray(labels, dtype=np.uint8)[:, None]},
        )
        arrays[f"{split}_x"] = images.transpose(3, 2, 0, 1)
        arrays[f"{split}_y"] = np.asarray(labels) % 10
    return arrays


def write_cinic10_folder(root: Path, rng: np.random.Generator) -> dict:
    """Write 2 training, 1 validation and 1 test PNG per class; one training image is greyscale."""
    arrays: dict = {"train_x": [], "train_y": [], "test_x": [], "test_y": []}
    for split, per_class in (("train", 2), ("valid", 1), ("test", 1)):
        for label, class_name in enumerate(CIFAR10_CLASSES):
            class_folder = root / "cinic10" / split / class_name
            class_folder.mkdir(parents=True)
            for number in range(per_class):
                image = Image.fromarray(rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8))
                if split == "train" and label == 3 and number == 0:
                    image = image.convert("L")
                image.save(class_folder / f"{class_name}_{number}.png")
                if split != "valid":
                    arrays[f"{split}_x"].append(np.asarray(image.convert("RGB")).transpose(2, 0, 1))
                    arrays[f"{split}_y"].append(label)
    return {key: np.asarray(value) for key, value in arrays.items()}


# ---------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------


def test_registry_lists_every_dataset() -> None:
    expected = {"digits", "mnist1d", "synthetic", *FILE_BASED}
    assert set(list_datasets()) == expected
    assert list_datasets() == sorted(list_datasets())


def test_unknown_dataset_lists_names() -> None:
    with pytest.raises(UserInputError) as raised:
        load_dataset("imagenet")
    message = str(raised.value)
    assert "'imagenet'" in message
    for name in list_datasets():
        assert name in message


def test_register_dataset_adds_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets_module, "_LOADERS", dict(datasets_module._LOADERS))

    @register_dataset("tiny")
    def load_tiny(root: Path, *, download: bool, seed: int) -> DatasetSplits:
        inputs = torch.zeros(2, 1, 3)
        labels = torch.tensor([0, 1])
        return DatasetSplits("tiny", inputs, labels, inputs, labels, num_classes=2)

    assert "tiny" in list_datasets()
    assert load_dataset("tiny").input_shape == (1, 3)


def test_register_dataset_rejects_duplicate() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("digits")(lambda root, *, download, seed: None)


# ---------------------------------------------------------------------------------------
# Bundled and generated datasets
# ---------------------------------------------------------------------------------------


def test_digits_shapes_and_fixed_split() -> None:
    splits = load_dataset("digits")
    assert splits.name == "digits"
    assert splits.input_shape == (1, 8, 8)
    assert splits.num_classes == 10
    assert len(splits.train_y) == 1437
    assert len(splits.test_y) == 360
    assert splits.train_x.dtype == torch.float32
    assert splits.train_y.dtype == torch.int64
    assert_standardised_per_channel(splits.train_x)

    # Stratification keeps roughly 20 % of every class's images in the test set.
    class_sizes = splits.train_y.bincount() + splits.test_y.bincount()
    test_fraction = splits.test_y.bincount() / class_sizes
    assert torch.all((test_fraction > 0.18) & (test_fraction < 0.22))

    other_seed = load_dataset("digits", seed=7)
    assert torch.equal(splits.train_x, other_seed.train_x)
    assert torch.equal(splits.test_y, other_seed.test_y)


def test_mnist1d_generated_offline(tmp_path: Path) -> None:
    numpy_state = np.random.get_state()
    python_state = random.getstate()

    splits = load_dataset("mnist1d", root=tmp_path / "unused")

    assert splits.input_shape == (1, 40)
    assert len(splits.train_y) == 4000
    assert len(splits.test_y) == 1000
    assert splits.num_classes == 10
    assert set(splits.train_y.tolist()) == set(range(10))
    assert splits.train_x.dtype == torch.float32
    assert_standardised_per_channel(splits.train_x)
    assert not (tmp_path / "unused").exists()

    # make_dataset reseeds the global generators, so the loader must restore them.
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_state[1])
    assert random.getstate() == python_state


def test_synthetic_deterministic_per_seed() -> None:
    first = load_dataset("synthetic", seed=3)
    again = load_dataset("synthetic", seed=3)
    other = load_dataset("synthetic", seed=4)

    assert first.input_shape == (1, 8, 8)
    assert first.num_classes == 10
    assert len(first.train_y) == 400
    assert len(first.test_y) == 100
    assert first.train_y.bincount().tolist() == [40] * 10
    assert first.test_y.dtype == torch.int64
    assert torch.equal(first.train_x, again.train_x)
    assert torch.equal(first.test_y, again.test_y)
    assert not torch.equal(first.train_x, other.train_x)
    assert_standardised_per_channel(first.train_x)


# ---------------------------------------------------------------------------------------
# File-based datasets
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "class_folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")]
)
def test_mnist_family_reads_idx_files(tmp_path: Path, name: str, class_folder: str) -> None:
    arrays = write_mnist_folder(tmp_path, class_folder, np.random.default_rng(0))

    splits = load_dataset(name, root=tmp_path)

    assert splits.input_shape == (1, 28, 28)
    assert splits.num_classes == 10
    assert splits.train_x.dtype == torch.float32
    assert splits.train_y.dtype == torch.int64
    np.testing.assert_array_equal(splits.train_y.numpy(), arrays["train_y"])
    np.testing.assert_array_equal(splits.test_y.numpy(), arrays["test_y"])
    expected_train, expected_test = expected_standardised(
        arrays["train_x"][:, None], arrays["test_x"][:, None]
    )
    np.testing.assert_allclose(splits.train_x.numpy(), expected_train, atol=1e-4)
    np.testing.assert_allclose(splits.test_x.numpy(), expected_test, atol=1e-4)


@pytest.mark.usefixtures("accept_any_checksum")
def test_cifar10_reads_pickled_batches(tmp_path: Path) -> None:
    arrays = write_cifar10_folder(tmp_path, np.random.default_rng(1))

    splits = load_dataset("cifar10", root=tmp_path)

    assert splits.input_shape == (3, 32, 32)
    assert splits.num_classes == 10
    assert len(splits.train_y) == 10
    assert splits.train_y.dtype == torch.int64
    np.testing.assert_array_equal(splits.train_y.numpy(), arrays["train_y"])
    np.testing.assert_array_equal(splits.test_y.numpy(), arrays["test_y"])
    expected_train, expected_test = expected_standardised(arrays["train_x"], arrays["test_x"])
    np.testing.assert_allclose(splits.train_x.numpy(), expected_train, atol=1e-4)
    np.testing.assert_allclose(splits.test_x.numpy(), expected_test, atol=1e-4)
    assert_standardised_per_channel(splits.train_x)


@pytest.mark.usefixtures("accept_any_checksum")
def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    arrays = write_cifar100_folder(tmp_path, np.random.default_rng(2))

    splits = load_dataset("cifar100", root=tmp_path)

    assert splits.input_shape == (3, 32, 32)
    assert splits.num_classes == 100
    np.testing.assert_array_equal(splits.train_y.numpy(), arrays["train_y"])
    np.testing.assert_array_equal(splits.test_y.numpy(), arrays["test_y"])
    expected_train, _ = expected_standardised(arrays["train_x"], arrays["test_x"])
    np.testing.assert_allclose(splits.train_x.numpy(), expected_train, atol=1e-4)


@pytest.mark.usefixtures("accept_any_checksum")
def test_svhn_maps_label_ten_to_zero(tmp_path: Path) -> None:
    arrays = write_svhn_files(tmp_path, np.random.default_rng(3))

    splits = load_dataset("svhn", root=tmp_path)

    assert splits.input_shape == (3, 32, 32)
    assert splits.num_classes == 10
    assert splits.train_y.tolist() == [0, 1, 2, 3, 0, 9]
    assert splits.test_y.tolist() == [5, 0, 7]
    expected_train, expected_test = expected_standardised(arrays["train_x"], arrays["test_x"])
    np.testing.assert_allclose(splits.train_x.numpy(), expected_train, atol=1e-4)
    np.testing.assert_allclose(splits.test_x.numpy(), expected_test, atol=1e-4)


def test_cinic10_reads_png_folders(tmp_path: Path) -> None:
    arrays = write_cinic10_folder(tmp_path, np.random.default_rng(4))

    splits = load_dataset("cinic10", root=tmp_path)

    assert splits.input_shape == (3, 32, 32)
    assert splits.num_classes == 10
    assert len(splits.train_y) == 20  # the valid folder is not part of training
    assert len(splits.test_y) == 10
    assert splits.train_x.dtype == torch.float32
    np.testing.assert_array_equal(splits.train_y.numpy(), arrays["train_y"])
    np.testing.assert_array_equal(splits.test_y.numpy(), arrays["test_y"])
    assert_standardised_per_channel(splits.train_x)

    # The expected arrays hold the greyscale image as three equal RGB channels.
    expected_train, expected_test = expected_standardised(arrays["train_x"], arrays["test_x"])
    np.testing.assert_allclose(splits.train_x.numpy(), expected_train, atol=1e-4)
    np.testing.assert_allclose(splits.test_x.numpy(), expected_test, atol=1e-4)


@pytest.mark.parametrize("name", FILE_BASED)
def test_missing_folder_names_path_and_fix(tmp_path: Path, name: str) -> None:
    with pytest.raises(DatasetNotFoundError) as raised:
        load_dataset(name, root=tmp_path)

    message = str(raised.value)
    assert "\n" not in message
    assert str(tmp_path) in message
    assert "data.download=true" in message
    assert "data.root" in message


def test_incomplete_folder_reports_corruption(tmp_path: Path) -> None:
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)

    with pytest.raises(DatasetNotFoundError) as raised:
        load_dataset("mnist", root=tmp_path)

    message = str(raised.value)
    assert "incomplete or corrupted" in message
    assert "\n" not in message
    assert str(tmp_path / "MNIST") in message


def test_failed_download_reports_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail_download(self: torchvision.datasets.MNIST) -> None:
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried a mirror:\nno route")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", fail_download)

    with pytest.raises(DatasetNotFoundError) as raised:
        load_dataset("mnist", root=tmp_path, download=True)

    message = str(raised.value)
    assert message.startswith("downloading dataset 'mnist'")
    assert "no route" in message
    assert "\n" not in message


def test_cinic10_download_failure_names_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail_download(*args: object, **kwargs: object) -> None:
        raise URLError("name resolution failed")

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", fail_download)

    with pytest.raises(DatasetNotFoundError) as raised:
        load_dataset("cinic10", root=tmp_path, download=True)

    message = str(raised.value)
    assert message.startswith("downloading dataset 'cinic10'")
    assert str(tmp_path / "cinic10") in message
    assert "name resolution failed" in message
    assert "\n" not in message
