"""Averaging of model states sent by clients (plain numpy)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def average_states(
    states: Sequence[Mapping[str, np.ndarray]], weights: Sequence[float] | None = None
) -> dict[str, np.ndarray]:
    """Return the weighted mean of full model states (parameters and BatchNorm buffers).

    Sums run in float64 in the given order, then each tensor is cast back to its own
    dtype; integer tensors (BatchNorm's ``num_batches_tracked``) are rounded to the nearest
    integer first. ``weights`` default to equal weights and are normalised to sum to 1.
    """
    if not states:
        raise ValueError("cannot average an empty list of states")
    weights = [1.0] * len(states) if weights is None else list(weights)
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"the aggregation weights must have a positive sum, got {weights}")

    averaged: dict[str, np.ndarray] = {}
    for name in states[0]:
        accumulator = np.zeros(np.shape(states[0][name]), dtype=np.float64)
        for state, weight in zip(states, weights, strict=True):
            accumulator += np.asarray(state[name], dtype=np.float64) * (weight / total)
        dtype = np.asarray(states[0][name]).dtype
        if np.issubdtype(dtype, np.integer):
            accumulator = np.rint(accumulator)
        averaged[name] = accumulator.astype(dtype)
    return averaged
