"""FedPAN: FedAvg on models with fixed position encodings of their neurons."""

from __future__ import annotations

import logging

from fedsign.errors import ConfigError
from strategies.fedavg import FedAvg

logger = logging.getLogger(__name__)


class FedPan(FedAvg):
    """FedPAN (Li, Xu, Song, Li, Li, Shao and Zhan, 2022, "Federated Learning with
    Position-Aware Neurons", CVPR).

    FedAvg on a model whose channel outputs carry a fixed position encoding before each
    activation: channel j of J is multiplied by 1 + A·sin(2πTj/J) (``multiplicative``) or
    gets A·sin(2πTj/J) added (``additive``), with A = ``model.pe_amplitude`` and
    T = ``model.pe_period`` (see :class:`fedsign.models.PositionEncoding`). The encodings
    tie each neuron to its position, so clients' neurons at one index stay alike and
    averaging matches them. Choosing ``strategy.name=fedpan`` turns on the
    ``multiplicative`` encoding when ``model.position_encoding`` is ``none``.

    Client obligations: none beyond FedAvg's; the encodings are part of the model built
    from the config.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        model = self.config.model
        if model.position_encoding == "none":
            raise ConfigError("strategy.name=fedpan needs model.position_encoding=multiplicative or additive")
        if model.pe_amplitude == 0:
            logger.warning("model.pe_amplitude is 0: the position encodings do nothing and FedPAN runs as FedAvg")
        logger.info("FedPAN: %s position encoding, amplitude %g, period %g",
                    model.position_encoding, model.pe_amplitude, model.pe_period)
