"""The temporal shift against a plain loop written from the paper's definition."""

import numpy as np
import onnx
import pytest
import torch

from tsm_deploy.models.shift import ShiftDirection, TemporalShift, online_shift, temporal_shift


def loop_reference(x: np.ndarray, n_segment: int, fold_div: int, direction: str) -> np.ndarray:
    nt, c, h, w = x.shape
    fold = c // fold_div
    clips = x.reshape(nt // n_segment, n_segment, c, h, w)
    out = np.zeros_like(clips)
    for n in range(clips.shape[0]):
        for t in range(n_segment):
            for ch in range(c):
                if ch < fold:
                    src = t + 1 if direction == "bidirectional" else t - 1
                elif ch < 2 * fold and direction == "bidirectional":
                    src = t - 1
                else:
                    src = t
                if 0 <= src < n_segment:
                    out[n, t, ch] = clips[n, src, ch]
    return out.reshape(x.shape)


@pytest.mark.parametrize("direction", ["bidirectional", "unidirectional"])
@pytest.mark.parametrize("fold_div,channels", [(8, 16), (8, 20), (4, 12), (3, 7)])
@pytest.mark.parametrize("n_segment,batch", [(8, 1), (3, 2), (1, 2)])
def test_shift_matches_loop_reference(direction, fold_div, channels, n_segment, batch):
    x = torch.randn(batch * n_segment, channels, 3, 2)
    got = temporal_shift(x, n_segment, fold_div, direction).numpy()
    np.testing.assert_array_equal(got, loop_reference(x.numpy(), n_segment, fold_div, direction))


def test_shift_moves_data_and_keeps_the_rest():
    x = torch.arange(4 * 8, dtype=torch.float32).reshape(4, 8, 1, 1)  # 4 frames, 8 channels, fold 1
    out = temporal_shift(x, 4, 8, ShiftDirection.BIDIRECTIONAL)[:, :, 0, 0]
    assert out[0, 0] == x[1, 0, 0, 0] and out[3, 0] == 0  # from the next frame, zero at the end
    assert out[1, 1] == x[0, 1, 0, 0] and out[0, 1] == 0  # from the previous frame, zero at the start
    assert torch.equal(out[:, 2:], x[:, 2:, 0, 0])


def test_online_shift_streams_like_unidirectional_offline():
    frames = torch.randn(6, 16, 4, 4)
    buffer = torch.zeros(1, 2, 4, 4)
    streamed = []
    for frame in frames:
        shifted, buffer = online_shift(frame[None], buffer, 8)
        streamed.append(shifted)
    offline = temporal_shift(frames, 6, 8, "unidirectional")
    torch.testing.assert_close(torch.cat(streamed), offline, rtol=0, atol=0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="multiple of n_segment"):
        temporal_shift(torch.zeros(5, 8, 1, 1), 2)
    with pytest.raises(ValueError, match="fold_div"):
        temporal_shift(torch.zeros(2, 8, 1, 1), 2, fold_div=1)


def test_temporal_shift_module_keeps_original_key_names():
    module = TemporalShift(torch.nn.Conv2d(8, 8, 1), n_segment=4)
    assert set(module.state_dict()) == {"net.weight", "net.bias"}


@pytest.mark.parametrize("direction", ["bidirectional", "unidirectional"])
def test_shift_exports_to_slice_and_concat_only(tmp_path, direction):
    module = TemporalShift(torch.nn.Identity(), n_segment=4, fold_div=8, direction=direction)
    path = tmp_path / "shift.onnx"
    torch.onnx.export(module, (torch.randn(8, 16, 2, 2),), str(path), opset_version=17, dynamo=False)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "ScatterND" not in ops and "ScatterElements" not in ops
    assert {"Slice", "Concat"} <= ops
