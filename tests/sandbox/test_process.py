"""ProcessSandbox with real child processes: checks, tasks, timeouts, crashes, limits, threads."""
from __future__ import annotations

import os
import resource
import signal
import statistics
import subprocess
import threading
import time

import pytest

from lossforge.sandbox.child import SECRET_PATTERN
from lossforge.sandbox.process import ProcessSandbox
from lossforge.sandbox.protocol import InProcessSandbox, Sandbox, SandboxError

# Set before the fork server starts (collection happens before any test runs): children must not see it.
os.environ.setdefault("LOSSFORGE_TEST_API_KEY", "not-a-real-secret")

SIG = "policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta"
DPO = f"""import torch.nn.functional as F

def dpo({SIG}):
    logits = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)
    return -F.logsigmoid(beta * logits)
"""
# Slow by tensor work (loops over unbounded ranges are refused by the policy): minutes of matmuls.
SLOW = f"""import torch
import torch.nn.functional as F

def slow({SIG}):
    a = torch.ones(2000, 2000)
    for i in range(100):
        a = a @ a / 2000.0
    logits = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)
    return -F.logsigmoid(beta * logits) + 0.0 * a.sum()
"""
HUGE = f"""import torch

def huge({SIG}):
    big = torch.empty(750000000)
    return policy_chosen_logps + big[0] * 0.0
"""
SLACK = 3.0


# -- module-level tasks (the child imports them by reference) --------------------------------------
def sum_losses(loss_fn, values):
    import torch

    x = torch.tensor(values)
    return float(loss_fn(x, x - 1.0, x, x, 0.1).sum())


def sleep_forever(loss_fn):
    time.sleep(600)


def exit_3(loss_fn):
    os._exit(3)


def kill_self(loss_fn):
    os.kill(os.getpid(), signal.SIGKILL)


def raise_value_error(loss_fn):
    raise ValueError("bad task input")


def spawn_grandchild_and_sleep(loss_fn, marker):
    subprocess.Popen(["sleep", marker])
    time.sleep(600)


def child_facts(loss_fn):
    return {
        "secret_like_env": sorted(k for k in os.environ if SECRET_PATTERN.search(k)),
        "session_leader": os.getsid(0) == os.getpid(),
        "fsize": resource.getrlimit(resource.RLIMIT_FSIZE)[0],
        "as": resource.getrlimit(resource.RLIMIT_AS)[0],
        "cpu": resource.getrlimit(resource.RLIMIT_CPU)[0],
    }


# -- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sandbox():
    sb = ProcessSandbox(timeout=20.0, memory_mb=4096)
    sb.warm()
    yield sb
    sb.close()


@pytest.fixture(scope="module")
def quick():
    sb = ProcessSandbox(timeout=2.0, memory_mb=2048)
    yield sb
    sb.close()


def test_implements_the_protocol(sandbox) -> None:
    assert isinstance(sandbox, Sandbox)
    assert isinstance(InProcessSandbox(), Sandbox)


def test_passing_check_and_latency(sandbox) -> None:
    report = sandbox.check(DPO)
    assert report.passed, report.summary()
    assert report.function_name == "dpo" and report.fingerprint
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        assert sandbox.check(DPO).passed
        times.append(time.perf_counter() - t0)
    print(f"\nProcessSandbox.check() latency over 20 calls: p50 {statistics.median(times) * 1000:.1f} ms "
          f"(min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f}, cpus {os.cpu_count()})")


def test_bad_candidates_are_reports_not_exceptions(sandbox) -> None:
    report = sandbox.check("import os\n" + DPO)
    assert report.failed_check == "policy"
    report = sandbox.check(DPO.replace("return -F.logsigmoid", "return F.softplus"))  # prefers rejected
    assert report.failed_check == "prefers_chosen"


def test_check_timeout_kills_and_recovers(quick) -> None:
    t0 = time.monotonic()
    report = quick.check(SLOW)
    elapsed = time.monotonic() - t0
    assert report.failed_check == "timeout", report.summary()
    assert report.function_name == "slow"
    assert elapsed < quick.timeout + SLACK
    assert quick.check(DPO).passed  # still works


def test_check_out_of_memory_is_a_crash(quick) -> None:
    report = quick.check(HUGE)  # 3 GB > the 2048 MB limit
    assert report.failed_check == "crashed", report.summary()
    assert "memory" in report.checks[-1].evidence
    assert quick.check(DPO).passed


def test_run_returns_the_task_result(sandbox) -> None:
    import torch
    import torch.nn.functional as F

    got = sandbox.run(DPO, sum_losses, [-5.0, -10.0], timeout=10.0)
    x = torch.tensor([-5.0, -10.0])
    assert got == pytest.approx(float((-F.logsigmoid(0.1 * torch.ones(2))).sum()))
    assert x.shape == (2,)


