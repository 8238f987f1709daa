"""Bad input on the command line: one line naming the value, exit status 2, nothing written.

Every case here is rejected before Ray starts, so the file stays fast.
"""

import json

import pytest

from fedsign.cli import main
from fedsign.config import load_config

CASES = {
    "unknown key": ["train.lrr=0.1"],
    "wrong type": ["train.batch_size=big"],
    "alpha zero": ["data.alpha=0"],
    "fraction above one": ["strategy.fraction_train=1.5"],
    "more clients than samples": ["data.num_partitions=5000"],
    "unknown dataset": ["data.dataset=imagenet"],
    "unknown model": ["model.name=transformer"],
    "unknown strategy": ["strategy.name=fedmagic"],
    "unknown partitioner": ["data.partitioner=zipf"],
    "negative learning rate": ["train.lr=-0.01"],
    "negative seed": ["seed=-1"],
}
EXPECTED = {
    "unknown key": "train.lrr",
    "wrong type": "train.batch_size",
    "alpha zero": "data.alpha",
    "fraction above one": "strategy.fraction_train",
    "more clients than samples": "data.num_partitions",
    "unknown dataset": "imagenet",
    "unknown model": "transformer",
    "unknown strategy": "fedmagic",
    "unknown partitioner": "zipf",
    "negative learning rate": "train.lr",
    "negative seed": "seed=-1",
}


def error_line(stderr: str) -> str:
    """Return the one error line of stderr; INFO log lines about loaded data may precede it."""
    errors = [line for line in stderr.splitlines() if not line.startswith("INFO ")]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr
    return errors[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_run_input_exits_2_with_one_line(case, tmp_path, capsys):
    output_dir = tmp_path / "runs"
    status = main(["run", "configs/default.yaml", *CASES[case], "--output-dir", str(output_dir)])
    error = error_line(capsys.readouterr().err)
    assert status == 2
    assert EXPECTED[case] in error
    assert not output_dir.exists() or not any(output_dir.iterdir())


def test_missing_dataset_folder_names_folder_and_fix(tmp_path, capsys):
    root = tmp_path / "nothing-here"
    status = main(["run", "configs/default.yaml", "data.dataset=mnist", f"data.root={root}",
                   "--output-dir", str(tmp_path / "runs")])
    error = error_line(capsys.readouterr().err)
    assert status == 2
    assert str(root) in error
    assert "data.download=true" in error


def test_unwritable_output_dir(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    status = main(["run", "configs/default.yaml", "--output-dir", str(blocker / "runs")])
    error = error_line(capsys.readouterr().err)
    assert status == 2
    assert "--output-dir" in error
    assert blocker.read_text() == "not a folder"


def test_completed_run_directory_is_not_overwritten(tmp_path, capsys):
    output_dir = tmp_path / "runs"
    run_dir = output_dir / load_config("configs/default.yaml").run_name()
    run_dir.mkdir(parents=True)
    summary = {"status": "completed", "final_accuracy": 0.5}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    status = main(["run", "configs/default.yaml", "--output-dir", str(output_dir)])
    error = error_line(capsys.readouterr().err)
    assert status == 2
    assert "already exists" in error
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    assert sorted(p.name for p in output_dir.iterdir()) == [run_dir.name]


def test_missing_config_file(tmp_path, capsys):
    status = main(["run", str(tmp_path / "absent.yaml")])
    assert status == 2
    assert "config file not found" in capsys.readouterr().err


def test_bad_sweep_and_seeds(tmp_path, capsys):
    assert main(["grid", "configs/default.yaml", "--sweep", "strategy", "--output-dir", str(tmp_path)]) == 2
    assert "--sweep" in capsys.readouterr().err
    assert main(["grid", "configs/default.yaml", "--seeds", "a,b", "--output-dir", str(tmp_path)]) == 2
    assert "--seeds" in capsys.readouterr().err


def test_grid_validates_every_combination_first(tmp_path, capsys):
    status = main(["grid", "configs/default.yaml", "--sweep", "strategy=fedavg,nope", "--output-dir",
                   str(tmp_path / "runs")])
    assert status == 2
    assert "nope" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_partition_command_prints_and_plots(tmp_path, capsys):
    status = main(["partition", "configs/default.yaml", "data.num_partitions=4", "--output-dir", str(tmp_path)])
    output = capsys.readouterr().out
    assert status == 0
    assert "effective_classes" in output
    assert len(list(tmp_path.glob("partition-*.png"))) == 1
    assert len(list(tmp_path.glob("partition-*.csv"))) == 1


def test_list_names_registries(capsys):
    assert main(["list"]) == 0
    output = capsys.readouterr().out
    for name in ("digits", "dirichlet", "cnn", "fedsign"):
        assert name in output


def test_config_command_prints_resolved_yaml(capsys):
    assert main(["config", "configs/default.yaml", "train.lr=0.5"]) == 0
    output = capsys.readouterr().out
    assert load_config("configs/default.yaml", ["train.lr=0.5"]).to_yaml() == output
