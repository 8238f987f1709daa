"""Subcommand modules that ``fedsign.cli`` registers through ``COMMAND_MODULES``."""
