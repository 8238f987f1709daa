"""Plots drawn from the tidy files of a run directory, so they can be redrawn at any time."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # Plots are files; no display is needed or assumed.

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from fedsign.results import ACCURACY_PLOT, METRICS_FILE, SIGN_PLOT  # noqa: E402

logger = logging.getLogger(__name__)

SIGN_METRICS = ("ssr_client_global_mean", "ssr_client_global_min", "ssr_pairwise_mean", "ssr_global_consecutive")


def plot_run(run_dir: Path) -> list[Path]:
    """Draw test accuracy/loss and the sign diagnostics per round from ``metrics.csv``."""
    metrics = pd.read_csv(run_dir / METRICS_FILE)
    written = []
    server = metrics[(metrics["scope"] == "server") & metrics["metric"].isin(["accuracy", "loss"])]
    if not server.empty:
        figure, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for ax, name in zip(axes, ["accuracy", "loss"], strict=True):
            sns.lineplot(data=server[server["metric"] == name], x="round", y="value", marker="o", ax=ax)
            ax.set(title=f"global model test {name}", xlabel="round", ylabel=name)
        figure.tight_layout()
        figure.savefig(run_dir / ACCURACY_PLOT, dpi=120)
        plt.close(figure)
        written.append(run_dir / ACCURACY_PLOT)

    signs = metrics[(metrics["scope"] == "train") & metrics["metric"].isin(SIGN_METRICS)]
    if not signs.empty:
        figure, ax = plt.subplots(figsize=(6.5, 3.8))
        sns.lineplot(data=signs, x="round", y="value", hue="metric", marker="o", ax=ax)
        ax.set(title="same-sign ratio (SSR) per round", xlabel="round", ylabel="SSR")
        figure.tight_layout()
        figure.savefig(run_dir / SIGN_PLOT, dpi=120)
        plt.close(figure)
        written.append(run_dir / SIGN_PLOT)
    return written
