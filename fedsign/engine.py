"""The simulation launcher: runs one config on Flower's simulation runtime (Ray backend).

This is the only module that calls a Flower entry point, so moving to another one
touches this file alone. It names the apps by import string, as Flower's
``[tool.flwr.app.components]`` does, and never imports ``clients`` or ``strategies``
statically. Success is judged from the run's results (``summary.json``), never from an
exit code: Flower reports a failing ClientApp only as missing replies.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from fedsign.config import Config
from fedsign.datasets import list_datasets
from fedsign.errors import ConfigError, UserInputError
from fedsign.federation import build_global_model, load_federated_data
from fedsign.logs import log_to_file
from fedsign.models import parse_model_name
from fedsign.partition import list_partitioners
from fedsign.results import (
    LOG_FILE,
    SUMMARY_FILE,
    RunRecorder,
    check_output_dir,
    is_completed,
    prepare_run_dir,
    publish_run_dir,
)

logger = logging.getLogger(__name__)

CLIENT_APP = "clients.client_app:app"
SERVER_APP_FACTORY = "strategies.server_app:create_server_app"
STRATEGY_LISTING = "strategies:list_strategies"
STRATEGY_CHECK = "strategies:check_strategy"

# Seconds the watchdog waits past engine.timeout_s for the runtime to stop by itself.
SHUTDOWN_GRACE_S = 120.0


class RunFailedError(RuntimeError):
    """A simulation ran but did not complete; the message names the cause."""


@dataclass(frozen=True)
class RunOutcome:
    """Run directory and summary of a completed run."""

    run_dir: Path
    summary: dict


def load_object(reference: str) -> object:
    """Import ``"package.module:attribute"`` and return the attribute."""
    module_name, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def prepare_environment() -> None:
    """Keep Ray on loopback and turn off Flower's telemetry, update check and installs.

    Flower settings the user set explicitly are kept, so telemetry is opt-in. Ray 2.55
    replaces ``_node_ip_address="127.0.0.1"`` by the machine's network address and binds
    its servers there unless multi-node clusters are off
    (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``). With them off, every Ray server listens on
    127.0.0.1 only. Ray reads that variable on import, so an imported Ray is set directly.
    """
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    # Actors that reserve no GPU (engine.client_gpus=0) still see the GPUs, as Ray's next
    # default does; setting it also silences Ray's notice about that change.
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    if "ray" in sys.modules:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False


def validate_run_config(config: Config) -> None:
    """Check everything a run needs before Ray starts: strategy, data, partition, model.

    Raises UserInputError (exit status 2 in the CLI) for unknown names, missing dataset
    folders or a partition that cannot be made.
    """
    if config.federation.client_eval and config.data.local_test_fraction <= 0:
        raise ConfigError(
            "federation.client_eval=true needs local test splits; set data.local_test_fraction, e.g. 0.2"
        )
    unknown = [p for p in config.engine.fail_partitions if not 0 <= p < config.data.num_partitions]
    if unknown:
        raise ConfigError(f"invalid engine.fail_partitions={unknown}: partition ids run from 0 to "
                          f"{config.data.num_partitions - 1}")
    check_names(config)
    federated = load_federated_data(config.data, config.seed)
    build_global_model(config.model, federated.splits, config.seed)


def check_names(config: Config) -> None:
    """Raise ConfigError for an unknown strategy, dataset, partitioner or model, before any data loads."""
    # Unknown names, bad import paths and kwargs the strategy rejects raise ConfigError.
    load_object(STRATEGY_CHECK)(config)
    if config.data.dataset not in list_datasets():
        raise ConfigError(f"unknown data.dataset={config.data.dataset!r}; available: {', '.join(list_datasets())}")
    if config.data.partitioner not in list_partitioners():
        raise ConfigError(
            f"unknown data.partitioner={config.data.partitioner!r}; available: {', '.join(list_partitioners())}"
        )
    parse_model_name(config.model.name)


def backend_config(config: Config, ray_temp_dir: Path, *, verbose: bool = False) -> dict:
    """Return Flower's Ray backend config: loopback only, no dashboard, resources per client."""
    use_gpu = config.engine.device != "cpu" and torch.cuda.is_available()
    return {
        "client_resources": {
            "num_cpus": config.engine.client_cpus,
            "num_gpus": config.engine.client_gpus if use_gpu else 0.0,
        },
        "init_args": {
            "num_cpus": config.engine.num_cpus,
            "num_gpus": torch.cuda.device_count() if use_gpu else 0,
            "_node_ip_address": "127.0.0.1",
            "_temp_dir": str(ray_temp_dir),
            "include_dashboard": False,
            "logging_level": logging.ERROR,
            # Client errors reach the server in the replies; worker output only with --verbose.
            "log_to_driver": verbose,
        },
    }


