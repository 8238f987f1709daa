"""MOON: FedAvg whose clients add a model-contrastive loss on their representations."""

from __future__ import annotations

import logging

from strategies.fedavg import FedAvg

logger = logging.getLogger(__name__)


class Moon(FedAvg):
    """MOON (Li, He and Song, 2021, "Model-Contrastive Federated Learning", CVPR).

    Each client minimises CE(θ) + μ·ℓ_con with

        ℓ_con = −log( e^{sim(z, z_glob)/τ} / (e^{sim(z, z_glob)/τ} + e^{sim(z, z_prev)/τ}) ),

    where z, z_glob and z_prev are the representations ``model.features(x)`` of the local
    model being trained, of the global model received this round and of the client's
    previous local model, and sim is the cosine similarity. μ is ``moon.mu`` and τ is
    ``moon.tau``; the server averages like FedAvg.

    Client obligations: read ``moon-mu`` and ``moon-tau``; keep the previous local model
    in the client's persistent state (``Context.state``) and leave the term out in the
    first round a client trains, when it has no previous model.
    The paper adds a projection head on top of the representation; fedsign uses
    ``model.features`` as it is [choice].
    """

    objectives = ("moon",)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        if self.config.moon.mu == 0:
            logger.warning("moon.mu is 0: MOON adds no contrastive term and runs as FedAvg")
