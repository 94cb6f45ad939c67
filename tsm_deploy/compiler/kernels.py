"""A kernel of a compiled module: its TIR functions, whether a schedule was applied, its workload as
MetaSchedule files it, its work in multiply-accumulates."""

from __future__ import annotations

from typing import Any

import tvm


def tir_functions(mod: tvm.IRModule) -> dict[str, Any]:
    return {gv.name_hint: f for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}


def is_scheduled(func: Any) -> bool:
    attrs = func.attrs
    # TVM 0.27 renamed the attribute with the tir -> tirx move; accept both
    return attrs is not None and any(key in attrs and bool(attrs[key]) for key in ("tirx.is_scheduled", "tir.is_scheduled"))


def workload_of(func: Any) -> tvm.IRModule:
    """A kernel as MetaSchedule files it (its task extraction's normalisation)."""
    if not (func.attrs and "global_symbol" in func.attrs):
        func = func.with_attr("global_symbol", "main")
    return tvm.IRModule({"main": func.with_attr("tirx.noalias", True)})


def kernel_macs(func: Any) -> float:
    """Multiply-accumulates of one call of a kernel (TVM's flop estimate counts a MAC as two)."""
    from tvm.s_tir.analysis import estimate_tir_flops

    try:
        return float(estimate_tir_flops(workload_of(func))) / 2
    except Exception:  # noqa: BLE001 - loops the estimator cannot bound: count as no work
        return 0.0
