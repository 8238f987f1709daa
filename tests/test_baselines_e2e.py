"""End-to-end runs of every baseline algorithm on Flower's Ray simulation runtime.

One ``fedsign grid`` subprocess runs all algorithms (2 rounds, 4 clients of the bundled
digits data, a CNN with BatchNorm), so Ray starts once per run and the file stays at a
few minutes. A second subprocess runs a user strategy defined in a file outside the
package, loaded by import path, with an extra client objective added by config.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.ray

SMALL = ["data.num_partitions=4", "federation.rounds=2", "model.name=cnn_bn", "train.local_epochs=1",
         "engine.timeout_s=300"]
ALGORITHMS = ["fedprox", "moon", "feddyn", "scaffold", "fedpan", "sign_election", "fedadam", "krum"]

USER_STRATEGY = '''
from fedsign.aggregation import average_states
from strategies.fedavg import FedAvg


class DampedAverage(FedAvg):
    """Moves the parameters a fraction ``step`` of the way to the clients' average."""

    def __init__(self, *, step: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.step = step

    def aggregate_states(self, server_round, global_state, client_states, num_examples):
        new_state = average_states(client_states, self.aggregation_weights(num_examples))
        for name in self.parameter_names:
            new_state[name] = global_state[name] + self.step * (new_state[name] - global_state[name])
        return new_state
'''


def fedsign(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "fedsign.cli", *args]
    environment = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment)


@pytest.fixture(scope="module")
def grid_output(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("baselines")
    result = fedsign("grid", "configs/default.yaml", *SMALL, "--sweep", "strategy=" + ",".join(ALGORITHMS),
                     "--seeds", "0", "--output-dir", str(output))
    assert result.returncode == 0, result.stderr[-4000:]
    return output


def summaries(output: Path) -> dict[str, dict]:
    found = {}
    for summary_file in output.glob("*/summary.json"):
        summary = json.loads(summary_file.read_text())
        found[summary["strategy"]] = summary
    return found


def test_every_algorithm_completes(grid_output):
    found = summaries(grid_output)
    assert sorted(found) == sorted(ALGORITHMS)
    for name, summary in found.items():
        assert summary["status"] == "completed", name
        assert summary["rounds_completed"] == 2, name
        assert summary["final_accuracy"] > 0.2, name  # well above chance (0.1) after 2 rounds


def test_regularised_algorithms_report_their_term(grid_output):
    for name in ("fedprox", "moon", "feddyn"):
        (run_dir,) = grid_output.glob(f"digits-cnn_bn-{name}-*")
        metrics = pd.read_csv(run_dir / "metrics.csv")
        regularizer = metrics[metrics.metric == "regularizer"].set_index("round")["value"]
        # MOON has no term in a client's first round (no previous local model yet).
        assert regularizer[2] != 0, name


def test_fedpan_run_records_its_encoding(grid_output):
    (run_dir,) = grid_output.glob("digits-cnn_bn-fedpan-*")
    assert "position_encoding: multiplicative" in (run_dir / "config.yaml").read_text()


def test_rerun_skips_completed_and_report_has_every_method(grid_output):
    result = fedsign("grid", "configs/default.yaml", *SMALL, "--sweep", "strategy=" + ",".join(ALGORITHMS),
                     "--seeds", "0", "--output-dir", str(grid_output))
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stderr.count("already completed, skipped") == len(ALGORITHMS)

    report = fedsign("report", str(grid_output), "--output-dir", str(grid_output / "report"), "--last-k", "2")
    assert report.returncode == 0, report.stderr[-4000:]
    table = pd.read_csv(grid_output / "report" / "report_table.csv")
    assert sorted(table["method"].unique()) == sorted(ALGORITHMS)
    assert (grid_output / "report" / "accuracy_digits.png").is_file()
    assert (grid_output / "report" / "sign_diagnostics_digits.png").is_file()


def test_user_strategy_from_file_runs_by_import_path(tmp_path):
    (tmp_path / "my_strategies.py").write_text(USER_STRATEGY)
    # Ray's workers inherit PYTHONPATH from the process that starts the simulation.
    python_path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    result = fedsign("run", "configs/default.yaml", *SMALL, "strategy.name=my_strategies:DampedAverage",
                     "strategy.kwargs={step: 0.5}", "strategy.objectives=[sign]",
                     "--output-dir", str(tmp_path / "runs"), env={"PYTHONPATH": python_path})
    assert result.returncode == 0, result.stderr[-4000:]
    (run_dir,) = (tmp_path / "runs").glob("digits-cnn_bn-DampedAverage-*")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    metrics = pd.read_csv(run_dir / "metrics.csv")
    # The composed sign objective (sign.beta > 0) adds a nonzero term in every round.
    assert (metrics[metrics.metric == "regularizer"]["value"] > 0).all()
