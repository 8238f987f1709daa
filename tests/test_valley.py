"""Tests of the valley analysis: noise registry, scalings, sign replacement, curves, BatchNorm modes and CLI."""

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from fedsign.cli import main
from fedsign.config import Config, DataConfig, ModelConfig
from fedsign.errors import ConfigError, UserInputError
from fedsign.models import build_model, select_parameters
from fedsign.noise import (
    draw_noise,
    list_noises,
    replace_signs,
    scale_direction,
    special_direction,
)
from fedsign.results import CONFIG_FILE, INITIAL_MODEL_FILE, MODEL_FILE
from fedsign.signs import ssr
from fedsign.valley import (
    Perturbation,
    ValleyData,
    ValleySettings,
    compute_curves,
    lambda_grid,
    perturbed,
    recompute_bn_statistics,
    summarize_curve,
)
from fedsign.valley_studies import iter_ratio_directions, load_study, parse_ratios



def _tiny_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("cnn_bn_w4", input_shape=(1, 8, 8), num_classes=3)


def _trained_like(model: nn.Module) -> nn.Module:
    """Give BatchNorm layers non-trivial running statistics, as a trained model has."""
    recompute_bn_statistics(model, torch.randn(32, 1, 8, 8), batch_size=64)
    return model


def _params(model: nn.Module, group: str = "all") -> dict[str, torch.Tensor]:
    named = dict(model.named_parameters())
    return {name: named[name].detach().clone() for name in select_parameters(model, group)}


