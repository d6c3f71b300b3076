"""The Docker backend of ``ProcessSandbox``: the same warm worker server, inside a locked-down container.

``ProcessSandbox(isolation="docker", docker=DockerSettings(...))`` starts, per view, one container (with
the docker SDK) that runs ``lossforge.sandbox.server`` as its PID 1; the server forks one limited child per
job exactly as in the other backends (policy compile, rlimits, wall-clock kill, scratch directory, clean
environment, restricted result reader), so a check costs a fork, not a container start. The host talks to
it over two Unix-socket connections in a private directory bound into the container (``/ipc``); the
container has no network at all.

The container
-------------
``network_disabled``, read-only root file system, ``/tmp`` a small tmpfs (the children's scratch),
``mem_limit`` and ``pids_limit``, every capability dropped, ``no-new-privileges``, user ``65534:65534``
(non-root), no host environment but ``clean_environment()``, labelled ``lossforge.sandbox=worker`` and
removed automatically when it stops (``auto_remove``). The server exits when the host closes its
connection or dies (end of file), so a crashed host leaves no container behind; a sweep at start also
removes containers of this host whose owner process is gone. As PID 1 and non-dumpable, the server cannot
be signalled or ptraced by its children, although they share its user.

Two kinds of image
------------------
* ``host_python=True`` (the default, used by CI): a skeleton image made here without any registry
  (``docker import`` of a few directories, ``/etc/passwd`` and the loader cache, a few kB) and the host's
  ``/usr``, Python installation, ``sys.path`` and lossforge bound read-only at their own paths, as the
  bubblewrap view does, so the container runs the very code and torch the host has. Nothing else of the
  host is visible (no ``/etc``, ``/root``, ``/home``, ``/tmp``, run directories).
* ``host_python=False``: a self-contained image built from ``docker/Dockerfile`` (Python, CPU torch and
  lossforge inside); only ``run``'s path arguments and ``expose`` paths are bound from the host.

What it does not guarantee
--------------------------
* A per-user process limit (``RLIMIT_NPROC``) counts uid 65534 across the whole host kernel, as with the
  other backends; ``pids_limit`` bounds the container on its own.
* The first call starts a container (about 3 s: Python and torch start inside); later calls are warm.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import shutil
import socket
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

from lossforge.sandbox.isolation import View, _normalise, clean_environment, server_sys_path
from lossforge.sandbox.protocol import SandboxError, traceback_tail
from lossforge.sandbox.wire import write_frame
from lossforge.sandbox.worker import STARTUP_TIMEOUT, SandboxLimits, _Server

__all__ = ["DockerServer", "DockerSettings", "docker_status", "docker_view", "ensure_image", "remove_stale_containers",
           "skeleton_rootfs", "HOST_IMAGE_REPOSITORY", "DEFAULT_IMAGE"]

#: Repository of the skeleton images made by ``ensure_image`` (tag: a hash of their content).
HOST_IMAGE_REPOSITORY = "lossforge-sandbox-host"
#: The image a user builds from ``docker/Dockerfile`` (``host_python=False``).
DEFAULT_IMAGE = "lossforge-sandbox:latest"
LABEL = "lossforge.sandbox"
#: Directories of the container that are never bound from the host as a whole (the container's own
#: /tmp, /proc, /dev, /sys, the socket directory, its /etc; /usr is bound whole only with host_python);
#: paths below them can be (e.g. a cache under /tmp).
RESERVED = ("/dev", "/etc", "/ipc", "/proc", "/sys", "/tmp", "/usr")
SANDBOX_UID = 65534
IPC_DIR = "/ipc"
SOCKET_NAME = "worker.sock"

_BOOT = ("import sys; sys.path[:0] = {paths!r}; from lossforge.sandbox.server import socket_bootstrap; "
         "socket_bootstrap(sys.argv[1])")


@dataclass(frozen=True)
class DockerSettings:
    """How worker containers are made (hashable: part of a server's identity).

    ``image``: None for the skeleton image with the host's Python (``host_python``), else an image name.
    ``memory_mb``: the container's memory limit (None: the children's address-space limit,
    ``ProcessSandbox(memory_mb=...)``, plus 1 GB for the server with torch). ``pids_limit``: processes and threads in
    the container. ``tmpfs_mb``: size of ``/tmp``. ``base_url``: the engine (default: ``DOCKER_HOST`` or
    the local socket).
    """

    image: str | None = None
    host_python: bool = True
    memory_mb: int | None = None
    pids_limit: int = 128
    tmpfs_mb: int = 64
    base_url: str | None = None


def client(settings: DockerSettings) -> Any:
    """A docker SDK client for ``settings`` (raises ``SandboxError`` with what to do when there is none)."""
    try:
        import docker
    except ImportError:
        raise SandboxError("error", "the Docker backend needs the docker SDK: pip install 'lossforge[docker]'") \
            from None
    try:
        if settings.base_url:
            cli = docker.DockerClient(base_url=settings.base_url, timeout=60)
        else:
            cli = docker.from_env(timeout=60)
        cli.ping()
    except Exception as exc:  # noqa: BLE001 - DockerException, connection errors
        where = settings.base_url or os.environ.get("DOCKER_HOST") or "the default socket"
        raise SandboxError("error", f"no Docker engine answers at {where} ({type(exc).__name__}: {exc}); start "
                                    "dockerd (or set DOCKER_HOST / [sandbox.docker] base_url), or use the "
                                    "default isolated backend") from None
    return cli


def docker_status(settings: DockerSettings | None = None) -> dict[str, Any]:
    """Whether an engine answers and which image the backend would use (for ``doctor`` and test skips)."""
    settings = settings or DockerSettings()
    try:
        cli = client(settings)
    except SandboxError as exc:
        return {"available": False, "reason": exc.message}
    try:
        version = cli.version().get("Version", "?")
    except Exception:  # noqa: BLE001
        version = "?"
    image = settings.image or f"{HOST_IMAGE_REPOSITORY}:{skeleton_tag()}"
    try:
        cli.images.get(image)
        present = True
    except Exception:  # noqa: BLE001
        present = False
    cli.close()
    return {"available": True, "engine_version": version, "image": image, "image_present": present,
            "host_python": settings.host_python}


# --------------------------------------------------------------------------------------------------
# The skeleton image
# --------------------------------------------------------------------------------------------------

def skeleton_rootfs() -> bytes:
    """A tar of the skeleton root file system: empty mount points, ``bin``/``lib``/``lib64`` links into
    ``/usr`` (bound from the host), ``/etc/passwd`` and ``/etc/group`` with root and nobody, and the
    host's loader cache. Deterministic for a given host (fixed times and owners)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        def add(name: str, kind: bytes, mode: int, data: bytes = b"", link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime, info.linkname = kind, mode, 0, link
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        for name in ("usr", "etc", "ipc", "proc", "dev", "sys", "root", "opt", "sbin", "work", "home", "var"):
            add(name, tarfile.DIRTYPE, 0o755)
        add("tmp", tarfile.DIRTYPE, 0o1777)
        for name in ("bin", "lib", "lib64"):
            if os.path.islink(f"/{name}") or not os.path.exists(f"/{name}"):
                add(name, tarfile.SYMTYPE, 0o777, link=f"usr/{name}")
            else:
                add(name, tarfile.DIRTYPE, 0o755)
        add("etc/passwd", tarfile.REGTYPE, 0o644,
            b"root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
        add("etc/group", tarfile.REGTYPE, 0o644, b"root:x:0:\nnogroup:x:65534:\n")
        add("etc/hostname", tarfile.REGTYPE, 0o644, b"lossforge-sandbox\n")
        try:
            with open("/etc/ld.so.cache", "rb") as f:
                add("etc/ld.so.cache", tarfile.REGTYPE, 0o644, f.read())
        except OSError:
            pass
    return buf.getvalue()


def skeleton_tag() -> str:
    return hashlib.sha256(skeleton_rootfs()).hexdigest()[:16]


_IMAGE_LOCK = threading.Lock()


def ensure_image(cli: Any, settings: DockerSettings) -> str:
    """The image to run: the skeleton (imported here from ``skeleton_rootfs()`` when missing; no registry
    is ever contacted) or ``settings.image``, which must exist."""
    if settings.image is not None:
        try:
            cli.images.get(settings.image)
        except Exception:  # noqa: BLE001 - ImageNotFound and friends
            raise SandboxError("error", f"the Docker image {settings.image!r} is not on this engine: build it with "
                                        "`docker build -t lossforge-sandbox -f docker/Dockerfile .` from the "
                                        "lossforge source (or set [sandbox.docker] image)") from None
        return settings.image
    data = skeleton_rootfs()
    name = f"{HOST_IMAGE_REPOSITORY}:{hashlib.sha256(data).hexdigest()[:16]}"
    with _IMAGE_LOCK:
        try:
            cli.images.get(name)
        except Exception:  # noqa: BLE001
            repository, tag = name.split(":")
            cli.api.import_image_from_data(data, repository=repository, tag=tag)
    return name


def remove_stale_containers(cli: Any) -> int:
    """Remove this host's worker containers whose owner process is gone; returns how many."""
    host = socket.gethostname()
    removed = 0
    try:
        found = cli.containers.list(all=True, filters={"label": [f"{LABEL}=worker", f"{LABEL}.host={host}"]})
    except Exception:  # noqa: BLE001
        return 0
    for container in found:
        try:
            owner = int(container.labels.get(f"{LABEL}.pid", "0"))
        except ValueError:
            owner = 0
        if owner and _pid_alive(owner):
            continue
        try:
            container.remove(force=True)
            removed += 1
        except Exception:  # noqa: BLE001 - already gone (auto_remove)
            pass
    return removed


def unreadable_in_container(path: str) -> bool:
    """Whether the container's user cannot read ``path`` once it is bound in (only the path's own mode
    matters: the directories above it are made by the engine inside the container)."""
    import stat

    try:
        st = os.stat(path)
    except OSError:
        return False  # gone: the task reports it
    if st.st_uid == SANDBOX_UID:
        return not st.st_mode & stat.S_IRUSR
    need = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(st.st_mode) else 0)
    return (st.st_mode & need) != need


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------------------------------
# The view and the server
# --------------------------------------------------------------------------------------------------

