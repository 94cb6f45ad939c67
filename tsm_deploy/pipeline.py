"""The one model-to-IRModule pipeline: nn.Module -> ONNX -> Relax -> shift check -> fused module.

``compile``, ``tune`` and ``bench`` (its no-shift baseline) all call :func:`prepare_module`, so a pass
added here reaches all three and tuning records always match what is compiled. After it,
:func:`apply_records` schedules the fused functions a MetaSchedule database covers.

Fusion: TVM's default CPU pipeline legalises every operator to its own loop nest and fuses nothing;
here the graph is fused first (LegalizeOps -> AnnotateTIROpPattern -> FoldConstant -> FuseOps ->
FuseTIR). On CPU targets the convolutions run channels-last (NHWC activations, OHWI weights):
MetaSchedule then vectorizes along channels instead of along 7..112-wide image rows (measured on
x86-avx512, 32 trials per task: the three heaviest convolutions ran 2.0-3.6x faster than tuned NCHW).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import tvm
from tvm import relax

from .checkpoint import LoadedCheckpoint
from .export import ExportResult, export_onnx
from .models.wrapper import PackedState
from .errors import TsmDeployError
from .frontend import ShiftReport, check_static_shift, import_onnx
from .transforms import fold_permutes, pack_state_by_parts, relu_from_clip, shifts_write_state, state_in_place
from .tuning.database import database_prepack, has_database, loadable_database

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelIO:
    """The model's interface as the artifact exposes it (what the manifest records)."""

    kind: str  # "stream" | "clip"
    frame_format: str  # "prepared" (float tensor) | "rgb_uint8" (preprocessing compiled in)
    inputs: dict[str, tuple[int, ...]]  # name -> shape, in call order
    input_dtypes: dict[str, str]
    outputs: dict[str, tuple[int, ...]]  # name -> shape, in result order
    state: tuple[tuple[str, str], ...]  # (output, input) pairs fed back each step
    state_layout: str = "NCHW"  # "NHWC" on CPU targets (the compiled convolutions' layout)
    state_parts: tuple[tuple[int, ...], ...] = ()  # CPU targets: the buffers packed in one state tensor
    state_in_place: bool = False  # CPU targets: main updates the state input, returns the logits only


@dataclass(frozen=True)
class PreparedModule:
    mod: tvm.IRModule  # fused, ready for records and tvm.compile
    io: ModelIO
    export: ExportResult
    shift: ShiftReport
    prepack: bool


def prepare_module(
    checkpoint: LoadedCheckpoint,
    target: Any,
    prepack: bool = False,
    check_ort: bool = True,
    frame_size: tuple[int, int] | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> PreparedModule:
    """Export, import, check the shift and fuse ``checkpoint``'s model for ``target`` (a DeployTarget).

    ``prepack`` marks the fused functions' weights layout-free (tuning with weight prepacking).
    ``frame_size`` ``(height, width)`` puts the preprocessing in front of the network, compiled with
    it: uint8 camera frames of that size in (the network's own kernels, and so their records, stay
    the same; the preprocessing adds a few small tasks of its own).
    """
    model = checkpoint.model()
    state_layout, state_parts = "NCHW", ()
    if channels_last(target.tvm()) and model.state_pairs():
        model = PackedState(model).eval()
        state_layout, state_parts = "NHWC", tuple(model.parts)
    if frame_size is not None:
        from .models import preprocessing
        from .models.preprocess import FramePreprocess, WithPreprocess

        model = WithPreprocess(FramePreprocess(*frame_size, preprocessing(checkpoint.config)), model).eval()
    progress("exporting to ONNX")
    exported = export_onnx(model, check_ort=check_ort)
    progress("importing into Relax")
    mod = import_onnx(exported.model)
    report = check_static_shift(mod, expected_shifts=model.n_shifts, direction=_direction(checkpoint),
                                other_ops=getattr(model, "own_slices_and_concats", (0, 0)))
    progress("fusing operators")
    mod = fuse(mod, target.tvm(), prepack=prepack)
    state = tuple(model.state_pairs())
    in_place = state_in_place(mod)
    returned = [n for n in exported.output_names if not (in_place and n in {o for o, _ in state})]
    io = ModelIO(
        kind=model.io_kind,
        frame_format="rgb_uint8" if frame_size is not None else "prepared",
        inputs=dict(exported.input_shapes),
        input_dtypes=dict(exported.input_dtypes),
        outputs=_output_shapes(mod, returned),
        state=state,
        state_layout=state_layout,
        state_parts=state_parts,
        state_in_place=in_place,
    )
    return PreparedModule(mod, io, exported, report, prepack)


def channels_last(target: tvm.target.Target) -> bool:
    """Whether the pipeline runs the convolutions NHWC for ``target`` (CPU targets)."""
    return target.kind.name == "llvm"


def _direction(checkpoint: LoadedCheckpoint) -> str:
    from .models import model_spec

    return model_spec(checkpoint.config.arch).direction.value


def _output_shapes(mod: tvm.IRModule, names: list[str]) -> dict[str, tuple[int, ...]]:
    ty = mod["main"].ret_ty
    types = ty.fields if isinstance(ty, tvm.ir.TupleType) else [ty]
    if len(types) != len(names):
        raise TsmDeployError(f"the compiled model returns {len(types)} tensors, expected {len(names)} ({', '.join(names)})")
    return {name: tuple(int(d) for d in t.shape.values) for name, t in zip(names, types)}


def fuse(mod: tvm.IRModule, target: tvm.target.Target, prepack: bool = False) -> tvm.IRModule:
    """Legalize and fuse; with ``prepack``, also mark the weights of the fused functions layout-free.

    On CPU targets the graph goes NHWC first (:mod:`.transforms`: ReLU6 made layout-transparent,
    permutes folded). Untuned, NHWC is slower (default schedules do not vectorize it): CPU targets
    are meant to be tuned.
    """
    with target:
        if channels_last(target):
            mod = relax.transform.FoldConstant()(mod)  # the importer's isnan/where on the clip bounds
            mod = relu_from_clip(mod)
            mod = relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "OHWI"]})(mod)
            mod = fold_permutes(mod)
            mod = shifts_write_state(mod)
            mod = pack_state_by_parts(mod)  # where the shifts did not take the state over
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
                relax.transform.CanonicalizeBindings(),
                relax.transform.DeadCodeElimination(),
            ]
        )(mod)


