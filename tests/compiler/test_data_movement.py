"""The schedule without search for reduction-free kernels: exact, parallel, refuses reductions."""

import numpy as np
import tvm
from tvm import te, topi

from tsm_deploy.compiler.data_movement import schedule_data_movement
from tsm_deploy.compiler.kernels import is_scheduled

LLVM = tvm.target.Target({"kind": "llvm"})


def _shift_like() -> tvm.IRModule:
    """NHWC -> NCHW, the first 1/4 of the channels moved one step along the batch, back to NHWC:
    the steps the offline shift lowers to, each its own block."""
    x = te.placeholder((4, 6, 6, 32), name="x")
    nchw = topi.transpose(x, (0, 3, 1, 2))
    moved = topi.strided_slice(nchw, [1, 0, 0, 0], [4, 8, 6, 6])
    zero = topi.full((1, 8, 6, 6), "float32", 0.0)
    shifted = topi.concatenate([moved, zero], axis=0)
    rest = topi.strided_slice(nchw, [0, 8, 0, 0], [4, 32, 6, 6])
    out = topi.transpose(topi.concatenate([shifted, rest], axis=1), (0, 2, 3, 1))
    return tvm.IRModule({"shift": te.create_prim_func([x, out]).with_attr("global_symbol", "shift")})


def _run(mod: tvm.IRModule, x: np.ndarray) -> np.ndarray:
    executable = tvm.compile(mod, LLVM)
    out = tvm.runtime.tensor(np.zeros(x.shape, "float32"))
    executable["shift"](tvm.runtime.tensor(x), out)
    return out.numpy()


def test_data_movement_kernel_is_scheduled_and_exact():
    mod = _shift_like()
    scheduled, names = schedule_data_movement(mod, LLVM, ["shift"])
    assert names == ["shift"]
    assert is_scheduled(scheduled["shift"]) and not is_scheduled(mod["shift"])
    script = scheduled["shift"].script()
    assert "T.parallel" in script and "T.vectorized" in script
    x = np.random.default_rng(0).standard_normal((4, 6, 6, 32)).astype("float32")
    expected = np.concatenate([np.concatenate([x[1:, :, :, :8], np.zeros_like(x[:1, :, :, :8])]), x[:, :, :, 8:]], axis=3)
    np.testing.assert_array_equal(_run(scheduled, x), expected)
    np.testing.assert_array_equal(_run(mod, x), expected)


def test_reductions_and_gpu_targets_are_left_alone():
    x = te.placeholder((8, 16), name="x")
    total = topi.sum(x, axis=1)
    mod = tvm.IRModule({"sum": te.create_prim_func([x, total]).with_attr("global_symbol", "sum")})
    assert schedule_data_movement(mod, LLVM, ["sum"])[1] == []
    cuda = tvm.target.Target({"kind": "cuda", "arch": "sm_86"})
    assert schedule_data_movement(_shift_like(), cuda, ["shift"])[1] == []
