"""Exceptions that report bad user input.

The CLI catches :class:`UserInputError`, prints its message on one line and exits with
status 2. Library callers can catch it as a ``ValueError``.
"""


class UserInputError(ValueError):
    """Invalid user input: the message names the value and what is allowed."""


class ConfigError(UserInputError):
    """A configuration key is unknown, has the wrong type or is out of range."""


class DatasetNotFoundError(UserInputError):
    """A dataset folder is missing or incomplete."""
