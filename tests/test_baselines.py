"""Ray-free tests of the baseline algorithms' maths on small hand-computed cases.

Each algorithm is checked at two levels: its formula as a plain function, and the
strategy or client objective that uses it (config entries sent, server aggregation).
"""

import logging
import math

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from torch import nn

from clients.objectives import (
    MOON_PREVIOUS_MODEL_KEY,
    SCAFFOLD_CONTROL_DELTA_KEY,
    SCAFFOLD_SERVER_CONTROL_KEY,
    ObjectiveInputs,
    build_objectives,
    build_regularizers,
    difference_control_variate,
    feddyn_term,
    mean_gradient,
    model_contrastive_loss,
    proximal_term,
    scaffold_correction,
    updated_feddyn_gradient,
)
from fedsign.config import load_config
from fedsign.errors import ConfigError
from fedsign.models import FeatureClassifier, PositionEncoding
from fedsign.training import SGDSettings, TrainStats, train_local
from strategies import STRATEGIES, check_strategy, create_strategy
from strategies.feddyn import feddyn_server_step
from strategies.fedpan import FedPan
from strategies.scaffold import scaffold_server_step
from strategies.sign_election import elect_and_merge, trim_update


@pytest.fixture(autouse=True)
def task_identity():
    """Give Flower the run identity it needs to build messages outside a running simulation."""
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


def make_strategy(name: str, *overrides: str, parameter_names=("w",)):
    config = load_config(None, [f"strategy.name={name}", "data.num_partitions=4", *overrides])
    nodes = {partition_id: 1000 + partition_id for partition_id in range(config.data.num_partitions)}
    return create_strategy(config, partition_nodes=nodes, parameter_names=list(parameter_names))


def reply(partition_id: int, weights: list[float], num_examples: int, **records: ArrayRecord) -> Message:
    request = Message(RecordDict(), dst_node_id=1000 + partition_id, message_type=MessageType.TRAIN)
    metrics = MetricRecord({"num-examples": num_examples, "partition-id": partition_id, "train-loss": 1.0,
                            "train-accuracy": 0.5, "regularizer": 0.0})
    content = RecordDict({"arrays": ArrayRecord({"w": torch.tensor(weights)}), "metrics": metrics, **records})
    return Message(content, reply_to=request)


def start_round(strategy, weights: list[float], server_round: int = 1) -> list[Message]:
    arrays = ArrayRecord({"w": torch.tensor(weights)})
    return list(strategy.configure_train(server_round, arrays, ConfigRecord(), grid=None))


def round_config(strategy) -> ConfigRecord:
    return start_round(strategy, [0.0])[0].content["config"]


# -- FedProx -----------------------------------------------------------------------------


def test_proximal_term_by_hand():
    theta = torch.tensor([1.0, 2.0], requires_grad=True)
    # (μ/2)·‖θ − θ_g‖² = 0.25·(1 + 4) = 1.25 with μ = 0.5, θ_g = 0.
    value = proximal_term([theta], [torch.zeros(2)], mu=0.5)
    assert value.item() == pytest.approx(1.25)
    value.backward()
    # Gradient μ·(θ − θ_g).
    torch.testing.assert_close(theta.grad, torch.tensor([0.5, 1.0]))


def test_fedprox_sends_mu_and_client_adds_term():
    config = round_config(make_strategy("fedprox", "prox.mu=0.5"))
    assert config["objectives"] == "prox"
    assert config["prox-mu"] == pytest.approx(0.5)
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
    (regularizer,) = build_regularizers(model, {"weight": torch.zeros(1, 2)}, config)
    assert regularizer(model).item() == pytest.approx(1.25)


def test_fedprox_zero_mu_warns_and_adds_nothing(caplog):
    with caplog.at_level(logging.WARNING):
        strategy = make_strategy("fedprox", "prox.mu=0")
    assert "prox.mu is 0" in caplog.text
    assert build_regularizers(nn.Linear(1, 1), nn.Linear(1, 1).state_dict(), round_config(strategy)) == []


