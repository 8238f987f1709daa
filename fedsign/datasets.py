"""Dataset registry: every dataset loads into in-memory tensors with one train and one test split.

Each loader returns a :class:`DatasetSplits` whose inputs are float32 and standardised per
channel with the mean and standard deviation of the training split. Images have the layout
(N, C, H, W) and 1-D signals (N, C, L). Labels are int64 class ids in ``[0, num_classes)``.

Sources:

- ``digits`` (default): scikit-learn's bundled 8x8 handwritten digits, no files needed.
- ``mnist1d``: generated locally by the ``mnist1d`` package, never downloaded.
- ``synthetic``: Gaussian class clusters drawn from ``seed``, for tests.
- ``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``, ``svhn``: read through torchvision
  from ``root`` in torchvision's own on-disk layout and downloaded only when ``download=True``.
- ``cinic10``: the folder layout of the official CINIC-10 release, ``root/cinic10/{train,test}``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from fedsign.errors import DatasetNotFoundError, UserInputError

logger = logging.getLogger(__name__)

DEFAULT_DATASET = "digits"
DOWNLOAD_COMMAND = "fedsign run CONFIG data.download=true"
FETCH_HINT = f"Fetch it with `{DOWNLOAD_COMMAND}` or set data.root to the folder that contains it"

# [choice] The digits train/test split is fixed for every run so that test accuracies are
# comparable across seeds: 20 % of the images, stratified by class, with this random_state.
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_RANDOM_STATE = 0

SYNTHETIC_NUM_CLASSES = 10
SYNTHETIC_SHAPE = (1, 8, 8)
SYNTHETIC_TRAIN_PER_CLASS = 40
SYNTHETIC_TEST_PER_CLASS = 10

CINIC10_URL = "https://datashare.ed.ac.uk/bitstream/handle/10283/3192/CINIC-10.tar.gz"
CINIC10_FOLDER = "cinic10"


@dataclass(frozen=True)
class DatasetSplits:
    """Train and test tensors of one dataset, standardised with the training statistics.

    Attributes
    ----------
    name : str
        Registry name of the dataset.
    train_x, test_x : torch.Tensor
        float32 inputs of shape (N, C, H, W) for images or (N, C, L) for 1-D signals.
    train_y, test_y : torch.Tensor
        int64 class ids.
    num_classes : int
        Number of classes; labels lie in ``[0, num_classes)``.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input sample, without the batch dimension."""
        return tuple(self.train_x.shape[1:])


class DatasetLoader(Protocol):
    """Function that loads one registered dataset."""

    def __call__(self, root: Path, *, download: bool, seed: int) -> DatasetSplits: ...


_LOADERS: dict[str, DatasetLoader] = {}


def register_dataset(name: str) -> Callable[[DatasetLoader], DatasetLoader]:
    """Register a dataset loader under ``name``.

    Parameters
    ----------
    name : str
        Registry name, as used by :func:`load_dataset` and the ``data`` config section.

    Returns
    -------
    Callable
        Decorator that stores the loader and returns it unchanged. The loader is called as
        ``loader(root, download=..., seed=...)`` and returns a :class:`DatasetSplits`.

    Raises
    ------
    ValueError
        If ``name`` is already registered.
    """

    def decorator(loader: DatasetLoader) -> DatasetLoader:
        if name in _LOADERS:
            raise ValueError(f"dataset {name!r} is already registered")
        _LOADERS[name] = loader
        return loader

    return decorator


def list_datasets() -> list[str]:
    """Return the registered dataset names in alphabetical order."""
    return sorted(_LOADERS)


def load_dataset(
    name: str, *, root: str | Path = "data", download: bool = False, seed: int = 0
) -> DatasetSplits:
    """Load a registered dataset into memory.

    Parameters
    ----------
    name : str
        Registry name, one of :func:`list_datasets`.
    root : str or Path, default "data"
        Folder that contains the downloaded datasets. Bundled and generated datasets ignore it.
    download : bool, default False
        Whether to download a missing torchvision or CINIC-10 dataset into ``root``.
    seed : int, default 0
        Seed of the ``synthetic`` dataset. The other datasets ignore it: their train/test
        splits are fixed.

    Returns
    -------
    DatasetSplits
        Standardised train and test tensors.

    Raises
    ------
    UserInputError
        If ``name`` is not registered.
    DatasetNotFoundError
        If the dataset's files are missing or incomplete and cannot be downloaded.
    """
    if name not in _LOADERS:
        raise UserInputError(
            f"data.dataset={name!r} is not a known dataset: choose one of "
            f"{', '.join(list_datasets())}"
        )
    return _LOADERS[name](Path(root).expanduser(), download=download, seed=seed)


# ---------------------------------------------------------------------------------------
# Shared conversion helpers
# ---------------------------------------------------------------------------------------


def _standardise_(train_x: torch.Tensor, test_x: torch.Tensor) -> None:
    """Standardise both splits in place, per channel (dim 1), with the training mean and std."""
    reduce_dims = [dim for dim in range(train_x.dim()) if dim != 1]
    std, mean = torch.std_mean(train_x, dim=reduce_dims, correction=0, keepdim=True)

    # A constant channel would divide by zero, so it is only centred.
    std = torch.where(std > 0, std, torch.ones_like(std))
    for values in (train_x, test_x):
        values.sub_(mean).div_(std)


def _make_splits(
    name: str,
    *,
    train: tuple[Any, Any],
    test: tuple[Any, Any],
    num_classes: int,
    source: str,
) -> DatasetSplits:
    """Convert (inputs, labels) pairs to tensors, standardise them and log the result."""
    # torch.tensor always copies, so standardising in place cannot alter the loader's arrays,
    # and it avoids a second full-size float32 copy (about 600 MB for CIFAR-10's training set).
    train_x = torch.tensor(np.asarray(train[0]), dtype=torch.float32)
    test_x = torch.tensor(np.asarray(test[0]), dtype=torch.float32)
    _standardise_(train_x, test_x)
    splits = DatasetSplits(
        name=name,
        train_x=train_x,
        train_y=torch.as_tensor(np.asarray(train[1]), dtype=torch.int64),
        test_x=test_x,
        test_y=torch.as_tensor(np.asarray(test[1]), dtype=torch.int64),
        num_classes=num_classes,
    )
    logger.info(
        "Loaded dataset %s from %s: %d train and %d test samples, input shape %s, %d classes",
        name,
        source,
        len(splits.train_y),
        len(splits.test_y),
        splits.input_shape,
        num_classes,
    )
    return splits


def _nhwc_to_nchw(images: np.ndarray) -> np.ndarray:
    """Move the channel axis of uint8 (N, H, W, C) images to position 1."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2))


