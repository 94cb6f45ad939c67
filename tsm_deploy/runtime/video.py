"""Real video in: decoded RGB frames with timestamps, from a file or a V4L2 camera, and resampling
to the frame rate the model was trained at.

Runtime side (it runs on the device): standard library + numpy, and PyAV imported only when a video
is opened. Anything wrong with the input (missing, a directory, empty, not a video, audio only, no
frames, corrupt) is one :class:`TsmDeployError` line, raised by :func:`open_video` itself where it
can be seen before streaming (the first frame is decoded there), else while iterating.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from .errors import TsmDeployError

log = logging.getLogger(__name__)

_CAMERA = re.compile(r"/dev/video\d+")
_TIME_EPS = 1e-6  # seconds: timestamps are rationals rounded to float


@dataclass(frozen=True)
class VideoFrame:
    """One decoded frame: ``image`` uint8 ``(H, W, 3)`` RGB, ``time`` seconds since the first frame.

    ``index`` counts the frames as delivered; after :func:`sample_at_rate` it is the sample number and
    ``source_index`` the decoded frame it came from.
    """

    image: np.ndarray
    time: float
    index: int
    source_index: int | None = None


def is_camera(path: str | os.PathLike) -> bool:
    """``/dev/videoN``: a V4L2 capture device rather than a file."""
    return bool(_CAMERA.fullmatch(str(path)))


def _import_av() -> Any:
    try:
        import av
    except ImportError:
        raise TsmDeployError("reading video needs PyAV (pip install av)") from None
    return av


def _ffmpeg_message(exc: BaseException) -> str:
    """FFmpeg's reason without PyAV's errno/file-name decoration."""
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).strip().splitlines()[-1] if str(text).strip() else type(exc).__name__


def _check_file(path: Path) -> None:
    if not path.exists():
        raise TsmDeployError(f"video file not found: {path}")
    if path.is_dir():
        raise TsmDeployError(f"{path} is a directory, not a video file")
    if not path.is_file():
        raise TsmDeployError(f"{path} is not a regular file")
    if path.stat().st_size == 0:
        raise TsmDeployError(f"{path} is empty (0 bytes), not a video")


def _rate(stream: Any) -> float | None:
    for name in ("average_rate", "guessed_rate", "base_rate"):
        value = getattr(stream, name, None)
        if value and float(value) > 0:
            return float(value)
    return None


class VideoStream:
    """An opened video: metadata now, frames by iterating (once). Use as a context manager or
    iterate to the end; either closes the file/camera."""

    def __init__(self, source: str, container: Any, camera: bool, strict: bool = True) -> None:
        self.source = source
        self.is_camera = camera
        self._container = container
        stream = container.streams.video[0]
        # files: frame + slice threads, so decoding keeps up with the network; a camera: slice
        # threads only (frame threading holds frames back, adding latency to a live stream)
        stream.thread_type = "SLICE" if camera else "AUTO"
        self._stream = stream
        self.codec: str = stream.codec_context.name
        self.fps: float | None = _rate(stream)
        self.width: int = int(stream.codec_context.width)
        self.height: int = int(stream.codec_context.height)
        self.frame_count: int | None = int(stream.frames) or None  # as the container declares it
        self.duration: float | None = (  # declared by the stream, else by the container
            float(stream.duration * stream.time_base) if stream.duration and stream.time_base
            else container.duration / 1e6 if container.duration and not camera else None
        )
        self.strict = strict
        self._decoded = self._decode()
        self._first = self._next_or_none()
        if self._first is None:
            self.close()
            raise TsmDeployError(f"{source} has a video stream but no decodable frames")
        self._started = False

    def _decode(self) -> Iterator[Any]:
        av = _import_av()
        try:
            yield from self._container.decode(self._stream)
        except (av.error.FFmpegError, ValueError, OSError) as exc:
            raise TsmDeployError(f"{self.source} is corrupt or truncated: {_ffmpeg_message(exc)}") from None

    def _next_or_none(self) -> Any:
        try:
            return next(self._decoded)
        except StopIteration:
            return None
        except TsmDeployError:
            self.close()
            raise

    def __iter__(self) -> Iterator[VideoFrame]:
        if self._started:
            raise RuntimeError("a VideoStream can be iterated once; open the video again")
        self._started = True
        return self._frames()

    def _frames(self) -> Iterator[VideoFrame]:
        start = self._first.time
        step = 1.0 / self.fps if self.fps else None
        # AVI is constant-rate by design and stores no presentation times: with B-frames FFmpeg
        # hands out decode-order stamps, so the frame count is the clock there.
        by_index = step is not None and (start is None or self._container.format.name == "avi")
        frame, index, last, warned = self._first, 0, -1.0, False
        try:
            while frame is not None:
                if by_index:
                    time = index * step
                elif frame.time is not None:
                    time = float(frame.time - start)
                else:
                    raise TsmDeployError(f"{self.source}: frame {index} has no timestamp and the stream no frame rate")
                if time <= last:  # out of order or repeated stamps: keep the clock moving forward
                    if not warned:
                        log.warning("%s: frame %d stamped %.4f s after %.4f s; stepping by the frame rate", self.source, index, time, last)
                        warned = True
                    time = last + (step or _TIME_EPS)
                yield VideoFrame(frame.to_ndarray(format="rgb24"), time, index)
                frame, index, last = self._next_or_none(), index + 1, time
            self._check_complete(index, last + (step or 0.0))
        finally:
            self.close()

    def _check_complete(self, frames: int, span: float) -> None:
        """A file that ends before what its header declares was cut short (FFmpeg just stops there)."""
        if self.is_camera:
            return
        short = None
        if self.frame_count and frames < self.frame_count - 1:  # one frame of slack for rounding muxers
            short = f"{frames} of the {self.frame_count} frames its header declares"
        elif self.duration and self.fps and span < self.duration - max(3.0 / self.fps, 0.25):
            short = f"{span:.2f} s of the {self.duration:.2f} s its header declares"
        if short is None:
            return
        message = f"{self.source} is truncated: it decodes to {short}"
        if self.strict:
            raise TsmDeployError(message)
        log.warning("%s", message)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self) -> "VideoStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        rate = f"{self.fps:.3g} fps" if self.fps else "unknown frame rate"
        count = f", {self.frame_count} frames" if self.frame_count else ""
        return f"{self.source}: {self.width}x{self.height} {self.codec}, {rate}{count}"


def open_video(
    path: str | os.PathLike,
    camera_size: tuple[int, int] | None = None,
    camera_fps: float | None = None,
    strict: bool = True,
) -> VideoStream:
    """Open a video file, or a V4L2 camera ``/dev/videoN`` (``camera_size`` = (width, height) and
    ``camera_fps`` are requests to the driver). The first frame is decoded here, so a file without
    frames fails now rather than mid-stream. A file that turns out shorter than its header declares
    raises at the end of the iteration (``strict=False``: logs a warning instead)."""
    source = str(path)
    camera = is_camera(source)
    if camera:
        if not os.path.exists(source):
            raise TsmDeployError(f"no camera at {source}")
    else:
        _check_file(Path(source))
    av = _import_av()
    options: dict[str, str] = {}
    if camera and camera_size:
        options["video_size"] = f"{int(camera_size[0])}x{int(camera_size[1])}"
    if camera and camera_fps:
        options["framerate"] = str(Fraction(camera_fps).limit_denominator(1001))
    try:
        container = av.open(source, format="v4l2" if camera else None, options=options)
    except av.error.EOFError:
        raise TsmDeployError(f"{source} ends before any video data: an empty or truncated video") from None
    except av.error.InvalidDataError as exc:
        raise TsmDeployError(
            f"cannot read video {source}: not a video FFmpeg can read, or truncated ({_ffmpeg_message(exc)})"
        ) from None
    except (av.error.FFmpegError, ValueError, OSError, UnicodeDecodeError) as exc:
        what = "camera" if camera else "video"
        raise TsmDeployError(f"cannot open {what} {source}: {_ffmpeg_message(exc)}") from None
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        container.close()
        has = f"it holds only {', '.join(kinds)}" if kinds else "it holds no streams at all: a video with no frames?"
        raise TsmDeployError(f"{source} has no video stream ({has})")
    stream = VideoStream(source, container, camera, strict)
    log.info("opened %s", stream.describe())
    return stream


def sample_at_rate(frames: Iterable[VideoFrame], fps: float) -> Iterator[VideoFrame]:
    """Resample to ``fps``: for each tick ``k / fps`` (from the first frame's time) the decoded frame
    nearest in time (the earlier one on a tie). A slower source repeats frames, a faster one drops
    them; ticks stop at the last frame's time. Yields frames with ``time`` = the tick."""
    if not fps or fps <= 0 or not np.isfinite(fps):
        raise TsmDeployError(f"sampling frame rate must be a positive number, got {fps}")
    period = 1.0 / fps
    previous: VideoFrame | None = None
    t0: float | None = None
    k = 0
    for frame in frames:
        if t0 is None:
            t0 = frame.time
        while (tick := t0 + k * period) <= frame.time + _TIME_EPS:
            pick = frame
            if previous is not None and tick - previous.time <= frame.time - tick + _TIME_EPS:
                pick = previous
            yield replace(pick, time=k * period, index=k, source_index=pick.index)
            k += 1
        previous = frame


__all__ = ["VideoFrame", "VideoStream", "is_camera", "open_video", "sample_at_rate"]
