"""The attack corpus: every attack is rejected (by the policy or at run time) AND has no effect on the host,
asserted on the host.

Two families:

* Candidate attacks (``CANDIDATE_ATTACKS``): hostile loss source given to ``check`` (and to ``run``).
  The policy refuses most of them; the test then also asserts, on the host, that nothing happened (no
  file, no connection, no secret in the report, the server still alive and working).
* Runtime attacks (``test_runtime_*``): the same payloads as *trusted task functions* run through
  ``run``, i.e. code that the policy never sees, as if a candidate had escaped RestrictedPython. Here the
  isolation layers (namespaces, read-only view, identity, limits, clean environment, restricted result
  reader) are what stops them. They run once per backend this host has (bwrap, unshare, none) and skip
  where the layer they need is absent on this host (``layers()`` says so).
"""
from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import pickle
import resource
import signal
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from lossforge.sandbox.isolation import probe_host
from lossforge.sandbox.process import ProcessSandbox
from lossforge.sandbox.protocol import SandboxError
from tests.support import require_docker_engine

SECRET_NAME = "LOSSFORGE_TEST_API_KEY"
SECRET_VALUE = "sk-lossforge-" + uuid.uuid4().hex  # set in the parent by the fixtures, never in a child
SIG = "policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta"
TAIL = "    return -F.logsigmoid(beta * ((policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)))\n"
DPO = f"import torch.nn.functional as F\n\ndef dpo({SIG}):\n{TAIL}"


def candidate(body: str, header: str = "") -> str:
    """A candidate loss with ``body`` (indented lines) before a DPO return."""
    lines = "".join(f"    {line}\n" for line in body.strip("\n").splitlines())
    return f"{header}import torch\nimport torch.nn.functional as F\nimport math\n\ndef attack({SIG}):\n{lines}{TAIL}"


