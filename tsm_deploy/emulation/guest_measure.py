"""Guest side of the instruction meter: runs in the emulated Raspberry Pi's Python (standard library,
numpy and the bundled runtime-only TVM only), under ``qemu-aarch64 -plugin meter.so``.

The host's meter plugin counts the guest instructions executed and, at each *marker* (a system call
with a number no kernel knows, ``syscall(MARKER, tag)``; the kernel answers ENOSYS), appends
``"<tag> <vcpu> <delta> <total>"`` to the counts file. This script sets markers around the work it
measures, then reads the file back to answer with counts.

What a count means:

* a compiled function (a MetaSchedule candidate, a fused kernel of a model): the markers are set
  from C by the guest helper (``meter_plugin.c`` built with ``-DTSM_METER_GUEST``), around one
  ``TVMFFIFunctionCall``; the helper's own cost (measured with a call that does nothing) is
  subtracted. The count is the function's instructions plus tvm-ffi's dispatch (a few dozen), and
  repeated calls count the same, to the instruction.
* a frame (``StreamingModel.run_prepared``): markers from Python, ``mark(); statement; mark()``
  minus ``mark(); mark()``; the interpreter around them makes these agree to a few hundred
  instructions (of ~10^8 per frame), not exactly.

Two modes (``--counts FILE --helper LIB`` first):

* ``serve``: a measurement server. Reads JSON requests, one per line, on stdin:
  ``{"id": 1, "path": "/abs/candidate.so", "func": null, "args": [["TENSOR", "float32", [1, 8]], ...],
  "warmup": 1, "repeat": 1}`` (``func`` null = the module's entry function); answers one JSON line
  per request: ``{"id": 1, "ok": true, "counts": [n, ...]}`` or ``{"id": 1, "ok": false, "error": "..."}``.
  Arguments are allocated once per request (random floats, zero integers: indices stay in bounds).
  One long-lived process measures many candidates (Python and TVM start-up is ~3.4 G instructions).
* ``artifact DIR --frames N [--per-function]``: streams N seeded frames through the artifact's
  ``StreamingModel.run_prepared`` (a clip artifact: N seeded clips through ``ClipModel.predict``)
  with markers around each; prints one JSON object with the start-up count, the per-frame (per-clip)
  counts and (optionally) per-function counts.

Only this script's protocol lines go to the real stdout; anything else printed (by Python or by
native code) is sent to stderr.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import sys
import traceback

MARKER_SYSCALL = 0x7A5D  # must match tsm_deploy.emulation.meter.MARKER_SYSCALL
_VM_BUILTIN_PREFIXES = ("vm.", "relax.", "runtime.")


class Meter:
    """Issues markers and reads their counts back from the plugin's counts file."""

    def __init__(self, counts_path: str) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._syscall = libc.syscall
        self._syscall.restype = ctypes.c_long
        self._syscall.argtypes = (ctypes.c_long, ctypes.c_long)
        self._file = open(counts_path)
        self._tag = 0
        self._seen: dict[int, tuple[int, int]] = {}
        self.overhead = 0
        # everything before the first marker: Python start-up, imports, whatever the caller loaded
        self.startup = self.counts_of(self.mark())[1]
        self.mark()  # warm the path once (ctypes caches, first-call effects), then measure it
        self.overhead = self._calibrate()

    def mark(self) -> int:
        """Issue a marker; returns its tag (its count is read later, by counts())."""
        self._tag += 1
        self._syscall(MARKER_SYSCALL, self._tag)
        return self._tag

    def reserve(self, n: int) -> int:
        """The first of ``n`` fresh tags, for markers set by the C helper."""
        first = self._tag + 1
        self._tag += n
        return first

    def counts(self) -> dict[int, tuple[int, int]]:
        """Tag -> (instructions since the previous marker, instructions since start)."""
        for line in self._file:
            fields = line.split()
            if len(fields) == 4 and fields[0].isdigit():
                self._seen[int(fields[0])] = (int(fields[2]), int(fields[3]))
        return self._seen

    def counts_of(self, tag: int) -> tuple[int, int]:
        """(delta, total) of marker ``tag``; forgets it and every earlier tag (read in order)."""
        seen = self.counts()
        if tag not in seen:
            raise RuntimeError(f"marker {tag} missing from the counts file (is the meter plugin loaded?)")
        value = seen[tag]
        for old in [t for t in seen if t <= tag]:
            del seen[old]
        return value

    def delta(self, tag: int) -> int:
        """Instructions between marker ``tag`` and the one before it."""
        return self.counts_of(tag)[0]

    def _calibrate(self) -> int:
        """Instructions of ``mark(); mark()``: the marker's own path (ctypes call and return).

        Repeats agree to a few hundred instructions, not exactly (the interpreter's allocator state
        differs from one to the next): the smallest of several is the marker's cost."""
        mark = self.mark
        tags = []
        gc.collect()
        gc.disable()
        try:
            for _ in range(8):
                mark()
                tags.append(mark())
        finally:
            gc.enable()
        return min([self.delta(t) for t in tags])


