"""fedsign: federated-learning simulation and sign-alignment analysis on Flower."""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
