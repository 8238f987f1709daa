"""Client state across rounds through Flower's Context.state, without Ray.

The ClientApp's train function is called directly with hand-built Contexts and the
messages a real strategy builds, the way Flower's simulation runtime calls it: one
Context per client, kept between rounds.
"""

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from clients.client_app import CLIENT_RECORD_KEY, train
from clients.objectives import (
    FEDDYN_GRADIENT_KEY,
    MOON_PREVIOUS_MODEL_KEY,
    SCAFFOLD_CONTROL_DELTA_KEY,
    SCAFFOLD_CONTROL_KEY,
)
from fedsign.config import load_config
from fedsign.federation import build_global_model, load_federated_data
from strategies import create_strategy

SMALL = ["data.num_partitions=4", "train.local_epochs=1", "model.name=cnn_bn"]


@pytest.fixture(autouse=True)
def task_identity():
    """Give Flower the run identity it needs to build messages outside a running simulation."""
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


class Federation:
    """A strategy, its global model and one persistent Context per client."""

    def __init__(self, name: str, *overrides: str) -> None:
        self.config = load_config(None, [f"strategy.name={name}", *SMALL, *overrides])
        splits = load_federated_data(self.config.data, self.config.seed).splits
        model = build_global_model(self.config.model, splits, self.config.seed)
        self.arrays = ArrayRecord(model.state_dict())
        nodes = {p: 1000 + p for p in range(self.config.data.num_partitions)}
        self.strategy = create_strategy(self.config, partition_nodes=nodes,
                                        parameter_names=[name for name, _ in model.named_parameters()])
        self.contexts = {p: Context(run_id=1, node_id=1000 + p, node_config={"partition-id": p},
                                    state=RecordDict(), run_config={}) for p in nodes}

    def train_round(self, server_round: int, partitions: list[int]):
        """Send the round's message to ``partitions`` and return their replies by partition id."""
        messages = list(self.strategy.configure_train(server_round, self.arrays, ConfigRecord(), grid=None))
        by_node = {message.metadata.dst_node_id: message for message in messages}
        return {p: train(by_node[1000 + p], self.contexts[p]) for p in partitions}


def parameters_of(reply) -> dict[str, np.ndarray]:
    return {name: array.numpy() for name, array in reply.content["arrays"].items()}


def test_state_persists_between_rounds_for_same_client():
    federation = Federation("moon")
    first = federation.train_round(1, [0])[0]
    record = federation.contexts[0].state[CLIENT_RECORD_KEY]
    assert record["rounds-trained"] == 1
    assert record["last-round"] == 1
    kept = federation.contexts[0].state[MOON_PREVIOUS_MODEL_KEY]
    for name, value in parameters_of(first).items():
        np.testing.assert_array_equal(kept[name].numpy(), value)

    second = federation.train_round(3, [0])[0]
    record = federation.contexts[0].state[CLIENT_RECORD_KEY]
    assert record["rounds-trained"] == 2
    assert record["last-round"] == 3
    # The second round's term used the kept model, and the state now contains the new one.
    assert second.content["metrics"]["regularizer"] > 0
    kept = federation.contexts[0].state[MOON_PREVIOUS_MODEL_KEY]
    for name, value in parameters_of(second).items():
        np.testing.assert_array_equal(kept[name].numpy(), value)


def test_state_never_leaks_between_clients():
    federation = Federation("feddyn", "feddyn.alpha=0.1")
    federation.train_round(1, [0])
    assert FEDDYN_GRADIENT_KEY in federation.contexts[0].state
    for partition_id in (1, 2, 3):
        assert len(federation.contexts[partition_id].state) == 0, partition_id

    federation.train_round(2, [1])
    state_0 = federation.contexts[0].state
    state_1 = federation.contexts[1].state
    assert state_0[CLIENT_RECORD_KEY]["partition-id"] == 0
    assert state_1[CLIENT_RECORD_KEY]["partition-id"] == 1
    assert state_0[CLIENT_RECORD_KEY]["rounds-trained"] == 1
    gradient_0 = state_0[FEDDYN_GRADIENT_KEY].to_torch_state_dict()
    gradient_1 = state_1[FEDDYN_GRADIENT_KEY].to_torch_state_dict()
    assert any(not torch.equal(gradient_0[name], gradient_1[name]) for name in gradient_0)


def test_feddyn_state_is_minus_alpha_times_drift():
    federation = Federation("feddyn", "feddyn.alpha=0.1")
    reply = federation.train_round(1, [2])[2]
    gradient = federation.contexts[2].state[FEDDYN_GRADIENT_KEY].to_torch_state_dict()
    global_state = federation.arrays.to_torch_state_dict()
    local = parameters_of(reply)
    # g starts at 0, so after one round g = −α·(θ_k − θ_g).
    for name, value in gradient.items():
        expected = -0.1 * (local[name] - global_state[name].numpy())
        np.testing.assert_allclose(value.numpy(), expected, rtol=1e-5, atol=1e-7)


def test_scaffold_client_returns_change_of_its_variate():
    federation = Federation("scaffold")
    reply = federation.train_round(1, [0])[0]
    delta = reply.content[SCAFFOLD_CONTROL_DELTA_KEY]
    control = federation.contexts[0].state[SCAFFOLD_CONTROL_KEY]
    # c_i starts at zero, so the first change equals the new variate.
    for name in control:
        np.testing.assert_array_equal(delta[name].numpy(), control[name].numpy())
    assert any(np.abs(control[name].numpy()).sum() > 0 for name in control)
