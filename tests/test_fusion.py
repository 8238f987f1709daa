"""Tests of per-group SSR, interpolation, BatchNorm recompute, correlations and the FL tie-in."""

import json
import math
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from scipy import stats
from torch import nn

from fedsign.cli import main
from fedsign.config import Config, DataConfig, FederationConfig, ModelConfig, from_dict
from fedsign.datasets import load_dataset
from fedsign.errors import ConfigError, UserInputError
from fedsign.federation import build_global_model
from fedsign.fusion import (
    INTERPOLATION_CSV,
    INTERPOLATION_JSON,
    INTERPOLATION_PLOT,
    SSR_CSV,
    InterpolationSettings,
    ModelRef,
    interpolation_curve,
    lambda_grid,
    parse_model_ref,
    recompute_bn_statistics,
    round_model_refs,
    run_ssr,
    set_interpolated_state,
    summarize_curve,
)
from fedsign.fusion_study import (
    CORRELATIONS_CSV,
    PAIRS_CSV,
    SCATTER_PLOT,
    SSR_EPOCHS_CSV,
    FusionStudyConfig,
    correlate,
    load_study_config,
    run_study,
)
from fedsign.results import CONFIG_FILE, INITIAL_MODEL_FILE, MODEL_FILE
from fedsign.runs import client_model_path
from fedsign.signs import ssr, ssr_by_group, ssr_groups, ssr_table



class TinyNet(nn.Module):
    """Linear(2→3, no bias) → BatchNorm1d(3) → ReLU, then a Linear(3→2) classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(OrderedDict(
            linear=nn.Linear(2, 3, bias=False), bn=nn.BatchNorm1d(3), relu=nn.ReLU(),
        ))
        self.classifier = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _tiny_state(linear, bn_weight, bn_bias, classifier_weight, classifier_bias, running_mean=(0.0, 0.0, 0.0)):
    return {
        "features.linear.weight": torch.tensor(linear, dtype=torch.float32),
        "features.bn.weight": torch.tensor(bn_weight, dtype=torch.float32),
        "features.bn.bias": torch.tensor(bn_bias, dtype=torch.float32),
        "features.bn.running_mean": torch.tensor(running_mean, dtype=torch.float32),
        "features.bn.running_var": torch.ones(3),
        "features.bn.num_batches_tracked": torch.tensor(0),
        "classifier.weight": torch.tensor(classifier_weight, dtype=torch.float32),
        "classifier.bias": torch.tensor(classifier_bias, dtype=torch.float32),
    }


# ---------------------------------------------------------------------------------------
# SSR
# ---------------------------------------------------------------------------------------


def test_ssr_hand_computed_with_zeros():
    u = torch.tensor([1.0, -2.0, 0.0, 0.0, 3.0])
    v = torch.tensor([2.0, -1.0, 0.0, 5.0, -3.0])
    # Agree: +/+, -/-, 0/0. Disagree: 0/+ and +/-.
    assert ssr(u, v) == pytest.approx(3 / 5)
    assert ssr(u, u) == 1.0
    assert ssr(torch.zeros(4), torch.zeros(4)) == 1.0


def test_ssr_groups_of_tiny_model():
    groups = ssr_groups(TinyNet())
    assert list(groups) == ["all", "bn_weight", "bn_bias", "classifier", "other_weight"]
    assert groups["classifier"] == ["classifier.weight", "classifier.bias"]
    assert groups["other_weight"] == ["features.linear.weight"]
    assert "features.bn.running_mean" not in groups["all"]
    assert "features.bn.num_batches_tracked" not in groups["all"]


def test_ssr_by_group_hand_computed():
    a = _tiny_state([[1, -1], [2, 0], [3, 3]], [1, 1, 1], [0, 0, 0], [[1, 1, 1], [-1, -1, -1]], [0.5, -0.5])
    b = _tiny_state([[1, 1], [2, 0], [-3, 3]], [1, -1, 1], [0, 0.1, -0.1], [[1, 1, 1], [-1, 1, -1]], [0.5, 0.5],
                    running_mean=(-5.0, -5.0, -5.0))
    values = ssr_by_group(a, b, ssr_groups(TinyNet()))

    assert values["other_weight"] == pytest.approx(4 / 6)  # (1,-1)→(1,1) and 3→-3 flip
    assert values["bn_weight"] == pytest.approx(2 / 3)
    assert values["bn_bias"] == pytest.approx(1 / 3)  # only the pair of zeros agrees
    assert values["classifier"] == pytest.approx(6 / 8)  # one weight and one bias flip
    # 4 + 2 + 1 + 6 agreeing of 20 parameters; the running mean, all flipped, does not count.
    assert values["all"] == pytest.approx(13 / 20)


def test_ssr_groups_name_pattern():
    groups = ssr_groups(TinyNet(), ["re:^features\\.bn\\."])
    assert groups["re:^features\\.bn\\."] == ["features.bn.weight", "features.bn.bias"]
    with pytest.raises(UserInputError, match="unknown parameter group"):
        ssr_groups(TinyNet(), ["bn_weights"])


def test_ssr_table_rows():
    state = _tiny_state([[1, 1], [1, 1], [1, 1]], [1, 1, 1], [1, 1, 1], [[1, 1, 1], [1, 1, 1]], [1, 1])
    flipped = {name: -tensor if tensor.is_floating_point() else tensor for name, tensor in state.items()}
    rows = ssr_table({"I": state, "A": state, "B": flipped}, [("I", "A"), ("A", "B")], {"all": ssr_groups(TinyNet())["all"]})
    assert [(row["pair"], row["ssr"]) for row in rows] == [("I-A", 1.0), ("A-B", 0.0)]
    assert rows[0]["coordinates"] == 20


# ---------------------------------------------------------------------------------------
# Interpolation
# ---------------------------------------------------------------------------------------


def _trained_pair() -> tuple[nn.Module, dict, dict, torch.Tensor, torch.Tensor]:
    """Two differently trained TinyNets with non-default BatchNorm buffers, and data."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=generator)
    y = (x[:, 0] > 0).long()
    states = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = TinyNet()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(5):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        states.append({name: tensor.clone() for name, tensor in model.state_dict().items()})
    return TinyNet(), states[0], states[1], x, y


