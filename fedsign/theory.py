"""Theory demos of sign-consistent noise: ReLU on/off agreement and a linear softmax classifier.

Both demos compare an ordinary Gaussian direction ε with its sign-consistent version
ε' = |ε|·sign(θ_f), which moves every coordinate away from zero for λ > 0 and towards
zero for λ < 0.

- **ReLU agreement** (:func:`relu_agreement_curve`): for each λ, the 2×2 matrix of the
  fractions of (example, ReLU unit) pairs that are on (output > 0) or off in θ_f and in
  θ_f + λ·ε. BatchNorm layers keep θ_f's running statistics (eval mode).
- **Softmax demo** (:func:`softmax_curve`): for a linear softmax classifier
  p = softmax(W·x + b), the test error, the mean cross-entropy L, the trace of the exact
  Hessian of L, and the Taylor terms λ·gᵀε and ½λ²·εᵀHε at θ_f, along θ_f + λ·ε. With
  x̃ = [x; 1] and the parameters as one C×(D+1) matrix Θ, the per-example Hessian is
  (diag(p) − p·pᵀ) ⊗ x̃·x̃ᵀ, so tr H = mean_i (1 − ‖p_i‖²)·‖x̃_i‖² and
  εᵀHε = mean_i [Σ_c p_ic·u_ic² − (Σ_c p_ic·u_ic)²] with u_i = E·x̃_i. The weight decay
  used to train θ_f is not part of L or H here.

Noise scaling [choice]: in the ReLU demo each noise tensor is rescaled to ``scale`` times
the norm of its parameter tensor. In the softmax demo ε is rescaled to ``scale``·‖Θ_f‖ as
one vector.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fedsign.datasets import load_dataset
from fedsign.errors import UserInputError
from fedsign.models import select_parameters
from fedsign.results import check_output_dir

logger = logging.getLogger(__name__)

NOISE_KINDS = ("gaussian", "sign_consistent")

RELU_CSV = "relu_agreement.csv"
RELU_JSON = "relu_agreement.json"
RELU_PLOT = "relu_agreement.png"
SOFTMAX_CSV = "softmax_demo.csv"
SOFTMAX_JSON = "softmax_demo.json"
SOFTMAX_PLOT = "softmax_demo.png"


def symmetric_grid(points: int) -> list[float]:
    """Return ``points`` evenly spaced λ values in [−1, 1]; ``points`` must be odd so that 0 is one."""
    if points < 3 or points % 2 == 0:
        raise UserInputError(f"invalid number of λ points {points}: expected an odd integer >= 3, so that λ = 0 is included")
    return [round(-1.0 + 2.0 * index / (points - 1), 10) + 0.0 for index in range(points)]


# ---------------------------------------------------------------------------------------
# ReLU on/off agreement
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReluDemoSettings:
    """Settings of the ReLU agreement demo, saved with its results."""

    points: int = 21
    scale: float = 1.0
    examples: int = 500
    noise_seed: int = 0
    group: str = "all"

    def __post_init__(self) -> None:
        symmetric_grid(self.points)
        if not self.scale > 0:
            raise UserInputError(f"invalid noise scale {self.scale}: expected a number > 0")
        if self.examples < 1:
            raise UserInputError(f"invalid number of examples {self.examples}: expected an integer >= 1")


def noise_directions(
    state: Mapping[str, torch.Tensor], names: list[str], *, scale: float, seed: int
) -> dict[str, dict[str, torch.Tensor]]:
    """Return Gaussian and sign-consistent noise per tensor, each rescaled to ``scale``·‖θ_tensor‖."""
    generator = torch.Generator().manual_seed(seed)
    gaussian: dict[str, torch.Tensor] = {}
    for name in names:
        theta = state[name].detach().float().cpu()
        noise = torch.randn(theta.shape, generator=generator)
        gaussian[name] = noise * (scale * theta.norm() / noise.norm().clamp_min(1e-12))
    sign_consistent = {name: noise.abs() * torch.sign(state[name].detach().float().cpu())
                       for name, noise in gaussian.items()}
    return {"gaussian": gaussian, "sign_consistent": sign_consistent}


def relu_states(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Return a flat boolean vector: for every example and ReLU output unit, whether it is on (> 0)."""
    captured: list[torch.Tensor] = []
    hooks = [module.register_forward_hook(lambda _m, _i, output: captured.append((output > 0).reshape(len(x), -1)))
             for module in model.modules() if isinstance(module, nn.ReLU)]
    if not hooks:
        raise UserInputError("the model has no nn.ReLU module, so there are no ReLU units to compare")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return torch.cat(captured, dim=1).reshape(-1)


