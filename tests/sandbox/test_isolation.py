"""Isolation plumbing: host probes, the view, the server command, the restricted result reader, doctor,
the benchmark, and the server's life cycle (shared, restarted after it dies, clean environment)."""
from __future__ import annotations

import collections
import datetime
import os
import pickle
import signal
import stat
import sys
import time
from pathlib import Path

import pytest
import torch

from lossforge.sandbox.isolation import (
    HIDE_DIRS,
    View,
    base_view,
    choose_backend,
    clean_environment,
    nobody_can_read,
    probe_host,
    server_command,
)
from lossforge.sandbox.doctor import doctor
from lossforge.sandbox.process import ProcessSandbox
from lossforge.sandbox.protocol import SandboxError
from lossforge.candidate.report import CheckReport, CheckResult
from lossforge.sandbox.wire import safe_loads
from tests.support import Evil, Plain

SIG = "policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta"
DPO = (f"import torch.nn.functional as F\n\ndef dpo({SIG}):\n"
       "    return -F.logsigmoid(beta * ((policy_chosen_logps - policy_rejected_logps) - "
       "(reference_chosen_logps - reference_rejected_logps)))\n")


# -- the restricted result reader ----------------------------------------------------------------------
@pytest.mark.parametrize("value", [
    {"a": [1, 2.5, "x", None, True], "b": (1, 2), "c": {1, 2}, "d": frozenset({3}), "e": b"bytes"},
    collections.OrderedDict(a=1),
    datetime.datetime(2024, 1, 2, 3, 4, 5),
    complex(1, 2),
    Path("/tmp/x"),
    ValueError("bad"),
    CheckReport(passed=False, checks=[CheckResult(name="x", passed=False)]),
])
def test_safe_loads_round_trips_plain_results(value) -> None:
    got = safe_loads(pickle.dumps(value))
    if isinstance(value, BaseException):
        assert type(got) is type(value) and got.args == value.args
    else:
        assert got == value


def test_safe_loads_reads_tensors_with_weights_only() -> None:
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    got = safe_loads(pickle.dumps({"t": t, "dtype": torch.bfloat16, "size": t.shape}))
    assert torch.equal(got["t"], t) and got["dtype"] is torch.bfloat16 and got["size"] == (2, 3)


@pytest.mark.parametrize("value", [Evil(), Plain(), torch.nn.Linear(1, 1), print, os.getcwd])
def test_safe_loads_refuses_other_globals(value) -> None:
    # Each value pickles by reference in a clean process; if one does not, something earlier in the run
    # replaced a global (a Ray driver once swapped builtins.print: see sandbox/ray_sandbox.py).
    data = pickle.dumps(value)
    with pytest.raises(pickle.UnpicklingError, match="may not reference"):
        safe_loads(data)


def test_safe_loads_refuses_handcrafted_reduce() -> None:
    # GLOBAL 'builtins eval' + REDUCE, written by hand (what an escaped child could send).
    payload = b"cbuiltins\neval\n(S'1+1'\ntR."
    assert pickle.loads(payload) == 2
    with pytest.raises(pickle.UnpicklingError):
        safe_loads(payload)


# -- the view --------------------------------------------------------------------------------------------
def test_base_view_exposes_python_and_the_package() -> None:
    view = base_view("bwrap")
    assert view.covers(sys.prefix) and view.covers(os.path.realpath(sys.executable))
    import lossforge.sandbox

    assert view.covers(lossforge.sandbox.__file__)
    assert "/" not in view.expose
    for hidden in ("/tmp", "/root", "/home"):
        if os.path.isdir(hidden):
            assert hidden in view.hide_dirs
    assert not view.covers("/tmp/some-run-dir/archive.sqlite") or any(
        "/tmp/some-run-dir".startswith(e) for e in view.expose)


def test_view_with_paths_adds_and_dedupes(tmp_path) -> None:
    view = View("bwrap", ("/tmp",), (), ())
    inner = tmp_path / "a" / "b"
    inner.mkdir(parents=True)
    grown = view.with_paths([str(tmp_path), str(inner), "/", "/tmp", str(tmp_path / "missing")])
    assert grown.expose == (str(tmp_path),)
    assert grown.covers(str(inner)) and not view.covers(str(inner))
    assert View("none", (), (), ()).covers("/anything")


