"""Split training labels into client partitions with flwr-datasets partitioners.

The partitioners run on an in-memory ``datasets.Dataset`` with two columns, ``label`` and
``index`` (the sample's position in the training set), so no dataset hub is contacted. The
label dataset is first shuffled with ``seed``, which makes every scheme, including the
seedless ``IidPartitioner``, a deterministic function of ``seed``.

Schemes:

- ``iid``: ``IidPartitioner``, equal sizes (differing by at most one sample).
- ``dirichlet``: ``DirichletPartitioner``, label skew where each class is split over the
  partitions in proportions drawn from Dirichlet(``alpha``). Smaller ``alpha`` means more skew.
- ``pathological``: ``PathologicalPartitioner`` in its ``"first-deterministic"`` class
  assignment mode, each partition contains exactly ``classes_per_partition`` classes.
- ``shard``: ``ShardPartitioner``, the label-sorted data is cut into equal shards and each
  partition receives ``shards_per_partition`` random shards.
- ``quantity``: ``SizePartitioner`` with partition sizes drawn from Dirichlet(``alpha``) on
  top of ``min_partition_size`` samples each, labels spread as in ``iid``.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fedsign.errors import ConfigError, UserInputError

if TYPE_CHECKING:
    from flwr_datasets.partitioner import Partitioner

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Settings:
    """Validated partitioning arguments handed to each scheme's partitioner factory."""

    num_samples: int
    num_partitions: int
    seed: int
    alpha: float
    classes_per_partition: int
    shards_per_partition: int
    min_partition_size: int


# A factory builds a flwr-datasets Partitioner, without a dataset yet, from the settings.
# flwr-datasets is imported inside the factories because it imports the slow `datasets`.
_PartitionerFactory = Callable[[_Settings], "Partitioner"]
_FACTORIES: dict[str, _PartitionerFactory] = {}


def _register_partitioner(name: str) -> Callable[[_PartitionerFactory], _PartitionerFactory]:
    """Register a partitioner factory under the scheme name ``name``."""

    def decorator(factory: _PartitionerFactory) -> _PartitionerFactory:
        if name in _FACTORIES:
            raise ValueError(f"partitioning scheme {name!r} is already registered")
        _FACTORIES[name] = factory
        return factory

    return decorator


def list_partitioners() -> list[str]:
    """Return the registered partitioning scheme names in alphabetical order."""
    return sorted(_FACTORIES)


# ---------------------------------------------------------------------------------------
# Schemes
# ---------------------------------------------------------------------------------------


@_register_partitioner("iid")
def _iid(settings: _Settings) -> Partitioner:
    from flwr_datasets.partitioner import IidPartitioner

    return IidPartitioner(num_partitions=settings.num_partitions)


@_register_partitioner("dirichlet")
def _dirichlet(settings: _Settings) -> Partitioner:
    from flwr_datasets.partitioner import DirichletPartitioner

    return DirichletPartitioner(
        num_partitions=settings.num_partitions,
        partition_by="label",
        alpha=float(settings.alpha),
        min_partition_size=settings.min_partition_size,
        self_balancing=False,
        seed=settings.seed,
    )


@_register_partitioner("pathological")
def _pathological(settings: _Settings) -> Partitioner:
    from flwr_datasets.partitioner import PathologicalPartitioner

    # "first-deterministic" gives partition p the class p % num_classes first, so every class
    # is used whenever num_partitions >= num_classes. flwr-datasets documents it as the mode
    # of "Federated Learning on Non-IID Data Silos: An Experimental Study" (Li et al.).
    return PathologicalPartitioner(
        num_partitions=settings.num_partitions,
        partition_by="label",
        num_classes_per_partition=settings.classes_per_partition,
        class_assignment_mode="first-deterministic",
        seed=settings.seed,
    )


@_register_partitioner("shard")
def _shard(settings: _Settings) -> Partitioner:
    from flwr_datasets.partitioner import ShardPartitioner

    return ShardPartitioner(
        num_partitions=settings.num_partitions,
        partition_by="label",
        num_shards_per_partition=settings.shards_per_partition,
        seed=settings.seed,
    )