def agreement_matrix(reference: torch.Tensor, perturbed: torch.Tensor) -> dict[str, float]:
    """Return the 2×2 on/off matrix (fractions) of two boolean unit-state vectors and their agreement."""
    count = reference.numel()
    on_on = (reference & perturbed).sum().item() / count
    on_off = (reference & ~perturbed).sum().item() / count
    off_on = (~reference & perturbed).sum().item() / count
    off_off = (~reference & ~perturbed).sum().item() / count
    return {"on_on": on_on, "on_off": on_off, "off_on": off_on, "off_off": off_off,
            "agreement": on_on + off_off, "on_fraction": on_on + off_on}


def relu_agreement_curve(
    model: nn.Module, x: torch.Tensor, *, settings: ReluDemoSettings
) -> list[dict[str, float | str]]:
    """Return one row per noise kind and λ: the on/off matrix of θ_f against θ_f + λ·ε.

    The parameters of ``settings.group`` are set to θ_f + λ·ε in place for each point and
    restored to θ_f at the end.
    """
    names = select_parameters(model, settings.group)
    theta = {name: tensor.detach().clone() for name, tensor in model.named_parameters()}
    directions = noise_directions(theta, names, scale=settings.scale, seed=settings.noise_seed)
    parameters = dict(model.named_parameters())
    reference = relu_states(model, x)
    rows: list[dict[str, float | str]] = []
    try:
        for kind, noise in directions.items():
            for lam in symmetric_grid(settings.points):
                with torch.no_grad():
                    for name in names:
                        parameters[name].copy_(theta[name] + lam * noise[name].to(theta[name].device))
                rows.append({"noise": kind, "lambda": lam, **agreement_matrix(reference, relu_states(model, x))})
    finally:
        with torch.no_grad():
            for name in names:
                parameters[name].copy_(theta[name])
    return rows


def run_relu_demo(ref, *, settings: ReluDemoSettings, output_dir: Path) -> dict:
    """Compute, write (CSV, JSON, plot) and return the ReLU agreement demo for one model."""
    from fedsign.fusion import ModelLoader

    model, config, splits, path = ModelLoader().load(ref)
    select_parameters(model, settings.group)  # Raises on a bad group before anything is written.
    check_output_dir(output_dir)
    x = splits.test_x[:settings.examples]
    rows = relu_agreement_curve(model, x, settings=settings)
    summary = {}
    for kind in NOISE_KINDS:
        own = [row for row in rows if row["noise"] == kind]
        summary[kind] = {
            "agreement_at_minus_1": next(row["agreement"] for row in own if row["lambda"] == -1.0),
            "agreement_at_plus_1": next(row["agreement"] for row in own if row["lambda"] == 1.0),
            "mean_agreement_negative": _mean(row["agreement"] for row in own if row["lambda"] < 0),
            "mean_agreement_positive": _mean(row["agreement"] for row in own if row["lambda"] > 0),
        }
    result = {"model": str(ref), "state_file": str(path), "dataset": config.data.dataset,
              "examples": len(x), "settings": asdict(settings), "summary": summary}
    _write_outputs(output_dir, rows, result, RELU_CSV, RELU_JSON)
    plot_relu_agreement(output_dir / RELU_CSV, output_dir / RELU_PLOT)
    return result


def plot_relu_agreement(csv_path: Path, png_path: Path) -> None:
    """Draw the on/off fractions against λ and the 2×2 matrices at λ = ±1, from the CSV."""
    plt, pd, sns = _plotting()
    rows = pd.read_csv(csv_path)
    figure, axes = plt.subplots(2, 3, figsize=(11, 6.2), gridspec_kw={"width_ratios": [2, 1, 1]})
    for row_axes, kind in zip(axes, NOISE_KINDS, strict=True):
        own = rows[rows["noise"] == kind]
        long = own.melt(id_vars=["lambda"], value_vars=["on_on", "on_off", "off_on", "off_off"],
                        var_name="θ_f / perturbed", value_name="fraction")
        sns.lineplot(data=long, x="lambda", y="fraction", hue="θ_f / perturbed", ax=row_axes[0])
        row_axes[0].set(title=f"{kind} noise: ReLU on/off fractions", xlabel="λ")
        for ax, lam in zip(row_axes[1:], (-1.0, 1.0), strict=True):
            point = own[own["lambda"] == lam].iloc[0]
            matrix = [[point["on_on"], point["on_off"]], [point["off_on"], point["off_off"]]]
            sns.heatmap(matrix, annot=True, fmt=".3f", vmin=0, vmax=1, cbar=False, cmap="Blues", ax=ax,
                        xticklabels=["on", "off"], yticklabels=["on", "off"])
            ax.set(title=f"λ = {lam:+g}", xlabel="θ_f + λ·ε", ylabel="θ_f")
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    plt.close(figure)