def docker_view(settings: DockerSettings, expose: tuple[str, ...] = ()) -> View:
    """The container's view: with the host's Python, the same paths the bubblewrap view binds back
    (Python installation, ``sys.path``, lossforge) plus ``expose``; with an own image, only ``expose``."""
    needed = list(expose)
    if settings.host_python:
        from lossforge.sandbox.isolation import _lossforge_root

        needed += [sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix,
                   os.path.dirname(os.path.realpath(sys.executable)), os.path.dirname(os.path.abspath(sys.executable)),
                   _lossforge_root()]
        needed += [p for p in server_sys_path() if "__path_hook__" not in p]
    return View("docker", RESERVED, (), _normalise(needed, RESERVED), settings)


def _accept(listener: socket.socket, container: Any, deadline: float) -> socket.socket:
    """One connection from the container; fails early when the container stops."""
    while True:
        listener.settimeout(0.5)
        try:
            conn, _ = listener.accept()
            conn.settimeout(None)
            return conn
        except socket.timeout:
            pass
        try:
            container.reload()
            status = container.status
        except Exception:  # noqa: BLE001 - removed already (auto_remove after it exited)
            status = "removed"
        if status in ("exited", "dead", "removed"):
            raise SandboxError("error", f"the sandbox container stopped before it connected ({status})")
        if time.monotonic() > deadline:
            raise SandboxError("error", "the sandbox container did not connect in time")


