"""Writing videos (host side: numpy + PyAV): demo clips and test files the runtime then decodes.

H.264 (libx264) when PyAV's bundled FFmpeg has the encoder, else MPEG-4 part 2 (FFmpeg's own
``mpeg4``, always present). The file is written under a temporary name and renamed, so a failed
encode never leaves a half-written video.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import TsmDeployError
from ..support.atomic import atomic_output_file

log = logging.getLogger(__name__)

# container chosen from the destination's suffix (the temporary name has none FFmpeg knows)
_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}
_ENCODERS = {"h264": "libx264", "mpeg4": "mpeg4"}


def _av():
    try:
        import av
    except ImportError:
        raise TsmDeployError("writing video needs PyAV (pip install av)") from None
    return av


def available_codecs() -> list[str]:
    """The codecs of :func:`write_video` this PyAV build can encode, best first."""
    av = _av()
    found = []
    for name, encoder in _ENCODERS.items():
        try:
            av.codec.Codec(encoder, "w")
        except Exception:  # PyAV raises UnknownCodecError (a ValueError) or FFmpeg's error
            continue
        found.append(name)
    return found


def _pick_codec(codec: str) -> str:
    available = available_codecs()
    if codec == "auto":
        if not available:
            raise TsmDeployError("this PyAV build has neither an H.264 nor an MPEG-4 encoder")
        return available[0]
    if codec not in _ENCODERS:
        raise TsmDeployError(f"unknown codec {codec!r}; use one of auto, {', '.join(_ENCODERS)}")
    if codec not in available:
        raise TsmDeployError(f"this PyAV build cannot encode {codec} (it can: {', '.join(available) or 'nothing'})")
    return codec


def _check_frame(frame: np.ndarray, size: tuple[int, int] | None, index: int) -> tuple[int, int]:
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise TsmDeployError(f"frame {index}: expected a uint8 HxWx3 RGB frame, got {frame.dtype} {tuple(frame.shape)}")
    h, w = frame.shape[:2]
    if size is None and (h % 2 or w % 2 or h < 2 or w < 2):
        raise TsmDeployError(f"frame size {w}x{h}: H.264 / MPEG-4 (yuv420p) need an even width and height")
    if size is not None and (h, w) != size:
        raise TsmDeployError(f"frame {index} is {w}x{h}, the first was {size[1]}x{size[0]}: all frames must match")
    return h, w


def write_video(frames: Iterable[np.ndarray], path: str | Path, fps: float, codec: str = "auto") -> str:
    """Encode uint8 RGB ``(H, W, 3)`` frames at ``fps`` to ``path`` (.mp4, .mov, .mkv or .avi).

    ``codec``: ``"auto"`` (h264 if available, else mpeg4), ``"h264"`` or ``"mpeg4"``.
    Returns the codec used. Frame ``i`` is stamped ``i / fps`` seconds.
    """
    path = Path(path)
    container_format = _CONTAINERS.get(path.suffix.lower())
    if container_format is None:
        raise TsmDeployError(f"{path}: unknown video suffix; use one of {', '.join(sorted(_CONTAINERS))}")
    if not fps or fps <= 0 or not np.isfinite(fps):
        raise TsmDeployError(f"frame rate must be a positive number, got {fps}")
    codec = _pick_codec(codec)
    av = _av()
    rate = Fraction(fps).limit_denominator(1001)
    count = 0
    with atomic_output_file(path) as tmp:
        with av.open(str(tmp), mode="w", format=container_format) as container:
            stream = None
            size: tuple[int, int] | None = None
            for frame in frames:
                frame = np.asarray(frame)
                size = _check_frame(frame, size, count)
                if stream is None:
                    stream = container.add_stream(_ENCODERS[codec], rate=rate)
                    stream.width, stream.height = size[1], size[0]
                    stream.pix_fmt = "yuv420p"
                    if codec == "h264":  # near-lossless, so decoded frames stay close to the originals
                        stream.options = {"crf": "12", "preset": "veryfast"}
                        if container_format == "avi":  # AVI stores no presentation times: no reordering
                            stream.options = {**stream.options, "bf": "0"}
                    else:  # ~1 bit per pixel: mpeg4's default bit rate blurs small frames to blocks
                        stream.bit_rate = max(400_000, int(size[0] * size[1] * float(rate)))
                video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                video_frame.pts = count
                video_frame.time_base = 1 / rate
                container.mux(stream.encode(video_frame))
                count += 1
            if stream is None:
                raise TsmDeployError(f"no frames to write to {path}")
            container.mux(stream.encode(None))  # flush the encoder's delayed frames
    log.info("wrote %s: %d frames %dx%d at %s fps (%s)", path, count, size[1], size[0], rate, codec)
    return codec


__all__ = ["available_codecs", "write_video"]
