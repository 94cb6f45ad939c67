"""Integer convolutions from a fake-quantized graph.

A model calibrated by :mod:`tsm_deploy.quantize` exports with ``QuantizeLinear`` / ``DequantizeLinear``
at its quantization points and its convolution weights already on their per-output-channel int8 grid
(BatchNorm folded in: a per-channel factor keeps a weight on a per-channel grid). The importer maps the
pairs to fp32 ``quantize`` / ``dequantize``. Here:

1. ``quantize(dequantize(q, s, z), s, z)`` is ``q`` (a block's output and the next block's input share
   their grid, so the value crosses kernels as uint8 once);
2. ``conv2d(dequantize(q, sx, zx), W)`` with ``W`` on a grid becomes
   ``astype(conv2d(q, W_int8, out_dtype=int32), f32) * (sx * sw)`` (minus ``zx * sx * sw * sum(W_int8)``
   where ``zx != 0``): uint8 x int8 products summed in int32, exact; the requantization that follows
   (bias, ReLU6, the next ``quantize``) fuses into the convolution's kernel, which then writes uint8.
   A padded convolution of an input whose zero point is not 0 pads with the zero point first (the zero
   of the real domain), so the borders stay exact;
3. the ``quantize`` / ``dequantize`` left (block outputs read by a residual add, the classifier's input)
   become the elementwise ops they are, which layout conversion sees through (the Relax ops have no
   layout inference: NCHW transposes would be wrapped around each).

A graph without ``dequantize`` is returned unchanged, so fp32 models compile exactly as before.
"""

from __future__ import annotations

import logging

import numpy as np
import tvm
from tvm import relax

from .relax_match import rewrite

__all__ = ["int8_convolutions", "lower_qdq", "is_quantized"]

log = logging.getLogger(__name__)

QUANTIZE = tvm.ir.Op.get("relax.quantize")
DEQUANTIZE = tvm.ir.Op.get("relax.dequantize")
CONV2D = tvm.ir.Op.get("relax.nn.conv2d")

# A weight is on its grid when every value is within this fraction of a step of an integer (folding a
# BatchNorm factor into a grid value moves it by a few fp32 ulps, far below this).
_GRID_TOLERANCE = 1e-3


def is_quantized(mod: tvm.IRModule) -> bool:
    """Whether ``mod``'s main function holds a ``dequantize`` (a fake-quantized export)."""
    found = []

    def visit(expr: relax.Expr) -> None:
        if isinstance(expr, relax.Call) and expr.op == DEQUANTIZE:
            found.append(expr)

    relax.analysis.post_order_visit(mod["main"].body, visit)
    return bool(found)


def int8_convolutions(mod: tvm.IRModule) -> tvm.IRModule:
    """Rules 1 and 2 of the module docstring, then rule 3 (:func:`lower_qdq`). No-op on fp32 graphs."""
    if not is_quantized(mod):
        return mod
    rewriter = _Int8Rewriter(mod)
    mod = rewrite(rewriter, mod)
    log.info("int8: %d convolutions on integers, %d left in fp32 (weights off any int8 grid)",
             rewriter.converted, rewriter.kept)
    return lower_qdq(mod)


def lower_qdq(mod: tvm.IRModule) -> tvm.IRModule:
    """Every ``quantize`` / ``dequantize`` with scalar parameters as elementwise ops."""
    return rewrite(_QdqLowering(mod), mod)


def _scalar(expr: relax.Expr) -> float | None:
    if isinstance(expr, tvm.ir.expr.Constant):
        value = expr.value.numpy()
        if value.size == 1:
            return value.reshape(()).item()
    return None


def _params(call: relax.Call) -> tuple[float, int] | None:
    """``(scale, zero_point)`` of a per-tensor quantize / dequantize."""
    scale, zero = _scalar(call.args[1]), _scalar(call.args[2])
    if scale is None or zero is None:
        return None
    return float(scale), int(zero)


