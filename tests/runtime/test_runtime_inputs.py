"""The runtime's input path: a frame is either wrapped without a copy (64-byte aligned) or copied into
a reusable aligned tensor; both must feed the module the same numbers, every step."""

from __future__ import annotations

import numpy as np

from tsm_deploy.runtime import StreamingModel
from tsm_deploy.runtime.loader import DLPACK_ALIGNMENT


def _with_alignment(array: np.ndarray, aligned: bool) -> np.ndarray:
    raw = np.empty(array.nbytes + 2 * DLPACK_ALIGNMENT, np.uint8)
    offset = (-raw.ctypes.data) % DLPACK_ALIGNMENT + (0 if aligned else 4)
    out = raw[offset : offset + array.nbytes].view(array.dtype).reshape(array.shape)
    out[...] = array
    assert (out.ctypes.data % DLPACK_ALIGNMENT == 0) == aligned
    return out


def test_copied_and_wrapped_frames_give_the_same_stream(small_artifact):
    model = StreamingModel(small_artifact)
    frames = np.random.default_rng(0).standard_normal((5,) + model.frame_shape).astype(np.float32)
    runs = {}
    for aligned in (True, False):
        model.reset()
        runs[aligned] = np.stack([model.run_prepared(_with_alignment(f, aligned)) for f in frames])
    np.testing.assert_array_equal(runs[True], runs[False])
    assert not np.allclose(runs[False][0], runs[False][-1])  # the staging tensor took each new frame


def test_logits_are_copies_the_next_step_cannot_change(small_artifact):
    model = StreamingModel(small_artifact)
    frames = np.random.default_rng(1).standard_normal((3,) + model.frame_shape).astype(np.float32)
    first = model.run_prepared(frames[0])
    kept = first.copy()
    for f in frames[1:]:
        model.run_prepared(f)
    np.testing.assert_array_equal(first, kept)


def test_a_callers_state_array_is_never_written(small_artifact):
    """CPU modules update the state input in place (``io.state_in_place``: the next state is written
    into it, not returned): an aligned state array of the caller's goes in as a copy, so the caller's
    numbers stay as they were."""
    from tsm_deploy.runtime.loader import LoadedArtifact

    artifact = LoadedArtifact(small_artifact, "stream")
    manifest = artifact.manifest
    (_, state_in), = manifest.state
    assert manifest.io.state_in_place and [o.name for o in manifest.outputs] == [manifest.io.logits]
    rng = np.random.default_rng(2)
    frame = rng.standard_normal(manifest.frame.shape).astype(np.float32)
    state = _with_alignment(rng.standard_normal(manifest.input(state_in).shape).astype(np.float32), aligned=True)
    kept = state.copy()
    on_device = artifact.to_device(manifest.input(state_in), state)
    artifact.call({manifest.frame.name: artifact.to_device(manifest.frame, frame), state_in: on_device})
    np.testing.assert_array_equal(state, kept)
    assert not np.array_equal(artifact.to_numpy(on_device), kept)  # the module did write a new state
