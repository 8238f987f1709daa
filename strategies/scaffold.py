"""SCAFFOLD: stochastic controlled averaging with client and server control variates."""

from __future__ import annotations

import logging

import numpy as np
import torch
from collections.abc import Iterable

from flwr.app import ArrayRecord, Message, MetricRecord

from fedsign.aggregation import average_states
from fedsign.protocol import PARTITION_ID_KEY, SCAFFOLD_CONTROL_DELTA_KEY, SCAFFOLD_SERVER_CONTROL_KEY
from strategies.fedavg import FedAvg, RoundFailedError

logger = logging.getLogger(__name__)


def scaffold_server_step(
    global_state: dict[str, np.ndarray],
    client_states: list[dict[str, np.ndarray]],
    control: dict[str, np.ndarray],
    control_deltas: list[dict[str, np.ndarray]],
    *,
    server_lr: float,
    num_clients: int,
    parameter_names: list[str],
    weights: list[float] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Return SCAFFOLD's next global state and server control variate c.

    θ_g ← θ_g + η_g·mean_{i∈S}(θ_i − θ_g) over the trainable parameters and
    c ← c + (1/N)·Σ_{i∈S} Δc_i, with N = ``num_clients`` (all clients) and S those that
    replied. BatchNorm buffers and other non-parameter entries are the plain mean.
    """
    averaged = average_states(client_states, weights)
    for name in parameter_names:
        dtype = np.asarray(averaged[name]).dtype
        start = np.asarray(global_state[name], dtype=np.float64)
        step = averaged[name].astype(np.float64) - start
        averaged[name] = (start + server_lr * step).astype(dtype)
    new_control = {
        name: control[name] + sum(np.asarray(delta[name], dtype=np.float64) for delta in control_deltas) / num_clients
        for name in parameter_names
    }
    return averaged, new_control


class Scaffold(FedAvg):
    """SCAFFOLD (Karimireddy, Kale, Mohri, Reddi, Stich and Suresh, 2020, "SCAFFOLD:
    Stochastic Controlled Averaging for Federated Learning", ICML).

    The server keeps a control variate c and each client i its own c_i (both zero at
    first, over the trainable parameters). Every local SGD step of client i uses the
    corrected gradient g_i(θ) − c_i + c. After training the client sets c_i+ to the mean
    gradient of its loss at θ_g (``scaffold.variate=gradient``, option I of the paper) or
    to c_i − c + (θ_g − θ_i)/(K·η_l) (``difference``, option II, K local steps of learning
    rate η_l) and returns Δc_i = c_i+ − c_i. The server then sets
    θ_g ← θ_g + η_g·mean_{i∈S}(θ_i − θ_g) and c ← c + (1/N)·Σ_{i∈S} Δc_i, with η_g =
    ``scaffold.server_lr`` and N all clients. The mean is weighted like FedAvg's (by
    example count unless ``strategy.weighted`` is false) [choice]; the paper's is
    unweighted. Option II assumes plain SGD: with momentum the local steps are longer than
    K·η_l·g, so option I is the default [choice].

    NOTE: with 2 local epochs of momentum-0.9 SGD (up to about 80 local steps) SCAFFOLD
    diverged in fedsign's MNIST-1D comparison (docs/results.md), while 10 local steps
    trained; the correction is fixed for the round, so long local runs let it drift.

    Client obligations: read ``scaffold-variate`` and the record
    ``scaffold-server-control`` (c), keep c_i in the client's persistent state
    (``Context.state``), correct every gradient, and reply with the record
    ``scaffold-control-delta`` (Δc_i).
    """

    objectives = ("scaffold",)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.control: dict[str, np.ndarray] | None = None
        self._control_deltas: list[dict[str, np.ndarray]] = []
        self._deltas_by_partition: dict[int, dict[str, np.ndarray]] = {}

    def extra_train_records(self, server_round: int) -> dict[str, ArrayRecord]:
        """Send the server control variate c with the global model."""
        if self.control is None:
            assert self._global_state is not None  # set by configure_train before this call
            self.control = {name: np.zeros(np.shape(self._global_state[name])) for name in self.parameter_names}
        dtypes = {name: np.asarray(self._global_state[name]).dtype for name in self.parameter_names}
        record = {name: torch.from_numpy(value.astype(dtypes[name])) for name, value in self.control.items()}
        return {SCAFFOLD_SERVER_CONTROL_KEY: ArrayRecord(record)}

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Take the Δc_i records out of the replies, then aggregate like FedAvg.

        Flower's reply check accepts exactly one ArrayRecord per reply (the model), so the
        control-variate record is removed before it runs.
        """
        replies = list(replies)
        self._deltas_by_partition = {}
        for message in replies:
            if message.has_content() and SCAFFOLD_CONTROL_DELTA_KEY in message.content:
                record = message.content.pop(SCAFFOLD_CONTROL_DELTA_KEY)
                partition_id = int(message.content["metrics"][PARTITION_ID_KEY])
                self._deltas_by_partition[partition_id] = {name: array.numpy() for name, array in record.items()}
        return super().aggregate_train(server_round, replies)

    def process_replies(self, server_round: int, replies: list[Message]) -> None:
        """Order the clients' control-variate changes Δc_i like the replies."""
        partition_ids = [int(message.content["metrics"][PARTITION_ID_KEY]) for message in replies]
        missing = [p for p in partition_ids if p not in self._deltas_by_partition]
        if missing:
            raise RoundFailedError(f"round {server_round}: the SCAFFOLD replies of clients {missing} lack the record "
                                   f"{SCAFFOLD_CONTROL_DELTA_KEY!r}; the clients must run the scaffold objective")
        self._control_deltas = [self._deltas_by_partition[p] for p in partition_ids]

    def aggregate_states(
        self,
        server_round: int,
        global_state: dict[str, np.ndarray],
        client_states: list[dict[str, np.ndarray]],
        num_examples: list[int],
    ) -> dict[str, np.ndarray]:
        """Step the global model by η_g times the mean update and update c."""
        assert self.control is not None  # extra_train_records runs in configure_train
        new_state, self.control = scaffold_server_step(
            global_state, client_states, self.control, self._control_deltas,
            server_lr=self.config.scaffold.server_lr,
            num_clients=len(self.partition_nodes),
            parameter_names=self.parameter_names,
            weights=self.aggregation_weights(num_examples),
        )
        return new_state
