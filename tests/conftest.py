"""Shared fixtures. Small models (64x64, width 0.5) keep real TVM compiles to seconds."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Iterator

import pytest

from tsm_deploy.checkpoint import LoadedCheckpoint, default_checkpoint, save_checkpoint
from tsm_deploy.models import ModelConfig

SMALL_CONFIG = ModelConfig(n_class=10, input_size=64, width_mult=0.5)
# The host tools scripts/install_system_deps.sh installs (what `make test` sets up before it runs)
CROSS_TOOLS = ("aarch64-linux-gnu-gcc", "aarch64-linux-gnu-g++")
EMULATION_TOOLS = ("qemu-aarch64-static", "mmdebstrap", *CROSS_TOOLS)
METER_TOOLS = ("qemu-aarch64", "gcc", *CROSS_TOOLS)


def missing_tools(*tools: str) -> list[str]:
    return [tool for tool in tools if shutil.which(tool) is None]


def require_tools(*tools: str) -> None:
    """Skip the test when a host tool is missing, except under CI (``CI`` set, as `.ci/run` does), where
    `make test` has installed them all and a missing one is a failure, not a quiet skip."""
    missing = missing_tools(*tools)
    if not missing:
        return
    message = f"needs {', '.join(missing)} (scripts/install_system_deps.sh)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}: missing under CI", pytrace=False)
    pytest.skip(message)


@contextlib.contextmanager
def tracked_rpc_server(key: str, ports: int = 9590) -> Iterator[int]:
    """A real TVM RPC tracker and one server registered under ``key``, on loopback (subprocesses);
    yields the tracker's port once the server has registered. ``ports``: where the two port ranges
    start (callers running at the same time keep apart)."""
    from tvm.rpc.server import Server
    from tvm.rpc.tracker import Tracker

    from tsm_deploy.errors import TsmDeployError
    from tsm_deploy.tuning.rpc import RpcConfig, check_tracker

    tracker = Tracker(host="127.0.0.1", port=ports, port_end=ports + 100, silent=True)
    server = Server(host="127.0.0.1", port=ports + 110, port_end=ports + 210, tracker_addr=("127.0.0.1", tracker.port),
                    key=key, silent=True)
    try:
        deadline = time.monotonic() + 30
        while True:  # wait for the server to register
            try:
                check_tracker(RpcConfig("127.0.0.1", tracker.port, key))
                break
            except TsmDeployError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield tracker.port
    finally:
        server.terminate()
        tracker.terminate()


def pytest_sessionstart(session: pytest.Session) -> None:
    """With parallel workers: build the device-side caches (Debian arm64 root, cross-built TVM runtime
    and device packages, meter plugin and guest helper) once, here in the controller, before the
    workers start; else two workers would each build the same entry at once and keep one."""
    config = session.config
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        return
    if missing_tools(*EMULATION_TOOLS, *METER_TOOLS, "cmake"):
        return  # the tests that need them skip, or fail under CI, naming what is missing
    import tempfile

    from tsm_deploy.deploy.pyenv import assemble_device_packages
    from tsm_deploy.emulation.meter import build_guest_helper, build_meter_plugin
    from tsm_deploy.emulation.rootfs import build_arm64_rootfs

    start = time.monotonic()
    try:
        build_arm64_rootfs()
        with tempfile.TemporaryDirectory(prefix="tsm-warm-") as tmp:
            assemble_device_packages(Path(tmp))
        build_meter_plugin()
        build_guest_helper()
    except Exception as exc:  # noqa: BLE001 - the tests that need these report it themselves
        logging.getLogger("tsm_deploy.tests").warning("device caches not built up front: %s", exc)
    took = time.monotonic() - start
    if took > 5:
        print(f"\ndevice caches built in {took:.0f} s before the workers started")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "requires_tool(*names): the host tools the test runs (see require_tools)")


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("requires_tool"):
        require_tools(*mark.args)


@pytest.fixture(autouse=True)
def _quiet_tvm_logs():
    logging.getLogger("tsm_deploy").setLevel(logging.INFO)
    yield


@pytest.fixture(scope="session")
def small_checkpoint() -> LoadedCheckpoint:
    return default_checkpoint(SMALL_CONFIG, seed=3)


@pytest.fixture(scope="session")
def small_checkpoint_file(tmp_path_factory, small_checkpoint) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "small.pth"
    save_checkpoint(small_checkpoint, path)
    return path


@pytest.fixture(scope="session")
def small_artifact(tmp_path_factory, small_checkpoint) -> Path:
    """The small model compiled for this machine once per session (real export, import, build)."""
    from tsm_deploy.compiler.artifact import compile_artifact
    from tsm_deploy.target.targets import load_target

    out = tmp_path_factory.mktemp("artifacts") / "small-x86"
    compile_artifact(small_checkpoint, load_target("x86"), out, database=None)
    return out


SMALL_CLIP_CONFIG = ModelConfig(arch="tsm_mobilenet_v2", n_class=10, input_size=64, width_mult=0.5, n_segment=4)


@pytest.fixture(scope="session")
def small_clip_checkpoint() -> LoadedCheckpoint:
    """An offline (bi-directional) TSM-MobileNetV2 over clips of 4 segments, small."""
    return default_checkpoint(SMALL_CLIP_CONFIG, seed=4)
