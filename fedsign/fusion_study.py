"""Fusion study: model pairs whose SSR differs by construction, and how SSR-AB predicts fusion.

Each *condition* of a study config trains ``replicates`` pairs of models A and B and
interpolates between them (:mod:`fedsign.fusion`). The conditions vary the factors that
change how many signs A and B share:

- ``init: shared`` — A and B start from one random initialisation I and differ only in
  their data order (or, with ``data_split: halves``, in their data);
- ``init: separate`` — A and B start from two independent random initialisations
  ("two runs from scratch"); SSR-IA and SSR-IB are then taken against each model's own
  initialisation;
- ``init: pretrained`` — one model is first trained only on the examples of the classes
  in ``pretrain.classes``, so no downloadable weights are used. A and B then fine-tune
  that pre-trained start on all classes with different data orders, and I is the
  pre-trained model;
- ``epochs`` and ``batch_size`` — training length and batch size of A and B.

For every pair the study records SSR-IA, SSR-IB and SSR-AB after each epoch (overall and
per parameter group), the interpolation curve, and its summary (accuracy at λ = 0.5, the
accuracy gap, the loss barrier). Over all pairs it computes the Pearson and Spearman
correlations, with two-sided p-values, between the final overall SSR-AB and the midpoint
accuracy, the accuracy gap and the loss barrier, and draws the plots.

Pairs train in worker processes (``workers``, one torch thread each). Each finished pair
is saved as ``pairs/<pair_id>.json``, where the id ends in a hash of everything that
determines the pair, so a rerun reuses completed pairs and trains only new or changed ones.
"""

from __future__ import annotations

import concurrent.futures
import copy
import hashlib
import json
import logging
import math
import multiprocessing
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fedsign.config import from_dict, merge, parse_overrides, read_yaml
from fedsign.datasets import DatasetSplits, load_dataset
from fedsign.errors import ConfigError
from fedsign.fusion import (
    InterpolationSettings,
    bn_subset,
    evaluation_data,
    interpolation_curve,
    lambda_grid,
    summarize_curve,
)
from fedsign.models import build_model
from fedsign.results import check_output_dir
from fedsign.seeding import derive_seed, torch_generator
from fedsign.signs import ssr_by_group, ssr_groups
from fedsign.training import SGDSettings, evaluate, train_local

logger = logging.getLogger(__name__)

INIT_KINDS = ("shared", "separate", "pretrained")
DATA_SPLITS = ("full", "halves")
# Quantities correlated with the final overall SSR-AB, as columns of pairs.csv.
TARGETS = ("midpoint_accuracy", "accuracy_gap", "loss_barrier")

# Output files of a study directory, in one place.
STUDY_CONFIG_FILE = "study.yaml"
PAIRS_DIR = "pairs"
PAIRS_CSV = "pairs.csv"
SSR_EPOCHS_CSV = "ssr_epochs.csv"
CURVES_CSV = "interpolation_curves.csv"
CORRELATIONS_CSV = "correlations.csv"
CORRELATIONS_JSON = "correlations.json"
SCATTER_PLOT = "ssr_vs_fusion.png"
SSR_EPOCHS_PLOT = "ssr_over_epochs.png"
CURVES_PLOT = "interpolation_curves.png"


# ---------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------


def _require(condition: bool, key: str, value: object, allowed: str) -> None:
    if not condition:
        raise ConfigError(f"invalid value {key}={value!r}: expected {allowed}")


@dataclass
class PretrainConfig:
    """The "pre-trained" start: training on a subset of the classes before fine-tuning."""

    classes: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    epochs: int = 10

    def __post_init__(self) -> None:
        _require(len(self.classes) >= 2, "pretrain.classes", self.classes, "at least two class ids")
        _require(self.epochs >= 1, "pretrain.epochs", self.epochs, "an integer >= 1")