def weight_grid(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(int8 values, per-output-channel scales)`` when ``weight`` lies on a symmetric per-channel
    int8 grid (the step ``max |w| / 127`` of each output channel), else None."""
    flat = weight.reshape(weight.shape[0], -1).astype(np.float64)
    scales = np.abs(flat).max(1) / 127.0
    scales[scales == 0] = 1.0
    steps = flat / scales[:, None]
    values = np.rint(steps)
    if np.abs(steps - values).max() > _GRID_TOLERANCE or np.abs(values).max() > 127:
        return None
    return values.astype(np.int8).reshape(weight.shape), scales


@relax.expr_functor.mutator
class _Int8Rewriter(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule) -> None:
        super().__init__(mod)
        self.converted = 0
        self.kept = 0

    def _bound(self, expr: relax.Expr) -> relax.Expr:
        return self.lookup_binding(expr) if isinstance(expr, relax.Var) else expr

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: N802 (TVM's visitor naming)
        call = self.visit_expr_post_order(call)
        if call.op == QUANTIZE:
            return self._requantize(call)
        if call.op == CONV2D:
            return self._conv(call)
        return call

    def _requantize(self, call: relax.Call) -> relax.Expr:
        inner = self._bound(call.args[0])
        if isinstance(inner, relax.Call) and inner.op == DEQUANTIZE and _params(inner) is not None \
                and _params(inner) == _params(call) and str(inner.args[0].ty.dtype) == str(call.attrs.out_dtype):
            return inner.args[0]
        return call

    def _conv(self, call: relax.Call) -> relax.Expr:
        source = self._bound(call.args[0])
        weight = call.args[1]
        attrs = call.attrs
        if not (isinstance(source, relax.Call) and source.op == DEQUANTIZE and isinstance(weight, tvm.ir.expr.Constant)):
            return call
        params = _params(source)
        grid = weight_grid(weight.value.numpy())
        if params is None or grid is None or str(attrs.kernel_layout) != "OIHW" or str(attrs.data_layout) != "NCHW":
            self.kept += 1
            return call
        (scale_x, zero_x), (values, scales_w) = params, grid
        data = source.args[0]
        padding = [int(p) for p in attrs.padding]  # top, left, bottom, right
        if zero_x != 0 and any(padding):
            top, left, bottom, right = padding
            data = self.builder_.emit(relax.op.nn.pad(data, [0, 0, 0, 0, top, bottom, left, right], pad_value=float(zero_x)))
            padding = [0, 0, 0, 0]
        acc = self.builder_.emit(relax.op.nn.conv2d(
            data, relax.const(values, "int8"), strides=attrs.strides, padding=padding, dilation=attrs.dilation,
            groups=int(attrs.groups), data_layout="NCHW", kernel_layout="OIHW", out_dtype="int32"))
        shape = (1, values.shape[0], 1, 1)
        step = (scale_x * scales_w).astype(np.float32)
        out = relax.op.multiply(self.builder_.emit(relax.op.astype(acc, "float32")), relax.const(step.reshape(shape)))
        if zero_x != 0:  # sum over the taps of (q - zx) * w = conv(q, w) - zx * sum(w)
            offset = -zero_x * step.astype(np.float64) * values.reshape(values.shape[0], -1).astype(np.float64).sum(1)
            out = relax.op.add(self.builder_.emit(out), relax.const(offset.astype(np.float32).reshape(shape)))
        self.converted += 1
        return out


def _parameter(value: float, like: relax.Expr) -> relax.Constant:
    """A scale or zero point as a one-element tensor of ``like``'s rank, not a scalar: a scalar is written
    into the kernel's code, so kernels of one shape would differ by calibration, each a workload of its
    own; a tensor is an argument, and every calibration of a model shares its kernels' tuning records.
    The rank lets layout conversion carry it to NHWC (a 1-d operand made it wrap each op in transposes)."""
    return relax.const(np.full((1,) * len(like.ty.shape), value, dtype=np.float32))


@relax.expr_functor.mutator
class _QdqLowering(relax.PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: N802
        call = self.visit_expr_post_order(call)
        if call.op not in (QUANTIZE, DEQUANTIZE) or _params(call) is None:
            return call
        scale, zero = _params(call)
        dtype = str(call.attrs.out_dtype)
        if call.op == DEQUANTIZE:
            centred = relax.op.astype(call.args[0], "float32")
            if zero:
                centred = relax.op.subtract(self.builder_.emit(centred), _parameter(zero, call.args[0]))
            return relax.op.multiply(self.builder_.emit(centred), _parameter(scale, call.args[0]))
        info = np.iinfo(dtype)
        # x * (1 / scale), rounded half to even, as PyTorch's fake quantization computes it
        inverse = float(np.float32(1) / np.float32(scale))
        steps = self.builder_.emit(relax.op.round(self.builder_.emit(relax.op.multiply(call.args[0], _parameter(inverse, call.args[0])))))
        if zero:
            steps = self.builder_.emit(relax.op.add(steps, _parameter(zero, call.args[0])))
        # maximum / minimum, not clip: clip has no layout inference
        low = self.builder_.emit(relax.op.maximum(steps, relax.const(float(info.min), "float32")))
        high = self.builder_.emit(relax.op.minimum(low, relax.const(float(info.max), "float32")))
        return relax.op.astype(high, dtype)
