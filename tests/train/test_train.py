"""Training on the synthetic task: runtime-equal preprocessing, the loss, resumable checkpoints,
evaluation metrics, and (slow) the committed default model against its training report."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tsm_deploy.checkpoint import LoadedCheckpoint, save_checkpoint
from tsm_deploy.data import synthetic
from tsm_deploy.errors import TsmDeployError
from tsm_deploy.models import ModelConfig, preprocessing
from tsm_deploy.runtime.preprocess import prepare_frame
from tsm_deploy.train import (
    TrainConfig,
    clip_loss,
    evaluate,
    frame_size,
    load_state,
    preprocess_clips,
    scripted_stream_accuracy,
    summarize,
    train,
)

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "tsm_deploy" / "default_model"
TINY = TrainConfig(input_size=32, width_mult=0.35, n_frames=4, batch_size=2, steps=4, warmup_steps=2, checkpoint_every=2)


def test_preprocessing_is_the_runtimes_bit_for_bit():
    s = 64
    clips, _ = synthetic.make_batch(5, 0, 2, 3, frame_size(s))
    got = preprocess_clips(clips, s).numpy()
    spec = preprocessing(ModelConfig(input_size=s))
    want = np.concatenate([prepare_frame(f, spec) for f in clips.reshape(-1, *clips.shape[2:])])
    assert got.shape == (6, 3, s, s)
    assert np.array_equal(got, want)
    with pytest.raises(ValueError):
        preprocess_clips(clips, 96)


def test_clip_loss_variants():
    torch.manual_seed(0)
    logits = torch.randn(3, 8, 11)
    labels = torch.tensor([0, 5, 10])
    avg = clip_loss(logits, labels, "avg", 0.5)
    late = clip_loss(logits, labels, "avg+late", 0.5)
    assert torch.isclose(avg, torch.nn.functional.cross_entropy(logits.mean(1), labels))
    extra = torch.nn.functional.cross_entropy(logits[:, 4:].reshape(-1, 11), labels.repeat_interleave(4))
    assert torch.isclose(late, avg + 0.5 * extra)


@pytest.fixture
def one_torch_thread():
    """Training on one intra-op thread: the order of every float reduction is then fixed, so a resumed
    run reproduces the straight one bit for bit (with several threads, a busy machine was seen to
    change a loss in its last bit)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_training_resumes_exactly_from_its_checkpoint(tmp_path, one_torch_thread):
    steps_seen = []
    straight = train(TINY, tmp_path / "straight.pt", progress=lambda s, n, loss: steps_seen.append(s))
    assert steps_seen == [1, 2, 3, 4] and straight.step == 4 and len(straight.losses) == 4

    half = replace(TINY, steps=2)
    train(half, tmp_path / "resumed.pt")
    assert load_state(tmp_path / "resumed.pt", TINY).step == 2
    # resuming only changes the step budget, so the run continues where it stopped
    resumed = train(TINY, tmp_path / "resumed.pt", resume=True)
    assert resumed.step == 4
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.losses == straight.losses
    # the smoothing goes on from the exact value, not the rounded one the report keeps
    assert resumed.smoothed_loss == straight.smoothed_loss
    # and the weights did move
    fresh = train(replace(TINY, steps=1), tmp_path / "one.pt").model.state_dict()
    assert not all(torch.equal(a[k], fresh[k]) for k in a)


def test_resume_refuses_a_different_run(tmp_path):
    train(replace(TINY, steps=1), tmp_path / "s.pt")
    with pytest.raises(TsmDeployError, match="lr"):
        train(replace(TINY, lr=0.1), tmp_path / "s.pt", resume=True)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TsmDeployError):
        train(TINY, tmp_path / "junk.pt", resume=True)


def test_stream_fine_tuning_starts_from_a_checkpoint_and_moves_it(tmp_path):
    first = train(TINY, tmp_path / "first.pt").model
    start = LoadedCheckpoint(config=TINY.model_config(), state_dict=first.state_dict(), source="t", sha256="",
                             layout="tsm-deploy")
    save_checkpoint(start, tmp_path / "start.pth")
    tune = replace(TINY, steps=2, streams_per_step=1, stream_actions=2, stream_min_fpa=4, stream_max_fpa=6,
                   stream_skip=2, init_from=str(tmp_path / "start.pth"))
    assert train(replace(tune, steps=1, lr=0.0), tmp_path / "zero.pt").model.state_dict()["classifier.weight"].equal(
        first.state_dict()["classifier.weight"])  # starts from the checkpoint's weights
    tuned = train(tune, tmp_path / "tuned.pt")
    assert tuned.step == 2 and all(np.isfinite(tuned.losses))
    assert not tuned.model.state_dict()["classifier.weight"].equal(first.state_dict()["classifier.weight"])
    with pytest.raises(TsmDeployError, match="streams need"):
        train(replace(tune, stream_skip=4), tmp_path / "bad.pt")


