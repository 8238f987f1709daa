"""Client-side local objectives added to the cross-entropy during local training.

Each objective is built once per round from :class:`ObjectiveInputs` (the model being
trained, the global model state received this round, the round's ConfigRecord, the
client's persistent state and the message content) and returns an :class:`Objective`: a
regulariser added to the loss, a gradient correction, and a step run after training that
updates the client's state and adds records to the reply. Strategies name the objectives
a client must add in the config key ``objectives`` (comma-separated) and put their
coefficients beside it, so objectives compose (e.g. ``objectives="prox,sign"``).

The ConfigRecord entries of every objective are written by :func:`objective_settings`,
so the keys a server sends and the keys a client reads are defined in this one module.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from flwr.app import ArrayRecord, ConfigRecord, RecordDict
from torch import nn

from fedsign.errors import UserInputError
from fedsign.models import select_parameters
from fedsign.protocol import (
    FEDDYN_GRADIENT_KEY,
    MOON_PREVIOUS_MODEL_KEY,
    SCAFFOLD_CONTROL_DELTA_KEY,
    SCAFFOLD_CONTROL_KEY,
    SCAFFOLD_SERVER_CONTROL_KEY,
)
from fedsign.training import GradientCorrection, Regularizer, TrainStats

logger = logging.getLogger(__name__)



@dataclass
class ObjectiveInputs:
    """What an objective builder may read: the round's model, data, config and state.

    ``client_state`` is the client's ``Context.state``; builders may read it, and their
    ``after_training`` step may write it. ``content`` is the received message's content
    (the server's extra records, e.g. SCAFFOLD's control variate).
    """

    model: nn.Module
    global_state: Mapping[str, torch.Tensor]
    config: ConfigRecord
    client_state: RecordDict = field(default_factory=RecordDict)
    content: RecordDict = field(default_factory=RecordDict)
    train_x: torch.Tensor | None = None
    train_y: torch.Tensor | None = None
    batch_size: int = 64
    lr: float = 0.0


# Runs after local training with the trained model and its stats; updates the client's
# state and returns records to add to the reply.
AfterTraining = Callable[[nn.Module, TrainStats], dict[str, ArrayRecord]]


@dataclass
class Objective:
    """The parts one client objective contributes to a round of local training."""

    regularizer: Regularizer | None = None
    gradient_correction: GradientCorrection | None = None
    after_training: AfterTraining | None = None


@dataclass
class LocalObjectives:
    """All objectives of a round, in the order they were named."""

    regularizers: list[Regularizer] = field(default_factory=list)
    gradient_corrections: list[GradientCorrection] = field(default_factory=list)
    after_training: list[AfterTraining] = field(default_factory=list)

    def finish(self, model: nn.Module, stats: TrainStats) -> dict[str, ArrayRecord]:
        """Run every after-training step and return the records for the reply."""
        records: dict[str, ArrayRecord] = {}
        for step in self.after_training:
            records.update(step(model, stats))
        return records


ObjectiveBuilder = Callable[[ObjectiveInputs], Objective | None]
OBJECTIVES: dict[str, ObjectiveBuilder] = {}


def register_objective(name: str) -> Callable[[ObjectiveBuilder], ObjectiveBuilder]:
    """Register a builder under ``name`` for use in the ``objectives`` config key."""
    def decorator(builder: ObjectiveBuilder) -> ObjectiveBuilder:
        OBJECTIVES[name] = builder
        return builder
    return decorator


def objective_names(config: ConfigRecord) -> list[str]:
    """Return the objective names in ``config["objectives"]`` without repeats."""
    names = [name for name in str(config.get("objectives", "")).split(",") if name]
    return list(dict.fromkeys(names))


def build_objectives(inputs: ObjectiveInputs) -> LocalObjectives:
    """Build the objectives named in ``inputs.config["objectives"]`` (empty for plain CE)."""
    objectives = LocalObjectives()
    for name in objective_names(inputs.config):
        if name not in OBJECTIVES:
            raise UserInputError(f"unknown client objective {name!r}; known: {', '.join(sorted(OBJECTIVES))}")
        objective = OBJECTIVES[name](inputs)
        if objective is None:
            continue
        if objective.regularizer is not None:
            objectives.regularizers.append(objective.regularizer)
        if objective.gradient_correction is not None:
            objectives.gradient_corrections.append(objective.gradient_correction)
        if objective.after_training is not None:
            objectives.after_training.append(objective.after_training)
    return objectives


def build_regularizers(
    model: nn.Module, global_state: Mapping[str, torch.Tensor], config: ConfigRecord
) -> list[Regularizer]:
    """Build only the regularisers of the named objectives, with an empty client state."""
    return build_objectives(ObjectiveInputs(model=model, global_state=global_state, config=config)).regularizers


# ---------------------------------------------------------------------------------------
# FedSign
# ---------------------------------------------------------------------------------------


def sign_alignment_penalty(
    parameters: list[torch.Tensor],
    signs: list[torch.Tensor],
    *,
    variant: str,
    kappa: float = 10.0,
    skip_zero: bool = True,
    reduction: str = "mean",
) -> torch.Tensor:
    """Return R(θ; s), the sign-alignment penalty of FedSign, averaged or summed over coordinates.

    With s = sign(θ_g) of the global model received this round (held fixed):

    - ``hinge``:  R = mean_j max(0, −s_j·θ_j), only coordinates whose sign flipped cost;
    - ``linear``: R = −mean_j s_j·θ_j;
    - ``soft``:   R = mean_j softplus(−κ·s_j·θ_j)/κ, a smooth hinge that tends to it as κ grows.

    With ``skip_zero`` the coordinates where s_j = 0 are left out of the sum and the mean.
    ``reduction="sum"`` returns the sum over the covered coordinates in place of the mean.
    These three forms are fedsign's choice: the published method gives no exact formula.
    """
    if reduction not in ("mean", "sum"):
        raise UserInputError(f"unknown sign.reduction {reduction!r}; expected mean or sum")
    total = parameters[0].new_zeros(())
    count = 0
    for theta, sign in zip(parameters, signs, strict=True):
        product = sign * theta
        if skip_zero:
            mask = sign != 0
            product = product[mask]
            count += int(mask.sum())
        else:
            count += product.numel()
        if variant == "hinge":
            total = total + F.relu(-product).sum()
        elif variant == "linear":
            total = total - product.sum()
        elif variant == "soft":
            total = total + (F.softplus(-kappa * product) / kappa).sum()
        else:
            raise UserInputError(f"unknown sign.variant {variant!r}; expected hinge, linear or soft")
    return total if reduction == "sum" else total / max(count, 1)


@register_objective("sign")
def build_sign_objective(inputs: ObjectiveInputs) -> Objective | None:
    """FedSign: β·R(θ; sign(θ_g)) over the parameter group in ``sign-groups``.

    Reads ``sign-beta``, ``sign-variant``, ``sign-kappa``, ``sign-groups``,
    ``sign-skip-zero`` and ``sign-reduction`` (``mean`` when absent) from the round config.
    With β = 0 no term is added at all, so the local update is exactly FedAvg's.
    """
    config, model = inputs.config, inputs.model
    beta = float(config["sign-beta"])
    if beta == 0:
        return None
    variant = str(config["sign-variant"])
    kappa = float(config["sign-kappa"])
    skip_zero = bool(config["sign-skip-zero"])
    reduction = str(config.get("sign-reduction", "mean"))
    names = select_parameters(model, str(config["sign-groups"]))
    named = dict(model.named_parameters())
    parameters = [named[name] for name in names]
    signs = [torch.sign(inputs.global_state[name]).to(named[name].device, named[name].dtype) for name in names]

    def regularizer(_: nn.Module) -> torch.Tensor:
        return beta * sign_alignment_penalty(parameters, signs, variant=variant, kappa=kappa, skip_zero=skip_zero,
                                             reduction=reduction)

    return Objective(regularizer=regularizer)


# ---------------------------------------------------------------------------------------
# FedProx
# ---------------------------------------------------------------------------------------


def proximal_term(parameters: list[torch.Tensor], anchors: list[torch.Tensor], mu: float) -> torch.Tensor:
    """Return (μ/2)·Σ_j (θ_j − θ_g,j)², FedProx's proximal term over all given tensors."""
    total = parameters[0].new_zeros(())
    for theta, anchor in zip(parameters, anchors, strict=True):
        total = total + (theta - anchor).pow(2).sum()
    return 0.5 * mu * total


