"""Same-sign ratio (SSR) of parameter vectors.

SSR(u, v) is the fraction of coordinates j with sign(u_j) = sign(v_j), where sign(0) = 0:
two zeros agree, a zero and a nonzero value do not. The functions here act on flat
tensors or on state dictionaries restricted to a list of parameter names. Callers pass
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
    model it started from. ``ssr_pairwise_mean`` is the mean SSR over all client pairs and
    is absent with fewer than two clients.
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


# ---------------------------------------------------------------------------------------
# Per-group SSR and SSR tables of model pairs, for the fusion analysis
# ---------------------------------------------------------------------------------------


def ssr_groups(model: torch.nn.Module, selections: Sequence[str] = ()) -> dict[str, list[str]]:
    """Return the parameter names of each SSR group of ``model``, ``all`` first.

    The fixed groups are ``all`` and those of :func:`fedsign.models.parameter_groups`
    (``bn_weight``, ``bn_bias``, ``classifier`` with its weight and bias, ``conv_weight``,
    ``other_weight`` and ``other_bias``); groups that are empty for this model are left
    out. Each entry of ``selections`` adds a group named by itself, chosen by
    :func:`fedsign.models.select_parameters` (``features``, ``first_block``,
    ``re:<regex>``, ...). Only ``model.named_parameters()`` enter, never buffers, so
    BatchNorm running statistics and counters are never part of an SSR.

    Raises
    ------
    UserInputError
        If a selection is unknown or selects no parameter.
    """
    from fedsign.models import parameter_groups, select_parameters

    groups = {"all": [name for name, _ in model.named_parameters()]}
    groups.update({group: names for group, names in parameter_groups(model).items() if names})
    for selection in selections:
        groups[selection] = select_parameters(model, selection)
    return groups


def ssr_by_group(
    state_u: Mapping[str, torch.Tensor],
    state_v: Mapping[str, torch.Tensor],
    groups: Mapping[str, Sequence[str]],
) -> dict[str, float]:
    """Return SSR(u, v) over the parameters of each group, keyed by group name.

    Each group's tensors are flattened into one vector, so a group's SSR weighs every
    coordinate equally (a large tensor counts more than a small one). Zeros follow
    sign(0) = 0: two zeros agree, and a zero never agrees with a nonzero value.
    """
    return {group: ssr(flatten(state_u, names), flatten(state_v, names)) for group, names in groups.items()}


def ssr_table(
    states: Mapping[str, Mapping[str, torch.Tensor]],
    pairs: Sequence[tuple[str, str]],
    groups: Mapping[str, Sequence[str]],
) -> list[dict[str, object]]:
    """Return tidy rows of the per-group SSR of labelled model states.

    Parameters
    ----------
    states : mapping of str to state dict
        Model states by label, e.g. ``{"I": init, "A": model_a, "B": model_b}``.
    pairs : sequence of (str, str)
        Label pairs to compare, e.g. ``[("I", "A"), ("I", "B"), ("A", "B")]``.
    groups : mapping of str to list of str
        Parameter names per group, as :func:`ssr_groups` returns.

    Returns
    -------
    list of dict
        One row per pair and group with keys ``pair`` (``"A-B"``), ``model_u``,
        ``model_v``, ``group``, ``ssr`` and ``coordinates`` (the group's size).
    """
    rows: list[dict[str, object]] = []
    for label_u, label_v in pairs:
        values = ssr_by_group(states[label_u], states[label_v], groups)
        for group, value in values.items():
            coordinates = sum(int(torch.as_tensor(states[label_u][name]).numel()) for name in groups[group])
            rows.append({
                "pair": f"{label_u}-{label_v}", "model_u": label_u, "model_v": label_v,
                "group": group, "ssr": value, "coordinates": coordinates,
            })
    return rows
