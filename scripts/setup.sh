#!/usr/bin/env bash
# Set up lossforge in ./.venv: create it if missing, install the CPU torch wheel first when no torch is
# present (a bare `torch` requirement would pull a multi-GB CUDA build), then the package itself,
# editable, with the extras given as the first argument (e.g. `dev`, `gpu,mcp`; the TUI and the OpenAI
# client are in the base install). Idempotent.
# Users with a GPU: install the torch build you want into .venv first (or set LOSSFORGE_TORCH).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  pip install "${LOSSFORGE_TORCH:-torch==2.13.0}"
fi
extras=${1:-}
pip install -e ".${extras:+[$extras]}"
.venv/bin/python -c "import lossforge.cli" || { echo "setup failed: lossforge does not import" >&2; exit 1; }
# what the README shows right after set-up: `lossforge tui` and `--proposer llm` (base dependencies)
.venv/bin/python -c "import lossforge.tui.app, lossforge.llm.client, openai" \
  || { echo "setup failed: the TUI or the OpenAI client does not import (see the error above)" >&2; exit 1; }