@dataclass
class ConditionConfig:
    """One way of building model pairs; ``replicates`` pairs are trained with different seeds."""

    name: str = ""
    init: str = "shared"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 0.05
    data_split: str = "full"
    replicates: int = 3

    def __post_init__(self) -> None:
        _require(bool(self.name) and self.name.replace("_", "").replace("-", "").isalnum(), "conditions[].name",
                 self.name, "a non-empty name of letters, digits, '_' and '-'")
        _require(self.init in INIT_KINDS, f"conditions[{self.name}].init", self.init, "one of " + ", ".join(INIT_KINDS))
        _require(self.epochs >= 1, f"conditions[{self.name}].epochs", self.epochs, "an integer >= 1")
        _require(self.batch_size >= 2, f"conditions[{self.name}].batch_size", self.batch_size, "an integer >= 2")
        _require(self.lr > 0, f"conditions[{self.name}].lr", self.lr, "a learning rate > 0")
        _require(self.data_split in DATA_SPLITS, f"conditions[{self.name}].data_split", self.data_split,
                 "one of " + ", ".join(DATA_SPLITS))
        _require(self.replicates >= 1, f"conditions[{self.name}].replicates", self.replicates, "an integer >= 1")


@dataclass
class StudyInterpolationConfig:
    """Interpolation of each pair; see :class:`fedsign.fusion.InterpolationSettings`."""

    points: int = 11
    bn_mode: str = "recompute"
    bn_examples: int = 1000
    bn_batch_size: int = 256
    split: str = "test"

    def __post_init__(self) -> None:
        _require(self.points >= 3, "interpolation.points", self.points, "an integer >= 3")
        _require(self.bn_mode in ("interpolate", "recompute"), "interpolation.bn_mode", self.bn_mode,
                 "one of interpolate, recompute")
        _require(self.bn_examples >= 2, "interpolation.bn_examples", self.bn_examples, "an integer >= 2")
        _require(self.bn_batch_size >= 2, "interpolation.bn_batch_size", self.bn_batch_size, "an integer >= 2")
        _require(self.split in ("test", "train"), "interpolation.split", self.split, "one of test, train")


@dataclass
class FusionStudyConfig:
    """A whole fusion study: dataset, model, shared SGD settings, conditions and workers."""

    name: str = "fusion"
    seed: int = 0
    dataset: str = "digits"
    model: str = "cnn_bn"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    conditions: list[ConditionConfig] = field(default_factory=list)
    interpolation: StudyInterpolationConfig = field(default_factory=StudyInterpolationConfig)
    workers: int = 2

    def __post_init__(self) -> None:
        _require(bool(self.name) and "/" not in self.name, "name", self.name, "a non-empty folder name")
        _require(0.0 <= self.momentum < 1.0, "momentum", self.momentum, "a number in [0, 1)")
        _require(self.weight_decay >= 0, "weight_decay", self.weight_decay, "a number >= 0")
        _require(self.workers >= 1, "workers", self.workers, "an integer >= 1")
        _require(bool(self.conditions), "conditions", self.conditions, "a list of at least one condition")
        names = [condition.name for condition in self.conditions]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        _require(not duplicates, "conditions[].name", duplicates, "unique condition names")


def load_study_config(path: str | Path, overrides: list[str] | None = None) -> FusionStudyConfig:
    """Load and validate a fusion-study YAML file with dotted ``key=value`` overrides."""
    values = merge(read_yaml(path), parse_overrides(overrides or []))
    return from_dict(FusionStudyConfig, values)


# ---------------------------------------------------------------------------------------
# Pairs
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairSpec:
    """Everything that determines one trained pair; its hash names the pair's result file."""

    condition: str
    replicate: int
    init: str
    epochs: int
    batch_size: int
    lr: float
    data_split: str
    dataset: str
    model: str
    momentum: float
    weight_decay: float
    seed: int
    pretrain_classes: tuple[int, ...]
    pretrain_epochs: int
    interpolation: tuple[tuple[str, Any], ...]

    @property
    def pair_id(self) -> str:
        """Return ``<condition>-r<replicate>-<8 hex digits of the spec's hash>``."""
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.condition}-r{self.replicate}-{digest}"

    def interpolation_settings(self) -> InterpolationSettings:
        """Return the interpolation settings of this pair."""
        values = dict(self.interpolation)
        return InterpolationSettings(
            lambdas=lambda_grid(values["points"]), bn_mode=values["bn_mode"], bn_examples=values["bn_examples"],
            bn_batch_size=values["bn_batch_size"], split=values["split"], seed=self.seed,
        )


