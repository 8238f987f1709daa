"""Grids of runs (sweeps × seeds) and the mean ± std comparison table over seeds."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fedsign.config import Config, load_config
from fedsign.engine import RunFailedError, check_names, run_simulation, validate_run_config
from fedsign.errors import ConfigError
from fedsign.results import SUMMARY_FILE, check_output_dir, is_completed

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sweep:
    """One swept key and its values, e.g. ``strategy.name`` over ``fedavg, fedsign``."""

    key: str
    values: tuple[str, ...]


def parse_sweep(text: str) -> Sweep:
    """Parse ``KEY=V1,V2,...``; a section name alone (``strategy``) means its ``name`` key."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    values = tuple(v.strip() for v in raw.split(",") if v.strip())
    if not sep or not key or not values:
        raise ConfigError(f"invalid --sweep {text!r}: expected KEY=V1,V2,... e.g. strategy=fedavg,fedsign")
    section = {f.name: f for f in dataclasses.fields(Config)}.get(key)
    if section is not None and dataclasses.is_dataclass(section.default_factory):  # type: ignore[arg-type]
        key = f"{key}.name"
    return Sweep(key=key, values=values)


def parse_seeds(text: str) -> list[int]:
    """Parse ``0,1,2`` or a range ``0-4`` into a list of seeds."""
    try:
        if "-" in text.strip("-"):
            start, end = text.split("-", 1)
            return list(range(int(start), int(end) + 1))
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"invalid --seeds {text!r}: expected integers such as 0,1,2 or a range 0-4") from None


def expand(sweeps: list[Sweep], seeds: list[int]) -> list[list[str]]:
    """Return the override list of every combination of the swept values and seeds."""
    value_lists = [[f"{sweep.key}={value}" for value in sweep.values] for sweep in sweeps]
    combinations = []
    for values in itertools.product(*value_lists):
        for seed in seeds:
            combinations.append([*values, f"seed={seed}"])
    return combinations


def run_grid(
    config_path: Path | None,
    overrides: list[str],
    sweeps: list[Sweep],
    seeds: list[int],
    output_dir: Path,
) -> list[Path]:
    """Run every combination, skipping runs whose directory is already completed.

    All configs are built and validated before the first run starts, so a bad value
    anywhere in the grid stops it with nothing written. A failed run is logged and the
    grid goes on; the returned list contains the completed run directories.
    """
    check_output_dir(output_dir, create=False)
    configs = [load_config(config_path, [*overrides, *combination]) for combination in expand(sweeps, seeds)]
    for config in configs:
        check_names(config)
    # Validation builds each run's data partition. Grouping runs with the same data and
    # seed lets the per-process partition cache serve them, instead of rebuilding it per run.
    for config in sorted(configs, key=lambda c: (repr(c.data), c.seed)):
        validate_run_config(config)

    completed: list[Path] = []
    for index, config in enumerate(configs, start=1):
        run_dir = output_dir / config.run_name()
        if is_completed(run_dir):
            logger.info("[%d/%d] %s: already completed, skipped", index, len(configs), run_dir.name)
            completed.append(run_dir)
            continue
        logger.info("[%d/%d] %s: starting", index, len(configs), run_dir.name)
        try:
            outcome = run_simulation(config, output_dir)
        except RunFailedError as error:
            logger.error("[%d/%d] %s: %s", index, len(configs), run_dir.name, error)
            continue
        logger.info("[%d/%d] %s: final accuracy %.4f", index, len(configs), run_dir.name,
                    outcome.summary["final_accuracy"])
        completed.append(outcome.run_dir)
    return completed


def grid_table_name(config_path: Path | None, overrides: list[str], sweeps: list[Sweep], seeds: list[int]) -> str:
    """Return the file stem of a grid's saved table: ``grid-`` plus a hash of the grid's arguments."""
    arguments = [str(config_path), overrides, [[sweep.key, list(sweep.values)] for sweep in sweeps], seeds]
    digest = hashlib.sha256(json.dumps(arguments).encode()).hexdigest()[:8]
    return f"grid-{digest}"


def collect_summaries(run_dirs: list[Path], keys: list[str]) -> pd.DataFrame:
    """Return one row per run: the swept config ``keys``, the seed and the summary numbers."""
    rows = []
    for run_dir in run_dirs:
        summary = json.loads((run_dir / SUMMARY_FILE).read_text())
        config = load_config(run_dir / "config.yaml")
        row = {key: _lookup(config, key) for key in keys}
        row.update(seed=config.seed, final_accuracy=summary["final_accuracy"],
                   best_accuracy=summary["best_accuracy"], run_dir=str(run_dir))
        rows.append(row)
    return pd.DataFrame(rows)


def mean_std_table(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Return mean ± std over seeds of final and best accuracy (in %) per combination of ``keys``."""
    grouped = runs.groupby(keys, sort=False) if keys else runs.groupby(lambda _: "all")
    table = grouped.agg(
        seeds=("seed", "count"),
        final_mean=("final_accuracy", "mean"),
        final_std=("final_accuracy", "std"),
        best_mean=("best_accuracy", "mean"),
        best_std=("best_accuracy", "std"),
    ).reset_index()
    for name in ("final", "best"):
        table[f"{name}_accuracy"] = [
            f"{100 * mean:.2f} ± {100 * (0.0 if pd.isna(std) else std):.2f}"
            for mean, std in zip(table[f"{name}_mean"], table[f"{name}_std"], strict=True)
        ]
    return table


def _lookup(config: Config, dotted: str) -> object:
    value: object = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value
