"""The Docker backend against a real engine: the container's lock-down, checks and the proxy screen inside
it, containers removed on exit and on a crash, clear errors. The attack corpus runs against it too
(``test_attacks.py``, backend "docker").

Needs a Docker engine (``DOCKER_HOST``); ``scripts/test.sh`` starts one and sets
``LOSSFORGE_REQUIRE_DOCKER=1``, so in CI these tests fail rather than skip when the engine is missing.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lossforge.sandbox.docker_backend import DockerSettings, client, docker_status, skeleton_rootfs
from lossforge.sandbox.process import ProcessSandbox
from lossforge.sandbox.protocol import SandboxError
from lossforge.trainer.losses import LIBRARY, library_code
from tests.conftest import TINY_SCREEN, TINY_WORLD
from tests.support import require_docker_engine

SIG = "policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta"
RHO = "    rho = beta * ((policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps))\n"


def loss(body: str) -> str:
    return f"import torch\nimport torch.nn.functional as F\n\ndef candidate({SIG}):\n{RHO}    {body}\n"


BROKEN = [
    (loss("return torch.exp(-2.0 * rho)"), "extreme_margins"),  # inf at rho = -50
    (loss("return -F.logsigmoid(rho).mean()"), "shape"),
    (loss("return torch.zeros_like(rho)"), "gradient"),
    (loss("return F.softplus(rho)"), "prefers_chosen"),
    ("import os\n" + loss("return -F.logsigmoid(rho)"), "policy"),
]


@pytest.fixture(scope="module")
def docker_box():
    require_docker_engine()
    sandbox = ProcessSandbox(isolation="docker", timeout=30.0)
    sandbox.warm()
    yield sandbox
    sandbox.close()


def _container(box: ProcessSandbox):
    server = box._servers[box._view]  # the warm server this sandbox uses
    server.container.reload()
    return server.container


def test_library_losses_pass_and_broken_ones_fail_the_named_check(docker_box) -> None:
    for name in LIBRARY:
        report = docker_box.check(library_code(name))
        assert report.passed, (name, report.summary())
        assert report.properties["seconds_per_call"] > 0 and "batch_coupled" in report.properties
    for code, check in BROKEN:
        report = docker_box.check(code)
        assert not report.passed and report.failed_check == check, report.summary()
        assert report.checks[-1].hint


def test_the_container_is_locked_down(docker_box) -> None:
    container = _container(docker_box)
    host, config = container.attrs["HostConfig"], container.attrs["Config"]
    assert config["User"] == "65534:65534"
    assert config.get("NetworkDisabled") is True and host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["Memory"] > 0 and host["PidsLimit"] > 0
    assert "/tmp" in host["Tmpfs"] and host["AutoRemove"] is True
    assert host["Privileged"] is False
    writable = [m["Destination"] for m in container.attrs["Mounts"] if m["RW"]]
    assert writable == ["/ipc"]  # only the socket's directory; everything bound from the host is read-only
    names = {entry.split("=", 1)[0] for entry in config["Env"]}
    assert not any(word in name for name in names for word in ("KEY", "TOKEN", "SECRET", "PASSWORD"))
    layers = docker_box.layers()
    assert layers["backend"] == "docker" and layers["read_only_root"] and layers["network"]
    assert "65534" in str(layers["user"])


def test_the_proxy_screen_runs_in_the_container(docker_box, tmp_path_factory) -> None:
    from lossforge.sandbox.protocol import InProcessSandbox
    from lossforge.trainer.proxy.api import prepare, screen_with_settings
    from lossforge.settings.proxy import ProxyConfig, ScreenConfig, WorldConfig

    cache = tmp_path_factory.mktemp("docker-cache")
    os.chmod(cache, 0o755)  # the container's user reads the cache (the directories above do not matter)
    config = ProxyConfig(world=WorldConfig(**TINY_WORLD), screen=ScreenConfig(**TINY_SCREEN))
    prepare(config, 0, cache)
    args = (config.world.model_dump(), config.screen.model_dump(), 0, str(cache))
    inside = docker_box.run(library_code("dpo"), screen_with_settings, *args, timeout=120.0)
    reference = InProcessSandbox().run(library_code("dpo"), screen_with_settings, *args)
    assert inside["fitness"] == pytest.approx(reference["fitness"], abs=1e-6)


def test_a_path_the_container_user_cannot_read_is_refused_clearly(docker_box, tmp_path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    os.chmod(private, 0o700)
    with pytest.raises(SandboxError) as info:
        docker_box.run(library_code("dpo"), _list_dir, str(private), timeout=10.0)
    assert "(uid 65534) cannot read" in info.value.message and "chmod o+rX" in info.value.message


def _list_dir(loss_fn, path):
    return os.listdir(path)


CHILD = textwrap.dedent("""
    import sys, time
    from lossforge.sandbox.process import ProcessSandbox
    sb = ProcessSandbox(isolation="docker")
    sb.warm()
    print(sb._servers[sb._view].container.id, flush=True)
    if sys.argv[1] == "crash":
        time.sleep(600)