def build_pairs(config: FusionStudyConfig) -> list[PairSpec]:
    """Return the pair specs of every condition and replicate, in config order."""
    pairs = []
    for condition in config.conditions:
        pretrained = condition.init == "pretrained"
        for replicate in range(condition.replicates):
            pairs.append(PairSpec(
                condition=condition.name, replicate=replicate, init=condition.init, epochs=condition.epochs,
                batch_size=condition.batch_size, lr=condition.lr, data_split=condition.data_split,
                dataset=config.dataset, model=config.model, momentum=config.momentum,
                weight_decay=config.weight_decay, seed=config.seed,
                # The pretraining settings only enter the hash of pairs that use them.
                pretrain_classes=tuple(config.pretrain.classes) if pretrained else (),
                pretrain_epochs=config.pretrain.epochs if pretrained else 0,
                interpolation=tuple(sorted(asdict(config.interpolation).items())),
            ))
    return pairs


# Splits loaded in this process, by dataset name, so a worker builds its dataset once
# for all the pairs it trains.
_SPLITS: dict[str, DatasetSplits] = {}


def _splits(name: str) -> DatasetSplits:
    if name not in _SPLITS:
        _SPLITS[name] = load_dataset(name, download=False)
    return _SPLITS[name]


def _new_model(spec: PairSpec, splits: DatasetSplits, init_seed: int) -> nn.Module:
    torch.manual_seed(init_seed)
    return build_model(spec.model, input_shape=splits.input_shape, num_classes=splits.num_classes)


def _sgd(spec: PairSpec, batch_size: int) -> SGDSettings:
    return SGDSettings(epochs=1, batch_size=batch_size, lr=spec.lr, momentum=spec.momentum,
                       weight_decay=spec.weight_decay, clip_norm=0.0)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def initial_models(spec: PairSpec, splits: DatasetSplits) -> tuple[nn.Module, nn.Module]:
    """Return the starting models of A and B: one shared init, two inits, or a pre-trained start."""
    seed_a = derive_seed(spec.seed, "fusion-init", spec.replicate)
    start_a = _new_model(spec, splits, seed_a)
    if spec.init == "separate":
        return start_a, _new_model(spec, splits, derive_seed(spec.seed, "fusion-init-b", spec.replicate))
    if spec.init == "pretrained":
        mask = torch.isin(splits.train_y, torch.tensor(spec.pretrain_classes))
        x, y = splits.train_x[mask], splits.train_y[mask]
        for epoch in range(1, spec.pretrain_epochs + 1):
            generator = torch_generator(spec.seed, "fusion-pretrain-order", spec.replicate, epoch)
            train_local(start_a, x, y, settings=_sgd(spec, 32), generator=generator)
    return start_a, copy.deepcopy(start_a)


