"""The sandbox worker server: one warm Python process that forks one limited child per job.

``lossforge.sandbox.process.ProcessSandbox`` starts this module (``python -I -c`` bootstrap calling
``main``) inside the isolation the host allows (see ``lossforge.sandbox.isolation``): under bubblewrap
(``bwrap --ro-bind / / --unshare-net --unshare-pid ...``), or set up here with ``unshare(2)`` and mount
calls (``backend="unshare"``), or as a plain process (``backend="none"``). It talks to the host over two
pipes with length-prefixed frames (``wire.HEADER`` then the bytes).

This module is the entry (``bootstrap``, ``socket_bootstrap``) and the start-up (``main``); the parts live in
``mounts`` (the unshare backend's view), ``pidns`` (the children's PID namespace), ``facts`` (the layers
measured), ``server_loop`` (jobs), ``child`` (one job's child) and ``syscalls`` (the ctypes calls).

What it guarantees
------------------
* Start-up, in this order, before any job: the ``unshare`` backend's namespaces and read-only view (when
  asked); a PID namespace for the children with a small reaper as its PID 1 and a fresh ``/proc`` (where
  permitted); the facts about the layers actually in effect (network namespace and interfaces,
  read-only root, hidden directories, identity switch, PID namespace, capabilities, ``no_new_privs``),
  measured here and sent to the host in the ``hello`` frame; then ``torch`` and the check suite are
  imported and warmed once (a trusted known-good loss), and ``gc.freeze()`` keeps the fork cheap.
* Jobs: the host sends pickled dicts (trusted: they come from the host). ``mode`` is "check", "run" or
  "ping"; a run job's ``task`` and ``args`` are unpickled here (the task is a reference to a
  module-level function chosen by the host, imported once and kept warm); candidate code is only ever a
  string. Each job runs in a fresh ``fork()`` (see ``child._child``) that writes one pickled message to its
  own pipe; the server never unpickles anything a child wrote: it forwards the bytes (at most
  ``limits["max_result_bytes"]``) or the child's exit status. After a job ends, its process group is
  killed, and once no job is running any process left in the children's PID namespace (a descendant
  that left its group with ``setsid``) is killed too.
* A child, before it touches the candidate: own session and process group; ``PR_SET_PDEATHSIG``
  (dies with the server); every inherited descriptor closed but its result pipe; stdin/out/err on
  ``/dev/null``; a private scratch directory as cwd; resource limits (address space, CPU seconds, file
  size 0, no core, open files, processes); the capability bounding set emptied and a switch to
  ``nobody`` (65534), or, where a task needs host files only root can read and the server has a PID
  namespace, nobody with root's file access only (fsuid 0), then ``no_new_privs`` (see ``child._become``);
  secret-like environment variables removed.
* The server exits when the host closes its pipe (the host died or closed the sandbox), killing every
  child; children die with it (``PR_SET_PDEATHSIG``, and the PID namespace when its reaper dies).

What it does not guarantee
--------------------------
* The server itself is trusted code with the privileges the backend leaves it (root with a few
  capabilities under bubblewrap); only the children run candidate code.
* A descendant that escaped its process group lives until no job is running (then it is killed).
"""
from __future__ import annotations

import os
import pickle
import shutil
import signal
import socket
import sys
import traceback

from lossforge.sandbox.facts import measure_facts
from lossforge.sandbox.mounts import apply_unshare
from lossforge.sandbox.pidns import start_pid_namespace
from lossforge.sandbox.server_loop import ServerState
from lossforge.sandbox.syscalls import PR_SET_CHILD_SUBREAPER, PR_SET_DUMPABLE, PR_SET_PDEATHSIG, prctl
from lossforge.sandbox.wire import read_frame

SCRATCH_ROOT_NAME = "lossforge-scratch"


def _warm_up() -> int:
    """Import torch and the check suite and run the suite once on a known-good loss (trusted code), so
    every child starts with torch's lazy initialisation done; returns torch's default thread count."""
    import torch

    default_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    from lossforge.candidate.checks import run_checks
    import lossforge.candidate.namespace  # noqa: F401

    run_checks(
        "import torch.nn.functional as F\n\n"
        "def warm(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):\n"
        "    logits = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)\n"
        "    return -F.logsigmoid(beta * logits)\n", 0.1)
    return default_threads


