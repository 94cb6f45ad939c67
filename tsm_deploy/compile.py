"""Checkpoint -> artifact: export, import, shift check, fusion + tuning records, build, manifest.

TVM's default CPU pipeline legalises every operator to its own loop nest and fuses nothing; here the
graph is fused first (LegalizeOps -> AnnotateTIROpPattern -> FoldConstant -> FuseOps -> FuseTIR),
then the target's MetaSchedule records replace the default schedules of the fused functions they
cover, then ``tvm.compile`` lowers the rest (GPU targets get dlight default schedules there).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import tvm
from tvm import relax

from . import __version__
from .atomic import atomic_output_dir, atomic_write_text
from .checkpoint import LoadedCheckpoint
from .errors import TsmDeployError
from .export import export_onnx
from .frontend import check_static_shift, import_onnx
from .models import ModelConfig, output_names, preprocessing
from .runtime.manifest import MANIFEST_NAME, Manifest, TensorSpec, sha256_file
from .targets import PROJECT_ROOT, DeployTarget

log = logging.getLogger(__name__)

MODULE_FILE = "module.so"
TUNING_LOGS_DIR = Path(os.environ.get("TSM_DEPLOY_TUNING_LOGS", PROJECT_ROOT / "tuning_logs"))
DATABASE_FILES = ("database_workload.json", "database_tuning_record.json")
TUNING_METADATA = "tuning.json"  # written by tune.py beside the database: target, prepack flag, trials


def model_key(config: ModelConfig) -> str:
    """Folder name of a model's tuning records: everything that changes the tuned kernels' shapes."""
    key = f"{config.arch}-s{config.input_size}-w{config.width_mult:g}-f{config.fold_div}-c{config.n_class}"
    return key if config.shift else key + "-noshift"


def tuning_database_dir(target: DeployTarget, config: ModelConfig, root: Path | None = None) -> Path | None:
    if target.tuning_logs is None:
        return None
    return (root or TUNING_LOGS_DIR) / target.tuning_logs / model_key(config)


def has_database(path: Path | None) -> bool:
    return path is not None and all((path / name).is_file() for name in DATABASE_FILES)


@dataclass(frozen=True)
class TuningCoverage:
    database: str | None
    tasks: int  # fused TIR functions in the model
    tuned: int  # of which the database scheduled
    untuned: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"database": self.database, "tasks": self.tasks, "tuned": self.tuned, "untuned": list(self.untuned)}


def fuse(mod: tvm.IRModule, target: tvm.target.Target, prepack: bool = False) -> tvm.IRModule:
    """Legalize and fuse; with ``prepack``, also mark the weights of the fused functions layout-free.

    On CPU targets the convolutions are converted to channels-last (NHWC activations, OHWI weights):
    MetaSchedule then vectorizes along channels instead of along 7..112-wide image rows (measured on
    x86-avx512, 32 trials per task: the three heaviest convolutions ran 2.0-3.6x faster than tuned NCHW).
    The ONNX importer's Clip (ReLU6) arrives as opaque ``call_tir(maximum/minimum)`` with 0-d constant
    bounds, which layout conversion cannot see through (it would wrap every ReLU6 in transposes and
    keep it out of the convolution's fused kernel); it is turned into ``relu`` + ``minimum`` first.
    Untuned, NHWC is slower (default schedules do not vectorize it): CPU targets are meant to be tuned.

    Tuning and compiling must run exactly this (same ``prepack``) or the database's workloads differ.
    """
    with target:
        if target.kind.name == "llvm":
            mod = relax.transform.FoldConstant()(mod)  # the importer's isnan/where on the clip bounds
            mod = _ClipRewriter.apply(mod)
            mod = relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "OHWI"]})(mod)
        mod = tvm.transform.Sequential(
            [
                relax.transform.CanonicalizeBindings(),
                relax.transform.LegalizeOps(),
                relax.transform.AnnotateTIROpPattern(),
                relax.transform.FoldConstant(),
                relax.transform.FuseOps(),
                relax.transform.FuseTIR(),
            ]
        )(mod)
    return _attach_layout_free(mod) if prepack else mod


@relax.expr_functor.mutator
class _ClipRewriter(relax.PyExprMutator):
    """``call_tir(maximum*, (x, 0))`` -> ``relu(x)``; other scalar-constant maximum/minimum -> the Relax
    ops. These have layout inference (``clip`` and ``relu6`` have none: they would stay NCHW)."""

    def __init__(self, mod: tvm.IRModule) -> None:
        super().__init__(mod)
        self.names = {gv: gv.name_hint for gv in mod.get_global_vars()}
        self.call_tir = tvm.ir.Op.get("relax.call_tir")

    @staticmethod
    def apply(mod: tvm.IRModule) -> tvm.IRModule:
        rewriter = _ClipRewriter(mod)
        for gv, func in list(mod.functions.items()):
            if isinstance(func, relax.Function):
                rewriter.builder_.update_func(gv, rewriter.visit_expr(func))
        return relax.transform.DeadCodeElimination()(rewriter.builder_.get())

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: N802 (TVM's visitor naming)
        call = self.visit_expr_post_order(call)
        if call.op != self.call_tir or not isinstance(call.args[0], tvm.ir.GlobalVar):
            return call
        name = self.names.get(call.args[0], "")
        args = call.args[1].fields if isinstance(call.args[1], relax.Tuple) else []
        if len(args) != 2 or not isinstance(args[1], tvm.ir.expr.Constant) or args[1].value.numpy().ndim != 0:
            return call
        x, bound = args[0], float(args[1].value.numpy())
        if name.startswith("maximum"):
            return relax.op.nn.relu(x) if bound == 0.0 else relax.op.maximum(x, args[1])
        if name.startswith("minimum"):
            return relax.op.minimum(x, args[1])
        return call


def _attach_layout_free(mod: tvm.IRModule) -> tvm.IRModule:
    """Mark weight buffers (constants of main) layout-free: MetaSchedule may then rewrite their layout."""
    return relax.transform.AttachAttrLayoutFreeBuffers()(mod)


def _prepack_weights(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """Split the tuned kernels' weight layout rewrites into functions of their own and fold them:
    the weights are constants, so they are stored pre-packed and the kernels no longer repack them."""
    with target:
        return tvm.transform.Sequential(
            [
                relax.transform.SplitLayoutRewritePreproc(),
                relax.transform.FoldConstant(),
                relax.transform.DeadCodeElimination(),
            ]
        )(mod)


def database_prepack(database: Path | None) -> bool:
    """Whether ``database`` was tuned with weight prepacking (its ``tuning.json`` says so)."""
    if database is None:
        return False
    try:
        return bool(json.loads((Path(database) / TUNING_METADATA).read_text()).get("prepack", False))
    except (FileNotFoundError, json.JSONDecodeError, AttributeError):
        return False


def _tir_functions(mod: tvm.IRModule) -> dict[str, Any]:
    return {gv.name_hint: f for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}


def _is_scheduled(func: Any) -> bool:
    attrs = func.attrs
    # TVM 0.27 renamed the attribute with the tir -> tirx move; accept both
    return attrs is not None and any(key in attrs and bool(attrs[key]) for key in ("tirx.is_scheduled", "tir.is_scheduled"))


def apply_database(
    mod: tvm.IRModule, target: tvm.target.Target, database: Path | None
) -> tuple[tvm.IRModule, TuningCoverage]:
    """Schedule the fused functions that ``database`` has records for; report what it covers.

    ``mod`` comes from :func:`fuse` without prepacking; when the database was tuned with prepacking
    (``tuning.json``), the same layout-free marking is applied first so the workloads match, and the
    weight layout rewrites of the tuned kernels are folded into the constants afterwards.
    """
    before = _tir_functions(mod)
    if not has_database(database):
        return mod, TuningCoverage(None, len(before), 0, tuple(sorted(before)))
    prepack = database_prepack(database)
    if prepack and not _has_layout_free(mod):
        mod = _attach_layout_free(mod)
    with target:
        mod = relax.transform.MetaScheduleApplyDatabase(str(database))(mod)
    after = _tir_functions(mod)
    untuned = tuple(sorted(name for name, f in after.items() if not _is_scheduled(f)))
    coverage = TuningCoverage(str(database), len(after), len(after) - len(untuned), untuned)
    if prepack:
        mod = _prepack_weights(mod, target)
    return mod, coverage


def _has_layout_free(mod: tvm.IRModule) -> bool:
    return any(f.attrs is not None and "layout_free_buffers" in f.attrs for f in _tir_functions(mod).values())


@dataclass(frozen=True)
class CompileResult:
    artifact: Path
    manifest: Manifest
    coverage: TuningCoverage


def _export_module(executable: Any, path: Path, target: DeployTarget) -> None:
    if target.cross_compiler:
        from tvm.support import cc

        executable.export_library(str(path), fcompile=cc.cross_compiler(target.cross_compiler))
    else:
        executable.export_library(str(path))


def build_manifest(
    checkpoint: LoadedCheckpoint,
    target: DeployTarget,
    module_path: Path,
    input_specs: dict[str, tuple[int, ...]],
    outputs: list[str],
    output_shapes: dict[str, tuple[int, ...]],
    coverage: TuningCoverage,
    labels: list[str] | None,
) -> Manifest:
    inputs = tuple(TensorSpec(name, shape) for name, shape in input_specs.items())
    buffer_inputs = [spec.name for spec in inputs[1:]]
    return Manifest(
        model={**checkpoint.config.to_dict(), "checkpoint_sha256": checkpoint.sha256, "source": checkpoint.source},
        target=target.to_manifest(),
        inputs=inputs,
        outputs=tuple(TensorSpec(name, output_shapes[name]) for name in outputs),
        state=tuple(zip(outputs[1:], buffer_inputs)),
        preprocess=preprocessing(checkpoint.config),
        module_file=module_path.name,
        module_sha256=sha256_file(module_path),
        tvm_version=tvm.__version__,
        tsm_deploy_version=__version__,
        labels=tuple(labels) if labels else None,
        tuning=coverage.to_dict(),
    )


def compile_artifact(
    checkpoint: LoadedCheckpoint,
    target: DeployTarget,
    output: Path,
    database: Path | None | str = "auto",
    labels: list[str] | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> CompileResult:
    """Compile ``checkpoint`` for ``target`` into the artifact directory ``output`` (written atomically).

    ``database``: a MetaSchedule database directory, ``None`` for none, or ``"auto"`` for the target's
    committed records for this model (``tuning_logs/<target>/<model>/``) when present.
    """
    target.require_tools()
    if labels is not None and len(labels) != checkpoint.config.n_class:
        raise TsmDeployError(f"{len(labels)} labels given for a model with {checkpoint.config.n_class} classes")
    if database == "auto":
        database = tuning_database_dir(target, checkpoint.config)
    database = Path(database) if database is not None else None
    if database is not None and not has_database(database) and target.tuning_logs is not None:
        log.warning("no tuning records at %s: compiling with default schedules (slow)", database)

    model = checkpoint.model()
    progress("exporting to ONNX")
    exported = export_onnx(model)
    progress("importing into Relax")
    mod = import_onnx(exported.model)
    check_static_shift(mod, n_shift_buffers=len(exported.input_shapes) - 1)
    tvm_target = target.tvm()
    progress("fusing operators")
    mod = fuse(mod, tvm_target)
    mod, coverage = apply_database(mod, tvm_target, database)
    if coverage.database:
        log.info("tuning records cover %d of %d tasks (%s)", coverage.tuned, coverage.tasks, coverage.database)
        for name in coverage.untuned:
            log.warning("no tuning record for task %s: default schedule", name)
    progress(f"building for {target.name}")
    executable = tvm.compile(mod, tvm_target)

    output_shapes = _output_shapes(mod, output_names(model))
    with atomic_output_dir(Path(output)) as tmp:
        module_path = tmp / MODULE_FILE
        progress("linking module" + (f" with {target.cross_compiler}" if target.cross_compiler else ""))
        _export_module(executable, module_path, target)
        manifest = build_manifest(
            checkpoint, target, module_path, exported.input_shapes, exported.output_names, output_shapes, coverage, labels
        )
        atomic_write_text(tmp / MANIFEST_NAME, manifest.to_json())
    log.info("wrote artifact %s", output)
    return CompileResult(Path(output), manifest, coverage)


def _output_shapes(mod: tvm.IRModule, names: list[str]) -> dict[str, tuple[int, ...]]:
    ty = mod["main"].ret_ty
    fields = ty.fields if isinstance(ty, tvm.ir.TupleType) else [ty]
    return {name: tuple(int(d) for d in f.shape.values) for name, f in zip(names, fields)}


def describe(result: CompileResult) -> str:
    cov = result.coverage
    tuned = f"{cov.tuned}/{cov.tasks} tasks tuned" if cov.database else f"untuned ({cov.tasks} tasks, default schedules)"
    return f"{result.artifact}: {result.manifest.target['name']}, {tuned}, module sha256 {result.manifest.module_sha256[:12]}"
