"""Keys of the records the ServerApp and the ClientApp exchange or keep (Flower's kebab-case).

Both apps import these from here, so neither imports the other.
"""

from fedsign.config import Config
from fedsign.errors import UserInputError

# ConfigRecord entries sent with every train and evaluate message.
CONFIG_KEY = "fedsign-config"  # the resolved fedsign config as YAML text
ROUND_KEY = "server-round"
LR_KEY = "lr"
OBJECTIVES_KEY = "objectives"  # comma-separated client objective names, e.g. "prox,sign"

# MetricRecord entries every client reply carries.
NUM_EXAMPLES_KEY = "num-examples"
PARTITION_ID_KEY = "partition-id"

# Records kept in the client's persistent state (Flower's ``Context.state``).
MOON_PREVIOUS_MODEL_KEY = "moon-previous-model"  # full state of the client's last local model
FEDDYN_GRADIENT_KEY = "feddyn-gradient"  # the client's FedDyn gradient state g_k
SCAFFOLD_CONTROL_KEY = "scaffold-control"  # the client's control variate c_i
# Records exchanged in messages.
SCAFFOLD_SERVER_CONTROL_KEY = "scaffold-server-control"  # server -> client: c
SCAFFOLD_CONTROL_DELTA_KEY = "scaffold-control-delta"  # client -> server: c_i+ - c_i


def objective_settings(config: Config, name: str) -> dict[str, bool | int | float | str]:
    """Return the ConfigRecord entries that the client objective ``name`` reads."""
    if name == "sign":
        sign = config.sign
        return {"sign-beta": sign.beta, "sign-variant": sign.variant, "sign-kappa": sign.kappa,
                "sign-groups": sign.groups, "sign-skip-zero": sign.skip_zero, "sign-reduction": sign.reduction}
    if name == "prox":
        return {"prox-mu": config.prox.mu}
    if name == "moon":
        return {"moon-mu": config.moon.mu, "moon-tau": config.moon.tau}
    if name == "feddyn":
        return {"feddyn-alpha": config.feddyn.alpha}
    if name == "scaffold":
        return {"scaffold-variate": config.scaffold.variate}
    raise UserInputError(f"unknown client objective {name!r}; known: feddyn, moon, prox, scaffold, sign")
