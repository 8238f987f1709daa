"""Valley-analysis subcommands: ``valley``, ``valley-sweep`` and ``valley-study``."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedsign.errors import UserInputError

SOURCE_HELP = (
    "run directory of `fedsign train` or `fedsign run` (its final model θ_f), a .pt state file inside one, "
    "or RUN_DIR@epoch=E, RUN_DIR@round=R or RUN_DIR@round=R,client=K as in the fusion commands"
)


def register(commands: argparse._SubParsersAction) -> None:
    """Add the valley-analysis subcommands to the ``fedsign`` subparsers."""
    from fedsign.noise import list_noises

    noises = "; ".join(f"{noise.name} {noise.description}" for noise in list_noises())

    valley = commands.add_parser(
        "valley", help="1-D test error and loss curves along θ_f + λ·ε for many kinds of noise",
        description="Evaluate the model with the parameters of one group set to θ_f + λ·ε for every λ on a grid, "
                    "for several random directions per noise type, as drawn (ordinary) and with the signs of θ_f "
                    "(sign-consistent). Writes curves.csv, curve_summary.csv, summary.csv, valley.json and the "
                    f"error and loss plots. Noise types: {noises}.",
    )
    valley.add_argument("source", type=Path, metavar="MODEL_OR_RUN", help=SOURCE_HELP)
    _add_source_arguments(valley)
    _add_valley_arguments(valley)
    valley.add_argument("--output-dir", type=Path, default=Path("runs/valley"),
                        help="folder that receives the result folder <run>-valley-<hash> (default: runs/valley)")
    valley.set_defaults(handler=_cmd_valley)

    sweep = commands.add_parser(
        "valley-sweep", help="sign-change-ratio sweep: mean error on each side of the valley against r",
        description="For each ratio r, give a random fraction r of each noise direction's coordinates the signs "
                    "of θ_f, compute the curve, and report the mean test error over λ > 0 and over λ < 0 and the "
                    "measured same-sign ratio against r. Writes curves.csv, summary.csv, summary.md, sweep.json "
                    "and sweep.png.",
    )
    sweep.add_argument("source", type=Path, metavar="MODEL_OR_RUN", help=SOURCE_HELP)
    sweep.add_argument("--ratios", default="0:1:11",
                       help="sign-change ratios: 0,0.5,1 or START:STOP:COUNT (default: 0:1:11)")
    _add_source_arguments(sweep)
    _add_valley_arguments(sweep, default_noises="gaussian,uniform_pos", sign_modes=False)
    sweep.add_argument("--output-dir", type=Path, default=Path("runs/valley"),
                       help="folder that receives the result folder <run>-sweep-<hash> (default: runs/valley)")
    sweep.set_defaults(handler=_cmd_sweep)

    study = commands.add_parser(
        "valley-study", help="factor study: train one model per variant and compare their valleys",
        description="Read a study file (sections `study` and `valley`, see configs/valley_*.yaml), train one model "
                    "per variant and seed (reusing completed trainings under OUTPUT_DIR/models), compute the valley "
                    "curves of each and write one curves.csv, summary.csv, summary.md, study.json and "
                    "study_error.png into OUTPUT_DIR/<study name>.",
    )
    study.add_argument("config", type=Path, help="study file, e.g. configs/valley_bn_init_digits.yaml")
    study.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                       help="dotted overrides of the study file, e.g. valley.num_directions=5 study.seeds=[0,1]")
    study.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                       help="device of the valley curves; training uses engine.device (default: auto)")
    study.add_argument("--output-dir", type=Path, default=Path("runs/valley"),
                       help="folder of the trained models (models/) and the study results (default: runs/valley)")
    study.set_defaults(handler=_cmd_study)


def _add_source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epoch", type=int, help="use the central checkpoint of this epoch instead of θ_f")
    parser.add_argument("--round", dest="round_number", type=int,
                        help="use the federated checkpoint of this round (with --client: a kept client model)")
    parser.add_argument("--client", type=int, help="partition id of a client model kept for --round")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="device of the model and the evaluation subsets; auto = CUDA when present (default: auto)")


def _add_valley_arguments(parser: argparse.ArgumentParser, *, default_noises: str = "", sign_modes: bool = True) -> None:
    from fedsign.models import SELECTIONS
    from fedsign.noise import BIAS_MODES, NORM_SCOPES, SCALINGS, SPECIAL_DIRECTIONS, noise_names

    noises = default_noises or ",".join(noise_names())
    parser.add_argument("--noises", default=noises,
                        help=f"comma-separated noise types and special directions ({', '.join(SPECIAL_DIRECTIONS)}) "
                             f"(default: {noises})")
    parser.add_argument("--num-directions", type=int, default=3,
                        help="random directions per noise type; theta_0, theta_f, sign and sign_centered get one "
                             "(default: 3)")
    if sign_modes:
        parser.add_argument("--sign-modes", default="ordinary,consistent",
                            help="ordinary (ε as drawn) and/or consistent (|ε|·sign(θ_f)) "
                                 "(default: ordinary,consistent)")
    parser.add_argument("--scaling", choices=SCALINGS, default="filter",
                        help="raw ε; filter: each output filter scaled to the norm of θ_f's filter; norm: "
                             "ε·s·‖θ_f‖/‖ε‖ (default: filter)")
    parser.add_argument("--bias-mode", choices=BIAS_MODES, default="per_tensor",
                        help="filter scaling of 1-D tensors (biases, BatchNorm affine): zero (not perturbed), "
                             "per_tensor (scaled to ‖θ‖ of the tensor), keep (raw noise), as_theta (set to θ, "
                             "as the loss-landscape reference code does) (default: per_tensor)")
    parser.add_argument("--width", type=float, default=1.0, help="width factor s of the norm scaling (default: 1)")
    parser.add_argument("--norm-scope", choices=NORM_SCOPES, default="group",
                        help="norm scaling over the whole group as one vector, or per tensor (default: group)")
    parser.add_argument("--group", default="all",
                        help=f"parameters to perturb: {', '.join(SELECTIONS)} (default: all)")
    parser.add_argument("--bn-mode", choices=("keep", "recompute"), default="keep",
                        help="BatchNorm running statistics: keep θ_f's, or recompute them on a training subset at "
                             "every point (default: keep)")
    parser.add_argument("--lambda-min", type=float, default=-1.0, help="smallest λ, < 0 (default: -1)")
    parser.add_argument("--lambda-max", type=float, default=1.0, help="largest λ, > 0 (default: 1)")
    parser.add_argument("--num-points", type=int, default=41,
                        help="evenly spaced λ values; λ = 0 is added when missing (default: 41)")
    parser.add_argument("--eval-examples", type=int, default=1000,
                        help="size of the fixed test subset, all test examples if fewer (default: 1000)")
    parser.add_argument("--bn-examples", type=int, default=1000,
                        help="training examples for --bn-mode recompute (default: 1000)")
    parser.add_argument("--batch-size", type=int, default=2048, help="examples per forward pass (default: 2048)")
    parser.add_argument("--threshold", type=float, default=0.1,
                        help="half-width threshold as a fraction of examples: added to the error at λ = 0 "
                             "(relative) or used as is (absolute) (default: 0.1)")
    parser.add_argument("--threshold-kind", choices=("relative", "absolute"), default="relative",
                        help="how --threshold is read (default: relative)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subsets and the random directions (default: 0)")


def _settings(args: argparse.Namespace):
    from fedsign.valley import ValleySettings

    return ValleySettings(
        noises=_split(args.noises), num_directions=args.num_directions, sign_modes=_split(getattr(args, "sign_modes", "ordinary")),
        scaling=args.scaling, bias_mode=args.bias_mode, width=args.width, norm_scope=args.norm_scope,
        group=args.group, bn_mode=args.bn_mode, lambda_min=args.lambda_min, lambda_max=args.lambda_max,
        num_points=args.num_points, eval_examples=args.eval_examples, bn_examples=args.bn_examples,
        batch_size=args.batch_size, threshold=args.threshold, threshold_kind=args.threshold_kind, seed=args.seed,
    )


def _split(text: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise UserInputError(f"invalid list {text!r}: expected comma-separated names")
    return items


def _model_selection(args: argparse.Namespace) -> dict:
    """Return the source path and checkpoint of ``RUN_DIR[@SELECTOR]`` or of the flags.

    The ``@`` selector is the one the fusion commands read (``epoch=E``, ``round=R``,
    ``round=R,client=K``); it and the ``--epoch/--round/--client`` flags exclude each other.
    """
    from fedsign.fusion import parse_model_ref

    reference = parse_model_ref(str(args.source))
    flags = {"epoch": args.epoch, "round_number": args.round_number, "client": args.client}
    if reference.selector() == "final":
        return {"source_path": args.source, **flags}
    if reference.which == "init":
        raise UserInputError(f"invalid model {args.source}: valley curves need a trained model, not @init")
    if any(value is not None for value in flags.values()):
        raise UserInputError(f"invalid model {args.source}: give either an @ selector or --epoch/--round/--client")
    return {"source_path": reference.run_dir, "epoch": reference.epoch,
            "round_number": reference.round_number, "client": reference.client}


def _cmd_valley(args: argparse.Namespace) -> int:
    from fedsign.valley import run_valley

    outcome = run_valley(settings=_settings(args), output_dir=args.output_dir, device=args.device,
                         **_model_selection(args))
    columns = ["noise", "sign_consistent", "curves", "error_at_zero_mean", "mean_error_neg_mean",
               "mean_error_pos_mean", "asymmetry_mean", "half_width_neg_mean", "half_width_pos_mean"]
    print(outcome.table[columns].to_string(index=False, float_format=lambda value: f"{value:.3f}"))
    print(f"\nresults in {outcome.output_dir}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from fedsign.valley_studies import SUMMARY_MARKDOWN_FILE, parse_ratios, run_ratio_sweep

    ratios = parse_ratios(args.ratios)
    outcome = run_ratio_sweep(settings=_settings(args), ratios=ratios, output_dir=args.output_dir,
                              device=args.device, **_model_selection(args))
    print((outcome.output_dir / SUMMARY_MARKDOWN_FILE).read_text())
    print(f"results in {outcome.output_dir}")
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    from fedsign.valley_studies import SUMMARY_MARKDOWN_FILE, run_study

    outcome = run_study(args.config, args.output_dir, overrides=args.overrides, device=args.device)
    print((outcome.output_dir / SUMMARY_MARKDOWN_FILE).read_text())
    print(f"results in {outcome.output_dir}")
    return 0