@pytest.mark.parametrize("lam, endpoint", [(0.0, 0), (1.0, 1)])
def test_interpolation_endpoints_exact(lam, endpoint):
    model, state_a, state_b, _, _ = _trained_pair()
    set_interpolated_state(model, state_a, state_b, lam)
    expected = (state_a, state_b)[endpoint]
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, expected[name]), name


def test_interpolation_midpoint_is_mean():
    model, state_a, state_b, _, _ = _trained_pair()
    set_interpolated_state(model, state_a, state_b, 0.5)
    state = model.state_dict()
    assert torch.allclose(state["classifier.weight"], (state_a["classifier.weight"] + state_b["classifier.weight"]) / 2)
    assert torch.allclose(state["features.bn.running_var"],
                          (state_a["features.bn.running_var"] + state_b["features.bn.running_var"]) / 2)


def test_interpolation_curve_endpoints_match_models():
    model, state_a, state_b, x, y = _trained_pair()
    settings = InterpolationSettings(lambdas=lambda_grid(5), bn_mode="interpolate")
    rows = interpolation_curve(model, state_a, state_b, settings=settings, eval_x=x, eval_y=y)
    for lam, state in ((0.0, state_a), (1.0, state_b)):
        reference = TinyNet()
        reference.load_state_dict(state)
        reference.eval()
        with torch.no_grad():
            expected_loss = nn.functional.cross_entropy(reference(x), y).item()
        row = next(row for row in rows if row["lambda"] == lam)
        assert row["loss"] == pytest.approx(expected_loss, rel=1e-6)


def test_extrapolated_running_var_not_negative():
    model, state_a, state_b, _, _ = _trained_pair()
    state_b = dict(state_b, **{"features.bn.running_var": state_a["features.bn.running_var"] * 10})
    set_interpolated_state(model, state_a, state_b, -1.0)
    assert (model.state_dict()["features.bn.running_var"] >= 0).all()


def test_bn_recompute_matches_update_bn():
    model, state_a, _, x, _ = _trained_pair()
    model.load_state_dict(state_a)
    reference = TinyNet()
    reference.load_state_dict(state_a)

    recompute_bn_statistics(model, x, batch_size=16)
    loader = torch.utils.data.DataLoader(x, batch_size=16)
    torch.optim.swa_utils.update_bn(loader, reference)

    for name in ("features.bn.running_mean", "features.bn.running_var", "features.bn.num_batches_tracked"):
        assert torch.allclose(model.state_dict()[name], reference.state_dict()[name]), name
    assert model.features.bn.momentum == 0.1  # restored after the pass


