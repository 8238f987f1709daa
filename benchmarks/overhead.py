"""Overhead of Flower's simulation runtime over plain local SGD in one process.

Runs one federated simulation of a config through ``fedsign.engine.run_simulation`` (Ray,
2 client actors on CPU), then replays the same rounds in this process: for every round and
client the same local SGD steps (same data, order, learning rate) followed by the same
averaging. Prints both times and their ratios, and how far the two final models differ.

Usage::

    .venv/bin/python benchmarks/overhead.py [CONFIG] [key=value ...]

Default workload: configs/default.yaml (digits, 10 clients, CNN, 2 local epochs of batch
32, all clients every round) with ``federation.rounds=10``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fedsign.aggregation import average_states
from fedsign.config import Config, load_config
from fedsign.engine import prepare_environment, run_simulation
from fedsign.federation import (
    build_global_model,
    load_federated_data,
    local_sgd_settings,
    model_from_config,
    round_lr,
)
from fedsign.results import MODEL_FILE
from fedsign.seeding import derive_seed, torch_generator
from fedsign.training import train_local


def sampled_partitions(config: Config, server_round: int) -> list[int]:
    """Return the partitions the FedAvg strategy samples in ``server_round`` (same rule)."""
    partitions = list(range(config.data.num_partitions))
    count = config.strategy.clients_per_round or int(round(config.strategy.fraction_train * len(partitions)))
    count = min(max(count, 1), len(partitions))
    rng = np.random.default_rng(derive_seed(config.seed, "sampling", server_round))
    return sorted(int(p) for p in rng.choice(partitions, size=count, replace=False))


def plain_federated_averaging(config: Config) -> tuple[dict[str, torch.Tensor], float]:
    """Replay the run's local SGD and averaging in this process; return the model and seconds spent."""
    torch.set_num_threads(config.engine.torch_threads)
    federated = load_federated_data(config.data, config.seed)
    global_state = build_global_model(config.model, federated.splits, config.seed).state_dict()
    model = model_from_config(config.model, federated.splits)
    started = time.perf_counter()
    for server_round in range(1, config.federation.rounds + 1):
        states, sizes = [], []
        for partition_id in sampled_partitions(config, server_round):
            data = federated.client(partition_id, config.data.local_test_fraction, config.seed)
            model.load_state_dict(global_state)
            settings = local_sgd_settings(config.train, round_lr(config, server_round))
            stats = train_local(model, data.train_x, data.train_y, settings=settings,
                                generator=torch_generator(config.seed, "data-order", server_round, partition_id))
            states.append({k: v.detach().numpy().copy() for k, v in model.state_dict().items()})
            sizes.append(stats.num_examples)
        weights = sizes if config.strategy.weighted else None
        global_state = {k: torch.from_numpy(v) for k, v in average_states(states, weights).items()}
    return global_state, time.perf_counter() - started


def main(argv: list[str]) -> None:
    config_path = argv[0] if argv and not argv[0].count("=") else "configs/default.yaml"
    overrides = ["federation.rounds=10", "strategy.name=fedavg", *[a for a in argv if "=" in a]]
    config = load_config(config_path, overrides)
    prepare_environment()

    with tempfile.TemporaryDirectory(prefix="fsbench-") as output:
        started = time.perf_counter()
        outcome = run_simulation(config, Path(output))
        simulation_s = time.perf_counter() - started
        rounds_s = outcome.summary["wall_time_s"]
        simulated = torch.load(outcome.run_dir / MODEL_FILE, weights_only=True)

    plain_state, plain_s = plain_federated_averaging(config)
    difference = max((simulated[k].double() - plain_state[k].double()).abs().max().item() for k in simulated)

    print(f"workload: {config_path} {' '.join(overrides)}")
    print(f"  {config.data.num_partitions} clients, {config.federation.rounds} rounds, model {config.model.name}, "
          f"{config.train.local_epochs} local epochs of batch {config.train.batch_size}")
    print(f"simulation, whole call (Ray start included): {simulation_s:8.2f} s")
    print(f"simulation, ServerApp rounds only:          {rounds_s:8.2f} s")
    print(f"plain process, same SGD steps + averaging:  {plain_s:8.2f} s")
    print(f"ratio whole call / plain:  {simulation_s / plain_s:6.2f}")
    print(f"ratio rounds only / plain: {rounds_s / plain_s:6.2f}")
    print(f"max |difference| between the two final models: {difference:.3g}")


if __name__ == "__main__":
    main(sys.argv[1:])
