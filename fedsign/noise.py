"""Noise directions for the valley analysis: a registry of distributions, scalings and sign replacement.

A *direction* is a mapping from parameter names to tensors shaped like those parameters.
Every function here works on directions and reference tensors (θ_f of the perturbed group,
parameters only, never BatchNorm running buffers) and returns new tensors: nothing here
changes a model.

- Noise distributions are registered with :func:`register_noise` and drawn with
  :func:`draw_noise` from a seeded CPU generator, so a direction does not depend on the
  device the curves are computed on.
- :func:`scale_direction` applies one of :data:`SCALINGS`: ``raw``, ``filter`` (each output
  filter rescaled to the norm of the matching filter of θ_f) or ``norm`` (the whole direction
  rescaled to s·‖θ_f‖).
- :func:`replace_signs` gives sign-consistent noise ε' = |ε|·sign(θ_f) on all coordinates or
  on a random fraction r of them.
- :func:`special_direction` builds the directions derived from the model itself
  (θ_0, θ_f, sign(θ_f), sign(θ_f − μ) and Gaussian magnitudes with those signs).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from fedsign.errors import UserInputError

Direction = dict[str, torch.Tensor]
# A sampler draws a float32 tensor of the given shape from the given CPU generator.
Sampler = Callable[[tuple[int, ...], torch.Generator], torch.Tensor]

SCALINGS = ("raw", "filter", "norm")
# What filter normalisation does with 1-D tensors (biases, BatchNorm affine parameters).
BIAS_MODES = ("zero", "per_tensor", "keep", "as_theta")
NORM_SCOPES = ("group", "tensor")
SPECIAL_DIRECTIONS = (
    "theta_0", "theta_f", "sign", "sign_centered", "gaussian_sign", "gaussian_sign_centered",
)


@dataclass(frozen=True)
class NoiseType:
    """A registered noise distribution: its sampler, whether it has zero mean, and a description."""

    name: str
    sampler: Sampler
    zero_mean: bool
    description: str


# Noise name -> distribution, filled by @register_noise when this module is imported.
_NOISES: dict[str, NoiseType] = {}


def register_noise(name: str, *, zero_mean: bool, description: str) -> Callable[[Sampler], Sampler]:
    """Register a noise distribution under ``name``.

    Parameters
    ----------
    name : str
        Registry name used by ``--noises`` and the ``noise`` column of the curves.
    zero_mean : bool
        Whether the distribution has zero mean (False for positive distributions).
    description : str
        Short formula shown by :func:`list_noises`, e.g. ``"N(0, 1)"``.

    Returns
    -------
    Callable
        A decorator that stores ``sampler(shape, generator) -> Tensor`` and returns it unchanged.
    """
    if name in _NOISES or name in SPECIAL_DIRECTIONS:
        raise ValueError(f"noise {name!r} is already registered or names a special direction")

    def decorator(sampler: Sampler) -> Sampler:
        _NOISES[name] = NoiseType(name, sampler, zero_mean, description)
        return sampler

    return decorator


def list_noises() -> list[NoiseType]:
    """Return the registered noise distributions in registration order."""
    return list(_NOISES.values())


def noise_names() -> list[str]:
    """Return the registered noise names in registration order."""
    return list(_NOISES)


@register_noise("gaussian", zero_mean=True, description="N(0, 1)")
def _gaussian(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=generator)


@register_noise("uniform", zero_mean=True, description="U(-1, 1)")
def _uniform(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=generator) * 2 - 1


@register_noise("rademacher", zero_mean=True, description="±1 with probability 1/2 each")
def _rademacher(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=generator).float() * 2 - 1


@register_noise("laplace", zero_mean=True, description="Laplace(0, 1)")
def _laplace(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    # Inverse CDF of Laplace(0, 1) on u ~ U(-1/2, 1/2); u = ±1/2 has probability zero in float32
    # only up to rounding, so the log argument is clamped away from 0.
    u = torch.rand(shape, generator=generator) - 0.5
    return -torch.sign(u) * torch.log((1 - 2 * u.abs()).clamp_min(1e-12))


@register_noise("uniform_pos", zero_mean=False, description="U(0, 1)")
def _uniform_pos(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=generator)


@register_noise("abs_gaussian", zero_mean=False, description="|N(0, 1)|")
def _abs_gaussian(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=generator).abs()


@register_noise("exponential", zero_mean=False, description="Exp(1)")
def _exponential(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    return -torch.log1p(-torch.rand(shape, generator=generator))


@register_noise("bernoulli", zero_mean=False, description="0 or 1 with probability 1/2 each")
def _bernoulli(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=generator).float()


def check_noise_names(names: Sequence[str]) -> None:
    """Raise UserInputError unless every name is a registered noise or a special direction."""
    allowed = [*_NOISES, *SPECIAL_DIRECTIONS]
    for name in names:
        if name not in allowed:
            raise UserInputError(f"unknown noise {name!r}: expected one of {', '.join(allowed)}")


def draw_noise(name: str, shapes: Mapping[str, torch.Size], generator: torch.Generator) -> Direction:
    """Draw one direction of noise ``name`` with a tensor per entry of ``shapes``, in order, on the CPU."""
    if name not in _NOISES:
        raise UserInputError(f"unknown noise {name!r}: expected one of {', '.join(_NOISES)}")
    sampler = _NOISES[name].sampler
    return {key: sampler(tuple(shape), generator).float() for key, shape in shapes.items()}


# ---------------------------------------------------------------------------------------------
# Sign replacement
# ---------------------------------------------------------------------------------------------


def replace_signs(
    direction: Mapping[str, torch.Tensor],
    reference: Mapping[str, torch.Tensor],
    *,
    ratio: float = 1.0,
    generator: torch.Generator | None = None,
) -> Direction:
    """Give a fraction ``ratio`` of the coordinates the signs of ``reference``.

    On the chosen coordinates ε'_j = |ε_j|·sign(θ_j), so ε'_j = 0 where θ_j = 0; the other
    coordinates keep ε_j. With ``ratio`` 1 every coordinate is replaced. Otherwise exactly
    round(ratio·D) of the D coordinates of the whole direction, drawn uniformly without
    replacement with ``generator``, are replaced.

    Parameters
    ----------
    direction, reference : mapping of str to Tensor
        Noise and θ_f, with equal keys and shapes.
    ratio : float, default 1.0
        Fraction r in [0, 1] of coordinates whose sign is replaced.
    generator : torch.Generator, optional
        CPU generator that picks the coordinates; needed when 0 < ratio < 1.
    """
    if not 0.0 <= ratio <= 1.0:
        raise UserInputError(f"invalid sign-change ratio {ratio!r}: expected a number in [0, 1]")
    replaced = {key: tensor.abs() * torch.sign(reference[key].to(tensor)) for key, tensor in direction.items()}
    if ratio == 1.0:
        return replaced
    if ratio == 0.0:
        return {key: tensor.clone() for key, tensor in direction.items()}
    if generator is None:
        raise ValueError("replace_signs needs a generator when 0 < ratio < 1")

    # One mask over the concatenated coordinates, split back per tensor in key order.
    sizes = [tensor.numel() for tensor in direction.values()]
    total = sum(sizes)
    chosen = torch.randperm(total, generator=generator)[: round(ratio * total)]
    mask = torch.zeros(total, dtype=torch.bool)
    mask[chosen] = True
    result: Direction = {}
    for (key, tensor), part in zip(direction.items(), torch.split(mask, sizes), strict=True):
        part = part.view_as(tensor).to(tensor.device)
        result[key] = torch.where(part, replaced[key], tensor)
    return result


# ---------------------------------------------------------------------------------------------
# Scalings
# ---------------------------------------------------------------------------------------------


def scale_direction(
    direction: Mapping[str, torch.Tensor],
    reference: Mapping[str, torch.Tensor],
    *,
    scaling: str = "filter",
    bias_mode: str = "per_tensor",
    width: float = 1.0,
    norm_scope: str = "group",
) -> Direction:
    """Rescale a direction relative to θ_f.

    - ``raw``: ε unchanged.
    - ``filter``: filter normalisation. Each output filter ε_i (the slice ``[i]`` along dim 0 of
      a tensor with two or more dimensions) becomes ε_i·‖θ_i‖/‖ε_i‖. For 1-D tensors (biases,
      BatchNorm weights and biases) ``bias_mode`` decides: ``zero`` sets them to 0 so they are
      not perturbed, ``per_tensor`` rescales the whole tensor to ‖θ‖, ``keep`` leaves the raw
      noise, and ``as_theta`` replaces them by θ itself. ``as_theta`` is what the widely used
      loss-landscape code (tomgoldstein/loss-landscape, ``net_plotter.py``) does with 1-D tensors
      unless told to ignore them. That is sign-consistent noise on those tensors whatever the
      noise distribution is.
    - ``norm``: ε·s·‖θ_f‖/‖ε‖ with width factor ``width`` s, taken over the whole group as one
      vector (``norm_scope="group"``) or tensor by tensor (``"tensor"``).

    A slice or tensor of ε with norm 0 stays 0. The result is a new direction; parameters only.

    Raises
    ------
    UserInputError
        If ``scaling``, ``bias_mode`` or ``norm_scope`` is unknown or ``width`` is not positive.
    """
    check_scaling_options(scaling=scaling, bias_mode=bias_mode, width=width, norm_scope=norm_scope)
    if scaling == "raw":
        return {key: tensor.clone() for key, tensor in direction.items()}
    if scaling == "filter":
        return {
            key: _filter_normalise(tensor, reference[key].to(tensor), bias_mode)
            for key, tensor in direction.items()
        }
    if norm_scope == "tensor":
        return {key: _rescale(tensor, width * reference[key].norm()) for key, tensor in direction.items()}
    noise_norm = math.sqrt(sum(tensor.double().pow(2).sum().item() for tensor in direction.values()))
    target_norm = width * math.sqrt(sum(reference[key].double().pow(2).sum().item() for key in direction))
    factor = target_norm / noise_norm if noise_norm > 0 else 0.0
    return {key: tensor * factor for key, tensor in direction.items()}


def check_scaling_options(*, scaling: str, bias_mode: str, width: float, norm_scope: str) -> None:
    """Raise UserInputError on an unknown scaling, 1-D tensor mode or norm scope, or a bad width."""
    for option, value, allowed in (
        ("scaling", scaling, SCALINGS), ("bias_mode", bias_mode, BIAS_MODES), ("norm_scope", norm_scope, NORM_SCOPES),
    ):
        if value not in allowed:
            raise UserInputError(f"invalid {option} {value!r}: expected one of {', '.join(allowed)}")
    if not (math.isfinite(width) and width > 0):
        raise UserInputError(f"invalid width {width!r}: expected a positive number (the factor s in s·‖θ_f‖)")


def _rescale(tensor: torch.Tensor, target_norm: torch.Tensor | float) -> torch.Tensor:
    norm = tensor.norm()
    if norm == 0:
        return torch.zeros_like(tensor)
    return tensor * (target_norm / norm)


def _filter_normalise(noise: torch.Tensor, theta: torch.Tensor, bias_mode: str) -> torch.Tensor:
    if noise.dim() <= 1:
        if bias_mode == "zero":
            return torch.zeros_like(noise)
        if bias_mode == "per_tensor":
            return _rescale(noise, theta.norm())
        if bias_mode == "as_theta":
            return theta.clone()
        return noise.clone()
    noise_norms = noise.flatten(1).norm(dim=1)
    theta_norms = theta.flatten(1).norm(dim=1)
    factors = torch.where(noise_norms > 0, theta_norms / noise_norms.clamp_min(1e-30), torch.zeros_like(noise_norms))
    return noise * factors.view(-1, *([1] * (noise.dim() - 1)))


# ---------------------------------------------------------------------------------------------
# Special directions
# ---------------------------------------------------------------------------------------------


def special_direction(
    name: str,
    theta_f: Mapping[str, torch.Tensor],
    *,
    theta_0: Mapping[str, torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> Direction:
    """Build a direction from the model itself, before any scaling.

    - ``theta_0``: the initialisation θ_0 of the run;
    - ``theta_f``: θ_f itself, so θ_f + λ·ε = (1 + λ)·θ_f;
    - ``sign``: sign(θ_f);
    - ``sign_centered``: sign(θ_f − μ) with μ the mean of each tensor [choice];
    - ``gaussian_sign`` and ``gaussian_sign_centered``: |N(0, 1)| magnitudes with the signs of
      ``sign`` and ``sign_centered`` [choice], drawn with ``generator``.

    Raises
    ------
    UserInputError
        If ``name`` is unknown, or ``theta_0`` is requested but not given.
    """
    if name == "theta_0":
        if theta_0 is None:
            raise UserInputError("direction theta_0 needs the run's initial model model_init.pt, which is missing")
        return {key: theta_0[key].detach().float().clone() for key in theta_f}
    if name == "theta_f":
        return {key: tensor.detach().float().clone() for key, tensor in theta_f.items()}
    if name in ("sign", "gaussian_sign"):
        signs = {key: torch.sign(tensor.detach().float()) for key, tensor in theta_f.items()}
    elif name in ("sign_centered", "gaussian_sign_centered"):
        signs = {key: torch.sign(tensor.detach().float() - tensor.detach().float().mean()) for key, tensor in theta_f.items()}
    else:
        raise UserInputError(f"unknown special direction {name!r}: expected one of {', '.join(SPECIAL_DIRECTIONS)}")
    if not name.startswith("gaussian"):
        return signs
    if generator is None:
        raise ValueError(f"special direction {name!r} needs a generator")
    return {key: torch.randn(tuple(sign.shape), generator=generator).abs() * sign for key, sign in signs.items()}
