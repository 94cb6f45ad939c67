"""int8 post-training quantization: calibration of a stream model and its fake-quantized twin."""

from .calibrate import (
    DEFAULT_PERCENTILE,
    ActivationQuant,
    QuantSpec,
    calibrate,
    fake_quantize,
    quantize_weight,
    state_grids,
)

__all__ = ["DEFAULT_PERCENTILE", "ActivationQuant", "QuantSpec", "calibrate", "fake_quantize", "quantize_weight",
           "state_grids"]