def _one_line(error: BaseException) -> str:
    """Return an exception's text with all whitespace runs collapsed to single spaces."""
    return " ".join(str(error).split()) or type(error).__name__


def _require(path: Path, name: str, *, download: bool) -> None:
    """Raise DatasetNotFoundError if ``path`` is missing and no download was requested."""
    if not download and not path.exists():
        raise DatasetNotFoundError(
            f"dataset {name!r} not found: {path} does not exist. {FETCH_HINT}"
        )


def _call_torchvision(name: str, folder: Path, build: Callable[[], Any], *, download: bool) -> Any:
    """Run a torchvision dataset constructor and turn its failures into one-line errors."""
    try:
        return build()
    except (RuntimeError, OSError) as error:
        # torchvision raises RuntimeError for missing files and failed checksums, and
        # urllib raises URLError, an OSError, when a download cannot connect.
        if download:
            raise DatasetNotFoundError(
                f"downloading dataset {name!r} into {folder} failed ({_one_line(error)}). "
                f"Check the internet connection or copy the files into {folder} by hand"
            ) from error
        raise DatasetNotFoundError(
            f"dataset {name!r} in {folder} is incomplete or corrupted "
            f"({_one_line(error)}). Delete it and fetch it again with `{DOWNLOAD_COMMAND}`"
        ) from error


# ---------------------------------------------------------------------------------------
# Bundled and generated datasets
# ---------------------------------------------------------------------------------------


