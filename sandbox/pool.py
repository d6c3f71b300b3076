"""The process-wide pool of worker servers, one per view, shared by every ``ProcessSandbox``.

``_acquire`` returns a started server for a view (the exact one, else a live one whose view exposes
more, else a new one: ``worker._Server``, or ``docker_backend.DockerServer`` for the Docker backend)
and counts a reference; ``_release`` drops it, keeping at most ``MAX_IDLE_SERVERS`` unused servers warm.
A forked child of the caller starts with an empty pool (the parent's servers are not its own).
"""
from __future__ import annotations

import os
import threading

from lossforge.sandbox.isolation import View
from lossforge.sandbox.worker import _Server

#: Servers with no sandbox using them that are kept warm (most recently released first).
MAX_IDLE_SERVERS = 2

_POOL_LOCK = threading.Lock()
_POOL: dict[tuple[View, int], _Server] = {}
_IDLE: list[tuple[View, int]] = []


def _after_fork_in_child() -> None:
    """A forked child of the caller has none of the parent's threads: its servers are the parent's, so it
    starts its own on first use."""
    global _POOL_LOCK
    _POOL_LOCK = threading.Lock()
    _POOL.clear()
    _IDLE.clear()


os.register_at_fork(after_in_child=lambda: _after_fork_in_child())


def _acquire(view: View, max_result_bytes: int) -> _Server:
    """A server for ``view``: the exact one, else a live one whose view exposes more (a superset: same
    backend and hiding, more paths bound back; the caller then adopts that view), else a new one."""
    key = (view, max_result_bytes)
    with _POOL_LOCK:
        server = _POOL.get(key)
        if server is None or server.dead:
            wider = [s for (v, m), s in _POOL.items() if m == max_result_bytes and not s.dead and
                     v.backend == view.backend and v.hide_dirs == view.hide_dirs and
                     v.hide_files == view.hide_files and v.options == view.options and
                     set(v.expose) >= set(view.expose)]
            if wider:
                server = min(wider, key=lambda s: len(s.view.expose))
                key = (server.view, max_result_bytes)
            else:
                server = _server_class(view)(view, max_result_bytes)
                _POOL[key] = server
        server.refs += 1
        if key in _IDLE:
            _IDLE.remove(key)
    try:
        server.ensure_started()
    except BaseException:
        _release(server, max_result_bytes)
        raise
    return server


def _server_class(view: View) -> type[_Server]:
    if view.backend == "docker":
        from lossforge.sandbox.docker_backend import DockerServer

        return DockerServer
    return _Server


def _release(server: _Server, max_result_bytes: int) -> None:
    key = (server.view, max_result_bytes)
    evict = []
    with _POOL_LOCK:
        server.refs -= 1
        if server.refs > 0:
            return
        if server.dead:
            if _POOL.get(key) is server:
                del _POOL[key]
            return
        _IDLE.append(key)
        while len(_IDLE) > MAX_IDLE_SERVERS:
            old = _IDLE.pop(0)
            evict.append(_POOL.pop(old))
    for old_server in evict:
        old_server.stop()