def test_negative_mu_is_a_config_error():
    with pytest.raises(ConfigError, match=r"prox.mu=-1.*>= 0"):
        load_config(None, ["prox.mu=-1"])
    with pytest.raises(ConfigError, match="moon.tau"):
        load_config(None, ["moon.tau=0"])
    with pytest.raises(ConfigError, match="feddyn.alpha"):
        load_config(None, ["feddyn.alpha=0"])


# -- MOON --------------------------------------------------------------------------------


def test_contrastive_loss_by_hand():
    # cos(z, z_glob) = 1 and cos(z, z_prev) = 0; with τ = 0.5 the logits are [2, 0]:
    # ℓ = −log(e² / (e² + e⁰)) = log(1 + e^−2).
    z = torch.tensor([[1.0, 0.0]])
    loss = model_contrastive_loss(z, torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 2.0]]), tau=0.5)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-2)))


def test_contrastive_loss_is_log2_when_previous_equals_global():
    z = torch.randn(5, 3)
    other = torch.randn(5, 3)
    assert model_contrastive_loss(z, other, other, tau=0.5).item() == pytest.approx(math.log(2), rel=1e-6)


def tiny_model(weights: list[list[float]]) -> FeatureClassifier:
    features = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        features.weight.copy_(torch.tensor(weights))
    return FeatureClassifier(features, nn.Linear(2, 2))


def moon_config(mu: float = 1.0, tau: float = 0.5) -> ConfigRecord:
    return ConfigRecord({"objectives": "moon", "moon-mu": mu, "moon-tau": tau})


def test_moon_first_round_has_no_term_and_keeps_model():
    model, state = tiny_model([[1.0, 0.0], [0.0, 1.0]]), RecordDict()
    objectives = build_objectives(ObjectiveInputs(model, model.state_dict(), moon_config(), client_state=state))
    assert objectives.regularizers == []
    objectives.finish(model, TrainStats(0.0, 0.0, 0.0, 1, 1))
    kept = state[MOON_PREVIOUS_MODEL_KEY].to_torch_state_dict()
    torch.testing.assert_close(kept["features.weight"], model.features.weight.detach())


def test_moon_term_uses_global_and_previous_representations():
    # Local model = global model = identity features; previous model maps x to (x_1, x_0).
    model = tiny_model([[1.0, 0.0], [0.0, 1.0]])
    previous = tiny_model([[0.0, 1.0], [1.0, 0.0]])
    state = RecordDict({MOON_PREVIOUS_MODEL_KEY: ArrayRecord(previous.state_dict())})
    objectives = build_objectives(ObjectiveInputs(model, model.state_dict(), moon_config(mu=2.0), client_state=state))
    (regularizer,) = objectives.regularizers
    model(torch.tensor([[1.0, 0.0]]))  # the training loop's forward pass, which the hook records
    # z = z_glob = (1, 0), z_prev = (0, 1): cosines 1 and 0, τ = 0.5, μ = 2.
    assert regularizer(model).item() == pytest.approx(2 * math.log(1 + math.exp(-2)))
    objectives.finish(model, TrainStats(0.0, 0.0, 0.0, 1, 1))
    assert not model.features._forward_hooks


# -- FedDyn ------------------------------------------------------------------------------


def test_feddyn_client_term_and_gradient_state_by_hand():
    theta = torch.tensor([1.0, -1.0], requires_grad=True)
    anchor, gradient, alpha = torch.zeros(2), torch.tensor([0.5, 0.5]), 0.1
    # −⟨g, θ⟩ + (α/2)‖θ − θ_g‖² = −(0.5 − 0.5) + 0.05·2 = 0.1.
    value = feddyn_term([theta], [anchor], [gradient], alpha)
    assert value.item() == pytest.approx(0.1)
    value.backward()
    # Gradient −g + α(θ − θ_g) = [−0.4, −0.6].
    torch.testing.assert_close(theta.grad, torch.tensor([-0.4, -0.6]))
    # g ← g − α(θ − θ_g) = [0.4, 0.6].
    torch.testing.assert_close(updated_feddyn_gradient(gradient, theta.detach(), anchor, alpha),
                               torch.tensor([0.4, 0.6]))