def test_bn_recompute_one_batch_equals_batch_statistics():
    layer = nn.BatchNorm1d(2)
    layer.running_mean.fill_(7.0)
    x = torch.tensor([[1.0, 10.0], [3.0, 20.0], [5.0, 30.0], [7.0, 40.0]])
    recompute_bn_statistics(layer, x, batch_size=4)
    assert torch.allclose(layer.running_mean, torch.tensor([4.0, 25.0]))
    # PyTorch stores the unbiased variance in running_var.
    assert torch.allclose(layer.running_var, x.var(dim=0, unbiased=True))


def test_lambda_grid_contains_endpoints_and_midpoint():
    assert lambda_grid(3) == (0.0, 0.5, 1.0)
    grid = lambda_grid(4, -0.5, 1.5)
    assert {0.0, 0.5, 1.0} <= set(grid)
    assert min(grid) == -0.5
    assert max(grid) == 1.5


@pytest.mark.parametrize("points, low, high", [(1, 0.0, 1.0), (5, 0.2, 1.0), (5, 0.0, 0.9), (5, 0.0, math.inf)])
def test_lambda_grid_rejects_bad_range(points, low, high):
    with pytest.raises(UserInputError):
        lambda_grid(points, low, high)


def test_summarize_curve_hand_computed():
    rows = [
        {"lambda": 0.0, "accuracy": 0.9, "loss": 0.2},
        {"lambda": 0.25, "accuracy": 0.6, "loss": 0.9},
        {"lambda": 0.5, "accuracy": 0.7, "loss": 0.8},
        {"lambda": 1.0, "accuracy": 0.8, "loss": 0.4},
        {"lambda": 1.5, "accuracy": 0.1, "loss": 5.0},  # extrapolated: ignored by the summary
    ]
    summary = summarize_curve(rows)
    assert summary["endpoint_mean_accuracy"] == pytest.approx(0.85)
    assert summary["accuracy_gap"] == pytest.approx(0.15)
    assert summary["accuracy_gap_max"] == pytest.approx(0.25)
    # Line between endpoint losses at 0.25 is 0.25, at 0.5 it is 0.3: excess 0.65 and 0.5.
    assert summary["loss_barrier"] == pytest.approx(0.65)
    assert summary["barrier_lambda"] == 0.25


def test_parse_model_ref_forms():
    assert parse_model_ref("runs/x") == ModelRef(Path("runs/x"))
    assert parse_model_ref("runs/x@init") == ModelRef(Path("runs/x"), which="init")
    assert parse_model_ref("runs/x@epoch=3") == ModelRef(Path("runs/x"), epoch=3)
    assert parse_model_ref("runs/x@round=5,client=2") == ModelRef(Path("runs/x"), round_number=5, client=2)
    assert parse_model_ref("a@b/run") == ModelRef(Path("a@b/run"))
    for bad in ("runs/x@client=2", "runs/x@round=a", "runs/x@epoch=1,round=2", "runs/x@best", "runs/x@round=-1"):
        with pytest.raises(UserInputError):
            parse_model_ref(bad)


# ---------------------------------------------------------------------------------------
# Correlation
# ---------------------------------------------------------------------------------------


def test_correlate_known_case():
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    y = [2.0, 1.0, 4.0, 3.0, 5.0]
    result = correlate(x, y)
    # Both coefficients are 0.8 (ranks equal the values); p from the t distribution, n - 2 = 3.
    t = 0.8 * math.sqrt(3) / math.sqrt(1 - 0.8**2)
    expected_p = 2 * stats.t.sf(t, df=3)
    assert result["pearson_r"] == pytest.approx(0.8)
    assert result["spearman_rho"] == pytest.approx(0.8)
    assert result["pearson_p"] == pytest.approx(expected_p)
    assert expected_p == pytest.approx(0.1041, abs=1e-4)
    assert result["n"] == 5


def test_correlate_linear_and_undefined():
    assert correlate([1.0, 2.0, 3.0], [-1.0, -3.0, -5.0])["pearson_r"] == pytest.approx(-1.0)
    assert math.isnan(correlate([1.0, 2.0], [1.0, 2.0])["pearson_r"])
    assert math.isnan(correlate([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])["spearman_rho"])


