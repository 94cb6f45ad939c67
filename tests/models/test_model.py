"""Online TSM-MobileNetV2: structure of the original demo, and streaming == offline uni-directional."""

import pytest
import torch

from tsm_deploy.checkpoint import default_checkpoint
from tsm_deploy.models import ModelConfig, build_model, input_names, output_names
from tsm_deploy.models.mobilenet_v2 import InvertedResidualWithShift

# Buffer shapes of the original online demo at 224x224 (online_demo/main.py).
ORIGINAL_BUFFERS_224 = [
    (1, 3, 56, 56), (1, 4, 28, 28), (1, 4, 28, 28), (1, 8, 14, 14), (1, 8, 14, 14),
    (1, 8, 14, 14), (1, 12, 14, 14), (1, 12, 14, 14), (1, 20, 7, 7), (1, 20, 7, 7),
]


def test_buffer_shapes_match_original_demo():
    model = build_model(ModelConfig(n_class=27))
    assert [spec.shape for spec in model.buffer_specs] == ORIGINAL_BUFFERS_224
    shifted = [i for i, f in enumerate(model.features) if isinstance(f, InvertedResidualWithShift)]
    assert shifted == [3, 5, 6, 8, 9, 10, 12, 13, 15, 16]  # block index + 1 for the stem


def test_parameter_names_match_original_demo():
    state = build_model(ModelConfig(n_class=27)).state_dict()
    assert state["classifier.weight"].shape == (27, 1280)
    assert state["features.0.0.weight"].shape == (32, 3, 3, 3)
    assert state["features.1.conv.0.weight"].shape == (32, 1, 3, 3)  # expansion-1 block: depthwise first
    assert state["features.3.conv.0.weight"].shape == (144, 24, 1, 1)
    assert state["features.18.0.weight"].shape == (1280, 320, 1, 1)
    assert len([k for k in state if k.endswith("running_mean")]) == 52


def test_io_names():
    model = build_model(ModelConfig(input_size=64))
    assert input_names(model)[:2] == ["frame", "shift_buffer_0"] and len(input_names(model)) == 11
    assert output_names(model)[-1] == "next_shift_buffer_9"


@pytest.mark.parametrize("placement", ["residual", "inplace"])
@pytest.mark.parametrize("fold_div", [8, 4])
def test_streaming_equals_offline_unidirectional(placement, fold_div):
    torch.manual_seed(0)
    model = build_model(ModelConfig(n_class=5, input_size=64, width_mult=0.5, fold_div=fold_div, placement=placement))
    clip = torch.randn(6, 3, 64, 64)
    with torch.no_grad():
        offline = model.forward_clip(clip, n_segment=6)
        buffers = model.zero_buffers()
        streamed = []
        for frame in clip:
            logits, *buffers = model(frame[None], *buffers)
            streamed.append(logits)
    torch.testing.assert_close(torch.cat(streamed), offline, rtol=1e-5, atol=1e-6)


def test_shift_matters():
    """Later frames must depend on earlier ones (else the streaming test above proves nothing)."""
    model = default_checkpoint(ModelConfig(n_class=5, input_size=64)).model()
    a, b = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        _, *after_a = model(a, *model.zero_buffers())
        first = model(b, *model.zero_buffers())[0]
        second = model(b, *after_a)[0]
    assert (first - second).abs().max() > 1e-3 * first.abs().max()


def test_no_shift_variant_has_same_weights_and_no_buffers():
    with_shift = build_model(ModelConfig(input_size=64))
    without = build_model(ModelConfig(input_size=64, shift=False))
    assert without.buffer_specs == ()
    without.load_state_dict(with_shift.state_dict())


def test_input_size_must_be_multiple_of_32():
    with pytest.raises(ValueError, match="multiple of 32"):
        build_model(ModelConfig(input_size=100))