def test_feddyn_server_step_by_hand():
    global_state = {"w": np.zeros(2), "buffer": np.array([0.0])}
    clients = [{"w": np.array([1.0, 2.0]), "buffer": np.array([2.0])},
               {"w": np.array([3.0, 0.0]), "buffer": np.array([4.0])}]
    state, h = feddyn_server_step(global_state, clients, {"w": np.zeros(2)}, alpha=0.1, num_clients=4,
                                  parameter_names=["w"])
    # h = 0 − 0.1·([1,2] + [3,0])/4 = [−0.1, −0.05]; θ = mean [2, 1] − h/α = [3, 1.5].
    np.testing.assert_allclose(h["w"], [-0.1, -0.05])
    np.testing.assert_allclose(state["w"], [3.0, 1.5])
    np.testing.assert_allclose(state["buffer"], [3.0])  # buffers: plain mean


def test_feddyn_strategy_keeps_correction_across_rounds():
    strategy = make_strategy("feddyn", "feddyn.alpha=0.1", "strategy.weighted=false")
    assert round_config(strategy)["feddyn-alpha"] == pytest.approx(0.1)
    start_round(strategy, [0.0, 0.0])
    arrays, _ = strategy.aggregate_train(1, [reply(0, [1.0, 2.0], 10), reply(1, [3.0, 0.0], 30)])
    np.testing.assert_allclose(arrays["w"].numpy(), [3.0, 1.5], rtol=1e-6)
    # Round 2 from θ_g = [3, 1.5]: both clients return [3, 1.5], so the drift is 0, h stays
    # [−0.1, −0.05] and θ = [3, 1.5] − h/α = [4, 2].
    start_round(strategy, [3.0, 1.5], server_round=2)
    arrays, _ = strategy.aggregate_train(2, [reply(0, [3.0, 1.5], 10), reply(2, [3.0, 1.5], 10)])
    np.testing.assert_allclose(arrays["w"].numpy(), [4.0, 2.0], rtol=1e-6)


# -- SCAFFOLD ----------------------------------------------------------------------------


def test_scaffold_gradient_correction_by_hand():
    gradient = torch.tensor([1.0, 1.0])
    scaffold_correction([gradient], [torch.tensor([0.5, 0.0])], [torch.tensor([0.2, 0.3])])
    torch.testing.assert_close(gradient, torch.tensor([1.3, 0.7]))


def test_scaffold_option_two_variate_by_hand():
    # c_i − c + (θ_g − θ_i)/(K·η) = 0.2 − 0.5 + 0.2/(2·0.1) = 0.7.
    value = difference_control_variate(torch.tensor(0.2), torch.tensor(0.5), torch.tensor(1.0), torch.tensor(0.8),
                                       steps=2, lr=0.1)
    assert value.item() == pytest.approx(0.7)


def test_scaffold_server_step_by_hand():
    state, control = scaffold_server_step(
        {"w": np.zeros(2)}, [{"w": np.array([1.0, 1.0])}, {"w": np.array([3.0, -1.0])}],
        {"w": np.zeros(2)}, [{"w": np.array([0.4, 0.0])}, {"w": np.array([0.0, 0.8])}],
        server_lr=0.5, num_clients=4, parameter_names=["w"],
    )
    # θ = 0 + 0.5·mean([1,1], [3,−1]) = [1, 0]; c = 0 + ([0.4, 0] + [0, 0.8])/4 = [0.1, 0.2].
    np.testing.assert_allclose(state["w"], [1.0, 0.0])
    np.testing.assert_allclose(control["w"], [0.1, 0.2])


