"""FedAvg with fedsign's reproducible sampling, ordered aggregation and sign diagnostics.

Every fedsign strategy subclasses :class:`FedAvg` here and overrides hooks: the client
objectives it requests (``objectives`` and :meth:`FedAvg.objective_config`), extra records
sent with the global model (:meth:`FedAvg.extra_train_records`), what it reads from the
replies besides the models (:meth:`FedAvg.process_replies`) and how client states are
merged (:meth:`FedAvg.aggregate_states`). Flower's ``Strategy.start`` owns the round loop.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg as FlowerFedAvg

from fedsign.aggregation import average_states
from fedsign.config import Config
from fedsign.federation import round_lr
from fedsign.protocol import (
    CONFIG_KEY,
    LR_KEY,
    NUM_EXAMPLES_KEY,
    OBJECTIVES_KEY,
    PARTITION_ID_KEY,
    ROUND_KEY,
    objective_settings,
)
from fedsign.seeding import derive_seed
from fedsign.signs import flatten, round_sign_diagnostics, ssr

logger = logging.getLogger(__name__)


class RoundFailedError(RuntimeError):
    """Every client of a round failed, so the run cannot continue."""


class RunTimeoutError(RuntimeError):
    """The run passed its wall-clock limit (``engine.timeout_s``)."""


def client_error(reason: str) -> str:
    """Return the client's own error message from the Ray traceback Flower puts in a reply."""
    messages = re.findall(r"Message: (.*?)'>", reason, flags=re.DOTALL)
    if messages:
        return messages[-1].strip()
    lines = [line.strip() for line in reason.splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"


class FedAvg(FlowerFedAvg):
    """Federated averaging (McMahan et al., 2017, "Communication-Efficient Learning of Deep
    Networks from Decentralized Data").

    θ_g ← Σ_k w_k θ_k with w_k ∝ n_k (examples of client k) or w_k = 1/K when
    ``strategy.weighted`` is false. Parameters and BatchNorm buffers are both averaged.

    It differs from Flower's FedAvg in three ways, all for reproducibility and analysis.
    Clients are sampled per round by a generator seeded from the run seed over sorted
    partition ids, whereas Flower's sampler uses the global ``random`` module over random
    node ids. Replies are aggregated in partition order, so float sums do not depend on
    reply arrival. Each round records sign diagnostics (see :mod:`fedsign.signs`).

    Parameters
    ----------
    config : Config
        The run's resolved config; sent to clients as YAML with every message.
    partition_nodes : dict[int, int]
        Node id of each partition id, as reported by the clients.
    parameter_names : list[str]
        Names of the trainable parameters; sign diagnostics use these only.
    deadline : float, optional
        ``time.monotonic()`` value after which no new round starts.
    """

    # Client objectives that every client adds to its cross-entropy under this strategy.
    objectives: tuple[str, ...] = ()

    def __init__(
        self,
        *,
        config: Config,
        partition_nodes: dict[int, int],
        parameter_names: list[str],
        deadline: float | None = None,
    ) -> None:
        super().__init__(
            fraction_train=config.strategy.fraction_train,
            min_train_nodes=1,
            min_evaluate_nodes=1,
            min_available_nodes=1,
            weighted_by_key=NUM_EXAMPLES_KEY,
        )
        self.config = config
        self.partition_nodes = dict(sorted(partition_nodes.items()))
        self.parameter_names = list(parameter_names)
        self.deadline = deadline
        self.round_metrics: dict[int, dict[str, float]] = {}
        # Client states of the rounds in federation.keep_client_models, by partition id,
        # until the ServerApp saves them.
        self.kept_client_states: dict[int, dict[int, dict[str, np.ndarray]]] = {}
        self._global_state: dict[str, np.ndarray] | None = None
        # Node ids of the clients sampled in the latest configure_train.
        self.round_nodes: list[int] = []

    # -- hooks for subclasses ---------------------------------------------------------

    def objective_config(self) -> dict[str, bool | int | float | str]:
        """Return the ConfigRecord entries the client objectives of this strategy read."""
        return {}

    def extra_train_records(self, server_round: int) -> dict[str, ArrayRecord]:
        """Return records sent to every sampled client beside the global model (none here)."""
        return {}

    def process_replies(self, server_round: int, replies: list[Message]) -> None:
        """Read what a strategy needs from the valid replies, in partition order, before aggregation."""

    def aggregate_states(
        self,
        server_round: int,
        global_state: dict[str, np.ndarray],
        client_states: list[dict[str, np.ndarray]],
        num_examples: list[int],
    ) -> dict[str, np.ndarray]:
        """Merge the client states of a round into the next global state."""
        return average_states(client_states, self.aggregation_weights(num_examples))

    # -- helpers for subclasses ------------------------------------------------------

    def aggregation_weights(self, num_examples: list[int]) -> list[float] | None:
        """Return the client weights of the configured averaging (None = equal weights)."""
        return [float(n) for n in num_examples] if self.config.strategy.weighted else None

    def active_objectives(self) -> tuple[str, ...]:
        """Return this strategy's client objectives followed by ``strategy.objectives``, without repeats."""
        return tuple(dict.fromkeys([*self.objectives, *self.config.strategy.objectives]))

    # -- sampling and configuration ---------------------------------------------------

    def sample_partitions(self, server_round: int) -> list[int]:
        """Return the sorted partition ids that train in ``server_round``."""
        partitions = sorted(self.partition_nodes)
        if self.config.strategy.clients_per_round > 0:
            count = self.config.strategy.clients_per_round
        else:
            count = int(round(self.config.strategy.fraction_train * len(partitions)))
        count = min(max(count, 1), len(partitions))
        rng = np.random.default_rng(derive_seed(self.config.seed, "sampling", server_round))
        return sorted(int(p) for p in rng.choice(partitions, size=count, replace=False))

    def round_config(self, server_round: int, config: ConfigRecord) -> ConfigRecord:
        """Return the ConfigRecord of a round: the run config, round, lr and objectives."""
        record = ConfigRecord(dict(config))
        record[CONFIG_KEY] = self.config.to_yaml()
        record[ROUND_KEY] = server_round
        record[LR_KEY] = round_lr(self.config, server_round)
        record[OBJECTIVES_KEY] = ",".join(self.active_objectives())
        for name in self.active_objectives():
            for key, value in objective_settings(self.config, name).items():
                record[key] = value
        for key, value in self.objective_config().items():
            record[key] = value
        return record

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample this round's clients and send each the global model and round config."""
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise RunTimeoutError(
                f"the run passed engine.timeout_s={self.config.engine.timeout_s:g} s before round "
                f"{server_round}; raise engine.timeout_s or lower federation.rounds"
            )
        self._global_state = {name: array.numpy() for name, array in arrays.items()}
        partitions = self.sample_partitions(server_round)
        logger.info("round %d: training %d of %d clients", server_round, len(partitions), len(self.partition_nodes))
        record = RecordDict({
            "arrays": arrays,
            "config": self.round_config(server_round, config),
            **self.extra_train_records(server_round),
        })
        node_ids = [self.partition_nodes[p] for p in partitions]
        self.round_nodes = node_ids
        return self._construct_messages(record, node_ids, MessageType.TRAIN)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Send the global model to every client for local evaluation, if enabled."""
        if not self.config.federation.client_eval or server_round % self.config.federation.eval_every:
            return []
        record = RecordDict({"arrays": arrays, "config": self.round_config(server_round, config)})
        return self._construct_messages(record, list(self.partition_nodes.values()), MessageType.EVALUATE)

    # -- aggregation -------------------------------------------------------------------

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Average the client states in partition order and record round metrics."""
        replies = list(replies)
        valid, failed = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            if not failed:
                raise RoundFailedError(f"round {server_round}: no client replied within "
                                       f"engine.round_timeout_s={self.config.engine.round_timeout_s:g} s")
            reasons = sorted({client_error(message.error.reason) for message in failed})
            raise RoundFailedError(f"round {server_round}: all {len(failed)} clients failed; "
                                   f"first client error: {reasons[0]} ({len(reasons)} distinct errors)")
        if failed:
            logger.warning("round %d: %d of %d clients failed (%s); aggregating the rest", server_round,
                           len(failed), len(replies), client_error(failed[0].error.reason))

        valid.sort(key=lambda message: int(message.content["metrics"][PARTITION_ID_KEY]))
        client_states = [
            {name: array.numpy() for name, array in message.content["arrays"].items()} for message in valid
        ]
        num_examples = [int(message.content["metrics"][NUM_EXAMPLES_KEY]) for message in valid]
        if server_round in self.config.federation.keep_client_models:
            partition_ids = [int(message.content["metrics"][PARTITION_ID_KEY]) for message in valid]
            self.kept_client_states[server_round] = dict(zip(partition_ids, client_states, strict=True))
        assert self._global_state is not None  # configure_train always runs first
        self.process_replies(server_round, valid)
        new_state = self.aggregate_states(server_round, self._global_state, client_states, num_examples)

        metrics = self._train_metrics(valid, num_examples)
        metrics["failed_clients"] = float(len(failed))
        metrics.update(self._sign_metrics(self._global_state, client_states, new_state))
        self.round_metrics[server_round] = metrics
        # ascontiguousarray turns 0-d arrays (BatchNorm's counter) into shape (1,); reshape back.
        arrays = ArrayRecord({name: torch.from_numpy(np.ascontiguousarray(value).reshape(np.shape(value)))
                              for name, value in new_state.items()})
        return arrays, MetricRecord(metrics)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Return the mean and spread of the clients' local test accuracy."""
        valid, failed = self._check_and_log_replies(list(replies), is_train=False)
        if not valid:
            return None
        accuracies = np.array([float(message.content["metrics"]["local-accuracy"]) for message in valid])
        losses = np.array([float(message.content["metrics"]["local-loss"]) for message in valid])
        metrics = {
            "local_accuracy_mean": float(accuracies.mean()),
            "local_accuracy_std": float(accuracies.std()),
            "local_accuracy_min": float(accuracies.min()),
            "local_loss_mean": float(losses.mean()),
        }
        self.round_metrics.setdefault(server_round, {}).update(metrics)
        return MetricRecord(metrics)

    def _train_metrics(self, valid: list[Message], num_examples: list[int]) -> dict[str, float]:
        total = sum(num_examples)
        metrics: dict[str, float] = {"clients": float(len(valid))}
        for key in ("train-loss", "train-accuracy", "regularizer"):
            values = [float(message.content["metrics"][key]) for message in valid]
            metrics[key.replace("-", "_")] = sum(v * n for v, n in zip(values, num_examples, strict=True)) / total
        return metrics

    def _sign_metrics(
        self,
        global_state: dict[str, np.ndarray],
        client_states: list[dict[str, np.ndarray]],
        new_state: dict[str, np.ndarray],
    ) -> dict[str, float]:
        names = self.parameter_names
        previous = _as_tensors(global_state, names)
        metrics = round_sign_diagnostics(previous, [_as_tensors(state, names) for state in client_states], names)
        metrics["ssr_global_consecutive"] = ssr(flatten(previous, names), flatten(_as_tensors(new_state, names), names))
        return metrics


def _as_tensors(state: dict[str, np.ndarray], names: list[str]) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(np.asarray(state[name])) for name in names}
