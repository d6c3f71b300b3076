"""How fast a full sandboxed check is: ``ProcessSandbox.check`` against a naive fresh ``python -c`` per check.

``bench_sandbox(n)`` times ``n`` full ``check()`` calls of a library loss (the whole suite: policy,
shape, finite, extreme margins, gradient, preference, dtypes, determinism, fingerprint) through the
isolated backend, after a warm-up that is reported separately (server start). In the same run it times
the naive approach many LLM-evolution tools take: a fresh ``python -c`` subprocess per check that
imports torch and ``lossforge.candidate.checks`` and runs ``run_checks`` (no isolation at all, so it is a
lower bound on what isolating that way costs). Where a Docker engine answers, the Docker backend
(warm container) is timed the same way. It reports latency percentiles, sequential checks per second,
the p50 speed-ups and the machine.

What it does not guarantee
--------------------------
* Timings are of this machine, now: other load skews them (``machine.load_average`` is reported).
* The naive side runs fewer repetitions (``naive_n``, default ``max(3, min(n, 10))``; 0 skips it): each
  costs seconds.
"""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any

__all__ = ["bench_sandbox", "NAIVE_SCRIPT"]

#: What the naive baseline runs per check (the candidate source arrives on stdin).
NAIVE_SCRIPT = (
    "import sys, torch\n"
    "from lossforge.candidate.checks import run_checks\n"
    "report = run_checks(sys.stdin.read(), float(sys.argv[1]))\n"
    "sys.stdout.write(report.model_dump_json())\n"
)


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000.0 for s in seconds)
    if len(ms) >= 2:
        cuts = statistics.quantiles(ms, n=100, method="inclusive")
        p95 = cuts[94]
    else:
        p95 = ms[0]
    return {
        "p50_ms": round(statistics.median(ms), 2),
        "p95_ms": round(p95, 2),
        "min_ms": round(ms[0], 2),
        "max_ms": round(ms[-1], 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


def _machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count() or 0
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "cpus_usable": affinity,
        "load_average": load,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "running_as_root": os.geteuid() == 0,
    }


def _time_backend(isolation: str, code: str, beta: float, n: int, loss: str) -> dict[str, Any]:
    """Warm a ``ProcessSandbox`` with ``isolation`` and time ``n`` full checks of ``code``."""
    from lossforge.sandbox.process import ProcessSandbox

    sandbox = ProcessSandbox(isolation=isolation)
    try:
        t0 = time.perf_counter()
        sandbox.warm()
        startup = time.perf_counter() - t0
        first = time.perf_counter()
        report = sandbox.check(code, beta)
        first = time.perf_counter() - first
        if not report.passed:
            raise RuntimeError(f"the benchmark loss {loss!r} failed its checks: {report.summary()}")
        for _ in range(2):  # warm caches and the pool's path
            sandbox.check(code, beta)
        latencies = []
        started = time.perf_counter()
        for _ in range(n):
            t = time.perf_counter()
            ok = sandbox.check(code, beta).passed
            latencies.append(time.perf_counter() - t)
            if not ok:
                raise RuntimeError(f"the benchmark loss {loss!r} failed a check during the run")
        wall = time.perf_counter() - started
        layers = sandbox.layers()
    finally:
        sandbox.close()
    stats = _percentiles(latencies)
    stats.update({
        "n": n,
        "checks_per_second": round(n / wall, 2),
        "server_start_s": round(startup, 3),
        "first_check_ms": round(first * 1000.0, 2),
        "backend": layers.get("backend"),
        "layers": layers,
    })
    return stats


def bench_sandbox(n: int = 50, *, naive_n: int | None = None, loss: str = "dpo", isolation: str = "auto",
                  beta: float = 0.1, docker: bool | None = None) -> dict[str, Any]:
    """Time ``n`` full ``ProcessSandbox.check`` calls with ``isolation`` (the default backend) and, when
    ``docker`` (None: when an engine answers), with the Docker backend, and ``naive_n`` naive
    fresh-subprocess checks of the library loss ``loss``; plain JSON-able data (see the module docstring)."""
    from lossforge.trainer.losses import library_code

    if n < 1:
        raise ValueError("n must be at least 1")
    code = library_code(loss)
    naive_n = max(3, min(n, 10)) if naive_n is None else max(0, naive_n)

    isolated = _time_backend(isolation, code, beta, n, loss)
    docker_result: dict[str, Any] | None = None
    docker_note = None
    if docker is None:
        from lossforge.sandbox.docker_backend import docker_status

        status = docker_status()
        docker = bool(status["available"])
        if not docker:
            docker_note = f"skipped: {status['reason']}"
    if docker:
        docker_result = _time_backend("docker", code, beta, n, loss)

    naive = []
    for _ in range(naive_n):
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", NAIVE_SCRIPT, str(beta)], input=code, capture_output=True,
                              text=True, timeout=300)
        naive.append(time.perf_counter() - t)
        if proc.returncode != 0 or '"passed":true' not in proc.stdout.replace(" ", ""):
            raise RuntimeError(f"the naive check failed: {proc.stderr[-500:]}")

    baseline: dict[str, Any] | None = None
    speedup = None
    if naive:
        baseline = _percentiles(naive)
        baseline.update({"n": naive_n, "checks_per_second": round(naive_n / sum(naive), 3),
                         "command": f"{os.path.basename(sys.executable)} -c <import torch; run_checks(code)>"})
        speedup = round(baseline["p50_ms"] / isolated["p50_ms"], 1)
    met = isolated["p50_ms"] <= 50.0 and (speedup is None or speedup >= 20.0)
    if docker_result is not None:
        met = met and docker_result["p50_ms"] < 1000.0
    return {
        "loss": loss,
        "isolated": isolated,
        "docker": docker_result if docker_result is not None else docker_note,
        "naive_subprocess": baseline,
        "speedup_p50": speedup,
        "docker_speedup_p50": (round(baseline["p50_ms"] / docker_result["p50_ms"], 1)
                               if baseline and docker_result else None),
        "targets": {"p50_ms_max": 50.0, "speedup_min": 20.0, "docker_p50_ms_max": 1000.0, "met": met},
        "machine": _machine(),
    }


if __name__ == "__main__":  # python -m lossforge.bench.sandbox [N]
    import json

    print(json.dumps(bench_sandbox(int(sys.argv[1]) if len(sys.argv) > 1 else 50), indent=2))