class DockerServer(_Server):
    """The process backend's server handle (``worker._Server``) launching a container instead of a
    process; jobs, frames and the pool are shared."""

    container: Any = None
    cli: Any = None
    ipc_root: str | None = None

    @property
    def pid(self) -> int | None:
        """The container's init process (the server) on the host."""
        if self.container is None:
            return None
        try:
            return int(self.container.attrs["State"]["Pid"]) or None
        except (KeyError, TypeError, ValueError):
            return None

    def _setup(self) -> dict[str, Any]:
        setup = super()._setup()
        try:
            st = os.stat("/tmp")
            setup["host_ids"] = {"/tmp": (st.st_dev, st.st_ino)}
        except OSError:
            setup["host_ids"] = {}
        setup.update(backend="docker", host_pid=None, pid_namespace=False, hide_dirs=[], hide_files=[])
        return setup

    def _launch(self, setup: dict[str, Any]) -> tuple[int, int]:
        settings: DockerSettings = self.view.options
        self.cli = client(settings)
        remove_stale_containers(self.cli)
        image = ensure_image(self.cli, settings)
        # The socket's directory is the only writable bind; its parent is root's alone on the host.
        self.ipc_root = tempfile.mkdtemp(prefix="lossforge-docker-")
        ipc = os.path.join(self.ipc_root, "ipc")
        os.mkdir(ipc)
        os.chmod(ipc, 0o777)
        path = os.path.join(ipc, SOCKET_NAME)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        os.chmod(path, 0o777)
        listener.listen(2)
        volumes = {ipc: {"bind": IPC_DIR, "mode": "rw"}}
        if settings.host_python:
            volumes["/usr"] = {"bind": "/usr", "mode": "ro"}
        for exposed in self.view.expose:
            if not (settings.host_python and (exposed == "/usr" or exposed.startswith("/usr/"))):
                volumes[exposed] = {"bind": exposed, "mode": "ro"}
        python = sys.executable if settings.host_python else "python3"
        paths = server_sys_path() if settings.host_python else []
        command = [python, "-I", "-c", _BOOT.format(paths=paths), f"{IPC_DIR}/{SOCKET_NAME}"]
        try:
            self.container = self.cli.containers.run(
                image, command, detach=True, auto_remove=True, init=False,
                name=f"lossforge-sandbox-{os.getpid()}-{id(self) & 0xffffff:x}",
                labels={LABEL: "worker", f"{LABEL}.host": socket.gethostname(), f"{LABEL}.pid": str(os.getpid())},
                network_disabled=True, network_mode="none", read_only=True,
                tmpfs={"/tmp": f"rw,nosuid,nodev,size={settings.tmpfs_mb}m,mode=1777"},
                mem_limit=f"{settings.memory_mb}m", memswap_limit=f"{settings.memory_mb}m",
                pids_limit=settings.pids_limit, cap_drop=["ALL"], security_opt=["no-new-privileges"],
                user=f"{SANDBOX_UID}:{SANDBOX_UID}", environment=clean_environment(), working_dir="/",
                volumes=volumes, ipc_mode="private", hostname="lossforge-sandbox", stdin_open=False)
            deadline = time.monotonic() + STARTUP_TIMEOUT
            jobs = _accept(listener, self.container, deadline)
            messages = _accept(listener, self.container, deadline)
        except SandboxError:
            listener.close()
            self._remove()
            raise
        except Exception as exc:  # noqa: BLE001 - APIError, ImageNotFound, ...
            listener.close()
            self._remove()
            raise SandboxError("error", f"could not start the sandbox container: {type(exc).__name__}: {exc}",
                               traceback_tail(exc)) from exc
        listener.close()
        in_w, out_r = jobs.detach(), messages.detach()
        try:
            self.container.reload()
        except Exception:  # noqa: BLE001
            pass
        try:
            write_frame(in_w, pickle.dumps(setup))
        except OSError:
            pass
        return in_w, out_r

    def stderr_tail(self, limit: int = 2000) -> str:
        if self.container is None:
            return ""
        try:
            return self.container.logs(stdout=True, stderr=True, tail=40).decode(errors="replace")[-limit:]
        except Exception:  # noqa: BLE001 - gone
            return ""

    def _alive(self) -> bool:
        if self.container is None:
            return False
        try:
            self.container.reload()
            return self.container.status in ("created", "running")
        except Exception:  # noqa: BLE001
            return False

    def _terminate(self, force: bool) -> None:
        """The server exits at the end of its job connection; the container then removes itself.
        Kill and remove it if it has not gone within the grace period."""
        if self.container is not None:
            deadline = time.monotonic() + (0.5 if force else 5.0)
            while time.monotonic() < deadline and self._alive():
                time.sleep(0.05)
        self._remove()

    def _remove(self) -> None:
        if self.container is not None:
            try:
                self.container.remove(force=True)
            except Exception:  # noqa: BLE001 - already removed
                pass
        if self.ipc_root is not None:
            shutil.rmtree(self.ipc_root, ignore_errors=True)
            self.ipc_root = None
        if self.cli is not None:
            try:
                self.cli.close()
            except Exception:  # noqa: BLE001
                pass

    def children_uid(self, identity: str) -> int:
        """Children keep the container's (non-root) user."""
        return int(self.facts.get("euid", SANDBOX_UID))

    def describe(self, sandbox: SandboxLimits) -> dict[str, bool | str]:
        """``ProcessSandbox.layers()`` for the Docker backend (same keys as the other backends)."""
        return describe_layers(self.facts, self.view.options, sandbox)