def test_mean_gradient_is_full_batch_gradient_and_leaves_model():
    torch.manual_seed(0)
    model, x, y = nn.Linear(3, 2), torch.randn(7, 3), torch.tensor([0, 1, 1, 0, 1, 0, 0])
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    gradients = mean_gradient(model, x, y, batch_size=3)
    nn.functional.cross_entropy(model(x), y).backward()
    torch.testing.assert_close(gradients["weight"], model.weight.grad)
    torch.testing.assert_close(gradients["bias"], model.bias.grad)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_scaffold_local_step_uses_corrected_gradient():
    model = nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    x, y = torch.tensor([[1.0], [1.0]]), torch.tensor([0, 0])
    config = ConfigRecord({"objectives": "scaffold", "scaffold-variate": "difference"})
    server = ArrayRecord({"weight": torch.tensor([[0.5], [0.0]])})
    inputs = ObjectiveInputs(model, {"weight": torch.zeros(2, 1)}, config,
                             content=RecordDict({SCAFFOLD_SERVER_CONTROL_KEY: server}), lr=1.0)
    objectives = build_objectives(inputs)
    settings = SGDSettings(epochs=1, batch_size=2, lr=1.0, momentum=0.0, weight_decay=0.0, clip_norm=0.0)
    stats = train_local(model, x, y, settings=settings, generator=torch.Generator().manual_seed(0),
                        gradient_corrections=objectives.gradient_corrections)
    # CE gradient at zero logits, target 0: [p0 − 1, p1]·x = [−0.5, 0.5]; + c − c_i = [0.5, 0].
    torch.testing.assert_close(model.weight.detach(), -torch.tensor([[0.0], [0.5]]))
    records = objectives.finish(model, stats)
    # Option II with K = 1, η = 1: c_i+ = 0 − c + (θ_g − θ) = [−0.5, 0] + [0, 0.5].
    torch.testing.assert_close(torch.from_numpy(records[SCAFFOLD_CONTROL_DELTA_KEY]["weight"].numpy()),
                               torch.tensor([[-0.5], [0.5]]))


def test_scaffold_strategy_sends_and_updates_control():
    strategy = make_strategy("scaffold", "strategy.weighted=false")
    messages = start_round(strategy, [0.0, 0.0])
    sent = messages[0].content[SCAFFOLD_SERVER_CONTROL_KEY]["w"].numpy()
    np.testing.assert_array_equal(sent, [0.0, 0.0])
    delta = lambda values: ArrayRecord({"w": torch.tensor(values)})  # noqa: E731
    arrays, _ = strategy.aggregate_train(1, [
        reply(0, [1.0, 1.0], 5, **{SCAFFOLD_CONTROL_DELTA_KEY: delta([0.4, 0.0])}),
        reply(1, [3.0, -1.0], 5, **{SCAFFOLD_CONTROL_DELTA_KEY: delta([0.0, 0.8])}),
    ])
    np.testing.assert_allclose(arrays["w"].numpy(), [2.0, 0.0])
    messages = start_round(strategy, [2.0, 0.0], server_round=2)
    np.testing.assert_allclose(messages[0].content[SCAFFOLD_SERVER_CONTROL_KEY]["w"].numpy(), [0.1, 0.2])


# -- FedPAN ------------------------------------------------------------------------------


def test_fedpan_turns_on_multiplicative_encoding():
    config = load_config(None, ["strategy.name=fedpan"])
    assert config.model.position_encoding == "multiplicative"
    assert load_config(None, ["strategy.name=fedpan", "model.position_encoding=additive"]).model.position_encoding \
        == "additive"
    assert load_config(None, []).model.position_encoding == "none"


def test_fedpan_encoding_by_hand():
    # p_j = 0.1·sin(2π·j/4) = [0, 0.1, 0, −0.1]; multiplicative: x·(1 + p_j).
    encoding = PositionEncoding(4, mode="multiplicative", amplitude=0.1, period=1.0)
    out = encoding(torch.ones(1, 4))
    torch.testing.assert_close(out, torch.tensor([[1.0, 1.1, 1.0, 0.9]]))


def test_fedpan_without_encoding_is_rejected():
    config = load_config(None, ["strategy.name=fedpan"])
    config.model.position_encoding = "none"
    with pytest.raises(ConfigError, match="model.position_encoding"):
        FedPan(config=config, partition_nodes={0: 1}, parameter_names=["w"])