@_register_partitioner("quantity")
def _quantity(settings: _Settings) -> Partitioner:
    from flwr_datasets.partitioner import SizePartitioner

    sizes = _dirichlet_sizes(settings)
    return SizePartitioner(partition_sizes=[int(size) for size in sizes])


def _dirichlet_sizes(settings: _Settings) -> np.ndarray:
    """Draw partition sizes: the minimum size each, plus Dirichlet(alpha) shares of the rest.

    Largest-remainder rounding makes the sizes sum to exactly ``num_samples``.
    """
    floor = max(settings.min_partition_size, 1)
    rest = settings.num_samples - floor * settings.num_partitions
    rng = np.random.default_rng(settings.seed)
    shares = rng.dirichlet(np.full(settings.num_partitions, settings.alpha)) * rest

    extra = np.floor(shares).astype(np.int64)
    leftover = rest - int(extra.sum())
    extra[np.argsort(shares - extra)[::-1][:leftover]] += 1
    return floor + extra


# ---------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------


def _validate(labels: np.ndarray, *, scheme: str, settings: _Settings) -> None:
    """Raise UserInputError or ConfigError, naming the config key, for invalid arguments."""
    if scheme not in _FACTORIES:
        raise ConfigError(
            f"data.partitioner={scheme!r} is not a partitioning scheme: "
            f"choose one of {', '.join(list_partitioners())}"
        )
    if labels.ndim != 1:
        raise UserInputError(f"labels must be a 1-D array, got shape {labels.shape}")
    if settings.seed < 0:
        raise UserInputError(f"partition seed {settings.seed} must be at least 0")
    if settings.num_partitions < 1:
        raise ConfigError(f"data.num_partitions={settings.num_partitions} must be at least 1")
    if settings.num_partitions > settings.num_samples:
        raise UserInputError(
            f"data.num_partitions={settings.num_partitions} exceeds the "
            f"{settings.num_samples} training samples, so use at most {settings.num_samples}"
        )
    if settings.min_partition_size < 0:
        raise ConfigError(
            f"data.min_partition_size={settings.min_partition_size} must be at least 0"
        )
    _validate_scheme_options(labels, scheme=scheme, settings=settings)


def _validate_scheme_options(labels: np.ndarray, *, scheme: str, settings: _Settings) -> None:
    """Check the options that only some schemes use."""
    if scheme in ("dirichlet", "quantity"):
        if not settings.alpha > 0 or not math.isfinite(settings.alpha):
            raise ConfigError(f"data.alpha={settings.alpha} must be a finite number above 0")
        floor = max(settings.min_partition_size, 1 if scheme == "quantity" else 0)
        if floor * settings.num_partitions > settings.num_samples:
            raise UserInputError(
                f"data.min_partition_size={settings.min_partition_size} times "
                f"data.num_partitions={settings.num_partitions} exceeds the "
                f"{settings.num_samples} training samples, so lower one of them"
            )

    if scheme == "pathological":
        num_classes = len(np.unique(labels))
        if not 1 <= settings.classes_per_partition <= num_classes:
            raise ConfigError(
                f"data.classes_per_partition={settings.classes_per_partition} must lie in "
                f"[1, {num_classes}], the number of classes in the training labels"
            )

    if scheme == "shard":
        if settings.shards_per_partition < 1:
            raise ConfigError(
                f"data.shards_per_partition={settings.shards_per_partition} must be at least 1"
            )
        num_shards = settings.shards_per_partition * settings.num_partitions
        if num_shards > settings.num_samples:
            raise UserInputError(
                f"data.shards_per_partition={settings.shards_per_partition} times "
                f"data.num_partitions={settings.num_partitions} gives {num_shards} shards, "
                f"more than the {settings.num_samples} training samples, so lower one of them"
            )


# ---------------------------------------------------------------------------------------
# Partitioning
# ---------------------------------------------------------------------------------------