@register_dataset("digits")
def _load_digits(root: Path, *, download: bool, seed: int) -> DatasetSplits:
    """Load scikit-learn's 8x8 digits with the fixed stratified 80/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images[:, None, :, :]  # (1797, 1, 8, 8), pixel values 0..16
    train_x, test_x, train_y, test_y = train_test_split(
        images,
        digits.target,
        test_size=DIGITS_TEST_FRACTION,
        stratify=digits.target,
        random_state=DIGITS_SPLIT_RANDOM_STATE,
    )
    return _make_splits(
        "digits",
        train=(train_x, train_y),
        test=(test_x, test_y),
        num_classes=10,
        source="scikit-learn (bundled)",
    )


@register_dataset("mnist1d")
def _load_mnist1d(root: Path, *, download: bool, seed: int) -> DatasetSplits:
    """Generate MNIST-1D with the package's default arguments (5,000 signals, 80/20 split)."""
    from mnist1d.data import get_dataset_args, make_dataset

    # make_dataset seeds the global `random` and NumPy generators with its own seed (42 by
    # default), so their state is restored afterwards to leave the caller's RNGs untouched.
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    try:
        data = make_dataset(get_dataset_args())
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)

    return _make_splits(
        "mnist1d",
        train=(data["x"][:, None, :], data["y"]),
        test=(data["x_test"][:, None, :], data["y_test"]),
        num_classes=10,
        source="mnist1d.make_dataset (generated)",
    )