@register_objective("prox")
def build_prox_objective(inputs: ObjectiveInputs) -> Objective | None:
    """FedProx: (μ/2)·‖θ − θ_g‖² over all trainable parameters; reads ``prox-mu``."""
    mu = float(inputs.config["prox-mu"])
    if mu == 0:
        return None
    parameters, anchors = _parameters_and_global(inputs)
    return Objective(regularizer=lambda _: proximal_term(parameters, anchors, mu))


# ---------------------------------------------------------------------------------------
# MOON
# ---------------------------------------------------------------------------------------


def model_contrastive_loss(
    z: torch.Tensor, z_global: torch.Tensor, z_previous: torch.Tensor, tau: float
) -> torch.Tensor:
    """Return MOON's ℓ_con averaged over the batch.

    ℓ_con = −log( e^{sim(z, z_glob)/τ} / (e^{sim(z, z_glob)/τ} + e^{sim(z, z_prev)/τ}) ),
    with sim the cosine similarity of representation rows: the global model's
    representation is the positive pair and the previous local model's the negative one.
    """
    positive = F.cosine_similarity(z, z_global, dim=1) / tau
    negative = F.cosine_similarity(z, z_previous, dim=1) / tau
    logits = torch.stack([positive, negative], dim=1)
    targets = torch.zeros(len(z), dtype=torch.long, device=z.device)
    return F.cross_entropy(logits, targets)