# -- sign election -----------------------------------------------------------------------


def test_sign_election_by_hand():
    updates = [np.array([1.0, -1.0, 0.5]), np.array([2.0, 1.0, -0.5]), np.array([-4.0, 1.0, 0.0])]
    # Coordinate 0: M+ = 3/3 < M− = 4/3, so "−" wins and only −4 is merged.
    # Coordinate 1: M+ = 2/3 > M− = 1/3, so "+" wins: mean(1, 1) = 1.
    # Coordinate 2: M+ = M− = 0.5/3, a tie: 0.
    np.testing.assert_allclose(elect_and_merge(updates, [1 / 3] * 3), [-4.0, 1.0, 0.0])


def test_sign_election_weights_mass_and_merge():
    updates = [np.array([1.0]), np.array([-1.0]), np.array([3.0])]
    # M+ = 0.2·1 + 0.2·3 = 0.8 > M− = 0.6: merge (0.2·1 + 0.2·3)/(0.2 + 0.2) = 2.
    np.testing.assert_allclose(elect_and_merge(updates, [0.2, 0.6, 0.2]), [2.0])


def test_trim_keeps_largest_magnitudes():
    np.testing.assert_allclose(trim_update(np.array([3.0, -1.0, 0.5, -4.0]), 0.5), [3.0, 0.0, 0.0, -4.0])
    np.testing.assert_allclose(trim_update(np.array([3.0, -1.0]), 1.0), [3.0, -1.0])


def test_sign_election_strategy_steps_from_global():
    strategy = make_strategy("sign_election", "strategy.weighted=false")
    start_round(strategy, [1.0, 1.0, 1.0])
    replies = [reply(0, [2.0, 0.0, 1.5], 1), reply(1, [3.0, 2.0, 0.5], 1), reply(2, [-3.0, 2.0, 1.0], 1)]
    arrays, _ = strategy.aggregate_train(1, replies)
    # Updates as in test_sign_election_by_hand, added to θ_g = 1.
    np.testing.assert_allclose(arrays["w"].numpy(), [-3.0, 2.0, 1.0])


# -- Flower built-ins and composition ----------------------------------------------------


def test_builtin_fedmedian_by_name():
    strategy = make_strategy("fedmedian")
    start_round(strategy, [0.0])
    arrays, metrics = strategy.aggregate_train(1, [reply(0, [1.0], 1), reply(1, [10.0], 100), reply(2, [2.0], 1)])
    np.testing.assert_allclose(arrays["w"].numpy(), [2.0])
    assert "ssr_pairwise_mean" in metrics


def test_builtin_fedavgm_momentum_by_hand():
    strategy = make_strategy("fedavgm", "strategy.kwargs={server_momentum: 0.5, server_learning_rate: 1.0}")
    start_round(strategy, [0.0])
    arrays, _ = strategy.aggregate_train(1, [reply(0, [2.0], 1), reply(1, [2.0], 1)])
    # Pseudo-gradient 0 − 2 = −2, first momentum = −2, θ = 0 − 1·(−2) = 2.
    np.testing.assert_allclose(arrays["w"].numpy(), [2.0])
    start_round(strategy, [2.0], server_round=2)
    arrays, _ = strategy.aggregate_train(2, [reply(0, [3.0], 1), reply(1, [3.0], 1)])
    # Pseudo-gradient −1, momentum 0.5·(−2) + (−1) = −2, θ = 2 + 2 = 4.
    np.testing.assert_allclose(arrays["w"].numpy(), [4.0])


def test_objectives_compose_by_config():
    strategy = make_strategy("fedsign", "strategy.objectives=[prox]", "prox.mu=0.5", "sign.beta=1",
                             "sign.reduction=sum")
    config = round_config(strategy)
    assert config["objectives"] == "sign,prox"
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0]]))
    regularizers = build_regularizers(model, {"weight": torch.tensor([[1.0, 1.0]])}, config)
    # Sign hinge (sum): coordinate 1 flipped, |−2| = 2. Prox: 0.25·(0 + 9) = 2.25.
    assert [r(model).item() for r in regularizers] == pytest.approx([2.0, 2.25])


