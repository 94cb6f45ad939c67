"""A Relax module cross-compiled on this host runs on an emulated Raspberry Pi 4 (Cortex-A72).

Real components throughout: the cross-built libtvm_runtime.so, a Debian arm64 rootfs, qemu-user.
The runtime and rootfs are cached (~1 min to build the first time on 2 cores), so reruns are fast.
Needs the packages of scripts/install_system_deps.sh; skipped when they are missing.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest

import tvm
import tvm.support.cc
from tvm import relax
from tsm_deploy.deploy.pyenv import assemble_device_packages
from tsm_deploy.deploy.tvm_runtime_build import build_tvm_runtime
from tsm_deploy.emulation.rootfs import build_arm64_rootfs, run_under_qemu
from tsm_deploy.support.tools import ToolchainMissing

from ..conftest import EMULATION_TOOLS, require_tools

pytestmark = [pytest.mark.slow, pytest.mark.emulation]

PI4_TARGET = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72",
              "mattr": ["+neon"], "num-cores": 4}
# The Pi 4 target plus an extension the Cortex-A72 lacks: LLVM vectorises the convolutions with
# SVE instructions, which raise SIGILL on a real Pi and under QEMU_CPU=cortex-a72.
SVE_TARGET = {**PI4_TARGET, "mattr": ["+neon", "+sve"]}
INPUT_SHAPE = (1, 3, 16, 16)
GUEST_PYTHON = "/usr/bin/python3.11"

# Runs inside the arm64 rootfs: load the module with the runtime-only tvm, compare to the host.
GUEST_SCRIPT = """
import json, sys
import numpy as np
import tvm, tvm.runtime.vm
from tvm.base import _RUNTIME_ONLY
mod = tvm.runtime.load_module(sys.argv[1])
vm = tvm.runtime.vm.VirtualMachine(mod, tvm.cpu())
out = vm["main"](tvm.runtime.tensor(np.load("x.npy"))).numpy()
err = float(np.abs(out - np.load("expected.npy")).max())
print(json.dumps({"runtime_only": bool(_RUNTIME_ONLY), "max_abs_err": err}))
"""


def _tiny_cnn() -> tvm.IRModule:
    """conv3x3 -> relu -> conv3x3 with weights as embedded constants (exercises the VM's
    constant section, which the device runtime deserialises)."""
    rng = np.random.default_rng(0)
    # He-initialised like a trained CNN's weights, so outputs are O(1) and the 1e-5 absolute
    # tolerance measures float32 rounding (summation order differs between x86 and NEON).
    w1 = rng.standard_normal((8, 3, 3, 3), dtype=np.float32) * np.float32(np.sqrt(2 / 27))
    w2 = rng.standard_normal((4, 8, 3, 3), dtype=np.float32) * np.float32(np.sqrt(2 / 72))
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape=INPUT_SHAPE, dtype="float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(w1), padding=1))
            y = bb.emit(relax.op.nn.relu(y))
            y = bb.emit(relax.op.nn.conv2d(y, relax.const(w2), padding=1))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def _export_for_pi(target: dict, path: Path) -> Path:
    ex = tvm.compile(_tiny_cnn(), target=tvm.target.Target(target))
    ex.export_library(str(path), fcompile=tvm.support.cc.cross_compiler("aarch64-linux-gnu-g++"))
    return path


def _require_toolchain(fn, *args):
    try:
        return fn(*args)
    except ToolchainMissing:
        require_tools(*EMULATION_TOOLS, "cmake")  # skips, or under CI fails, naming what is missing
        raise


@pytest.fixture(scope="module")
def device_env(tmp_path_factory) -> tuple[Path, Path]:
    """(rootfs, site-packages dir) for running the device Python under qemu."""
    rootfs = _require_toolchain(build_arm64_rootfs)
    site = _require_toolchain(assemble_device_packages, tmp_path_factory.mktemp("device") / "site")
    return rootfs, site


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """Input, host reference output and guest script shared by the emulated runs."""
    work = tmp_path_factory.mktemp("pi4")
    x = np.random.default_rng(1).standard_normal(INPUT_SHAPE, dtype=np.float32)
    vm = relax.VirtualMachine(tvm.compile(_tiny_cnn(), target=tvm.target.Target({"kind": "llvm"})),
                              tvm.cpu())
    np.save(work / "x.npy", x)
    np.save(work / "expected.npy", vm["main"](tvm.runtime.tensor(x)).numpy())
    (work / "run.py").write_text(GUEST_SCRIPT)
    return work


def _run_on_pi(device_env, workdir: Path, lib: Path, qemu_cpu: str | None = None):
    rootfs, site = device_env
    env = {"PYTHONPATH": str(site)}
    if qemu_cpu is not None:
        env["QEMU_CPU"] = qemu_cpu
    # "./name": dlopen needs a directory part to load from the working directory.
    return run_under_qemu(rootfs, [GUEST_PYTHON, "run.py", f"./{lib.name}"], env=env,
                          timeout=300, cwd=workdir)


def _result(proc) -> dict:
    assert proc.returncode == 0, f"guest failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_runtime_build_is_cached_and_aarch64():
    lib = _require_toolchain(build_tvm_runtime)
    built = lib.stat().st_mtime_ns
    assert build_tvm_runtime() == lib
    assert lib.stat().st_mtime_ns == built  # the cached library, not rebuilt
    header = lib.read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and header[4] == 2  # 64-bit ELF
    assert int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64


def test_pi4_build_matches_host_under_cortex_a72(device_env, workdir):
    lib = _export_for_pi(PI4_TARGET, workdir / "pi4.so")
    result = _result(_run_on_pi(device_env, workdir, lib))
    assert result["runtime_only"] is True
    assert result["max_abs_err"] <= 1e-5


def test_build_with_sve_is_caught_by_cortex_a72_emulation(device_env, workdir):
    lib = _export_for_pi(SVE_TARGET, workdir / "sve.so")
    on_pi = _run_on_pi(device_env, workdir, lib)
    assert on_pi.returncode == -signal.SIGILL, on_pi.stderr
    # The same library is fine on a CPU that has SVE: the failure is the instruction set alone.
    assert _result(_run_on_pi(device_env, workdir, lib, qemu_cpu="max"))["max_abs_err"] <= 1e-5


def test_missing_cross_compiler_raises_toolchain_missing(tmp_path, monkeypatch):
    # A PATH with cmake but no aarch64 cross compiler.
    require_tools("cmake")
    cmake = shutil.which("cmake")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "cmake").symlink_to(cmake)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(ToolchainMissing, match="apt-get install g\\+\\+-aarch64-linux-gnu"):
        build_tvm_runtime(cache_dir=tmp_path / "cache")


def test_missing_qemu_raises_toolchain_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolchainMissing, match="qemu-user-static"):
        run_under_qemu(tmp_path, ["/usr/bin/true"])
