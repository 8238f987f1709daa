"""Tests of the theory demos: ReLU on/off agreement and the linear softmax Hessian."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fedsign.cli import main
from fedsign.config import Config, DataConfig, ModelConfig
from fedsign.datasets import load_dataset
from fedsign.errors import UserInputError
from fedsign.federation import build_global_model
from fedsign.results import CONFIG_FILE, MODEL_FILE
from fedsign.theory import (
    RELU_JSON,
    RELU_PLOT,
    SOFTMAX_CSV,
    SOFTMAX_PLOT,
    ReluDemoSettings,
    SoftmaxDemoSettings,
    agreement_matrix,
    hessian_quadratic_form,
    noise_directions,
    relu_agreement_curve,
    relu_states,
    softmax_curve,
    softmax_loss_terms,
    symmetric_grid,
)



def _softmax_problem():
    generator = torch.Generator().manual_seed(0)
    x_tilde = torch.cat([torch.randn(6, 3, generator=generator, dtype=torch.float64),
                         torch.ones(6, 1, dtype=torch.float64)], dim=1)
    y = torch.tensor([0, 1, 2, 3, 1, 0])
    theta = torch.randn(4, 4, generator=generator, dtype=torch.float64)
    return theta, x_tilde, y


def test_softmax_gradient_and_hessian_match_autograd():
    theta, x_tilde, y = _softmax_problem()

    def loss(flat: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(x_tilde @ flat.reshape(4, 4).T, y)

    hessian = torch.autograd.functional.hessian(loss, theta.reshape(-1))
    gradient = torch.autograd.functional.jacobian(loss, theta.reshape(-1))
    terms = softmax_loss_terms(theta, x_tilde, y)
    direction = torch.randn(4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    assert torch.allclose(terms["gradient"].reshape(-1), gradient)
    assert terms["hessian_trace"].item() == pytest.approx(torch.trace(hessian).item())
    expected_form = direction.reshape(-1) @ hessian @ direction.reshape(-1)
    assert hessian_quadratic_form(terms["probabilities"], x_tilde, direction).item() == pytest.approx(expected_form.item())


def test_softmax_curve_taylor_agrees_near_zero():
    theta, x_tilde, y = _softmax_problem()
    rows = softmax_curve(theta, x_tilde, y, settings=SoftmaxDemoSettings(points=201, scale=0.1))
    loss_at_zero = softmax_loss_terms(theta, x_tilde, y)["loss"].item()
    for kind in ("gaussian", "sign_consistent"):
        at_zero = next(row for row in rows if row["noise"] == kind and row["lambda"] == 0.0)
        assert at_zero["loss"] == pytest.approx(loss_at_zero)
        near = next(row for row in rows if row["noise"] == kind and row["lambda"] == 0.01)
        assert near["taylor_loss"] == pytest.approx(near["loss"], abs=1e-7)


def test_noise_directions_signs_and_norms():
    state = {"w": torch.tensor([[1.0, -2.0], [0.0, 3.0]]), "b": torch.tensor([-1.0, 1.0])}
    directions = noise_directions(state, ["w", "b"], scale=0.5, seed=0)
    consistent = directions["sign_consistent"]
    assert torch.equal(torch.sign(consistent["w"]), torch.tensor([[1.0, -1.0], [0.0, 1.0]]))
    assert torch.equal(torch.sign(consistent["b"]), torch.tensor([-1.0, 1.0]))
    assert directions["gaussian"]["w"].norm().item() == pytest.approx(0.5 * state["w"].norm().item(), rel=1e-5)


def test_agreement_matrix_hand_computed():
    reference = torch.tensor([True, True, False, False, True])
    perturbed = torch.tensor([True, False, False, True, True])
    matrix = agreement_matrix(reference, perturbed)
    assert matrix == pytest.approx({"on_on": 0.4, "on_off": 0.2, "off_on": 0.2, "off_off": 0.2,
                                    "agreement": 0.6, "on_fraction": 0.6})


class ReluNet(nn.Module):
    """Linear(3→8) → ReLU features and a Linear(8→2) classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(3, 8), nn.ReLU())
        self.classifier = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _relu_model() -> nn.Module:
    torch.manual_seed(0)
    return ReluNet()


def test_relu_curve_restores_model():
    model = _relu_model()
    x = torch.randn(10, 3, generator=torch.Generator().manual_seed(2))
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    rows = relu_agreement_curve(model, x, settings=ReluDemoSettings(points=5))
    assert len(rows) == 10
    assert all(row["agreement"] == 1.0 for row in rows if row["lambda"] == 0.0)
    assert relu_states(model, x).numel() == 10 * 8
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_symmetric_grid_needs_odd_points():
    assert symmetric_grid(5) == [-1.0, -0.5, 0.0, 0.5, 1.0]
    with pytest.raises(UserInputError, match="odd integer"):
        symmetric_grid(4)


def test_cli_softmax_demo(tmp_path):
    output_dir = tmp_path / "softmax"
    status = main(["softmax-demo", "--dataset", "synthetic", "--points", "5", "--epochs", "5",
                   "--output-dir", str(output_dir)])
    assert status == 0
    assert (output_dir / SOFTMAX_CSV).is_file()
    assert (output_dir / SOFTMAX_PLOT).is_file()


def test_cli_relu_demo_on_run_dir(tmp_path):
    config = Config(data=DataConfig(dataset="synthetic"), model=ModelConfig(name="mlp_bn"))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / CONFIG_FILE).write_text(config.to_yaml())
    model = build_global_model(config.model, load_dataset("synthetic"), config.seed)
    torch.save(model.state_dict(), run_dir / MODEL_FILE)
    output_dir = tmp_path / "relu"

    status = main(["relu-demo", str(run_dir), "--points", "5", "--examples", "20", "--output-dir", str(output_dir)])
    assert status == 0
    result = json.loads((output_dir / RELU_JSON).read_text())
    assert set(result["summary"]) == {"gaussian", "sign_consistent"}
    assert (output_dir / RELU_PLOT).is_file()
    assert main(["relu-demo", str(run_dir), "--points", "4", "--output-dir", str(tmp_path / "other")]) == 2
    assert not (tmp_path / "other").exists()
