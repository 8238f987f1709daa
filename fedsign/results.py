"""Run directories: their file names, staging, and the recorder that fills them.

A run is written into a staging folder ``<output>/.<name>.partial`` and renamed to
``<output>/<name>`` only when it completes, so a folder with the run's name is always a
completed run. A failed run is renamed to ``<name>.failed`` (replacing an older failure)
and keeps its log and a summary with the error.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import torch

from fedsign.config import Config
from fedsign.errors import UserInputError

logger = logging.getLogger(__name__)

# Every file name of a run directory, in one place.
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
MODEL_FILE = "model.pt"
INITIAL_MODEL_FILE = "model_init.pt"
CHECKPOINT_DIR = "checkpoints"
LOG_FILE = "run.log"
ACCURACY_PLOT = "accuracy.png"
SIGN_PLOT = "sign_diagnostics.png"
# metrics.csv columns; the first is "round" for federated runs and "epoch" for central ones.
METRICS_COLUMNS = ("round", "scope", "metric", "value")

PACKAGES = ("fedsign", "flwr", "flwr-datasets", "torch", "torchvision", "numpy", "ray")


def package_versions() -> dict[str, str]:
    """Return the installed versions of the packages that shape a run's numbers."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def is_completed(run_dir: Path) -> bool:
    """Return whether ``run_dir`` contains a completed run."""
    summary = run_dir / SUMMARY_FILE
    if not summary.is_file():
        return False
    try:
        return json.loads(summary.read_text()).get("status") == "completed"
    except json.JSONDecodeError:
        return False


def check_output_dir(output_dir: Path, *, create: bool = True) -> None:
    """Raise UserInputError unless ``output_dir`` exists or can be created, and is writable.

    With ``create=False`` nothing is created: the nearest existing folder on the path is
    probed instead, so a check that fails later leaves no empty folder behind.
    """
    existing = output_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserInputError(
            f"output directory {output_dir} cannot be created because {existing} is a file; "
            "choose another with --output-dir"
        )
    try:
        if create:
            output_dir.mkdir(parents=True, exist_ok=True)
            existing = output_dir
        probe = existing / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UserInputError(
            f"output directory {output_dir} is not writable ({error.strerror}); choose another with --output-dir"
        ) from None


def prepare_run_dir(output_dir: Path, config: Config, kind: str = "federated") -> tuple[Path, Path]:
    """Return ``(staging_dir, final_dir)`` for a new run of ``config``.

    Raises UserInputError when the final directory already exists, so a
    finished result is never overwritten.
    """
    check_output_dir(output_dir)
    final_dir = output_dir / config.run_name(kind)
    if final_dir.exists():
        raise UserInputError(
            f"run directory {final_dir} already exists; delete it, or change the config, the seed or name=..."
        )
    staging_dir = output_dir / f".{final_dir.name}.partial"
    if staging_dir.exists():
        shutil.rmtree(staging_dir)
    staging_dir.mkdir(parents=True)
    (staging_dir / CONFIG_FILE).write_text(config.to_yaml())
    return staging_dir, final_dir


def publish_run_dir(staging_dir: Path, final_dir: Path) -> Path:
    """Move a finished staging folder to its final name (``.failed`` unless completed)."""
    target = final_dir if is_completed(staging_dir) else final_dir.with_name(final_dir.name + ".failed")
    if target.exists():
        shutil.rmtree(target)
    staging_dir.rename(target)
    return target


@dataclass
class RunRecorder:
    """Collects tidy metric rows of a run and writes them, the model and the summary.

    ``step_name`` is ``round`` for federated runs and ``epoch`` for central training; it
    names the first column of ``metrics.csv`` and the step counts in the summary.
    """

    run_dir: Path
    config: Config
    step_name: str = "round"
    rows: list[tuple[int, str, str, float]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def record(self, step: int, scope: str, metrics: dict[str, float]) -> None:
        """Add one row per metric for ``scope`` (``server``, ``train`` or ``client``) and save."""
        for name, value in sorted(metrics.items()):
            self.rows.append((step, scope, name, float(value)))
        self.write_metrics()

    def write_metrics(self) -> None:
        """Write ``metrics.csv`` atomically, so a reader never sees half a file."""
        path = self.run_dir / METRICS_FILE
        temporary = path.with_suffix(".csv.tmp")
        with temporary.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow((self.step_name, *METRICS_COLUMNS[1:]))
            for step, scope, name, value in self.rows:
                writer.writerow((step, scope, name, repr(value)))
        temporary.replace(path)

    def server_accuracies(self) -> dict[int, float]:
        """Return the test accuracy of the model at each evaluated round or epoch."""
        return {r: v for r, scope, name, v in self.rows if scope == "server" and name == "accuracy"}

    def save_model(self, state: dict[str, torch.Tensor], name: str = MODEL_FILE) -> None:
        """Save a model state (tensors on the CPU) under ``name`` in the run directory."""
        path = self.run_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({key: value.detach().cpu() for key, value in state.items()}, path)

    def finish(self, *, status: str, error: str = "", extra: dict | None = None) -> dict:
        """Write ``summary.json`` with the run's outcome and return it."""
        accuracies = self.server_accuracies()
        last_step = max(accuracies) if accuracies else 0
        federated = self.step_name == "round"
        summary = {
            "status": status,
            "error": error,
            "strategy": self.config.strategy.name if federated else "central",
            "dataset": self.config.data.dataset,
            "model": self.config.model.name,
            "partitioner": self.config.data.partitioner if federated else None,
            "alpha": self.config.data.alpha if federated else None,
            "seed": self.config.seed,
            f"{self.step_name}s": self.config.federation.rounds if federated else self.config.central.epochs,
            f"{self.step_name}s_completed": last_step,
            "final_accuracy": accuracies.get(last_step),
            "best_accuracy": max(accuracies.values()) if accuracies else None,
            "wall_time_s": round(time.monotonic() - self.started, 3),
            "config_hash": self.config.short_hash(),
            "versions": package_versions(),
            **(extra or {}),
        }
        (self.run_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
        return summary