def describe_layers(facts: dict[str, Any], settings: DockerSettings, sandbox: SandboxLimits) -> dict[str, bool | str]:
    """The layers in effect in a Docker worker, from the facts its server measured at start."""
    memory = f"{sandbox.memory_mb} MB address space" if sandbox.memory_mb is not None else "no address-space limit"
    image = "skeleton image + host Python bound read-only" if settings.host_python else f"image {settings.image}"
    return {
        "backend": "docker",
        "policy": "AST allow-list + RestrictedPython compile, in the child",
        "process": "fresh fork per job from a warm server (PID 1 of its container); own session and process group",
        "rlimits": f"{memory}, CPU seconds, file size 0, no core dumps, 64 open files, processes",
        "wall_clock_kill": "process group at the timeout; strays killed when idle",
        "clean_environment": "container started with only: " + ", ".join(facts.get("env_keys", [])),
        "network": (f"network disabled (interfaces: {', '.join(facts.get('interfaces') or []) or 'none'})"),
        "read_only_root": bool(facts.get("root_read_only")),
        "hidden_dirs": f"everything but the {image} and the exposed paths",
        "scratch": (f"{facts.get('scratch')}/job-<id> (tmpfs, private, per job)" if facts.get("scratch") else False),
        "pid_namespace": "the container's own (the server is its PID 1)",
        "user": f"uid {facts.get('euid')} (non-root) in the container, no capabilities",
        "no_new_privs": bool(facts.get("no_new_privs")),
        "capabilities": "none (all dropped)",
        "container": (f"memory {settings.memory_mb} MB, pids {settings.pids_limit}, /tmp tmpfs {settings.tmpfs_mb} MB, "
                      "cap_drop ALL, no-new-privileges, removed on exit"),
        "result_reader": "restricted unpickler, results up to " + f"{sandbox.max_result_bytes >> 20} MB",
    }
