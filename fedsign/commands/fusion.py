"""Fusion-analysis subcommands: ``interpolate``, ``ssr``, ``fusion-study``, ``relu-demo``, ``softmax-demo``."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedsign.errors import UserInputError

MODEL_HELP = (
    "RUN_DIR[@SELECTOR]: RUN_DIR alone is the final model; SELECTOR is init, epoch=E, round=R "
    "or round=R,client=K (e.g. runs/x@round=5,client=3)"
)


def register(commands: argparse._SubParsersAction) -> None:
    """Add the fusion-analysis subcommands to the ``fedsign`` subparsers."""
    _register_interpolate(commands)
    _register_ssr(commands)
    _register_study(commands)
    _register_theory(commands)


def _add_group_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--group", action="append", default=[], metavar="SELECTION",
        help="extra SSR group besides all, bn_weight, bn_bias, classifier, conv_weight, other_weight and "
             "other_bias: features, first_block, conv, bn, or re:<regex> on parameter names (repeatable)",
    )


def _register_interpolate(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "interpolate", help="accuracy and loss along (1 − λ)·θ_A + λ·θ_B, with the SSR table of the pair",
        description="Evaluate the model with parameters (1 − λ)·θ_A + λ·θ_B on a λ grid and write "
                    "interpolation.csv, interpolation.json (settings, accuracy gap, loss barrier, SSR), "
                    "ssr.csv and interpolation.png. Models: " + MODEL_HELP + ". Round 0 and epoch 0 "
                    "are θ_0; the last round falls back to the final model when no checkpoint was saved.",
    )

    parser.add_argument("model_a", metavar="A", help="model at λ = 0; " + MODEL_HELP)
    parser.add_argument("model_b", metavar="B", help="model at λ = 1; same form as A")
    parser.add_argument("--init", metavar="I", help="common initialisation for SSR-IA and SSR-IB; same form as A")

    parser.add_argument("--points", type=int, default=11,
                        help="evenly spaced λ values over the range; 0, 0.5 and 1 are always added (default: 11)")
    parser.add_argument("--lambda-min", type=float, default=0.0,
                        help="smallest λ, <= 0; below 0 extrapolates beyond A (default: 0)")
    parser.add_argument("--lambda-max", type=float, default=1.0,
                        help="largest λ, >= 1; above 1 extrapolates beyond B (default: 1)")
    parser.add_argument("--bn-mode", choices=("interpolate", "recompute"), default="recompute",
                        help="BatchNorm running statistics: interpolated like parameters, or recomputed at every λ "
                             "on a training subset (default: recompute)")
    parser.add_argument("--bn-examples", type=int, default=1000,
                        help="training examples used to recompute BatchNorm statistics (default: 1000)")
    parser.add_argument("--bn-batch-size", type=int, default=256,
                        help="batch size of the BatchNorm recompute pass (default: 256)")

    parser.add_argument("--split", choices=("test", "train"), default="test",
                        help="split that each interpolated model is evaluated on (default: test)")
    parser.add_argument("--max-examples", type=int, default=0,
                        help="evaluate on the first N examples of the split only; 0 = all (default: 0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the BatchNorm training subset (default: 0)")
    _add_group_argument(parser)
    parser.add_argument("--output-dir", type=Path, default=Path("runs/interpolate"),
                        help="folder for the CSV, JSON and plot; existing files there are replaced "
                             "(default: runs/interpolate)")
    parser.set_defaults(handler=_cmd_interpolate)


def _cmd_interpolate(args: argparse.Namespace) -> int:
    from fedsign.fusion import InterpolationSettings, lambda_grid, parse_model_ref, run_interpolation

    settings = InterpolationSettings(
        lambdas=lambda_grid(args.points, args.lambda_min, args.lambda_max),
        bn_mode=args.bn_mode, bn_examples=args.bn_examples, bn_batch_size=args.bn_batch_size,
        split=args.split, max_examples=args.max_examples, seed=args.seed,
    )
    result = run_interpolation(
        parse_model_ref(args.model_a), parse_model_ref(args.model_b),
        ref_init=parse_model_ref(args.init) if args.init else None,
        settings=settings, output_dir=args.output_dir, selections=args.group,
    )
    summary = result["summary"]
    print(f"{args.split} accuracy: A {summary['accuracy_a']:.4f}, B {summary['accuracy_b']:.4f}, "
          f"λ=0.5 {summary['midpoint_accuracy']:.4f}; gap {summary['accuracy_gap']:.4f}; "
          f"loss barrier {summary['loss_barrier']:.4f} at λ={summary['barrier_lambda']:g} (BN {args.bn_mode})")
    _print_ssr(result["ssr"])
    print(f"results in {args.output_dir}")
    return 0


def _register_ssr(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "ssr", help="same-sign ratio table (overall and per parameter group) of models or of one FL round",
        description="Print the same-sign ratio of trainable parameters (sign(0) = 0, BatchNorm buffers "
                    "excluded), overall and per parameter group. Either name models (" + MODEL_HELP +
                    "; labelled M1, M2, ...), or give one federated run directory with --round R to compare "
                    "the client models kept for that round with each other and with the global model.",
    )
    parser.add_argument("models", nargs="+", metavar="MODEL", help=MODEL_HELP)
    parser.add_argument("--init", metavar="I", help="reference model that every MODEL is compared with")
    parser.add_argument("--round", type=int, dest="round_number",
                        help="FL round whose kept client models are compared (one run directory as MODEL)")
    parser.add_argument("--clients", default="",
                        help="with --round: comma-separated client (partition) ids; default: all kept clients")
    _add_group_argument(parser)
    parser.add_argument("--output-dir", type=Path,
                        help="folder for ssr.csv and ssr.json (default: print only)")
    parser.set_defaults(handler=_cmd_ssr)


def _cmd_ssr(args: argparse.Namespace) -> int:
    from fedsign.fusion import parse_model_ref, round_model_refs, run_ssr

    if args.round_number is not None:
        if len(args.models) != 1 or "@" in args.models[0]:
            raise UserInputError("--round needs exactly one run directory without a selector, "
                                 f"got {' '.join(args.models)}")
        if args.init:
            raise UserInputError("--round compares with the round's global model; leave out --init")
        refs = round_model_refs(Path(args.models[0]), args.round_number, _parse_ids(args.clients))
        reference = "global_start" if "global_start" in refs else None
    else:
        if args.clients:
            raise UserInputError("--clients needs --round R")
        refs = {f"M{index}": parse_model_ref(text) for index, text in enumerate(args.models, start=1)}
        reference = None
        if args.init:
            refs = {"I": parse_model_ref(args.init), **refs}
            reference = "I"
    for label, ref in refs.items():
        print(f"{label}: {ref}")
    rows = run_ssr(refs, reference=reference, selections=args.group, output_dir=args.output_dir)
    _print_ssr(rows)
    if args.output_dir is not None:
        print(f"results in {args.output_dir}")
    return 0


def _parse_ids(text: str) -> list[int]:
    if not text.strip():
        return []
    try:
        return [int(item) for item in text.split(",")]
    except ValueError:
        raise UserInputError(f"invalid client ids {text!r}: expected comma-separated integers, e.g. 0,3,7") from None


def _print_ssr(rows: list[dict]) -> None:
    import pandas as pd

    table = pd.DataFrame(rows).pivot(index="pair", columns="group", values="ssr")
    order = [group for group in dict.fromkeys(row["group"] for row in rows)]
    pairs = list(dict.fromkeys(row["pair"] for row in rows))
    print("\nSSR (fraction of coordinates with equal signs):")
    print(table.loc[pairs, order].to_string(float_format=lambda value: f"{value:.4f}"))


def _register_study(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "fusion-study", help="train model pairs, correlate SSR-AB with interpolation accuracy and gap",
        description="Train the model pairs of a fusion-study config (configs/fusion_*.yaml), record SSR-IA, "
                    "SSR-IB and SSR-AB per epoch, interpolate each pair, and write the Pearson and Spearman "
                    "correlations with p-values and the plots. Completed pairs are reused on a rerun.",
    )
    parser.add_argument("config", type=Path, help="fusion-study YAML file, e.g. configs/fusion_digits.yaml")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotted overrides applied after the file, e.g. workers=1 interpolation.points=21")
    parser.add_argument("--output-dir", type=Path, default=Path("runs"),
                        help="folder that receives the study directory named after the config (default: runs)")
    parser.set_defaults(handler=_cmd_study)


def _cmd_study(args: argparse.Namespace) -> int:
    from fedsign.fusion_study import load_study_config, run_study

    config = load_study_config(args.config, args.overrides)
    outcome = run_study(config, args.output_dir)
    print("\nCorrelations of the final SSR-AB over the study's pairs (two-sided p-values):")
    for row in outcome["correlations"]:
        print(f"{row['subset']}: SSR-AB vs {row['target']}: Pearson r = {row['pearson_r']:.3f} (p = {row['pearson_p']:.2g}), "
              f"Spearman ρ = {row['spearman_rho']:.3f} (p = {row['spearman_p']:.2g}), n = {row['n']}")
    print(f"{outcome['trained']} pairs trained, {outcome['reused']} reused; results in {outcome['study_dir']}")
    return 0


def _register_theory(commands: argparse._SubParsersAction) -> None:
    relu = commands.add_parser(
        "relu-demo", help="ReLU on/off agreement between θ_f and θ_f + λ·ε for ordinary and sign-consistent noise",
        description="For each λ, the 2×2 matrix of ReLU units on/off in θ_f against on/off in θ_f + λ·ε, "
                    "as fractions of all (example, unit) pairs, for Gaussian noise ε and its sign-consistent "
                    "version |ε|·sign(θ_f). Each noise tensor is rescaled to the norm of its parameter tensor "
                    "times --scale. Writes relu_agreement.csv, relu_agreement.json and relu_agreement.png.",
    )
    relu.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    relu.add_argument("--points", type=int, default=21, help="λ values evenly spaced in [-1, 1] (default: 21)")
    relu.add_argument("--scale", type=float, default=1.0,
                      help="noise norm per tensor as a multiple of the tensor's norm (default: 1)")
    relu.add_argument("--examples", type=int, default=500, help="test examples that the ReLUs see (default: 500)")
    relu.add_argument("--noise-seed", type=int, default=0, help="seed of the Gaussian noise (default: 0)")
    relu.add_argument("--group", default="all",
                      help="parameters perturbed: all, classifier, features, first_block, conv, bn, bn_weight or "
                           "re:<regex> (default: all)")
    relu.add_argument("--output-dir", type=Path, default=Path("runs/relu-demo"),
                      help="folder for the CSV, JSON and plot (default: runs/relu-demo)")
    relu.set_defaults(handler=_cmd_relu)

    softmax = commands.add_parser(
        "softmax-demo", help="linear softmax classifier: error, loss, Hessian trace and Taylor terms along λ",
        description="Train a linear softmax classifier θ_f (multinomial logistic regression) on a dataset, then "
                    "evaluate f(θ_f + λ·ε) for Gaussian ε and sign-consistent |ε|·sign(θ_f): test error, "
                    "cross-entropy, the trace of the exact Hessian, and the first-order term λ·gᵀε and "
                    "second-order term ½λ²·εᵀHε at θ_f. Writes softmax_demo.csv, softmax_demo.json and "
                    "softmax_demo.png.",
    )
    softmax.add_argument("--dataset", default="digits", help="dataset from `fedsign list` (default: digits)")
    softmax.add_argument("--points", type=int, default=41, help="λ values evenly spaced in [-1, 1] (default: 41)")
    softmax.add_argument("--scale", type=float, default=1.0,
                         help="noise norm as a multiple of ‖θ_f‖ (default: 1)")
    softmax.add_argument("--epochs", type=int, default=100,
                         help="full-batch L-BFGS iterations that train θ_f (default: 100)")
    softmax.add_argument("--weight-decay", type=float, default=1e-3,
                         help="L2 coefficient on the weights while training θ_f (default: 0.001)")
    softmax.add_argument("--noise-seed", type=int, default=0, help="seed of θ_f's start and the noise (default: 0)")
    softmax.add_argument("--output-dir", type=Path, default=Path("runs/softmax-demo"),
                         help="folder for the CSV, JSON and plot (default: runs/softmax-demo)")
    softmax.set_defaults(handler=_cmd_softmax)


def _cmd_relu(args: argparse.Namespace) -> int:
    from fedsign.fusion import parse_model_ref
    from fedsign.theory import ReluDemoSettings, run_relu_demo

    settings = ReluDemoSettings(points=args.points, scale=args.scale, examples=args.examples,
                                noise_seed=args.noise_seed, group=args.group)
    result = run_relu_demo(parse_model_ref(args.model), settings=settings, output_dir=args.output_dir)
    for noise, values in result["summary"].items():
        print(f"{noise}: on/off agreement at λ=-1 {values['agreement_at_minus_1']:.4f}, "
              f"at λ=+1 {values['agreement_at_plus_1']:.4f}")
    print(f"results in {args.output_dir}")
    return 0


def _cmd_softmax(args: argparse.Namespace) -> int:
    from fedsign.theory import SoftmaxDemoSettings, run_softmax_demo

    settings = SoftmaxDemoSettings(dataset=args.dataset, points=args.points, scale=args.scale, epochs=args.epochs,
                                   weight_decay=args.weight_decay, seed=args.noise_seed)
    result = run_softmax_demo(settings=settings, output_dir=args.output_dir)
    for noise, values in result["summary"].items():
        print(f"{noise}: mean error λ<0 {values['mean_error_negative']:.4f}, λ>0 {values['mean_error_positive']:.4f}; "
              f"Hessian trace at λ=-1 {values['hessian_trace_at_minus_1']:.3f}, "
              f"at λ=+1 {values['hessian_trace_at_plus_1']:.3f}")
    print(f"θ_f test error {result['theta_f']['error']:.4f}; results in {args.output_dir}")
    return 0
