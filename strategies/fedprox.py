"""FedProx: FedAvg whose clients add a proximal term towards the global model."""

from __future__ import annotations

import logging

from strategies.fedavg import FedAvg

logger = logging.getLogger(__name__)


class FedProx(FedAvg):
    """FedProx (Li, Sahu, Zaheer, Sanjabi, Talwalkar and Smith, 2020, "Federated
    Optimization in Heterogeneous Networks", MLSys).

    Each client minimises CE(θ) + (μ/2)·‖θ − θ_g‖² over its trainable parameters, with
    θ_g the global model received this round; the server averages like FedAvg. μ is
    ``prox.mu``. With μ = 0 the clients add no term and the run is FedAvg.

    Client obligations: read ``prox-mu`` from the round config and add the term of
    :func:`clients.objectives.proximal_term` to every batch's loss.
    """

    objectives = ("prox",)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        if self.config.prox.mu == 0:
            logger.warning("prox.mu is 0: FedProx adds no proximal term and runs as FedAvg")
