"""FedSign: FedAvg plus a local sign-alignment regulariser."""

from __future__ import annotations

import logging

from strategies.fedavg import FedAvg

logger = logging.getLogger(__name__)


class FedSign(FedAvg):
    """FedAvg whose clients keep their parameters on the signs of the global model.

    With s = sign(θ_g) of the global model received in a round (fixed for the round),
    each client minimises CE(θ) + β·R(θ; s), where R is one of the variants of
    :func:`clients.objectives.sign_alignment_penalty` (``sign.variant``: hinge, linear or
    soft). The server aggregates exactly like FedAvg. With β = 0 the clients add no term,
    and the run gives FedAvg's models bit for bit.

    Client obligations: read ``sign-beta``, ``sign-variant``, ``sign-kappa``,
    ``sign-groups``, ``sign-skip-zero`` and ``sign-reduction`` from the round config and add the term for
    the parameter group ``sign-groups`` (see ``fedsign.models.select_parameters``).
    """

    objectives = ("sign",)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        if self.config.sign.beta == 0:
            logger.warning("sign.beta is 0: FedSign adds no regulariser and runs as FedAvg")

    def objective_config(self) -> dict[str, bool | int | float | str]:
        """Return the sign-regulariser settings sent to clients every round."""
        sign = self.config.sign
        return {
            "sign-beta": sign.beta,
            "sign-variant": sign.variant,
            "sign-kappa": sign.kappa,
            "sign-groups": sign.groups,
            "sign-skip-zero": sign.skip_zero,
            "sign-reduction": sign.reduction,
        }
