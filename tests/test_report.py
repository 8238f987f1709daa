"""Tests of the comparison report on hand-made run directories (no simulation)."""

import pandas as pd
import pytest

from fedsign.cli import main
from fedsign.config import load_config
from fedsign.errors import UserInputError
from fedsign.report import find_run_dirs, method_labels, write_report
from fedsign.results import RunRecorder


def make_run(output, accuracies: list[float], *overrides: str, status: str = "completed"):
    """Write a run directory whose global model had ``accuracies`` in rounds 1, 2, ..."""
    config = load_config(None, ["data.dataset=digits", "federation.rounds=" + str(len(accuracies)), *overrides])
    run_dir = output / config.run_name()
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(config.to_yaml())
    recorder = RunRecorder(run_dir, config)
    recorder.record(0, "server", {"accuracy": 0.1, "loss": 2.3})
    for server_round, accuracy in enumerate(accuracies, start=1):
        recorder.record(server_round, "server", {"accuracy": accuracy, "loss": 1.0})
        recorder.record(server_round, "train", {"ssr_pairwise_mean": 0.9, "ssr_client_global_mean": 0.95})
    recorder.finish(status=status)
    return run_dir


@pytest.fixture
def grid(tmp_path):
    """Two methods × two alphas × two seeds, plus one failed run."""
    output = tmp_path / "grid"
    values = {
        ("fedavg", 0.1): ([0.5, 0.6, 0.7], [0.5, 0.6, 0.5]),
        ("fedavg", 0.5): ([0.8, 0.8, 0.8], [0.8, 0.8, 0.9]),
        ("fedsign", 0.1): ([0.6, 0.7, 0.8], [0.6, 0.7, 0.6]),
        ("fedsign", 0.5): ([0.7, 0.8, 0.7], [0.7, 0.8, 0.8]),
    }
    for (name, alpha), per_seed in values.items():
        for seed, accuracies in enumerate(per_seed):
            make_run(output, accuracies, f"strategy.name={name}", f"data.alpha={alpha}", f"seed={seed}")
    make_run(output, [0.9], "strategy.name=fedprox", status="failed")
    return output


def test_table_mean_std_by_hand(grid, tmp_path):
    files = write_report([grid], tmp_path / "report", last_k=2)
    table = pd.read_csv(files.table)
    cell = table[(table.method == "fedavg") & (table["data.alpha"] == 0.1)].set_index("metric")
    # Final: seeds 0.7 and 0.5 -> mean 0.6, sample std 0.1414. Last 2 rounds: 0.65 and 0.55.
    assert cell.loc["final", "mean"] == pytest.approx(0.6)
    assert cell.loc["final", "std"] == pytest.approx(0.1414214, rel=1e-5)
    assert cell.loc["last_k", "mean"] == pytest.approx(0.6)
    assert cell.loc["last_k", "std"] == pytest.approx(0.0707107, rel=1e-5)
    assert cell.loc["final", "seeds"] == 2
    assert set(table.method) == {"fedavg", "fedsign"}  # the failed fedprox run is skipped


def test_markdown_has_columns_per_alpha_and_difference(grid, tmp_path):
    files = write_report([grid], tmp_path / "report", last_k=2)
    text = files.markdown.read_text()
    assert "| method | data.alpha=0.1 | data.alpha=0.5 |" in text
    assert "| fedavg | 60.00 ± 7.07 (2) | **82.50 ± 3.54 (2)** |" in text
    # fedsign last-2 mean at α=0.1: (0.75 + 0.65)/2 = 70.00, the best of that column.
    assert "**70.00 ± 7.07 (2)**" in text
    # Difference to FedAvg: α=0.1: 70.00 − 60.00; α=0.5: (0.75 + 0.8)/2 = 77.50 − 82.50.
    assert "| fedsign | +10.00 | -5.00 |" in text


def test_report_writes_curves_and_plots(grid, tmp_path):
    files = write_report([grid], tmp_path / "report", last_k=2)
    curves = pd.read_csv(files.curves)
    assert {"accuracy", "ssr_pairwise_mean"} <= set(curves.metric)
    assert len(curves[(curves.metric == "accuracy") & (curves["round"] > 0)]) == 8 * 3
    assert [path.name for path in files.plots] == ["accuracy_digits.png", "sign_diagnostics_digits.png"]
    assert all(path.stat().st_size > 0 for path in files.plots)


def test_labels_name_the_varying_keys():
    configs = [load_config(None, ["strategy.name=fedsign", f"sign.beta={beta}", f"seed={seed}"])
               for beta in (0.01, 0.1) for seed in (0, 1)]
    configs.append(load_config(None, ["strategy.name=fedavg", "sign.beta=0.5", "data.alpha=0.1"]))
    configs.append(load_config(None, ["strategy.name=fedsign", "strategy.objectives=[prox]"]))
    labels = method_labels(configs, "data.alpha")
    assert labels[:4] == ["fedsign (sign.beta=0.01, strategy.objectives=[])"] * 2 + \
        ["fedsign (sign.beta=0.1, strategy.objectives=[])"] * 2
    assert labels[4] == "fedavg"
    assert labels[5] == "fedsign+prox (sign.beta=0.01, strategy.objectives=['prox'])"


def test_single_run_directory_is_accepted(grid, tmp_path):
    (run_dir,) = [p for p in grid.iterdir() if "fedsign-dir0.5-s1" in p.name]
    assert find_run_dirs([run_dir]) == [run_dir]
    files = write_report([run_dir], tmp_path / "one", last_k=1)
    assert "80.00 (1)" in files.markdown.read_text()  # one seed: no std


def test_bad_report_input_is_user_error(grid, tmp_path):
    with pytest.raises(UserInputError, match="no completed run directory"):
        write_report([tmp_path], tmp_path / "out")
    with pytest.raises(UserInputError, match="run directory not found"):
        write_report([tmp_path / "missing"], tmp_path / "out")
    with pytest.raises(UserInputError, match="--column"):
        write_report([grid], tmp_path / "out", column="data.nothing")
    with pytest.raises(UserInputError, match="--last-k"):
        write_report([grid], tmp_path / "out", last_k=0)


def test_report_command_prints_table(grid, tmp_path, capsys):
    status = main(["report", str(grid), "--output-dir", str(tmp_path / "cli"), "--last-k", "2", "--band", "sd"])
    assert status == 0
    out = capsys.readouterr().out
    assert "| fedsign |" in out
    assert (tmp_path / "cli" / "report.md").is_file()


def test_report_command_bad_folder_exits_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing"), "--output-dir", str(tmp_path / "out")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_central_runs_are_skipped(tmp_path, caplog):
    from fedsign.report import find_run_dirs

    for name, first_column in (("federated", "round"), ("central", "epoch")):
        run_dir = tmp_path / name
        run_dir.mkdir()
        (run_dir / "summary.json").write_text('{"status": "completed"}')
        (run_dir / "metrics.csv").write_text(f"{first_column},scope,metric,value\n1,server,accuracy,0.5\n")
    found = find_run_dirs([tmp_path])
    assert found == [tmp_path / "federated"]
    assert "skipped 1 central training runs" in caplog.text
