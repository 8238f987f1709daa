"""Valley studies: the sign-change-ratio sweep and factor studies over trained models.

- :func:`run_ratio_sweep` takes one trained model and, for r from 0 to 1, gives a random
  fraction r of each noise direction's coordinates the signs of θ_f, then reports the mean
  error over λ > 0 and over λ < 0 against r and the measured same-sign ratio (SSR).
- :func:`run_study` reads a study file, trains one model per variant and seed with
  :func:`fedsign.central.run_central` (a completed training with the same config is reused),
  computes the same valley curves on each, and collects them in one tidy CSV, one summary
  table (CSV and Markdown) and one figure.

A study file has two sections::

    study:
      name: bn_init_digits            # output folder name (default: the file's stem)
      base_config: configs/central_digits.yaml   # fedsign training config (optional)
      base: {central: {epochs: 10}}   # keys merged over base_config (optional)
      factor: model.bn_init           # dotted key varied over `values` ...
      values: [ones, uniform, gaussian]
      variants: []                    # ... or explicit variants: {label, overrides: [KEY=VALUE]}
      seeds: [0]
    valley:                           # ValleySettings fields, as in `fedsign valley`
      noises: [gaussian, uniform_pos]
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsign.config import Config, from_dict, merge, parse_overrides, read_yaml
from fedsign.errors import ConfigError, UserInputError
from fedsign.noise import SPECIAL_DIRECTIONS, draw_noise, replace_signs, special_direction
from fedsign.seeding import torch_generator
from fedsign.valley import (
    CURVE_SUMMARY_FILE,
    CURVES_FILE,
    PLOT_DPI,
    SUMMARY_TABLE_FILE,
    DirectionSpec,
    ValleySettings,
    aggregate_summary,
    check_group,
    compute_curves,
    lambda_grid,
    load_source,
    scale,
    prepare_sweep,
    select_subsets,
    sign_label,
    staged_output,
    summarize_curves,
    theta_0_of_group,
)

logger = logging.getLogger(__name__)

SUMMARY_MARKDOWN_FILE = "summary.md"
SWEEP_JSON = "sweep.json"
SWEEP_PLOT = "sweep.png"
STUDY_JSON = "study.json"
STUDY_PLOT = "study_error.png"
MODELS_DIR = "models"
DEFAULT_RATIOS = tuple(round(0.1 * step, 1) for step in range(11))
# Columns of the Markdown tables: summary numbers shown as mean ± std.
TABLE_NUMBERS = ("ssr", "error_at_zero", "mean_error_pos", "mean_error_neg", "asymmetry",
                 "half_width_pos", "half_width_neg")


# ---------------------------------------------------------------------------------------------
# Sign-change-ratio sweep
# ---------------------------------------------------------------------------------------------


def parse_ratios(text: str) -> list[float]:
    """Parse ``0,0.5,1`` or ``START:STOP:COUNT`` (evenly spaced, both ends included) into ratios in [0, 1]."""
    try:
        if ":" in text:
            start, stop, count = text.split(":")
            ratios = np.linspace(float(start), float(stop), int(count)).round(6).tolist()
        else:
            ratios = [float(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise UserInputError(f"invalid ratios {text!r}: expected 0,0.5,1 or START:STOP:COUNT such as 0:1:11") from None
    if not ratios or not all(0.0 <= ratio <= 1.0 for ratio in ratios):
        raise UserInputError(f"invalid ratios {text!r}: expected numbers in [0, 1], such as 0:1:11")
    return ratios


def iter_ratio_directions(settings: ValleySettings, theta_f: dict, ratios: list[float],
                          theta_0: dict | None = None):
    """Yield, per noise and direction id, the scaled direction with a fraction r of signs replaced, per r.

    Every ratio of one direction id starts from the same draw; the replaced coordinates are
    drawn anew per ratio. Labels: ``noise``, ``direction_id``, ``ratio``.
    """
    shapes = {name: tensor.shape for name, tensor in theta_f.items()}
    for noise in settings.noises:
        for direction_id in range(settings.num_directions):
            generator = torch_generator(settings.seed, f"valley-direction-{noise}", direction_id)
            if noise in SPECIAL_DIRECTIONS:
                raw = special_direction(noise, theta_f, theta_0=theta_0, generator=generator)
            else:
                raw = draw_noise(noise, shapes, generator)
            for index, ratio in enumerate(ratios):
                picker = torch_generator(settings.seed, f"valley-ratio-{noise}", direction_id, index)
                signed = replace_signs(raw, theta_f, ratio=ratio, generator=picker)
                yield DirectionSpec(labels={"noise": noise, "direction_id": direction_id, "ratio": ratio},
                                    direction=scale(signed, theta_f, settings))


@dataclass(frozen=True)
class StudyOutcome:
    """Where a sweep or study was written and its summary table."""

    output_dir: Path
    table: pd.DataFrame


def run_ratio_sweep(
    source_path: Path, settings: ValleySettings, ratios: list[float], output_dir: Path, *,
    epoch: int | None = None, round_number: int | None = None, client: int | None = None, device: str = "auto",
) -> StudyOutcome:
    """Run the sign-change-ratio sweep on one model; the Python API of ``fedsign valley-sweep``.

    Writes ``curves.csv``, ``curve_summary.csv``, ``summary.csv`` and ``summary.md`` (per
    noise and ratio: measured SSR, mean error on each side, asymmetry, half-widths, mean ± std
    over directions), ``sweep.json`` and ``sweep.png`` into ``output_dir/<run>-sweep-<hash>``.
    """
    source, names, data = prepare_sweep(source_path, settings, output_dir, epoch=epoch,
                                        round_number=round_number, client=client, device=device)
    theta_f = {name: parameter.detach().float().cpu().clone() for name, parameter in source.model.named_parameters()
               if name in set(names)}
    started = time.monotonic()
    specs = iter_ratio_directions(settings, theta_f, ratios, theta_0_of_group(source, names))
    curves = compute_curves(source.model, specs, data, settings)
    wall_time = time.monotonic() - started
    per_curve = summarize_curves(curves, settings)
    table = aggregate_summary(per_curve, ["noise", "ratio"])

    name = f"{source.run_dir.name}-sweep-{settings.short_hash()}"
    with staged_output(output_dir / name) as staging:
        curves.to_csv(staging / CURVES_FILE, index=False)
        per_curve.to_csv(staging / CURVE_SUMMARY_FILE, index=False)
        table.to_csv(staging / SUMMARY_TABLE_FILE, index=False)
        (staging / SUMMARY_MARKDOWN_FILE).write_text(markdown_table(table, ["noise", "ratio"]) + "\n")
        record = {"settings": asdict(settings), "ratios": ratios, "lambdas": lambda_grid(settings).tolist(),
                  "source": {"run_dir": str(source.run_dir), "state_file": str(source.state_path),
                             "model": source.model_name, "dataset": source.dataset},
                  "device": str(data.eval_y.device), "wall_time_s": round(wall_time, 3),
                  "summary": json.loads(table.to_json(orient="records"))}
        (staging / SWEEP_JSON).write_text(json.dumps(record, indent=2) + "\n")
        plot_ratio_sweep(staging / CURVE_SUMMARY_FILE, staging / SWEEP_PLOT)
    return StudyOutcome(output_dir=output_dir / name, table=table)


def plot_ratio_sweep(curve_summary_csv: Path, output: Path) -> Path:
    """Draw mean error over λ > 0 and over λ < 0 against the sign-change ratio r, one panel per noise."""
    plt, sns = _pyplot()
    summary = pd.read_csv(curve_summary_csv)
    long = summary.melt(id_vars=["noise", "direction_id", "ratio", "ssr"],
                        value_vars=["mean_error_pos", "mean_error_neg"], var_name="side", value_name="mean_error")
    long["side"] = long["side"].map({"mean_error_pos": "λ > 0", "mean_error_neg": "λ < 0"})
    noises = list(dict.fromkeys(long["noise"]))
    columns = min(4, len(noises))
    rows = math.ceil(len(noises) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), sharey=True, squeeze=False)
    for index, (ax, noise) in enumerate(zip(axes.flat, noises, strict=False)):
        sns.lineplot(data=long[long["noise"] == noise], x="ratio", y="mean_error", hue="side", marker="o",
                     errorbar="sd", ax=ax, legend=index == 0)
        ax.set(title=noise, xlabel="sign-change ratio r", ylabel="mean test error")
    for ax in list(axes.flat)[len(noises):]:
        ax.set_visible(False)
    figure.tight_layout()
    figure.savefig(output, dpi=PLOT_DPI)
    plt.close(figure)
    return output


# ---------------------------------------------------------------------------------------------
# Factor studies
# ---------------------------------------------------------------------------------------------


@dataclass
class VariantConfig:
    """One trained model of a study: a label and the overrides applied to the base config."""

    label: str = ""
    overrides: list[str] = field(default_factory=list)


@dataclass
class StudyConfig:
    """The ``study`` section of a study file: how the trained models differ."""

    name: str = ""
    base_config: str = ""
    base: dict[str, Any] = field(default_factory=dict)
    factor: str = ""
    values: list[Any] = field(default_factory=list)
    variants: list[VariantConfig] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])

    def __post_init__(self) -> None:
        if bool(self.factor) == bool(self.variants):
            raise ConfigError("invalid study: give either study.factor with study.values, or study.variants")
        if self.factor and not self.values:
            raise ConfigError(f"invalid value study.values=[]: expected values of {self.factor}")
        if not self.seeds:
            raise ConfigError("invalid value study.seeds=[]: expected at least one seed")
        labels = [variant.label for variant in self.variants]
        if any(not label for label in labels) or len(set(labels)) != len(labels):
            raise ConfigError(f"invalid value study.variants labels={labels!r}: expected unique non-empty labels")


@dataclass
class StudyFile:
    """A whole study file: the ``study`` and ``valley`` sections."""

    study: StudyConfig = field(default_factory=StudyConfig)
    valley: ValleySettings = field(default_factory=ValleySettings)


@dataclass(frozen=True)
class StudyRun:
    """One training of a study: variant label, seed and the resolved training config."""

    label: str
    seed: int
    config: Config


def load_study(path: Path, overrides: list[str] | None = None) -> tuple[StudyFile, list[StudyRun]]:
    """Read and validate a study file and resolve the training config of every variant and seed.

    ``overrides`` are dotted ``key=value`` items over the study file (``valley.num_directions=5``,
    ``study.seeds=[0,1]``). Every config is validated here, before anything is trained.
    """
    values = merge(read_yaml(path), parse_overrides(overrides or []))
    study_file: StudyFile = from_dict(StudyFile, values)
    study = study_file.study
    if not study.name:
        study.name = Path(path).stem
    base = read_yaml(study.base_config) if study.base_config else {}
    base = merge(base, study.base)

    variants: list[tuple[str, dict[str, Any]]]
    if study.factor:
        variants = [(str(value), _nested(study.factor, value)) for value in study.values]
    else:
        variants = [(variant.label, parse_overrides(variant.overrides)) for variant in study.variants]
    runs = []
    for label, update in variants:
        for seed in study.seeds:
            config = from_dict(Config, merge(merge(base, update), {"seed": seed}))
            runs.append(StudyRun(label=label, seed=seed, config=config))
    return study_file, runs


def _nested(key: str, value: Any) -> dict[str, Any]:
    """Turn a dotted key and a value into a nested mapping: ``a.b``, 1 -> {a: {b: 1}}."""
    nested: dict[str, Any] = {}
    node = nested
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def train_or_reuse(run: StudyRun, models_dir: Path) -> Path:
    """Return the run directory of ``run``'s trained model, training it unless a completed one exists."""
    from fedsign.central import run_central
    from fedsign.results import is_completed

    run_dir = models_dir / run.config.run_name("central")
    if is_completed(run_dir):
        logger.info("reusing trained model %s (variant %s, seed %d)", run_dir, run.label, run.seed)
        return run_dir
    if run_dir.exists():
        logger.warning("removing incomplete run directory %s before training it again", run_dir)
        shutil.rmtree(run_dir)
    logger.info("training variant %s, seed %d into %s", run.label, run.seed, models_dir)
    return run_central(run.config, models_dir).run_dir


