"""Sign-election aggregation: per coordinate, merge only the client updates that agree."""

from __future__ import annotations

import logging

import numpy as np

from fedsign.aggregation import average_states
from strategies.fedavg import FedAvg

logger = logging.getLogger(__name__)


def trim_update(update: np.ndarray, keep_fraction: float) -> np.ndarray:
    """Return ``update`` with all but its ``keep_fraction`` largest-magnitude entries set to 0.

    Ties at the threshold are kept, so slightly more entries may survive.
    """
    if keep_fraction >= 1.0 or update.size == 0:
        return update
    keep = max(1, int(np.ceil(keep_fraction * update.size)))
    threshold = np.partition(np.abs(update).ravel(), update.size - keep)[update.size - keep]
    return np.where(np.abs(update) >= threshold, update, 0.0)


def elect_and_merge(updates: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """Return the sign-elected merge of client updates Δ_k with weights w_k.

    Per coordinate j: the positive mass is M+_j = Σ_k w_k·max(Δ_kj, 0) and the negative
    mass M−_j = Σ_k w_k·max(−Δ_kj, 0). The elected sign is s_j = sign(M+_j − M−_j). The
    merge is Σ_{k: sign(Δ_kj) = s_j} w_k·Δ_kj / Σ_{k: sign(Δ_kj) = s_j} w_k, and 0 where
    s_j = 0 (equal masses, or every update 0).
    """
    stacked = np.stack([np.asarray(u, dtype=np.float64) for u in updates])
    w = np.asarray(weights, dtype=np.float64).reshape(-1, *([1] * (stacked.ndim - 1)))
    positive = (w * np.maximum(stacked, 0.0)).sum(axis=0)
    negative = (w * np.maximum(-stacked, 0.0)).sum(axis=0)
    elected = np.sign(positive - negative)
    agrees = (np.sign(stacked) == elected) & (elected != 0)
    agreeing_weight = (w * agrees).sum(axis=0)
    merged = (w * stacked * agrees).sum(axis=0)
    return np.divide(merged, agreeing_weight, out=np.zeros_like(merged), where=agreeing_weight > 0)


class SignElection(FedAvg):
    """Sign-election aggregation of client updates, the trim-elect-merge steps of
    TIES-merging (Yadav, Tam, Choshen, Raffel and Bansal, 2023, "TIES-Merging: Resolving
    Interference When Merging Models", NeurIPS) applied to federated updates.

    With Δ_k = θ_k − θ_g the update of client k and w_k its FedAvg weight (example count,
    or equal with ``strategy.weighted=false``): each Δ_k is trimmed per tensor to its
    ``sign_election.keep_fraction`` largest-magnitude entries (1 keeps all, the default
    [choice]); per coordinate the sign with the larger total mass Σ_k w_k·|Δ_kj| among the
    updates of that sign is elected; the merged update averages only the updates whose
    sign agrees (see :func:`elect_and_merge`); θ_g ← θ_g + η·merge with
    η = ``sign_election.server_lr``. Only trainable parameters are elected; BatchNorm
    buffers are averaged as in FedAvg.

    Client obligations: none beyond FedAvg's.
    """

    def aggregate_states(
        self,
        server_round: int,
        global_state: dict[str, np.ndarray],
        client_states: list[dict[str, np.ndarray]],
        num_examples: list[int],
    ) -> dict[str, np.ndarray]:
        """Average the buffers, elect signs and merge agreeing updates of the parameters."""
        weights = self.aggregation_weights(num_examples) or [1.0] * len(client_states)
        total = float(sum(weights))
        weights = [weight / total for weight in weights]
        settings = self.config.sign_election
        new_state = average_states(client_states, weights)
        for name in self.parameter_names:
            start = np.asarray(global_state[name], dtype=np.float64)
            updates = [trim_update(np.asarray(state[name], dtype=np.float64) - start, settings.keep_fraction)
                       for state in client_states]
            merged = elect_and_merge(updates, weights)
            new_state[name] = (start + settings.server_lr * merged).astype(np.asarray(global_state[name]).dtype)
        return new_state
