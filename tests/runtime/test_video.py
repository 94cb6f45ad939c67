"""Real video in: encoded files (H.264 / MPEG-4) decoded back, bad files refused in one line,
resampling to the model's frame rate, the label timeline and its score, and the strip plot."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from tsm_deploy.data.synthetic import CLASS_NAMES, make_scripted_video
from tsm_deploy.data.video_io import available_codecs, write_video
from tsm_deploy.errors import TsmDeployError
from tsm_deploy.evaluate.strip_plot import strip_times, write_strip_plot
from tsm_deploy.runtime.timeline import build_timeline, score_against_script, score_segments, softmax
from tsm_deploy.runtime.video import VideoFrame, is_camera, open_video, sample_at_rate

H, W, N_FRAMES, FPS = 96, 128, 24, 8.0


def _moving_frames(n: int = N_FRAMES) -> list[np.ndarray]:
    """Smooth gradients that move a few pixels per frame: codec-friendly, every frame different."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    frames = []
    for i in range(n):
        r = 128 + 100 * np.sin((xx + 4 * i) / 19.0)
        g = 128 + 100 * np.cos((yy - 3 * i) / 13.0)
        b = np.full_like(xx, 10.0 * i)
        frames.append(np.stack([r, g, b], axis=-1).clip(0, 255).astype(np.uint8))
    return frames


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    """The same 24 frames encoded with every codec this PyAV can write, plus MKV and AVI containers."""
    root = tmp_path_factory.mktemp("videos")
    out = {}
    for codec in available_codecs():
        out[codec] = root / f"clip_{codec}.mp4"
        assert write_video(_moving_frames(), out[codec], FPS, codec=codec) == codec
    out["mkv"] = root / "clip.mkv"
    write_video(_moving_frames(), out["mkv"], FPS)
    out["avi"] = root / "clip.avi"
    write_video(_moving_frames(), out["avi"], FPS)
    return out


def test_mpeg4_is_always_there_and_auto_picks_h264_when_available():
    codecs = available_codecs()
    assert "mpeg4" in codecs
    assert codecs[0] == ("h264" if "h264" in codecs else "mpeg4")


@pytest.mark.parametrize("kind", ["h264", "mpeg4", "mkv", "avi"])
def test_encoded_video_decodes_to_the_frames_with_timestamps(videos, kind):
    if kind not in videos:
        pytest.skip(f"this PyAV cannot encode {kind}")
    original = _moving_frames()
    with open_video(videos[kind]) as video:
        assert video.fps == pytest.approx(FPS)
        assert (video.width, video.height) == (W, H)
        assert video.duration == pytest.approx(N_FRAMES / FPS, abs=0.2)
        frames = list(video)
    assert len(frames) == N_FRAMES
    assert [f.index for f in frames] == list(range(N_FRAMES))
    assert np.allclose([f.time for f in frames], np.arange(N_FRAMES) / FPS, atol=1e-3)
    for got, want in zip(frames, original):
        assert got.image.shape == (H, W, 3) and got.image.dtype == np.uint8
        assert np.abs(got.image.astype(np.int16) - want).mean() < 4.0  # lossy but the same picture
    # frames in order: each decoded frame is closest to its own original
    errors = [np.abs(frames[5].image.astype(np.int16) - o).mean() for o in original]
    assert int(np.argmin(errors)) == 5


def test_a_stream_is_iterated_once(videos):
    video = open_video(videos["mpeg4"])
    assert len(list(video)) == N_FRAMES
    with pytest.raises(RuntimeError):
        list(video)


def _write_audio(path: Path, codec: str) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=16000, layout="mono")
        wave = np.sin(np.arange(1152 * 8) / 5.0)
        fmt = "s16" if codec == "pcm_s16le" else "fltp"
        for chunk in np.split(wave, 8):
            samples = (chunk * 3000).astype(np.int16) if fmt == "s16" else (chunk * 0.3).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(samples[None], format=fmt, layout="mono")
            frame.sample_rate = 16000
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _write_zero_frame_video(path: Path, fmt: str) -> None:
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        container.start_encoding()
        container.mux(stream.encode(None))


