#!/usr/bin/env bash
# The test command: set up .venv with the dev extras, then run the whole suite.
# Extra arguments go to pytest (e.g. `scripts/test.sh -k proxy`).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh dev
exec .venv/bin/python -m pytest -q "$@"
