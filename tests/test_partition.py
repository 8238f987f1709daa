"""Tests of partitioning through flwr-datasets partitioners, statistics and the heat map."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsign.errors import ConfigError, UserInputError
from fedsign.partition import (
    list_partitioners,
    partition_indices,
    partition_statistics,
    plot_label_distribution,
    summarize_partitions,
)

SCHEMES = ["dirichlet", "iid", "pathological", "quantity", "shard"]
FULL_COVERAGE_SCHEMES = ["iid", "dirichlet", "quantity"]


def balanced_labels(num_classes: int = 10, per_class: int = 60) -> np.ndarray:
    return np.tile(np.arange(num_classes), per_class)


def effective_classes(labels: np.ndarray, partitions: list[np.ndarray]) -> np.ndarray:
    return np.asarray([len(np.unique(labels[indices])) for indices in partitions])


@st.composite
def label_arrays(draw: st.DrawFn) -> np.ndarray:
    """Draw a random integer label array with 2 to 10 classes and up to 300 samples."""
    num_classes = draw(st.integers(min_value=2, max_value=10))
    num_samples = draw(st.integers(min_value=num_classes, max_value=300))
    labels_seed = draw(st.integers(min_value=0, max_value=2**32 - 1))
    return np.random.default_rng(labels_seed).integers(0, num_classes, size=num_samples)


# ---------------------------------------------------------------------------------------
# Assignment properties
# ---------------------------------------------------------------------------------------


def test_list_partitioners_names_schemes() -> None:
    assert list_partitioners() == SCHEMES


@pytest.mark.parametrize("scheme", FULL_COVERAGE_SCHEMES)
@settings(max_examples=15, deadline=None)
@given(
    labels=label_arrays(),
    num_partitions=st.integers(min_value=1, max_value=12),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
    alpha=st.floats(min_value=0.05, max_value=20.0),
)
def test_every_sample_assigned_once(
    scheme: str, labels: np.ndarray, num_partitions: int, seed: int, alpha: float
) -> None:
    num_partitions = min(num_partitions, len(labels))

    partitions = partition_indices(
        labels,
        scheme=scheme,
        num_partitions=num_partitions,
        seed=seed,
        alpha=alpha,
        min_partition_size=0,
    )

    assert len(partitions) == num_partitions
    combined = np.concatenate(partitions)
    np.testing.assert_array_equal(np.sort(combined), np.arange(len(labels)))


@pytest.mark.parametrize("scheme", ["shard", "pathological"])
@settings(max_examples=15, deadline=None)
@given(
    num_classes=st.integers(min_value=2, max_value=10),
    per_class=st.integers(min_value=12, max_value=30),
    num_partitions=st.integers(min_value=1, max_value=12),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
)
def test_samples_assigned_at_most_once(
    scheme: str, num_classes: int, per_class: int, num_partitions: int, seed: int
) -> None:
    # per_class >= num_partitions keeps every pathological split feasible.
    labels = balanced_labels(num_classes, per_class)

    partitions = partition_indices(
        labels,
        scheme=scheme,
        num_partitions=num_partitions,
        seed=seed,
        classes_per_partition=min(2, num_classes),
        shards_per_partition=2,
    )

    combined = np.concatenate(partitions)
    assert len(np.unique(combined)) == len(combined)
    assert combined.min() >= 0
    assert combined.max() < len(labels)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_same_seed_same_partitions(scheme: str) -> None:
    labels = balanced_labels()

    first = partition_indices(labels, scheme=scheme, num_partitions=8, seed=11)
    again = partition_indices(labels, scheme=scheme, num_partitions=8, seed=11)

    assert len(first) == len(again)
    for indices, repeated in zip(first, again, strict=True):
        np.testing.assert_array_equal(indices, repeated)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_other_seed_other_partitions(scheme: str) -> None:
    labels = balanced_labels()

    first = partition_indices(labels, scheme=scheme, num_partitions=8, seed=11)
    other = partition_indices(labels, scheme=scheme, num_partitions=8, seed=12)

    assert any(
        not np.array_equal(indices, changed) for indices, changed in zip(first, other, strict=True)
    )


@pytest.mark.parametrize("scheme", SCHEMES)
def test_indices_sorted_int64(scheme: str) -> None:
    partitions = partition_indices(balanced_labels(), scheme=scheme, num_partitions=5, seed=0)

    for indices in partitions:
        assert indices.dtype == np.int64
        assert np.all(np.diff(indices) > 0)


def test_iid_sizes_balanced() -> None:
    labels = balanced_labels(per_class=61)  # 610 samples do not divide by 7

    partitions = partition_indices(labels, scheme="iid", num_partitions=7, seed=0)

    sizes = [len(indices) for indices in partitions]
    assert max(sizes) - min(sizes) <= 1
    assert sum(sizes) == len(labels)
    # Shuffling before the split gives each partition most classes, not a sorted block.
    assert effective_classes(labels, partitions).min() >= 8


@pytest.mark.parametrize("classes_per_partition", [1, 2, 3])
def test_pathological_limits_classes(classes_per_partition: int) -> None:
    labels = balanced_labels()

    partitions = partition_indices(
        labels,
        scheme="pathological",
        num_partitions=10,
        seed=5,
        classes_per_partition=classes_per_partition,
    )

    assert effective_classes(labels, partitions).max() <= classes_per_partition
    # With at least as many partitions as classes, every class is used, so nothing is lost.
    assert sum(len(indices) for indices in partitions) == len(labels)


def test_dirichlet_small_alpha_more_skewed() -> None:
    labels = balanced_labels(per_class=100)
    mean_classes = {}
    for alpha in (0.05, 100.0):
        partitions = partition_indices(
            labels, scheme="dirichlet", num_partitions=10, seed=0, alpha=alpha, min_partition_size=0
        )
        mean_classes[alpha] = effective_classes(labels, partitions).mean()

    assert mean_classes[0.05] < 5
    assert mean_classes[100.0] == 10
    assert mean_classes[0.05] < mean_classes[100.0]


def test_dirichlet_respects_min_partition_size() -> None:
    partitions = partition_indices(
        balanced_labels(),
        scheme="dirichlet",
        num_partitions=10,
        seed=1,
        alpha=0.3,
        min_partition_size=20,
    )

    assert min(len(indices) for indices in partitions) >= 20


def test_shard_equal_sizes_small_remainder() -> None:
    labels = balanced_labels(per_class=61)  # 610 samples: 20 shards of 30, 10 left over

    partitions = partition_indices(
        labels, scheme="shard", num_partitions=10, seed=0, shards_per_partition=2
    )

    assert {len(indices) for indices in partitions} == {60}
    assert len(labels) - sum(len(indices) for indices in partitions) == 10
    # A label-sorted shard of 30 spans at most two classes when each class has 61 samples.
    assert effective_classes(labels, partitions).max() <= 4


def test_quantity_skews_sizes_not_labels() -> None:
    labels = balanced_labels(per_class=100)

    partitions = partition_indices(
        labels, scheme="quantity", num_partitions=10, seed=2, alpha=0.5, min_partition_size=5
    )

    sizes = np.asarray([len(indices) for indices in partitions])
    assert sizes.sum() == len(labels)
    assert sizes.min() >= 5
    assert sizes.max() > 2 * sizes.min()
    largest = partitions[int(sizes.argmax())]
    assert len(np.unique(labels[largest])) == 10


# ---------------------------------------------------------------------------------------
# Invalid input
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.0, -1.0, math.nan])
@pytest.mark.parametrize("scheme", ["dirichlet", "quantity"])
def test_nonpositive_alpha_rejected(scheme: str, alpha: float) -> None:
    with pytest.raises(ConfigError, match="data.alpha"):
        partition_indices(balanced_labels(), scheme=scheme, num_partitions=4, seed=0, alpha=alpha)


def test_zero_partitions_rejected() -> None:
    with pytest.raises(ConfigError, match="data.num_partitions=0"):
        partition_indices(balanced_labels(), scheme="iid", num_partitions=0, seed=0)


def test_more_partitions_than_samples_rejected() -> None:
    labels = balanced_labels(num_classes=2, per_class=5)

    with pytest.raises(UserInputError) as raised:
        partition_indices(labels, scheme="iid", num_partitions=11, seed=0)

    assert "data.num_partitions=11 exceeds the 10 training samples" in str(raised.value)


def test_negative_seed_rejected() -> None:
    with pytest.raises(UserInputError, match="seed -1"):
        partition_indices(balanced_labels(), scheme="iid", num_partitions=4, seed=-1)


def test_unknown_scheme_lists_schemes() -> None:
    with pytest.raises(ConfigError) as raised:
        partition_indices(balanced_labels(), scheme="label_skew", num_partitions=4, seed=0)

    message = str(raised.value)
    assert "'label_skew'" in message
    for scheme in SCHEMES:
        assert scheme in message


@pytest.mark.parametrize("classes_per_partition", [0, 11])
def test_classes_per_partition_out_of_range(classes_per_partition: int) -> None:
    with pytest.raises(ConfigError, match=r"data.classes_per_partition=.*\[1, 10\]"):
        partition_indices(
            balanced_labels(),
            scheme="pathological",
            num_partitions=4,
            seed=0,
            classes_per_partition=classes_per_partition,
        )


def test_zero_shards_per_partition_rejected() -> None:
    with pytest.raises(ConfigError, match="data.shards_per_partition=0"):
        partition_indices(
            balanced_labels(), scheme="shard", num_partitions=4, seed=0, shards_per_partition=0
        )


def test_too_many_shards_rejected() -> None:
    labels = balanced_labels(num_classes=2, per_class=5)

    with pytest.raises(UserInputError, match="data.shards_per_partition=3"):
        partition_indices(labels, scheme="shard", num_partitions=4, seed=0, shards_per_partition=3)


def test_negative_min_partition_size_rejected() -> None:
    with pytest.raises(ConfigError, match="data.min_partition_size=-1"):
        partition_indices(
            balanced_labels(), scheme="dirichlet", num_partitions=4, seed=0, min_partition_size=-1
        )


@pytest.mark.parametrize("scheme", ["dirichlet", "quantity"])
def test_unreachable_min_partition_size_rejected(scheme: str) -> None:
    with pytest.raises(UserInputError, match="data.min_partition_size=200"):
        partition_indices(
            balanced_labels(), scheme=scheme, num_partitions=4, seed=0, min_partition_size=200
        )


def test_dirichlet_gives_up_with_advice() -> None:
    labels = balanced_labels(per_class=20)

    with pytest.raises(UserInputError) as raised:
        partition_indices(
            labels,
            scheme="dirichlet",
            num_partitions=50,
            seed=0,
            alpha=0.001,
            min_partition_size=3,
        )

    message = str(raised.value)
    assert "data.alpha=0.001" in message
    assert "larger data.alpha" in message
    assert "fewer partitions" in message


def test_pathological_rare_class_reports_key() -> None:
    # Class 1 has 2 samples but 3 partitions start with it, so it cannot be split.
    labels = np.asarray([0] * 20 + [1] * 2)

    with pytest.raises(UserInputError) as raised:
        partition_indices(
            labels, scheme="pathological", num_partitions=6, seed=0, classes_per_partition=1
        )

    message = str(raised.value)
    assert "class 1" in message
    assert "3 partitions" in message
    assert "only 2 samples" in message
    assert "data.num_partitions" in message


# ---------------------------------------------------------------------------------------
# Statistics and plot
# ---------------------------------------------------------------------------------------


def test_statistics_hand_counted() -> None:
    labels = np.asarray([0, 0, 1, 2, 2, 2])
    partitions = [np.asarray([0, 1]), np.asarray([2, 3, 4, 5])]

    stats = partition_statistics(labels, partitions, num_classes=4)

    expected = pd.DataFrame(
        {
            "partition_id": [0, 0, 0, 0, 1, 1, 1, 1],
            "label": [0, 1, 2, 3, 0, 1, 2, 3],
            "count": [2, 0, 0, 0, 0, 1, 3, 0],
        }
    )
    pd.testing.assert_frame_equal(stats, expected, check_dtype=False)


def test_summary_hand_computed() -> None:
    labels = np.asarray([0, 0, 1, 2, 2, 2])
    partitions = [np.asarray([0, 1]), np.asarray([2, 3, 4, 5]), np.asarray([], dtype=np.int64)]
    stats = partition_statistics(labels, partitions, num_classes=3)

    summary = summarize_partitions(stats)

    assert summary["partition_id"].tolist() == [0, 1, 2]
    assert summary["size"].tolist() == [2, 4, 0]
    assert summary["effective_classes"].tolist() == [1, 2, 0]
    expected_entropy = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert summary["label_entropy"].tolist() == pytest.approx([0.0, expected_entropy, 0.0])


def test_plot_writes_png(tmp_path: Path) -> None:
    labels = balanced_labels()
    partitions = partition_indices(labels, scheme="dirichlet", num_partitions=6, seed=0)
    path = tmp_path / "plots" / "labels.png"

    plot_label_distribution(partition_statistics(labels, partitions, 10), path)

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