def main(in_fd: int, out_fd: int, setup_fd: int) -> None:
    """Run the server: ``setup_fd`` carries one frame with the pickled setup dict (closed after)."""
    setup = pickle.loads(read_frame(setup_fd, 1 << 24))
    os.close(setup_fd)
    notes: list[str] = []
    host_pid = setup.get("host_pid")
    if setup.get("backend") in ("unshare", "none"):
        try:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # die with the host (its launcher thread lives on)
        except OSError:
            pass
        if host_pid and os.getppid() != host_pid:
            os._exit(1)
    if setup.get("backend") == "unshare":
        try:
            notes += apply_unshare(setup)
        except OSError as exc:
            notes.append(f"unshare backend failed: {exc}")
    for entry in reversed(setup.get("sys_path", [])):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    state = ServerState(in_fd, out_fd, setup)
    try:
        prctl(PR_SET_CHILD_SUBREAPER, 1)
    except OSError:
        pass
    facts = measure_facts(setup)
    state.identity_switch = facts["identity_switch"]
    if setup.get("pid_namespace", True):
        started = start_pid_namespace(notes)
        if started is not None:
            state.reaper, state.reaper_ack = started
    facts["pid_namespace"] = state.reaper is not None
    scratch_base = "/tmp" if facts["hidden"].get("/tmp") else None
    if scratch_base is None:
        import tempfile

        scratch_base = tempfile.gettempdir()
        _remove_stale_scratch(scratch_base)
        state.scratch_root = tempfile.mkdtemp(prefix=f"{SCRATCH_ROOT_NAME}-{os.getpid()}-", dir=scratch_base)
    else:
        state.scratch_root = os.path.join(scratch_base, SCRATCH_ROOT_NAME)
        os.makedirs(state.scratch_root, exist_ok=True)
    os.chmod(state.scratch_root, 0o711)
    facts["scratch"] = state.scratch_root
    try:
        state.default_threads = _warm_up()
    except BaseException as exc:  # noqa: BLE001
        notes.append(f"warm-up failed: {type(exc).__name__}: {exc}")
        state.send("hello", facts, notes, False)
        return
    import gc

    gc.collect()
    gc.freeze()  # children do not touch (copy) the warm objects' pages when their gc runs
    facts["notes"] = notes
    state.send("hello", facts, notes, True)
    try:
        state.loop()
    finally:
        state.shutdown()
        if not facts["hidden"].get("/tmp"):
            shutil.rmtree(state.scratch_root, ignore_errors=True)


def _remove_stale_scratch(base: str) -> None:
    """Without a private /tmp the scratch root is a host directory named after its server's pid; remove
    those of servers that are gone (a server killed with its host cannot clean up after itself)."""
    try:
        entries = os.listdir(base)
    except OSError:
        return
    for name in entries:
        parts = name.split("-")
        if not name.startswith(SCRATCH_ROOT_NAME + "-") or len(parts) < 4 or not parts[2].isdigit():
            continue
        try:
            os.kill(int(parts[2]), 0)
            continue  # its server is alive
        except ProcessLookupError:
            pass
        except OSError:
            continue
        shutil.rmtree(os.path.join(base, name), ignore_errors=True)


def bootstrap(argv: list[str]) -> None:
    """``python -I -c 'from lossforge.sandbox.server import bootstrap; bootstrap(...)'`` entry."""
    in_fd, out_fd, setup_fd = (int(a) for a in argv[:3])
    try:
        main(in_fd, out_fd, setup_fd)
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        os._exit(1)
    os._exit(0)


def socket_bootstrap(path: str) -> None:
    """Entry of the Docker backend (``lossforge.sandbox.docker_backend``): the server runs as PID 1 of
    its container and talks to the host over the Unix socket at ``path`` (a directory bound from the
    host) instead of pipes. As PID 1 it cannot be killed from inside the container (the kernel drops
    signals from the namespace to its init unless it installed a handler, so SIGINT goes back to the
    default), and non-dumpable, so a child of the same user cannot ptrace it or read its memory."""
    if os.getpid() == 1:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        prctl(PR_SET_DUMPABLE, 0)
    except OSError:
        pass
    # Two connections, jobs in and messages out: separate open files, so making the job side
    # non-blocking (the loop's selector) leaves the message side blocking.
    fds = []
    for _ in range(2):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        fds.append(sock.detach())
    try:
        main(fds[0], fds[1], os.dup(fds[0]))
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        os._exit(1)
    os._exit(0)


if __name__ == "__main__":  # python -m lossforge.sandbox.server IN_FD OUT_FD SETUP_FD
    bootstrap(sys.argv[1:])
