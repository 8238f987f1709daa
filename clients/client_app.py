"""Flower ClientApp: local training and evaluation of fedsign clients.

The server sends the resolved fedsign config as YAML text in every round's ConfigRecord
(key ``fedsign-config``), so a client needs no file of the server's and the same app runs
under ``fedsign run``, ``flwr run`` and Flower's Deployment Engine. The client's share of
the data is ``node_config["partition-id"]``.

A client's persistent state is Flower's ``Context.state``: the simulation runtime keeps
one Context per client across rounds and passes it to every message of that client, so
objectives with client state (MOON's previous model, FedDyn's gradient state, SCAFFOLD's
control variate) store it there. The record ``fedsign-client`` counts the rounds the
client trained and names the last one.
"""

from __future__ import annotations

import functools
import logging

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.objectives import ObjectiveInputs, build_objectives
from fedsign.config import Config, config_from_yaml_text
from fedsign.federation import ClientData, load_federated_data, local_sgd_settings, model_from_config
from fedsign.protocol import CONFIG_KEY, LR_KEY, NUM_EXAMPLES_KEY, PARTITION_ID_KEY, ROUND_KEY
from fedsign.seeding import torch_generator
from fedsign.training import evaluate, resolve_device, train_local

logger = logging.getLogger(__name__)

# Record in Context.state with the client's own bookkeeping across rounds.
CLIENT_RECORD_KEY = "fedsign-client"

app = ClientApp()


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Reply with this client's partition id, so the server can sample by partition."""
    partition_id = int(context.node_config["partition-id"])
    return Message(RecordDict({"metrics": MetricRecord({PARTITION_ID_KEY: partition_id})}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received global model on this client's partition and return its state."""
    round_config = msg.content["config"]
    config = _config_from_text(str(round_config[CONFIG_KEY]))
    partition_id = int(context.node_config["partition-id"])
    server_round = int(round_config[ROUND_KEY])
    if partition_id in config.engine.fail_partitions:
        raise RuntimeError(f"injected failure of client {partition_id} (engine.fail_partitions)")
    data = _client_data(str(round_config[CONFIG_KEY]), partition_id)

    global_state = msg.content["arrays"].to_torch_state_dict()
    model = _model_with_state(config, global_state)
    settings = local_sgd_settings(config.train, float(round_config[LR_KEY]))
    objectives = build_objectives(ObjectiveInputs(
        model=model,
        global_state=global_state,
        config=round_config,
        client_state=context.state,
        content=msg.content,
        train_x=data.train_x,
        train_y=data.train_y,
        batch_size=settings.batch_size,
        lr=settings.lr,
    ))
    stats = train_local(
        model,
        data.train_x,
        data.train_y,
        settings=settings,
        generator=torch_generator(config.seed, "data-order", server_round, partition_id),
        regularizers=objectives.regularizers,
        gradient_corrections=objectives.gradient_corrections,
    )
    extra_records = objectives.finish(model, stats)
    _count_round(context, partition_id, server_round)

    metrics = MetricRecord({
        NUM_EXAMPLES_KEY: stats.num_examples,
        PARTITION_ID_KEY: partition_id,
        "train-loss": stats.loss,
        "train-accuracy": stats.accuracy,
        "regularizer": stats.regularizer,
    })
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    content = RecordDict({"arrays": ArrayRecord(state), "metrics": metrics, **extra_records})
    return Message(content, reply_to=msg)


def _count_round(context: Context, partition_id: int, server_round: int) -> None:
    """Record in the client's state that it trained in ``server_round``."""
    previous = context.state.get(CLIENT_RECORD_KEY)
    rounds_trained = int(previous["rounds-trained"]) if previous is not None else 0
    context.state[CLIENT_RECORD_KEY] = ConfigRecord({
        "partition-id": partition_id,
        "rounds-trained": rounds_trained + 1,
        "last-round": server_round,
    })


@app.evaluate()
def evaluate_local(msg: Message, context: Context) -> Message:
    """Evaluate the received global model on this client's local test split."""
    round_config = msg.content["config"]
    config = _config_from_text(str(round_config[CONFIG_KEY]))
    partition_id = int(context.node_config["partition-id"])
    data = _client_data(str(round_config[CONFIG_KEY]), partition_id)
    model = _model_with_state(config, msg.content["arrays"].to_torch_state_dict())
    loss, accuracy = evaluate(model, data.test_x, data.test_y)
    metrics = MetricRecord({
        NUM_EXAMPLES_KEY: len(data.test_y),
        PARTITION_ID_KEY: partition_id,
        "local-loss": loss,
        "local-accuracy": accuracy,
    })
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


def _model_with_state(config: Config, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    federated = load_federated_data(config.data, config.seed)
    model = model_from_config(config.model, federated.splits)
    model.load_state_dict(state)
    return model.to(resolve_device(config.engine.device))


def _client_data(config_text: str, partition_id: int) -> ClientData:
    torch.set_num_threads(_config_from_text(config_text).engine.torch_threads)
    return _client_data_on_device(config_text, partition_id)


# Caches each client's tensors on the training device (the GPU when present), so they are
# built and copied once per process rather than once per round.
@functools.lru_cache(maxsize=None)
def _client_data_on_device(config_text: str, partition_id: int) -> ClientData:
    config = _config_from_text(config_text)
    federated = load_federated_data(config.data, config.seed)
    data = federated.client(partition_id, config.data.local_test_fraction, config.seed)
    device = resolve_device(config.engine.device)
    return ClientData(*(tensor.to(device) for tensor in (data.train_x, data.train_y, data.test_x, data.test_y)))


# Caches the parsed config per YAML text: every message of a run carries the same text.
@functools.lru_cache(maxsize=4)
def _config_from_text(text: str) -> Config:
    return config_from_yaml_text(text)

