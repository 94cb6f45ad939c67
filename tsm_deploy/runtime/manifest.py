"""The artifact format: ``manifest.json`` + the compiled module, one schema for both sides.

The compiler writes it, the runtime on the device reads it; so this module imports only the
standard library (no TVM, torch, onnx or numpy).

Artifact directory::

    manifest.json   format_version, model config, target, I/O (kind, names, shapes, dtypes, state
                    pairs or clip layout), preprocessing, labels, TVM version, module file + sha256
    module.so       the compiled Relax VM executable (weights included)

Format 2 says the I/O kind explicitly (``io``): a ``stream`` (frame in, logits out, state fed back)
or a ``clip`` (T frames at once). Format 1 artifacts (streams only, positional I/O) are still read.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import TsmDeployError

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST_NAME = "manifest.json"
DTYPES = ("float32", "float16", "uint8", "int8", "int32", "int64")
FRAME_FORMATS = ("prepared", "rgb_uint8")  # what the frame/clip input takes
STATE_LAYOUTS = ("NCHW", "NHWC")  # the shift buffers' layout inside the module (users always see NCHW)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _name(value: Any, what: str) -> str:
    _require(isinstance(value, str) and value != "", f"{what} must be a non-empty string, got {value!r}")
    return value


def _positive_int(value: Any, what: str) -> int:
    _require(isinstance(value, int) and not isinstance(value, bool) and value > 0,
             f"{what} must be a positive integer, got {value!r}")
    return value


def _mapping(value: Any, what: str) -> dict[str, Any]:
    _require(isinstance(value, dict), f"{what} must be an object, got {type(value).__name__}")
    return value


def _shape(shape: Any, what: str) -> tuple[int, ...]:
    _require(isinstance(shape, list), f"{what} must be a list, got {shape!r}")
    _require(len(shape) > 0, f"{what} must not be empty")
    return tuple(_positive_int(d, f"dimension in {what}") for d in shape)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    @classmethod
    def from_dict(cls, data: Any) -> "TensorSpec":
        data = _mapping(data, "tensor spec")
        name = _name(data.get("name"), "tensor name")
        dims = _shape(data.get("shape"), f"shape of {name}")
        dtype = data.get("dtype", "float32")
        _require(dtype in DTYPES, f"dtype of {name} must be one of {', '.join(DTYPES)}, got {dtype!r}")
        return cls(name=name, shape=dims, dtype=dtype)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class StreamIO:
    """One frame per call; each ``state`` pair's output is fed to its input on the next call, or, with
    ``state_in_place``, the call updates the state inputs itself and returns the logits only (the
    outputs named in ``state`` are then not among the module's outputs)."""

    frame: str
    logits: str
    state: tuple[tuple[str, str], ...]  # (output name, input name)
    state_layout: str = "NCHW"
    frame_format: str = "prepared"  # "rgb_uint8": the frame goes in raw, preprocessing is compiled in
    # non-empty: the one state tensor (1, total) packs these buffers' elements in turn, each of this
    # shape in state_layout (the model's buffers, in order)
    state_parts: tuple[tuple[int, ...], ...] = ()
    state_in_place: bool = False
    kind: str = field(default="stream", init=False)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "frame": self.frame, "logits": self.logits,
                "state": [{"output": o, "input": i} for o, i in self.state],
                "state_layout": self.state_layout, "state_parts": [list(p) for p in self.state_parts],
                "state_in_place": self.state_in_place, "frame_format": self.frame_format}


@dataclass(frozen=True)
class ClipIO:
    """``segments`` frames at once in one input of the given layout (``NTCHW``: (1, T, 3, S, S))."""

    clip: str
    logits: str
    segments: int
    layout: str = "NTCHW"
    frame_format: str = "prepared"
    kind: str = field(default="clip", init=False)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "clip": self.clip, "logits": self.logits, "segments": self.segments,
                "layout": self.layout, "frame_format": self.frame_format}


