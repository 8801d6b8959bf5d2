#!/usr/bin/env bash
# The main job on the embedded default (local ZenML stack with SQLite, local artifact store, local DVC
# remote, the shipped sample): data -> pretrain -> baselines -> NFA search -> multi-task HRA and
# promotion -> bento build and smoke test (cascadapt/main_job.py). Arguments go to it (--stages, ...).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
python -m cascadapt.main_job "$@"
