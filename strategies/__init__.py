"""Flower server strategies of fedsign, one module per algorithm, and the ServerApp.

``strategy.name`` selects a strategy in one of three ways:

- a fedsign strategy by name (:data:`STRATEGIES`: ``fedavg``, ``fedsign``, ``fedprox``, ...);
- a Flower 1.42 built-in by its lower-case name (``fedadam``, ``krum``, ... see
  :data:`strategies.builtin.BUILTIN_STRATEGIES`), built with ``strategy.kwargs``;
- a user class by import path ``package.module:ClassName`` with ``strategy.kwargs``. A
  subclass of :class:`strategies.fedavg.FedAvg` gets the run's config and fedsign's
  arguments plus the kwargs; any other ``flwr.serverapp.strategy.Strategy`` subclass is
  built from the kwargs alone and aggregates inside
  :class:`strategies.builtin.FlowerStrategyAdapter`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from flwr.serverapp.strategy import Strategy

from fedsign.config import Config
from fedsign.errors import ConfigError
from strategies.builtin import BUILTIN_STRATEGIES, builtin_defaults, flower_strategy_factory
from strategies.fedavg import FedAvg
from strategies.feddyn import FedDyn
from strategies.fedpan import FedPan
from strategies.fedprox import FedProx
from strategies.fedsign import FedSign
from strategies.moon import Moon
from strategies.scaffold import Scaffold
from strategies.sign_election import SignElection

# fedsign strategy classes by the name used in the config key ``strategy.name``.
STRATEGIES: dict[str, type[FedAvg]] = {
    "fedavg": FedAvg,
    "feddyn": FedDyn,
    "fedpan": FedPan,
    "fedprox": FedProx,
    "fedsign": FedSign,
    "moon": Moon,
    "scaffold": Scaffold,
    "sign_election": SignElection,
}

StrategyFactory = Callable[..., FedAvg]


def list_strategies() -> list[str]:
    """Return the strategy names accepted by ``strategy.name`` (import paths are accepted too)."""
    return [*sorted(STRATEGIES), *sorted(BUILTIN_STRATEGIES)]


def strategy_factory(config: Config) -> StrategyFactory:
    """Return a callable that builds the strategy of ``config`` from FedAvg's keyword arguments.

    Raises
    ------
    ConfigError
        If ``strategy.name`` is unknown, the import path cannot be loaded or does not name
        a strategy class, or ``strategy.kwargs`` is set for a fedsign strategy.
    """
    name, kwargs = config.strategy.name, dict(config.strategy.kwargs)
    if name in STRATEGIES:
        if kwargs:
            raise ConfigError(f"invalid strategy.kwargs={kwargs!r}: fedsign strategy {name!r} takes its settings from "
                              "its config section (e.g. prox.mu); kwargs are for Flower built-ins and user strategies")
        return STRATEGIES[name]
    if name in BUILTIN_STRATEGIES:
        return flower_strategy_factory(BUILTIN_STRATEGIES[name], {**builtin_defaults(name, config), **kwargs})
    if ":" not in name:
        raise ConfigError(f"unknown strategy.name={name!r}; available: {', '.join(list_strategies())}, "
                          "or an import path package.module:ClassName")

    strategy_class = _import_class(name)
    if issubclass(strategy_class, FedAvg):
        return lambda **fedavg_kwargs: strategy_class(**fedavg_kwargs, **kwargs)
    if issubclass(strategy_class, Strategy):
        return flower_strategy_factory(strategy_class, kwargs)
    raise ConfigError(f"invalid strategy.name={name!r}: {strategy_class.__name__} is not a subclass of "
                      "strategies.fedavg.FedAvg or flwr.serverapp.strategy.Strategy")


def create_strategy(
    config: Config, *, partition_nodes: dict[int, int], parameter_names: list[str], deadline: float | None = None
) -> FedAvg:
    """Build the strategy of ``config`` for a run (see :func:`strategy_factory`)."""
    factory = strategy_factory(config)
    return factory(config=config, partition_nodes=partition_nodes, parameter_names=parameter_names, deadline=deadline)


def check_strategy(config: Config) -> None:
    """Raise ConfigError unless the strategy of ``config`` can be built, kwargs included.

    fedsign strategies without kwargs are only looked up; built-ins and user classes are
    built once with placeholder clients, so kwargs they reject fail here, before a run.
    """
    factory = strategy_factory(config)
    if config.strategy.name in STRATEGIES:
        return
    nodes = {partition_id: partition_id for partition_id in range(config.data.num_partitions)}
    try:
        factory(config=config, partition_nodes=nodes, parameter_names=[])
    except ConfigError:
        raise
    except (TypeError, ValueError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"strategy {config.strategy.name!r} rejected strategy.kwargs="
                          f"{dict(config.strategy.kwargs)!r}: {message}") from None


def _import_class(reference: str) -> type:
    module_name, _, class_name = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"invalid strategy.name={reference!r}: cannot import module {module_name!r} ({error}); "
                          "check the spelling and that its folder is on PYTHONPATH") from None
    strategy_class = getattr(module, class_name, None)
    if not isinstance(strategy_class, type):
        raise ConfigError(f"invalid strategy.name={reference!r}: module {module_name!r} has no class "
                          f"{class_name!r}")
    return strategy_class