def training_data(spec: PairSpec, splits: DatasetSplits) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """Return the training data of A and B: the whole split twice, or two disjoint random halves."""
    x, y = splits.train_x, splits.train_y
    if spec.data_split == "full":
        return (x, y), (x, y)
    generator = torch_generator(spec.seed, "fusion-halves", spec.replicate)
    order = torch.randperm(len(y), generator=generator)
    half_a, half_b = order[: len(y) // 2], order[len(y) // 2:]
    return (x[half_a], y[half_a]), (x[half_b], y[half_b])


def train_pair(spec: PairSpec) -> dict[str, Any]:
    """Train one pair, record SSR per epoch, interpolate it and return the pair's result.

    The returned mapping is what ``pairs/<pair_id>.json`` stores: the spec, the test
    accuracies of A and B, the final SSRs, ``ssr_epochs`` rows (epoch, comparison, group,
    ssr), the interpolation ``curve`` rows and its ``summary``.
    """
    started = time.monotonic()
    splits = _splits(spec.dataset)
    model_a, model_b = initial_models(spec, splits)
    init_a, init_b = _state(model_a), _state(model_b)
    groups = ssr_groups(model_a)
    data_a, data_b = training_data(spec, splits)

    ssr_rows: list[dict[str, Any]] = []
    for epoch in range(spec.epochs + 1):
        if epoch > 0:
            # NOTE: train_local builds a new optimizer per call, so momentum restarts every epoch,
            # as in `fedsign train`.
            for model, (x, y), label in ((model_a, data_a, "a"), (model_b, data_b, "b")):
                generator = torch_generator(spec.seed, f"fusion-order-{label}", spec.replicate, epoch)
                train_local(model, x, y, settings=_sgd(spec, spec.batch_size), generator=generator)
        state_a, state_b = _state(model_a), _state(model_b)
        for comparison, (u, v) in (("IA", (init_a, state_a)), ("IB", (init_b, state_b)), ("AB", (state_a, state_b))):
            for group, value in ssr_by_group(u, v, groups).items():
                ssr_rows.append({"epoch": epoch, "comparison": comparison, "group": group, "ssr": value})

    accuracy_a = evaluate(model_a, splits.test_x, splits.test_y)[1]
    accuracy_b = evaluate(model_b, splits.test_x, splits.test_y)[1]
    settings = spec.interpolation_settings()
    eval_x, eval_y = evaluation_data(splits, settings)
    working = copy.deepcopy(model_a)
    curve = interpolation_curve(working, _state(model_a), _state(model_b), settings=settings,
                                eval_x=eval_x, eval_y=eval_y, bn_x=bn_subset(splits, settings))
    final = {row["comparison"]: row["ssr"] for row in ssr_rows
             if row["epoch"] == spec.epochs and row["group"] == "all"}
    return {
        "pair_id": spec.pair_id,
        "spec": asdict(spec),
        "test_accuracy_a": accuracy_a,
        "test_accuracy_b": accuracy_b,
        "ssr_ia": final["IA"],
        "ssr_ib": final["IB"],
        "ssr_ab": final["AB"],
        "summary": summarize_curve(curve),
        "curve": curve,
        "ssr_epochs": ssr_rows,
        "wall_time_s": round(time.monotonic() - started, 3),
    }


def _init_worker() -> None:
    # Two single-threaded workers are faster than two workers competing for both cores.
    torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------
# Running the study
# ---------------------------------------------------------------------------------------


def run_study(config: FusionStudyConfig, output_dir: Path) -> dict[str, Any]:
    """Train the missing pairs of a study, then write its tables, correlations and plots.

    Returns a mapping with ``study_dir``, the counts ``trained``, ``reused`` and ``failed``,
    and the ``correlations`` rows. Raises ``fedsign.engine.RunFailedError`` after writing
    the results of the other pairs when a pair failed.
    """
    from fedsign.engine import RunFailedError

    _splits(config.dataset)  # Raises on an unknown dataset before anything is written.
    _new_model(build_pairs(config)[0], _SPLITS[config.dataset], 0)  # Raises on a bad model name.
    check_output_dir(output_dir)
    study_dir = output_dir / config.name
    (study_dir / PAIRS_DIR).mkdir(parents=True, exist_ok=True)
    import yaml

    (study_dir / STUDY_CONFIG_FILE).write_text(yaml.safe_dump(asdict(config), sort_keys=False))

    pairs = build_pairs(config)
    todo = [spec for spec in pairs if not (study_dir / PAIRS_DIR / f"{spec.pair_id}.json").is_file()]
    logger.info("fusion study %s: %d pairs, %d already completed, %d to train on %d worker(s)",
                config.name, len(pairs), len(pairs) - len(todo), len(todo), min(config.workers, max(len(todo), 1)))
    failures = _train_pairs(todo, study_dir, workers=config.workers)

    results = [json.loads(path.read_text()) for spec in pairs
               if (path := study_dir / PAIRS_DIR / f"{spec.pair_id}.json").is_file()]
    correlations = write_study_tables(study_dir, results)
    plot_study(study_dir)
    outcome = {"study_dir": study_dir, "trained": len(todo) - len(failures), "reused": len(pairs) - len(todo),
               "failed": len(failures), "correlations": correlations}
    if failures:
        raise RunFailedError(f"{len(failures)} of {len(pairs)} pairs failed ({'; '.join(failures[:3])}); "
                             f"the other pairs are saved in {study_dir / PAIRS_DIR} and a rerun retrains only these")
    return outcome


def _train_pairs(todo: list[PairSpec], study_dir: Path, *, workers: int) -> list[str]:
    """Train pairs, saving each result as it completes, and return one line per failed pair."""
    # Longest first, so that the last pair to start is a short one; steps per epoch grow as 1/batch size.
    todo = sorted(todo, key=lambda spec: spec.epochs * (1 + 64 / spec.batch_size), reverse=True)
    failures: list[str] = []
    if workers == 1 or len(todo) <= 1:
        for spec in todo:
            try:
                result = train_pair(spec)
            except Exception as error:  # noqa: BLE001 - a failed pair is reported, the others continue.
                failures.append(_report_failure(spec, error))
                continue
            _save_pair(study_dir, result)
        return failures

    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=context,
                                                initializer=_init_worker) as pool:
        futures = {pool.submit(train_pair, spec): spec for spec in todo}
        for future in concurrent.futures.as_completed(futures):
            spec = futures[future]
            try:
                result = future.result()
            except Exception as error:  # noqa: BLE001 - a failed pair is reported, the others continue.
                failures.append(_report_failure(spec, error))
                continue
            _save_pair(study_dir, result)
    return failures


