"""The ``fedsign`` command line: one subcommand per operation.

Exit status: 0 on success, 1 when a run started but failed, 2 on bad input (one line on
standard error naming the value and the fix, nothing written).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from fedsign.errors import UserInputError

logger = logging.getLogger("fedsign.cli")

EXIT_FAILED = 1
EXIT_USAGE = 2

# Modules that add further subcommands; each has ``register(commands)`` taking the
# subparsers object and setting ``handler`` on its parsers.
COMMAND_MODULES: tuple[str, ...] = ("fedsign.commands.fusion", "fedsign.commands.valley", "fedsign.commands.report")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors print one line and exit with status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


CONFIG_KEYS_HELP = (
    "Every config key, its default and unit: docs/configuration.md, or `fedsign config CONFIG` "
    "for the resolved config."
)


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="YAML config file, e.g. configs/default.yaml")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotted overrides applied after the file, e.g. train.lr=0.01 data.alpha=0.1")
    parser.epilog = CONFIG_KEYS_HELP


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of all subcommands."""
    parser = _Parser(prog="fedsign", description="Federated-learning simulation and sign-alignment analysis.")
    parser.add_argument("-v", "--verbose", action="store_true", help="show DEBUG lines and Flower's INFO lines")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="run one federated simulation")
    _add_config_arguments(run)
    run.add_argument("--output-dir", type=Path, default=Path("runs"),
                     help="folder that receives the run directory (default: runs)")
    run.set_defaults(handler=_cmd_run)

    grid = commands.add_parser("grid", help="run sweeps × seeds and print the mean ± std table")
    _add_config_arguments(grid)
    grid.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2",
                      help="swept key and values; a section alone means its name, e.g. strategy=fedavg,fedsign")
    grid.add_argument("--seeds", default="0", help="seeds, e.g. 0,1,2 or 0-4 (default: 0)")
    grid.add_argument("--output-dir", type=Path, default=Path("runs"),
                      help="folder of the run directories and the table (default: runs)")
    grid.set_defaults(handler=_cmd_grid)

    partition = commands.add_parser("partition", help="print and plot the client partition of a config")
    _add_config_arguments(partition)
    partition.add_argument("--output-dir", type=Path, default=Path("runs"),
                           help="folder for the statistics CSV and the label-distribution plot (default: runs)")
    partition.set_defaults(handler=_cmd_partition)

    train = commands.add_parser("train", help="train a model centrally (θ_0, θ_f and per-epoch checkpoints)")
    _add_config_arguments(train)
    train.add_argument("--output-dir", type=Path, default=Path("runs"),
                       help="folder that receives the run directory (default: runs)")
    train.set_defaults(handler=_cmd_train)

    show = commands.add_parser("config", help="print the resolved config (defaults, file, overrides) as YAML")
    _add_config_arguments(show)
    show.set_defaults(handler=_cmd_config)

    listing = commands.add_parser("list", help="list datasets, partitioners, models and strategies")
    listing.set_defaults(handler=_cmd_list)

    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(commands)
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    from fedsign.config import load_config
    from fedsign.engine import run_simulation

    config = load_config(args.config, args.overrides)
    outcome = run_simulation(config, args.output_dir, verbose=args.verbose)
    summary = outcome.summary
    print(f"final accuracy {summary['final_accuracy']:.4f} (best {summary['best_accuracy']:.4f}) "
          f"in {summary['wall_time_s']:.1f} s; results in {outcome.run_dir}")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from fedsign.config import load_config

    print(load_config(args.config, args.overrides).to_yaml(), end="")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from fedsign.central import run_central
    from fedsign.config import load_config

    config = load_config(args.config, args.overrides)
    outcome = run_central(config, args.output_dir)
    summary = outcome.summary
    print(f"final test accuracy {summary['final_accuracy']:.4f} after {config.central.epochs} epochs "
          f"in {summary['wall_time_s']:.1f} s; results in {outcome.run_dir}")
    return 0


def _cmd_grid(args: argparse.Namespace) -> int:
    from fedsign.grid import collect_summaries, grid_table_name, mean_std_table, parse_seeds, parse_sweep, run_grid

    sweeps = [parse_sweep(text) for text in args.sweep]
    seeds = parse_seeds(args.seeds)
    run_dirs = run_grid(args.config, args.overrides, sweeps, seeds, args.output_dir)
    keys = [sweep.key for sweep in sweeps]
    expected = len(seeds) * _product(len(sweep.values) for sweep in sweeps)
    if not run_dirs:
        print("no run completed; see the log lines above", file=sys.stderr)
        return EXIT_FAILED
    table = mean_std_table(collect_summaries(run_dirs, keys), keys)
    columns = [*keys, "seeds", "final_accuracy", "best_accuracy"]
    heading = f"Test accuracy (%) of the global model, mean ± std over seeds {args.seeds}"
    markdown = table[columns].to_markdown(index=False)
    print(f"\n{heading}:\n\n{markdown}")
    stem = args.output_dir / grid_table_name(args.config, args.overrides, sweeps, seeds)
    stem.with_suffix(".md").write_text(f"{heading}.\n\n{markdown}\n")
    table[[*columns, "final_mean", "final_std", "best_mean", "best_std"]].to_csv(stem.with_suffix(".csv"), index=False)
    print(f"\ntable: {stem.with_suffix('.md')} and {stem.with_suffix('.csv')}")
    if len(run_dirs) < expected:
        print(f"\n{expected - len(run_dirs)} of {expected} runs failed; see their .failed folders", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _cmd_partition(args: argparse.Namespace) -> int:
    from fedsign.config import load_config
    from fedsign.federation import load_federated_data
    from fedsign.partition import partition_statistics, plot_label_distribution, summarize_partitions
    from fedsign.results import check_output_dir

    config = load_config(args.config, args.overrides)
    check_output_dir(args.output_dir)
    federated = load_federated_data(config.data, config.seed)
    labels = federated.splits.train_y.numpy()
    stats = partition_statistics(labels, list(federated.partitions), federated.splits.num_classes)
    counts = stats.pivot(index="partition_id", columns="label", values="count")
    summary = summarize_partitions(stats).set_index("partition_id")
    print(counts.join(summary).to_string())
    stem = f"partition-{config.data.dataset}-{config.run_name().rsplit('-', 1)[-1]}"
    stats.to_csv(args.output_dir / f"{stem}.csv", index=False)
    plot_label_distribution(stats, args.output_dir / f"{stem}.png")
    print(f"\nstatistics: {args.output_dir / (stem + '.csv')}\nplot: {args.output_dir / (stem + '.png')}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from fedsign.datasets import list_datasets
    from fedsign.engine import STRATEGY_LISTING, load_object
    from fedsign.models import list_models
    from fedsign.partition import list_partitioners

    print("datasets:    ", ", ".join(list_datasets()))
    print("partitioners:", ", ".join(list_partitioners()))
    print("models:      ", ", ".join(list_models()))
    print("strategies:  ", ", ".join(load_object(STRATEGY_LISTING)()))
    return 0


def _product(values) -> int:
    result = 1
    for value in values:
        result *= value
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the ``fedsign`` command line and return its exit status."""
    from fedsign.engine import RunFailedError
    from fedsign.logs import configure_console

    args = build_parser().parse_args(argv)
    configure_console(verbose=args.verbose)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except UserInputError as error:
        print(f"fedsign {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except RunFailedError as error:
        print(f"fedsign {args.command}: {error}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