def partition_indices(
    labels: np.ndarray,
    *,
    scheme: str,
    num_partitions: int,
    seed: int,
    alpha: float = 0.5,
    classes_per_partition: int = 2,
    shards_per_partition: int = 2,
    min_partition_size: int = 2,
) -> list[np.ndarray]:
    """Split training sample indices into client partitions.

    Parameters
    ----------
    labels : np.ndarray
        1-D integer class labels of the training set.
    scheme : str
        Partitioning scheme, set by the config key ``data.partitioner``: one of
        :func:`list_partitioners`, which are ``iid``, ``dirichlet``, ``pathological``,
        ``shard`` and ``quantity`` (see the module docstring).
    num_partitions : int
        Number of partitions (clients), between 1 and ``len(labels)``.
    seed : int
        Seed of the partitioning. The same seed and arguments give the same partitions.
    alpha : float, default 0.5
        Dirichlet concentration for ``dirichlet`` (label skew) and ``quantity`` (size skew).
    classes_per_partition : int, default 2
        Classes per partition for ``pathological``, between 1 and the number of classes.
    shards_per_partition : int, default 2
        Shards per partition for ``shard``.
    min_partition_size : int, default 2
        Minimum samples per partition for ``dirichlet`` (the draw is repeated until it holds)
        and ``quantity`` (at least 1 there).

    Returns
    -------
    list of np.ndarray
        One sorted int64 index array per partition. The partitions are disjoint. ``iid``,
        ``dirichlet`` and ``quantity`` cover every sample. ``shard`` leaves out the remainder
        of ``len(labels) / (num_partitions * shards_per_partition)``. ``pathological`` leaves
        out the classes that no partition draws, which can happen when
        ``num_partitions < num_classes``. A WARNING log line reports how many samples are left out.

    Raises
    ------
    ConfigError
        If an option is out of range or ``scheme`` is unknown; the message names the key.
    UserInputError
        If the labels cannot be split with these options, for example when the Dirichlet
        draws keep producing partitions smaller than ``min_partition_size``.
    """
    labels = np.asarray(labels)
    settings = _Settings(
        num_samples=len(labels),
        num_partitions=num_partitions,
        seed=seed,
        alpha=alpha,
        classes_per_partition=classes_per_partition,
        shards_per_partition=shards_per_partition,
        min_partition_size=min_partition_size,
    )
    _validate(labels, scheme=scheme, settings=settings)

    partitions = _run_partitioner(labels, scheme=scheme, settings=settings)

    num_assigned = sum(len(indices) for indices in partitions)
    if num_assigned < len(labels):
        logger.warning(
            "Scheme %s left %d of %d training samples in no partition",
            scheme,
            len(labels) - num_assigned,
            len(labels),
        )
    logger.info(
        "Partitioned %d samples into %d partitions with scheme %s (seed %d), sizes %d to %d",
        len(labels),
        num_partitions,
        scheme,
        seed,
        min(len(indices) for indices in partitions),
        max(len(indices) for indices in partitions),
    )
    return partitions


def _run_partitioner(labels: np.ndarray, *, scheme: str, settings: _Settings) -> list[np.ndarray]:
    """Fit the scheme's flwr-datasets partitioner and read back each partition's indices."""
    import datasets

    table = datasets.Dataset.from_dict(
        {"label": labels.tolist(), "index": np.arange(len(labels), dtype=np.int64)}
    )
    partitioner = _FACTORIES[scheme](settings)
    partitioner.dataset = table.shuffle(seed=settings.seed)

    # flwr-datasets warns on every rejected Dirichlet draw and on unused pathological classes.
    # The warnings are dropped because a failed Dirichlet search raises UserInputError below
    # and partition_indices logs the samples that end up in no partition.
    partitions = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for partition_id in range(settings.num_partitions):
                rows = partitioner.load_partition(partition_id)
                partitions.append(np.sort(np.asarray(rows["index"], dtype=np.int64)))
    except ValueError as error:
        raise _explain_failure(error, scheme=scheme, settings=settings) from error
    return partitions