def _report_failure(spec: PairSpec, error: Exception) -> str:
    logger.error("pair %s failed: %s: %s", spec.pair_id, type(error).__name__, error)
    return f"{spec.pair_id}: {type(error).__name__}: {error}"


def _save_pair(study_dir: Path, result: dict[str, Any]) -> None:
    path = study_dir / PAIRS_DIR / f"{result['pair_id']}.json"
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(result) + "\n")
    temporary.replace(path)
    summary = result["summary"]
    logger.info("pair %s done in %.1f s: SSR-AB %.4f, midpoint accuracy %.4f, gap %.4f",
                result["pair_id"], result["wall_time_s"], result["ssr_ab"], summary["midpoint_accuracy"],
                summary["accuracy_gap"])


# ---------------------------------------------------------------------------------------
# Tables, correlations and plots
# ---------------------------------------------------------------------------------------


def correlate(x: list[float], y: list[float]) -> dict[str, float]:
    """Return Pearson's r and Spearman's ρ of ``x`` and ``y`` with two-sided p-values and n.

    With fewer than three pairs or a constant input the coefficients are undefined and
    returned as NaN.
    """
    from scipy import stats

    n = len(x)
    undefined = {"pearson_r": math.nan, "pearson_p": math.nan, "spearman_rho": math.nan,
                 "spearman_p": math.nan, "n": n}
    if n != len(y):
        raise ValueError(f"correlate needs equally long inputs, got {n} and {len(y)}")
    if n < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return undefined
    pearson = stats.pearsonr(x, y)
    spearman = stats.spearmanr(x, y)
    return {"pearson_r": float(pearson.statistic), "pearson_p": float(pearson.pvalue),
            "spearman_rho": float(spearman.statistic), "spearman_p": float(spearman.pvalue), "n": n}


