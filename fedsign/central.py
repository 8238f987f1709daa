"""Central (non-federated) training: the models that the analysis studies start from.

A central run directory contains θ_0 (``model_init.pt``), θ_f (``model.pt``), per-epoch
checkpoints (``checkpoints/epoch_XXXX.pt``), ``metrics.csv`` with an ``epoch`` column,
``summary.json`` and ``config.yaml``, with the same staging rules as federated runs.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from fedsign.config import Config
from fedsign.datasets import DatasetSplits, load_dataset
from fedsign.federation import build_global_model
from fedsign.logs import log_to_file
from fedsign.results import (
    CHECKPOINT_DIR,
    INITIAL_MODEL_FILE,
    LOG_FILE,
    MODEL_FILE,
    RunRecorder,
    prepare_run_dir,
    publish_run_dir,
)
from fedsign.seeding import torch_generator
from fedsign.training import SGDSettings, evaluate, resolve_device, train_local

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CentralOutcome:
    """Run directory, summary and trained model of a completed central run."""

    run_dir: Path
    summary: dict
    model: nn.Module


def checkpoint_name(epoch: int) -> str:
    """Return the checkpoint path of ``epoch`` inside a central run directory."""
    return f"{CHECKPOINT_DIR}/epoch_{epoch:04d}.pt"


def epoch_lr(config: Config, epoch: int) -> float:
    """Return the learning rate of 1-based ``epoch`` under ``central.lr_schedule``."""
    central = config.central
    if central.lr_schedule == "cosine":
        return central.lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / central.epochs))
    return central.lr


def train_model(config: Config, splits: DatasetSplits, *, recorder: RunRecorder | None = None) -> nn.Module:
    """Train the configured model on the whole training split and return it.

    θ_0 is seeded from the run seed exactly as in federated runs; the data order of each
    epoch comes from its own derived seed. With a recorder, θ_0, the checkpoints and the
    per-epoch metrics are saved into its run directory.
    """
    device = resolve_device(config.engine.device)
    model = build_global_model(config.model, splits, config.seed).to(device)
    train_x, train_y = splits.train_x.to(device), splits.train_y.to(device)
    test_x, test_y = splits.test_x.to(device), splits.test_y.to(device)
    central = config.central
    if recorder is not None:
        recorder.save_model(model.state_dict(), INITIAL_MODEL_FILE)
        loss, accuracy = evaluate(model, test_x, test_y)
        recorder.record(0, "server", {"accuracy": accuracy, "loss": loss})

    for epoch in range(1, central.epochs + 1):
        settings = SGDSettings(
            epochs=1, batch_size=central.batch_size, lr=epoch_lr(config, epoch), momentum=central.momentum,
            weight_decay=central.weight_decay, clip_norm=central.clip_norm,
        )
        # NOTE: a fresh optimizer per epoch resets the momentum buffer at epoch boundaries.
        stats = train_local(model, train_x, train_y, settings=settings,
                            generator=torch_generator(config.seed, "central-data-order", epoch))
        loss, accuracy = evaluate(model, test_x, test_y)
        logger.info("epoch %d/%d: train loss %.4f, test accuracy %.4f", epoch, central.epochs, stats.loss, accuracy)
        if recorder is not None:
            recorder.record(epoch, "train", {"loss": stats.loss, "accuracy": stats.accuracy, "lr": settings.lr})
            recorder.record(epoch, "server", {"accuracy": accuracy, "loss": loss})
            if central.checkpoint_every and epoch % central.checkpoint_every == 0:
                recorder.save_model(model.state_dict(), checkpoint_name(epoch))
    return model


def run_central(config: Config, output_dir: Path) -> CentralOutcome:
    """Train ``config``'s model centrally and publish a run directory under ``output_dir``."""
    splits = load_dataset(config.data.dataset, root=config.data.root, download=config.data.download, seed=config.seed)
    build_global_model(config.model, splits, config.seed)  # Raises on a bad model before anything is written.
    staging_dir, final_dir = prepare_run_dir(output_dir, config, kind="central")
    recorder = RunRecorder(staging_dir, config, step_name="epoch")
    with log_to_file(staging_dir / LOG_FILE):
        model = train_model(config, splits, recorder=recorder)
        recorder.save_model(model.state_dict(), MODEL_FILE)
        summary = recorder.finish(status="completed")
    return CentralOutcome(run_dir=publish_run_dir(staging_dir, final_dir), summary=summary, model=model)
