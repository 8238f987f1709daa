"""Valley analysis: 1-D error and loss curves f(θ_f + λ·ε) around a trained model θ_f.

For each direction ε (random noise from :mod:`fedsign.noise`, optionally made sign-consistent,
or a special direction built from the model) the parameters of the selected group are set
to θ_f + λ·ε for every λ on a grid, the model is evaluated on a fixed in-memory test subset,
and the rows ``(noise, direction_id, sign_consistent, ssr, lambda, error, loss)`` form a tidy
table. Parameters outside the group never change. BatchNorm running buffers follow the
BatchNorm mode: ``keep`` uses θ_f's running statistics at every point, ``recompute`` resets
them and recomputes them on a training subset at every point. The full state is restored
exactly when a sweep ends, also after an error.

Per curve the summary holds the mean error over λ > 0 and over λ < 0, the asymmetry
(mean error over λ < 0 minus mean error over λ > 0, positive when the positive side is
flatter) and the half-width of the valley on each side at an error threshold.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from fedsign.datasets import DatasetSplits
from fedsign.errors import ConfigError, UserInputError
from fedsign.models import select_parameters
from fedsign.noise import (
    BIAS_MODES,
    NORM_SCOPES,
    SCALINGS,
    SPECIAL_DIRECTIONS,
    Direction,
    check_noise_names,
    draw_noise,
    noise_names,
    replace_signs,
    scale_direction,
    special_direction,
)
from fedsign.seeding import torch_generator
from fedsign.signs import ssr

logger = logging.getLogger(__name__)

BN_MODES = ("keep", "recompute")
SIGN_MODES = ("ordinary", "consistent")
THRESHOLD_KINDS = ("relative", "absolute")
# Special directions that contain no randomness: one direction each, whatever num_directions is.
DETERMINISTIC_DIRECTIONS = ("theta_0", "theta_f", "sign", "sign_centered")
VALUE_COLUMNS = ("lambda", "error", "loss")


@dataclass
class ValleySettings:
    """Settings of a set of valley curves; every field is recorded with the results.

    Attributes
    ----------
    noises : list of str
        Registered noise names and special directions (see ``fedsign valley --help``).
    num_directions : int
        Random directions drawn per noise type; deterministic special directions get one.
    sign_modes : list of str
        ``ordinary`` (ε as drawn) and/or ``consistent`` (ε' = |ε|·sign(θ_f), same draw).
    scaling, bias_mode, width, norm_scope : str, str, float, str
        Passed to :func:`fedsign.noise.scale_direction`.
    group : str
        Parameter selection of :func:`fedsign.models.select_parameters`; only it is perturbed.
    bn_mode : str
        ``keep`` θ_f's BatchNorm running statistics, or ``recompute`` them at every point.
    lambda_min, lambda_max, num_points : float, float, int
        The λ grid: ``num_points`` evenly spaced values, plus λ = 0 when the grid misses it.
    eval_examples, bn_examples : int
        Size of the fixed test subset (all test examples if fewer) and of the training subset
        for ``recompute``.
    batch_size : int
        Examples per forward pass.
    threshold, threshold_kind : float, str
        Half-width threshold: error(λ=0) + ``threshold`` (``relative``) or ``threshold`` itself
        (``absolute``), as a fraction of examples.
    seed : int
        Seed of the subsets and of every random direction.
    """

    noises: list[str] = field(default_factory=lambda: noise_names())
    num_directions: int = 3
    sign_modes: list[str] = field(default_factory=lambda: list(SIGN_MODES))
    scaling: str = "filter"
    bias_mode: str = "per_tensor"
    width: float = 1.0
    norm_scope: str = "group"
    group: str = "all"
    bn_mode: str = "keep"
    lambda_min: float = -1.0
    lambda_max: float = 1.0
    num_points: int = 41
    eval_examples: int = 1000
    bn_examples: int = 1000
    batch_size: int = 2048
    threshold: float = 0.1
    threshold_kind: str = "relative"
    seed: int = 0

    def __post_init__(self) -> None:
        check_noise_names(self.noises)
        _require(len(self.noises) > 0, "noises", self.noises, "at least one noise name")
        _require(self.num_directions >= 1, "num_directions", self.num_directions, "an integer >= 1")
        _require(len(self.sign_modes) > 0 and set(self.sign_modes) <= set(SIGN_MODES), "sign_modes",
                 self.sign_modes, "a non-empty list from " + ", ".join(SIGN_MODES))
        _require(self.scaling in SCALINGS, "scaling", self.scaling, "one of " + ", ".join(SCALINGS))
        _require(self.bias_mode in BIAS_MODES, "bias_mode", self.bias_mode, "one of " + ", ".join(BIAS_MODES))
        _require(math.isfinite(self.width) and self.width > 0, "width", self.width, "a number > 0")
        _require(self.norm_scope in NORM_SCOPES, "norm_scope", self.norm_scope, "one of " + ", ".join(NORM_SCOPES))
        _require(self.bn_mode in BN_MODES, "bn_mode", self.bn_mode, "one of " + ", ".join(BN_MODES))
        _require(math.isfinite(self.lambda_min) and self.lambda_min < 0, "lambda_min", self.lambda_min,
                 "a number < 0, so that the grid has a negative side")
        _require(math.isfinite(self.lambda_max) and self.lambda_max > 0, "lambda_max", self.lambda_max,
                 "a number > 0, so that the grid has a positive side")
        _require(self.num_points >= 3, "num_points", self.num_points, "an integer >= 3")
        _require(self.eval_examples >= 1, "eval_examples", self.eval_examples, "an integer >= 1")
        _require(self.bn_examples >= 2, "bn_examples", self.bn_examples, "an integer >= 2")
        _require(self.batch_size >= 2, "batch_size", self.batch_size, "an integer >= 2")
        _require(self.threshold_kind in THRESHOLD_KINDS, "threshold_kind", self.threshold_kind,
                 "one of " + ", ".join(THRESHOLD_KINDS))
        _require(math.isfinite(self.threshold) and self.threshold > 0, "threshold", self.threshold,
                 "a fraction of examples > 0")

    def short_hash(self) -> str:
        """Return 8 hex digits of a SHA-256 over the settings."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:8]


def _require(condition: bool, key: str, value: object, allowed: str) -> None:
    if not condition:
        raise ConfigError(f"invalid value {key}={value!r}: expected {allowed}")


def lambda_grid(settings: ValleySettings) -> np.ndarray:
    """Return the λ grid: ``num_points`` values from ``lambda_min`` to ``lambda_max``, λ = 0 added if missing."""
    grid = np.round(np.linspace(settings.lambda_min, settings.lambda_max, settings.num_points), 12)
    grid[grid == 0] = 0.0  # Turns -0.0 into 0.0 so that the CSV has one zero.
    if not np.any(grid == 0):
        grid = np.sort(np.append(grid, 0.0))
    return grid


# ---------------------------------------------------------------------------------------------
# Setting parameters in place and restoring the state
# ---------------------------------------------------------------------------------------------


class Perturbation:
    """Sets the parameters ``names`` of a model to θ_f + λ·ε in place.

    θ_f is the value of those parameters when the object is made. :meth:`set_point` writes
    θ_f + λ·ε directly from the saved θ_f, so no error accumulates across points, and
    :meth:`restore` copies back the full state (parameters and buffers) saved at creation,
    bit for bit. Use it through :func:`perturbed`, which restores on exit.
    """

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        self.model = model
        self.names = list(names)
        parameters = dict(model.named_parameters())
        missing = [name for name in self.names if name not in parameters]
        if missing:
            raise UserInputError(f"parameters not in the model: {', '.join(missing)}")
        self.parameters = [parameters[name] for name in self.names]
        self.theta_f = [parameter.detach().clone() for parameter in self.parameters]
        self._saved_state = {key: value.detach().clone() for key, value in model.state_dict().items()}
        self._was_training = model.training

    def reference(self) -> Direction:
        """Return θ_f of the perturbed parameters as CPU float32 tensors."""
        return {name: theta.detach().float().cpu().clone() for name, theta in zip(self.names, self.theta_f, strict=True)}

    @torch.no_grad()
    def set_point(self, direction: Sequence[torch.Tensor], lam: float) -> None:
        """Set each perturbed parameter to θ_f + lam·ε; ``direction`` is in ``names`` order, on the model's device."""
        for parameter, theta, noise in zip(self.parameters, self.theta_f, direction, strict=True):
            torch.add(theta, noise, alpha=lam, out=parameter)

    @torch.no_grad()
    def restore(self) -> None:
        """Copy the saved full state (parameters and buffers) back into the model."""
        for key, value in self.model.state_dict().items():
            value.copy_(self._saved_state[key])
        self.model.train(self._was_training)


@contextlib.contextmanager
def perturbed(model: nn.Module, names: Sequence[str]) -> Iterator[Perturbation]:
    """Yield a :class:`Perturbation` of ``names`` and restore the model's full state on exit."""
    perturbation = Perturbation(model, names)
    try:
        yield perturbation
    finally:
        perturbation.restore()


# ---------------------------------------------------------------------------------------------
# Evaluation at one point
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ValleyData:
    """The fixed in-memory subsets, on the model's device: test examples and BatchNorm examples."""

    eval_x: torch.Tensor
    eval_y: torch.Tensor
    bn_x: torch.Tensor


def select_subsets(splits: DatasetSplits, settings: ValleySettings, device: torch.device) -> ValleyData:
    """Draw the fixed evaluation subset (test split) and BatchNorm subset (training split) once."""
    eval_count = min(settings.eval_examples, len(splits.test_y))
    bn_count = min(settings.bn_examples, len(splits.train_y))
    eval_index = torch.randperm(len(splits.test_y), generator=torch_generator(settings.seed, "valley-eval"))[:eval_count]
    bn_index = torch.randperm(len(splits.train_y), generator=torch_generator(settings.seed, "valley-bn"))[:bn_count]
    return ValleyData(
        eval_x=splits.test_x[eval_index].to(device),
        eval_y=splits.test_y[eval_index].to(device),
        bn_x=splits.train_x[bn_index].to(device),
    )


def has_batch_norm(model: nn.Module) -> bool:
    """Return whether the model has BatchNorm layers that track running statistics."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats for m in model.modules())


@torch.no_grad()
def recompute_bn_statistics(model: nn.Module, x: torch.Tensor, *, batch_size: int) -> None:
    """Reset the BatchNorm running statistics and recompute them on ``x`` (changes BatchNorm buffers only).

    With momentum None each layer keeps the cumulative average of the batch statistics, so
    with one batch (``len(x) <= batch_size``) the buffers are the exact mean and unbiased
    variance of ``x``'s activations. The model's mode and the layers' momenta are restored.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not layers:
        return
    momenta = [layer.momentum for layer in layers]
    was_training = model.training
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
    model.train()
    try:
        for start in range(0, len(x), batch_size):
            batch = x[start:start + batch_size]
            if len(batch) >= 2:  # A batch of one has no variance and BatchNorm rejects it.
                model(batch)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
        model.train(was_training)


@torch.no_grad()
def evaluate_point(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int) -> tuple[float, float]:
    """Return (mean cross-entropy, error rate) of the model in eval mode, with one device sync."""
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    for start in range(0, len(y), batch_size):
        logits = model(x[start:start + batch_size])
        targets = y[start:start + batch_size]
        total_loss += F.cross_entropy(logits.float(), targets, reduction="sum").double()
        correct += (logits.argmax(dim=1) == targets).sum()
    count = len(y)
    return total_loss.item() / count, 1.0 - correct.item() / count


# ---------------------------------------------------------------------------------------------
# Directions and curves
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DirectionSpec:
    """One direction ε over the perturbed parameters (CPU tensors) and the labels of its curve."""

    labels: dict[str, object]
    direction: Direction


def iter_directions(
    settings: ValleySettings, theta_f: Direction, theta_0: Direction | None = None
) -> Iterator[DirectionSpec]:
    """Yield the scaled directions of ``settings``: per noise, per direction id, per sign mode.

    The ordinary and the sign-consistent direction with the same id come from the same draw,
    seeded by the settings seed, the noise name and the id. Labels: ``noise``, ``kind``
    (``random`` or ``special``), ``direction_id`` and ``sign_consistent``.
    """
    shapes = {name: tensor.shape for name, tensor in theta_f.items()}
    for noise in settings.noises:
        count = 1 if noise in DETERMINISTIC_DIRECTIONS else settings.num_directions
        kind = "special" if noise in SPECIAL_DIRECTIONS else "random"
        for direction_id in range(count):
            generator = torch_generator(settings.seed, f"valley-direction-{noise}", direction_id)
            if kind == "special":
                raw = special_direction(noise, theta_f, theta_0=theta_0, generator=generator)
            else:
                raw = draw_noise(noise, shapes, generator)
            for mode in settings.sign_modes:
                consistent = mode == "consistent"
                signed = replace_signs(raw, theta_f) if consistent else raw
                yield DirectionSpec(
                    labels={"noise": noise, "kind": kind, "direction_id": direction_id, "sign_consistent": consistent},
                    direction=scale(signed, theta_f, settings),
                )


def scale(direction: Direction, theta_f: Direction, settings: ValleySettings) -> Direction:
    """Apply the scaling options of ``settings`` to a direction."""
    return scale_direction(
        direction, theta_f, scaling=settings.scaling, bias_mode=settings.bias_mode,
        width=settings.width, norm_scope=settings.norm_scope,
    )


def compute_curves(
    model: nn.Module,
    specs: Iterable[DirectionSpec] | None,
    data: ValleyData,
    settings: ValleySettings,
    *,
    theta_0: Direction | None = None,
) -> pd.DataFrame:
    """Evaluate the model along every direction and return the tidy curves.

    Only the parameters of ``settings.group`` change, and the model's full state is restored
    exactly before returning. Without ``specs`` the directions come from
    :func:`iter_directions`, built on θ_f of the group (and ``theta_0``, keys as in
    ``model.named_parameters()``).

    Returns
    -------
    pandas.DataFrame
        One row per direction and λ: the direction's labels, ``ssr`` (same-sign ratio of ε and
        θ_f over the group), ``lambda``, ``error`` (fraction of misclassified examples) and
        ``loss`` (mean cross-entropy).
    """
    names = select_parameters(model, settings.group)
    if settings.bn_mode == "recompute" and not has_batch_norm(model):
        logger.warning("bn_mode=recompute has no effect: the model has no BatchNorm running statistics")
    lambdas = lambda_grid(settings)
    rows: list[dict[str, object]] = []
    started = time.monotonic()
    with perturbed(model, names) as perturbation:
        theta_f = perturbation.reference()
        if specs is None:
            specs = iter_directions(settings, theta_f, theta_0)
        flat_theta = torch.cat([tensor.reshape(-1) for tensor in theta_f.values()])
        for count, spec in enumerate(specs, start=1):
            direction = [
                spec.direction[name].to(device=parameter.device, dtype=parameter.dtype)
                for name, parameter in zip(names, perturbation.parameters, strict=True)
            ]
            agreement = ssr(torch.cat([spec.direction[name].reshape(-1) for name in names]), flat_theta)
            for lam in lambdas:
                perturbation.set_point(direction, float(lam))
                if settings.bn_mode == "recompute":
                    recompute_bn_statistics(model, data.bn_x, batch_size=settings.batch_size)
                loss, error = evaluate_point(model, data.eval_x, data.eval_y, batch_size=settings.batch_size)
                rows.append({**spec.labels, "ssr": agreement, "lambda": float(lam), "error": error, "loss": loss})
            logger.debug("curve %d done: %s", count, spec.labels)
    curves = pd.DataFrame(rows)
    logger.info("computed %d curves of %d points on %d examples in %.1f s",
                len(rows) // len(lambdas), len(lambdas), len(data.eval_y), time.monotonic() - started)
    return curves


# ---------------------------------------------------------------------------------------------
# Summary numbers
# ---------------------------------------------------------------------------------------------


def summarize_curve(
    lambdas: np.ndarray, errors: np.ndarray, *, threshold: float, threshold_kind: str = "relative"
) -> dict[str, float]:
    """Return the summary numbers of one error curve.

    ``error_at_zero``; ``mean_error_pos`` and ``mean_error_neg`` (mean over grid points with
    λ > 0 and λ < 0); ``asymmetry`` = mean_error_neg − mean_error_pos (positive when the
    positive side is flatter); ``half_width_pos`` and ``half_width_neg``, the largest |λ| on
    each side such that every grid point from 0 to it has error ≤ the threshold
    (error_at_zero + ``threshold`` when relative, ``threshold`` when absolute). A half-width
    equal to the grid end means the curve never crossed the threshold on that side.
    """
    order = np.argsort(lambdas)
    lambdas, errors = np.asarray(lambdas)[order], np.asarray(errors)[order]
    zero = np.flatnonzero(lambdas == 0)
    if len(zero) != 1:
        raise ValueError("an error curve needs exactly one point at lambda = 0")
    error_at_zero = float(errors[zero[0]])
    limit = error_at_zero + threshold if threshold_kind == "relative" else threshold
    positive, negative = lambdas > 0, lambdas < 0
    mean_pos, mean_neg = float(errors[positive].mean()), float(errors[negative].mean())
    return {
        "error_at_zero": error_at_zero,
        "mean_error_pos": mean_pos,
        "mean_error_neg": mean_neg,
        "asymmetry": mean_neg - mean_pos,
        "half_width_pos": _half_width(lambdas[positive], errors[positive], limit),
        "half_width_neg": _half_width(-lambdas[negative][::-1], errors[negative][::-1], limit),
        "threshold": limit,
    }


def _half_width(distances: np.ndarray, errors: np.ndarray, limit: float) -> float:
    """Largest distance before the first error above ``limit``; distances ascend from 0."""
    above = np.flatnonzero(~(errors <= limit))  # NaN errors count as above the limit.
    end = above[0] if len(above) else len(distances)
    return float(distances[end - 1]) if end > 0 else 0.0


def summarize_curves(curves: pd.DataFrame, settings: ValleySettings) -> pd.DataFrame:
    """Return one row of summary numbers per curve; the label columns identify the curve."""
    labels = [column for column in curves.columns if column not in VALUE_COLUMNS]
    rows = []
    for key, curve in curves.groupby(labels, sort=False):
        numbers = summarize_curve(curve["lambda"].to_numpy(), curve["error"].to_numpy(),
                                  threshold=settings.threshold, threshold_kind=settings.threshold_kind)
        rows.append({**dict(zip(labels, key, strict=True)), **numbers})
    return pd.DataFrame(rows)


SUMMARY_NUMBERS = ("ssr", "error_at_zero", "mean_error_pos", "mean_error_neg", "asymmetry",
                   "half_width_pos", "half_width_neg")


def aggregate_summary(summary: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Return mean and standard deviation over directions (and seeds) of the summary numbers per ``by`` group."""
    grouped = summary.groupby(list(by), sort=False)
    table = grouped[list(SUMMARY_NUMBERS)].agg(["mean", "std"])
    table.columns = [f"{number}_{stat}" for number, stat in table.columns]
    table.insert(0, "curves", grouped.size())
    return table.reset_index()


# ---------------------------------------------------------------------------------------------
# Models from run directories, output folders and plots
# ---------------------------------------------------------------------------------------------

CURVES_FILE = "curves.csv"
CURVE_SUMMARY_FILE = "curve_summary.csv"
SUMMARY_TABLE_FILE = "summary.csv"
VALLEY_JSON = "valley.json"
ERROR_PLOT = "curves_error.png"
LOSS_PLOT = "curves_loss.png"
PLOT_DPI = 100


@dataclass(frozen=True)
class ValleySource:
    """A model to analyse: the model with θ_f loaded, its run directory, state file, θ_0 and data."""

    model: nn.Module
    run_dir: Path
    state_path: Path
    theta_0: dict[str, torch.Tensor] | None
    splits: DatasetSplits
    model_name: str
    dataset: str


def load_source(
    path: Path, *, epoch: int | None = None, round_number: int | None = None, client: int | None = None,
    device: torch.device | str = "cpu",
) -> ValleySource:
    """Load θ_f from a run directory (central or federated) or from a ``.pt`` state file inside one.

    A run directory gives its final model unless ``epoch``, ``round_number`` or ``client``
    picks a checkpoint or a kept client model. θ_0 is the run's ``model_init.pt`` when present.
    """
    from fedsign.results import CONFIG_FILE, INITIAL_MODEL_FILE
    from fedsign.runs import load_run_model

    path = Path(path)
    if not path.exists():
        raise UserInputError(f"model or run directory not found: {path}")
    if path.is_dir():
        loaded = load_run_model(path, epoch=epoch, round_number=round_number, client=client, device=device)
        run_dir = path
    else:
        run_dir = next((parent for parent in path.parents if (parent / CONFIG_FILE).is_file()), None)
        if run_dir is None:
            raise UserInputError(f"model file {path} is not inside a run directory: the valley needs the run's "
                                 f"{CONFIG_FILE} to rebuild the model")
        loaded = load_run_model(run_dir, device=device)
        state = _load_state(path)
        try:
            loaded.model.load_state_dict(state)
        except RuntimeError as error:
            raise UserInputError(f"model file {path} does not match the model of {run_dir}: "
                                 f"{str(error).splitlines()[0]}") from None
    init_path = run_dir / INITIAL_MODEL_FILE
    theta_0 = _load_state(init_path) if init_path.is_file() else None
    return ValleySource(model=loaded.model, run_dir=run_dir, state_path=loaded.source if path.is_dir() else path,
                        theta_0=theta_0, splits=loaded.splits, model_name=loaded.config.model.name,
                        dataset=loaded.config.data.dataset)


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as error:
        raise UserInputError(f"cannot read model file {path}: {str(error).splitlines()[0]}") from None


def check_group(model: nn.Module, group: str) -> list[str]:
    """Return the parameter names of ``group``, raising UserInputError for an unknown or empty group."""
    return select_parameters(model, group)


def theta_0_of_group(source: ValleySource, names: Sequence[str]) -> Direction | None:
    """Return θ_0 restricted to the parameters ``names``, or None when the run has no θ_0."""
    if source.theta_0 is None:
        return None
    return {name: source.theta_0[name].float() for name in names}


@contextlib.contextmanager
def staged_output(final_dir: Path) -> Iterator[Path]:
    """Yield a hidden staging folder that becomes ``final_dir`` only when the block succeeds.

    An existing ``final_dir`` is replaced, so a rerun with the same settings overwrites its
    own earlier output; after an error the staging folder is removed and nothing is left.
    """
    import shutil

    staging = final_dir.with_name(f".{final_dir.name}.partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if final_dir.exists():
        logger.info("replacing earlier output %s", final_dir)
        shutil.rmtree(final_dir)
    staging.rename(final_dir)


@dataclass(frozen=True)
class ValleyOutcome:
    """Where the valley results were written and their aggregated summary table."""

    output_dir: Path
    table: pd.DataFrame


def prepare_sweep(
    source_path: Path, settings: ValleySettings, output_dir: Path, *, epoch: int | None = None,
    round_number: int | None = None, client: int | None = None, device: str = "auto",
):
    """Load the model to sweep, check the group and output folder, and pick the evaluation subsets.

    Returns ``(source, names, data)``: the loaded source, the perturbed parameter names and the
    in-memory subsets. Every check runs before anything is written.
    """
    from fedsign.results import check_output_dir
    from fedsign.training import resolve_device

    torch_device = resolve_device(device)
    source = load_source(source_path, epoch=epoch, round_number=round_number, client=client, device=torch_device)
    names = check_group(source.model, settings.group)
    if "theta_0" in settings.noises and source.theta_0 is None:
        raise UserInputError(f"noise theta_0 needs {source.run_dir}/model_init.pt, which is missing; drop theta_0")
    check_output_dir(output_dir)
    return source, names, select_subsets(source.splits, settings, torch_device)


def run_valley(
    source_path: Path, settings: ValleySettings, output_dir: Path, *, epoch: int | None = None,
    round_number: int | None = None, client: int | None = None, device: str = "auto",
) -> ValleyOutcome:
    """Compute, save and plot the valley curves of one model; the Python API of ``fedsign valley``.

    Writes ``curves.csv`` (tidy curves), ``curve_summary.csv`` (numbers per curve),
    ``summary.csv`` (mean and std over directions per noise and sign mode), ``valley.json``
    (settings, source, timings, table) and the error and loss plots into
    ``output_dir/<run>-valley-<hash>``. Bad input raises UserInputError before anything is written.
    """
    source, names, data = prepare_sweep(source_path, settings, output_dir, epoch=epoch,
                                        round_number=round_number, client=client, device=device)
    started = time.monotonic()
    curves = compute_curves(source.model, None, data, settings, theta_0=theta_0_of_group(source, names))
    wall_time = time.monotonic() - started
    per_curve = summarize_curves(curves, settings)
    table = aggregate_summary(per_curve, ["noise", "kind", "sign_consistent"])

    stem = source.state_path.stem if source.state_path.name != "model.pt" else ""
    name = "-".join(part for part in (source.run_dir.name, stem, "valley", settings.short_hash()) if part)
    with staged_output(output_dir / name) as staging:
        curves.to_csv(staging / CURVES_FILE, index=False)
        per_curve.to_csv(staging / CURVE_SUMMARY_FILE, index=False)
        table.to_csv(staging / SUMMARY_TABLE_FILE, index=False)
        record = {
            "settings": asdict(settings),
            "lambdas": lambda_grid(settings).tolist(),
            "source": {"run_dir": str(source.run_dir), "state_file": str(source.state_path),
                       "model": source.model_name, "dataset": source.dataset},
            "perturbed_parameters": names,
            "eval_examples": len(data.eval_y),
            "bn_examples": len(data.bn_x) if settings.bn_mode == "recompute" else 0,
            "device": str(data.eval_y.device),
            "wall_time_s": round(wall_time, 3),
            "summary": json.loads(table.to_json(orient="records")),
        }
        (staging / VALLEY_JSON).write_text(json.dumps(record, indent=2) + "\n")
        plot_curves(staging / CURVES_FILE, staging / ERROR_PLOT, value="error")
        plot_curves(staging / CURVES_FILE, staging / LOSS_PLOT, value="loss")
    return ValleyOutcome(output_dir=output_dir / name, table=table)


def sign_label(consistent: pd.Series) -> pd.Series:
    """Map the ``sign_consistent`` column to the legend labels of the plots."""
    return consistent.map({True: "sign-consistent", False: "ordinary"})


def plot_curves(curves_csv: Path, output: Path, *, value: str = "error", title: str = "") -> Path:
    """Draw one panel per noise type from a curves CSV: ordinary vs sign-consistent, mean ± std band over directions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    curves = pd.read_csv(curves_csv)
    curves["sign"] = sign_label(curves["sign_consistent"])
    noises = list(dict.fromkeys(curves["noise"]))
    columns = min(4, len(noises))
    rows = math.ceil(len(noises) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), sharex=True, sharey=True,
                                squeeze=False)
    for ax, noise in zip(axes.flat, noises, strict=False):
        sns.lineplot(data=curves[curves["noise"] == noise], x="lambda", y=value, hue="sign",
                     hue_order=["ordinary", "sign-consistent"], errorbar="sd", ax=ax, legend=ax is axes.flat[0])
        ax.set(title=noise, xlabel="λ", ylabel=f"test {value}")
        if value == "loss":
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(noises):]:
        ax.set_visible(False)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(output, dpi=PLOT_DPI)
    plt.close(figure)
    return output