def write_study_tables(study_dir: Path, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Write pairs.csv, ssr_epochs.csv, interpolation_curves.csv and the correlations; return them."""
    import pandas as pd

    pair_rows, epoch_rows, curve_rows = [], [], []
    for result in results:
        spec = result["spec"]
        keys = {"pair_id": result["pair_id"], "condition": spec["condition"], "replicate": spec["replicate"]}
        pair_rows.append({
            **keys, "init": spec["init"], "epochs": spec["epochs"], "batch_size": spec["batch_size"],
            "data_split": spec["data_split"], "ssr_ia": result["ssr_ia"], "ssr_ib": result["ssr_ib"],
            "ssr_ab": result["ssr_ab"], "test_accuracy_a": result["test_accuracy_a"],
            "test_accuracy_b": result["test_accuracy_b"], **result["summary"],
        })
        epoch_rows += [{**keys, **row} for row in result["ssr_epochs"]]
        curve_rows += [{**keys, **row} for row in result["curve"]]
    pairs = pd.DataFrame(pair_rows)
    pairs.to_csv(study_dir / PAIRS_CSV, index=False)
    pd.DataFrame(epoch_rows).to_csv(study_dir / SSR_EPOCHS_CSV, index=False)
    pd.DataFrame(curve_rows).to_csv(study_dir / CURVES_CSV, index=False)

    # "common_start" leaves out the pairs from two separate initialisations, whose SSR-AB sits
    # near 0.5, to show whether the correlation remains without that cluster.
    subsets = {"all_pairs": pairs, "common_start": pairs[pairs["init"] != "separate"] if len(pairs) else pairs}
    correlations = []
    for subset, frame in subsets.items():
        for target in TARGETS:
            values = correlate(frame["ssr_ab"].tolist(), frame[target].tolist()) if len(frame) else correlate([], [])
            correlations.append({"subset": subset, "x": "ssr_ab", "target": target, **values})
    pd.DataFrame(correlations).to_csv(study_dir / CORRELATIONS_CSV, index=False)
    (study_dir / CORRELATIONS_JSON).write_text(json.dumps(correlations, indent=2) + "\n")
    return correlations


def plot_study(study_dir: Path) -> list[Path]:
    """Draw the SSR-AB scatter plots, the SSR-over-epochs curves and the interpolation curves from the CSVs."""
    import matplotlib

    matplotlib.use("Agg")  # Plots are files; no display is needed or assumed.
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd
    import seaborn as sns

    pairs = pd.read_csv(study_dir / PAIRS_CSV)
    if pairs.empty:
        return []
    correlations = pd.read_csv(study_dir / CORRELATIONS_CSV)
    correlations = correlations[correlations["subset"] == "all_pairs"].set_index("target")
    written = []

    figure, axes = plt.subplots(1, len(TARGETS), figsize=(4.2 * len(TARGETS), 3.8))
    for ax, target in zip(axes, TARGETS, strict=True):
        sns.scatterplot(data=pairs, x="ssr_ab", y=target, hue="condition", style="init", ax=ax, s=40)
        if len(pairs) >= 2 and pairs["ssr_ab"].nunique() > 1:
            slope, intercept = np.polyfit(pairs["ssr_ab"], pairs[target], 1)
            xs = np.linspace(pairs["ssr_ab"].min(), pairs["ssr_ab"].max(), 50)
            ax.plot(xs, slope * xs + intercept, color="black", linewidth=1, label="least-squares fit")
        row = correlations.loc[target]
        ax.set(xlabel="SSR-AB (final, all parameters)", ylabel=target.replace("_", " "),
               title=f"all pairs: r = {row['pearson_r']:.2f} (p = {row['pearson_p']:.1g}), "
                     f"ρ = {row['spearman_rho']:.2f}, n = {int(row['n'])}")
        ax.title.set_fontsize(8)
        legend = ax.get_legend()
        if legend is not None and ax is not axes[-1]:
            legend.remove()
    axes[-1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.tight_layout()
    figure.savefig(study_dir / SCATTER_PLOT, dpi=100)
    plt.close(figure)
    written.append(study_dir / SCATTER_PLOT)

    epochs = pd.read_csv(study_dir / SSR_EPOCHS_CSV)
    overall = epochs[epochs["group"] == "all"]
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
    for ax, comparison in zip(axes, ("IA", "IB", "AB"), strict=True):
        sns.lineplot(data=overall[overall["comparison"] == comparison], x="epoch", y="ssr", hue="condition",
                     errorbar=("pi", 100), ax=ax)
        ax.set(title=f"SSR-{comparison} over training (band: min–max over replicates)", ylabel="SSR")
        ax.title.set_fontsize(8)
        if ax is not axes[-1] and ax.get_legend() is not None:
            ax.get_legend().remove()
    axes[-1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.tight_layout()
    figure.savefig(study_dir / SSR_EPOCHS_PLOT, dpi=100)
    plt.close(figure)
    written.append(study_dir / SSR_EPOCHS_PLOT)

    curves = pd.read_csv(study_dir / CURVES_CSV)
    figure, ax = plt.subplots(figsize=(6.5, 3.8))
    sns.lineplot(data=curves, x="lambda", y="accuracy", hue="condition", errorbar=("pi", 100), ax=ax)
    ax.set(xlabel="λ  (0 = A, 1 = B)", ylabel="test accuracy", title="interpolation curves (band: min–max)")
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.tight_layout()
    figure.savefig(study_dir / CURVES_PLOT, dpi=100)
    plt.close(figure)
    written.append(study_dir / CURVES_PLOT)
    return written
