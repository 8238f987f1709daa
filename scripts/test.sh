#!/usr/bin/env bash
# Install fedsign with its test extras into .venv (when needed) and run the whole test suite,
# the end-to-end Ray runs included. Extra arguments go to pytest (e.g. -m "not ray").
source "$(dirname "$0")/venv.sh"
exec .venv/bin/python -m pytest -q "$@"
