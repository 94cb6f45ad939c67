"""CUDA artifacts build on a machine without a GPU: ``cuda`` (x86-64 host) and ``jetson-nano`` (aarch64 host).

What TVM 0.27 puts in the module: the host code (x86-64 or aarch64, linked into module.so), the
Relax VM executable with the weights, and a CUDA device module whose kernels are kept as CUDA C
source (format ``cuda``), compiled when the module is loaded on the GPU machine (TVM's
``tvm_callback_cuda_compile``: NVRTC, or nvcc). The compiler library never calls that callback.

Without a GPU driver the CUDA module cannot be loaded here (``libtvm_runtime_cuda.so`` needs
``libcuda.so.1``), so the checks read module.so as a file: the ELF header, and the module blob
TVM embeds at the symbol ``__tvm_ffi__library_bin`` (import tree + one serialized module per key).
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from tsm_deploy.checkpoint import default_checkpoint, save_checkpoint
from tsm_deploy.cli import main
from tsm_deploy.compiler.artifact import compile_artifact
from tsm_deploy.errors import TsmDeployError
from tsm_deploy.models import ModelConfig
from tsm_deploy.runtime.manifest import read_manifest
from tsm_deploy.target.targets import load_target

from ..conftest import CROSS_TOOLS, require_tools

SMALL = ModelConfig(input_size=64, width_mult=0.5)
EM_X86_64, EM_AARCH64 = 62, 183
LIBRARY_BIN = "__tvm_ffi__library_bin"


# --------------------------------------------------------------------------------------------------
# reading module.so without loading it


def _elf_machine(data: bytes) -> int:
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, "not a little-endian ELF64 file"
    return struct.unpack_from("<H", data, 0x12)[0]


def _elf_symbol_offset(data: bytes, name: str) -> int:
    """File offset of a symbol's value, from .symtab/.dynsym (ELF64 little-endian)."""
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    wanted = name.encode()
    for _, sh_type, _, _, offset, size, link, _, _, entsize in sections:
        if sh_type not in (2, 11):  # SHT_SYMTAB, SHT_DYNSYM
            continue
        strtab = sections[link][4]
        for entry in range(offset, offset + size, entsize or 24):
            st_name, _, _, shndx, value, _ = struct.unpack_from("<IBBHQQ", data, entry)
            end = data.index(b"\0", strtab + st_name)
            if data[strtab + st_name : end] == wanted and 0 < shndx < len(sections):
                section = sections[shndx]
                return value - section[3] + section[4]  # address -> file offset
    raise KeyError(name)


def embedded_modules(path: Path) -> tuple[int, list[tuple[str, bytes]]]:
    """(ELF machine, [(module key, serialized bytes)]) of an exported TVM library."""
    data = path.read_bytes()
    machine = _elf_machine(data)
    pos = _elf_symbol_offset(data, LIBRARY_BIN)

    def u64() -> int:
        nonlocal pos
        value = struct.unpack_from("<Q", data, pos)[0]
        pos += 8
        return value

    def blob() -> bytes:
        nonlocal pos
        n = u64()
        pos += n
        return data[pos - n : pos]

    size = u64()
    end = pos + size
    for _ in range(2):  # import tree: row pointers, child indices (u64 vectors)
        count = u64()
        pos += 8 * count
    modules = []
    while pos < end:
        key = blob().decode()
        modules.append((key, b"" if key == "_lib" else blob()))
    assert pos == end, "module blob did not parse to its end"
    return machine, modules


def cuda_module(path: Path) -> tuple[int, str, str]:
    """(ELF machine, format, CUDA source) of the artifact's CUDA device module."""
    machine, modules = embedded_modules(path)
    keys = [key for key, _ in modules]
    assert "relax.VMExecutable" in keys and "_lib" in keys, keys
    payloads = [payload for key, payload in modules if key == "cuda"]
    assert len(payloads) == 1, f"expected one CUDA module, found keys {keys}"
    payload = payloads[0]
    n = struct.unpack_from("<Q", payload, 0)[0]
    fmt = payload[8 : 8 + n].decode()
    # the source is the last field, a length-prefixed string (it may start with blank lines)
    marker = payload.find(b'extern "C" __global__')
    assert marker > 0, "no CUDA kernel source in the CUDA module"
    for prefix in range(marker - 8, 7, -1):
        if struct.unpack_from("<Q", payload, prefix)[0] == len(payload) - prefix - 8:
            return machine, fmt, payload[prefix + 8 :].decode()
    raise AssertionError("CUDA source is not the module's last length-prefixed field")


def kernel_names(source: str) -> list[str]:
    return re.findall(r'extern "C" __global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\(', source)


# --------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def checkpoint():
    return default_checkpoint(SMALL)


