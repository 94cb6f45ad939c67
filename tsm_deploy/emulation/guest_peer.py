"""Guest side of a peer runtime: stream prepared frames through ONNX Runtime, ncnn, ExecuTorch (XNNPACK)
or PyTorch.

Runs *inside* the emulated device (Debian's python3.11 + numpy 1.24 under qemu-aarch64), so it
imports only the standard library, numpy and the peer runtime it drives: never tsm_deploy (run it
with ``python3 -P`` so this folder is not put on sys.path). The model is a streaming model: its
inputs are ``frame`` plus state inputs ``X`` and its outputs the logits plus ``next_X``; each frame's
``next_X`` is fed back as the following frame's ``X`` (zeros for the first frame).

Around each frame it can issue a marker system call, ``syscall(MARKER_NR, tag, frame_index)`` with
tag FRAME_BEGIN then FRAME_END, so an instruction-counting QEMU plugin can attribute guest
instructions to frames. An unknown system call number just returns -ENOSYS under qemu-user.

Writes ``--out`` (npz): ``frame_count``, ``logits_<i>``, ``state_<i>_<j>`` (the next-state outputs
of frame i in the model's output order), ``wall_s`` (per-frame wall time, emulated: meaningless as
latency), ``runtime``/``version``, ``state_names``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import time

import numpy as np

FRAME_BEGIN = 1
FRAME_END = 2
NEXT_PREFIX = "next_"
RUNTIMES = ("onnxruntime", "ncnn", "executorch", "torch")
RUNNER_LIBRARY = "tsm_et_runner/libtsm_et_runner.so"  # ExecuTorch's runner, in the peer's site directory


def make_marker(marker_nr: int | None):
    """``marker(tag, index)`` issuing the marker syscall, or a no-op without a number."""
    if marker_nr is None:
        return lambda tag, index: None
    syscall = ctypes.CDLL(None, use_errno=True).syscall
    syscall.restype = ctypes.c_long
    syscall.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_long]

    def marker(tag: int, index: int) -> None:
        syscall(marker_nr, tag, index)

    return marker


class OnnxRuntimePeer:
    """One ONNX Runtime CPU session; state inputs found by the ``next_`` naming convention."""

    def __init__(self, model_path: str, threads: int) -> None:
        import onnxruntime as ort

        self.version = ort.__version__
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Spinning worker threads would add instructions that depend on scheduling, not on the model.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name: (tuple(i.shape), _onnx_dtype(i.type)) for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self.output_names, feeds)


class TorchPeer:
    """A TorchScript module (traced on the host); its I/O names and shapes come from a JSON file."""

    def __init__(self, model_path: str, io_path: str, threads: int) -> None:
        import torch

        self.torch = torch
        self.version = torch.__version__
        torch.set_num_threads(threads)
        self.inputs, self.output_names, _ = _read_io(io_path)
        self.module = torch.jit.load(model_path, map_location="cpu").eval()

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with self.torch.no_grad():
            outputs = self.module(*(self.torch.from_numpy(feeds[name]) for name in self.inputs))
        if not isinstance(outputs, (tuple, list)):
            outputs = (outputs,)
        return [o.numpy() for o in outputs]


def _read_io(io_path: str) -> tuple[dict[str, tuple[tuple[int, ...], np.dtype]], list[str], list[tuple[int, ...]]]:
    """Inputs (name -> shape, dtype), output names and output shapes (when recorded) of a converted model."""
    with open(io_path) as f:
        io = json.load(f)
    inputs = {name: (tuple(shape), np.dtype(dtype)) for name, shape, dtype in io["inputs"]}
    return inputs, list(io["outputs"]), [tuple(s) for s in io.get("output_shapes", [])]


class NcnnPeer:
    """An ncnn net converted by pnnx: blobs ``in0..`` and ``out0..`` in the model's input and output
    order; fp32 throughout, CPU only (no Vulkan), ``threads`` threads."""

    def __init__(self, param_path: str, io_path: str, threads: int) -> None:
        import ncnn

        self.ncnn = ncnn
        self.version = ncnn.__version__
        self.inputs, self.output_names, self.output_shapes = _read_io(io_path)
        net = ncnn.Net()
        net.opt.use_vulkan_compute = False
        net.opt.num_threads = threads
        # fp32 like the other runtimes (ncnn would store weights and activations in fp16 where it can)
        net.opt.use_fp16_storage = net.opt.use_fp16_packed = net.opt.use_fp16_arithmetic = False
        net.opt.use_bf16_storage = False
        if net.load_param(param_path) != 0 or net.load_model(param_path[: -len(".param")] + ".bin") != 0:
            raise SystemExit(f"error: ncnn could not load {param_path}")
        self.net = net

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        ex = self.net.create_extractor()
        for i, name in enumerate(self.inputs):
            ex.input(f"in{i}", self.ncnn.Mat(np.ascontiguousarray(feeds[name][0])))  # ncnn blobs have no batch axis
        outputs = []
        for i, shape in enumerate(self.output_shapes):
            status, mat = ex.extract(f"out{i}")
            if status != 0:
                raise SystemExit(f"error: ncnn could not compute out{i} (status {status})")
            outputs.append(np.array(mat).reshape(shape))
        return outputs


class ExecuTorchPeer:
    """An ExecuTorch program (.pte, XNNPACK-delegated) run by the cross-built runner library through
    ctypes; inputs and outputs in the program's order, float32."""

    def __init__(self, model_path: str, io_path: str, threads: int, version: str) -> None:
        self.version = version
        self.inputs, self.output_names, self.output_shapes = _read_io(io_path)
        library = next((os.path.join(p, RUNNER_LIBRARY) for p in sys.path
                        if os.path.isfile(os.path.join(p, RUNNER_LIBRARY))), None)
        if library is None:
            raise SystemExit(f"error: {RUNNER_LIBRARY} is not on the guest's PYTHONPATH")
        lib = ctypes.CDLL(library)
        lib.tsm_et_load.restype = ctypes.c_void_p
        lib.tsm_et_load.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
        lib.tsm_et_io.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)]
        lib.tsm_et_input_nbytes.restype = lib.tsm_et_output_nbytes.restype = ctypes.c_long
        lib.tsm_et_input_nbytes.argtypes = lib.tsm_et_output_nbytes.argtypes = [ctypes.c_void_p, ctypes.c_int]
        pointers = ctypes.POINTER(ctypes.c_void_p)
        lib.tsm_et_run.argtypes = [ctypes.c_void_p, pointers, pointers, ctypes.c_char_p, ctypes.c_size_t]
        self.lib, self.error = lib, ctypes.create_string_buffer(512)
        self.handle = lib.tsm_et_load(model_path.encode(), threads, self.error, len(self.error))
        if not self.handle:
            raise SystemExit(f"error: ExecuTorch could not load {model_path}: {self.error.value.decode()}")
        n_in, n_out = ctypes.c_int(), ctypes.c_int()
        lib.tsm_et_io(self.handle, ctypes.byref(n_in), ctypes.byref(n_out))
        want_in = [int(np.prod(shape)) * 4 for shape, _ in self.inputs.values()]
        want_out = [int(np.prod(shape)) * 4 for shape in self.output_shapes]
        got_in = [lib.tsm_et_input_nbytes(self.handle, i) for i in range(n_in.value)]
        got_out = [lib.tsm_et_output_nbytes(self.handle, i) for i in range(n_out.value)]
        if got_in != want_in or got_out != want_out:
            raise SystemExit(f"error: the program's inputs/outputs ({got_in}, {got_out} bytes) are not the "
                             f"model's ({want_in}, {want_out})")

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        inputs = [np.ascontiguousarray(feeds[name], np.float32) for name in self.inputs]
        outputs = [np.empty(shape, np.float32) for shape in self.output_shapes]
        in_ptrs = (ctypes.c_void_p * len(inputs))(*[a.ctypes.data for a in inputs])
        out_ptrs = (ctypes.c_void_p * len(outputs))(*[a.ctypes.data for a in outputs])
        if self.lib.tsm_et_run(self.handle, in_ptrs, out_ptrs, self.error, len(self.error)) != 0:
            raise SystemExit(f"error: ExecuTorch run failed: {self.error.value.decode()}")
        return outputs