def test_nobody_can_read_follows_modes(tmp_path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    os.chmod(private, 0o700)
    (private / "f").write_text("x")
    public = tmp_path / "public"
    public.mkdir()
    os.chmod(public, 0o755)
    (public / "f").write_text("x")
    os.chmod(public / "f", 0o644)
    view = View("bwrap", ("/tmp",), (), (str(public), str(private)))
    assert nobody_can_read(str(public / "f"), view)  # above `public`: directories the view makes 0755
    assert not nobody_can_read(str(private / "f"), view)
    real = View("none", (), (), ())
    if stat.S_IMODE(os.stat(tmp_path).st_mode) & 0o001 == 0:
        assert not nobody_can_read(str(public / "f"), real)  # without a view the real parents count


def test_server_command_for_bwrap() -> None:
    if not probe_host().bwrap_works:
        pytest.skip("no bubblewrap")
    view = base_view("bwrap")
    argv = server_command(view, (5, 6, 7))
    for flag in ("--unshare-net", "--unshare-pid", "--die-with-parent", "--new-session", "--proc", "--dev"):
        assert flag in argv
    assert argv[argv.index("--ro-bind") + 1: argv.index("--ro-bind") + 3] == ["/", "/"]
    assert argv[-3:] == ["5", "6", "7"] and "-I" in argv
    tmpfs = [argv[i + 1] for i, a in enumerate(argv) if a == "--tmpfs"]
    assert set(tmpfs) == set(view.hide_dirs)
    if os.geteuid() == 0:
        assert "--cap-drop" in argv


def test_clean_environment_has_no_secrets(monkeypatch) -> None:
    monkeypatch.setenv("LOSSFORGE_TEST_API_KEY", "secret-value")
    monkeypatch.setenv("OPENAI_API_KEY", "secret-value")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    env = clean_environment()
    assert "secret-value" not in env.values()
    assert env["OMP_NUM_THREADS"] == "3" and set(env) <= {"PATH", "HOME", "TMPDIR", "PYTHONDONTWRITEBYTECODE", "LANG",
                                                           "LC_ALL", "LC_CTYPE", "TZ", "OMP_NUM_THREADS",
                                                           "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                           "TORCH_NUM_THREADS"}


def test_choose_backend(monkeypatch) -> None:
    facts = probe_host()
    monkeypatch.delenv("LOSSFORGE_SANDBOX_ISOLATION", raising=False)
    expected = "bwrap" if facts.bwrap_works else "unshare" if facts.unshare_works else "none"
    assert choose_backend("auto") == expected
    assert choose_backend("none") == "none"
    monkeypatch.setenv("LOSSFORGE_SANDBOX_ISOLATION", "none")
    assert choose_backend("auto") == "none"
    with pytest.raises(ValueError):
        choose_backend("docker")
    if not facts.bwrap_works:
        with pytest.raises(SandboxError):
            ProcessSandbox(isolation="bwrap")


def test_doctor_without_starting() -> None:
    report = doctor(start=False)
    assert report["backend"] in ("bwrap", "unshare", "none")
    assert isinstance(report["hints"], list)
    host = report["host"]
    assert host["running_as_root"] == (os.geteuid() == 0)
    assert host["bubblewrap_works"] == probe_host().bwrap_works
    assert "layers" not in report


def test_hidden_dirs_constant_is_sane() -> None:
    assert "/" not in HIDE_DIRS and "/usr" not in HIDE_DIRS and "/tmp" in HIDE_DIRS


# -- the server's life cycle ---------------------------------------------------------------------------
def test_servers_are_shared_and_restarted_after_they_die() -> None:
    a = ProcessSandbox(timeout=20.0)
    b = ProcessSandbox(timeout=20.0)
    try:
        assert a.check(DPO).passed and b.check(DPO).passed
        assert a.server_pid == b.server_pid  # one warm server per view, shared
        pid = a.server_pid
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        report = a.check(DPO)  # the dead server is noticed; the call runs on a fresh one
        assert report.passed, report.summary()
        assert a.server_pid != pid and b.check(DPO).passed
    finally:
        a.close()
        b.close()


def test_layers_say_what_is_in_effect() -> None:
    with ProcessSandbox() as sb:
        layers = sb.layers()
        facts = probe_host()
        assert layers["backend"] == sb.backend
        if sb.backend == "bwrap":
            assert layers["network"] and layers["read_only_root"] and layers["pid_namespace"]
        if facts.root and sb.backend != "none":
            assert layers["user"] and str(layers["user"]).startswith("nobody")
        assert layers["policy"] and layers["rlimits"] and layers["wall_clock_kill"]


def test_bench_sandbox_smoke() -> None:
    from lossforge.bench.sandbox import bench_sandbox

    result = bench_sandbox(3, naive_n=1, docker=False)
    assert result["isolated"]["n"] == 3 and result["naive_subprocess"]["n"] == 1
    assert result["isolated"]["p50_ms"] > 0 and result["isolated"]["checks_per_second"] > 0
    assert result["speedup_p50"] > 3  # a warm fork is far cheaper than a fresh interpreter + torch import
    assert result["machine"]["cpus"] == os.cpu_count()
