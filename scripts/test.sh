#!/usr/bin/env bash
# The test command: install the system tools the tests drive (tmux, bubblewrap, chromium, Docker's engine;
# only when running as root with apt-get, and only what is missing), set up .venv with the dev extras,
# start a private Docker engine (scripts/dockerd.sh: own network namespace, no iptables, no bridge) for
# the Docker sandbox tests, check that the imports point one way (import-linter, pyproject.toml), run the
# suite, and stop the engine again. Extra arguments go to pytest (e.g. `scripts/test.sh -k proxy`).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
for tool in tmux:tmux bwrap:bubblewrap chromium:chromium dockerd:docker.io; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool##*:}")
done
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
./scripts/setup.sh dev

# The Docker backend's tests need an engine: start our own where we can (root with dockerd), unless the
# caller already points DOCKER_HOST at one. Either way the Docker tests must then run, not skip.
started_dockerd=""
if [ -z "${DOCKER_HOST:-}" ] && [ "$(id -u)" = 0 ] && command -v dockerd >/dev/null 2>&1; then
  DOCKER_HOST="$(./scripts/dockerd.sh start)"
  export DOCKER_HOST
  started_dockerd=1
fi
if [ -n "${DOCKER_HOST:-}" ] || { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }; then
  export LOSSFORGE_REQUIRE_DOCKER=1  # where an engine is (or should have been) started, never skip
fi
status=0
# The layers point one way (pyproject.toml [tool.importlinter]; README, "Architecture").
.venv/bin/lint-imports --no-cache --no-logo || status=$?
.venv/bin/python -m pytest -q "$@" || status=$?
if [ -n "$started_dockerd" ]; then
  ./scripts/dockerd.sh stop
fi
exit "$status"