@register_objective("moon")
def build_moon_objective(inputs: ObjectiveInputs) -> Objective | None:
    """MOON: μ·ℓ_con between the representations ``model.features(x)`` of the local model,
    the global model (positive) and the client's previous local model (negative).

    Reads ``moon-mu`` and ``moon-tau``. The previous local model is the full state the
    client trained last time it was sampled, kept in its state under
    ``moon-previous-model``. In a client's first round there is none, and the term is
    left out: MOON's own start, previous model = global model, makes ℓ_con the constant
    log 2 and its gradient zero, so both give the same update. The frozen models run in
    eval mode, so their BatchNorm statistics stay fixed [choice].
    """
    model, state = inputs.model, inputs.client_state
    mu, tau = float(inputs.config["moon-mu"]), float(inputs.config["moon-tau"])

    def remember_model(trained: nn.Module, _: TrainStats) -> dict[str, ArrayRecord]:
        state[MOON_PREVIOUS_MODEL_KEY] = ArrayRecord(_cpu_state(trained))
        return {}

    if mu == 0 or MOON_PREVIOUS_MODEL_KEY not in state:
        return Objective(after_training=remember_model)

    global_model = _frozen_copy(model)
    previous_model = _frozen_copy(model)
    previous_model.load_state_dict(state[MOON_PREVIOUS_MODEL_KEY].to_torch_state_dict())

    # The training loop runs model(x) once per batch. This hook keeps that batch's inputs
    # and representation, so the loss needs no second forward pass of the local model.
    captured: dict[str, torch.Tensor] = {}

    def capture(_: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        captured["inputs"], captured["z"] = args[0], output

    handle = model.features.register_forward_hook(capture)

    def regularizer(_: nn.Module) -> torch.Tensor:
        with torch.no_grad():
            z_global = global_model.features(captured["inputs"])
            z_previous = previous_model.features(captured["inputs"])
        return mu * model_contrastive_loss(captured["z"], z_global, z_previous, tau)

    def finish(trained: nn.Module, stats: TrainStats) -> dict[str, ArrayRecord]:
        handle.remove()
        return remember_model(trained, stats)

    return Objective(regularizer=regularizer, after_training=finish)


# ---------------------------------------------------------------------------------------
# FedDyn
# ---------------------------------------------------------------------------------------


def feddyn_term(
    parameters: list[torch.Tensor], anchors: list[torch.Tensor], gradients: list[torch.Tensor], alpha: float
) -> torch.Tensor:
    """Return −⟨g_k, θ⟩ + (α/2)·‖θ − θ_g‖², FedDyn's dynamic regulariser."""
    linear = parameters[0].new_zeros(())
    quadratic = parameters[0].new_zeros(())
    for theta, anchor, gradient in zip(parameters, anchors, gradients, strict=True):
        linear = linear + (gradient * theta).sum()
        quadratic = quadratic + (theta - anchor).pow(2).sum()
    return -linear + 0.5 * alpha * quadratic


def updated_feddyn_gradient(
    gradient: torch.Tensor, local: torch.Tensor, global_: torch.Tensor, alpha: float
) -> torch.Tensor:
    """Return FedDyn's new client gradient state g_k − α·(θ_k − θ_g)."""
    return gradient - alpha * (local - global_)


@register_objective("feddyn")
def build_feddyn_objective(inputs: ObjectiveInputs) -> Objective:
    """FedDyn: −⟨g_k, θ⟩ + (α/2)·‖θ − θ_g‖² with the client's gradient state g_k.

    Reads ``feddyn-alpha``. g_k starts at zero and is kept in the client's state under
    ``feddyn-gradient``; after training it becomes g_k − α·(θ_k − θ_g).
    """
    alpha = float(inputs.config["feddyn-alpha"])
    names = _parameter_names(inputs.model)
    parameters, anchors = _parameters_and_global(inputs)
    gradients = _state_tensors(inputs.client_state, FEDDYN_GRADIENT_KEY, names, parameters)

    def finish(trained: nn.Module, _: TrainStats) -> dict[str, ArrayRecord]:
        trained_parameters = dict(trained.named_parameters())
        inputs.client_state[FEDDYN_GRADIENT_KEY] = ArrayRecord({
            name: updated_feddyn_gradient(gradient, trained_parameters[name].detach(), anchor, alpha).cpu()
            for name, gradient, anchor in zip(names, gradients, anchors, strict=True)
        })
        return {}

    return Objective(regularizer=lambda _: feddyn_term(parameters, anchors, gradients, alpha), after_training=finish)


# ---------------------------------------------------------------------------------------
# SCAFFOLD
# ---------------------------------------------------------------------------------------


def scaffold_correction(gradients: list[torch.Tensor], server: list[torch.Tensor],
                        client: list[torch.Tensor]) -> None:
    """Add c − c_i to each gradient in place: SCAFFOLD's corrected step uses g − c_i + c."""
    for gradient, server_control, client_control in zip(gradients, server, client, strict=True):
        gradient.add_(server_control - client_control)


def difference_control_variate(
    client: torch.Tensor, server: torch.Tensor, global_: torch.Tensor, local: torch.Tensor, *, steps: int, lr: float
) -> torch.Tensor:
    """Return SCAFFOLD's option II control variate c_i − c + (θ_g − θ_i)/(K·η_l)."""
    return client - server + (global_ - local) / (steps * lr)


def mean_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int) -> dict[str, torch.Tensor]:
    """Return the gradient of the mean cross-entropy over ``(x, y)`` at the model's parameters.

    The model is copied first, so its parameters, gradients and BatchNorm buffers are
    left untouched; the copy runs in train mode, as local training does.
    """
    probe = copy.deepcopy(model)
    probe.train()
    probe.zero_grad(set_to_none=True)
    device = next(probe.parameters()).device
    for start in range(0, len(y), batch_size):
        inputs, targets = x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)
        # Summed per-batch losses divided by the total count give the mean over all examples.
        (F.cross_entropy(probe(inputs), targets, reduction="sum") / len(y)).backward()
    return {name: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
            for name, p in probe.named_parameters()}