def tir_functions(mod: tvm.IRModule) -> dict[str, Any]:
    return {gv.name_hint: f for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}


def is_scheduled(func: Any) -> bool:
    attrs = func.attrs
    # TVM 0.27 renamed the attribute with the tir -> tirx move; accept both
    return attrs is not None and any(key in attrs and bool(attrs[key]) for key in ("tirx.is_scheduled", "tir.is_scheduled"))


@dataclass(frozen=True)
class TuningCoverage:
    database: str | None
    tasks: int  # fused TIR functions in the model
    tuned: int  # of which the database scheduled
    untuned: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"database": self.database, "tasks": self.tasks, "tuned": self.tuned, "untuned": list(self.untuned)}


def apply_records(
    mod: tvm.IRModule, target: tvm.target.Target, database: Path | None
) -> tuple[tvm.IRModule, TuningCoverage]:
    """Schedule the fused functions that ``database`` has records for; report what it covers.

    ``mod`` comes from :func:`prepare_module` without prepacking; when the database was tuned with
    prepacking (``tuning.json``), the same layout-free marking is applied first so the workloads match,
    and the weight layout rewrites of the tuned kernels are folded into the constants afterwards.
    """
    # tasks: the kernels that need a schedule (hand-written ones, like the state packing, come scheduled;
    # applying records renames functions, so they are counted, not named)
    functions = tir_functions(mod)
    unscheduled = sorted(name for name, f in functions.items() if not is_scheduled(f))
    hand_written = len(functions) - len(unscheduled)
    if not has_database(database):
        return mod, TuningCoverage(None, len(unscheduled), 0, tuple(unscheduled))
    prepack = database_prepack(database)
    if prepack and not _has_layout_free(mod):
        mod = _attach_layout_free(mod)
    with target:
        try:
            mod = relax.transform.MetaScheduleApplyDatabase(str(database))(mod)
        except Exception:  # noqa: BLE001 - a record that does not replay fails the whole load: drop it
            with tempfile.TemporaryDirectory(prefix="tsm-db-") as scratch:
                usable = loadable_database(database, Path(scratch))
                mod = relax.transform.MetaScheduleApplyDatabase(str(usable))(mod)
    after = tir_functions(mod)
    untuned = tuple(sorted(name for name, f in after.items() if not is_scheduled(f)))
    tasks = len(after) - hand_written
    coverage = TuningCoverage(str(database), tasks, tasks - len(untuned), untuned)
    if prepack:
        mod = _prepack_weights(mod, target)
    return mod, coverage


def _has_layout_free(mod: tvm.IRModule) -> bool:
    return any(f.attrs is not None and "layout_free_buffers" in f.attrs for f in tir_functions(mod).values())