class _FfiAny(ctypes.Structure):
    """tvm-ffi's TVMFFIAny (16 bytes): type index, padding, value (here an object handle)."""

    _fields_ = [("type_index", ctypes.c_int32), ("padding", ctypes.c_uint32), ("value", ctypes.c_uint64)]


_FFI_TENSOR = 70  # kTVMFFITensor in tvm-ffi's C API (c_api.h)


class CallMeter:
    """Exact instructions of calls of compiled TVM functions, markers set from C (meter_plugin.c
    built for the guest): between the two markers only the call runs, through TVMFFIFunctionCall,
    so repeated calls count the same, to the instruction."""

    def __init__(self, meter: Meter, helper_path: str) -> None:
        import tvm_ffi

        self.meter = meter
        self._lib = ctypes.CDLL(os.path.abspath(helper_path))
        self._lib.tsm_meter_calls.restype = ctypes.c_int
        self._lib.tsm_meter_calls.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32,
                                              ctypes.c_long, ctypes.c_long, ctypes.c_int32)
        self._lib.tsm_meter_empty.argtypes = (ctypes.c_long, ctypes.c_long)
        ffi_lib = os.path.join(os.path.dirname(tvm_ffi.__file__), "lib", "libtvm_ffi.so")
        self._call = ctypes.cast(ctypes.CDLL(ffi_lib).TVMFFIFunctionCall, ctypes.c_void_p)
        tags = []
        for _ in range(3):
            tag = meter.reserve(2)
            self._lib.tsm_meter_empty(MARKER_SYSCALL, tag)
            tags.append(tag + 1)
        empty = {meter.delta(t) for t in tags}  # in order: delta() forgets earlier tags
        if len(empty) != 1:
            raise RuntimeError(f"the C markers' own cost is not constant: {sorted(empty)}")
        self.overhead = empty.pop()

    def calls(self, func, tensors, repeat: int) -> list[int]:
        """Instructions of each of ``repeat`` calls ``func(*tensors)`` (tvm_ffi Function, Tensors)."""
        args = (_FfiAny * max(1, len(tensors)))()
        for i, t in enumerate(tensors):
            args[i].type_index, args[i].value = _FFI_TENSOR, t.__chandle__()
        tag = self.meter.reserve(2 * repeat)
        status = self._lib.tsm_meter_calls(self._call, func.__chandle__(), args, len(tensors),
                                           MARKER_SYSCALL, tag, repeat)
        if status != 0:
            func(*tensors)  # raises the call's error with its message
            raise RuntimeError(f"the call failed (status {status})")
        return [self.meter.delta(tag + 2 * r + 1) - self.overhead for r in range(repeat)]


def _protocol_stdout():
    """A private copy of stdout for protocol lines; fd 1 then points at stderr."""
    fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(fd, "w", buffering=1)


def _argument(np, tvm, rng, dtype: str, shape: list[int], device):
    try:
        np_dtype = np.dtype(dtype)
    except TypeError:  # a dtype numpy lacks (bfloat16...): uninitialised, the count does not depend on it
        return tvm.runtime.empty(shape, dtype, device)
    if np_dtype.kind == "f":
        array = rng.standard_normal(shape).astype(np_dtype)
    else:
        array = np.zeros(shape, dtype=np_dtype)  # integer/bool arguments are often indices: keep them in bounds
    return tvm.runtime.tensor(array, device=device)


def _entry_function(module, name):
    if name:
        return module[name]
    for candidate in (getattr(module, "entry_name", None), "main", "__tvm_main__", "default_function"):
        if candidate:
            try:
                func = module.get_function(candidate)
            except Exception:  # not this name
                continue
            if func is not None:
                return func
    raise RuntimeError("the module has no entry function (main / __tvm_main__)")


def _measure_call(calls: CallMeter, func, args, warmup: int, repeat: int) -> list[int]:
    for _ in range(warmup):  # lazy symbol binding, workspace pools, thread pool start: not the kernel
        func(*args)
    return calls.calls(func, args, repeat)