def _io_from_dict(data: Any) -> StreamIO | ClipIO:
    data = _mapping(data, "io")
    kind = data.get("kind")
    frame_format = data.get("frame_format", "prepared")
    _require(frame_format in FRAME_FORMATS, f"io.frame_format must be one of {FRAME_FORMATS}, got {frame_format!r}")
    if kind == "stream":
        state = data.get("state")
        _require(isinstance(state, list), "io.state must be a list")
        pairs = tuple(
            (_name(_mapping(s, "state pair").get("output"), "state output"), _name(s.get("input"), "state input"))
            for s in state
        )
        layout = data.get("state_layout", "NCHW")
        _require(layout in STATE_LAYOUTS, f"io.state_layout must be one of {STATE_LAYOUTS}, got {layout!r}")
        parts = data.get("state_parts", [])
        _require(isinstance(parts, list), "io.state_parts must be a list of shapes")
        in_place = data.get("state_in_place", False)
        _require(isinstance(in_place, bool), "io.state_in_place must be true or false")
        return StreamIO(_name(data.get("frame"), "io.frame"), _name(data.get("logits"), "io.logits"), pairs,
                        layout, frame_format, tuple(_shape(p, "io.state_parts entry") for p in parts), in_place)
    if kind == "clip":
        return ClipIO(_name(data.get("clip"), "io.clip"), _name(data.get("logits"), "io.logits"),
                      _positive_int(data.get("segments"), "io.segments"), _name(data.get("layout", "NTCHW"), "io.layout"),
                      frame_format)
    raise ValueError(f"io.kind must be 'stream' or 'clip', got {kind!r}")


class _Section(dict):
    """A manifest section: the JSON object it was read from (a dict, as written), with typed properties."""

    def to_dict(self) -> dict[str, Any]:
        return dict(self)


class TargetSection(_Section):
    """What the module was built for: ``name``, ``device`` (cpu | cuda), ``arch`` (the host code's
    machine), ``tvm_target`` and its ``host``."""

    @property
    def name(self) -> str:
        return self["name"]

    @property
    def device(self) -> str:
        return self["device"]

    @property
    def arch(self) -> str:
        return self["arch"]

    @property
    def tvm_target(self) -> dict[str, Any]:
        return dict(self.get("tvm_target") or {})

    @property
    def host(self) -> dict[str, Any] | None:
        return self.get("host")


class ModelSection(_Section):
    """The model compiled: its config (``arch``, ``n_class``, ``input_size``... as the compiler's
    ModelConfig has them) and the checkpoint it came from (``checkpoint_sha256``, ``source``)."""

    CHECKPOINT_KEYS = ("checkpoint_sha256", "source")

    @property
    def arch(self) -> str | None:
        return self.get("arch")

    @property
    def n_class(self) -> int | None:
        return self.get("n_class")

    @property
    def input_size(self) -> int | None:
        return self.get("input_size")

    @property
    def checkpoint_sha256(self) -> str | None:
        return self.get("checkpoint_sha256")

    @property
    def source(self) -> str | None:
        return self.get("source")

    def config(self) -> dict[str, Any]:
        """The model config alone (without where the checkpoint came from)."""
        return {k: v for k, v in self.items() if k not in self.CHECKPOINT_KEYS}


