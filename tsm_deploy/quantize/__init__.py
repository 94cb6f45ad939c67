"""int8 post-training quantization: calibration of a stream model and its fake-quantized twin."""

from .calibrate import (
    DEFAULT_PERCENTILE,
    INT8_RTOL,
    ActivationQuant,
    QuantSpec,
    calibrate,
    fake_quantize,
    quantize_weight,
    state_grids,
)
from .frames import DEFAULT_CALIBRATION_FRAMES, CalibrationFrames, calibrate_checkpoint, calibration_frames

__all__ = ["DEFAULT_PERCENTILE", "INT8_RTOL", "ActivationQuant", "QuantSpec", "calibrate", "fake_quantize", "quantize_weight",
           "state_grids", "DEFAULT_CALIBRATION_FRAMES", "CalibrationFrames", "calibrate_checkpoint", "calibration_frames"]
