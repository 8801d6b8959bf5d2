#!/usr/bin/env bash
# The test suite (fast tests; `-m slow` or `-m ""` for the heavier ones). Extra args go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
pytest -q "$@"