# -- host-side helpers -----------------------------------------------------------------------------
class Listener:
    """A TCP server on the host's 127.0.0.1 (and an abstract Unix socket) that records connections."""

    def __init__(self) -> None:
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(64)
        self.port = self.tcp.getsockname()[1]
        self.abstract_name = f"\0lossforge-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.unix.bind(self.abstract_name)
        self.unix.listen(64)
        self.connections: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, args=(s,), daemon=True) for s in (self.tcp, self.unix)]
        for sock in (self.tcp, self.unix):
            sock.settimeout(0.05)
        for t in self._threads:
            t.start()

    def _accept(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, addr = sock.accept()
            except (TimeoutError, socket.timeout, OSError):
                continue
            self.connections.append(repr(addr))
            conn.close()

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(2)
        self.tcp.close()
        self.unix.close()


@pytest.fixture
def listener():
    lst = Listener()
    # The listener works from the host (so "no connection" below means the sandbox could not reach it).
    with socket.create_connection(("127.0.0.1", lst.port), timeout=2):
        pass
    deadline = time.monotonic() + 2
    while not lst.connections and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lst.connections, "the test listener does not accept connections from the host"
    lst.connections.clear()
    yield lst
    lst.close()


def processes_named(marker: str) -> list[int]:
    """Host pids whose comm (or command line) contains ``marker``."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm", "rb") as f:
                comm = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if marker.encode() in comm or marker.encode() in cmd:
            found.append(int(pid))
    return found


def descendants(pid: int) -> list[int]:
    """``pid`` and all its descendants on the host."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_until(predicate, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


# -- candidate attacks (the policy, then the host) ---------------------------------------------------
# (id, body, header). ``{target}`` is a host file that must not be created, ``{read}`` a host file with
# a secret that must not leak, ``{port}`` the host listener, ``{secret}`` the secret variable's name.
CANDIDATE_ATTACKS = [
    ("while_true", "while True:\n    pass", ""),
    ("range_huge_loop", "for i in range(10**9):\n    policy_chosen_logps = policy_chosen_logps + 1", ""),
    ("import_os_fork", "os.fork()", "import os\n"),
    ("builtins_import", "__import__('os').fork()", ""),
    ("torch_multiprocessing", "torch.multiprocessing.Process(target=print).start()", ""),
    ("torch_os", "torch.os.fork()", ""),
    ("torch_serialization_os", "torch.serialization.os.system('touch {target}')", ""),
    ("deep_recursion", "x = attack(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, "
                       "reference_rejected_logps, beta)", ""),
    ("memory_bomb", "big = torch.ones(10**10)", ""),
    ("memory_bomb_outer", "big = torch.outer(torch.ones(10**6), torch.ones(10**6))", ""),
    ("open_write", "open('{target}', 'w').write('pwned')", ""),
    ("open_read", "x = open('{read}').read()", ""),
    ("open_passwd", "x = open('/etc/passwd').read()", ""),
    ("torch_save", "torch.save(policy_chosen_logps, '{target}')", ""),
    ("torch_load", "x = torch.load('{read}')", ""),
    ("torch_from_file", "x = torch.from_file('/etc/passwd', size=100, dtype=torch.uint8)", ""),
    ("torch_from_file_run", "x = torch.from_file('{read}', size=8, dtype=torch.uint8)", ""),
    ("tensor_tofile", "policy_chosen_logps.numpy().tofile('{target}')", ""),
    ("torch_hub", "torch.hub.load_state_dict_from_url('http://127.0.0.1:{port}/x')", ""),
    ("torch_ops", "torch.ops.load_library('/tmp/evil.so')", ""),
    ("cpp_extension", "torch.utils.cpp_extension.load_inline('x', 'int x;')", ""),
    ("torch_utils_data", "torch.utils.data.DataLoader([1], num_workers=2)", ""),
    ("socket_import", "s = socket.create_connection(('127.0.0.1', {port}))", "import socket\n"),
    ("urllib", "urllib.request.urlopen('http://127.0.0.1:{port}/')", "import urllib.request\n"),
    ("environ", "x = os.environ['{secret}']", "import os\n"),
    ("torch_environ", "x = torch.os.environ['{secret}']", ""),
    ("kill_parent", "os.kill(os.getppid(), 9)", "import os\n"),
    ("signal_alarm", "signal.signal(signal.SIGALRM, print)", "import signal\n"),
    ("torch_signal", "torch.signal.windows", ""),
    ("subclasses_walk", "x = ().__class__.__base__.__subclasses__()", ""),
    ("class_base", "x = policy_chosen_logps.__class__.__base__", ""),
    ("type_call", "x = type(policy_chosen_logps).mro()", ""),
    ("getattr_dunder", "x = getattr(policy_chosen_logps, '__cl' + 'ass__')", ""),
    ("sys_modules", "x = sys.modules['os'].system('touch {target}')", "import sys\n"),
    ("torch_sys_modules", "x = torch.sys.modules['os']", ""),
    ("math_loader", "x = math.__loader__", ""),
    ("format_attr", "x = '{{0.__class__.__init__.__globals__}}'.format(policy_chosen_logps)", ""),
    ("format_map", "x = '{{a.__class__}}'.format_map({{'a': beta}})", ""),
    ("fstring_attr", "x = f'{{policy_chosen_logps.__class__}}'", ""),
    ("generator_frame", "g = (i for i in range(1))\nx = g.gi_frame.f_back.f_globals", ""),
    ("grad_fn_hook", "x = (policy_chosen_logps * 2).grad_fn.register_hook(print)", ""),
    ("eval_exec", "eval(\"__import__('os').system('touch {target}')\")", ""),
    ("exec_compile", "exec(compile('import os', 'x', 'exec'))", ""),
    ("lambda_escape", "f = lambda: 0\nx = f.__globals__", ""),
    ("globals_call", "x = globals()['__builtins__']", ""),
    ("register_hook", "policy_chosen_logps.register_hook(print)", ""),
    ("set_num_threads", "torch.set_num_threads(64)", ""),
    ("manual_seed", "torch.manual_seed(0)", ""),
    ("storage", "x = policy_chosen_logps.untyped_storage()", ""),
    ("huge_string", "x = 'x' * (10**10)", ""),
    ("giant_tensor_return", "policy_chosen_logps = torch.zeros(10**8) + policy_chosen_logps.sum()", ""),
    ("nested_def", "def inner():\n    return 1", ""),
    ("class_def", "class A:\n    pass", ""),
    ("try_except", "try:\n    x = 1\nexcept Exception:\n    pass", ""),
    ("with_no_grad", "with torch.no_grad():\n    x = 1", ""),
    ("decorator_like", "x = torch.jit.script", ""),
    ("breakpoint", "breakpoint()", ""),
    ("input_attack", "x = input()", ""),
]


def _host_effects_absent(text: str, target: Path, read_secret: str, listener: Listener) -> None:
    assert not target.exists(), f"the attack created {target}"
    assert SECRET_VALUE not in text
    assert read_secret not in text
    assert "root:x:0:0" not in text
    assert listener.connections == []


@pytest.fixture(scope="module")
def policy_box():
    sb = ProcessSandbox(timeout=5.0, memory_mb=4096)
    sb.warm()
    yield sb
    sb.close()


@pytest.mark.parametrize("name,body,header", CANDIDATE_ATTACKS, ids=[a[0] for a in CANDIDATE_ATTACKS])
def test_candidate_attack_is_rejected_without_host_effect(policy_box, listener, tmp_path, monkeypatch,
                                                          name, body, header) -> None:
    monkeypatch.setenv(SECRET_NAME, SECRET_VALUE)
    target = tmp_path / "pwned"
    read = tmp_path / "run" / "archive.txt"
    read.parent.mkdir()
    read_secret = "run-dir-secret-" + uuid.uuid4().hex
    read.write_text(read_secret)
    server = policy_box.server_pid
    code = candidate(body.format(target=target, read=read, port=listener.port, secret=SECRET_NAME), header)

    report = policy_box.check(code)
    assert not report.passed, f"{name} passed the checks"
    assert report.failed_check in ("policy", "timeout", "crashed", "shape", "finite"), report.summary()
    text = report.model_dump_json()
    assert len(text) < 20_000  # the report stays small whatever the candidate does
    _host_effects_absent(text, target, read_secret, listener)

    with pytest.raises(SandboxError) as info:  # the same code through a host-chosen task
        policy_box.run(code, sum_of_losses, timeout=5.0)
    assert info.value.kind in ("policy", "error", "timeout", "crashed")
    _host_effects_absent(str(info.value) + info.value.traceback_tail, target, read_secret, listener)

    assert policy_box.server_pid == server and alive(server)
    assert policy_box.check(DPO).passed  # the sandbox still works


def test_slow_tensor_work_times_out_and_the_sandbox_recovers() -> None:
    slow = candidate("a = torch.ones(1500, 1500)\nfor i in range(100):\n    a = a @ a / 1500.0\n"
                     "policy_chosen_logps = policy_chosen_logps + 0.0 * a.sum()")
    with ProcessSandbox(timeout=1.5) as sb:
        t0 = time.monotonic()
        report = sb.check(slow)
        assert report.failed_check == "timeout", report.summary()
        assert time.monotonic() - t0 < 1.5 + 3.0
        assert sb.check(DPO).passed


def test_memory_bomb_candidate_is_a_crash_and_the_host_is_untouched() -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with ProcessSandbox(timeout=10.0, memory_mb=2048) as sb:
        report = sb.check(candidate("big = torch.ones(10**10)\nx = big.sum()"))
        assert report.failed_check == "crashed", report.summary()
        assert "memory" in report.checks[-1].evidence
        assert sb.check(DPO).passed
    # The host process did not allocate the bomb (the child did, and was refused).
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 1_000_000


def test_a_candidate_returning_a_torch_module_cannot_smuggle_objects_to_the_host(policy_box) -> None:
    code = candidate("policy_chosen_logps = policy_chosen_logps + 0.0") .replace(
        "    return -F.logsigmoid", "    return torch.nn.Linear(1, 1)\n    return -F.logsigmoid")
    with pytest.raises(SandboxError) as info:
        policy_box.run(code, raw_loss_output, timeout=10.0)
    assert info.value.kind == "error"
    assert "may not reference" in info.value.message  # refused by the host's restricted unpickler


# -- tasks: the same payloads, as trusted code inside the child (the policy does not see them) -------
def sum_of_losses(loss_fn):
    import torch

    x = torch.full((4,), -2.0)
    return float(loss_fn(x, x - 1.0, x, x, 0.1).sum())


def raw_loss_output(loss_fn):
    import torch

    x = torch.full((4,), -2.0)
    return loss_fn(x, x - 1.0, x, x, 0.1)


def _errno_name(exc: OSError) -> str:
    return f"{type(exc).__name__}({errno.errorcode.get(exc.errno or 0, exc.errno)})"


def task_write(loss_fn, reversed_paths):
    """Try to create each path (given reversed, so the host does not expose them)."""
    out = {}
    for rpath in reversed_paths:
        path = rpath[::-1]
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        except OSError:
            pass
        try:
            with open(path, "w") as f:
                f.write("pwned")
            out[path] = "written"
        except OSError as exc:
            out[path] = _errno_name(exc)
    return out


def task_scratch(loss_fn):
    cwd = os.getcwd()
    created = False
    try:
        with open("note.txt", "w"):
            created = True
    except OSError:
        pass
    try:
        with open("note.txt", "w") as f:
            f.write("x" * 100)
        wrote = True
    except OSError:
        wrote = False
    return {"cwd": cwd, "created": created, "wrote_bytes": wrote, "home": os.environ.get("HOME")}


def task_read(loss_fn, reversed_paths):
    out = {}
    for rpath in reversed_paths:
        path = rpath[::-1]
        try:
            with open(path, "rb") as f:
                out[path] = f.read(4096).decode(errors="replace")
        except OSError as exc:
            out[path] = _errno_name(exc)
    return out


def task_connect(loss_fn, port, abstract_name):
    out = {}
    for label, family, address in (("tcp", socket.AF_INET, ("127.0.0.1", port)),
                                   ("tcp6", socket.AF_INET6, ("::1", port)),
                                   ("abstract_unix", socket.AF_UNIX, abstract_name),
                                   ("outside", socket.AF_INET, ("1.1.1.1", 80))):
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(1.0)
        try:
            s.connect(address)
            out[label] = "connected"
        except OSError as exc:
            out[label] = _errno_name(exc) if exc.errno else type(exc).__name__
        finally:
            s.close()
    out["interfaces"] = sorted(name for _, name in socket.if_nameindex())
    return out


def task_torch_hub(loss_fn, port):
    import torch

    try:
        torch.hub.load_state_dict_from_url(f"http://127.0.0.1:{port}/weights.pt", progress=False)
        return "downloaded"
    except Exception as exc:  # noqa: BLE001
        return type(exc).__name__


def task_secrets(loss_fn, name, value_hash):
    """Look for the secret everywhere a child can: its environment and every /proc/*/environ it sees."""
    found = []
    if name in os.environ:
        found.append("os.environ")
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            for what in ("environ", "cmdline"):
                try:
                    with open(f"/proc/{pid}/{what}", "rb") as f:
                        data = f.read()
                except OSError:
                    continue
                for item in data.split(b"\0"):
                    if name.encode() in item or hashlib.sha256(item.split(b"=", 1)[-1]).hexdigest() == value_hash:
                        found.append(f"/proc/{pid}/{what}")
    return {"found": found, "visible_pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit())}


def task_kill(loss_fn, host_pid, everything):
    """Signal 0 (permission/existence probe) at the host test process, and real SIGKILLs at what a child
    can name: PID 1 and, only where the children have their own PID namespace (``everything``), every
    process it may signal (-1)."""
    out = {"getppid": os.getppid()}
    try:
        os.kill(host_pid, 0)
        out["host_pid"] = "reachable"
    except OSError as exc:
        out["host_pid"] = type(exc).__name__
    for label, pid in (("pid1", 1), ("all", -1)):
        if pid == -1 and not everything:
            continue
        try:
            os.kill(pid, signal.SIGKILL)
            out[label] = "sent"
        except OSError as exc:
            out[label] = type(exc).__name__
    return out


def task_kill_parent(loss_fn):
    os.kill(os.getppid(), signal.SIGKILL)  # in a PID namespace getppid() is 0: its own group
    time.sleep(5)
    return "survived"


def task_ignore_signals_and_sleep(loss_fn):
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM, signal.SIGXCPU, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)
    while True:
        time.sleep(0.1)


def task_spin(loss_fn):
    while True:
        pass


def task_fork_bomb(loss_fn, marker):
    """Fork sleepers that leave the job's process group until fork fails; report the counts."""
    libc = ctypes.CDLL(None, use_errno=True)
    forked = failures = 0
    for _ in range(400):
        try:
            pid = os.fork()
        except OSError:
            failures += 1
            if failures > 20:
                break
            continue
        if pid == 0:
            try:
                os.setsid()
                libc.prctl(15, marker.encode(), 0, 0, 0)  # PR_SET_NAME: findable on the host
                time.sleep(600)
            finally:
                os._exit(0)
        forked += 1
    return {"forked": forked, "failures": failures}


def task_spinning_fork_bomb(loss_fn, marker):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(15, marker.encode(), 0, 0, 0)
    while True:
        try:
            os.fork()
        except OSError:
            pass


def task_allocate(loss_fn, gigabytes):
    block = bytearray(int(gigabytes * (1 << 30)))
    return len(block)


def task_torch_allocate(loss_fn):
    import torch

    return float(torch.ones(10**10).sum())


def task_recursion(loss_fn):
    sys.setrecursionlimit(10**7)

    def down(n):
        return down(n + 1) + 1

    return down(0)


def task_huge_string(loss_fn):
    return "x" * (100 << 20)


def task_huge_tensor(loss_fn):
    import torch

    return torch.ones(30_000_000)


def task_small_tensor(loss_fn):
    import torch

    return torch.arange(5, dtype=torch.float32)


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def task_malicious_pickle(loss_fn, reversed_path):
    """A child that escaped would control the result bytes: a pickle that runs a shell command."""
    return _Evil(reversed_path[::-1])


def task_torch_file_tricks(loss_fn, reversed_target, reversed_read):
    import torch

    target, read = reversed_target[::-1], reversed_read[::-1]
    out = {}
    try:
        torch.save(torch.ones(3), target)
        out["save"] = "saved"
    except Exception as exc:  # noqa: BLE001
        out["save"] = type(exc).__name__
    try:
        out["from_file"] = torch.from_file(read, size=8, dtype=torch.uint8).tolist()
    except Exception as exc:  # noqa: BLE001
        out["from_file"] = type(exc).__name__
    try:
        out["load"] = repr(torch.load(read, weights_only=False))
    except Exception as exc:  # noqa: BLE001
        out["load"] = type(exc).__name__
    return out


def task_identity(loss_fn, reversed_path=None):
    with open("/proc/self/status") as f:
        status = dict(line.split(":", 1) for line in f if ":" in line)
    out = {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(), "cap_eff": status["CapEff"].strip(),
           "cap_prm": status["CapPrm"].strip(), "cap_bnd": status["CapBnd"].strip(),
           "uids": status["Uid"].split(), "no_new_privs": status.get("NoNewPrivs", "").strip(),
           "nproc": resource.getrlimit(resource.RLIMIT_NPROC)[0]}
    return out


def task_read_argument(loss_fn, directory):
    """A host-chosen directory argument (exposed read-only by the sandbox): read a file in it."""
    with open(os.path.join(directory, "world.txt")) as f:
        data = f.read()
    return {"data": data, **task_identity(loss_fn)}


def task_remount(loss_fn):
    """Root-like tricks: remount / read-write, unshare a new namespace, setuid(0)."""
    libc = ctypes.CDLL(None, use_errno=True)
    out = {}
    out["remount_rw"] = libc.mount(None, b"/", None, 0x20, None)  # MS_REMOUNT
    try:
        os.setuid(0)
        out["setuid0"] = "ok"
    except OSError as exc:
        out["setuid0"] = type(exc).__name__
    return out


# -- runtime attacks, once per backend -----------------------------------------------------------------
def _available(backend: str) -> bool:
    facts = probe_host()
    return {"bwrap": facts.bwrap_works, "unshare": facts.unshare_works, "none": True}[backend]


@pytest.fixture(scope="module", params=["bwrap", "unshare", "none", "docker"])
def box(request):
    if request.param == "docker":
        require_docker_engine()
    elif not _available(request.param):
        pytest.skip(f"the {request.param} backend is not available on this host")
    # Set the secret in the parent before this sandbox's server starts (max_result_mb=63: its own server).
    old = os.environ.get(SECRET_NAME)
    os.environ[SECRET_NAME] = SECRET_VALUE
    sb = ProcessSandbox(timeout=10.0, memory_mb=4096, isolation=request.param, max_result_mb=63)
    sb.warm()
    yield sb
    sb.close()
    if old is None:
        os.environ.pop(SECRET_NAME, None)
    else:
        os.environ[SECRET_NAME] = old


def need(box: ProcessSandbox, *layers: str) -> None:
    got = box.layers()
    for layer in layers:
        if not got.get(layer):
            pytest.skip(f"layer {layer!r} is absent with the {box.backend} backend on this host")


def _server_ok(box: ProcessSandbox, pid: int | None) -> None:
    assert box.server_pid == pid and alive(pid), "the sandbox server did not survive"
    assert box.check(DPO).passed


def test_layers_and_doctor_report(box) -> None:
    from lossforge.sandbox.doctor import doctor

    layers = box.layers()
    for key in ("backend", "policy", "process", "rlimits", "wall_clock_kill", "clean_environment", "network",
                "read_only_root", "hidden_dirs", "scratch", "pid_namespace", "user", "no_new_privs",
                "result_reader"):
        assert key in layers and isinstance(layers[key], (bool, str))
    assert layers["backend"] == box.backend
    if box.backend != "none":
        assert layers["network"] and layers["read_only_root"] and layers["hidden_dirs"]
        assert layers["pid_namespace"]
    report = doctor(start=False)
    assert report["backend"] in ("bwrap", "unshare", "none")
    assert set(report["host"]) >= {"bubblewrap", "user_namespaces_allowed", "running_as_root", "unshare_works"}


def test_runtime_writes_outside_scratch_fail(box, tmp_path) -> None:
    need(box, "read_only_root")
    here = Path(__file__).resolve().parent
    targets = [tmp_path / "pwned.txt", tmp_path / "new" / "pwned.txt", here / "pwned-by-sandbox.txt",
               Path(sys.prefix) / "pwned-by-sandbox.txt", Path("/pwned-by-sandbox.txt")]
    got = box.run(DPO, task_write, [str(p)[::-1] for p in targets], timeout=10.0)
    for path in targets:
        assert not path.exists(), f"{path} was created on the host"
        assert got[str(path)] != "written"


def test_runtime_scratch_is_private_and_per_job(box) -> None:
    first = box.run(DPO, task_scratch, timeout=10.0)
    second = box.run(DPO, task_scratch, timeout=10.0)
    assert first["cwd"] != second["cwd"] and first["home"] == first["cwd"]
    assert first["created"] and not first["wrote_bytes"]  # file size limit 0
    # Inside a view the scratch is the sandbox's own /tmp (absent on the host); without one it is a host
    # directory removed after the job.
    assert wait_until(lambda: not Path(first["cwd"]).exists(), 5.0)


def test_runtime_reads_of_run_files_and_host_secrets_fail(box, tmp_path) -> None:
    need(box, "hidden_dirs")
    run_file = tmp_path / "runs" / "nightly" / "archive.sqlite"
    run_file.parent.mkdir(parents=True)
    secret = "run-dir-secret-" + uuid.uuid4().hex
    run_file.write_text(secret)
    paths = [run_file, Path("/etc/shadow"), Path("/root/.bash_history"), Path("/root/.ssh/id_rsa")]
    got = box.run(DPO, task_read, [str(p)[::-1] for p in paths], timeout=10.0)
    text = repr(got)
    assert secret not in text
    assert got[str(run_file)].startswith("FileNotFoundError")
    assert "root:" not in got["/etc/shadow"]  # blank (or unreadable) inside


def test_runtime_network_is_unreachable(box, listener) -> None:
    need(box, "network")
    got = box.run(DPO, task_connect, listener.port, listener.abstract_name, timeout=15.0)
    assert "connected" not in got.values(), got
    assert got["interfaces"] == ["lo"] or got["interfaces"] == []
    hub = box.run(DPO, task_torch_hub, listener.port, timeout=15.0)
    assert hub != "downloaded"
    time.sleep(0.2)
    assert listener.connections == []


def test_runtime_secrets_never_reach_the_sandbox(box) -> None:
    layers = box.layers()
    if not (layers["user"] or layers["pid_namespace"]):
        pytest.skip("a child that keeps the host user's identity and PID namespace can read the parent's "
                    "/proc/<pid>/environ")
    assert os.environ[SECRET_NAME] == SECRET_VALUE  # set in the parent before the server started
    got = box.run(DPO, task_secrets, SECRET_NAME, hashlib.sha256(SECRET_VALUE.encode()).hexdigest(), timeout=15.0)
    assert got["found"] == []
    assert SECRET_VALUE not in repr(got)
    # The server's own environment (every process of the sandbox, read from the host) is clean too.
    for pid in descendants(box.server_pid):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        assert SECRET_NAME.encode() not in environ and SECRET_VALUE.encode() not in environ


def test_runtime_killing_the_parent_fails(box) -> None:
    need(box, "user")
    server = box.server_pid
    own_pidns = bool(box.layers()["pid_namespace"])
    got = box.run(DPO, task_kill, os.getpid(), own_pidns, timeout=10.0)
    assert got["host_pid"] in ("ProcessLookupError", "PermissionError")
    _server_ok(box, server)
    try:
        box.run(DPO, task_kill_parent, timeout=10.0)
    except SandboxError as error:
        # In a PID namespace getppid() is 0, so it killed only its own process group; without one, nobody
        # may not signal the (root) server.
        assert error.kind in ("crashed", "error"), error
    else:
        # In a container the parent is the server as PID 1: the kernel drops the signal.
        assert box.backend == "docker"
    _server_ok(box, server)
    assert alive(os.getpid())


def test_runtime_signal_handlers_do_not_stop_the_wall_clock_kill(box) -> None:
    server = box.server_pid
    for task in (task_ignore_signals_and_sleep, task_spin):
        t0 = time.monotonic()
        with pytest.raises(SandboxError) as info:
            box.run(DPO, task, timeout=1.5)
        assert info.value.kind == "timeout"
        assert time.monotonic() - t0 < 1.5 + 3.0
    _server_ok(box, server)


def test_runtime_fork_bomb_is_bounded_and_cleaned_up(box) -> None:
    if "processes" not in str(box.layers()["rlimits"]):
        pytest.skip("no process limit here (children run as root, which RLIMIT_NPROC does not bind)")
    server = box.server_pid
    marker = f"lfbomb{os.getpid() % 10000}"
    got = box.run(DPO, task_fork_bomb, marker, timeout=20.0)
    assert got["failures"] > 0, got  # the process limit stopped it
    assert got["forked"] <= box.task_processes + 64
    # Descendants that left the job's process group are killed once no job runs.
    assert wait_until(lambda: not processes_named(marker), 5.0), processes_named(marker)
    _server_ok(box, server)

    spinning = marker + "s"
    with pytest.raises(SandboxError) as info:
        box.run(DPO, task_spinning_fork_bomb, spinning, timeout=2.0)
    assert info.value.kind == "timeout"
    assert wait_until(lambda: not processes_named(spinning), 5.0)
    _server_ok(box, server)


def test_runtime_memory_bombs_are_crashes(box) -> None:
    server = box.server_pid
    for task, args in ((task_allocate, (20,)), (task_torch_allocate, ())):
        with pytest.raises(SandboxError) as info:
            box.run(DPO, task, *args, timeout=20.0)
        assert info.value.kind == "crashed", info.value
        assert "memory" in info.value.message
    _server_ok(box, server)


def test_runtime_deep_recursion_is_a_crash(box) -> None:
    server = box.server_pid
    with pytest.raises(SandboxError) as info:
        box.run(DPO, task_recursion, timeout=5.0)
    # Stack overflow (crash), RecursionError, out of memory (Python 3.11 frames live on the heap) or the
    # wall clock: whichever comes first, the child stops and the server is fine.
    assert info.value.kind in ("crashed", "error", "timeout")
    _server_ok(box, server)


def test_runtime_huge_outputs_are_refused(box) -> None:
    for task in (task_huge_string, task_huge_tensor):
        with pytest.raises(SandboxError) as info:
            box.run(DPO, task, timeout=30.0)
        assert info.value.kind == "error" and "too large" in info.value.message
    small = box.run(DPO, task_small_tensor, timeout=10.0)  # tensors themselves do come back
    assert small.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_runtime_malicious_result_pickle_cannot_run_code_in_the_host(box, tmp_path) -> None:
    target = tmp_path / "pwned-by-pickle"
    with pytest.raises(SandboxError) as info:
        box.run(DPO, task_malicious_pickle, str(target)[::-1], timeout=10.0)
    assert info.value.kind == "error" and "may not reference" in info.value.message
    assert not target.exists()
    # The same bytes *would* run the command with plain pickle (the attack is real).
    assert b"system" in pickle.dumps(_Evil(str(target)))


def test_runtime_torch_file_escapes_fail(box, tmp_path) -> None:
    need(box, "hidden_dirs")
    target = tmp_path / "saved.pt"
    read = tmp_path / "run.pt"
    import torch

    torch.save({"secret": torch.tensor([42.0])}, read)
    got = box.run(DPO, task_torch_file_tricks, str(target)[::-1], str(read)[::-1], timeout=20.0)
    assert got["save"] != "saved" and not target.exists()
    assert not isinstance(got["from_file"], list) and "42" not in got["load"]


def test_runtime_identity_has_no_privileges(box) -> None:
    need(box, "user")
    got = box.run(DPO, task_identity, timeout=10.0)
    assert got["uid"] == 65534 and got["gid"] == 65534
    # No supplementary group but its own (Docker lists the primary group among them).
    assert got["groups"] == [] or (box.backend == "docker" and got["groups"] == [65534])
    assert int(got["cap_eff"], 16) == 0
    assert got["no_new_privs"] == "1"
    assert int(got["cap_bnd"], 16) == 0 or os.geteuid() != 0
    tricks = box.run(DPO, task_remount, timeout=10.0)
    assert tricks["remount_rw"] == -1 and tricks["setuid0"] == "PermissionError"


def test_runtime_a_root_only_path_argument_is_readable_but_nothing_else_changes(box, tmp_path) -> None:
    """A host-chosen path that only root can read (pytest's 0700 tmp dirs, a cache under /root): the task
    gets it read-only; the child is still uid 65534 without capabilities (file access as root only)."""
    need(box, "user", "pid_namespace", "hidden_dirs")
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if box.backend == "docker":
        pytest.skip("the Docker backend never gives root's file access (see test_docker_backend for its "
                    "clear refusal of a path its user cannot read)")
    cache = tmp_path / "cache" / "world.txt"
    cache.parent.mkdir(mode=0o700)
    cache.write_text("world-data")
    os.chmod(cache.parent, 0o700)  # like pytest's tmp dirs or ~/.cache under /root: root only
    got = box.run(DPO, task_read_argument, str(cache.parent), timeout=30.0)
    assert got["data"] == "world-data"
    assert got["uid"] == 65534 and int(got["cap_eff"], 16) == 0 and int(got["cap_prm"], 16) == 0
    assert got["uids"][:3] == ["65534", "65534", "65534"] and got["uids"][3] == "0"  # fsuid 0
    assert got["nproc"] != resource.RLIM_INFINITY
    writes = box.run(DPO, task_write, [str(cache)[::-1], str(tmp_path / "x")[::-1]], timeout=30.0)
    assert "written" not in writes.values() and cache.read_text() == "world-data"


def test_runtime_task_reference_is_chosen_by_the_host(box) -> None:
    # The candidate is only ever source text: code that names a "task" is just a policy failure, and a
    # task that is not a module-level function (not importable by reference) is refused by the host.
    with pytest.raises(SandboxError) as info:
        box.run("import pickle\n" + DPO, sum_of_losses, timeout=10.0)
    assert info.value.kind == "policy"
    with pytest.raises(SandboxError) as info:
        box.run(DPO, lambda fn: os.system("true"), timeout=10.0)
    assert info.value.kind == "error"
    local_state = {"called": False}

    def local_task(fn):  # a closure: not importable in the sandbox
        local_state["called"] = True

    with pytest.raises(SandboxError):
        box.run(DPO, local_task, timeout=10.0)
    assert box.run(DPO, sum_of_losses, timeout=10.0) > 0
