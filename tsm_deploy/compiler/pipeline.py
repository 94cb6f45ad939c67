"""The one model-to-IRModule pipeline: nn.Module -> ONNX -> Relax -> shift check -> fused module.

``compile``, ``tune`` and ``bench`` (its no-shift baseline) all call :func:`prepare_module`, so a pass
added here reaches all three and tuning records always match what is compiled. After it,
:func:`tsm_deploy.compiler.records.apply_records` schedules the kernels the record libraries cover.

Fusion: TVM's default CPU pipeline legalises every operator to its own loop nest and fuses nothing;
here the graph is fused first (LegalizeOps -> AnnotateTIROpPattern -> FoldConstant -> FuseOps ->
FuseTIR). On CPU targets the convolutions run channels-last (NHWC activations, OHWI weights):
MetaSchedule then vectorizes along channels instead of along 7..112-wide image rows (measured on
x86-avx512, 32 trials per task: the three heaviest convolutions ran 2.0-3.6x faster than tuned NCHW).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import tvm
from tvm import relax

from ..checkpoint import LoadedCheckpoint
from ..errors import TsmDeployError
from ..frontend.export import ExportResult, export_onnx
from ..frontend.relax import ShiftReport, check_static_shift, import_onnx
from ..models.wrapper import PackedState
from .passes.clip_shift import clip_shifts_as_kernels
from .passes.fold_permutes import fold_permutes
from .passes.int8_conv import int8_convolutions
from .passes.pack_state import pack_state_by_parts
from .passes.relu_from_clip import relu_from_clip
from .passes.shift_state import shifts_write_state, state_in_place
from .records import attach_layout_free

if TYPE_CHECKING:
    from ..quantize import QuantSpec

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
    quant: "QuantSpec | None" = None,
) -> PreparedModule:
    """Export, import, check the shift and fuse ``checkpoint``'s model for ``target`` (a DeployTarget).

    ``prepack`` marks the fused functions' weights layout-free (tuning with weight prepacking).
    ``frame_size`` ``(height, width)`` puts the preprocessing in front of the network, compiled with
    it: uint8 camera frames of that size in (the network's own kernels, and so their records, stay
    the same; the preprocessing adds a few small tasks of its own).
    ``quant`` (a :class:`~tsm_deploy.quantize.QuantSpec` calibrated on this model): the model is
    fake-quantized before export and its convolutions compile as integer kernels.
    """
    model = checkpoint.model()
    if quant is not None:
        from ..quantize import fake_quantize

        model = fake_quantize(model, quant)
    state_layout, state_parts = "NCHW", ()
    if channels_last(target.tvm()) and model.state_pairs():
        model = PackedState(model).eval()
        state_layout, state_parts = "NHWC", tuple(model.parts)
    if frame_size is not None:
        from ..models import preprocessing
        from ..models.preprocess import FramePreprocess, WithPreprocess

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
    from ..models import model_spec

    return model_spec(checkpoint.config.arch).direction.value


def _output_shapes(mod: tvm.IRModule, names: list[str]) -> dict[str, tuple[int, ...]]:
    ty = mod["main"].ret_ty
    types = ty.fields if isinstance(ty, tvm.ir.TupleType) else [ty]
    if len(types) != len(names):
        raise TsmDeployError(f"the compiled model returns {len(types)} tensors, expected {len(names)} ({', '.join(names)})")
    return {name: tuple(int(d) for d in t.shape.values) for name, t in zip(names, types)}


def fuse(mod: tvm.IRModule, target: tvm.target.Target, prepack: bool = False) -> tvm.IRModule:
    """Legalize and fuse; with ``prepack``, also mark the weights of the fused functions layout-free.

    On CPU targets the graph goes NHWC first (:mod:`.passes`: ReLU6 made layout-transparent,
    permutes folded). Untuned, NHWC is slower (default schedules do not vectorize it): CPU targets
    are meant to be tuned.
    """
    with target:
        mod = int8_convolutions(mod)  # a fake-quantized export's convolutions on integers; no-op on fp32
        if channels_last(target):
            mod = relax.transform.FoldConstant()(mod)  # the importer's isnan/where on the clip bounds
            mod = relu_from_clip(mod)
            mod = relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "OHWI"]})(mod)
            mod = fold_permutes(mod)
            mod = clip_shifts_as_kernels(mod)  # offline shifts: one hand-written kernel each
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
    return attach_layout_free(mod) if prepack else mod