def short_temp_dir() -> Path:
    """Return a new folder under /tmp with a short path.

    Ray's socket paths must stay under 107 bytes. The long folders of pytest, or of
    ``TMPDIR`` on some systems, exceed that, and then ``ray.init`` fails and the run hangs.
    """
    return Path(tempfile.mkdtemp(prefix="fsray-", dir="/tmp"))


def run_simulation(config: Config, output_dir: Path, *, verbose: bool = False) -> RunOutcome:
    """Run one federated simulation of ``config`` and publish its run directory.

    Raises
    ------
    UserInputError
        Bad config or inputs, found before anything starts; nothing is written.
    RunFailedError
        The run started but did not complete (failed round, timeout, runtime error); its
        folder is kept as ``<run name>.failed`` with the log and the error.
    """
    prepare_environment()
    # Cheap checks first, so that bad names, a bad folder or a finished run are reported
    # before any dataset is loaded.
    check_names(config)
    check_output_dir(output_dir, create=False)
    if (output_dir / config.run_name()).exists():
        raise UserInputError(f"run directory {output_dir / config.run_name()} already exists; delete it, "
                             "or change the config, the seed or name=...")
    validate_run_config(config)
    staging_dir, final_dir = prepare_run_dir(output_dir, config)
    ray_temp_dir = short_temp_dir()
    deadline = time.monotonic() + config.engine.timeout_s
    watchdog = _start_watchdog(config.engine.timeout_s + SHUTDOWN_GRACE_S, staging_dir)
    try:
        with log_to_file(staging_dir / LOG_FILE):
            logger.info("run %s: %s on %s, %d clients, %d rounds", final_dir.name, config.strategy.name,
                        config.data.dataset, config.data.num_partitions, config.federation.rounds)
            _run_flower(config, staging_dir, ray_temp_dir, deadline, verbose)
    finally:
        watchdog.cancel()
        shutil.rmtree(ray_temp_dir, ignore_errors=True)

    if not (staging_dir / SUMMARY_FILE).is_file():
        _write_failure(staging_dir, config, "the simulation ended without results; see run.log")
    completed = is_completed(staging_dir)
    published = publish_run_dir(staging_dir, final_dir)
    summary = _read_summary(published)
    if not completed:
        raise RunFailedError(f"run failed: {summary.get('error') or 'unknown error'} (log: {published / LOG_FILE})")
    return RunOutcome(run_dir=published, summary=summary)


def _run_flower(config: Config, run_dir: Path, ray_temp_dir: Path, deadline: float, verbose: bool) -> None:
    from flwr.simulation import run_simulation as flower_run_simulation

    server_app = load_object(SERVER_APP_FACTORY)(config, run_dir, deadline=deadline)
    client_app = load_object(CLIENT_APP)
    try:
        flower_run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=config.data.num_partitions,
            backend_config=backend_config(config, ray_temp_dir, verbose=verbose),
            verbose_logging=verbose,
        )
    except Exception as error:  # Flower wraps Ray start-up and app errors in plain exceptions.
        logger.error("the simulation runtime failed: %s", error)
        if not (run_dir / SUMMARY_FILE).is_file():
            _write_failure(run_dir, config, f"the simulation runtime failed: {error}")


def _write_failure(run_dir: Path, config: Config, error: str) -> None:
    RunRecorder(run_dir, config).finish(status="failed", error=error)


def _read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / SUMMARY_FILE).read_text())


def _start_watchdog(seconds: float, run_dir: Path) -> threading.Timer:
    """End the process if the runtime hangs past ``seconds`` (e.g. Ray never replies)."""

    def expire() -> None:
        logger.error("the simulation did not stop within %.0f s; ending the process (run folder %s)",
                     seconds, run_dir)
        os._exit(1)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    return timer

