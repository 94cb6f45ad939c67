"""int8 calibration and the fake-quantized model: the grids are exact where they must be (zero, the
shift's state), and the trained default model keeps its answers on its own task."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tsm_deploy.checkpoint.default import trained_checkpoint
from tsm_deploy.data import synthetic
from tsm_deploy.errors import TsmDeployError
from tsm_deploy.quantize import ActivationQuant, QuantSpec, calibrate, fake_quantize, quantize_weight
from tsm_deploy.train.loop import frame_size, preprocess_clips


def _task_clips(checkpoint, seed: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Prepared clips of the default model's task ``(count, 8, 1, 3, S, S)`` and their labels."""
    size = checkpoint.config.input_size
    clips, labels = synthetic.make_batch(seed, 0, count, 8, frame_size(size))
    return preprocess_clips(clips, size).reshape(count, 8, 1, 3, size, size).numpy(), labels


def _stream(model, clip: np.ndarray) -> tuple[np.ndarray, list[list[torch.Tensor]]]:
    """Per-frame logits of one clip streamed from an empty state, and the state after each frame."""
    buffers, logits, states = model.zero_buffers(), [], []
    with torch.no_grad():
        for frame in clip:
            out, *buffers = model(torch.from_numpy(frame), *buffers)
            logits.append(out.numpy()[0])
            states.append(buffers)
    return np.array(logits), states


@pytest.fixture(scope="module")
def trained():
    checkpoint = trained_checkpoint()
    if checkpoint is None:
        pytest.skip("the trained default model is not in this checkout")
    return checkpoint


def test_zero_is_exact_and_a_silent_tensor_is_not_an_error():
    act = ActivationQuant.from_range(-0.37, 5.9)
    assert act.fake(torch.zeros(4)).abs().max() == 0
    assert 0 <= act.zero_point <= 255 and act.scale == pytest.approx(6.27 / 255)
    relu6 = ActivationQuant.from_range(0.2, 6.0)  # a range above zero still holds zero
    assert relu6.zero_point == 0 and relu6.fake(torch.tensor([0.0, 6.0, 7.0])).tolist() == pytest.approx([0, 6, 6])
    silent = ActivationQuant.from_range(0.0, 0.0)
    assert silent.scale > 0 and silent.fake(torch.zeros(3)).abs().max() == 0


def test_weights_are_int8_per_output_channel():
    weight = torch.randn(8, 4, 3, 3) * torch.logspace(-3, 1, 8).reshape(8, 1, 1, 1)  # channels 1e4 apart
    values, scales = quantize_weight(weight)
    assert values.dtype == torch.int8 and int(values.abs().max()) == 127 and scales.shape == (8,)
    error = (values.float() * scales.reshape(8, 1, 1, 1) - weight).abs().reshape(8, -1).amax(1)
    assert bool((error <= scales / 2 + 1e-12).all())  # each channel within half of its own step


def test_calibration_on_one_frame_and_the_state_on_the_producers_grid(small_checkpoint):
    """One frame: every cached slice is the zero fill, which is not an error. The next state a
    shifted block returns is a slice of its input, so it lies on the previous block's grid."""
    model = small_checkpoint.model()
    frame = np.random.default_rng(0).standard_normal(model.input_shapes()["frame"]).astype(np.float32)
    spec = calibrate(model, [frame])
    assert spec.frames == 1 and spec.method == "percentile 99.99"
    quantized = fake_quantize(model, spec)
    frames = np.random.default_rng(1).standard_normal((3, *model.input_shapes()["frame"])).astype(np.float32)
    _, states = _stream(quantized, frames)
    shifted = [i for i, block in enumerate(quantized.features) if type(block).__name__ == "InvertedResidualWithShift"]
    assert len(shifted) == len(states[0]) == 10
    for step in states:
        for block, state in zip(shifted, step):
            act = spec.activations[f"features.{block - 1}:out"]
            levels = state / act.scale + act.zero_point
            assert torch.allclose(levels, levels.round(), atol=1e-3), f"state of block {block} is off its grid"
    # weights of the copy are on their int8 grid; the model given is untouched
    for name, module in quantized.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            values, scales = quantize_weight(module.weight)
            assert torch.allclose(values.float() * scales.reshape(-1, 1, 1, 1), module.weight, rtol=0, atol=1e-6)
    original = dict(model.named_parameters())["features.0.0.weight"]
    assert not torch.equal(original, dict(quantized.named_parameters())["features.0.0.weight"])


def test_the_default_model_in_int8_keeps_its_answers(trained):
    """Calibrated on 8 clips of its task, checked on 12 others (96 streamed frames)."""
    model = trained.model()
    calibration, _ = _task_clips(trained, seed=7, count=8)
    quantized = fake_quantize(model, calibrate(model, (frame for clip in calibration for frame in clip)))
    clips, labels = _task_clips(trained, seed=1000, count=12)
    fp32 = [_stream(model, clip)[0] for clip in clips]
    int8 = [_stream(quantized, clip)[0] for clip in clips]
    frame_agreement = np.mean([np.mean(a.argmax(1) == b.argmax(1)) for a, b in zip(fp32, int8)])
    assert frame_agreement >= 0.95, frame_agreement
    assert [a.mean(0).argmax() for a in fp32] == [b.mean(0).argmax() for b in int8]  # every clip's answer
    assert np.mean([b.mean(0).argmax() == label for b, label in zip(int8, labels)]) >= 11 / 12
    error = max(float(np.abs(a - b).max() / np.abs(a).max()) for a, b in zip(fp32, int8))
    assert 0 < error < 0.2, error  # quantized for real, and not far off


def test_bad_calibration_input_is_refused(small_checkpoint):
    model = small_checkpoint.model()
    with pytest.raises(TsmDeployError, match="calibration: no frames"):
        calibrate(model, [])
    with pytest.raises(TsmDeployError, match="percentile must be in"):
        calibrate(model, [np.zeros(model.input_shapes()["frame"], np.float32)], percentile=20)
    spec = calibrate(model, [np.zeros(model.input_shapes()["frame"], np.float32)])  # a black frame is fine
    incomplete = QuantSpec(spec.method, spec.frames, dict(list(spec.activations.items())[:-1]))
    with pytest.raises(TsmDeployError, match="calibrated on another model"):
        fake_quantize(model, incomplete)
