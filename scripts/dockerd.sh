#!/usr/bin/env bash
# Start or stop a private Docker engine for the Docker sandbox tests (CI has no engine running).
#
#   scripts/dockerd.sh start   # prints the DOCKER_HOST to use, e.g. unix:///tmp/lossforge-dockerd/docker.sock
#   scripts/dockerd.sh stop    # stops that engine by its pid
#
# The engine runs in its own network namespace (`unshare --net`) with --iptables=false --bridge=none, so
# the host's network (interfaces, firewall rules) is untouched; it listens only on a Unix socket in
# LOSSFORGE_DOCKERD_DIR (default /tmp/lossforge-dockerd). Needs root and Debian's docker.io (dockerd).
# Images are never pulled: the sandbox imports its own skeleton image (lossforge.sandbox.docker_backend).
set -euo pipefail
dir="${LOSSFORGE_DOCKERD_DIR:-/tmp/lossforge-dockerd}"
sock="$dir/docker.sock"
pidfile="$dir/dockerd.pid"

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

case "${1:-}" in
  start)
    if running && [ -S "$sock" ]; then echo "unix://$sock"; exit 0; fi
    command -v dockerd >/dev/null || { echo "dockerd not found: apt-get install docker.io" >&2; exit 1; }
    mkdir -p "$dir"
    rm -f "$sock" "$pidfile"
    # setsid: the engine outlives this script and is stopped by `stop`, by its pid.
    setsid unshare --net -- dockerd --iptables=false --ip6tables=false --bridge=none --ip-forward=false \
      --data-root "$dir/data" --exec-root "$dir/exec" --pidfile "$pidfile" -H "unix://$sock" \
      >"$dir/dockerd.log" 2>&1 </dev/null &
    for _ in $(seq 1 120); do
      if [ -S "$sock" ] && running; then
        if command -v curl >/dev/null; then
          curl -sf --unix-socket "$sock" http://localhost/_ping >/dev/null 2>&1 && { echo "unix://$sock"; exit 0; }
        else
          echo "unix://$sock"; exit 0
        fi
      fi
      sleep 0.5
    done
    echo "dockerd did not start; its log ($dir/dockerd.log) ends with:" >&2
    tail -20 "$dir/dockerd.log" >&2 || true
    exit 1
    ;;
  stop)
    if running; then
      pid="$(cat "$pidfile")"
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$sock" "$pidfile"
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
