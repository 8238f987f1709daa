"""The ``report`` subcommand: the comparison table and curves of finished runs."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``report`` subcommand to the ``fedsign`` subparsers."""
    report = commands.add_parser(
        "report", help="comparison table (mean ± std over seeds) and curves of finished runs",
        description="Read completed run directories (or folders of them, such as a grid's --output-dir) and "
                    "write report.md (methods as rows, one column per value of --column, final accuracy and the "
                    "mean over the last k evaluated rounds), report_table.csv, report_runs.csv, report_curves.csv, "
                    "accuracy_<dataset>.png and sign_diagnostics_<dataset>.png into --output-dir.",
    )
    report.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR",
                        help="run directories, or folders that contain them (searched one level deep)")
    report.add_argument("--output-dir", type=Path, default=Path("runs/report"),
                        help="folder for the report files (default: runs/report)")
    report.add_argument("--column", default="data.alpha",
                        help="dotted config key whose values are the table's columns (default: data.alpha)")
    report.add_argument("--last-k", type=int, default=5,
                        help="number of last evaluated rounds whose test accuracy is averaged (default: 5)")
    report.add_argument("--band", choices=("ci", "sd"), default="ci",
                        help="band around the mean curve over seeds: 95%% bootstrap confidence interval (ci) "
                             "or ±1 standard deviation (sd) (default: ci)")
    report.set_defaults(handler=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from fedsign.report import write_report

    files = write_report(args.run_dirs, args.output_dir, column=args.column, last_k=args.last_k, band=args.band)
    print(files.markdown.read_text())
    print(f"report: {files.markdown}\ntables: {files.table}, {files.runs}\ncurves: {files.curves}")
    for plot in files.plots:
        print(f"plot: {plot}")
    return 0
