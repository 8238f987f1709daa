"""The comparison report: methods as rows, one column per heterogeneity level, mean ± std over seeds.

:func:`write_report` reads completed run directories (``fedsign run`` or ``fedsign grid``
output), writes tidy CSV files first and then draws the Markdown table and the plots from
them, so a report can be redrawn without reading the runs again:

- ``report_runs.csv``: one row per run (dataset, method, column value, seed, final
  accuracy, mean accuracy over the last k evaluated rounds, best accuracy);
- ``report_table.csv``: mean, std and seed count per dataset, method, column value and
  metric (``final`` or ``last_k``);
- ``report_curves.csv``: per run and round, the test accuracy and the sign diagnostics;
- ``report.md``: per dataset, the tables of both metrics in percent, and the difference
  of each method to FedAvg in percentage points when FedAvg is among the runs;
- ``accuracy_<dataset>.png`` and ``sign_diagnostics_<dataset>.png``: curves per round,
  mean over seeds with a band (95% bootstrap confidence interval or ±1 std).

A method's label is its strategy name, ``+`` its extra objectives, and in brackets every
config key whose value differs among the runs of that strategy and dataset (other than
the seed, the column key and the ``engine`` section), e.g. ``fedsign (sign.beta=0.1)``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # Plots are files; no display is needed or assumed.

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from fedsign.config import Config, load_config, strategy_label  # noqa: E402
from fedsign.errors import UserInputError  # noqa: E402
from fedsign.plots import SIGN_METRICS  # noqa: E402
from fedsign.results import CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, check_output_dir, is_completed  # noqa: E402

logger = logging.getLogger(__name__)

# Every file name the report writes, in one place.
REPORT_MARKDOWN = "report.md"
REPORT_TABLE = "report_table.csv"
REPORT_RUNS = "report_runs.csv"
REPORT_CURVES = "report_curves.csv"
ACCURACY_CURVES = "accuracy_{dataset}.png"
SIGN_CURVES = "sign_diagnostics_{dataset}.png"

METRIC_TITLES = {
    "final": "Final test accuracy (%)",
    "last_k": "Mean test accuracy over the last {k} evaluated rounds (%)",
}
BANDS = ("ci", "sd")
# Config keys never used to tell methods apart.
IGNORED_PREFIXES = ("seed", "name", "engine.")


@dataclass(frozen=True)
class ReportFiles:
    """Paths of everything :func:`write_report` wrote."""

    markdown: Path
    table: Path
    runs: Path
    curves: Path
    plots: tuple[Path, ...]


def find_run_dirs(paths: list[Path]) -> list[Path]:
    """Return the completed run directories among ``paths`` and their direct subfolders.

    A path that contains a ``summary.json`` is a run directory; any other folder is searched
    one level deep (a grid's output folder). Failed and unfinished runs are skipped with
    a warning.
    """
    candidates: list[Path] = []
    for path in paths:
        if not path.is_dir():
            raise UserInputError(f"run directory not found: {path}")
        if (path / SUMMARY_FILE).is_file():
            candidates.append(path)
        else:
            candidates.extend(sorted(child for child in path.iterdir()
                                     if child.is_dir() and (child / SUMMARY_FILE).is_file()))
    completed = [path for path in candidates if is_completed(path) and (path / METRICS_FILE).is_file()]
    skipped = len(candidates) - len(completed)
    if skipped:
        logger.warning("skipped %d run directories that did not complete", skipped)
    federated = [path for path in completed if _is_federated(path)]
    if len(federated) < len(completed):
        logger.warning("skipped %d central training runs (fedsign train); the report compares federated runs",
                       len(completed) - len(federated))
    completed = federated
    if not completed:
        raise UserInputError(f"no completed run directory in {', '.join(str(p) for p in paths)}; "
                             "pass the output folder of fedsign grid or run directories")
    return completed


def _is_federated(run_dir: Path) -> bool:
    """Return whether ``run_dir`` is a federated run: its metrics.csv counts rounds, not epochs."""
    with (run_dir / METRICS_FILE).open() as handle:
        return handle.readline().startswith("round,")


def collect_runs(run_dirs: list[Path], *, column: str = "data.alpha", last_k: int = 5) -> tuple[pd.DataFrame,
                                                                                                  pd.DataFrame]:
    """Return one row per run and the tidy per-round curves of ``run_dirs``.

    ``column`` is the dotted config key of the table's columns; ``last_k`` is how many of
    the last evaluated rounds (round > 0) the ``last_k`` metric averages.
    """
    if last_k < 1:
        raise UserInputError(f"invalid --last-k {last_k}: expected an integer >= 1")
    configs = [load_config(run_dir / CONFIG_FILE) for run_dir in run_dirs]
    labels = method_labels(configs, column)
    rows, curves = [], []
    for run_dir, config, label in zip(run_dirs, configs, labels, strict=True):
        metrics = pd.read_csv(run_dir / METRICS_FILE)
        accuracy = metrics[(metrics["scope"] == "server") & (metrics["metric"] == "accuracy") & (metrics["round"] > 0)]
        accuracy = accuracy.sort_values("round")
        value = _lookup(config, column)
        rows.append({
            "dataset": config.data.dataset, "method": label, "column": value, "seed": config.seed,
            "rounds": int(accuracy["round"].max()) if not accuracy.empty else 0,
            "final": float(accuracy["value"].iloc[-1]) if not accuracy.empty else math.nan,
            "last_k": float(accuracy["value"].iloc[-last_k:].mean()) if not accuracy.empty else math.nan,
            "best": float(accuracy["value"].max()) if not accuracy.empty else math.nan,
            "run_dir": str(run_dir),
        })
        curve_rows = metrics[((metrics["scope"] == "server") & (metrics["metric"] == "accuracy"))
                        | ((metrics["scope"] == "train") & metrics["metric"].isin(SIGN_METRICS))]
        curves.append(curve_rows.assign(dataset=config.data.dataset, method=label, column=value, seed=config.seed)
                      [["dataset", "method", "column", "seed", "round", "metric", "value"]])
    runs = pd.DataFrame(rows)
    return runs, pd.concat(curves, ignore_index=True)


def method_labels(configs: list[Config], column: str) -> list[str]:
    """Return each run's method label (see the module docstring)."""
    flat = [_flatten(config.to_dict()) for config in configs]
    groups: dict[tuple[str, str], list[int]] = {}
    for index, config in enumerate(configs):
        groups.setdefault((config.data.dataset, config.strategy.name), []).append(index)

    labels = [""] * len(configs)
    for (_, name), members in groups.items():
        keys = sorted({key for i in members for key in flat[i]})
        varying = [key for key in keys if key != column and not key.startswith(IGNORED_PREFIXES)
                   and len({repr(flat[i].get(key)) for i in members}) > 1]
        for i in members:
            extras = "".join(f"+{objective}" for objective in configs[i].strategy.objectives)
            label = strategy_label(name) + extras
            if varying:
                label += " (" + ", ".join(f"{key}={flat[i].get(key)}" for key in varying) + ")"
            labels[i] = label
    return labels


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Return mean, std (ddof 1, NaN for one seed) and seed count per dataset, method, column and metric."""
    long = runs.melt(id_vars=["dataset", "method", "column", "seed"], value_vars=["final", "last_k"],
                     var_name="metric", value_name="accuracy")
    table = (long.groupby(["dataset", "method", "column", "metric"], sort=False)["accuracy"]
             .agg(mean="mean", std="std", seeds="count").reset_index())
    return table


def markdown_report(table: pd.DataFrame, *, column: str, last_k: int, baseline: str = "fedavg") -> str:
    """Return the Markdown tables of ``table`` (as written by :func:`summarize`), best mean in bold."""
    sections = []
    for dataset, subset in table.groupby("dataset", sort=True):
        sections.append(f"## {dataset}\n")
        for metric in ("last_k", "final"):
            cells = subset[subset["metric"] == metric]
            title = METRIC_TITLES[metric].format(k=last_k)
            sections.append(f"{title}, mean ± std over seeds (number of seeds in brackets), columns {column}:\n")
            sections.append(_cell_table(cells, column))
            if metric == "last_k" and baseline in set(cells["method"]) and cells["method"].nunique() > 1:
                sections.append(f"Difference of the means to {baseline} in percentage points "
                                f"(negative: below {baseline}):\n")
                sections.append(_difference_table(cells, column, baseline))
    return "\n".join(sections)


def plot_curves(curves: pd.DataFrame, output_dir: Path, *, band: str = "ci", column: str = "data.alpha") -> list[Path]:
    """Draw accuracy and sign-diagnostic curves per dataset from the tidy curves (one panel per column value)."""
    if band not in BANDS:
        raise UserInputError(f"invalid --band {band!r}: expected one of {', '.join(BANDS)}")
    errorbar = ("ci", 95) if band == "ci" else "sd"
    written = []
    for dataset, subset in curves.groupby("dataset", sort=True):
        columns = sorted(subset["column"].unique(), key=str)
        accuracy = subset[(subset["metric"] == "accuracy") & (subset["round"] > 0)]
        palette = _palette(subset)
        figure, axes = plt.subplots(1, len(columns), figsize=(5 * len(columns), 4), squeeze=False, sharey=True)
        for ax, value in zip(axes[0], columns, strict=True):
            sns.lineplot(data=accuracy[accuracy["column"] == value], x="round", y="value", hue="method",
                         palette=palette, errorbar=errorbar, seed=0, ax=ax, legend=False)
            ax.set(title=f"{dataset}, {column}={value}", xlabel="round", ylabel="test accuracy")
        _add_legend(figure, palette)
        written.append(_save(figure, output_dir / ACCURACY_CURVES.format(dataset=dataset)))

        signs = subset[subset["metric"].isin(SIGN_METRICS)]
        metrics = [metric for metric in SIGN_METRICS if metric in set(signs["metric"])]
        if not metrics:
            continue
        figure, axes = plt.subplots(len(metrics), len(columns), figsize=(5 * len(columns), 3.2 * len(metrics)),
                                    squeeze=False, sharex=True)
        for row, metric in enumerate(metrics):
            for col, value in enumerate(columns):
                ax = axes[row][col]
                data = signs[(signs["metric"] == metric) & (signs["column"] == value)]
                sns.lineplot(data=data, x="round", y="value", hue="method", palette=palette, errorbar=errorbar,
                             seed=0, ax=ax, legend=False)
                ax.set(title=f"{column}={value}", xlabel="round", ylabel=metric)
        _add_legend(figure, palette)
        figure.suptitle(f"{dataset}: same-sign ratios per round")
        written.append(_save(figure, output_dir / SIGN_CURVES.format(dataset=dataset)))
    return written


def write_report(paths: list[Path], output_dir: Path, *, column: str = "data.alpha", last_k: int = 5,
                 band: str = "ci") -> ReportFiles:
    """Write the comparison report of the run directories in ``paths`` into ``output_dir``."""
    if band not in BANDS:
        raise UserInputError(f"invalid --band {band!r}: expected one of {', '.join(BANDS)}")
    run_dirs = find_run_dirs(paths)
    check_output_dir(output_dir)
    runs, curves = collect_runs(run_dirs, column=column, last_k=last_k)
    table = summarize(runs)

    files = ReportFiles(markdown=output_dir / REPORT_MARKDOWN, table=output_dir / REPORT_TABLE,
                        runs=output_dir / REPORT_RUNS, curves=output_dir / REPORT_CURVES, plots=())
    runs.rename(columns={"column": column}).to_csv(files.runs, index=False)
    table.rename(columns={"column": column}).to_csv(files.table, index=False)
    curves.rename(columns={"column": column}).to_csv(files.curves, index=False)

    # Everything below is drawn from the files just written.
    table = pd.read_csv(files.table).rename(columns={column: "column"})
    files.markdown.write_text(markdown_report(table, column=column, last_k=last_k))
    plots = plot_curves(pd.read_csv(files.curves).rename(columns={column: "column"}), output_dir, band=band,
                        column=column)
    logger.info("report of %d runs written to %s", len(run_dirs), output_dir)
    return ReportFiles(markdown=files.markdown, table=files.table, runs=files.runs, curves=files.curves,
                       plots=tuple(plots))


def _cell_table(cells: pd.DataFrame, column: str) -> str:
    columns = sorted(cells["column"].unique(), key=_sort_key)
    methods = _method_order(cells)
    best = cells.groupby("column")["mean"].max()
    lines = ["| method | " + " | ".join(f"{column}={value}" for value in columns) + " |",
             "|:--|" + "--:|" * len(columns)]
    for method in methods:
        row = []
        for value in columns:
            match = cells[(cells["method"] == method) & (cells["column"] == value)]
            if match.empty:
                row.append("–")
                continue
            mean, std, seeds = match.iloc[0][["mean", "std", "seeds"]]
            spread = "" if pd.isna(std) else f" ± {100 * std:.2f}"  # one seed has no std
            text = f"{100 * mean:.2f}{spread} ({int(seeds)})"
            row.append(f"**{text}**" if mean == best[value] else text)
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _difference_table(cells: pd.DataFrame, column: str, baseline: str) -> str:
    columns = sorted(cells["column"].unique(), key=_sort_key)
    reference = cells[cells["method"] == baseline].set_index("column")["mean"]
    lines = ["| method | " + " | ".join(f"{column}={value}" for value in columns) + " |",
             "|:--|" + "--:|" * len(columns)]
    for method in _method_order(cells):
        if method == baseline:
            continue
        row = []
        for value in columns:
            match = cells[(cells["method"] == method) & (cells["column"] == value)]
            if match.empty or value not in reference.index:
                row.append("–")
            else:
                row.append(f"{100 * (match.iloc[0]['mean'] - reference[value]):+.2f}")
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _method_order(cells: pd.DataFrame) -> list[str]:
    """Return the methods with FedAvg first and the rest in alphabetical order."""
    return sorted(set(cells["method"]), key=lambda method: (method != "fedavg", method))


def _sort_key(value: object) -> tuple[int, float | str]:
    try:
        return (0, float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return (1, str(value))


def _flatten(values: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value and prefix + key != "strategy.kwargs":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _lookup(config: Config, dotted: str) -> object:
    value: object = config
    for part in dotted.split("."):
        if not hasattr(value, part):
            raise UserInputError(f"invalid --column {dotted!r}: no config key {part!r} there; "
                                 "use a dotted key such as data.alpha")
        value = getattr(value, part)
    return value


def _palette(curves: pd.DataFrame) -> dict[str, tuple[float, float, float]]:
    """Return one colour per method, the same in every panel of a figure."""
    methods = _method_order(curves)
    colors = sns.color_palette("tab10" if len(methods) <= 10 else "tab20", len(methods))
    return dict(zip(methods, colors, strict=True))


def _add_legend(figure: plt.Figure, palette: dict[str, tuple[float, float, float]]) -> None:
    handles = [Line2D([0], [0], color=color, label=method) for method, color in palette.items()]
    figure.legend(handles=handles, title="method", loc="upper left", bbox_to_anchor=(1.0, 0.95), frameon=False)


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path
