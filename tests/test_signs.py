"""Tests of the same-sign ratio (SSR) functions."""

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsign.signs import mean_pairwise_ssr, round_sign_diagnostics, ssr


def test_ssr_hand_computed_with_zeros():
    u = torch.tensor([1.0, -2.0, 0.0, 3.0, 0.0])
    v = torch.tensor([2.0, 1.0, 0.0, -1.0, 5.0])
    # Agree at index 0 (+,+) and index 2 (0,0); disagree elsewhere.
    assert ssr(u, v) == pytest.approx(2 / 5)


def test_ssr_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="equally shaped"):
        ssr(torch.zeros(3), torch.zeros(4))


def brute_force_pairwise(vectors):
    pairs = list(itertools.combinations(vectors, 2))
    return sum(ssr(a, b) for a, b in pairs) / len(pairs)


def test_pairwise_ssr_three_clients_by_hand():
    a = torch.tensor([1.0, 1.0, -1.0, 0.0])
    b = torch.tensor([1.0, -1.0, -1.0, 0.0])
    c = torch.tensor([-1.0, -1.0, -1.0, 2.0])
    # SSR(a,b)=3/4, SSR(a,c)=1/4, SSR(b,c)=2/4 -> mean 1/2.
    assert mean_pairwise_ssr([a, b, c]) == pytest.approx(0.5)


@settings(max_examples=60, deadline=None)
@given(
    num_vectors=st.integers(min_value=2, max_value=6),
    dimension=st.integers(min_value=1, max_value=12),
    seed=st.integers(min_value=0, max_value=10_000),
)
def test_pairwise_ssr_matches_brute_force(num_vectors, dimension, seed):
    rng = np.random.default_rng(seed)
    # Values in {-1, 0, 1} make ties and zeros frequent.
    vectors = [torch.from_numpy(rng.integers(-1, 2, size=dimension).astype(np.float32)) for _ in range(num_vectors)]
    assert mean_pairwise_ssr(vectors) == pytest.approx(brute_force_pairwise(vectors), abs=1e-12)


def test_pairwise_ssr_needs_two_vectors():
    with pytest.raises(ValueError, match="at least 2"):
        mean_pairwise_ssr([torch.ones(3)])


def test_round_diagnostics_use_named_parameters_only():
    global_state = {"w": torch.tensor([1.0, -1.0]), "running_mean": torch.tensor([5.0, 5.0])}
    clients = [
        {"w": torch.tensor([1.0, 1.0]), "running_mean": torch.tensor([-5.0, -5.0])},
        {"w": torch.tensor([1.0, -1.0]), "running_mean": torch.tensor([-5.0, -5.0])},
    ]
    diagnostics = round_sign_diagnostics(global_state, clients, ["w"])
    assert diagnostics["ssr_client_global_mean"] == pytest.approx(0.75)
    assert diagnostics["ssr_client_global_min"] == pytest.approx(0.5)
    assert diagnostics["ssr_pairwise_mean"] == pytest.approx(0.5)
