"""ONNX -> Relax IRModule, and the check that the temporal shift imported as static slicing.

The promise of TSM on an edge device is "zero extra FLOPs": the shift must be plain memory movement
(strided_slice + concatenate) with static shapes. A scatter, a dynamic slice or a symbolic shape
would mean the export went wrong (slice assignment, traced shapes) and is refused here, before any
time is spent compiling.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import onnx
import tvm
from tvm import relax
from tvm.relax.frontend.onnx import from_onnx

from ..errors import CheckFailed

log = logging.getLogger(__name__)

# Ops that betray a shift exported through slice assignment or dynamic shapes.
FORBIDDEN_OPS = frozenset(
    {
        "relax.scatter_nd",
        "relax.scatter_elements",
        "relax.dynamic_strided_slice",
        "relax.nonzero",
        "relax.shape_of",
    }
)


@dataclass(frozen=True)
class ShiftReport:
    op_counts: dict[str, int]
    strided_slices: int
    concatenates: int


def import_onnx(proto: onnx.ModelProto) -> tvm.IRModule:
    """Weights become constants of ``main`` (so they can be folded and prepacked at compile time)."""
    mod = from_onnx(proto, keep_params_in_input=False)
    # FoldConstant: the importer guards Gather indices with shape_of/less/where on constants (compiled
    # preprocessing gathers with constant indices); folded, the graph is static again.
    return relax.transform.FoldConstant()(relax.transform.DecomposeOpsForInference()(mod))


def _op_counts(mod: tvm.IRModule) -> Counter:
    counts: Counter = Counter()

    def visit(expr: relax.Expr) -> None:
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            counts[expr.op.name] += 1

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return counts


def _symbolic_shapes(func: relax.Function) -> list[str]:
    """Names of parameters/results whose shapes are not fully static."""
    bad = []
    types = [(p.name, p.ty) for p in func.params] + [("result", func.ret_ty)]
    while types:
        name, ty = types.pop()
        if isinstance(ty, tvm.ir.TupleType):
            types.extend((f"{name}[{i}]", f) for i, f in enumerate(ty.fields))
        elif isinstance(ty, relax.TensorType):
            shape = ty.shape
            if shape is None or not all(isinstance(d, tvm.tirx.IntImm) for d in shape.values):
                bad.append(name)
    return bad


# Minimum (strided_slice, concatenate) each shift leaves in the graph. Online (uni-directional,
# streamed): the cached fold and the rest, one concat. Offline bi-directional: three channel folds,
# one time slice for each moved fold, a concat with the zero padding for each, one concat of the folds.
SHIFT_OPS = {"unidirectional": (2, 1), "bidirectional": (5, 3)}


def check_static_shift(
    mod: tvm.IRModule, expected_shifts: int, direction: str = "unidirectional", other_ops: tuple[int, int] = (0, 0)
) -> ShiftReport:
    """Fail unless the graph is static and holds the slices/concats of at least ``expected_shifts``
    shifts (what the model spec says the network has): fewer means the shift was lost on the way.
    ``other_ops``: (slices, concatenations) the graph has besides the shifts (the packed state's), so
    they cannot stand in for lost shifts."""
    counts = _op_counts(mod)
    forbidden = sorted(op for op in counts if op in FORBIDDEN_OPS)
    if forbidden:
        raise CheckFailed(f"the temporal shift did not import as static slicing: found {', '.join(forbidden)}")
    symbolic = _symbolic_shapes(mod["main"])
    if symbolic:
        raise CheckFailed(f"the model has dynamic shapes (at {', '.join(symbolic[:3])}); a static graph is required")
    slices, concats = counts.get("relax.strided_slice", 0), counts.get("relax.concat", 0)
    per_slice, per_concat = SHIFT_OPS[direction]
    want_slices, want_concats = per_slice * expected_shifts + other_ops[0], per_concat * expected_shifts + other_ops[1]
    if slices < want_slices or concats < want_concats:
        besides = f" (+ {other_ops[0]} and {other_ops[1]} of the packed state)" if any(other_ops) else ""
        raise CheckFailed(
            f"expected >= {want_slices} strided_slice and >= {want_concats} concatenate for {expected_shifts} "
            f"{direction} shifts{besides}, found {slices} and {concats}: "
            "the temporal shift was lost on the way to the graph"
        )
    log.info("shift check passed: %d shifts expected; %d strided_slice, %d concatenate, static shapes",
             expected_shifts, slices, concats)
    return ShiftReport(dict(counts), slices, concats)
