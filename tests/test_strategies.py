"""Ray-free tests of the fedsign strategies: sampling, ordered aggregation, diagnostics."""

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from flwr.supercore.task_identity import TaskIdentity

from fedsign.config import load_config
from strategies import STRATEGIES
from strategies.fedavg import FedAvg, RoundFailedError, client_error


@pytest.fixture(autouse=True)
def task_identity():
    """Give Flower the run identity it needs to build messages outside a running simulation."""
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


def make_strategy(*overrides: str, name: str = "fedavg") -> FedAvg:
    config = load_config(None, [f"strategy.name={name}", *overrides])
    nodes = {partition_id: 1000 + partition_id for partition_id in range(config.data.num_partitions)}
    return STRATEGIES[name](config=config, partition_nodes=nodes, parameter_names=["w"])


def reply(partition_id: int, weights: list[float], num_examples: int) -> Message:
    request = Message(RecordDict(), dst_node_id=1000 + partition_id, message_type=MessageType.TRAIN)
    metrics = MetricRecord({"num-examples": num_examples, "partition-id": partition_id, "train-loss": 1.0,
                            "train-accuracy": 0.5, "regularizer": 0.0})
    arrays = ArrayRecord({"w": torch.tensor(weights)})
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=request)


def start_round(strategy: FedAvg, weights: list[float]) -> None:
    # configure_train stores the global model that aggregate_train compares against.
    list(strategy.configure_train(1, ArrayRecord({"w": torch.tensor(weights)}), ConfigRecord(), grid=None))


def test_sampling_is_seeded_and_sorted():
    strategy = make_strategy("strategy.clients_per_round=3")
    first = [strategy.sample_partitions(r) for r in range(1, 6)]
    again = [make_strategy("strategy.clients_per_round=3").sample_partitions(r) for r in range(1, 6)]
    assert first == again
    assert all(len(s) == 3 and s == sorted(s) for s in first)
    assert len({tuple(s) for s in first}) > 1
    other_seed = [make_strategy("strategy.clients_per_round=3", "seed=1").sample_partitions(r) for r in range(1, 6)]
    assert other_seed != first


def test_fraction_sampling_counts_clients():
    strategy = make_strategy("strategy.fraction_train=0.3")
    assert len(strategy.sample_partitions(1)) == 3


def test_configure_train_sends_config_and_lr():
    strategy = make_strategy("train.warmup_rounds=2", "train.lr=0.1")
    messages = list(strategy.configure_train(1, ArrayRecord({"w": torch.zeros(2)}), ConfigRecord(), grid=None))
    config = messages[0].content["config"]
    assert config["lr"] == pytest.approx(0.05)
    assert config["server-round"] == 1
    assert "seed: 0" in config["fedsign-config"]
    assert {m.metadata.dst_node_id for m in messages} == {1000 + p for p in range(10)}


def test_fedsign_sends_sign_settings():
    strategy = make_strategy("sign.beta=0.3", name="fedsign")
    message = next(iter(strategy.configure_train(1, ArrayRecord({"w": torch.zeros(2)}), ConfigRecord(), grid=None)))
    config = message.content["config"]
    assert config["objectives"] == "sign"
    assert config["sign-beta"] == pytest.approx(0.3)


def test_aggregate_two_clients_by_hand():
    strategy = make_strategy()
    start_round(strategy, [1.0, -1.0])
    # Replies arrive out of partition order; weights 1 and 3 examples.
    arrays, metrics = strategy.aggregate_train(1, [reply(4, [3.0, 3.0], 3), reply(2, [-1.0, -1.0], 1)])
    # (1*[-1,-1] + 3*[3,3]) / 4 = [2, 2].
    np.testing.assert_allclose(arrays["w"].numpy(), [2.0, 2.0])
    # Client SSR to global [+,-]: [-,-] -> 1/2, [+,+] -> 1/2; pairwise: [-,-] vs [+,+] -> 0.
    assert metrics["ssr_client_global_mean"] == pytest.approx(0.5)
    assert metrics["ssr_pairwise_mean"] == pytest.approx(0.0)
    assert metrics["ssr_global_consecutive"] == pytest.approx(0.5)
    assert metrics["clients"] == 2


def test_unweighted_aggregation():
    strategy = make_strategy("strategy.weighted=false")
    start_round(strategy, [0.0])
    arrays, _ = strategy.aggregate_train(1, [reply(0, [1.0], 1), reply(1, [3.0], 100)])
    np.testing.assert_allclose(arrays["w"].numpy(), [2.0])


def test_aggregation_does_not_depend_on_reply_order():
    values = [[0.1, 0.7], [0.3, -0.2], [1e-8, 5.0]]
    first, second = make_strategy(), make_strategy()
    start_round(first, [0.0, 0.0])
    start_round(second, [0.0, 0.0])
    forward, _ = first.aggregate_train(1, [reply(p, v, 7 + p) for p, v in enumerate(values)])
    backward, _ = second.aggregate_train(1, [reply(p, v, 7 + p) for p, v in reversed(list(enumerate(values)))])
    assert np.array_equal(forward["w"].numpy(), backward["w"].numpy())


def test_round_with_no_replies_fails():
    strategy = make_strategy()
    start_round(strategy, [0.0])
    with pytest.raises(RoundFailedError, match="no client replied"):
        strategy.aggregate_train(1, [])


def test_client_error_extracts_message():
    reason = "<class 'ray.exceptions.RayTaskError'>: Traceback...\nException occurred. Message: disk full'>"
    assert client_error(reason) == "disk full"
    assert client_error("plain failure\n") == "plain failure"
