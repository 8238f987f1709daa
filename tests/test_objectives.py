"""Tests of the FedSign sign-alignment penalty and the objective registry."""

import pytest
import torch
from flwr.app import ConfigRecord
from torch import nn

from clients.objectives import build_regularizers, sign_alignment_penalty
from fedsign.errors import UserInputError

THETA = torch.tensor([0.5, -0.2, 0.3, 0.1])
SIGN = torch.tensor([1.0, 1.0, -1.0, 0.0])  # sign(θ_g); coordinate 3 has s = 0.


def test_hinge_penalises_only_flipped_signs():
    # -s·θ = [-0.5, 0.2, 0.3, -0.0]; max(0, ·) over the 3 nonzero-sign coordinates: (0.2 + 0.3) / 3.
    penalty = sign_alignment_penalty([THETA], [SIGN], variant="hinge")
    assert penalty.item() == pytest.approx(0.5 / 3)


def test_hinge_counts_zero_signs_when_not_skipped():
    penalty = sign_alignment_penalty([THETA], [SIGN], variant="hinge", skip_zero=False)
    assert penalty.item() == pytest.approx(0.5 / 4)


def test_linear_variant():
    # -mean(s·θ) over nonzero signs: -(0.5 - 0.2 - 0.3) / 3 = 0.
    penalty = sign_alignment_penalty([THETA], [SIGN], variant="linear")
    assert penalty.item() == pytest.approx(0.0, abs=1e-7)


def test_soft_variant_matches_softplus_formula():
    kappa = 10.0
    products = torch.tensor([0.5, -0.2, -0.3])  # s·θ on the nonzero-sign coordinates
    expected = (torch.nn.functional.softplus(-kappa * products) / kappa).mean()
    penalty = sign_alignment_penalty([THETA], [SIGN], variant="soft", kappa=kappa)
    assert penalty.item() == pytest.approx(expected.item())


def test_penalty_gradient_pushes_flipped_coordinates_back():
    theta = THETA.clone().requires_grad_(True)
    sign_alignment_penalty([theta], [SIGN], variant="hinge").backward()
    # Flipped coordinates 1 (s=+1, θ<0) and 2 (s=-1, θ>0) get gradient -s/3; the others 0.
    torch.testing.assert_close(theta.grad, torch.tensor([0.0, -1 / 3, 1 / 3, 0.0]))


def sign_config(beta: float, groups: str = "all") -> ConfigRecord:
    return ConfigRecord({
        "objectives": "sign", "sign-beta": beta, "sign-variant": "hinge", "sign-kappa": 10.0,
        "sign-groups": groups, "sign-skip-zero": True,
    })


def test_sign_objective_with_zero_beta_adds_nothing():
    model = nn.Sequential(nn.Linear(2, 2))
    regularizers = build_regularizers(model, model.state_dict(), sign_config(0.0))
    assert regularizers == []


def test_sign_objective_scales_by_beta():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -1.0]]))
    global_state = {"weight": torch.tensor([[1.0, 1.0]])}
    regularizers = build_regularizers(model, global_state, sign_config(0.5))
    # One flipped coordinate of magnitude 1 out of 2 -> R = 0.5; β·R = 0.25.
    assert regularizers[0](model).item() == pytest.approx(0.25)


def test_unknown_objective_is_rejected():
    with pytest.raises(UserInputError, match="unknown client objective 'magic'"):
        build_regularizers(nn.Linear(1, 1), {}, ConfigRecord({"objectives": "magic"}))


def test_sum_reduction_is_mean_times_count():
    mean = sign_alignment_penalty([THETA], [SIGN], variant="hinge", reduction="mean")
    total = sign_alignment_penalty([THETA], [SIGN], variant="hinge", reduction="sum")
    # Three covered coordinates (s_3 = 0 is skipped): sum = 0.2 + 0.3.
    assert total.item() == pytest.approx(0.5)
    assert total.item() == pytest.approx(3 * mean.item())