def serve(counts_path: str, helper_path: str) -> int:
    out = _protocol_stdout()
    import numpy as np
    import tvm
    import tvm.runtime

    calls = CallMeter(Meter(counts_path), helper_path)
    device = tvm.cpu(0)
    out.write(json.dumps({"ready": True, "marker_overhead": calls.overhead}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        request = {}
        try:
            request = json.loads(line)
            module = tvm.runtime.load_module(os.path.abspath(request["path"]))
            func = _entry_function(module, request.get("func"))
            rng = np.random.default_rng(int(request.get("seed", 0)))
            args = []
            for info in request["args"]:
                kind, dtype, shape = info
                if kind != "TENSOR":
                    raise ValueError(f"argument kind {kind!r} is not supported")
                args.append(_argument(np, tvm, rng, dtype, list(shape), device))
            counts = _measure_call(calls, func, args, int(request.get("warmup", 1)), int(request.get("repeat", 1)))
            answer = {"id": request.get("id"), "ok": True, "counts": counts}
        except Exception as exc:  # the host gets the error; this process stays up for the next request
            answer = {"id": request.get("id"), "ok": False, "error": f"{type(exc).__name__}: {exc}",
                      "traceback": traceback.format_exc(limit=4)}
        out.write(json.dumps(answer) + "\n")
    return 0


def _prepared_steps(model, count: int):
    """``count`` seeded prepared inputs for ``model`` and the call that runs one: frames through a
    stream model's ``run_prepared``, clips (T frames each) through a clip model's ``predict``."""
    from tsm_deploy.runtime import StreamingModel
    from tsm_deploy.runtime.preprocess import camera_frames

    if isinstance(model, StreamingModel):
        return [model.prepare(f) for f in camera_frames(count)], model.run_prepared
    frames = camera_frames(count * model.segments)
    return [model.prepare(frames[i * model.segments:(i + 1) * model.segments]) for i in range(count)], model.predict


def measure_artifact(counts_path: str, helper_path: str, artifact: str, frames: int, per_function: bool) -> int:
    out = _protocol_stdout()
    from tsm_deploy.runtime import load_model

    model = load_model(artifact, threads=1)
    meter = Meter(counts_path)
    prepared, run = _prepared_steps(model, frames)
    tags = []
    gc.collect()
    gc.disable()
    mark = meter.mark
    for x in prepared:
        mark()
        run(x)
        tags.append(mark())
    gc.enable()
    result = {
        "startup": meter.startup,  # Python, imports, the model's load
        "per_frame": [meter.delta(t) - meter.overhead for t in tags],
        "marker_overhead": meter.overhead,
    }
    if per_function:
        result["per_function"], result["calls"] = _per_function(CallMeter(meter, helper_path), model, run, prepared[-1])
    out.write(json.dumps(result) + "\n")
    return 0


def _vm_of(model):
    vm = getattr(model, "_vm", None)
    return vm if vm is not None else model._artifact._vm


def _per_function(calls: CallMeter, model, run, step) -> tuple[dict[str, int], dict[str, int]]:
    """One more step (``run(step)``) with the VM instrumented: before each call of a compiled function, the
    instrument calls it once more with the same arguments between markers (then lets the VM make
    its own call), so each count is exactly that call, as the tuning runner measures a candidate.
    VM builtins (allocation, shape checks) are not re-run: they have side effects."""
    import tvm
    from tvm.runtime.vm import VMInstrumentReturnKind

    per_function: dict[str, int] = {}
    n_calls: dict[str, int] = {}

    def instrument(func, name, before_run, ret_value, *args):
        name = str(name)
        if before_run and not name.startswith(_VM_BUILTIN_PREFIXES):
            if all(isinstance(a, tvm.runtime.Tensor) for a in args):
                count = calls.calls(func, list(args), 1)[0]
                per_function[name] = per_function.get(name, 0) + count
                n_calls[name] = n_calls.get(name, 0) + 1
        return int(VMInstrumentReturnKind.NO_OP)

    vm = _vm_of(model)
    vm.set_instrument(instrument)
    try:
        run(step)
    finally:
        vm.set_instrument(None)
    return per_function, n_calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="guest side of tsm-deploy's instruction meter")
    parser.add_argument("--counts", required=True, help="the meter plugin's out= file")
    parser.add_argument("--helper", required=True, help="meter_plugin.c built for the guest (-DTSM_METER_GUEST)")
    sub = parser.add_subparsers(dest="mode", required=True)
    sub.add_parser("serve")
    p_art = sub.add_parser("artifact")
    p_art.add_argument("artifact")
    p_art.add_argument("--frames", type=int, default=3)
    p_art.add_argument("--per-function", action="store_true")
    args = parser.parse_args(argv)
    if args.mode == "serve":
        return serve(args.counts, args.helper)
    return measure_artifact(args.counts, args.helper, args.artifact, args.frames, args.per_function)


if __name__ == "__main__":
    sys.exit(main())
