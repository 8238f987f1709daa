"""Model fusion analysis: linear interpolation between two models and their same-sign ratios.

For models A and B with states θ_A and θ_B, the interpolated model at λ has parameters
θ(λ) = (1 − λ)·θ_A + λ·θ_B. λ = 0 is A, λ = 1 is B, and values outside [0, 1]
extrapolate. BatchNorm running buffers are handled by one of two modes, recorded with
every result:

- ``interpolate``: floating-point buffers (running mean and variance) follow the same
  formula; integer buffers (``num_batches_tracked``) are taken from the nearer endpoint.
  At λ = 0 and λ = 1 the whole state equals A's or B's state exactly.
- ``recompute``: the buffers are reset and recomputed at every λ, endpoints included, by
  one pass over a fixed random subset of the training split with a cumulative average
  (``torch.optim.swa_utils.update_bn``). The parameters still equal A's and B's at the
  endpoints, but the buffers are the recomputed ones.

Summary numbers of a curve (all from the evaluated split, by default the test split):

- ``accuracy_gap`` = mean(acc(0), acc(1)) − acc(0.5): positive when the midpoint is worse
  than the endpoints on average. ``accuracy_gap_max`` uses the minimum accuracy over the
  grid points in [0, 1] in place of acc(0.5).
- ``loss_barrier`` = max over grid points λ in [0, 1] of
  loss(λ) − ((1 − λ)·loss(0) + λ·loss(1)), the height of the loss above the straight line
  between the endpoint losses; 0 when the loss is convex along the path.

A model is named on the command line by a run directory with an optional selector, see
:func:`parse_model_ref`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from fedsign.config import Config, load_config
from fedsign.datasets import DatasetSplits, load_dataset
from fedsign.errors import UserInputError
from fedsign.federation import model_from_config
from fedsign.results import CHECKPOINT_DIR, CONFIG_FILE, check_output_dir
from fedsign.runs import CLIENT_MODELS_DIR, state_file
from fedsign.signs import ssr_groups, ssr_table
from fedsign.training import evaluate

logger = logging.getLogger(__name__)

BN_MODES = ("interpolate", "recompute")
EVAL_SPLITS = ("test", "train")

# Output files of ``fedsign interpolate`` and ``fedsign ssr``, in one place.
INTERPOLATION_CSV = "interpolation.csv"
INTERPOLATION_JSON = "interpolation.json"
INTERPOLATION_PLOT = "interpolation.png"
SSR_CSV = "ssr.csv"
SSR_JSON = "ssr.json"

SELECTOR_HELP = (
    "a model is RUN_DIR[@SELECTOR]: RUN_DIR alone is the final model θ_f; selectors are "
    "'init' (θ_0), 'epoch=E' (central checkpoint, epoch=0 is θ_0), 'round=R' (global model "
    "after round R; round=0 is θ_0 and the last round falls back to the final model), and "
    "'round=R,client=K' (client K's model returned in round R, kept by federation.keep_client_models)"
)


# ---------------------------------------------------------------------------------------
# Naming and loading models
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRef:
    """One model of a run directory: the final model, θ_0, a checkpoint or a kept client model."""

    run_dir: Path
    which: str = "final"
    epoch: int | None = None
    round_number: int | None = None
    client: int | None = None

    def selector(self) -> str:
        """Return the selector text that :func:`parse_model_ref` reads back."""
        if self.client is not None:
            return f"round={self.round_number},client={self.client}"
        if self.round_number is not None:
            return f"round={self.round_number}"
        if self.epoch is not None:
            return f"epoch={self.epoch}"
        return self.which

    def __str__(self) -> str:
        return f"{self.run_dir}@{self.selector()}"


def parse_model_ref(text: str) -> ModelRef:
    """Parse ``RUN_DIR[@SELECTOR]`` into a :class:`ModelRef`.

    The selector follows the last ``@`` and is ``final`` (the default), ``init``,
    ``epoch=E``, ``round=R`` or ``round=R,client=K``. A path whose last ``@`` is followed
    by a ``/`` is read as a path without a selector.

    Raises
    ------
    UserInputError
        If the selector is not one of these forms.
    """
    path, sep, selector = text.rpartition("@")
    if not sep or not path or "/" in selector:
        return ModelRef(Path(text))
    run_dir = Path(path)
    if selector in ("final", "init"):
        return ModelRef(run_dir, which=selector)

    values: dict[str, int] = {}
    for item in selector.split(","):
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or key not in ("epoch", "round", "client") or key in values:
            raise UserInputError(f"invalid model selector {selector!r} in {text!r}: {SELECTOR_HELP}")
        try:
            values[key] = int(raw)
        except ValueError:
            raise UserInputError(f"invalid model selector {selector!r} in {text!r}: {key} must be an integer") from None
        if values[key] < 0:
            raise UserInputError(f"invalid model selector {selector!r} in {text!r}: {key} must be >= 0")
    if "client" in values and "round" not in values:
        raise UserInputError(f"invalid model selector {selector!r} in {text!r}: client=K needs round=R as well")
    if "epoch" in values and len(values) > 1:
        raise UserInputError(f"invalid model selector {selector!r} in {text!r}: epoch=E cannot be combined")
    return ModelRef(run_dir, epoch=values.get("epoch"), round_number=values.get("round"), client=values.get("client"))


@dataclass
class ModelLoader:
    """Loads models of run directories, building each dataset once per loader.

    ``datasets`` caches loaded splits by (dataset, root, seed) for the life of the loader,
    because a round's client models all need the same dataset.
    """

    datasets: dict[tuple[str, str, int], DatasetSplits] = field(default_factory=dict)

    def config(self, run_dir: Path) -> Config:
        """Return the resolved config saved in a run directory."""
        if not run_dir.is_dir():
            raise UserInputError(f"run directory not found: {run_dir}")
        if not (run_dir / CONFIG_FILE).is_file():
            raise UserInputError(f"not a run directory: {run_dir} has no {CONFIG_FILE}")
        return load_config(run_dir / CONFIG_FILE)

    def splits(self, config: Config) -> DatasetSplits:
        """Return the dataset of a run's config, loaded once per loader."""
        key = (config.data.dataset, str(config.data.root), config.seed)
        if key not in self.datasets:
            self.datasets[key] = load_dataset(config.data.dataset, root=config.data.root, download=False,
                                              seed=config.seed)
        return self.datasets[key]

    def load(self, ref: ModelRef) -> tuple[nn.Module, Config, DatasetSplits, Path]:
        """Return the model of ``ref`` with its run's config, dataset and state file."""
        config = self.config(ref.run_dir)
        path = resolve_state_file(ref, config)
        splits = self.splits(config)
        model = model_from_config(config.model, splits)
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except (RuntimeError, OSError) as error:
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise UserInputError(f"model file {path} does not fit the run's model {config.model.name}: {first_line}") from None
        return model, config, splits, path