# ---------------------------------------------------------------------------------------
# FL tie-in on a hand-built federated run directory, and the CLI
# ---------------------------------------------------------------------------------------


def _fake_federated_run(root: Path) -> Path:
    """A run directory as `fedsign run` writes it, with client models kept for round 2 of 2."""
    config = Config(
        data=DataConfig(dataset="synthetic", num_partitions=3),
        model=ModelConfig(name="mlp_bn"),
        federation=FederationConfig(rounds=2, keep_client_models=[2]),
    )
    run_dir = root / "fedrun"
    run_dir.mkdir()
    (run_dir / CONFIG_FILE).write_text(config.to_yaml())
    splits = load_dataset("synthetic", seed=config.seed)
    model = build_global_model(config.model, splits, config.seed)
    torch.save(model.state_dict(), run_dir / INITIAL_MODEL_FILE)
    states = []
    for client in range(3):
        generator = torch.Generator().manual_seed(client)
        state = {name: tensor + 0.05 * torch.randn(tensor.shape, generator=generator)
                 if tensor.is_floating_point() else tensor for name, tensor in model.state_dict().items()}
        path = run_dir / client_model_path(2, client)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, path)
        states.append(state)
    average = {name: sum(state[name] for state in states) / 3 if states[0][name].is_floating_point()
               else states[0][name] for name in states[0]}
    torch.save(average, run_dir / MODEL_FILE)
    return run_dir


def test_round_model_refs_of_fake_run(tmp_path, caplog):
    run_dir = _fake_federated_run(tmp_path)
    refs = round_model_refs(run_dir, 2)
    # No checkpoint of round 1 was saved; round 2 is the last round, so it is the final model.
    assert list(refs) == ["global_end", "client_0", "client_1", "client_2"]
    assert "global_start of round 2 is not saved" in caplog.text
    rows = run_ssr(refs, reference="global_end")
    pairs = {row["pair"] for row in rows}
    assert {"global_end-client_0", "client_0-client_1"} <= pairs
    with pytest.raises(UserInputError, match="rounds kept: 2"):
        round_model_refs(run_dir, 1)
    with pytest.raises(UserInputError, match="kept clients"):
        round_model_refs(run_dir, 2, [7])


def test_cli_interpolate_fl_clients(tmp_path, capsys):
    run_dir = _fake_federated_run(tmp_path)
    output_dir = tmp_path / "out"
    status = main(["interpolate", f"{run_dir}@round=2,client=0", f"{run_dir}@round=2,client=1",
                   "--init", f"{run_dir}@round=0", "--points", "5", "--output-dir", str(output_dir)])
    assert status == 0
    for name in (INTERPOLATION_CSV, INTERPOLATION_JSON, INTERPOLATION_PLOT, SSR_CSV):
        assert (output_dir / name).is_file(), name
    result = json.loads((output_dir / INTERPOLATION_JSON).read_text())
    assert result["settings"]["bn_mode"] == "recompute"
    assert {row["pair"] for row in result["ssr"]} == {"I-A", "I-B", "A-B"}
    assert "loss barrier" in capsys.readouterr().out