@register_dataset("synthetic")
def _load_synthetic(root: Path, *, download: bool, seed: int) -> DatasetSplits:
    """Draw Gaussian clusters around random class means: 400 train and 100 test samples."""
    rng = np.random.default_rng(seed)
    num_features = int(np.prod(SYNTHETIC_SHAPE))
    class_means = rng.normal(0.0, 1.0, size=(SYNTHETIC_NUM_CLASSES, num_features))

    def draw(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.permutation(np.repeat(np.arange(SYNTHETIC_NUM_CLASSES), per_class))
        inputs = class_means[labels] + rng.normal(0.0, 1.0, size=(len(labels), num_features))
        return inputs.reshape(len(labels), *SYNTHETIC_SHAPE), labels

    return _make_splits(
        "synthetic",
        train=draw(SYNTHETIC_TRAIN_PER_CLASS),
        test=draw(SYNTHETIC_TEST_PER_CLASS),
        num_classes=SYNTHETIC_NUM_CLASSES,
        source=f"Gaussian clusters (seed {seed})",
    )


# ---------------------------------------------------------------------------------------
# torchvision datasets in torchvision's on-disk layout
# ---------------------------------------------------------------------------------------


def _load_mnist_family(name: str, class_name: str, root: Path, *, download: bool) -> DatasetSplits:
    """Load MNIST or Fashion-MNIST from ``root/<class_name>/raw``."""
    import torchvision.datasets

    dataset_class = getattr(torchvision.datasets, class_name)
    folder = root / class_name
    _require(folder, name, download=download)
    train = _call_torchvision(
        name, folder, lambda: dataset_class(root, train=True, download=download), download=download
    )
    test = _call_torchvision(
        name, folder, lambda: dataset_class(root, train=False), download=False
    )
    return _make_splits(
        name,
        train=(train.data.unsqueeze(1).numpy(), train.targets.numpy()),
        test=(test.data.unsqueeze(1).numpy(), test.targets.numpy()),
        num_classes=len(train.classes),
        source=str(folder),
    )


@register_dataset("mnist")
def _load_mnist(root: Path, *, download: bool, seed: int) -> DatasetSplits:
    """Load MNIST (1, 28, 28) from ``root/MNIST/raw``."""
    return _load_mnist_family("mnist", "MNIST", root, download=download)


@register_dataset("fashion_mnist")
def _load_fashion_mnist(root: Path, *, download: bool, seed: int) -> DatasetSplits:
    """Load Fashion-MNIST (1, 28, 28) from ``root/FashionMNIST/raw``."""
    return _load_mnist_family("fashion_mnist", "FashionMNIST", root, download=download)


def _load_cifar_family(name: str, class_name: str, root: Path, *, download: bool) -> DatasetSplits:
    """Load CIFAR-10 or CIFAR-100 (fine labels) from torchvision's pickled batches."""
    import torchvision.datasets

    dataset_class = getattr(torchvision.datasets, class_name)
    folder = root / dataset_class.base_folder
    _require(folder, name, download=download)
    train = _call_torchvision(
        name, folder, lambda: dataset_class(root, train=True, download=download), download=download
    )
    test = _call_torchvision(
        name, folder, lambda: dataset_class(root, train=False), download=False
    )
    return _make_splits(
        name,
        train=(_nhwc_to_nchw(train.data), train.targets),
        test=(_nhwc_to_nchw(test.data), test.targets),
        num_classes=len(train.classes),
        source=str(folder),
    )


@register_dataset("cifar10")
def _load_cifar10(root: Path, *, download: bool, seed: int) -> DatasetSplits:
    """Load CIFAR-10 (3, 32, 32) from ``root/cifar-10-batches-py``."""
    return _load_cifar_family("cifar10", "CIFAR10", root, download=download)


@register_dataset("cifar100")
def _load_cifar100(root: Path, *, download: bool, seed: int) -> DatasetSplits:
    """Load CIFAR-100 (3, 32, 32) with its 100 fine labels from ``root/cifar-100-python``."""
    return _load_cifar_family("cifar100", "CIFAR100", root, download=download)


@register_dataset("svhn")
def _load_svhn(root: Path, *, download: bool, seed: int) -> DatasetSplits:
    """Load SVHN (3, 32, 32) from ``root/train_32x32.mat`` and ``root/test_32x32.mat``.

    The ``extra`` split is not loaded. torchvision maps the digit 0, stored as label 10, to 0.
    """
    from torchvision.datasets import SVHN

    splits = {}
    for split in ("train", "test"):
        path = root / SVHN.split_list[split][1]
        _require(path, "svhn", download=download)
        splits[split] = _call_torchvision(
            "svhn",
            path,
            lambda split=split: SVHN(root, split=split, download=download),
            download=download,
        )
    return _make_splits(
        "svhn",
        train=(splits["train"].data, splits["train"].labels),
        test=(splits["test"].data, splits["test"].labels),
        num_classes=10,
        source=str(root),
    )


# ---------------------------------------------------------------------------------------
# CINIC-10 in the folder layout of its official release
# ---------------------------------------------------------------------------------------


def _read_image_folder(folder: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read every image of a ``<class>/<file>`` folder as uint8 RGB (N, C, H, W)."""
    from PIL import Image
    from torchvision.datasets import ImageFolder

    listing = ImageFolder(str(folder))
    images = []
    for path, _ in listing.samples:
        with Image.open(path) as image:
            # Some CINIC-10 images are stored as greyscale, so every image is converted.
            images.append(np.asarray(image.convert("RGB")))
    labels = np.asarray(listing.targets, dtype=np.int64)
    return _nhwc_to_nchw(np.stack(images)), labels, listing.classes


def _download_cinic10(folder: Path) -> None:
    """Download the CINIC-10 archive and unpack it into ``folder``."""
    from torchvision.datasets.utils import download_and_extract_archive

    logger.info("Downloading CINIC-10 from %s into %s", CINIC10_URL, folder)
    # NOTE: the archive is assumed to unpack train/, valid/ and test/ at its top level. This
    # download path has only run against a mocked download, never against the real archive.
    _call_torchvision(
        "cinic10",
        folder,
        lambda: download_and_extract_archive(CINIC10_URL, download_root=str(folder)),
        download=True,
    )


@register_dataset("cinic10")
def _load_cinic10(root: Path, *, download: bool, seed: int) -> DatasetSplits:
    """Load CINIC-10 (3, 32, 32) from ``root/cinic10/{train,test}/<class>/*.png``.

    [choice] Training uses the ``train`` folder only and ``valid`` is not loaded, so the
    training set has 90,000 images and the test set 90,000.
    """
    folder = root / CINIC10_FOLDER
    if download and not (folder / "train").is_dir():
        _download_cinic10(folder)
    for split in ("train", "test"):
        _require(folder / split, "cinic10", download=False)

    train_x, train_y, train_classes = _read_image_folder(folder / "train")
    test_x, test_y, test_classes = _read_image_folder(folder / "test")
    if train_classes != test_classes:
        raise DatasetNotFoundError(
            f"dataset 'cinic10' in {folder} is incomplete: train has classes {train_classes} "
            f"but test has {test_classes}. {FETCH_HINT}"
        )
    return _make_splits(
        "cinic10",
        train=(train_x, train_y),
        test=(test_x, test_y),
        num_classes=len(train_classes),
        source=str(folder),
    )
