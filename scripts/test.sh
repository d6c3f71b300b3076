#!/usr/bin/env bash
# The test command: install the system tools the tests drive (tmux, bubblewrap; only when running as
# root with apt-get, and only what is missing), set up .venv with the dev extras, then run the suite.
# Extra arguments go to pytest (e.g. `scripts/test.sh -k proxy`).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
for tool in tmux:tmux bwrap:bubblewrap; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool##*:}")
done
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
./scripts/setup.sh dev
exec .venv/bin/python -m pytest -q "$@"
