"""The host side of the ncnn and ExecuTorch peers: converting a stream model into what they load.

- **ncnn**: the model traced to TorchScript, converted by pnnx (PyPI's x86-64 wheel holds one
  static ``pnnx`` program) into ``.ncnn.param`` + ``.ncnn.bin``, fp32 weights (``fp16=0``).
- **ExecuTorch + XNNPACK**: ``torch.export`` here (the host's torch), then ExecuTorch's
  ``to_edge_transform_and_lower`` with the XNNPACK partitioner in a child process
  (``executorch_lower.py``) that sees ExecuTorch's x86-64 wheel and the few pure-Python modules
  its exporter imports; the child writes the ``.pte`` and which operators stayed outside XNNPACK.

The converters' wheels are fetched once (pinned below) and unpacked into the cache, never installed
into the host's environment. Converted models are cached by the model's content (structure,
weights, input shapes) and the converter's version, next to an ``.io.json`` naming the inputs (with
shapes) and outputs (with shapes) in the order the converted model numbers them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import CheckFailed, TsmDeployError
from ..support.tools import Progress, atomic_cache_entry, report, resolve_cache_dir

__all__ = ["EXECUTORCH_HOST", "PNNX_VERSION", "fetch_wheel", "io_path", "lower_executorch", "ncnn_model", "read_io"]

PNNX_VERSION = "20261020"
# ExecuTorch's exporter (x86-64 wheel, its torch: the host's 2.13) and what its import of
# exir + the XNNPACK partitioner needs that the host's environment lacks; nothing else of its
# Requires-Dist is imported on that path.
EXECUTORCH_HOST = ("executorch==1.5.1", "torchao==0.18.0", "ruamel.yaml==0.19.1", "pyyaml==6.0.4", "tabulate==0.10.0")
LOWER_SCRIPT = Path(__file__).resolve().with_name("executorch_lower.py")
CONVERT_TIMEOUT_S = 1200.0


def fetch_wheel(requirement: str, wheel_dir: Path, progress: Progress | None, *, python_version: str,
                platforms: Sequence[str] = ()) -> Path:
    """The wheel of `requirement` ("name==version") for `platforms` (empty: this host), downloaded once
    into `wheel_dir` (one folder per platform)."""
    name, version = requirement.split("==")
    stem = f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}-"
    cached = sorted(p for p in wheel_dir.glob("*.whl") if p.name.lower().startswith(stem))
    if cached:
        return cached[0]
    where = ", ".join(platforms) if platforms else "this host"
    report(progress, f"downloading {requirement} for {where} (cached after the first run)")
    wheel_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=wheel_dir) as tmp:
        argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", tmp,
                "--quiet", "--disable-pip-version-check"]
        if platforms:
            argv += ["--python-version", python_version, "--implementation", "cp"]
            for tag in platforms:
                argv += ["--platform", tag]
        proc = subprocess.run([*argv, requirement], capture_output=True, text=True, check=False)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            last = proc.stderr.strip().splitlines()[-1:] or ["no wheel"]
            raise TsmDeployError(f"no wheel of {requirement} for {where} on the package index: {last[0]}")
        final = wheel_dir / wheels[0].name
        os.replace(wheels[0], final)  # same directory tree: atomic, never a half-downloaded wheel
    return final


def io_path(model: Path) -> Path:
    return model.with_name(model.name + ".io.json")


def read_io(model: Path) -> dict[str, Any]:
    return json.loads(io_path(Path(model)).read_text())


def ncnn_model(model, cache_dir: Path | None = None, progress: Progress | None = None) -> Path:
    """`model` (a stream nn.Module) as ncnn's ``model.ncnn.param`` (+ ``.bin``, ``.io.json``); cached."""
    import torch

    model = model.eval()
    shapes = model.input_shapes()
    final = _model_cache(cache_dir) / f"ncnn-pnnx{PNNX_VERSION}-{model_key(model)}"
    param = final / "model.ncnn.param"
    if param.is_file():
        return param
    pnnx = _pnnx_program(cache_dir, progress)
    report(progress, f"converting the model to ncnn with pnnx {PNNX_VERSION}")
    with atomic_cache_entry(final) as tmp:
        example = tuple(torch.zeros(shape) for shape in shapes.values())
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            traced = torch.jit.trace(model, example)
            torch.jit.save(traced, str(tmp / "model.pt"))
            outputs = model(*example)
        shape_arg = ",".join("[" + ",".join(str(d) for d in shape) + "]" for shape in shapes.values())
        names = {key: tmp / f"model.{key}" for key in ("ncnn.param", "ncnn.bin", "pnnx.param", "pnnx.bin")}
        argv = [str(pnnx), str(tmp / "model.pt"), f"inputshape={shape_arg}", "fp16=0",
                f"ncnnparam={names['ncnn.param']}", f"ncnnbin={names['ncnn.bin']}",
                f"pnnxparam={names['pnnx.param']}", f"pnnxbin={names['pnnx.bin']}",
                f"pnnxpy={tmp / 'model_pnnx.py'}", f"ncnnpy={tmp / 'model_ncnn.py'}",
                f"pnnxonnx={tmp / 'model.pnnx.onnx'}"]
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=tmp, check=False, timeout=CONVERT_TIMEOUT_S)
        if proc.returncode != 0 or not names["ncnn.param"].is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
            raise CheckFailed(f"pnnx {PNNX_VERSION} could not convert the model: {tail[0]}")
        _check_ncnn_layers(names["ncnn.param"])
        for extra in ("model.pt", "model.pnnx.param", "model.pnnx.bin", "model_pnnx.py", "model_ncnn.py",
                      "model.pnnx.onnx"):
            (tmp / extra).unlink(missing_ok=True)
        _write_io(tmp / "model.ncnn.param", shapes, model.output_names(), outputs,
                  {"converter": f"pnnx {PNNX_VERSION}", "precision": "fp32 weights (fp16=0)"})
    return param


