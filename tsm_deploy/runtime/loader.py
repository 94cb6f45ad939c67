"""Load an artifact's module onto its device and drive the Relax VM: what both model kinds share.

Needs only TVM's runtime and numpy (it runs on the Raspberry Pi / Jetson): no torch, onnx or compiler.
Inputs are handed to TVM without a copy where they can be (a 64-byte aligned contiguous CPU array
is wrapped through DLPack), else copied into a tensor allocated once and reused every call. On the CPU
that tensor is an aligned numpy array wrapped once, so the copy is numpy's (measured here: 1.8 us for a
64x64 frame against 10.6 us through ``Tensor.copyfrom``), and outputs come back through DLPack (1 us
against 9 us for ``Tensor.numpy()``): at 0.3 ms a frame the Python around the VM call is not free.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import TsmDeployError, one_line
from .manifest import Manifest, TensorSpec, read_manifest

log = logging.getLogger(__name__)

DLPACK_ALIGNMENT = 64  # TVM refuses to wrap less aligned memory


def set_threads(threads: int) -> None:
    """Size TVM's CPU thread pool. On x86 TVM otherwise starts half the logical CPUs (it assumes
    hyper-threads): one thread on a 2-vCPU machine, measured 1.6x slower than two here."""
    import tvm

    os.environ["TVM_NUM_THREADS"] = str(threads)  # for pools created later
    config = tvm.get_global_func("runtime.config_threadpool", allow_missing=True)
    if config is not None:
        config(1, threads)  # mode 1: big cores (all cores on a homogeneous CPU), n threads
    else:
        log.warning("this TVM runtime has no runtime.config_threadpool: its pool keeps its start-up size")


def _default_threads(manifest: Manifest) -> int | None:
    """The user's TVM_NUM_THREADS wins; else the core count the artifact was compiled for."""
    if os.environ.get("TVM_NUM_THREADS") or manifest.target.device != "cpu":
        return None
    cores = manifest.target.tvm_target.get("num-cores")
    return int(cores) if cores else None


def _device(kind: str):
    import tvm

    if kind == "cuda":
        device = tvm.cuda(0)
        if not device.exist:
            raise TsmDeployError(
                "this artifact runs on a CUDA GPU and none is usable here (no NVIDIA GPU or driver, "
                "or a TVM runtime built without CUDA)"
            )
        _ensure_cuda_jit()
        return device
    return tvm.cpu(0)


def _ensure_cuda_jit() -> None:
    """TVM 0.27 keeps a CUDA module's kernels as CUDA C source and compiles them when the module is
    loaded, through the Python callback ``tvm_callback_cuda_compile`` (``tvm.support.nvcc``): NVRTC
    from the ``cuda-bindings`` package by default, or ``nvcc`` with ``TVM_CUDA_COMPILE_MODE=nvcc``.
    Pick nvcc when only nvcc is there, and say what is missing when neither is."""
    import importlib.util
    import os
    import shutil

    try:
        import tvm.support.nvcc  # noqa: F401  (registers tvm_callback_cuda_compile)
    except ImportError as exc:
        raise TsmDeployError(
            f"loading a CUDA artifact compiles its kernels, which needs tvm.support.nvcc ({exc})"
        ) from None
    if os.environ.get("TVM_CUDA_COMPILE_MODE"):
        return
    if importlib.util.find_spec("cuda") is not None and importlib.util.find_spec("cuda.bindings") is not None:
        return  # NVRTC, TVM's default
    if shutil.which("nvcc"):
        log.info("cuda-bindings is not installed: compiling the CUDA kernels with nvcc")
        os.environ["TVM_CUDA_COMPILE_MODE"] = "nvcc"
        return
    raise TsmDeployError(
        "loading a CUDA artifact compiles its kernels (they are stored as CUDA source): install "
        "cuda-bindings (NVRTC) or put the CUDA toolkit's nvcc on PATH"
    )