def test_server_state_objectives_cannot_be_added():
    with pytest.raises(ConfigError, match="strategy.objectives"):
        load_config(None, ["strategy.objectives=[scaffold]"])


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_fedsign_strategy_passes_its_check(name):
    check_strategy(load_config(None, [f"strategy.name={name}"]))


# -- user strategies by import path ------------------------------------------------------

USER_MODULE = '''
import numpy as np
from flwr.serverapp.strategy import FedMedian

from fedsign.aggregation import average_states
from strategies.fedavg import FedAvg


class DampedAverage(FedAvg):
    """Moves the parameters a fraction ``step`` of the way to the clients' average."""

    def __init__(self, *, step: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if not 0 < step <= 1:
            raise ValueError(f"step must be in (0, 1], got {step}")
        self.step = step

    def aggregate_states(self, server_round, global_state, client_states, num_examples):
        new_state = average_states(client_states, self.aggregation_weights(num_examples))
        for name in self.parameter_names:
            new_state[name] = global_state[name] + self.step * (new_state[name] - global_state[name])
        return new_state


class MyMedian(FedMedian):
    """A Flower strategy defined outside fedsign."""


class NotAStrategy:
    pass
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "user_strategies_for_test.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "user_strategies_for_test"


def test_user_fedavg_subclass_by_path_gets_kwargs(user_module):
    strategy = make_strategy(f"{user_module}:DampedAverage", "strategy.kwargs={step: 0.25}")
    start_round(strategy, [0.0])
    arrays, _ = strategy.aggregate_train(1, [reply(0, [4.0], 1), reply(1, [4.0], 1)])
    np.testing.assert_allclose(arrays["w"].numpy(), [1.0])


def test_user_flower_strategy_by_path(user_module):
    strategy = make_strategy(f"{user_module}:MyMedian")
    start_round(strategy, [0.0])
    arrays, _ = strategy.aggregate_train(1, [reply(0, [1.0], 1), reply(1, [5.0], 1), reply(2, [2.0], 1)])
    np.testing.assert_allclose(arrays["w"].numpy(), [2.0])


def test_user_strategy_run_name_is_folder_safe(user_module):
    config = load_config(None, [f"strategy.name={user_module}:DampedAverage"])
    assert "-DampedAverage-" in config.run_name()
    assert ":" not in config.run_name()


@pytest.mark.parametrize(("name", "kwargs", "message"), [
    ("fedmagic", "{}", "unknown strategy.name='fedmagic'; available: fedavg"),
    ("no_such_module_xyz:Strategy", "{}", "cannot import module 'no_such_module_xyz'"),
    ("{module}:Missing", "{}", "has no class 'Missing'"),
    ("{module}:NotAStrategy", "{}", "is not a subclass"),
    ("{module}:DampedAverage", "{steps: 2}", "rejected strategy.kwargs={'steps': 2}"),
    ("{module}:DampedAverage", "{step: 5}", "step must be in"),
    ("fedadam", "{learning_rate: 1}", "rejected strategy.kwargs"),
    ("fedprox", "{mu: 1}", "takes its settings from its config section"),
])
def test_bad_strategy_is_one_line_config_error(user_module, name, kwargs, message):
    config = load_config(None, [f"strategy.name={name.format(module=user_module)}", f"strategy.kwargs={kwargs}"])
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")) as caught:
        check_strategy(config)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("override", ["strategy.name=nowhere_module:Thing", "strategy.name=fedadam",
                                      "prox.mu=-0.5"])
def test_cli_rejects_bad_strategy_input_with_exit_2(tmp_path, capsys, override):
    from fedsign.cli import main

    kwargs = ["strategy.kwargs={no_such_argument: 1}"] if override.endswith("fedadam") else []
    status = main(["run", "configs/default.yaml", override, *kwargs, "--output-dir", str(tmp_path / "out")])
    error = capsys.readouterr().err.strip()
    assert status == 2
    assert len(error.splitlines()) == 1, error
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