def lower_executorch(model, cache_dir: Path | None = None, progress: Progress | None = None) -> Path:
    """`model` as an ExecuTorch program (``model.pte``) delegated to XNNPACK; cached. Its ``.io.json``
    has ``delegation``: the XNNPACK partitions and the operators left outside them."""
    import torch

    model = model.eval()
    shapes = model.input_shapes()
    version = EXECUTORCH_HOST[0].split("==")[1]
    lowering = hashlib.sha256(LOWER_SCRIPT.read_bytes()).hexdigest()[:8]  # a new lowering is a new entry
    final = _model_cache(cache_dir) / f"executorch{version}-xnnpack{lowering}-{model_key(model)}"
    pte = final / "model.pte"
    if pte.is_file():
        return pte
    site = _host_site("executorch-export", EXECUTORCH_HOST, cache_dir, progress)
    report(progress, f"lowering the model to ExecuTorch {version} with the XNNPACK partitioner")
    with atomic_cache_entry(final) as tmp:
        example = tuple(torch.zeros(shape) for shape in shapes.values())
        with torch.no_grad():
            program = torch.export.export(model, example)
            outputs = model(*example)
        torch.export.save(program, str(tmp / "model.pt2"))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        argv = [sys.executable, str(LOWER_SCRIPT), "--program", str(tmp / "model.pt2"), "--out", str(pte.name),
                "--report", "delegation.json"]
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=tmp, env=env, check=False,
                              timeout=CONVERT_TIMEOUT_S)
        if proc.returncode != 0 or not (tmp / "model.pte").is_file():
            tail = [line for line in (proc.stderr or "").strip().splitlines() if line.strip()][-1:] or \
                [f"exit code {proc.returncode}"]
            raise CheckFailed(f"ExecuTorch {version} could not lower the model: {tail[0]}")
        delegation = json.loads((tmp / "delegation.json").read_text())
        (tmp / "model.pt2").unlink()
        (tmp / "delegation.json").unlink()
        _write_io(tmp / "model.pte", shapes, model.output_names(), outputs,
                  {"converter": f"executorch {version}", "delegation": delegation})
    return pte


def model_key(model) -> str:
    """Content key of a stream model: its module structure, weights and input shapes."""
    digest = hashlib.sha256(repr(model).encode())
    digest.update(repr(sorted(model.input_shapes().items())).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def _write_io(model_file: Path, shapes: dict, output_names: list[str], outputs: Any, extra: dict) -> None:
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    io = {"inputs": [[name, list(shape), "float32"] for name, shape in shapes.items()],
          "outputs": list(output_names), "output_shapes": [list(o.shape) for o in outputs], **extra}
    io_path(model_file).write_text(json.dumps(io, indent=1))


def _check_ncnn_layers(param: Path) -> None:
    """Every layer of the converted graph is one of ncnn's own (pnnx leaves an operator it cannot map
    under its TorchScript or pnnx name, which ncnn cannot run)."""
    layers = [line.split()[0] for line in param.read_text().splitlines()[2:] if line.strip()]
    foreign = sorted({t for t in layers if "." in t})
    if foreign:
        raise CheckFailed(f"pnnx left operators ncnn has no layer for: {', '.join(foreign)}")


def _model_cache(cache_dir: Path | None) -> Path:
    return resolve_cache_dir(cache_dir) / "peers" / "models"


def _pnnx_program(cache_dir: Path | None, progress: Progress | None) -> Path:
    site = _host_site("pnnx", (f"pnnx=={PNNX_VERSION}",), cache_dir, progress)
    program = site / "pnnx" / "pnnx"
    program.chmod(0o755)
    return program


def _host_site(name: str, requirements: Sequence[str], cache_dir: Path | None, progress: Progress | None) -> Path:
    """The host (x86-64) wheels of `requirements` unpacked into one cached folder (a PYTHONPATH entry)."""
    cache = resolve_cache_dir(cache_dir) / "peers"
    key = hashlib.sha256("\n".join(requirements).encode()).hexdigest()[:10]
    final = cache / f"host-{name}-{key}"
    if (final / "site").is_dir():
        return final / "site"
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    wheels = [fetch_wheel(req, cache / "host-wheels", progress, python_version=python) for req in requirements]
    with atomic_cache_entry(final) as tmp:
        for wheel in wheels:
            report(progress, f"unpacking {wheel.name}")
            with zipfile.ZipFile(wheel) as zf:
                zf.extractall(tmp / "site")
        for binary in (tmp / "site").rglob("*"):
            if binary.is_file() and (binary.suffix == ".so" or ".so." in binary.name or binary.name == "pnnx"):
                binary.chmod(0o755)  # zipfile drops the mode bits pip would keep
    return final / "site"
