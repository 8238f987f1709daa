"""Same-sign ratio (SSR) of parameter vectors.

SSR(u, v) is the fraction of coordinates j with sign(u_j) = sign(v_j), where sign(0) = 0:
two zeros agree, a zero and a nonzero value do not. The functions here act on flat
tensors or on state dictionaries restricted to a list of parameter names; callers pass
trainable parameter names only, so BatchNorm running buffers never enter an SSR.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


def flatten(state: Mapping[str, torch.Tensor], names: Sequence[str]) -> torch.Tensor:
    """Concatenate the tensors ``state[name]`` for ``names`` into one float vector."""
    return torch.cat([torch.as_tensor(state[name]).detach().reshape(-1).float() for name in names])


def ssr(u: torch.Tensor, v: torch.Tensor) -> float:
    """Return the same-sign ratio of two equally shaped tensors."""
    if u.shape != v.shape:
        raise ValueError(f"SSR needs equally shaped tensors, got {tuple(u.shape)} and {tuple(v.shape)}")
    return (torch.sign(u) == torch.sign(v)).double().mean().item()


def mean_pairwise_ssr(vectors: Sequence[torch.Tensor]) -> float:
    """Return the mean SSR over all pairs of ``K >= 2`` vectors in O(K·D).

    Per coordinate, with p positive, n negative and z zero entries among the K vectors,
    the number of agreeing pairs is C(p,2) + C(n,2) + C(z,2). The mean over coordinates
    and over the C(K,2) pairs equals the mean of the K(K-1)/2 pairwise SSRs.
    """
    k = len(vectors)
    if k < 2:
        raise ValueError(f"mean pairwise SSR needs at least 2 vectors, got {k}")
    positive = torch.zeros_like(vectors[0], dtype=torch.float64)
    negative = torch.zeros_like(positive)
    for vector in vectors:
        positive += vector > 0
        negative += vector < 0
    zero = k - positive - negative
    agreeing = (positive * (positive - 1) + negative * (negative - 1) + zero * (zero - 1)) / 2
    return (agreeing.sum() / (agreeing.numel() * k * (k - 1) / 2)).item()


def round_sign_diagnostics(
    global_state: Mapping[str, torch.Tensor],
    client_states: Sequence[Mapping[str, torch.Tensor]],
    names: Sequence[str],
) -> dict[str, float]:
    """Return the SSR diagnostics of one round over the parameters ``names``.

    ``ssr_client_global_mean``/``_min`` compare each returned client model with the global
    model it started from; ``ssr_pairwise_mean`` is the mean SSR over all client pairs
    (absent with fewer than two clients).
    """
    reference = flatten(global_state, names)
    vectors = [flatten(state, names) for state in client_states]
    to_global = [ssr(vector, reference) for vector in vectors]
    diagnostics = {
        "ssr_client_global_mean": sum(to_global) / len(to_global),
        "ssr_client_global_min": min(to_global),
    }
    if len(vectors) >= 2:
        diagnostics["ssr_pairwise_mean"] = mean_pairwise_ssr(vectors)
    return diagnostics
