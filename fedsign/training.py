"""Local training and evaluation loops on in-memory tensors (plain PyTorch)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

# A regulariser maps the model being trained to a scalar added to the cross-entropy.
Regularizer = Callable[[nn.Module], torch.Tensor]
# A gradient correction edits the ``.grad`` tensors of the model in place after the
# backward pass and before clipping (SCAFFOLD adds c - c_i there).
GradientCorrection = Callable[[nn.Module], None]


@dataclass(frozen=True)
class SGDSettings:
    """Local SGD hyper-parameters; ``steps > 0`` replaces ``epochs`` by a step count."""

    epochs: int = 1
    steps: int = 0
    batch_size: int = 64
    lr: float = 0.03
    momentum: float = 0.9
    weight_decay: float = 1e-5
    clip_norm: float = 100.0


@dataclass(frozen=True)
class TrainStats:
    """Outcome of one call of :func:`train_local`."""

    loss: float
    accuracy: float
    regularizer: float
    num_examples: int
    steps: int


def resolve_device(name: str = "auto") -> torch.device:
    """Return CUDA when ``name`` is ``auto`` and a GPU is present, else the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def batch_order(num_examples: int, settings: SGDSettings, generator: torch.Generator) -> list[torch.Tensor]:
    """Return the index batches of one local training call, shuffled by ``generator``.

    With ``steps > 0`` the data is reshuffled after each pass until ``steps`` batches are
    drawn. A final batch of one example is dropped, because BatchNorm cannot normalise
    a single example in training mode.
    """
    batches: list[torch.Tensor] = []
    wanted = settings.steps if settings.steps > 0 else None
    epochs_left = settings.epochs
    while True:
        permutation = torch.randperm(num_examples, generator=generator)
        for start in range(0, num_examples, settings.batch_size):
            batch = permutation[start:start + settings.batch_size]
            if len(batch) < 2 and num_examples > 1:
                continue
            batches.append(batch)
            if wanted is not None and len(batches) == wanted:
                return batches
        epochs_left -= 1
        if wanted is None and epochs_left <= 0:
            return batches


def train_local(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    settings: SGDSettings,
    generator: torch.Generator,
    regularizers: list[Regularizer] | None = None,
    gradient_corrections: list[GradientCorrection] | None = None,
) -> TrainStats:
    """Train ``model`` in place with SGD on ``(x, y)`` and return loss and accuracy.

    The objective per batch is CE(model(x_b), y_b) + sum of the regularisers. After the
    backward pass each gradient correction edits the gradients in place, then gradients
    are clipped to ``clip_norm`` (0 disables clipping). Tensors are moved to the model's
    device batch by batch, so ``x`` and ``y`` may live on the CPU or on the GPU.
    """
    device = next(model.parameters()).device
    optimizer = torch.optim.SGD(
        model.parameters(), lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )
    regularizers = regularizers or []
    gradient_corrections = gradient_corrections or []
    model.train()

    total_loss = total_penalty = 0.0
    correct = seen = steps = 0
    for batch in batch_order(len(y), settings, generator):
        inputs, targets = x[batch].to(device), y[batch].to(device)
        optimizer.zero_grad(set_to_none=True)
        logits = model(inputs)
        loss = F.cross_entropy(logits, targets)
        objective = loss
        for regularizer in regularizers:
            penalty = regularizer(model)
            objective = objective + penalty
            total_penalty += penalty.item() * len(batch)
        objective.backward()
        for correction in gradient_corrections:
            correction(model)
        if settings.clip_norm > 0:
            nn.utils.clip_grad_norm_(model.parameters(), settings.clip_norm)
        optimizer.step()

        total_loss += loss.item() * len(batch)
        correct += (logits.argmax(dim=1) == targets).sum().item()
        seen += len(batch)
        steps += 1

    if seen and not math.isfinite(total_loss):
        logger.warning("local training diverged: the mean loss is %s; lower train.lr", total_loss / seen)
    seen = max(seen, 1)
    return TrainStats(
        loss=total_loss / seen,
        accuracy=correct / seen,
        regularizer=total_penalty / seen,
        num_examples=len(y),
        steps=steps,
    )


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1024) -> tuple[float, float]:
    """Return the mean cross-entropy and the accuracy of ``model`` on ``(x, y)`` in eval mode."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total_loss = 0.0
    correct = 0
    for start in range(0, len(y), batch_size):
        inputs = x[start:start + batch_size].to(device)
        targets = y[start:start + batch_size].to(device)
        logits = model(inputs)
        total_loss += F.cross_entropy(logits, targets, reduction="sum").item()
        correct += (logits.argmax(dim=1) == targets).sum().item()
    model.train(was_training)
    count = max(len(y), 1)
    return total_loss / count, correct / count