def test_summarize_metrics():
    labels = np.arange(22) % 11
    perfect = np.zeros((22, 4, 11), np.float32)
    perfect[np.arange(22), :, labels] = 5.0
    m = summarize(perfect, labels)
    assert m["top1"] == 1.0 and m["pair_accuracy"] == 1.0 and m["top1_last_frame"] == 1.0
    assert np.trace(np.asarray(m["confusion"])) == 22
    # a model that cannot tell pair members apart: always the pair's first member
    confused = perfect.copy()
    for a, b in synthetic.ORDER_PAIRS:
        confused[labels == b] = perfect[labels == a][0]
    m = summarize(confused, labels)
    assert m["pair_accuracy"] == 0.5
    assert m["per_class"]["moving left"] == 0.0 and m["per_class"]["moving right"] == 1.0
    assert m["top1"] == pytest.approx(12 / 22)


def test_evaluate_runs_on_held_out_clips():
    torch.manual_seed(0)
    model = TINY.model_config()
    from tsm_deploy.models import build_model

    result = evaluate(build_model(model), seed=99, n_clips=11, n_frames=4, input_size=32)
    assert result["clips"] == 11 and result["seed"] == 99
    assert np.asarray(result["confusion"]).sum() == 11



def test_scripted_streams_are_scored_like_the_demo():
    """The default model on scripted streams: the demo's segment score (majority after the history
    fills) is reported beside the segment-end and per-frame scores, and a trained model beats chance."""
    from tsm_deploy.checkpoint import default_checkpoint

    model = default_checkpoint().model()
    result = scripted_stream_accuracy(model, seed=5, input_size=64, frames_per_action=16, history=12, videos=1)
    assert set(result) >= {"segment_end_top1", "frame_top1", "segment_majority_top1"}
    assert result["segment_majority_top1"] > 3 / synthetic.N_CLASSES, result  # chance is 1/11

@pytest.mark.slow
def test_committed_default_model_matches_its_report():
    """The committed report's done-when numbers, re-derived from its own confusion matrices, and
    the committed weights re-evaluated on part of the held-out set (no re-training)."""
    from tsm_deploy.checkpoint import load_checkpoint

    report = json.loads((DEFAULT_MODEL / "training_report.json").read_text())
    tsm, tsn = report["models"]["online TSM"], report["models"]["TSN (no shift)"]
    for entry in (tsm, tsn):
        conf = np.asarray(entry["held_out"]["confusion"])
        assert conf.shape == (11, 11)
        assert np.trace(conf) / conf.sum() == pytest.approx(entry["held_out"]["top1"])
    # the report states honestly whether the bar (TSM >= 90 %, TSN <= 60 % on the order pairs) is met
    met = tsm["held_out"]["top1"] >= 0.90 and tsn["held_out"]["pair_accuracy"] <= 0.60
    assert report["done_when"]["met"] is met
    assert tsn["held_out"]["pair_accuracy"] <= 0.60  # single frames cannot tell the order pairs apart
    assert tsm["held_out"]["pair_accuracy"] >= 0.85  # the shift is what tells them apart
    assert report["eval_seed"] != report["data_seed"]

    labels = (DEFAULT_MODEL / "labels.txt").read_text().splitlines()
    assert labels == list(synthetic.CLASS_NAMES)
    task = json.loads((DEFAULT_MODEL / "task.json").read_text())
    assert task["frame_rate"] == synthetic.FRAME_RATE and task["class_names"] == labels

    checkpoint = load_checkpoint(DEFAULT_MODEL / task["model_file"])
    assert checkpoint.config.to_dict() == tsm["model_config"]
    n = 110
    fresh = evaluate(
        checkpoint.model(), report["eval_seed"], n, task["frames_per_clip"], checkpoint.config.input_size
    )
    assert fresh["top1"] >= tsm["held_out"]["top1"] - 0.08  # 110 of the report's held-out clips