def run_study(path: Path, output_dir: Path, *, overrides: list[str] | None = None,
              device: str = "auto") -> StudyOutcome:
    """Run a factor study from a study file; the Python API of ``fedsign valley-study``.

    Trained models go to ``output_dir/models`` (shared by all studies, so a variant that two
    studies share is trained once). The study's results go to ``output_dir/<study name>``:
    ``curves.csv`` with ``variant`` and ``seed`` columns, ``curve_summary.csv``,
    ``summary.csv`` and ``summary.md`` (per variant, noise and sign mode, mean ± std over
    directions and seeds), ``study.json`` and ``study_error.png``.
    """
    from fedsign.datasets import load_dataset
    from fedsign.federation import build_global_model
    from fedsign.results import check_output_dir
    from fedsign.training import resolve_device

    study_file, runs = load_study(path, overrides)
    settings, study = study_file.valley, study_file.study
    for run in runs:  # A bad model name or group fails here, before any training.
        splits = load_dataset(run.config.data.dataset, root=run.config.data.root, download=False, seed=run.seed)
        check_group(build_global_model(run.config.model, splits, run.seed), settings.group)
    check_output_dir(output_dir)
    models_dir = output_dir / MODELS_DIR

    frames = []
    trained = []
    started = time.monotonic()
    for run in runs:
        run_dir = train_or_reuse(run, models_dir)
        trained.append({"variant": run.label, "seed": run.seed, "run_dir": str(run_dir)})
        source = load_source(run_dir, device=resolve_device(device))
        data = select_subsets(source.splits, settings, next(source.model.parameters()).device)
        names = check_group(source.model, settings.group)
        curves = compute_curves(source.model, None, data, settings, theta_0=theta_0_of_group(source, names))
        curves.insert(0, "seed", run.seed)
        curves.insert(0, "variant", run.label)
        frames.append(curves)
    curves = pd.concat(frames, ignore_index=True)
    per_curve = summarize_curves(curves, settings)
    by = ["variant", "noise", "sign_consistent"]
    table = aggregate_summary(per_curve, by)

    with staged_output(output_dir / study.name) as staging:
        curves.to_csv(staging / CURVES_FILE, index=False)
        per_curve.to_csv(staging / CURVE_SUMMARY_FILE, index=False)
        table.to_csv(staging / SUMMARY_TABLE_FILE, index=False)
        (staging / SUMMARY_MARKDOWN_FILE).write_text(markdown_table(table, by) + "\n")
        record = {"study": asdict(study), "settings": asdict(settings), "lambdas": lambda_grid(settings).tolist(),
                  "models": trained, "wall_time_s": round(time.monotonic() - started, 3),
                  "summary": json.loads(table.to_json(orient="records"))}
        (staging / STUDY_JSON).write_text(json.dumps(record, indent=2, default=str) + "\n")
        plot_study(staging / CURVES_FILE, staging / STUDY_PLOT, title=study.name)
    return StudyOutcome(output_dir=output_dir / study.name, table=table)