@dataclass(frozen=True)
class Manifest:
    model: ModelSection  # ModelConfig fields + checkpoint source/sha256 (a dict is wrapped)
    target: TargetSection  # name, device, arch, tvm_target, host (a dict is wrapped)
    inputs: tuple[TensorSpec, ...]  # in call order
    outputs: tuple[TensorSpec, ...]  # in result order
    io: StreamIO | ClipIO
    preprocess: dict[str, Any]
    module_file: str
    module_sha256: str
    tvm_version: str
    tsm_deploy_version: str
    labels: tuple[str, ...] | None = None
    tuning: dict[str, Any] = field(default_factory=dict)
    task: dict[str, Any] | None = None  # what the model was trained for: frame rate, clip length...
    quantization: dict[str, Any] | None = None  # int8 artifacts: the calibration's scales; None: fp32
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.model, ModelSection):
            object.__setattr__(self, "model", ModelSection(self.model))
        if not isinstance(self.target, TargetSection):
            object.__setattr__(self, "target", TargetSection(self.target))

    @property
    def kind(self) -> str:
        return self.io.kind

    @property
    def precision(self) -> str:
        return "int8" if self.quantization else "fp32"

    def input(self, name: str) -> TensorSpec:
        return next(spec for spec in self.inputs if spec.name == name)

    def output_index(self, name: str) -> int:
        return next(i for i, spec in enumerate(self.outputs) if spec.name == name)

    @property
    def frame(self) -> TensorSpec:
        """The frame (stream) or clip input."""
        return self.input(self.io.frame if isinstance(self.io, StreamIO) else self.io.clip)

    @property
    def state(self) -> tuple[tuple[str, str], ...]:
        return self.io.state if isinstance(self.io, StreamIO) else ()

    @property
    def buffers(self) -> tuple[TensorSpec, ...]:
        """The state inputs (shift buffers) of a stream, in state-pair order; () for a clip."""
        return tuple(self.input(i) for _, i in self.state)

    def to_json(self) -> str:
        data = {
            "format_version": self.format_version,
            "model": self.model.to_dict(),
            "target": self.target.to_dict(),
            "io": self.io.to_dict(),
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "preprocess": self.preprocess,
            "labels": list(self.labels) if self.labels else None,
            "task": self.task,
            "tvm_version": self.tvm_version,
            "tsm_deploy_version": self.tsm_deploy_version,
            "module": {"file": self.module_file, "sha256": self.module_sha256},
            "tuning": self.tuning,
            "precision": self.precision,
            "quantization": self.quantization,
        }
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = "manifest") -> "Manifest":
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise TsmDeployError(f"{where}: not valid JSON ({getattr(exc, 'msg', type(exc).__name__)})") from None
        version = data.get("format_version") if isinstance(data, dict) else None
        if version not in READABLE_VERSIONS or isinstance(version, bool):
            raise TsmDeployError(
                f"{where}: artifact format {version!r} is not supported (this runtime reads {READABLE_VERSIONS})"
            )
        try:
            return cls._from_dict(data, version)
        except (KeyError, TypeError, ValueError, AttributeError, StopIteration) as exc:
            detail = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc) or type(exc).__name__
            raise TsmDeployError(f"{where}: malformed manifest ({' '.join(detail.split())})") from None

    @classmethod
    def _from_dict(cls, data: dict[str, Any], version: int) -> "Manifest":
        inputs = tuple(TensorSpec.from_dict(t) for t in _list(data["inputs"], "inputs"))
        outputs = tuple(TensorSpec.from_dict(t) for t in _list(data["outputs"], "outputs"))
        _require(inputs and outputs, "a model needs inputs and outputs")
        if version == 1:  # streams only: frame first, logits first, state pairs listed
            state = tuple((s["output"], s["input"]) for s in _list(data["state"], "state"))
            io: StreamIO | ClipIO = StreamIO(inputs[0].name, outputs[0].name, state)
        else:
            io = _io_from_dict(data["io"])
        target = _mapping(data["target"], "target")
        for key in ("name", "device", "arch"):
            _name(target.get(key), f"target.{key}")
        for key in ("tvm_target", "host"):
            _require(target.get(key) is None or isinstance(target.get(key), dict), f"target.{key} must be an object")
        module = _mapping(data["module"], "module")
        labels = data.get("labels")
        _require(labels is None or isinstance(labels, list) and all(isinstance(x, str) for x in labels),
                 "labels must be a list of strings")
        manifest = cls(
            model=_mapping(data["model"], "model"),
            target=target,
            inputs=inputs,
            outputs=outputs,
            io=io,
            preprocess=_check_preprocess(data["preprocess"]),
            module_file=_name(module.get("file"), "module.file"),
            module_sha256=_name(module.get("sha256"), "module.sha256"),
            tvm_version=_name(data["tvm_version"], "tvm_version"),
            tsm_deploy_version=_name(data["tsm_deploy_version"], "tsm_deploy_version"),
            labels=tuple(labels) if labels else None,
            tuning=_mapping(data.get("tuning") or {}, "tuning"),
            task=_mapping(data["task"], "task") if data.get("task") is not None else None,
            quantization=_mapping(data["quantization"], "quantization") if data.get("quantization") else None,
            format_version=version,
        )
        _check_consistent(manifest)
        return manifest


def _list(value: Any, what: str) -> list[Any]:
    _require(isinstance(value, list), f"{what} must be a list, got {type(value).__name__}")
    return value


def _check_preprocess(value: Any) -> dict[str, Any]:
    pre = _mapping(value, "preprocess")
    _positive_int(pre.get("crop"), "preprocess.crop")
    _positive_int(pre.get("resize_short"), "preprocess.resize_short")
    for key in ("mean", "std"):
        vals = pre.get(key)
        _require(isinstance(vals, list) and len(vals) == 3 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals),
                 f"preprocess.{key} must be three numbers")
    _require(all(v != 0 for v in pre["std"]), "preprocess.std must not be zero")
    _require(isinstance(pre.get("scale"), (int, float)) and not isinstance(pre.get("scale"), bool), "preprocess.scale must be a number")
    return pre