def _compile_cli(checkpoint, folder: Path, *args: str) -> Path:
    """`tsm-deploy compile` as a user runs it, on the small model saved as a checkpoint (~13 s)."""
    save = folder / "small.pth"
    save_checkpoint(checkpoint, save)
    out = folder / "artifact"
    result = CliRunner().invoke(main, ["compile", "--checkpoint", str(save), "--output", str(out), *args])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def cuda_artifact(checkpoint, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _compile_cli(checkpoint, tmp_path_factory.mktemp("cuda"), "--target", "cuda", "--cuda-arch", "sm_80")


@pytest.fixture(scope="module")
def nano_artifact(checkpoint, tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tools(*CROSS_TOOLS)
    return _compile_cli(checkpoint, tmp_path_factory.mktemp("nano"), "--target", "jetson-nano")


def _gpu_present() -> bool:
    import tvm

    try:
        return bool(tvm.cuda(0).exist)
    except Exception:
        return False


# --------------------------------------------------------------------------------------------------
# tests


def test_cuda_artifact_holds_cuda_kernels(cuda_artifact: Path) -> None:
    manifest = read_manifest(cuda_artifact)
    assert manifest.target["device"] == "cuda" and manifest.target["arch"] == "x86_64"
    assert manifest.target["tvm_target"]["kind"] == "cuda" and manifest.target["tvm_target"]["arch"] == "sm_80"
    machine, fmt, source = cuda_module(cuda_artifact / manifest.module_file)
    assert machine == EM_X86_64
    assert fmt == "cuda"  # CUDA C source, compiled when loaded on the GPU machine
    names = kernel_names(source)
    assert len(names) >= 20 and any(n.startswith("fused_conv2d") for n in names)
    assert any("strided_slice" in n for n in names)  # the shift's slices run on the GPU too
    assert "blockIdx.x" in source and "threadIdx.x" in source


@pytest.mark.slow  # a second compile (~13 s), cross-linked: the module's tests together pass 30 s
def test_jetson_nano_artifact(nano_artifact: Path, cuda_artifact: Path) -> None:
    manifest = read_manifest(nano_artifact)
    assert manifest.target["device"] == "cuda" and manifest.target["arch"] == "aarch64"
    assert manifest.target["tvm_target"]["arch"] == "sm_53"
    assert manifest.target["host"]["mtriple"] == "aarch64-linux-gnu"
    machine, fmt, source = cuda_module(nano_artifact / manifest.module_file)
    assert machine == EM_AARCH64  # host code linked with aarch64-linux-gnu-g++
    assert fmt == "cuda"
    # same model: same kernels as the x86 CUDA build (dlight's default schedules)
    assert sorted(kernel_names(source)) == sorted(kernel_names(cuda_module(cuda_artifact / "module.so")[2]))


@pytest.mark.skipif(_gpu_present(), reason="a GPU is present: loading is tested by test_cuda_parity_on_gpu")
def test_cuda_artifact_without_gpu_is_one_clear_error(cuda_artifact: Path) -> None:
    from tsm_deploy.runtime import StreamingModel

    with pytest.raises(TsmDeployError, match="CUDA GPU") as info:
        StreamingModel(cuda_artifact)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(not _gpu_present(), reason="needs an NVIDIA GPU and driver")
def test_cuda_parity_on_gpu(cuda_artifact: Path, checkpoint, tmp_path: Path) -> None:
    """On a GPU machine: the kernels compile at load time and match PyTorch over a stream."""
    import tvm

    from tsm_deploy.evaluate.verify import verify_artifact

    arch = "sm_" + tvm.cuda(0).compute_version.replace(".", "")
    out = tmp_path / "here"
    compile_artifact(checkpoint, load_target("cuda", cuda_arch=arch), out, database=None)
    report = verify_artifact(out, checkpoint, frames=8)
    assert report.passed, report.table()


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc")
def test_cuda_source_compiles_with_nvcc(cuda_artifact: Path, tmp_path: Path) -> None:
    """The embedded source is valid CUDA: this machine's nvcc turns it into a cubin (~5-10 s)."""
    _, _, source = cuda_module(cuda_artifact / "module.so")
    (tmp_path / "k.cu").write_text(source)
    proc = subprocess.run(
        ["nvcc", "-cubin", "-arch=sm_80", "-o", str(tmp_path / "k.cubin"), str(tmp_path / "k.cu")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "k.cubin").read_bytes()[:4] == b"\x7fELF"


def _nvcc_major() -> int | None:
    if shutil.which("nvcc") is None:
        return None
    out = subprocess.run(["nvcc", "--version"], capture_output=True, text=True).stdout
    match = re.search(r"release (\d+)\.", out)
    return int(match.group(1)) if match else None


@pytest.mark.skipif((_nvcc_major() or 0) < 13, reason="documents CUDA 13's limit; needs nvcc >= 13")
def test_cuda13_cannot_build_for_the_nano(tmp_path: Path) -> None:
    """The README's claim: CUDA 13's nvcc has dropped Maxwell, so sm_53 kernels need the Nano's own toolkit."""
    (tmp_path / "k.cu").write_text('extern "C" __global__ void k(float* x) { x[threadIdx.x] += 1.0f; }\n')
    proc = subprocess.run(
        ["nvcc", "-cubin", "-arch=sm_53", "-o", str(tmp_path / "k.cubin"), str(tmp_path / "k.cu")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0 and "sm_53" in proc.stdout + proc.stderr
