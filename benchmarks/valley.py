"""Time a whole valley sweep against the bare forward passes it needs, and print the ratio.

The sweep is :func:`fedsign.valley.compute_curves` with every registered noise type, both sign
modes and the default 41-point grid: it draws, sign-replaces and scales each direction, sets
the parameters to θ_f + λ·ε at every point and evaluates the fixed test subset. The bare time
is the same number of forward passes of the unperturbed model on the same batches (plus, for
``--bn-mode recompute``, the training-mode passes over the BatchNorm subset), with nothing else.
A ratio near 1 means the sweep spends its time in forward passes.

Usage::

    python benchmarks/valley.py [RUN_DIR] [--bn-mode keep|recompute] [--num-directions N] [--device auto]

Without RUN_DIR an untrained cnn_bn on digits is used; the timing does not depend on training.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from fedsign.datasets import load_dataset
from fedsign.models import build_model
from fedsign.training import resolve_device
from fedsign.valley import ValleySettings, compute_curves, lambda_grid, load_source, select_subsets


def bare_forward_time(model: torch.nn.Module, x: torch.Tensor, bn_x: torch.Tensor, *, points: int,
                      batch_size: int, recompute: bool) -> float:
    """Return the seconds of ``points`` evaluations of ``x`` (and BatchNorm passes on ``bn_x``) without perturbation."""
    state = {key: value.clone() for key, value in model.state_dict().items()}
    synchronize = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    started = time.perf_counter()
    with torch.no_grad():
        for _ in range(points):
            if recompute:
                model.train()
                for start in range(0, len(bn_x), batch_size):
                    model(bn_x[start:start + batch_size])
            model.eval()
            for start in range(0, len(x), batch_size):
                model(x[start:start + batch_size])
    synchronize()
    elapsed = time.perf_counter() - started
    model.load_state_dict(state)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", type=Path, help="run directory of a trained model (optional)")
    parser.add_argument("--bn-mode", choices=("keep", "recompute"), default="keep")
    parser.add_argument("--num-directions", type=int, default=2)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    device = resolve_device(args.device)
    if args.run_dir is not None:
        source = load_source(args.run_dir, device=device)
        model, splits, label = source.model, source.splits, f"{source.model_name} on {source.dataset}"
    else:
        splits = load_dataset("digits")
        torch.manual_seed(0)
        model = build_model("cnn_bn", input_shape=splits.input_shape, num_classes=splits.num_classes).to(device)
        label = "untrained cnn_bn on digits"
    settings = ValleySettings(num_directions=args.num_directions, bn_mode=args.bn_mode)
    data = select_subsets(splits, settings, device)

    # One warm-up point, so that one-off allocations fall outside both timings.
    bare_forward_time(model, data.eval_x, data.bn_x, points=1, batch_size=settings.batch_size,
                      recompute=args.bn_mode == "recompute")
    started = time.perf_counter()
    curves = compute_curves(model, None, data, settings)
    sweep_time = time.perf_counter() - started
    points = len(curves)
    bare_time = bare_forward_time(model, data.eval_x, data.bn_x, points=points, batch_size=settings.batch_size,
                                  recompute=args.bn_mode == "recompute")

    print(f"model: {label}; device: {device}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{platform.processor() or platform.machine()}")
    print(f"sweep: {points // len(lambda_grid(settings))} curves × {len(lambda_grid(settings))} points on "
          f"{len(data.eval_y)} test examples, bn_mode={args.bn_mode}, batch size {settings.batch_size}")
    print(f"sweep time {sweep_time:.2f} s; bare forward passes {bare_time:.2f} s; "
          f"ratio {sweep_time / bare_time:.2f}")


if __name__ == "__main__":
    main()