def resolve_state_file(ref: ModelRef, config: Config) -> Path:
    """Return the state file of ``ref``, with the fallbacks of round 0, epoch 0 and the last round."""
    if ref.client is None and (ref.round_number == 0 or ref.epoch == 0):
        return state_file(ref.run_dir, which="init")
    if ref.client is None and ref.round_number is not None:
        # The global model after the last round is the final model, also without checkpoints.
        last_round = config.federation.rounds
        checkpoint = ref.run_dir / CHECKPOINT_DIR / f"round_{ref.round_number:04d}.pt"
        if not checkpoint.is_file() and ref.round_number == last_round:
            return state_file(ref.run_dir, which="final")
    if ref.client is not None and not (ref.run_dir / CLIENT_MODELS_DIR / f"round_{ref.round_number:04d}").is_dir():
        kept = kept_rounds(ref.run_dir)
        raise UserInputError(
            f"{ref.run_dir} kept no client models for round {ref.round_number}; rounds kept: "
            f"{', '.join(map(str, kept)) or 'none'} (set federation.keep_client_models=[R, ...] in the run's config)"
        )
    return state_file(ref.run_dir, which=ref.which, epoch=ref.epoch, round_number=ref.round_number,
                      client=ref.client)


def kept_rounds(run_dir: Path) -> list[int]:
    """Return the rounds for which a federated run directory kept client models."""
    folder = run_dir / CLIENT_MODELS_DIR
    if not folder.is_dir():
        return []
    return sorted(int(path.name.split("_")[1]) for path in folder.glob("round_*") if path.is_dir())


def kept_clients(run_dir: Path, round_number: int) -> list[int]:
    """Return the partition ids of the client models kept for ``round_number``."""
    folder = run_dir / CLIENT_MODELS_DIR / f"round_{round_number:04d}"
    return sorted(int(path.stem.split("_")[1]) for path in folder.glob("client_*.pt"))