def _flat(direction: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([tensor.reshape(-1) for tensor in direction.values()])


def _data(count: int = 24) -> ValleyData:
    generator = torch.Generator().manual_seed(1)
    return ValleyData(
        eval_x=torch.randn(count, 1, 8, 8, generator=generator),
        eval_y=torch.randint(0, 3, (count,), generator=generator),
        bn_x=torch.randn(count, 1, 8, 8, generator=generator),
    )


# ---------------------------------------------------------------------------------------------
# Noise registry
# ---------------------------------------------------------------------------------------------


def test_registry_has_seven_distributions_of_both_kinds():
    noises = list_noises()
    assert len(noises) >= 7
    assert sum(noise.zero_mean for noise in noises) >= 3
    assert sum(not noise.zero_mean for noise in noises) >= 3


@pytest.mark.parametrize("noise", [noise.name for noise in list_noises()])
def test_noise_mean_matches_its_registration(noise):
    zero_mean = next(item.zero_mean for item in list_noises() if item.name == noise)
    sample = draw_noise(noise, {"w": torch.Size([200, 100])}, torch.Generator().manual_seed(0))["w"]
    assert sample.shape == (200, 100)
    assert torch.isfinite(sample).all()
    if zero_mean:
        assert abs(sample.mean().item()) < 0.05
    else:
        assert (sample >= 0).all()
        assert sample.mean().item() > 0.3


def test_noise_draw_is_reproducible():
    shapes = {"w": torch.Size([5, 3]), "b": torch.Size([5])}
    first = draw_noise("laplace", shapes, torch.Generator().manual_seed(7))
    second = draw_noise("laplace", shapes, torch.Generator().manual_seed(7))
    assert all(torch.equal(first[key], second[key]) for key in shapes)


def test_unknown_noise_is_rejected():
    with pytest.raises(UserInputError, match="unknown noise 'pink'"):
        ValleySettings(noises=["gaussian", "pink"])


# ---------------------------------------------------------------------------------------------
# Scalings
# ---------------------------------------------------------------------------------------------


def _theta_and_noise() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    theta = {
        "conv": torch.tensor([[[[3.0, 4.0]]], [[[1.0, 0.0]]]]),  # filter norms 5 and 1
        "bias": torch.tensor([1.0, -2.0, 2.0]),  # norm 3
    }
    noise = {
        "conv": torch.tensor([[[[1.0, 1.0]]], [[[0.0, -2.0]]]]),  # filter norms √2 and 2
        "bias": torch.tensor([0.0, 0.0, 4.0]),  # norm 4
    }
    return theta, noise


def test_filter_scaling_matches_filter_norms():
    theta, noise = _theta_and_noise()
    scaled = scale_direction(noise, theta, scaling="filter", bias_mode="keep")
    norms = scaled["conv"].flatten(1).norm(dim=1)
    assert torch.allclose(norms, torch.tensor([5.0, 1.0]))
    # Directions inside a filter are kept: filter 0 becomes (5/√2)·(1, 1), filter 1 (0, −1).
    assert torch.allclose(scaled["conv"].flatten(1), torch.tensor([[5 / 2**0.5, 5 / 2**0.5], [0.0, -1.0]]))


def test_filter_scaling_of_real_model_filters():
    model = _tiny_cnn()
    theta = _params(model)
    noise = draw_noise("uniform_pos", {k: v.shape for k, v in theta.items()}, torch.Generator().manual_seed(0))
    scaled = scale_direction(noise, theta, scaling="filter")
    for name, tensor in scaled.items():
        if tensor.dim() >= 2:
            assert torch.allclose(tensor.flatten(1).norm(dim=1), theta[name].flatten(1).norm(dim=1), rtol=1e-5)


@pytest.mark.parametrize(
    ("bias_mode", "expected"),
    [
        ("zero", [0.0, 0.0, 0.0]),
        ("per_tensor", [0.0, 0.0, 3.0]),  # rescaled from norm 4 to the norm 3 of θ
        ("keep", [0.0, 0.0, 4.0]),
        ("as_theta", [1.0, -2.0, 2.0]),
    ],
)
def test_filter_scaling_bias_modes(bias_mode, expected):
    theta, noise = _theta_and_noise()
    scaled = scale_direction(noise, theta, scaling="filter", bias_mode=bias_mode)
    assert torch.allclose(scaled["bias"], torch.tensor(expected))


@pytest.mark.parametrize("width", [0.2, 1.0, 2.0])
def test_norm_scaling_of_group_vector(width):
    theta, noise = _theta_and_noise()
    scaled = scale_direction(noise, theta, scaling="norm", width=width)
    # ‖θ‖ = √(25 + 1 + 9) = √35 over the whole group.
    assert _flat(scaled).norm().item() == pytest.approx(width * 35**0.5, rel=1e-6)
    # One common factor, so the direction is unchanged.
    assert torch.allclose(_flat(scaled) / _flat(scaled).norm(), _flat(noise) / _flat(noise).norm())


def test_norm_scaling_per_tensor():
    theta, noise = _theta_and_noise()
    scaled = scale_direction(noise, theta, scaling="norm", width=2.0, norm_scope="tensor")
    assert scaled["conv"].norm().item() == pytest.approx(2 * 26**0.5, rel=1e-6)
    assert scaled["bias"].norm().item() == pytest.approx(2 * 3.0, rel=1e-6)


def test_raw_scaling_copies_noise():
    theta, noise = _theta_and_noise()
    scaled = scale_direction(noise, theta, scaling="raw")
    assert all(torch.equal(scaled[key], noise[key]) for key in noise)
    assert scaled["conv"] is not noise["conv"]


def test_invalid_scaling_options_are_rejected():
    theta, noise = _theta_and_noise()
    with pytest.raises(UserInputError, match="invalid scaling 'pca'"):
        scale_direction(noise, theta, scaling="pca")
    with pytest.raises(UserInputError, match="invalid bias_mode 'drop'"):
        scale_direction(noise, theta, bias_mode="drop")
    with pytest.raises(UserInputError, match="invalid width -1"):
        scale_direction(noise, theta, scaling="norm", width=-1)


# ---------------------------------------------------------------------------------------------
# Sign replacement and special directions
# ---------------------------------------------------------------------------------------------


def test_sign_replacement_agrees_on_nonzero_coordinates():
    theta = {"w": torch.tensor([[1.0, -2.0, 0.0], [-0.5, 3.0, 0.0]])}
    noise = {"w": torch.tensor([[-4.0, -1.0, 2.0], [0.5, -3.0, -1.0]])}
    replaced = replace_signs(noise, theta)["w"]
    assert torch.equal(replaced, torch.tensor([[4.0, -1.0, 0.0], [-0.5, 3.0, 0.0]]))
    nonzero = theta["w"] != 0
    assert ssr(replaced[nonzero], theta["w"][nonzero]) == 1.0


def test_sign_replacement_on_model_keeps_magnitudes():
    theta = _params(_tiny_cnn())
    noise = draw_noise("gaussian", {k: v.shape for k, v in theta.items()}, torch.Generator().manual_seed(0))
    replaced = replace_signs(noise, theta)
    assert ssr(_flat(replaced), _flat(theta)) == 1.0
    nonzero = _flat(theta) != 0  # BatchNorm biases start at 0, so their noise becomes 0.
    assert torch.equal(_flat(replaced)[nonzero].abs(), _flat(noise)[nonzero].abs())
    assert (_flat(replaced)[~nonzero] == 0).all()


def test_partial_replacement_changes_exact_count():
    theta = {"w": -torch.ones(10, 10)}
    noise = {"w": torch.ones(10, 10)}
    replaced = replace_signs(noise, theta, ratio=0.37, generator=torch.Generator().manual_seed(0))["w"]
    assert (replaced < 0).sum().item() == 37


def test_sign_agreement_rises_with_ratio():
    theta = _params(_tiny_cnn())
    settings = ValleySettings(noises=["gaussian", "uniform"], num_directions=2, scaling="filter")
    ratios = [0.0, 0.25, 0.5, 0.75, 1.0]
    measured: dict[tuple[str, int], list[float]] = {}
    for spec in iter_ratio_directions(settings, theta, ratios):
        key = (spec.labels["noise"], spec.labels["direction_id"])
        measured.setdefault(key, []).append(ssr(_flat(spec.direction), _flat(theta)))
    for key, values in measured.items():
        # Zero-mean symmetric noise agrees on half the coordinates, and each replaced one agrees.
        expected = [0.5 + 0.5 * ratio for ratio in ratios]
        assert values == pytest.approx(expected, abs=0.05), key
        assert values[-1] == 1.0
        assert all(later > earlier for earlier, later in zip(values, values[1:], strict=False)), key


def test_invalid_ratio_is_rejected():
    with pytest.raises(UserInputError, match="invalid sign-change ratio 1.5"):
        replace_signs({"w": torch.ones(2)}, {"w": torch.ones(2)}, ratio=1.5)
    with pytest.raises(UserInputError, match="invalid ratios '0:2:3'"):
        parse_ratios("0:2:3")
    assert parse_ratios("0:1:5") == [0.0, 0.25, 0.5, 0.75, 1.0]


@pytest.mark.parametrize("name", ["theta_f", "sign", "gaussian_sign"])
def test_sign_consistent_special_directions(name):
    theta = _params(_tiny_cnn())
    direction = special_direction(name, theta, generator=torch.Generator().manual_seed(0))
    assert ssr(_flat(direction), _flat(theta)) == 1.0


def test_centered_sign_direction_uses_tensor_mean():
    theta = {"w": torch.tensor([1.0, 2.0, 6.0])}  # mean 3
    assert torch.equal(special_direction("sign_centered", theta)["w"], torch.tensor([-1.0, -1.0, 1.0]))


def test_theta_0_direction_needs_initial_model():
    theta = {"w": torch.ones(2)}
    with pytest.raises(UserInputError, match="model_init.pt"):
        special_direction("theta_0", theta)
    assert torch.equal(special_direction("theta_0", theta, theta_0={"w": torch.zeros(2)})["w"], torch.zeros(2))


# ---------------------------------------------------------------------------------------------
# Perturbation in place and exact restore
# ---------------------------------------------------------------------------------------------


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def _assert_same_state(model: nn.Module, expected: dict[str, torch.Tensor]) -> None:
    for key, value in model.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_set_point_writes_theta_plus_lambda_direction():
    model = _tiny_cnn()
    names = select_parameters(model, "all")
    theta = _params(model)
    direction = [torch.full_like(theta[name], 0.5) for name in names]
    perturbation = Perturbation(model, names)
    for lam in (1.0, -2.0, 0.0):  # No accumulation: each point starts from θ_f.
        perturbation.set_point(direction, lam)
    named = dict(model.named_parameters())
    assert all(torch.equal(named[name], theta[name]) for name in names)
    perturbation.set_point(direction, -2.0)
    assert torch.allclose(named[names[0]], theta[names[0]] - 1.0)


@pytest.mark.parametrize("bn_mode", ["keep", "recompute"])
def test_model_restored_exactly_after_sweep(bn_mode):
    model = _trained_like(_tiny_cnn())
    model.train()
    before = _state(model)
    settings = ValleySettings(noises=["gaussian", "uniform_pos"], num_directions=1, num_points=5, bn_mode=bn_mode)
    compute_curves(model, None, _data(), settings)
    _assert_same_state(model, before)
    assert model.training


def test_model_restored_after_error():
    model = _trained_like(_tiny_cnn())
    before = _state(model)
    names = select_parameters(model, "all")
    with pytest.raises(RuntimeError, match="stop"), perturbed(model, names) as perturbation:
        perturbation.set_point([torch.ones_like(p) for p in perturbation.parameters], 3.0)
        raise RuntimeError("stop")
    _assert_same_state(model, before)


def test_group_perturbs_only_its_parameters():
    model = _tiny_cnn()
    theta = _params(model)
    names = select_parameters(model, "re:^classifier\\.")
    assert names == ["classifier.weight", "classifier.bias"]
    perturbation = Perturbation(model, names)
    perturbation.set_point([torch.ones_like(p) for p in perturbation.parameters], 1.0)
    for name, parameter in model.named_parameters():
        changed = not torch.equal(parameter, theta[name])
        assert changed == (name in names), name
    perturbation.restore()


@pytest.mark.parametrize(("group", "count"), [("bn_weight", 3), ("bn", 6), ("classifier", 2), ("first_block", 3)])
def test_groups_select_by_name(group, count):
    names = select_parameters(_tiny_cnn(), group)
    assert len(names) == count
    if group.startswith("bn"):
        assert all(".bn." in name for name in names)


def test_unknown_group_is_rejected():
    with pytest.raises(UserInputError):
        compute_curves(_tiny_cnn(), None, _data(), ValleySettings(noises=["gaussian"], group="heads"))


# ---------------------------------------------------------------------------------------------
# BatchNorm modes
# ---------------------------------------------------------------------------------------------


def test_recompute_gives_exact_batch_statistics():
    torch.manual_seed(0)
    model = build_model("mlp_bn_w5", input_shape=(4,), num_classes=2)
    x = torch.randn(50, 4)
    recompute_bn_statistics(model, x, batch_size=64)
    layer = model.features.fc1.linear
    bn = model.features.fc1.bn
    pre = layer(x).detach()
    assert torch.allclose(bn.running_mean, pre.mean(dim=0), atol=1e-6)
    assert torch.allclose(bn.running_var, pre.var(dim=0, unbiased=True), atol=1e-5)
    assert bn.momentum == 0.1  # Restored after the cumulative pass.


def test_keep_mode_uses_theta_f_statistics():
    model = _trained_like(_tiny_cnn())
    data = _data()
    running = {key: value.clone() for key, value in model.state_dict().items() if "running" in key}
    settings = ValleySettings(noises=["gaussian"], num_directions=1, sign_modes=["ordinary"], num_points=3,
                              bn_mode="keep", group="classifier")
    keep = compute_curves(model, None, data, settings)
    recompute = compute_curves(model, None, data, ValleySettings(**{**settings.__dict__, "bn_mode": "recompute"}))

    # At λ = 0 keep mode is θ_f exactly; recompute mode evaluates with statistics of bn_x instead.
    model.eval()
    with torch.no_grad():
        expected = nn.functional.cross_entropy(model(data.eval_x), data.eval_y).item()
    assert keep.loc[keep["lambda"] == 0, "loss"].item() == pytest.approx(expected, rel=1e-6)
    for key, value in model.state_dict().items():
        if "running" in key:
            assert torch.equal(value, running[key])

    recompute_bn_statistics(model, data.bn_x, batch_size=2048)
    with torch.no_grad():
        model.eval()
        expected_recompute = nn.functional.cross_entropy(model(data.eval_x), data.eval_y).item()
    assert recompute.loc[recompute["lambda"] == 0, "loss"].item() == pytest.approx(expected_recompute, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# Grid, curves and summary numbers
# ---------------------------------------------------------------------------------------------


def test_default_grid_has_41_points_and_zero():
    grid = lambda_grid(ValleySettings())
    assert len(grid) == 41
    assert grid[0] == -1.0 and grid[-1] == 1.0
    assert (grid == 0).sum() == 1


def test_grid_adds_missing_zero():
    grid = lambda_grid(ValleySettings(lambda_min=-1, lambda_max=1, num_points=4))
    assert grid.tolist() == pytest.approx([-1.0, -1 / 3, 0.0, 1 / 3, 1.0])


@pytest.mark.parametrize(("key", "value"), [("lambda_min", 0.5), ("lambda_max", -0.1), ("num_points", 2),
                                            ("bn_mode", "update"), ("sign_modes", ["flipped"])])
def test_invalid_settings_are_rejected(key, value):
    with pytest.raises(ConfigError, match=f"invalid value {key}="):
        ValleySettings(**{key: value})


def test_summary_numbers_by_hand():
    lambdas = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    errors = np.array([0.9, 0.3, 0.1, 0.15, 0.5])
    numbers = summarize_curve(lambdas, errors, threshold=0.1)
    assert numbers["error_at_zero"] == 0.1
    assert numbers["mean_error_pos"] == pytest.approx(0.325)
    assert numbers["mean_error_neg"] == pytest.approx(0.6)
    assert numbers["asymmetry"] == pytest.approx(0.275)
    assert numbers["threshold"] == pytest.approx(0.2)
    assert numbers["half_width_pos"] == 1.0  # 0.15 <= 0.2 < 0.5
    assert numbers["half_width_neg"] == 0.0  # 0.3 > 0.2 at the first step


def test_absolute_threshold_and_uncrossed_side():
    lambdas = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    errors = np.array([0.2, 0.1, 0.0, 0.05, 0.6])
    numbers = summarize_curve(lambdas, errors, threshold=0.25, threshold_kind="absolute")
    assert numbers["half_width_neg"] == 1.0  # Never crossed: the grid end.
    assert numbers["half_width_pos"] == 0.5


def test_curves_are_tidy_and_paired():
    model = _trained_like(_tiny_cnn())
    settings = ValleySettings(noises=["rademacher", "sign"], num_directions=2, num_points=5)
    curves = compute_curves(model, None, _data(), settings)
    assert list(curves.columns) == ["noise", "kind", "direction_id", "sign_consistent", "ssr", "lambda",
                                    "error", "loss"]
    # rademacher: 2 directions × 2 sign modes; sign: 1 direction × 2 sign modes; 5 points each.
    assert len(curves) == (4 + 2) * 5
    consistent = curves[curves["sign_consistent"]]
    assert (consistent["ssr"] == 1.0).all()
    at_zero = curves[curves["lambda"] == 0]
    assert at_zero["error"].nunique() == 1  # Every curve passes through θ_f.


# ---------------------------------------------------------------------------------------------
# Command line and study files
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A hand-made central run directory: synthetic data, an untrained mlp_bn, θ_0 and θ_f."""
    config = Config(data=DataConfig(dataset="synthetic"), model=ModelConfig(name="mlp_bn_w8"))
    folder = tmp_path / "synthetic-run"
    folder.mkdir()
    (folder / CONFIG_FILE).write_text(config.to_yaml())
    torch.manual_seed(0)
    model = build_model("mlp_bn_w8", input_shape=(1, 8, 8), num_classes=10)
    torch.save(model.state_dict(), folder / INITIAL_MODEL_FILE)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1)
    torch.save(model.state_dict(), folder / MODEL_FILE)
    return folder


def test_cli_valley_writes_outputs(run_dir, tmp_path, capsys):
    output = tmp_path / "out"
    status = main(["valley", str(run_dir), "--noises", "gaussian,uniform_pos,theta_0", "--num-directions", "2",
                   "--num-points", "5", "--output-dir", str(output)])
    assert status == 0
    (folder,) = output.iterdir()
    assert folder.name.startswith("synthetic-run-valley-")
    curves = pd.read_csv(folder / "curves.csv")
    assert set(curves["noise"]) == {"gaussian", "uniform_pos", "theta_0"}
    record = json.loads((folder / "valley.json").read_text())
    assert record["settings"]["bn_mode"] == "keep"
    assert len(record["summary"]) == 6
    assert (folder / "curves_error.png").is_file() and (folder / "curves_loss.png").is_file()
    assert "results in" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--noises", "pink"], "unknown noise 'pink'"),
        (["--group", "heads"], "heads"),
        (["--lambda-min", "0.2"], "lambda_min=0.2"),
    ],
)
def test_cli_bad_input_exits_2_and_writes_nothing(run_dir, tmp_path, capsys, arguments, message):
    output = tmp_path / "out"
    assert main(["valley", str(run_dir), *arguments, "--output-dir", str(output)]) == 2
    # INFO lines (such as the dataset load) also go to standard error; the error is one line.
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fedsign valley: error")]
    assert len(errors) == 1
    assert message in errors[0]
    assert not output.exists() or not any(output.iterdir())


def test_cli_unknown_scaling_exits_2(run_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["valley", str(run_dir), "--scaling", "pca", "--output-dir", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "invalid choice: 'pca'" in capsys.readouterr().err


def test_cli_missing_model_exits_2(tmp_path, capsys):
    assert main(["valley", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "out")]) == 2
    assert "model or run directory not found" in capsys.readouterr().err


def test_cli_sweep_reports_rising_agreement(run_dir, tmp_path):
    output = tmp_path / "out"
    assert main(["valley-sweep", str(run_dir), "--ratios", "0,0.5,1", "--noises", "gaussian",
                 "--num-directions", "1", "--num-points", "3", "--output-dir", str(output)]) == 0
    (folder,) = output.iterdir()
    table = pd.read_csv(folder / "summary.csv")
    assert table["ratio"].tolist() == [0.0, 0.5, 1.0]
    assert table["ssr_mean"].is_monotonic_increasing
    assert table["ssr_mean"].iloc[-1] == 1.0
    assert (folder / "sweep.png").is_file()


def test_study_file_resolves_variants(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text(
        "study:\n  base: {data: {dataset: synthetic}, model: {name: mlp_bn_w8}, central: {epochs: 1}}\n"
        "  factor: model.bn_init\n  values: [ones, uniform, gaussian]\n  seeds: [0, 1]\n"
        "valley:\n  noises: [gaussian]\n"
    )
    study_file, runs = load_study(study, ["valley.num_directions=4"])
    assert study_file.study.name == "study"
    assert study_file.valley.num_directions == 4
    assert [(run.label, run.seed) for run in runs] == [
        ("ones", 0), ("ones", 1), ("uniform", 0), ("uniform", 1), ("gaussian", 0), ("gaussian", 1)]
    assert runs[2].config.model.bn_init == "uniform"
    assert runs[2].config.central.epochs == 1


def test_study_file_errors_name_the_key(tmp_path):
    study = tmp_path / "bad.yaml"
    study.write_text("study:\n  factor: model.bn_init\n  values: [ones, zeros]\nvalley: {}\n")
    with pytest.raises(ConfigError, match="model.bn_init='zeros'"):
        load_study(study)
    study.write_text("study:\n  factor: model.bn_init\n  values: [ones]\nvalley:\n  noises: [pink]\n")
    with pytest.raises(UserInputError, match="unknown noise 'pink'"):
        load_study(study)


def test_cli_study_trains_then_reuses(tmp_path, caplog):
    study = tmp_path / "tiny.yaml"
    study.write_text(
        "study:\n  base: {data: {dataset: synthetic}, model: {name: mlp_bn_w8}, central: {epochs: 1}}\n"
        "  factor: model.bn_init\n  values: [ones, gaussian]\n"
        "valley:\n  noises: [uniform_pos]\n  num_directions: 1\n  num_points: 3\n"
    )
    output = tmp_path / "out"
    assert main(["valley-study", str(study), "--output-dir", str(output)]) == 0
    table = pd.read_csv(output / "tiny" / "summary.csv")
    assert sorted(table["variant"].unique()) == ["gaussian", "ones"]
    assert (output / "tiny" / "study_error.png").is_file()
    with caplog.at_level(logging.INFO, logger="fedsign"):
        assert main(["valley-study", str(study), "--output-dir", str(output)]) == 0
    assert caplog.text.count("reusing trained model") == 2
