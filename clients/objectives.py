"""Client-side local objectives added to the cross-entropy during local training.

Each objective is built from the model being trained, the global model state received
this round and the round's ConfigRecord, and returns a regulariser: a function of the
model that yields a scalar tensor. Strategies name the objectives a client must add in
the config key ``objectives`` (comma-separated) and put their coefficients beside it, so
objectives compose (e.g. ``objectives="prox,sign"``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from flwr.app import ConfigRecord
from torch import nn

from fedsign.errors import UserInputError
from fedsign.models import select_parameters
from fedsign.training import Regularizer

logger = logging.getLogger(__name__)

ObjectiveBuilder = Callable[[nn.Module, Mapping[str, torch.Tensor], ConfigRecord], Regularizer | None]
OBJECTIVES: dict[str, ObjectiveBuilder] = {}


def register_objective(name: str) -> Callable[[ObjectiveBuilder], ObjectiveBuilder]:
    """Register a builder under ``name`` for use in the ``objectives`` config key."""
    def decorator(builder: ObjectiveBuilder) -> ObjectiveBuilder:
        OBJECTIVES[name] = builder
        return builder
    return decorator


def build_regularizers(
    model: nn.Module, global_state: Mapping[str, torch.Tensor], config: ConfigRecord
) -> list[Regularizer]:
    """Build the regularisers named in ``config["objectives"]`` (empty for plain CE)."""
    names = [name for name in str(config.get("objectives", "")).split(",") if name]
    regularizers = []
    for name in names:
        if name not in OBJECTIVES:
            raise UserInputError(f"unknown client objective {name!r}; known: {', '.join(sorted(OBJECTIVES))}")
        regularizer = OBJECTIVES[name](model, global_state, config)
        if regularizer is not None:
            regularizers.append(regularizer)
    return regularizers


def sign_alignment_penalty(
    parameters: list[torch.Tensor],
    signs: list[torch.Tensor],
    *,
    variant: str,
    kappa: float = 10.0,
    skip_zero: bool = True,
) -> torch.Tensor:
    """Return R(θ; s), the sign-alignment penalty of FedSign, averaged over coordinates.

    With s = sign(θ_g) of the global model received this round (held fixed):

    - ``hinge``:  R = mean_j max(0, −s_j·θ_j), only coordinates whose sign flipped cost;
    - ``linear``: R = −mean_j s_j·θ_j;
    - ``soft``:   R = mean_j softplus(−κ·s_j·θ_j)/κ, a smooth hinge that tends to it as κ grows.

    With ``skip_zero`` the coordinates where s_j = 0 are left out of the sum and the mean.
    These three forms are fedsign's choice: the published method gives no exact formula.
    """
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
    return total / max(count, 1)


@register_objective("sign")
def build_sign_objective(
    model: nn.Module, global_state: Mapping[str, torch.Tensor], config: ConfigRecord
) -> Regularizer | None:
    """FedSign: β·R(θ; sign(θ_g)) over the parameter group in ``sign-groups``.

    Reads ``sign-beta``, ``sign-variant``, ``sign-kappa``, ``sign-groups`` and
    ``sign-skip-zero`` from the round config. With β = 0 no term is added at all, so the
    local update is exactly FedAvg's.
    """
    beta = float(config["sign-beta"])
    if beta == 0:
        return None
    variant = str(config["sign-variant"])
    kappa = float(config["sign-kappa"])
    skip_zero = bool(config["sign-skip-zero"])
    names = select_parameters(model, str(config["sign-groups"]))
    named = dict(model.named_parameters())
    parameters = [named[name] for name in names]
    signs = [torch.sign(global_state[name]).to(named[name].device, named[name].dtype) for name in names]

    def regularizer(_: nn.Module) -> torch.Tensor:
        return beta * sign_alignment_penalty(parameters, signs, variant=variant, kappa=kappa, skip_zero=skip_zero)

    return regularizer
