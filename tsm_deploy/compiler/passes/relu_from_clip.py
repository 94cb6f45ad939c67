"""The ONNX importer's Clip (ReLU6) arrives as opaque ``call_tir(maximum/
minimum)`` with 0-d constant bounds, which layout conversion cannot see through (it would wrap
every ReLU6 in transposes and keep it out of the convolution's fused kernel)."""

from __future__ import annotations

import tvm
from tvm import relax

from .relax_match import rewrite


def relu_from_clip(mod: tvm.IRModule) -> tvm.IRModule:
    """``call_tir(maximum*, (x, 0))`` -> ``relu(x)``; other scalar-constant maximum/minimum -> the Relax
    ops, which have layout inference (``clip`` and ``relu6`` have none: they would stay NCHW)."""
    return rewrite(_ClipRewriter(mod), mod)


@relax.expr_functor.mutator
class _ClipRewriter(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule) -> None:
        super().__init__(mod)
        self.names = {gv: gv.name_hint for gv in mod.get_global_vars()}
        self.call_tir = tvm.ir.Op.get("relax.call_tir")

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