@register_objective("scaffold")
def build_scaffold_objective(inputs: ObjectiveInputs) -> Objective:
    """SCAFFOLD: local steps use the gradient g − c_i + c, then the client refreshes c_i.

    Reads ``scaffold-variate`` from the config and the server's control variate c from
    the message record ``scaffold-server-control``. c_i starts at zero and is kept in the
    client's state under ``scaffold-control``. The refreshed c_i+ is ``gradient``: the
    mean local gradient at θ_g (option I), or ``difference``: c_i − c + (θ_g − θ_i)/(K·η_l)
    (option II) with K local steps of learning rate η_l. The reply carries c_i+ − c_i under
    ``scaffold-control-delta``.
    """
    if SCAFFOLD_SERVER_CONTROL_KEY not in inputs.content:
        raise UserInputError(f"the scaffold objective needs the server record {SCAFFOLD_SERVER_CONTROL_KEY!r}; "
                             "use strategy.name=scaffold, which sends it")
    model, variate = inputs.model, str(inputs.config["scaffold-variate"])
    names = _parameter_names(model)
    parameters, anchors = _parameters_and_global(inputs)
    server_record = inputs.content[SCAFFOLD_SERVER_CONTROL_KEY].to_torch_state_dict()
    server = [server_record[name].to(p.device, p.dtype) for name, p in zip(names, parameters, strict=True)]
    client = _state_tensors(inputs.client_state, SCAFFOLD_CONTROL_KEY, names, parameters)

    fresh: dict[str, torch.Tensor] = {}
    if variate == "gradient":
        if inputs.train_x is None or inputs.train_y is None:
            raise ValueError("scaffold.variate=gradient needs the client's training data in ObjectiveInputs")
        fresh = mean_gradient(model, inputs.train_x, inputs.train_y, batch_size=inputs.batch_size)

    def correct(trained: nn.Module) -> None:
        gradients = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
        scaffold_correction(gradients, server, client)
        for parameter, gradient in zip(parameters, gradients, strict=True):
            parameter.grad = gradient

    def finish(trained: nn.Module, stats: TrainStats) -> dict[str, ArrayRecord]:
        trained_parameters = dict(trained.named_parameters())
        new: dict[str, torch.Tensor] = {}
        delta: dict[str, torch.Tensor] = {}
        for name, old, server_control, anchor in zip(names, client, server, anchors, strict=True):
            if variate == "gradient":
                new[name] = fresh[name]
            else:
                new[name] = difference_control_variate(
                    old, server_control, anchor, trained_parameters[name].detach(),
                    steps=max(stats.steps, 1), lr=inputs.lr,
                )
            delta[name] = (new[name] - old).cpu()
        inputs.client_state[SCAFFOLD_CONTROL_KEY] = ArrayRecord({name: t.cpu() for name, t in new.items()})
        return {SCAFFOLD_CONTROL_DELTA_KEY: ArrayRecord(delta)}

    return Objective(gradient_correction=correct, after_training=finish)


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def _parameter_names(model: nn.Module) -> list[str]:
    return [name for name, parameter in model.named_parameters() if parameter.requires_grad]


def _parameters_and_global(inputs: ObjectiveInputs) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Return the trainable parameters and the matching global-model tensors (detached)."""
    named = dict(inputs.model.named_parameters())
    names = _parameter_names(inputs.model)
    parameters = [named[name] for name in names]
    anchors = [inputs.global_state[name].detach().to(named[name].device, named[name].dtype) for name in names]
    return parameters, anchors


def _state_tensors(state: RecordDict, key: str, names: list[str], like: list[torch.Tensor]) -> list[torch.Tensor]:
    """Return the tensors stored under ``key`` in the client state, or zeros on first use."""
    if key not in state:
        return [torch.zeros_like(p, requires_grad=False).detach() for p in like]
    stored = state[key].to_torch_state_dict()
    return [stored[name].to(p.device, p.dtype) for name, p in zip(names, like, strict=True)]


def _frozen_copy(model: nn.Module) -> nn.Module:
    frozen = copy.deepcopy(model)
    frozen.eval()
    for parameter in frozen.parameters():
        parameter.requires_grad_(False)
    return frozen


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}