def test_cli_ssr_round(tmp_path, capsys):
    run_dir = _fake_federated_run(tmp_path)
    assert main(["ssr", str(run_dir), "--round", "2", "--clients", "0,1", "--output-dir", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "client_0-client_1" in out
    assert (tmp_path / "s" / SSR_CSV).is_file()


@pytest.mark.parametrize("arguments, message", [
    (["interpolate", "{run}", "{run}@round=1,client=0"], "kept no client models for round 1"),
    (["interpolate", "{run}", "{run}", "--lambda-min", "0.5"], "invalid λ range"),
    (["interpolate", "{run}", "{run}", "--group", "heads"], "unknown parameter group"),
    (["interpolate", "{run}/missing", "{run}"], "run directory not found"),
    (["ssr", "{run}", "--round", "3"], "kept no client models for round 3"),
])
def test_cli_bad_input_exit_2_nothing_written(tmp_path, capsys, arguments, message):
    run_dir = _fake_federated_run(tmp_path)
    output_dir = tmp_path / "out"
    argv = [item.format(run=run_dir) for item in arguments]
    if argv[0] == "interpolate":
        argv += ["--output-dir", str(output_dir)]
    capsys.readouterr()  # Drop the log lines of building the run directory.
    assert main(argv) == 2
    # INFO lines may precede the error, for example when model A loaded before B failed.
    error_lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(error_lines) == 1
    assert message in error_lines[0]
    assert not output_dir.exists()


def test_cli_unwritable_output_dir(tmp_path, capsys):
    run_dir = _fake_federated_run(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["interpolate", str(run_dir), str(run_dir), "--output-dir", str(blocker / "out")]) == 2
    assert "choose another with --output-dir" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# Fusion study
# ---------------------------------------------------------------------------------------


def _tiny_study(**overrides) -> FusionStudyConfig:
    values = {
        "name": "tiny", "dataset": "synthetic", "model": "mlp_bn", "workers": 1,
        "pretrain": {"classes": [0, 1, 2], "epochs": 1},
        "interpolation": {"points": 3, "bn_examples": 64},
        "conditions": [
            {"name": "shared", "init": "shared", "epochs": 2, "replicates": 2},
            {"name": "separate", "init": "separate", "epochs": 1, "replicates": 1},
            {"name": "pre", "init": "pretrained", "epochs": 1, "replicates": 1, "data_split": "halves"},
        ],
    }
    values.update(overrides)
    return from_dict(FusionStudyConfig, values)


def test_fusion_study_writes_tables_and_reuses_pairs(tmp_path):
    config = _tiny_study()
    first = run_study(config, tmp_path)
    study_dir = tmp_path / "tiny"
    assert (first["trained"], first["reused"]) == (4, 0)
    for name in (PAIRS_CSV, SSR_EPOCHS_CSV, CORRELATIONS_CSV, SCATTER_PLOT):
        assert (study_dir / name).is_file(), name

    import pandas as pd

    pairs = pd.read_csv(study_dir / PAIRS_CSV)
    assert len(pairs) == 4
    shared = pairs[pairs["condition"] == "shared"]
    separate = pairs[pairs["condition"] == "separate"]
    assert (shared["ssr_ab"] > separate["ssr_ab"].max()).all()
    epochs = pd.read_csv(study_dir / SSR_EPOCHS_CSV)
    start = epochs[(epochs["condition"] == "shared") & (epochs["epoch"] == 0) & (epochs["comparison"] == "AB")]
    assert (start["ssr"] == 1.0).all()  # a shared initialisation agrees with itself

    second = run_study(config, tmp_path)
    assert (second["trained"], second["reused"]) == (0, 4)


def test_study_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unique condition names"):
        _tiny_study(conditions=[{"name": "a"}, {"name": "a"}])
    with pytest.raises(ConfigError, match="conditions\\[a\\].init"):
        _tiny_study(conditions=[{"name": "a", "init": "random"}])
    with pytest.raises(ConfigError, match="unknown key 'conditions\\[0\\].epoch'"):
        from_dict(FusionStudyConfig, {"conditions": [{"name": "a", "epoch": 3}]})
    path = tmp_path / "study.yaml"
    path.write_text("conditions: [{name: a}]\n")
    assert load_study_config(path, ["workers=1"]).workers == 1


def test_recompute_mode_keeps_endpoint_parameters():
    model, state_a, state_b, x, y = _trained_pair()
    settings = InterpolationSettings(lambdas=lambda_grid(3), bn_mode="recompute", bn_batch_size=16)
    rows = interpolation_curve(model, state_a, state_b, settings=settings, eval_x=x, eval_y=y, bn_x=x)
    # The last point is λ = 1: parameters equal B's, buffers are the recomputed ones.
    assert rows[-1]["lambda"] == 1.0
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, state_b[name]), name
    reference = TinyNet()
    reference.load_state_dict(state_b)
    torch.optim.swa_utils.update_bn(torch.utils.data.DataLoader(x, batch_size=16), reference)
    assert torch.allclose(model.features.bn.running_mean, reference.features.bn.running_mean)


def test_fusion_study_failed_pair_keeps_others(tmp_path, monkeypatch):
    import fedsign.fusion_study as fusion_study
    from fedsign.engine import RunFailedError

    original = fusion_study.train_pair

    def failing_for_separate(spec):
        if spec.init == "separate":
            raise RuntimeError("injected failure")
        return original(spec)

    monkeypatch.setattr(fusion_study, "train_pair", failing_for_separate)
    with pytest.raises(RunFailedError, match="1 of 4 pairs failed"):
        run_study(_tiny_study(), tmp_path)
    assert len(list((tmp_path / "tiny" / "pairs").glob("*.json"))) == 3
