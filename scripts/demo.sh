#!/usr/bin/env bash
# Install fedsign into .venv (when needed) and run the main job: FedAvg against FedSign on the
# bundled digits data (10 clients, Dirichlet alpha 0.5), two seeds each, ending in a table.
source "$(dirname "$0")/venv.sh"
exec .venv/bin/fedsign grid configs/default.yaml --sweep strategy=fedavg,fedsign --seeds 0,1 "$@"
