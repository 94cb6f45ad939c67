"""Checkpoint -> artifact: the shared pipeline (:func:`tsm_deploy.compiler.pipeline.prepare_module`), the
target's record libraries kernel by kernel (:mod:`tsm_deploy.compiler.records`), ``tvm.compile``,
the module linked for the target, the manifest.

GPU targets get TVM's default (dlight) schedules inside ``tvm.compile`` for what records do not cover.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import tvm

from .. import __version__
from ..checkpoint import LoadedCheckpoint
from ..errors import TsmDeployError
from ..models import preprocessing
from ..runtime.manifest import MANIFEST_NAME, ClipIO, Manifest, StreamIO, TensorSpec, sha256_file
from ..support.atomic import atomic_output_dir, atomic_write_text
from ..target.library import TARGET_RECORDS, RecordsSpec, libraries_for
from ..target.targets import DeployTarget
from .build import build_executable, export_module
from .passes.merge_shifts import merge_shifts_into_consumers
from .pipeline import ModelIO, prepare_module
from .records import TuningCoverage, apply_records

if TYPE_CHECKING:
    from ..quantize import QuantSpec

log = logging.getLogger(__name__)

MODULE_FILE = "module.so"


@dataclass(frozen=True)
class CompileResult:
    artifact: Path
    manifest: Manifest
    coverage: TuningCoverage


def manifest_io(io: ModelIO, checkpoint: LoadedCheckpoint) -> StreamIO | ClipIO:
    """The manifest's I/O section from the prepared model's interface."""
    inputs, outputs = list(io.inputs), list(io.outputs)
    frame_format = io.frame_format
    if io.kind == "clip":
        return ClipIO(clip=inputs[0], logits=outputs[0], segments=checkpoint.config.n_segment, frame_format=frame_format)
    state_inputs = {i for _, i in io.state}
    frame = next(name for name in inputs if name not in state_inputs)
    state_outputs = {o for o, _ in io.state}
    logits = next(name for name in outputs if name not in state_outputs)
    return StreamIO(frame=frame, logits=logits, state=io.state, state_layout=io.state_layout, frame_format=frame_format,
                    state_parts=io.state_parts, state_in_place=io.state_in_place)


def build_manifest(
    checkpoint: LoadedCheckpoint,
    target: DeployTarget,
    module_path: Path,
    io: ModelIO,
    coverage: TuningCoverage,
    labels: list[str] | None,
    task: dict[str, Any] | None = None,
    quantization: dict[str, Any] | None = None,
) -> Manifest:
    return Manifest(
        model={**checkpoint.config.to_dict(), "checkpoint_sha256": checkpoint.sha256, "source": checkpoint.source},
        target=target.to_manifest(),
        inputs=tuple(TensorSpec(name, shape, io.input_dtypes.get(name, "float32")) for name, shape in io.inputs.items()),
        outputs=tuple(TensorSpec(name, shape) for name, shape in io.outputs.items()),
        io=manifest_io(io, checkpoint),
        preprocess=preprocessing(checkpoint.config),
        module_file=module_path.name,
        module_sha256=sha256_file(module_path),
        tvm_version=tvm.__version__,
        tsm_deploy_version=__version__,
        labels=tuple(labels) if labels else None,
        tuning=coverage.to_dict(),
        task=task,
        quantization=quantization,
    )


def compile_artifact(
    checkpoint: LoadedCheckpoint,
    target: DeployTarget,
    output: Path,
    database: RecordsSpec = TARGET_RECORDS,
    labels: list[str] | None = None,
    progress: Callable[[str], None] = lambda message: None,
    frame_size: tuple[int, int] | None = None,
    quant: "QuantSpec | None" = None,
) -> CompileResult:
    """Compile ``checkpoint`` for ``target`` into the artifact directory ``output`` (written atomically).

    ``database``: :data:`~tsm_deploy.target.library.TARGET_RECORDS` for the target's record library and
    its fallbacks (``tuning_logs/<target>/``), a MetaSchedule database directory or a sequence of them
    (applied in order), or ``None`` for none.
    ``frame_size`` ``(height, width)``: compile the preprocessing in (uint8 frames of that size in).
    ``quant``: compile in int8 with this calibration (its scales go into the manifest).
    """
    target.require_tools()
    labels = labels if labels is not None else checkpoint.labels
    if labels is not None and len(labels) != checkpoint.config.n_class:
        raise TsmDeployError(f"{len(labels)} labels given for a model with {checkpoint.config.n_class} classes")
    libraries = libraries_for(target, database)
    prepared = prepare_module(checkpoint, target, frame_size=frame_size, progress=progress, quant=quant)
    tvm_target = target.tvm()
    progress("applying tuning records")
    mod, coverage = apply_records(prepared.mod, tvm_target, libraries)
    mod = merge_shifts_into_consumers(mod, inline=target.shift_merge == "inline")  # after the records
    log.info("%s", coverage.line())
    derived = dict(coverage.derived)
    for name, macs in coverage.missing_macs:
        how = f"schedule of {derived[name]}" if name in derived else "default schedule"
        log.info("no tuning record for kernel %s (%.1f M multiply-accumulates): %s", name, macs / 1e6, how)
    progress(f"building for {target.name}")
    executable = build_executable(mod, tvm_target)

    with atomic_output_dir(Path(output)) as tmp:
        module_path = tmp / MODULE_FILE
        progress("linking module" + (f" with {target.cross_compiler}" if target.cross_compiler else ""))
        export_module(executable, module_path, target)
        manifest = build_manifest(checkpoint, target, module_path, prepared.io, coverage, labels, checkpoint.task,
                                  quant.to_json() if quant is not None else None)
        atomic_write_text(tmp / MANIFEST_NAME, manifest.to_json())
    log.info("wrote artifact %s", output)
    return CompileResult(Path(output), manifest, coverage)


def describe(result: CompileResult) -> str:
    return (f"{result.artifact}: {result.manifest.target.name}, {result.manifest.precision}, {result.coverage.line()}, "
            f"module sha256 {result.manifest.module_sha256[:12]}")
