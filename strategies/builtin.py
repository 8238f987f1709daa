"""Flower's built-in strategies (FedAdam, Krum, ...) and user strategies inside fedsign's loop.

A Flower strategy runs as the aggregation step of :class:`FlowerStrategyAdapter`, a
fedsign :class:`~strategies.fedavg.FedAvg`: fedsign samples the clients, sends the round
config, orders the replies and records the sign diagnostics, and the Flower strategy
turns the replies into the next values of the trainable parameters with its own
``aggregate_train``. BatchNorm buffers are averaged as in FedAvg: server optimisers such as
FedAdam would otherwise take steps on running variances and counters.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    Bulyan,
    FedAdagrad,
    FedAdam,
    FedAvgM,
    FedMedian,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    MultiKrum,
    QFedAvg,
    Strategy,
)

from fedsign.aggregation import average_states
from fedsign.config import Config
from fedsign.protocol import NUM_EXAMPLES_KEY
from strategies.fedavg import FedAvg, RoundFailedError

logger = logging.getLogger(__name__)

# Flower 1.42 strategy classes by the lower-case name accepted in ``strategy.name``.
BUILTIN_STRATEGIES: dict[str, type[Strategy]] = {
    "bulyan": Bulyan,
    "fedadagrad": FedAdagrad,
    "fedadam": FedAdam,
    "fedavgm": FedAvgM,
    "fedmedian": FedMedian,
    "fedtrimmedavg": FedTrimmedAvg,
    "fedyogi": FedYogi,
    "krum": Krum,
    "multikrum": MultiKrum,
    "qfedavg": QFedAvg,
}


def builtin_defaults(name: str, config: Config) -> dict[str, object]:
    """Return keyword arguments fedsign gives a built-in unless ``strategy.kwargs`` sets them.

    QFedAvg needs the clients' learning rate and reads the training loss under the key
    fedsign's clients use (``train-loss``).
    """
    if name == "qfedavg":
        return {"client_learning_rate": config.train.lr, "train_loss_key": "train-loss"}
    return {}


class _SampledGrid:
    """The part of Flower's Grid that a strategy's ``configure_train`` reads: the node ids.

    It lists the run's node ids, padded with unused ids up to the strategy's minimum
    node counts, so Flower's sampler never waits for nodes that will not come. The
    messages built with it are discarded: fedsign sends its own.
    """

    def __init__(self, node_ids: list[int], minimum: int) -> None:
        padding = [-(i + 1) for i in range(max(0, minimum - len(node_ids)))]
        self._node_ids = [*node_ids, *padding]

    def get_node_ids(self) -> list[int]:
        return list(self._node_ids)


class FlowerStrategyAdapter(FedAvg):
    """A Flower strategy's aggregation inside fedsign's round loop.

    Parameters
    ----------
    flower_strategy : flwr.serverapp.strategy.Strategy
        The strategy whose ``aggregate_train`` makes the next global model. Its
        ``configure_train`` also runs each round (so strategies that remember the global
        model, such as FedAdam and FedAvgM, see it), but the messages it builds are
        discarded. It must weight clients by the ``num-examples`` metric, as Flower's do.
    **kwargs
        Passed to :class:`~strategies.fedavg.FedAvg`.
    """

    def __init__(self, *, flower_strategy: Strategy, **kwargs) -> None:
        super().__init__(**kwargs)
        self.flower_strategy = flower_strategy
        self._replies: list[Message] = []

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample and configure like FedAvg, then let the Flower strategy see the round."""
        messages = list(super().configure_train(server_round, arrays, config, grid))
        minimum = max(int(getattr(self.flower_strategy, name, 0) or 0)
                      for name in ("min_available_nodes", "min_train_nodes"))
        sampled = _SampledGrid(list(self.partition_nodes.values()), minimum)
        parameters = ArrayRecord({name: arrays[name] for name in self.parameter_names})
        list(self.flower_strategy.configure_train(server_round, parameters, ConfigRecord(dict(config)), sampled))
        return messages

    def process_replies(self, server_round: int, replies: list[Message]) -> None:
        """Keep the replies for the Flower strategy, their models cut to the trainable parameters."""
        for message in replies:
            model = message.content["arrays"]
            message.content["arrays"] = ArrayRecord({name: model[name] for name in self.parameter_names})
        self._replies = replies

    def aggregate_states(
        self,
        server_round: int,
        global_state: dict[str, np.ndarray],
        client_states: list[dict[str, np.ndarray]],
        num_examples: list[int],
    ) -> dict[str, np.ndarray]:
        """Return the averaged buffers and the Flower strategy's parameters for the round's replies."""
        new_state = average_states(client_states, self.aggregation_weights(num_examples))
        arrays, _ = self.flower_strategy.aggregate_train(server_round, self._replies)
        if arrays is None:
            raise RoundFailedError(f"round {server_round}: {type(self.flower_strategy).__name__} "
                                   "returned no model; check strategy.kwargs against the number of clients")
        for name in self.parameter_names:
            new_state[name] = arrays[name].numpy().astype(np.asarray(global_state[name]).dtype)
        return new_state


def flower_strategy_factory(strategy_class: type[Strategy], kwargs: dict[str, object]) -> Callable[..., FedAvg]:
    """Return a factory of adapters around ``strategy_class(**kwargs)``, built with FedAvg's arguments."""

    def build(**fedavg_kwargs) -> FedAvg:
        flower_strategy = strategy_class(**kwargs)
        weighted_by = getattr(flower_strategy, "weighted_by_key", NUM_EXAMPLES_KEY)
        if weighted_by != NUM_EXAMPLES_KEY:
            logger.warning("%s weights clients by %r, which fedsign's clients do not send; use %r",
                           strategy_class.__name__, weighted_by, NUM_EXAMPLES_KEY)
        return FlowerStrategyAdapter(flower_strategy=flower_strategy, **fedavg_kwargs)

    return build