# ---------------------------------------------------------------------------------------
# Linear softmax classifier
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SoftmaxDemoSettings:
    """Settings of the softmax demo, saved with its results."""

    dataset: str = "digits"
    points: int = 41
    scale: float = 1.0
    epochs: int = 100
    weight_decay: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        symmetric_grid(self.points)
        if not self.scale > 0:
            raise UserInputError(f"invalid noise scale {self.scale}: expected a number > 0")
        if self.epochs < 1:
            raise UserInputError(f"invalid number of L-BFGS iterations {self.epochs}: expected an integer >= 1")
        if self.weight_decay < 0:
            raise UserInputError(f"invalid weight decay {self.weight_decay}: expected a number >= 0")


def with_bias_column(x: torch.Tensor) -> torch.Tensor:
    """Flatten inputs to (N, D) and append a column of ones, giving x̃ = [x; 1]."""
    flat = x.reshape(len(x), -1).double()
    return torch.cat([flat, torch.ones(len(flat), 1, dtype=flat.dtype)], dim=1)


def train_softmax(x_tilde: torch.Tensor, y: torch.Tensor, num_classes: int, *, iterations: int,
                  weight_decay: float) -> torch.Tensor:
    """Return Θ (C×(D+1)) minimising mean CE + (weight_decay/2)·‖W‖² by full-batch L-BFGS from zero."""
    theta = torch.zeros(num_classes, x_tilde.shape[1], dtype=x_tilde.dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS([theta], max_iter=iterations, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x_tilde @ theta.T, y) + 0.5 * weight_decay * theta[:, :-1].pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return theta.detach()


def softmax_loss_terms(theta: torch.Tensor, x_tilde: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Return probabilities, mean CE, error, the gradient G and tr H of the mean CE at Θ."""
    logits = x_tilde @ theta.T
    probabilities = logits.softmax(dim=1)
    one_hot = F.one_hot(y, theta.shape[0]).to(theta.dtype)
    return {
        "probabilities": probabilities,
        "loss": F.cross_entropy(logits, y),
        "error": (logits.argmax(dim=1) != y).double().mean(),
        "gradient": (probabilities - one_hot).T @ x_tilde / len(y),
        "hessian_trace": ((1 - probabilities.pow(2).sum(dim=1)) * x_tilde.pow(2).sum(dim=1)).mean(),
    }


def hessian_quadratic_form(probabilities: torch.Tensor, x_tilde: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """Return εᵀHε for the mean CE, with u_i = E·x̃_i: mean_i Σ_c p_ic·u_ic² − (Σ_c p_ic·u_ic)²."""
    u = x_tilde @ direction.T
    return ((probabilities * u.pow(2)).sum(dim=1) - (probabilities * u).sum(dim=1).pow(2)).mean()


def softmax_curve(theta: torch.Tensor, x_tilde: torch.Tensor, y: torch.Tensor, *, settings: SoftmaxDemoSettings
                  ) -> list[dict[str, float | str]]:
    """Return one row per noise kind and λ along Θ_f + λ·ε, with the Taylor terms at Θ_f."""
    generator = torch.Generator().manual_seed(settings.seed)
    gaussian = torch.randn(theta.shape, generator=generator, dtype=theta.dtype)
    gaussian = gaussian * (settings.scale * theta.norm() / gaussian.norm())
    directions = {"gaussian": gaussian, "sign_consistent": gaussian.abs() * torch.sign(theta)}
    at_optimum = softmax_loss_terms(theta, x_tilde, y)
    rows: list[dict[str, float | str]] = []
    for kind, direction in directions.items():
        slope = (at_optimum["gradient"] * direction).sum().item()
        curvature = hessian_quadratic_form(at_optimum["probabilities"], x_tilde, direction).item()
        for lam in symmetric_grid(settings.points):
            terms = softmax_loss_terms(theta + lam * direction, x_tilde, y)
            first, second = lam * slope, 0.5 * lam**2 * curvature
            rows.append({
                "noise": kind, "lambda": lam, "error": terms["error"].item(), "loss": terms["loss"].item(),
                "hessian_trace": terms["hessian_trace"].item(), "first_order": first, "second_order": second,
                "taylor_loss": at_optimum["loss"].item() + first + second,
            })
    return rows


def run_softmax_demo(*, settings: SoftmaxDemoSettings, output_dir: Path) -> dict:
    """Train Θ_f, compute, write (CSV, JSON, plot) and return the softmax demo."""
    splits = load_dataset(settings.dataset, download=False, seed=settings.seed)
    check_output_dir(output_dir)
    train_x, test_x = with_bias_column(splits.train_x), with_bias_column(splits.test_x)
    theta = train_softmax(train_x, splits.train_y, splits.num_classes, iterations=settings.epochs,
                          weight_decay=settings.weight_decay)
    rows = softmax_curve(theta, test_x, splits.test_y, settings=settings)
    at_optimum = softmax_loss_terms(theta, test_x, splits.test_y)
    summary = {}
    for kind in NOISE_KINDS:
        own = [row for row in rows if row["noise"] == kind]
        summary[kind] = {
            "mean_error_negative": _mean(row["error"] for row in own if row["lambda"] < 0),
            "mean_error_positive": _mean(row["error"] for row in own if row["lambda"] > 0),
            "hessian_trace_at_minus_1": next(row["hessian_trace"] for row in own if row["lambda"] == -1.0),
            "hessian_trace_at_plus_1": next(row["hessian_trace"] for row in own if row["lambda"] == 1.0),
            "gradient_dot_noise": next(row["first_order"] for row in own if row["lambda"] == 1.0),
            "noise_hessian_noise": 2 * next(row["second_order"] for row in own if row["lambda"] == 1.0),
        }
    result = {
        "dataset": settings.dataset, "settings": asdict(settings), "split": "test",
        "theta_f": {"error": at_optimum["error"].item(), "loss": at_optimum["loss"].item(),
                    "hessian_trace": at_optimum["hessian_trace"].item(), "norm": theta.norm().item(),
                    "positive_fraction": (theta > 0).double().mean().item()},
        "summary": summary,
    }
    _write_outputs(output_dir, rows, result, SOFTMAX_CSV, SOFTMAX_JSON)
    plot_softmax_demo(output_dir / SOFTMAX_CSV, output_dir / SOFTMAX_PLOT)
    return result


def plot_softmax_demo(csv_path: Path, png_path: Path) -> None:
    """Draw error, loss with its Taylor approximation, Hessian trace and Taylor terms against λ."""
    plt, pd, sns = _plotting()
    rows = pd.read_csv(csv_path)
    figure, axes = plt.subplots(1, 4, figsize=(15, 3.6))
    sns.lineplot(data=rows, x="lambda", y="error", hue="noise", ax=axes[0])
    sns.lineplot(data=rows, x="lambda", y="loss", hue="noise", ax=axes[1])
    for kind, own in rows.groupby("noise"):
        axes[1].plot(own["lambda"], own["taylor_loss"], linestyle="--", linewidth=1, label=f"{kind} (2nd-order Taylor)")
    axes[1].legend(fontsize=6)
    sns.lineplot(data=rows, x="lambda", y="hessian_trace", hue="noise", ax=axes[2])
    terms = rows.melt(id_vars=["noise", "lambda"], value_vars=["first_order", "second_order"], var_name="term")
    sns.lineplot(data=terms, x="lambda", y="value", hue="noise", style="term", ax=axes[3])
    titles = ("test error", "cross-entropy (dashed: Taylor)", "trace of the Hessian", "λ·gᵀε and ½λ²·εᵀHε at θ_f")
    for ax, title in zip(axes, titles, strict=True):
        ax.set(title=title, xlabel="λ")
        ax.title.set_fontsize(9)
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    plt.close(figure)


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def _write_outputs(output_dir: Path, rows: list[dict], result: dict, csv_name: str, json_name: str) -> None:
    import pandas as pd

    for name, text in ((csv_name, pd.DataFrame(rows).to_csv(index=False)), (json_name, json.dumps(result, indent=2) + "\n")):
        temporary = output_dir / f".{name}.{os.getpid()}.tmp"
        temporary.write_text(text)
        temporary.replace(output_dir / name)


def _plotting():
    import matplotlib

    matplotlib.use("Agg")  # Plots are files; no display is needed or assumed.
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    return plt, pd, sns
