"""End-to-end runs on Flower's Ray simulation runtime with the bundled digits data.

Each run starts Ray (6-9 s), so the runs are shared by module-scoped fixtures and kept
small: 4 clients, 3 rounds, a CNN with BatchNorm (so buffers are averaged too).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

pytestmark = pytest.mark.ray

SMALL = ["data.num_partitions=4", "federation.rounds=3", "model.name=cnn_bn", "engine.timeout_s=300"]
ENV = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0"}


def fedsign(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "fedsign.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=ENV)


def run_dir_of(output: Path, prefix: str) -> Path:
    (match,) = [p for p in output.iterdir() if p.name.startswith(prefix) and not p.name.startswith(".")]
    return match


@pytest.fixture(scope="module")
def output(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def fedavg_run(output) -> Path:
    result = fedsign("run", "configs/default.yaml", *SMALL, "--output-dir", str(output / "a"))
    assert result.returncode == 0, result.stderr[-4000:]
    return run_dir_of(output / "a", "digits-cnn_bn-fedavg")


def test_run_directory_contents(fedavg_run):
    names = {p.name for p in fedavg_run.iterdir()}
    assert {"config.yaml", "metrics.csv", "summary.json", "model.pt", "model_init.pt", "run.log",
            "accuracy.png", "sign_diagnostics.png"} <= names
    summary = json.loads((fedavg_run / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["strategy"] == "fedavg"
    assert summary["rounds_completed"] == 3
    assert summary["versions"]["flwr"] == "1.42.0"
    metrics = pd.read_csv(fedavg_run / "metrics.csv")
    assert list(metrics.columns) == ["round", "scope", "metric", "value"]
    signs = metrics[metrics.metric == "ssr_pairwise_mean"]
    assert list(signs["round"]) == [1, 2, 3]
    assert signs["value"].between(0, 1).all()
    accuracy = metrics[(metrics.scope == "server") & (metrics.metric == "accuracy")]
    assert list(accuracy["round"]) == [0, 1, 2, 3]


def test_fedsign_with_zero_beta_equals_fedavg(fedavg_run, output):
    result = fedsign("run", "configs/default.yaml", *SMALL, "strategy.name=fedsign", "sign.beta=0",
                     "--output-dir", str(output / "a"))
    assert result.returncode == 0, result.stderr[-4000:]
    fedsign_run = run_dir_of(output / "a", "digits-cnn_bn-fedsign")
    fedavg_state = torch.load(fedavg_run / "model.pt", weights_only=True)
    fedsign_state = torch.load(fedsign_run / "model.pt", weights_only=True)
    assert fedavg_state.keys() == fedsign_state.keys()
    assert any("running_mean" in name for name in fedavg_state)
    for name, tensor in fedavg_state.items():
        assert torch.equal(tensor, fedsign_state[name]), name
    assert (fedavg_run / "metrics.csv").read_bytes() == (fedsign_run / "metrics.csv").read_bytes()


def test_same_config_and_seed_give_identical_metrics(fedavg_run, output):
    result = fedsign("run", "configs/default.yaml", *SMALL, "--output-dir", str(output / "b"))
    assert result.returncode == 0, result.stderr[-4000:]
    again = run_dir_of(output / "b", "digits-cnn_bn-fedavg")
    assert (fedavg_run / "metrics.csv").read_bytes() == (again / "metrics.csv").read_bytes()


def test_grid_skips_completed_runs_and_prints_table(fedavg_run, output):
    result = fedsign("grid", "configs/default.yaml", *SMALL, "--sweep", "strategy=fedavg,fedsign",
                     "--seeds", "0", "--output-dir", str(output / "a"))
    assert result.returncode == 0, result.stderr[-4000:]
    assert "already completed, skipped" in result.stderr
    assert "| fedavg" in result.stdout
    assert "| fedsign" in result.stdout
    assert "±" in result.stdout
    (table,) = (output / "a").glob("grid-*.md")
    assert "| fedsign" in table.read_text()
    assert len(list((output / "a").glob("grid-*.csv"))) == 1


def test_failed_client_is_logged_and_round_continues(output):
    result = fedsign("run", "configs/default.yaml", *SMALL, "engine.fail_partitions=[1]",
                     "--output-dir", str(output / "c"))
    assert result.returncode == 0, result.stderr[-4000:]
    run_dir = run_dir_of(output / "c", "digits-cnn_bn-fedavg")
    metrics = pd.read_csv(run_dir / "metrics.csv")
    failed = metrics[metrics.metric == "failed_clients"]["value"]
    assert list(failed) == [1.0, 1.0, 1.0]
    assert "1 of 4 clients failed" in (run_dir / "run.log").read_text()


def test_round_where_all_clients_fail_exits_1(output):
    result = fedsign("run", "configs/default.yaml", *SMALL, "engine.fail_partitions=[0,1,2,3]",
                     "--output-dir", str(output / "d"))
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert "all 4 clients failed" in last_line
    assert "injected failure of client" in last_line
    (failed_dir,) = list((output / "d").iterdir())
    assert failed_dir.name.endswith(".failed")
    assert json.loads((failed_dir / "summary.json").read_text())["status"] == "failed"