def round_model_refs(run_dir: Path, round_number: int, clients: Sequence[int] | None = None) -> dict[str, ModelRef]:
    """Return labelled models of one FL round: the global models around it and kept client models.

    Labels: ``global_start`` is the global model the round's clients started from (the
    checkpoint of round R − 1, or θ_0 for round 1), ``global_end`` the aggregate after
    round R, and ``client_K`` each kept client model. A global model whose checkpoint was
    not saved (``federation.checkpoint_every``) is left out with a warning.

    Raises
    ------
    UserInputError
        If the round kept no client models or a requested client is missing.
    """
    available = kept_clients(run_dir, round_number)
    if not available:
        kept = kept_rounds(run_dir)
        raise UserInputError(
            f"{run_dir} kept no client models for round {round_number}; rounds kept: "
            f"{', '.join(map(str, kept)) or 'none'} (set federation.keep_client_models=[R, ...] in the run's config)"
        )
    chosen = list(clients) if clients else available
    missing = [client for client in chosen if client not in available]
    if missing:
        raise UserInputError(
            f"round {round_number} of {run_dir} has no client model for client(s) {missing}; kept clients: {available}"
        )

    config = ModelLoader().config(run_dir)
    refs: dict[str, ModelRef] = {}
    for label, number in (("global_start", round_number - 1), ("global_end", round_number)):
        ref = ModelRef(run_dir, round_number=number)
        try:
            resolve_state_file(ref, config)
        except UserInputError:
            logger.warning("%s of round %d is not saved in %s (set federation.checkpoint_every=1 to keep it); "
                           "comparing the client models only", label, round_number, run_dir)
            continue
        refs[label] = ref
    for client in chosen:
        refs[f"client_{client}"] = ModelRef(run_dir, round_number=round_number, client=client)
    return refs


# ---------------------------------------------------------------------------------------
# Interpolation
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InterpolationSettings:
    """Settings of an interpolation curve, saved with its results.

    ``lambdas`` always contains 0, 0.5 and 1. ``bn_examples`` training examples (drawn with
    ``seed``) recompute BatchNorm statistics in ``recompute`` mode, in batches of
    ``bn_batch_size``. ``max_examples`` > 0 evaluates on the first that many examples of
    ``split`` only.
    """

    lambdas: tuple[float, ...]
    bn_mode: str = "recompute"
    bn_examples: int = 1000
    bn_batch_size: int = 256
    split: str = "test"
    max_examples: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.bn_mode not in BN_MODES:
            raise UserInputError(f"invalid BatchNorm mode {self.bn_mode!r}: expected one of {', '.join(BN_MODES)}")
        if self.split not in EVAL_SPLITS:
            raise UserInputError(f"invalid split {self.split!r}: expected one of {', '.join(EVAL_SPLITS)}")
        if self.bn_examples < 2 or self.bn_batch_size < 2:
            raise UserInputError(
                f"invalid BatchNorm subset: bn_examples={self.bn_examples}, bn_batch_size={self.bn_batch_size}; "
                "both must be >= 2"
            )
        if self.max_examples < 0:
            raise UserInputError(f"invalid max_examples={self.max_examples}: expected >= 0 (0 = the whole split)")
        for required in (0.0, 0.5, 1.0):
            if required not in self.lambdas:
                raise UserInputError(f"the λ grid must contain 0, 0.5 and 1, got {list(self.lambdas)}")


def lambda_grid(points: int = 11, lambda_min: float = 0.0, lambda_max: float = 1.0) -> tuple[float, ...]:
    """Return ``points`` evenly spaced λ values in [lambda_min, lambda_max], plus 0, 0.5 and 1.

    The range must contain [0, 1], so that both endpoints and the midpoint are evaluated;
    values outside it extrapolate beyond A (λ < 0) or B (λ > 1).

    Raises
    ------
    UserInputError
        If ``points < 2``, a bound is not finite, or the range does not contain [0, 1].
    """
    if points < 2:
        raise UserInputError(f"invalid number of λ points {points}: expected an integer >= 2")
    if not (math.isfinite(lambda_min) and math.isfinite(lambda_max)) or lambda_min > 0 or lambda_max < 1:
        raise UserInputError(
            f"invalid λ range [{lambda_min}, {lambda_max}]: expected lambda_min <= 0 and lambda_max >= 1"
        )
    step = (lambda_max - lambda_min) / (points - 1)
    values = {round(lambda_min + i * step, 10) for i in range(points)} | {0.0, 0.5, 1.0}
    # round() removes float noise such as 0.30000000000000004; -0.0 becomes 0.0 here as well.
    return tuple(sorted(value + 0.0 for value in values))