""")


@pytest.mark.parametrize("how", ["exit", "crash"])
def test_containers_are_removed_on_exit_and_on_a_crash(how: str) -> None:
    require_docker_engine()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, how], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    try:
        container_id = proc.stdout.readline().strip()
        assert container_id, "the child did not start a container"
        if how == "crash":
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    cli = client(DockerSettings())
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        # sparse: no inspect per container, which raced with the auto-removal itself (a 404 under load)
        if not [c for c in cli.containers.list(all=True, sparse=True) if c.id == container_id]:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"container {container_id[:12]} still exists after its owner's {how}")


def test_no_engine_and_no_image_are_clear_errors(tmp_path) -> None:
    nowhere = DockerSettings(base_url=f"unix://{tmp_path}/no-docker.sock")
    status = docker_status(nowhere)
    assert status["available"] is False and "no Docker engine answers" in status["reason"]
    box = ProcessSandbox(isolation="docker", docker=nowhere)
    with pytest.raises(SandboxError) as info:
        box.check(library_code("dpo"))
    assert "no Docker engine answers" in info.value.message and "dockerd" in info.value.message
    box.close()
    require_docker_engine()
    missing = ProcessSandbox(isolation="docker", docker=DockerSettings(image="lossforge-no-such-image:0",
                                                                         host_python=False))
    with pytest.raises(SandboxError) as info:
        missing.check(library_code("dpo"))
    assert "docker build" in info.value.message
    missing.close()


def test_the_skeleton_image_is_deterministic_and_tiny() -> None:
    first, second = skeleton_rootfs(), skeleton_rootfs()
    assert first == second and len(first) < 1 << 20


def test_bench_reports_the_docker_backend() -> None:
    require_docker_engine()
    from lossforge.bench.sandbox import bench_sandbox

    result = bench_sandbox(3, naive_n=0, docker=True)
    assert result["docker"]["backend"] == "docker" and result["docker"]["n"] == 3
    assert result["docker"]["p50_ms"] > 0


def test_the_run_config_and_the_tools_choose_the_docker_backend() -> None:
    from lossforge.config import RunConfig
    from lossforge.sandbox.factory import sandbox_from_config
    from lossforge.tools.context import ToolContext, ToolSettings

    config = RunConfig.model_validate({"sandbox": {"backend": "docker", "docker": {"pids_limit": 64}}})
    box = sandbox_from_config(config.sandbox)
    assert box.backend == "docker" and box._view.options.pids_limit == 64
    assert box._view.options.memory_mb == config.sandbox.memory_mb + 1024
    box.close()
    context = ToolContext(ToolSettings.from_run_config(config))
    try:
        assert context.sandbox.backend == "docker"  # nothing starts until the first call
    finally:
        context.close()
    assert sandbox_from_config(RunConfig().sandbox).backend in ("bwrap", "unshare", "none")


def test_the_view_never_binds_the_containers_own_directories(monkeypatch, tmp_path) -> None:
    """A checkout under /tmp puts /tmp-ish entries on sys.path: paths below /tmp are bound, /tmp itself
    (the host's whole /tmp, and the container's tmpfs) never is."""
    from lossforge.sandbox.docker_backend import RESERVED, docker_view

    monkeypatch.setattr(sys, "path", ["/tmp", "/etc", str(tmp_path), *sys.path])
    view = docker_view(DockerSettings()).with_paths(["/tmp", "/proc", str(tmp_path)])
    assert not set(view.expose) & set(RESERVED)
    assert view.covers(str(tmp_path / "x")) and not view.covers("/tmp/elsewhere")
