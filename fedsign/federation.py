"""Federated data and model set-up shared by the server, the clients and the CLI.

Everything here is plain PyTorch and deterministic in the run seed. The partitioned data
is built once per process and cached, because Flower calls a ClientApp once per message
and a Ray actor serves many clients over many rounds.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedsign.config import Config, DataConfig, ModelConfig, TrainConfig
from fedsign.datasets import DatasetSplits, load_dataset
from fedsign.models import build_model
from fedsign.partition import partition_indices
from fedsign.seeding import derive_seed
from fedsign.training import SGDSettings


@dataclass(frozen=True)
class ClientData:
    """A client's training tensors and its optional local test split."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


@dataclass(frozen=True)
class FederatedData:
    """The dataset and its partition into client shares (index arrays into the train split)."""

    splits: DatasetSplits
    partitions: tuple[np.ndarray, ...]

    def client(self, partition_id: int, local_test_fraction: float, seed: int) -> ClientData:
        """Return the tensors of one client; the local test split is a seeded fraction."""
        indices = torch.as_tensor(self.partitions[partition_id], dtype=torch.long)
        if local_test_fraction > 0 and len(indices) > 1:
            generator = torch.Generator().manual_seed(derive_seed(seed, "local-test", partition_id))
            shuffled = indices[torch.randperm(len(indices), generator=generator)]
            num_test = max(1, int(round(local_test_fraction * len(indices))))
            test, train = shuffled[:num_test].sort().values, shuffled[num_test:].sort().values
        else:
            train, test = indices, indices[:0]
        x, y = self.splits.train_x, self.splits.train_y
        return ClientData(train_x=x[train], train_y=y[train], test_x=x[test], test_y=y[test])


def load_federated_data(data: DataConfig, seed: int) -> FederatedData:
    """Load the dataset named in ``data`` and partition it (cached per process)."""
    return _load_federated_data_cached(_freeze(data), seed)


# Caches one FederatedData per (data config, seed) in this process: a Ray actor serves
# many clients and rounds, and rebuilding the partition for each message is wasted work.
@functools.lru_cache(maxsize=4)
def _load_federated_data_cached(frozen: tuple, seed: int) -> FederatedData:
    data = DataConfig(**dict(frozen))
    splits = load_dataset(data.dataset, root=data.root, download=data.download, seed=seed)
    partitions = partition_indices(
        splits.train_y.numpy(),
        scheme=data.partitioner,
        num_partitions=data.num_partitions,
        seed=derive_seed(seed, "partition"),
        alpha=data.alpha,
        classes_per_partition=data.classes_per_partition,
        shards_per_partition=data.shards_per_partition,
        min_partition_size=data.min_partition_size,
    )
    return FederatedData(splits=splits, partitions=tuple(partitions))


def _freeze(data: DataConfig) -> tuple:
    return tuple(sorted(vars(data).items()))


def build_global_model(model: ModelConfig, splits: DatasetSplits, seed: int) -> nn.Module:
    """Build the initial global model θ_0, seeded from the run seed."""
    torch.manual_seed(derive_seed(seed, "init"))
    return model_from_config(model, splits)


def model_from_config(model: ModelConfig, splits: DatasetSplits) -> nn.Module:
    """Build the configured model for the dataset's input shape and class count."""
    return build_model(
        model.name,
        input_shape=splits.input_shape,
        num_classes=splits.num_classes,
        bn_init=model.bn_init,
        bn_init_std=model.bn_init_std,
        position_encoding=model.position_encoding,
        pe_amplitude=model.pe_amplitude,
        pe_period=model.pe_period,
    )


def round_lr(config: Config, server_round: int) -> float:
    """Return the client learning rate of a round, ramped linearly over ``warmup_rounds``."""
    warmup = config.train.warmup_rounds
    if warmup > 0 and server_round <= warmup:
        return config.train.lr * server_round / warmup
    return config.train.lr


def local_sgd_settings(train: TrainConfig, lr: float) -> SGDSettings:
    """Return the local SGD settings of a client round from ``train`` and the round's ``lr``."""
    return SGDSettings(
        epochs=train.local_epochs,
        steps=train.local_steps,
        batch_size=train.batch_size,
        lr=lr,
        momentum=train.momentum,
        weight_decay=train.weight_decay,
        clip_norm=train.clip_norm,
    )
