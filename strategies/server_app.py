"""Flower ServerApp: builds the global model and strategy, runs the rounds, records results.

``fedsign run`` builds the app with :func:`create_server_app` for a run directory it has
prepared. ``flwr run .`` loads the module-level ``app``, which reads the run config keys
``config-file``, ``overrides`` (space-separated ``key=value`` items) and ``output-dir``
from ``[tool.flwr.app.config]`` or ``--run-config`` and prepares the run directory itself.
"""

from __future__ import annotations

import logging
import shlex
import time
from pathlib import Path

import torch
from flwr.app import ArrayRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp
from tqdm import tqdm

from fedsign.config import Config, load_config
from fedsign.federation import build_global_model, load_federated_data
from fedsign.logs import log_to_file
from fedsign.plots import plot_run
from fedsign.protocol import PARTITION_ID_KEY
from fedsign.runs import client_model_path
from fedsign.results import CHECKPOINT_DIR, INITIAL_MODEL_FILE, LOG_FILE, RunRecorder, prepare_run_dir, publish_run_dir
from fedsign.training import evaluate, resolve_device
from strategies import create_strategy
from strategies.fedavg import RoundFailedError, RunTimeoutError

logger = logging.getLogger(__name__)

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point under ``flwr run``: load the config named in the run config and run it."""
    run_config = context.run_config
    config = load_config(str(run_config["config-file"]), shlex.split(str(run_config.get("overrides", ""))))
    staging_dir, final_dir = prepare_run_dir(Path(str(run_config.get("output-dir", "runs"))), config)
    with log_to_file(staging_dir / LOG_FILE):
        run_federation(grid, config, staging_dir)
    published = publish_run_dir(staging_dir, final_dir)
    logger.info("run directory: %s", published)


def create_server_app(config: Config, run_dir: Path, *, deadline: float | None = None) -> ServerApp:
    """Return a ServerApp that runs ``config`` and writes into the prepared ``run_dir``."""
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        run_federation(grid, config, run_dir, deadline=deadline)

    return server_app


def run_federation(grid: Grid, config: Config, run_dir: Path, *, deadline: float | None = None) -> dict:
    """Run all rounds of ``config`` on ``grid``, writing metrics, models and plots to ``run_dir``.

    Returns the summary written to ``summary.json``; its ``status`` is ``failed`` with the
    error when a whole round failed or the run passed its wall-clock limit.
    """
    if deadline is None:
        deadline = time.monotonic() + config.engine.timeout_s
    recorder = RunRecorder(run_dir, config)
    federated = load_federated_data(config.data, config.seed)
    model = build_global_model(config.model, federated.splits, config.seed).to(resolve_device(config.engine.device))
    recorder.save_model(model.state_dict(), INITIAL_MODEL_FILE)

    try:
        partition_nodes = query_partitions(grid, config.data.num_partitions, timeout=config.engine.round_timeout_s)
        strategy = create_strategy(
            config,
            partition_nodes=partition_nodes,
            parameter_names=[name for name, _ in model.named_parameters()],
            deadline=deadline,
        )
        with tqdm(total=config.federation.rounds, desc=config.strategy.name, unit="round", leave=False) as progress:

            def evaluate_round(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
                return _after_round(server_round, arrays, config, model, federated, strategy, recorder, progress)

            result = strategy.start(
                grid,
                ArrayRecord(model.state_dict()),
                num_rounds=config.federation.rounds,
                timeout=config.engine.round_timeout_s,
                evaluate_fn=evaluate_round,
            )
        recorder.save_model(result.arrays.to_torch_state_dict())
        summary = recorder.finish(status="completed")
    except (RoundFailedError, RunTimeoutError) as error:
        logger.error("run failed: %s", error)
        summary = recorder.finish(status="failed", error=str(error))
    plot_run(run_dir)
    return summary


def _after_round(server_round, arrays, config, model, federated, strategy, recorder, progress) -> MetricRecord | None:
    """Record the round's client metrics, evaluate the global model every k rounds, save checkpoints."""
    if server_round > 0:
        metrics = strategy.round_metrics.get(server_round, {})
        recorder.record(server_round, "train", {k: v for k, v in metrics.items() if not k.startswith("local_")})
        local = {k: v for k, v in metrics.items() if k.startswith("local_")}
        if local:
            recorder.record(server_round, "client", local)
        every = config.federation.checkpoint_every
        if every and server_round % every == 0:
            recorder.save_model(arrays.to_torch_state_dict(), f"{CHECKPOINT_DIR}/round_{server_round:04d}.pt")
        for partition_id, state in strategy.kept_client_states.pop(server_round, {}).items():
            tensors = {name: torch.from_numpy(value) for name, value in state.items()}
            recorder.save_model(tensors, client_model_path(server_round, partition_id))

    is_last = server_round == config.federation.rounds
    if server_round % config.federation.eval_every and not is_last:
        progress.update(1)
        return None
    model.load_state_dict(arrays.to_torch_state_dict())
    splits = federated.splits
    loss, accuracy = evaluate(model, splits.test_x, splits.test_y)
    recorder.record(server_round, "server", {"accuracy": accuracy, "loss": loss})
    logger.info("round %d: test accuracy %.4f, loss %.4f", server_round, accuracy, loss)
    if server_round > 0:
        progress.set_postfix(accuracy=f"{accuracy:.3f}")
        progress.update(1)
    return MetricRecord({"accuracy": accuracy, "loss": loss})


def query_partitions(grid: Grid, expected: int, *, timeout: float) -> dict[int, int]:
    """Ask every client for its partition id and return ``{partition_id: node_id}``."""
    deadline = time.monotonic() + timeout
    while len(node_ids := sorted(grid.get_node_ids())) < expected:
        if time.monotonic() > deadline:
            raise RoundFailedError(f"only {len(node_ids)} of {expected} clients connected within {timeout:g} s")
        time.sleep(0.5)
    messages = [Message(RecordDict(), dst_node_id=node_id, message_type=MessageType.QUERY) for node_id in node_ids]
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    errors = sorted({reply.error.reason for reply in replies if reply.has_error()})
    if errors or len(replies) < len(node_ids):
        reason = "; ".join(errors) or f"{len(node_ids) - len(replies)} clients did not reply"
        raise RoundFailedError(f"clients failed to report their partition ids: {reason}")
    return {int(reply.content["metrics"][PARTITION_ID_KEY]): reply.metadata.src_node_id for reply in replies}