class LoadedArtifact:
    """An artifact's module loaded on its device, with one reusable input tensor per input."""

    def __init__(
        self, artifact_dir: Path | str, kind: str, check_module: bool = True, threads: int | None = None
    ) -> None:
        """Load the artifact, which must be of I/O ``kind`` ("stream" or "clip")."""
        import tvm
        import tvm.runtime.vm  # noqa: F401  (a runtime-only `import tvm`, as on the device, does not load it)

        self.artifact_dir = Path(artifact_dir)
        self.manifest: Manifest = read_manifest(self.artifact_dir, check_module=check_module)
        if self.manifest.kind != kind:
            other = "ClipModel" if self.manifest.kind == "clip" else "StreamingModel"
            raise TsmDeployError(
                f"{self.artifact_dir} is a {self.manifest.kind} artifact: use {other} (or tsm_deploy.runtime.load_model)"
            )
        self.device = _device(self.manifest.target.device)
        module_path = (self.artifact_dir / self.manifest.module_file).resolve()  # dlopen needs a path with a dir
        try:
            module = tvm.runtime.load_module(str(module_path))
        except Exception as exc:
            first = one_line(exc)
            raise TsmDeployError(
                f"cannot load {module_path} (built for {self.manifest.target.arch}/{self.manifest.target.device}): {first}"
            ) from None
        threads = threads or _default_threads(self.manifest)
        if threads:
            set_threads(threads)
        self._vm = tvm.runtime.vm.VirtualMachine(module, self.device)
        self._main = self._vm["main"]
        self._on_cpu = self.device.dlpack_device_type() == tvm.cpu(0).dlpack_device_type()
        self._staging: dict[str, tuple[np.ndarray | None, Any]] = {}
        self._input_names = [spec.name for spec in self.manifest.inputs]
        # CPU artifacts update their state input in place (it is returned as the next state): a state
        # input is always copied into a tensor of the runtime's own, never wrapped around caller memory
        self._copied_inputs = {i for _, i in self.manifest.state}

    def to_device(self, spec: TensorSpec, array: np.ndarray) -> Any:
        """``array`` as a TVM tensor for input ``spec``: wrapped without a copy when it is a 64-byte
        aligned contiguous CPU array (not for state inputs: the module may write them), else copied
        into this input's reusable tensor."""
        import tvm

        if array.shape != spec.shape or array.dtype != np.dtype(spec.dtype):
            raise TsmDeployError(f"input {spec.name}: got {array.dtype}{list(array.shape)}, expected {spec.dtype}{list(spec.shape)}")
        if (self._on_cpu and array.flags.c_contiguous and array.ctypes.data % DLPACK_ALIGNMENT == 0
                and spec.name not in self._copied_inputs):
            return tvm.runtime.from_dlpack(array)
        staging = self._staging.get(spec.name)
        if staging is None:
            staging = self._staging[spec.name] = self._new_staging(spec)
        host, tensor = staging
        if host is not None:
            np.copyto(host, array)  # the wrapped tensor sees it: same memory
        else:
            tensor.copyfrom(np.ascontiguousarray(array))
        return tensor

    def _new_staging(self, spec: TensorSpec) -> tuple[np.ndarray | None, Any]:
        """A reusable input tensor; on the CPU also the aligned numpy array it wraps."""
        import tvm

        if not self._on_cpu:
            return None, tvm.runtime.empty(spec.shape, spec.dtype, self.device)
        dtype = np.dtype(spec.dtype)
        nbytes = int(np.prod(spec.shape)) * dtype.itemsize
        raw = np.empty(nbytes + DLPACK_ALIGNMENT, np.uint8)
        offset = (-raw.ctypes.data) % DLPACK_ALIGNMENT
        host = raw[offset : offset + nbytes].view(dtype).reshape(spec.shape)
        return host, tvm.runtime.from_dlpack(host)

    def to_numpy(self, tensor: Any) -> np.ndarray:
        """A numpy copy of an output tensor (through DLPack on the CPU: a ninth of ``Tensor.numpy()``)."""
        if self._on_cpu:
            return np.from_dlpack(tensor).copy()
        return tensor.numpy()

    def zeros(self, spec: TensorSpec) -> Any:
        import tvm

        return tvm.runtime.tensor(np.zeros(spec.shape, dtype=spec.dtype), device=self.device)

    def call(self, inputs: dict[str, Any]) -> list[Any]:
        """Run ``main`` with the inputs by name (in the manifest's order); the outputs as a list."""
        outputs = self.call_positional([inputs[name] for name in self._input_names])
        return [self.output(outputs, i) for i in range(len(self.manifest.outputs))]

    def input_position(self, name: str) -> int:
        return self._input_names.index(name)

    def call_positional(self, args: list[Any]) -> Any:
        """Run ``main`` with the inputs in the manifest's order; what it returns as it is (one tensor,
        or a tuple: index only what you use, each item costs a foreign-function call)."""
        return self._main(*args)

    @staticmethod
    def output(result: Any, index: int) -> Any:
        """Output ``index`` of what :meth:`call_positional` returned (a single output comes back as a
        tensor, not a tuple)."""
        return result if hasattr(result, "numpy") else result[index]
