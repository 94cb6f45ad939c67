"""Stream frames through a compiled artifact, one at a time, with the shift buffers kept on the device.

Needs only TVM's runtime and numpy (it runs on the Raspberry Pi / Jetson): no torch, no onnx, no
compiler. Each step's ``next_shift_buffer_i`` outputs are passed, as they are (device tensors, no
copy), as the next step's ``shift_buffer_i`` inputs.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import TsmDeployError, one_line
from .manifest import Manifest, read_manifest
from .preprocess import prepare_frame

log = logging.getLogger(__name__)

# The original online demo averages the last 12 frames' logits before taking the argmax.
DEFAULT_HISTORY = 12


@dataclass(frozen=True)
class StepResult:
    logits: np.ndarray  # this frame's logits, (n_class,)
    top1: int  # argmax of the (smoothed, if history > 1) logits
    label: str | None


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
    if os.environ.get("TVM_NUM_THREADS") or manifest.target["device"] != "cpu":
        return None
    cores = manifest.target.get("tvm_target", {}).get("num-cores")
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


class StreamingModel:
    """A loaded artifact: ``step(frame)`` per frame, ``reset()`` between clips.

    ``history``: average the logits of the last ``history`` frames before the argmax, as the
    original demo does (1 = no smoothing). ``threads``: TVM's CPU threads (default: the
    ``TVM_NUM_THREADS`` environment variable, else the core count the artifact was compiled for).
    """

    def __init__(
        self, artifact_dir: Path | str, history: int = 1, check_module: bool = True, threads: int | None = None
    ) -> None:
        import tvm
        import tvm.runtime.vm  # noqa: F401  (a runtime-only `import tvm`, as on the device, does not load it)

        self.artifact_dir = Path(artifact_dir)
        self.manifest: Manifest = read_manifest(self.artifact_dir, check_module=check_module)
        self.device = _device(self.manifest.target["device"])
        module_path = (self.artifact_dir / self.manifest.module_file).resolve()  # dlopen needs a path with a dir
        try:
            module = tvm.runtime.load_module(str(module_path))
        except Exception as exc:
            first = one_line(exc)
            raise TsmDeployError(
                f"cannot load {module_path} (built for {self.manifest.target['arch']}/{self.manifest.target['device']}): {first}"
            ) from None
        threads = threads or _default_threads(self.manifest)
        if threads:
            set_threads(threads)
        self._vm = tvm.runtime.vm.VirtualMachine(module, self.device)
        self._main = self._vm["main"]
        self._history: deque[np.ndarray] = deque(maxlen=max(1, history))
        self._buffers: list = []
        self.reset()

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return self.manifest.frame.shape

    def reset(self) -> None:
        """Start a new stream: zero shift buffers (no past frame), empty logit history."""
        import tvm

        self._buffers = [
            tvm.runtime.tensor(np.zeros(spec.shape, dtype=spec.dtype), device=self.device)
            for spec in self.manifest.buffers
        ]
        self._history.clear()

    def prepare(self, frame: np.ndarray) -> np.ndarray:
        """uint8 HxWx3 RGB -> model input, or check and pass through an already prepared tensor."""
        if frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3:
            return prepare_frame(frame, self.manifest.preprocess)
        expected = self.frame_shape
        if frame.shape == expected[1:]:
            frame = frame[None]
        if frame.shape != expected or frame.dtype != np.float32:
            raise TsmDeployError(
                f"frame of shape {tuple(frame.shape)} ({frame.dtype}): expected an HxWx3 uint8 RGB frame "
                f"or a prepared float32 tensor of shape {expected}"
            )
        return np.ascontiguousarray(frame)

    def run_prepared(self, tensor: np.ndarray) -> np.ndarray:
        """One step on a prepared ``(1, 3, S, S)`` tensor; returns the logits ``(n_class,)``."""
        import tvm

        outputs = self._main(tvm.runtime.tensor(tensor, device=self.device), *self._buffers)
        if hasattr(outputs, "numpy"):  # a model without shift buffers returns the logits alone, not a tuple
            return outputs.numpy().reshape(-1)
        self._buffers = [outputs[i] for i in range(1, len(outputs))]
        return outputs[0].numpy().reshape(-1)

    def step(self, frame: np.ndarray) -> StepResult:
        logits = self.run_prepared(self.prepare(frame))
        self._history.append(logits)
        top1 = int(np.argmax(np.mean(self._history, axis=0)))
        labels = self.manifest.labels
        return StepResult(logits=logits, top1=top1, label=labels[top1] if labels else None)

    def buffers(self) -> list[np.ndarray]:
        """Copies of the current shift buffers (for verification; streaming never copies them)."""
        return [b.numpy() for b in self._buffers]