def _bad_files(root: Path, good_mp4: Path, good_mkv: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path, what the one-line error must say)."""
    cases: dict[str, tuple[Path, str]] = {}
    cases["missing"] = (root / "nope.mp4", "not found")
    (root / "a_dir.mp4").mkdir()
    cases["directory"] = (root / "a_dir.mp4", "is a directory")
    (root / "empty.mp4").write_bytes(b"")
    cases["empty"] = (root / "empty.mp4", "empty")
    (root / "notes.mp4").write_text("this is a text file, not a video\n" * 40)
    cases["text"] = (root / "notes.mp4", "not a video FFmpeg can read")
    data = good_mp4.read_bytes()
    (root / "cut.mp4").write_bytes(data[: len(data) // 2])  # the index (moov) is at the end: gone
    cases["truncated mp4"] = (root / "cut.mp4", "truncated")
    data = good_mkv.read_bytes()
    (root / "cut.mkv").write_bytes(data[: len(data) // 2])  # header intact: decodes half, then stops
    cases["truncated mkv"] = (root / "cut.mkv", "truncated")
    damaged = bytearray(data)
    damaged[600:-200] = np.random.default_rng(1).integers(0, 256, len(data) - 800, dtype=np.uint8).tobytes()
    (root / "damaged.mkv").write_bytes(bytes(damaged))
    cases["corrupt"] = (root / "damaged.mkv", "corrupt")
    _write_audio(root / "speech.wav", "pcm_s16le")
    cases["wav"] = (root / "speech.wav", "no video stream (it holds only audio)")
    _write_audio(root / "song.mp3", "libmp3lame")
    cases["mp3"] = (root / "song.mp3", "no video stream (it holds only audio)")
    _write_zero_frame_video(root / "zero.avi", "avi")
    cases["zero-frame avi"] = (root / "zero.avi", "no decodable frames")
    _write_zero_frame_video(root / "zero.mp4", "mp4")
    cases["zero-frame mp4"] = (root / "zero.mp4", "no video stream")
    cases["no camera"] = (Path("/dev/video97"), "no camera at /dev/video97")
    return cases


def test_bad_inputs_are_one_clear_line(tmp_path, videos):
    if "libmp3lame" not in av.codecs_available:
        pytest.skip("no MP3 encoder in this PyAV")
    for name, (path, message) in _bad_files(tmp_path, videos["mpeg4"], videos["mkv"]).items():
        with pytest.raises(TsmDeployError) as info:
            with open_video(path) as video:
                for _ in video:
                    pass
        text = str(info.value)
        assert message in text, f"{name}: {text}"
        assert "\n" not in text and str(path) in text, f"{name}: {text}"


def test_truncated_file_can_be_read_leniently(tmp_path, videos):
    data = videos["mkv"].read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    frames = list(open_video(cut, strict=False))
    assert 0 < len(frames) < N_FRAMES


def test_camera_paths():
    assert is_camera("/dev/video0") and is_camera("/dev/video12")
    assert not is_camera("/dev/video") and not is_camera("video0.mp4") and not is_camera("/tmp/dev/video0")


def test_sample_at_rate_on_a_decoded_video(videos):
    down = list(sample_at_rate(open_video(videos["mpeg4"]), FPS / 2))
    assert [f.source_index for f in down] == list(range(0, N_FRAMES, 2))
    assert np.allclose([f.time for f in down], np.arange(len(down)) * 2 / FPS)
    up = list(sample_at_rate(open_video(videos["mpeg4"]), FPS * 2))
    assert len(up) == 2 * (N_FRAMES - 1) + 1  # ticks stop at the last frame
    # a tick halfway between two frames takes the earlier one
    assert [f.source_index for f in up[:6]] == [0, 0, 1, 1, 2, 2]
    assert [f.index for f in up] == list(range(len(up)))


def test_sample_at_rate_picks_the_nearest_frame_of_a_jittery_camera():
    rng = np.random.default_rng(0)
    times = np.arange(90) / 30.0 + rng.uniform(-0.01, 0.01, 90)
    times[0] = 0.0
    frames = [VideoFrame(np.zeros((2, 2, 3), np.uint8), float(t), i) for i, t in enumerate(times)]
    sampled = list(sample_at_rate(frames, 8.0))
    ticks = np.arange(len(sampled)) / 8.0
    assert ticks[-1] <= times[-1] < ticks[-1] + 1 / 8.0
    expected = [int(np.argmin(np.abs(times - t))) for t in ticks]
    assert [f.source_index for f in sampled] == expected
    with pytest.raises(TsmDeployError, match="positive"):
        list(sample_at_rate(frames, 0))


def _logits_for(labels: list[int], n_class: int = 4, margin: float = 4.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 0.3, (len(labels), n_class))
    logits[np.arange(len(labels)), labels] += margin
    return logits


def test_timeline_segments_and_flicker_merging():
    labels = [0] * 10 + [1] + [0] * 5 + [2] * 10  # one frame of class 1 inside a run of class 0
    times = np.arange(len(labels)) / FPS
    logits = _logits_for(labels)
    names = ["wave", "clap", "jump", "sit"]

    raw = build_timeline(times, logits, names)
    assert [(s.name, s.frames) for s in raw.segments] == [("wave", 10), ("clap", 1), ("wave", 5), ("jump", 10)]

    merged = build_timeline(times, logits, names, min_duration=0.3)
    assert [(s.name, s.frames) for s in merged.segments] == [("wave", 16), ("jump", 10)]
    first, second = merged.segments
    assert first.start == 0.0 and first.end == pytest.approx(16 / FPS) and second.end == pytest.approx(26 / FPS)
    probs = softmax(logits)
    assert first.confidence == pytest.approx(probs[:16, 0].mean())  # includes the flicker frame's low value
    assert list(merged.top1[:12]) == labels[:12]  # the raw top-1 is kept beside the merged labels

    data = json.loads(merged.to_json())
    assert [s["name"] for s in data["segments"]] == ["wave", "jump"] and data["frames"] == 26
    table = merged.table()
    assert "wave" in table and "jump" in table and len(table.splitlines()) == 3


def test_history_smooths_before_the_argmax():
    labels = [0] * 8 + [1] + [0] * 8
    logits = _logits_for(labels, margin=2.0)
    times = np.arange(len(labels)) / FPS
    assert len(build_timeline(times, logits).segments) == 3
    assert len(build_timeline(times, logits, history=4).segments) == 1  # averaged with 3 frames of class 0


def test_timeline_rejects_bad_input():
    with pytest.raises(TsmDeployError, match="increasing"):
        build_timeline([0.0, 0.0], np.zeros((2, 3)))
    with pytest.raises(TsmDeployError, match="scores"):
        build_timeline([0.0, 1.0], np.zeros((3, 3)))
    with pytest.raises(TsmDeployError, match="class names"):
        build_timeline([0.0], np.zeros((1, 3)), names=["a"])


def test_score_against_script():
    script = [
        {"label": 0, "start": 0, "end": 8},
        {"label": 2, "start": 8, "end": 16},
        {"label": 3, "start": 16, "end": 24},
    ]
    # right except: the second segment starts with 3 frames of the old label (history filling up),
    # and the third segment is mostly wrong
    predicted = [0] * 8 + [0, 0, 0] + [2] * 5 + [3, 3, 3] + [1] * 5
    timeline = build_timeline(np.arange(24) / FPS, _logits_for(predicted))
    assert score_against_script(timeline, script) == pytest.approx(2 / 3)
    rows = score_segments(timeline, script)
    assert [r.predicted for r in rows] == [0, 2, 1] and [r.frames for r in rows] == [8, 8, 8]
    # ignoring the first 3 frames of each segment does not rescue the third
    assert score_against_script(timeline, script, ignore_first=3) == pytest.approx(2 / 3)
    # tuples work too; a segment with no frames left counts as wrong
    assert score_against_script(timeline, [(0, 8, 0), (8, 11, 2)], ignore_first=3) == pytest.approx(1 / 2)


def test_score_by_time_after_resampling():
    """The script counts frames of a 16 fps video; the timeline was sampled at 8 fps."""
    script = [(0, 16, 1), (16, 32, 0)]
    predicted = [1] * 8 + [0] * 8  # 8 fps: a second each
    timeline = build_timeline(np.arange(16) / 8.0, _logits_for(predicted))
    assert score_against_script(timeline, script, fps=16.0) == 1.0
    # by index the first segment would hold all 16 frames (a tie, broken towards class 0) and the second none
    assert score_against_script(timeline, script) == 0.0


def test_scripted_video_end_to_end(tmp_path):
    """make_scripted_video -> encode -> decode -> resample -> timeline of oracle-with-noise logits -> score."""
    actions = [1, 0, 10]
    frames, script = make_scripted_video(seed=5, actions=actions, frames_per_action=12, size=64)
    path = tmp_path / "scripted.mp4"
    write_video(frames, path, FPS)
    decoded = list(sample_at_rate(open_video(path), FPS))
    assert len(decoded) == len(frames) == 36
    truth = np.concatenate([[s["label"]] * (s["end"] - s["start"]) for s in script])
    predicted = truth.copy()
    predicted[[3, 20, 30]] = 4  # single-frame flickers
    timeline = build_timeline([f.time for f in decoded], _logits_for(list(predicted), n_class=len(CLASS_NAMES)),
                              CLASS_NAMES, min_duration=0.25)
    assert [s.label for s in timeline.segments] == actions
    assert score_against_script(timeline, script, fps=FPS) == 1.0

    png = tmp_path / "strip.png"
    write_strip_plot(png, timeline, path, n=6, script=script, script_fps=FPS, title="scripted")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_strip_plot_shows_the_frames(tmp_path):
    """Pure red frames: the PNG must contain a lot of pure red (the frames were drawn), atomically written."""
    import matplotlib.image

    red = np.zeros((48, 64, 3), np.uint8)
    red[..., 0] = 255
    frames = [VideoFrame(red, i / FPS, i) for i in range(16)]
    timeline = build_timeline(np.arange(16) / FPS, _logits_for([2] * 16), ["a", "b", "c", "d"])
    assert np.allclose(strip_times(timeline, 4), (np.arange(4) + 0.5) * (15 / FPS) / 4)
    png = tmp_path / "out" / "strip.png"
    write_strip_plot(png, timeline, frames, n=4)
    image = matplotlib.image.imread(str(png))
    assert image.shape[1] > 3 * image.shape[0]  # a strip: four frames side by side
    pure_red = (image[..., 0] > 0.95) & (image[..., 1] < 0.05) & (image[..., 2] < 0.05)
    assert pure_red.mean() > 0.2
    assert [p.name for p in png.parent.iterdir()] == ["strip.png"]  # no temporary file left


def test_write_video_is_atomic_and_checks_its_input(tmp_path):
    target = tmp_path / "v.mp4"
    frames = _moving_frames(4) + [np.zeros((H + 2, W, 3), np.uint8)]  # the last frame has another size
    with pytest.raises(TsmDeployError, match="all frames must match"):
        write_video(frames, target, FPS)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(TsmDeployError, match="even"):
        write_video([np.zeros((33, 64, 3), np.uint8)], target, FPS)
    with pytest.raises(TsmDeployError, match="suffix"):
        write_video(_moving_frames(2), tmp_path / "v.gif", FPS)
    with pytest.raises(TsmDeployError, match="no frames"):
        write_video([], target, FPS)
    with pytest.raises(TsmDeployError, match="unknown codec"):
        write_video(_moving_frames(2), target, FPS, codec="vp9")
    assert list(tmp_path.iterdir()) == []
