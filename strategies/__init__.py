"""Flower server strategies of fedsign, one module per algorithm, and the ServerApp."""

from __future__ import annotations

from strategies.fedavg import FedAvg
from strategies.fedsign import FedSign

# Strategy classes by the name used in the config key ``strategy.name``.
STRATEGIES: dict[str, type[FedAvg]] = {
    "fedavg": FedAvg,
    "fedsign": FedSign,
}


def list_strategies() -> list[str]:
    """Return the strategy names accepted by ``strategy.name``."""
    return sorted(STRATEGIES)
