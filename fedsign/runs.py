"""Loading models from run directories (central ``fedsign train`` and federated ``fedsign run``).

The analysis commands accept a run directory wherever they accept a model: its final
model by default, its initialisation θ_0, a central checkpoint by epoch, a federated
checkpoint by round, or a client model that a federated run kept for a round.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fedsign.config import Config, load_config
from fedsign.datasets import DatasetSplits, load_dataset
from fedsign.errors import UserInputError
from fedsign.federation import model_from_config
from fedsign.results import CHECKPOINT_DIR, CONFIG_FILE, INITIAL_MODEL_FILE, MODEL_FILE

CLIENT_MODELS_DIR = "client_models"


def client_model_path(round_number: int, partition_id: int) -> str:
    """Return the path, inside a federated run directory, of a kept client model."""
    return f"{CLIENT_MODELS_DIR}/round_{round_number:04d}/client_{partition_id:04d}.pt"


@dataclass(frozen=True)
class LoadedModel:
    """A model rebuilt from a run directory, with the run's config and dataset."""

    model: nn.Module
    config: Config
    splits: DatasetSplits
    source: Path


def state_file(run_dir: Path, *, which: str = "final", epoch: int | None = None,
               round_number: int | None = None, client: int | None = None) -> Path:
    """Return the state file of a run directory.

    ``which`` is ``final`` (θ_f) or ``init`` (θ_0); ``epoch`` picks a central checkpoint,
    ``round_number`` a federated checkpoint, and ``round_number`` with ``client`` a kept
    client model.
    """
    if client is not None:
        if round_number is None:
            raise UserInputError("a client model needs a round as well: pass --round N with --client K")
        path = run_dir / client_model_path(round_number, client)
    elif epoch is not None:
        path = run_dir / CHECKPOINT_DIR / f"epoch_{epoch:04d}.pt"
    elif round_number is not None:
        path = run_dir / CHECKPOINT_DIR / f"round_{round_number:04d}.pt"
    elif which in ("final", "init"):
        path = run_dir / (MODEL_FILE if which == "final" else INITIAL_MODEL_FILE)
    else:
        raise UserInputError(f"invalid model choice {which!r}: expected final or init")
    if not path.is_file():
        raise UserInputError(f"model file not found: {path} (check the run directory, epoch, round or client)")
    return path


def load_run_model(run_dir: Path, *, which: str = "final", epoch: int | None = None,
                   round_number: int | None = None, client: int | None = None,
                   device: torch.device | str = "cpu") -> LoadedModel:
    """Rebuild the model of a run directory and load one of its saved states."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise UserInputError(f"not a run directory: {run_dir} has no {CONFIG_FILE}")
    config = load_config(run_dir / CONFIG_FILE)
    path = state_file(run_dir, which=which, epoch=epoch, round_number=round_number, client=client)
    splits = load_dataset(config.data.dataset, root=config.data.root, download=False, seed=config.seed)
    model = model_from_config(config.model, splits)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return LoadedModel(model=model.to(device), config=config, splits=splits, source=path)
