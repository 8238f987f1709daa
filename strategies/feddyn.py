"""FedDyn: dynamic regularisation with client gradient state and a server correction state."""

from __future__ import annotations

import logging

import numpy as np

from fedsign.aggregation import average_states
from strategies.fedavg import FedAvg

logger = logging.getLogger(__name__)


def feddyn_server_step(
    global_state: dict[str, np.ndarray],
    client_states: list[dict[str, np.ndarray]],
    correction: dict[str, np.ndarray],
    *,
    alpha: float,
    num_clients: int,
    parameter_names: list[str],
    weights: list[float] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Return FedDyn's next global state and server correction state h.

    h ← h − α·(1/m)·Σ_{k∈P} (θ_k − θ_g) and θ ← mean_{k∈P}(θ_k) − h/α over the trainable
    parameters, with m = ``num_clients`` (all clients, sampled or not) and P the clients
    that replied. Every other entry of the state (BatchNorm buffers) is the plain mean.
    ``weights`` weight the mean as in FedAvg. None gives equal weights, as in the FedDyn paper.
    """
    averaged = average_states(client_states, weights)
    new_correction: dict[str, np.ndarray] = {}
    for name in parameter_names:
        drift = sum(np.asarray(state[name], dtype=np.float64) - global_state[name] for state in client_states)
        new_correction[name] = correction[name] - alpha * drift / num_clients
        dtype = np.asarray(averaged[name]).dtype
        averaged[name] = (averaged[name].astype(np.float64) - new_correction[name] / alpha).astype(dtype)
    return averaged, new_correction


class FedDyn(FedAvg):
    """FedDyn (Acar, Zhao, Navarro, Mattina, Whatmough and Saligrama, 2021, "Federated
    Learning Based on Dynamic Regularization", ICLR).

    Client k keeps a gradient state g_k (zero at first) and in round t minimises

        CE(θ) − ⟨g_k, θ⟩ + (α/2)·‖θ − θ_g‖²,

    then sets g_k ← g_k − α·(θ_k − θ_g). The server keeps a correction state h (zero at
    first) over the trainable parameters and, with m clients in all and P those that
    replied, sets h ← h − α·(1/m)·Σ_{k∈P}(θ_k − θ_g) and θ_g ← mean_{k∈P} θ_k − h/α.
    α is ``feddyn.alpha``. The paper's mean has equal weights; fedsign weights it like
    FedAvg (by example count unless ``strategy.weighted`` is false) [choice], so
    ``strategy.weighted=false`` runs the paper's algorithm exactly.

    Client obligations: read ``feddyn-alpha``, keep g_k in the client's persistent state
    (``Context.state``) across rounds, add the term to every batch's loss and update g_k
    after training.
    """

    objectives = ("feddyn",)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.correction: dict[str, np.ndarray] | None = None

    def aggregate_states(
        self,
        server_round: int,
        global_state: dict[str, np.ndarray],
        client_states: list[dict[str, np.ndarray]],
        num_examples: list[int],
    ) -> dict[str, np.ndarray]:
        """Average the client states and subtract h/α from the parameters."""
        if self.correction is None:
            self.correction = {name: np.zeros(np.shape(global_state[name])) for name in self.parameter_names}
        new_state, self.correction = feddyn_server_step(
            global_state, client_states, self.correction,
            alpha=self.config.feddyn.alpha,
            num_clients=len(self.partition_nodes),
            parameter_names=self.parameter_names,
            weights=self.aggregation_weights(num_examples),
        )
        return new_state