def plot_study(curves_csv: Path, output: Path, *, title: str = "") -> Path:
    """Draw test error against λ: one row per noise, one column per variant, ordinary vs sign-consistent."""
    plt, sns = _pyplot()
    curves = pd.read_csv(curves_csv)
    curves["sign"] = sign_label(curves["sign_consistent"])
    variants = list(dict.fromkeys(curves["variant"].astype(str)))
    noises = list(dict.fromkeys(curves["noise"]))
    figure, axes = plt.subplots(len(noises), len(variants), figsize=(3.0 * len(variants), 2.4 * len(noises)),
                                sharex=True, sharey=True, squeeze=False)
    for row, noise in enumerate(noises):
        for column, variant in enumerate(variants):
            ax = axes[row, column]
            panel = curves[(curves["noise"] == noise) & (curves["variant"].astype(str) == variant)]
            sns.lineplot(data=panel, x="lambda", y="error", hue="sign", hue_order=["ordinary", "sign-consistent"],
                         errorbar="sd", ax=ax, legend=row == 0 and column == 0)
            ax.set(title=f"{variant} · {noise}", xlabel="λ", ylabel="test error")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(output, dpi=PLOT_DPI)
    plt.close(figure)
    return output


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------


def markdown_table(table: pd.DataFrame, by: list[str]) -> str:
    """Format an aggregated summary as Markdown, each number as mean ± std."""
    shown = table[[*by, "curves"]].copy()
    for number in TABLE_NUMBERS:
        mean, std = table[f"{number}_mean"], table[f"{number}_std"].fillna(0.0)
        shown[number] = [f"{m:.3f} ± {s:.3f}" for m, s in zip(mean, std, strict=True)]
    return shown.to_markdown(index=False)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    return plt, sns