def _check_consistent(m: Manifest) -> None:
    """Every name the I/O section uses exists, with the shapes the runtime will allocate."""
    in_names = [t.name for t in m.inputs]
    out_names = [t.name for t in m.outputs]
    _require(len(set(in_names)) == len(in_names) and len(set(out_names)) == len(out_names), "duplicate tensor names")
    _require(m.io.logits in out_names, f"io.logits {m.io.logits!r} is not an output")
    frame = m.io.frame if isinstance(m.io, StreamIO) else m.io.clip
    _require(frame in in_names, f"the frame/clip input {frame!r} is not an input")
    in_place = isinstance(m.io, StreamIO) and m.io.state_in_place
    for out, inp in m.state:
        if in_place:  # the output names the next state, which the call writes into the input
            _require(inp in in_names, f"state pair {out!r} -> {inp!r} names an unknown tensor")
            _require(out not in out_names, f"state pair {out!r} -> {inp!r}: updated in place, but {out!r} is returned")
            continue
        _require(out in out_names and inp in in_names, f"state pair {out!r} -> {inp!r} names an unknown tensor")
        _require(m.outputs[out_names.index(out)].shape == m.input(inp).shape, f"state pair {out!r} -> {inp!r}: shapes differ")
    if isinstance(m.io, StreamIO) and m.io.state_parts:
        total = sum(math.prod(p) for p in m.io.state_parts)
        _require(len(m.state) == 1 and all(len(p) == 4 for p in m.io.state_parts)
                 and m.buffers[0].shape == (1, total),
                 f"io.state_parts: one state tensor of shape [1, {total}] packing 4-D parts expected")
    elif isinstance(m.io, StreamIO) and m.io.state_layout == "NHWC":
        _require(all(len(s.shape) == 4 for s in m.buffers), "io.state_layout NHWC needs 4-D state tensors")
    stated = {i for _, i in m.state} | {frame}
    _require(set(in_names) == stated, "every input must be the frame/clip or a state input")
    _require(m.frame.shape == _frame_shape(m), f"the {frame} input has shape {list(m.frame.shape)}, "
             f"expected {list(_frame_shape(m))} for this I/O kind and preprocessing")


def _frame_shape(m: Manifest) -> tuple[int, ...]:
    """What the frame/clip input must look like, from the I/O kind and the preprocessing."""
    crop = int(m.preprocess["crop"])
    clip = isinstance(m.io, ClipIO)
    if m.io.frame_format == "rgb_uint8":
        height, width = m.frame.shape[-3:-1] if len(m.frame.shape) >= 3 else (0, 0)
        return ((m.io.segments,) if clip else ()) + (height, width, 3)
    return (1, m.io.segments, 3, crop, crop) if clip else (1, 3, crop, crop)


def check_runs_here(manifest: Manifest, artifact_dir: Path | str, hint: str) -> None:
    """Refuse, in one line, an artifact whose host code is for another machine (dlopen would fail
    with a cryptic message); ``hint`` says what to do instead."""
    here = platform.machine()
    target = manifest.target
    if target.arch != here:
        raise TsmDeployError(f"{artifact_dir} is built for {target.name} ({target.arch}), not this {here} machine: {hint}")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(artifact_dir: Path | str, check_module: bool = True) -> Manifest:
    """Read and validate an artifact's manifest; with ``check_module``, the module's sha256 too."""
    artifact_dir = Path(artifact_dir)
    path = artifact_dir / MANIFEST_NAME
    if not artifact_dir.is_dir():
        raise TsmDeployError(f"artifact not found: {artifact_dir} is not a directory")
    if not path.is_file():
        raise TsmDeployError(f"{artifact_dir} is not a tsm-deploy artifact (no {MANIFEST_NAME})")
    try:
        text = path.read_text()
    except (UnicodeDecodeError, OSError) as exc:
        raise TsmDeployError(f"{path}: unreadable ({type(exc).__name__})") from None
    manifest = Manifest.from_json(text, str(path))
    if check_module:
        module = artifact_dir / manifest.module_file
        if Path(manifest.module_file).name != manifest.module_file:
            raise TsmDeployError(f"{path}: module file {manifest.module_file!r} must be a plain file name")
        if not module.is_file():
            raise TsmDeployError(f"artifact {artifact_dir}: module file {manifest.module_file} is missing")
        if sha256_file(module) != manifest.module_sha256:
            raise TsmDeployError(
                f"artifact {artifact_dir}: {manifest.module_file} does not match the sha256 in the manifest "
                "(modified or corrupted; recompile)"
            )
    return manifest
