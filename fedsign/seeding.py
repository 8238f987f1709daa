"""Seeds derived from the one run seed, so that each source of randomness is fixed alone.

The run seed fixes the partition, the model initialisation, the client sampling and each
client's data order. A derived seed is a hash of the run seed, a purpose name and integers
such as the round and partition id, so changing the number of rounds does not change the
seeds of earlier rounds.
"""

import hashlib

import torch


def derive_seed(seed: int, purpose: str, *keys: int) -> int:
    """Return a 63-bit seed for ``purpose`` (e.g. ``"sampling"``) and integer ``keys``."""
    text = ":".join([str(seed), purpose, *map(str, keys)])
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def torch_generator(seed: int, purpose: str, *keys: int) -> torch.Generator:
    """Return a CPU ``torch.Generator`` seeded with :func:`derive_seed`."""
    generator = torch.Generator()
    generator.manual_seed(derive_seed(seed, purpose, *keys))
    return generator