def _explain_failure(error: ValueError, *, scheme: str, settings: _Settings) -> UserInputError:
    """Translate a flwr-datasets ValueError into a one-line error that names the keys."""
    reason = " ".join(str(error).split())
    if scheme == "dirichlet" and "max number of attempts" in reason:
        # DirichletPartitioner redraws while a partition is below min_partition_size and
        # gives up after 11 draws (flwr-datasets 0.6.1).
        return UserInputError(
            f"data.alpha={settings.alpha} with data.num_partitions={settings.num_partitions}: "
            f"every Dirichlet draw left a partition below "
            f"data.min_partition_size={settings.min_partition_size} samples. Use a larger "
            f"data.alpha, fewer partitions or a smaller data.min_partition_size"
        )
    rare_class = re.search(
        r"Label: (\S+) is needed .*? more partitions \((\d+)\).*? in the dataset \((\d+)\)", reason
    )
    if scheme == "pathological" and rare_class:
        label, needed, available = rare_class.groups()
        return UserInputError(
            f"data.classes_per_partition={settings.classes_per_partition} with "
            f"data.num_partitions={settings.num_partitions}: class {label} would be split over "
            f"{needed} partitions but has only {available} samples. Lower "
            f"data.num_partitions or data.classes_per_partition"
        )
    return UserInputError(
        f"data.partitioner={scheme!r} cannot split {settings.num_samples} samples into "
        f"data.num_partitions={settings.num_partitions} partitions ({reason})"
    )


# ---------------------------------------------------------------------------------------
# Statistics and plots
# ---------------------------------------------------------------------------------------


def partition_statistics(
    labels: np.ndarray, partitions: list[np.ndarray], num_classes: int
) -> pd.DataFrame:
    """Count the samples of every class in every partition.

    Parameters
    ----------
    labels : np.ndarray
        1-D integer class labels of the training set.
    partitions : list of np.ndarray
        Index arrays as returned by :func:`partition_indices`.
    num_classes : int
        Number of classes; labels lie in ``[0, num_classes)``.

    Returns
    -------
    pandas.DataFrame
        Tidy table with columns ``partition_id``, ``label`` and ``count``: one row for each
        partition and class, zero counts included.
    """
    labels = np.asarray(labels)
    counts = np.stack(
        [np.bincount(labels[indices], minlength=num_classes) for indices in partitions]
    )
    partition_ids, class_ids = np.meshgrid(
        np.arange(len(partitions)), np.arange(num_classes), indexing="ij"
    )
    return pd.DataFrame(
        {
            "partition_id": partition_ids.ravel(),
            "label": class_ids.ravel(),
            "count": counts.ravel().astype(np.int64),
        }
    )


def summarize_partitions(stats: pd.DataFrame) -> pd.DataFrame:
    """Summarise each partition's size and label spread.

    Parameters
    ----------
    stats : pandas.DataFrame
        Output of :func:`partition_statistics`.

    Returns
    -------
    pandas.DataFrame
        One row per partition with columns ``partition_id``, ``size``, ``effective_classes``
        (classes with a count above 0) and ``label_entropy`` (Shannon entropy of the
        partition's label distribution in nats, 0 for an empty partition).
    """

    def entropy(counts: pd.Series) -> float:
        total = counts.sum()
        if total == 0:
            return 0.0
        probabilities = counts[counts > 0] / total
        return float(-(probabilities * np.log(probabilities)).sum())

    grouped = stats.groupby("partition_id", sort=True)["count"]
    return pd.DataFrame(
        {
            "size": grouped.sum(),
            "effective_classes": grouped.apply(lambda counts: int((counts > 0).sum())),
            "label_entropy": grouped.apply(entropy),
        }
    ).reset_index()


def plot_label_distribution(stats: pd.DataFrame, path: Path) -> None:
    """Draw a heat map of sample counts, partitions × classes, and save it as PNG.

    Parameters
    ----------
    stats : pandas.DataFrame
        Output of :func:`partition_statistics`.
    path : Path
        Output PNG file. Missing parent folders are created.
    """
    import seaborn as sns
    from matplotlib.figure import Figure

    table = stats.pivot(index="partition_id", columns="label", values="count")
    num_partitions, num_classes = table.shape
    annotate = num_partitions * num_classes <= 400

    # A bare Figure (not pyplot) keeps no global state, so it needs no close and is safe to
    # draw outside the main thread.
    figure = Figure(figsize=(2 + 0.45 * num_classes, 1.5 + 0.3 * num_partitions))
    axes = figure.subplots()
    sns.heatmap(
        table, ax=axes, cmap="viridis", annot=annotate, fmt="d", cbar_kws={"label": "samples"}
    )
    axes.set_xlabel("class label")
    axes.set_ylabel("partition_id")
    axes.set_title(f"Label distribution over {num_partitions} partitions")

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100, bbox_inches="tight")
    logger.info("Saved label distribution plot to %s", path)