def split_names(model: nn.Module) -> tuple[list[str], list[str]]:
    """Return the names of the model's parameters and of its (persistent) buffers."""
    parameter_names = [name for name, _ in model.named_parameters()]
    parameters = set(parameter_names)
    buffer_names = [name for name in model.state_dict() if name not in parameters]
    return parameter_names, buffer_names


def check_compatible(states: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
    """Raise UserInputError unless all labelled states have the same names and shapes."""
    labels = list(states)
    reference = states[labels[0]]
    for label in labels[1:]:
        state = states[label]
        if set(state) != set(reference):
            extra = sorted(set(state) ^ set(reference))[:3]
            raise UserInputError(f"models {labels[0]} and {label} have different tensors (e.g. {extra}); "
                                 "they must be the same architecture")
        for name, tensor in state.items():
            if tensor.shape != reference[name].shape:
                raise UserInputError(f"models {labels[0]} and {label} differ in the shape of {name}: "
                                     f"{tuple(reference[name].shape)} vs {tuple(tensor.shape)}")


@torch.no_grad()
def set_interpolated_state(
    model: nn.Module,
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    lam: float,
    *,
    interpolate_buffers: bool = True,
) -> None:
    """Write (1 − λ)·θ_A + λ·θ_B into ``model`` in place, without building a new model.

    Parameters are always interpolated. With ``interpolate_buffers``, floating-point buffers
    are interpolated too and integer buffers are copied from A when λ < 0.5, else from B;
    without it, buffers are left as they are (the caller recomputes them). At λ = 0 and
    λ = 1 the formula returns A's and B's values bit for bit, because 1·x + 0·y = x in
    IEEE arithmetic for finite y.
    """
    parameter_names, _ = split_names(model)
    parameters = set(parameter_names)
    for name, target in model.state_dict().items():
        a, b = state_a[name].to(target.device), state_b[name].to(target.device)
        if name not in parameters and not interpolate_buffers:
            continue
        if not target.is_floating_point():
            target.copy_(a if lam < 0.5 else b)
            continue
        value = (1.0 - lam) * a + lam * b
        if name.endswith("running_var"):
            # NOTE: extrapolating (λ < 0 or λ > 1) can make an interpolated variance negative,
            # which would turn BatchNorm's output into NaN, so it is clipped at 0.
            value = value.clamp_min(0.0)
        target.copy_(value)


def has_batch_norm(model: nn.Module) -> bool:
    """Return whether ``model`` contains a BatchNorm layer with running statistics."""
    return any(isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats
               for module in model.modules())


def recompute_bn_statistics(model: nn.Module, x: torch.Tensor, *, batch_size: int) -> None:
    """Reset and recompute the BatchNorm running statistics of ``model`` on ``x``.

    One pass in training mode with ``momentum=None`` (a cumulative average over batches),
    through ``torch.optim.swa_utils.update_bn``; the model's train/eval mode is restored.
    A last batch of a single example is dropped, because BatchNorm cannot normalise it.
    """
    batches = [x[start:start + batch_size] for start in range(0, len(x), batch_size)]
    if len(batches) > 1 and len(batches[-1]) < 2:
        batches.pop()
    device = next(model.parameters()).device
    torch.optim.swa_utils.update_bn(batches, model, device=device)


def bn_subset(splits: DatasetSplits, settings: InterpolationSettings) -> torch.Tensor:
    """Return the fixed random subset of training inputs that recomputes BatchNorm statistics."""
    generator = torch.Generator().manual_seed(settings.seed)
    count = min(settings.bn_examples, len(splits.train_y))
    return splits.train_x[torch.randperm(len(splits.train_y), generator=generator)[:count]]


def evaluation_data(splits: DatasetSplits, settings: InterpolationSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the inputs and labels that each interpolated model is evaluated on."""
    x, y = (splits.test_x, splits.test_y) if settings.split == "test" else (splits.train_x, splits.train_y)
    if settings.max_examples:
        x, y = x[:settings.max_examples], y[:settings.max_examples]
    return x, y


def interpolation_curve(
    model: nn.Module,
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    *,
    settings: InterpolationSettings,
    eval_x: torch.Tensor,
    eval_y: torch.Tensor,
    bn_x: torch.Tensor | None = None,
) -> list[dict[str, float]]:
    """Evaluate the interpolated model at every λ of ``settings`` and return one row per λ.

    ``model`` is overwritten (it serves as the working copy). ``bn_x`` are the inputs for
    ``recompute`` mode; it is ignored in ``interpolate`` mode and for models without
    BatchNorm. Rows have keys ``lambda``, ``accuracy`` and ``loss``.
    """
    recompute = settings.bn_mode == "recompute" and has_batch_norm(model)
    if recompute and bn_x is None:
        raise ValueError("recompute mode needs the training inputs bn_x")
    rows = []
    for lam in settings.lambdas:
        set_interpolated_state(model, state_a, state_b, lam, interpolate_buffers=not recompute)
        if recompute:
            recompute_bn_statistics(model, bn_x, batch_size=settings.bn_batch_size)
        loss, accuracy = evaluate(model, eval_x, eval_y)
        rows.append({"lambda": lam, "accuracy": accuracy, "loss": loss})
        logger.debug("λ = %g: accuracy %.4f, loss %.4f", lam, accuracy, loss)
    return rows


def summarize_curve(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Return the endpoint accuracies, the accuracy gaps and the loss barrier of a curve.

    See the module docstring for the definitions. ``rows`` must contain λ = 0, 0.5 and 1.
    """
    by_lambda = {float(row["lambda"]): row for row in rows}
    start, middle, end = by_lambda[0.0], by_lambda[0.5], by_lambda[1.0]
    inside = [row for lam, row in sorted(by_lambda.items()) if 0.0 <= lam <= 1.0]
    endpoint_mean = (start["accuracy"] + end["accuracy"]) / 2
    excess = [row["loss"] - ((1 - row["lambda"]) * start["loss"] + row["lambda"] * end["loss"]) for row in inside]
    worst = max(range(len(inside)), key=lambda index: excess[index])
    return {
        "accuracy_a": start["accuracy"],
        "accuracy_b": end["accuracy"],
        "endpoint_mean_accuracy": endpoint_mean,
        "midpoint_accuracy": middle["accuracy"],
        "accuracy_gap": endpoint_mean - middle["accuracy"],
        "min_interior_accuracy": min(row["accuracy"] for row in inside),
        "accuracy_gap_max": endpoint_mean - min(row["accuracy"] for row in inside),
        "loss_a": start["loss"],
        "loss_b": end["loss"],
        "midpoint_loss": middle["loss"],
        "loss_barrier": excess[worst],
        "barrier_lambda": inside[worst]["lambda"],
    }


# ---------------------------------------------------------------------------------------
# The ``interpolate`` and ``ssr`` operations: load, compute, write
# ---------------------------------------------------------------------------------------


def pair_labels(labels: Sequence[str], reference: str | None) -> list[tuple[str, str]]:
    """Return the pairs of an SSR table: each label against ``reference``, then all label pairs."""
    pairs = [(reference, label) for label in labels if reference is not None and label != reference]
    pairs += [(u, v) for index, u in enumerate(labels) for v in labels[index + 1:]]
    return pairs


def run_interpolation(
    ref_a: ModelRef,
    ref_b: ModelRef,
    *,
    settings: InterpolationSettings,
    output_dir: Path,
    ref_init: ModelRef | None = None,
    selections: Sequence[str] = (),
) -> dict:
    """Interpolate between two models, write CSV, JSON, plot and SSR table, and return the JSON.

    The curve is evaluated on A's dataset; B (and the initialisation) must come from runs
    on the same dataset with the same architecture. ``output_dir`` receives
    ``interpolation.csv`` (λ, accuracy, loss), ``interpolation.json`` (settings, sources,
    summary, SSR rows), ``ssr.csv`` and ``interpolation.png``.
    """
    loader = ModelLoader()
    model, config_a, splits, path_a = loader.load(ref_a)
    model_b, config_b, _, path_b = loader.load(ref_b)
    sources = {"A": str(path_a), "B": str(path_b)}
    states = {"A": _cpu_state(model), "B": _cpu_state(model_b)}
    if config_b.data.dataset != config_a.data.dataset:
        raise UserInputError(f"models A and B come from different datasets ({config_a.data.dataset} and "
                             f"{config_b.data.dataset}); interpolation needs one dataset")
    if ref_init is not None:
        model_init, _, _, path_init = loader.load(ref_init)
        states["I"] = _cpu_state(model_init)
        sources["I"] = str(path_init)
    check_compatible(states)
    groups = ssr_groups(model, selections)
    check_output_dir(output_dir)

    eval_x, eval_y = evaluation_data(splits, settings)
    rows = interpolation_curve(model, states["A"], states["B"], settings=settings, eval_x=eval_x, eval_y=eval_y,
                               bn_x=bn_subset(splits, settings))
    summary = summarize_curve(rows)
    ssr_rows = ssr_table(states, pair_labels(["A", "B"], "I" if "I" in states else None), groups)
    result = {
        "models": {"A": str(ref_a), "B": str(ref_b), **({"I": str(ref_init)} if ref_init else {})},
        "state_files": sources,
        "dataset": config_a.data.dataset,
        "model": config_a.model.name,
        "has_batch_norm": has_batch_norm(model),
        "settings": asdict(settings),
        "evaluated_examples": len(eval_y),
        "summary": summary,
        "ssr": ssr_rows,
    }
    write_interpolation(output_dir, rows, result)
    logger.info("interpolated %s and %s at %d points: midpoint accuracy %.4f, gap %.4f, loss barrier %.4f",
                ref_a, ref_b, len(rows), summary["midpoint_accuracy"], summary["accuracy_gap"],
                summary["loss_barrier"])
    return result


def write_interpolation(output_dir: Path, rows: Sequence[Mapping[str, float]], result: dict) -> None:
    """Write the curve CSV, the JSON, the SSR CSV and the plot of one interpolation."""
    import pandas as pd

    _write_atomic(output_dir / INTERPOLATION_CSV, pd.DataFrame(rows).to_csv(index=False))
    _write_atomic(output_dir / SSR_CSV, pd.DataFrame(result["ssr"]).to_csv(index=False))
    _write_atomic(output_dir / INTERPOLATION_JSON, json.dumps(result, indent=2) + "\n")
    plot_interpolation(output_dir / INTERPOLATION_CSV, output_dir / INTERPOLATION_PLOT,
                       title=f"{result['models']['A']} → {result['models']['B']} (BN {result['settings']['bn_mode']})")


def run_ssr(
    refs: Mapping[str, ModelRef],
    *,
    reference: str | None = None,
    selections: Sequence[str] = (),
    output_dir: Path | None = None,
) -> list[dict[str, object]]:
    """Return (and, with ``output_dir``, write) the per-group SSR table of labelled models.

    Pairs are every model against ``reference`` (a label of ``refs``), then all pairs of
    the other models.
    """
    loader = ModelLoader()
    states: dict[str, dict[str, torch.Tensor]] = {}
    model = None
    for label, ref in refs.items():
        model, _, _, _ = loader.load(ref)
        states[label] = _cpu_state(model)
    if len(states) < 2:
        raise UserInputError(f"an SSR table needs at least two models, got {len(states)}")
    check_compatible(states)
    assert model is not None  # refs has at least two entries here
    groups = ssr_groups(model, selections)
    others = [label for label in states if label != reference]
    rows = ssr_table(states, pair_labels(others, reference), groups)
    if output_dir is not None:
        import pandas as pd

        check_output_dir(output_dir)
        _write_atomic(output_dir / SSR_CSV, pd.DataFrame(rows).to_csv(index=False))
        _write_atomic(output_dir / SSR_JSON, json.dumps({"models": {k: str(v) for k, v in refs.items()},
                                                         "reference": reference, "ssr": rows}, indent=2) + "\n")
    return rows


def plot_interpolation(csv_path: Path, png_path: Path, *, title: str = "") -> None:
    """Draw accuracy and loss against λ from an ``interpolation.csv``, endpoints marked."""
    import matplotlib

    matplotlib.use("Agg")  # Plots are files; no display is needed or assumed.
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    curve = pd.read_csv(csv_path)
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, metric in zip(axes, ("accuracy", "loss"), strict=True):
        sns.lineplot(data=curve, x="lambda", y=metric, marker="o", ax=ax)
        for lam in (0.0, 1.0):
            ax.axvline(lam, color="grey", linewidth=0.8, linestyle=":")
        ax.set(xlabel="λ  (0 = A, 1 = B)", ylabel=f"{metric}", title=f"interpolated model: {metric}")
    if title:
        figure.suptitle(title, fontsize=8)
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    plt.close(figure)


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    temporary.replace(path)