def _onnx_dtype(type_name: str) -> np.dtype:
    names = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(float16)": np.float16,
             "tensor(int64)": np.int64}
    if type_name not in names:
        raise SystemExit(f"error: unsupported ONNX input type {type_name}")
    return np.dtype(names[type_name])


def stream(peer, frames: np.ndarray, marker) -> tuple[list[list[np.ndarray]], list[float], list[str]]:
    """Run every frame, feeding each ``next_X`` output back into input ``X``."""
    names = list(peer.inputs)
    frame_name = names[0]
    state_outputs = [n for n in peer.output_names if n.startswith(NEXT_PREFIX)]
    missing = [n for n in state_outputs if n[len(NEXT_PREFIX):] not in peer.inputs]
    if missing:
        raise SystemExit(f"error: outputs {missing} have no matching state input")
    state = {n: np.zeros(shape, dtype) for n, (shape, dtype) in peer.inputs.items() if n != frame_name}
    frame_shape, frame_dtype = peer.inputs[frame_name]
    results, walls = [], []
    for index, frame in enumerate(frames):
        feeds = dict(state)
        feeds[frame_name] = np.ascontiguousarray(frame.reshape(frame_shape), dtype=frame_dtype)
        marker(FRAME_BEGIN, index)
        start = time.perf_counter()
        outputs = peer.run(feeds)
        walls.append(time.perf_counter() - start)
        marker(FRAME_END, index)
        by_name = dict(zip(peer.output_names, outputs))
        state = {n[len(NEXT_PREFIX):]: by_name[n] for n in state_outputs}
        results.append(outputs)
    return results, walls, state_outputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", choices=RUNTIMES, required=True)
    parser.add_argument("--model", required=True,
                        help="ONNX file (onnxruntime), TorchScript (torch), .ncnn.param (ncnn) or .pte (executorch)")
    parser.add_argument("--io", help="torch, ncnn, executorch: JSON with 'inputs' [[name, shape, dtype]...], "
                        "'outputs' [names] (and 'output_shapes')")
    parser.add_argument("--version", default="", help="executorch: the runtime's version (the library has none)")
    parser.add_argument("--frames", required=True, help=".npy of prepared frames, (N, 1, 3, S, S)")
    parser.add_argument("--out", required=True, help=".npz to write")
    parser.add_argument("--marker-nr", type=int, default=None, help="syscall number of the frame markers")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    if args.runtime != "onnxruntime" and not args.io:
        parser.error(f"--io is required with --runtime {args.runtime}")
    if args.runtime == "onnxruntime":
        peer = OnnxRuntimePeer(args.model, args.threads)
    elif args.runtime == "ncnn":
        peer = NcnnPeer(args.model, args.io, args.threads)
    elif args.runtime == "executorch":
        peer = ExecuTorchPeer(args.model, args.io, args.threads, args.version)
    else:
        peer = TorchPeer(args.model, args.io, args.threads)
    frames = np.load(args.frames)
    results, walls, state_names = stream(peer, frames, make_marker(args.marker_nr))

    arrays = {"frame_count": np.array(len(results)), "wall_s": np.array(walls),
              "runtime": np.array(args.runtime), "version": np.array(peer.version),
              "state_names": np.array(state_names), "output_names": np.array(peer.output_names)}
    state_set = set(state_names)
    for i, outputs in enumerate(results):
        by_name = dict(zip(peer.output_names, outputs))
        logits = [n for n in peer.output_names if n not in state_set]
        arrays[f"logits_{i}"] = by_name[logits[0]]
        for j, name in enumerate(state_names):
            arrays[f"state_{i}_{j}"] = by_name[name]
    tmp = args.out + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, args.out)  # the host never reads a half-written file
    print(f"{args.runtime} {peer.version}: {len(results)} frames, "
          f"wall (emulated) {', '.join(f'{w:.3f}' for w in walls)} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