def test_run_timeout(sandbox) -> None:
    t0 = time.monotonic()
    with pytest.raises(SandboxError) as info:
        sandbox.run(DPO, sleep_forever, timeout=1.0)
    assert info.value.kind == "timeout"
    assert time.monotonic() - t0 < 1.0 + SLACK
    assert sandbox.run(DPO, sum_losses, [-1.0], timeout=10.0) > 0


def test_timeout_kills_the_whole_process_group(sandbox) -> None:
    marker = f"{os.getpid() % 1000 + 1000}.{int(time.time()) % 1000}"
    with pytest.raises(SandboxError) as info:
        sandbox.run(DPO, spawn_grandchild_and_sleep, marker, timeout=1.5)
    assert info.value.kind == "timeout"

    def alive() -> bool:
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        if f.read() == b"sleep\0" + marker.encode() + b"\0":
                            return True
                except OSError:
                    pass
        return False

    deadline = time.monotonic() + 3.0
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive()


@pytest.mark.parametrize("task,needle", [(exit_3, "exited with code 3"), (kill_self, "SIGKILL")])
def test_crash_is_reported_and_the_next_call_works(sandbox, task, needle) -> None:
    with pytest.raises(SandboxError) as info:
        sandbox.run(DPO, task, timeout=10.0)
    assert info.value.kind == "crashed"
    assert needle in info.value.message
    assert sandbox.check(DPO).passed


def test_run_policy_and_task_errors(sandbox) -> None:
    with pytest.raises(SandboxError) as info:
        sandbox.run("import os\n" + DPO, sum_losses, [-1.0], timeout=10.0)
    assert info.value.kind == "policy" and "imports" in info.value.message
    with pytest.raises(SandboxError) as info:
        sandbox.run(DPO, raise_value_error, timeout=10.0)
    assert info.value.kind == "error"
    assert "ValueError: bad task input" in info.value.message
    assert "raise_value_error" in info.value.traceback_tail
    with pytest.raises(SandboxError) as info:
        sandbox.run(DPO, lambda fn: 1, timeout=10.0)  # not picklable by reference
    assert info.value.kind == "error"


def test_child_is_isolated_and_limited(sandbox) -> None:
    assert "LOSSFORGE_TEST_API_KEY" in os.environ
    facts = sandbox.run(DPO, child_facts, timeout=10.0)
    assert facts["secret_like_env"] == []
    assert facts["session_leader"] is True
    assert facts["fsize"] == 0
    assert facts["as"] == 4096 * 1024 * 1024
    assert facts["cpu"] != resource.RLIM_INFINITY


def test_thread_safe() -> None:
    sb = ProcessSandbox(timeout=20.0, max_concurrency=2)
    results: list[bool] = []
    lock = threading.Lock()

    def work() -> None:
        ok = sb.check(DPO).passed
        with lock:
            results.append(ok)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    sb.close()
    assert results == [True] * 4


def test_close_is_idempotent() -> None:
    sb = ProcessSandbox()
    sb.close()
    sb.close()
    assert sb.closed
    with pytest.raises(SandboxError):
        sb.check(DPO)


def test_close_kills_a_running_child() -> None:
    sb = ProcessSandbox(timeout=30.0)
    threading.Timer(1.0, sb.close).start()
    t0 = time.monotonic()
    with pytest.raises(SandboxError) as info:
        sb.run(DPO, sleep_forever, timeout=30.0)
    assert info.value.kind == "crashed" and "closed" in info.value.message
    assert time.monotonic() - t0 < 1.0 + SLACK


def test_in_process_double() -> None:
    double = InProcessSandbox()
    assert double.check(DPO).passed
    assert double.run(DPO, sum_losses, [-1.0], timeout=1.0) > 0
    with pytest.raises(SandboxError) as info:
        double.run("import os\n" + DPO, sum_losses, [-1.0], timeout=1.0)
    assert info.value.kind == "policy"
    double.close()
    double.close()


def test_torch_lazy_imports_inside_candidate_code_work_in_a_fresh_child() -> None:
    """torch's C++ imports helpers on first use with the candidate's frame current (regression)."""
    code = (
        "import torch\n\n"
        "def clamped(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):\n"
        "    rho = beta * ((policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - reference_rejected_logps))\n"
        "    return torch.exp(torch.clamp(-rho, max=20.0))\n"
    )
    sandbox = ProcessSandbox(timeout=20)
    try:
        report = sandbox.check(code)
    finally:
        sandbox.close()
    assert report.passed, report.summary()
