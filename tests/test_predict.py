"""`--mode=predict` end to end: a tiny run trained in a subprocess, then new and validation
recordings classified, checked against the eval-mode forward of the best checkpoint on
spectrograms this test computes itself with librosa."""

import csv
import json
import os
import re
import subprocess
import sys

import jax
import librosa
import numpy as np
import optax
import pytest
import soundfile as sf

from cnnjax.audio.synth import synthesize
from cnnjax.checkpoint import read_variables
from cnnjax.configs import base
from cnnjax.data.pipeline import (ImageSettings, SpectrogramSource, eval_batches,
                                  spectrogram_image, window_starts)
from cnnjax.errors import DataError
from cnnjax.models.registry import get_model
from cnnjax.predict import input_files, predict, saved_config
from cnnjax.train.state import create_train_state
from conftest import REPO

TINY = ["--config.num_epochs=2", "--config.batch_size=4", "--config.eval_batch_size=8",
        "--config.data.image_size=(32,32)", "--config.data.crop_seconds=1.0",
        "--config.data.synthetic.num_per_class=(('normal',8),('murmur',6),('extrastole',6))",
        "--config.model.name=resnet18", "--config.checkpoint.best_metric=val_loss",
        "--config.checkpoint.best_mode=min"]
CLASSES = ["extrastole", "murmur", "normal"]
# What TINY makes of the default audio settings: 1 s at 4000 Hz with hop 125 is 32 frames.
IMAGE = ImageSettings(crop_frames=32, image_size=(32, 32), channels=1, top_db=80.0)


def run_main(*args, data_dir, timeout=300):
    env = dict(os.environ, CNNJAX_DATA_DIR=str(data_dir), PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "cnnjax.main", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A trained tiny run of the default experiment: (workdir, data dir)."""
    root = tmp_path_factory.mktemp("predict")
    result = run_main(f"--workdir={root / 'run'}", *TINY, data_dir=root / "data")
    assert result.returncode == 0, result.stderr
    (root / "train_stderr.txt").write_text(result.stderr)
    return root / "run", root / "data"


def finished_bar(stderr: str, description: str, total: int, unit: str) -> bool:
    """Whether tqdm drew `description`'s bar at `total`/`total` with a rate in `unit`s."""
    return re.search(rf"{description}: 100%\|.*\| {total}/{total} \[[\d:]+<[\d:]+, "
                     rf" *[\d.]+(?:{unit}/s|s/{unit})\]", stderr) is not None


def test_the_run_counted_its_features_and_each_evaluation(run):
    stderr = (run[0].parent / "train_stderr.txt").read_text()
    assert finished_bar(stderr, "log-mel", 20, "recording")  # the 20 synthetic recordings
    validation = int(re.search(r"(\d+) validation examples", stderr).group(1))
    # Evaluation's bar is cleared when it ends, so only its count towards the total stays.
    assert re.search(rf"evaluating: +\d+%\|.*\| \d+/{validation} \[", stderr)


def best_step(workdir) -> int:
    """The epoch-end step with the lowest validation loss (the newest among equals)."""
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return max(records, key=lambda r: (-r["val_loss"], r["step"]))["step"]


def log_mel_of_file(path) -> np.ndarray:
    """The run's features, computed here with soundfile and librosa: the file's samples kept
    as 16-bit, resampled to 4000 Hz, log-mel in dB relative to the loudest bin."""
    samples, rate = sf.read(path, dtype="float32", always_2d=True)
    quantised = np.clip(np.round(samples.mean(axis=1) * 32768.0), -32768, 32767) / 32768.0
    samples = quantised.astype(np.float32)
    if rate != 4000:
        samples = librosa.resample(samples, orig_sr=rate, target_sr=4000)
    mel = librosa.feature.melspectrogram(y=samples, sr=4000, n_fft=1024, hop_length=125,
                                         n_mels=128, fmin=20.0, fmax=2000.0, power=2.0)
    return librosa.power_to_db(mel, ref=np.max, top_db=80.0).astype(np.float32)


def restored(workdir, step):
    """The run's model and the variables of its checkpoint at `step`."""
    config = json.loads((workdir / "config.json").read_text())
    model = get_model(config["model"], num_classes=len(CLASSES))
    state = create_train_state(model, optax.identity(), (32, 32, 1), jax.random.PRNGKey(9))
    return model, read_variables(workdir / "checkpoints" / str(step), state.variables)


def eval_forward(workdir, step, images=None, spectrograms=None) -> np.ndarray:
    """Softmax of the restored checkpoint in eval mode, on `images`, or on the windows that
    evaluation's own pipeline cuts from each of `spectrograms`, averaged per recording."""
    model, variables = restored(workdir, step)

    def softmax(images):
        logits = model.apply(variables, images, train=False)
        return np.asarray(jax.nn.softmax(logits.astype(np.float32), axis=-1))

    if images is not None:
        return softmax(images)
    images, records = evaluation_windows(spectrograms)
    return per_recording(softmax(images), records)


def evaluation_windows(spectrograms) -> tuple[np.ndarray, np.ndarray]:
    """Every window evaluation's own pipeline cuts from `spectrograms`, and its recording."""
    source = SpectrogramSource(spectrograms, np.zeros(len(spectrograms), np.int32))
    batches = list(eval_batches(source, IMAGE, batch_size=8, windows="all"))
    return (np.concatenate([b["image"][b["mask"]] for b in batches]),
            np.concatenate([b["record"][b["mask"]] for b in batches]))


def per_recording(window_probabilities: np.ndarray, records: np.ndarray) -> np.ndarray:
    return np.stack([window_probabilities[records == r].mean(axis=0)
                     for r in range(records.max() + 1)])


def read_predictions(workdir) -> list[dict[str, str]]:
    with (workdir / "predictions.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def write_new_recordings(folder):
    """Recordings unlike the training files: another rate and sample type, stereo, shorter
    and longer than one window, and one that is not audio at all."""
    folder.mkdir()
    rng = np.random.default_rng(5)
    sf.write(folder / "short_8k_float.wav", synthesize("murmur", rng, 8000, 0.6), 8000,
             subtype="FLOAT")
    stereo = np.stack([synthesize("normal", rng, 4000, 3.5)] * 2, axis=1) * [1.0, 0.5]
    sf.write(folder / "long_stereo_24bit.wav", stereo, 4000, subtype="PCM_24")
    (folder / "zz_not_audio.wav").write_bytes(b"RIFF but not really")


@pytest.mark.slow
def test_predict_cli_equals_eval_forward_of_the_best_checkpoint(run, tmp_path):
    workdir, data_dir = run
    write_new_recordings(tmp_path / "new")
    (set_b,) = data_dir.glob("synthetic_heartbeat-*/set_b")
    result = run_main(f"--workdir={workdir}", "--mode=predict",
                      f"--predict.inputs={set_b}/*.wav,{tmp_path}/new/*.wav",
                      "--config.eval_batch_size=3", data_dir=data_dir, timeout=120)
    assert result.returncode == 0, result.stderr
    step = best_step(workdir)
    assert f"checkpoint at step {step}" in result.stderr
    assert "skipped" in result.stderr and "zz_not_audio.wav: unreadable" in result.stderr
    files = len(list(set_b.glob("*.wav"))) + 3
    assert finished_bar(result.stderr, "reading", files, "file")
    assert finished_bar(result.stderr, "log-mel", files - 1, "recording")
    assert re.search(r"predicting: 100%\|.*\| (\d+)/\1 ", result.stderr)

    rows = read_predictions(workdir)
    assert list(rows[0]) == ["file", "predicted", *CLASSES, "error"]
    files = sorted(str(p) for p in set_b.glob("*.wav")) + [
        str(tmp_path / "new" / name) for name in
        ("long_stereo_24bit.wav", "short_8k_float.wav", "zz_not_audio.wav")]
    assert [row["file"] for row in rows] == files
    bad = rows.pop()
    assert bad["predicted"] == "" and bad["error"].startswith("unreadable")
    assert all(bad[name] == "" for name in CLASSES)

    got = np.array([[float(row[name]) for name in CLASSES] for row in rows])
    expected = eval_forward(workdir, step, spectrograms=[log_mel_of_file(row["file"])
                                                         for row in rows])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    assert [row["predicted"] for row in rows] == [CLASSES[i] for i in got.argmax(axis=1)]
    assert all(row["error"] == "" for row in rows)


@pytest.mark.slow
def test_all_windows_average_the_softmax_over_the_whole_recording(run, tmp_path):
    workdir, _ = run
    write_new_recordings(tmp_path / "new")
    long = tmp_path / "new" / "long_stereo_24bit.wav"
    path = predict(saved_config(workdir), workdir, [str(long)], windows="all")
    (row,) = read_predictions(workdir)
    assert path == workdir / "predictions.csv" and row["file"] == str(long)

    spectrogram = log_mel_of_file(long)
    assert spectrogram.shape[1] == 113  # 3.5 s: 1 + 14000 // 125 frames
    starts = [0, 32, 64, 81]  # four windows of 32 frames, the last one ending with the file
    images = np.stack([spectrogram_image(spectrogram[:, s:s + 32], IMAGE) for s in starts])
    expected = eval_forward(workdir, best_step(workdir), images=images)
    got = np.array([float(row[name]) for name in CLASSES])
    np.testing.assert_allclose(got, expected.mean(axis=0), atol=1e-5)
    assert row["predicted"] == CLASSES[int(expected.mean(axis=0).argmax())]
    assert not np.allclose(expected[0], expected[-1], atol=1e-4)  # the windows do differ


def test_predict_adapts_batch_norm_to_the_recordings_it_is_given(run):
    workdir, data_dir = run
    (set_b,) = data_dir.glob("synthetic_heartbeat-*/set_b")
    files = sorted(str(p) for p in set_b.glob("*.wav"))
    config = saved_config(workdir)
    config.eval_batch_size = 512  # every window in one batch: its statistics are the estimate
    predict(config, workdir, files, windows="all")
    as_trained = np.array([[float(row[name]) for name in CLASSES]
                           for row in read_predictions(workdir)])
    config.adapt_batch_norm = True
    predict(config, workdir, files, windows="all")
    got = np.array([[float(row[name]) for name in CLASSES] for row in read_predictions(workdir)])

    images, records = evaluation_windows([log_mel_of_file(f) for f in files])
    assert len(images) <= 512
    model, variables = restored(workdir, best_step(workdir))
    # A train-mode pass from zero running statistics leaves 0.1 x the batch's own.
    zeros = jax.tree.map(np.zeros_like, variables["batch_stats"])
    _, updates = model.apply({**variables, "batch_stats": zeros}, images, train=True,
                             mutable=["batch_stats"])
    adapted = {**variables, "batch_stats": jax.tree.map(lambda x: x / 0.1,
                                                        updates["batch_stats"])}
    probabilities = np.asarray(jax.nn.softmax(model.apply(adapted, images, train=False)))
    expected = per_recording(probabilities, records)
    np.testing.assert_allclose(got, expected, atol=2e-5)
    assert np.abs(got - as_trained).max() > 1e-3


def test_a_saved_config_lacking_newer_fields_reads_their_defaults(tmp_path):
    written = base.get_config().to_dict()
    written["num_epochs"] = 3
    del written["adapt_batch_norm"], written["augment"]["noise_db"]
    (tmp_path / "config.json").write_text(json.dumps(written))
    config = saved_config(tmp_path)
    assert config.num_epochs == 3  # saved values win
    assert config.adapt_batch_norm is False and config.augment.noise_db == 0.0
    assert config.augment.gain_db == written["augment"]["gain_db"]


def test_window_starts_cover_the_recording():
    assert window_starts(113, 32, "centre") == [None]
    assert window_starts(113, 32, "all") == [0, 32, 64, 81]
    assert window_starts(64, 32, "all") == [0, 32]
    assert window_starts(20, 32, "all") == [None]  # shorter: padded like evaluation pads


def test_input_files_expands_globs_sorted_and_keeps_plain_paths(tmp_path):
    for name in ("b.wav", "a.wav", "sub/c.wav"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert input_files(f"{tmp_path}/*.wav") == [str(tmp_path / "a.wav"), str(tmp_path / "b.wav")]
    assert input_files([f"{tmp_path}/**/c.wav", f"{tmp_path}/missing.wav"]) == [
        str(tmp_path / "sub" / "c.wav"), f"{tmp_path}/missing.wav"]
    with pytest.raises(DataError, match="matches no file"):
        input_files(f"{tmp_path}/*.flac")


@pytest.mark.parametrize("flags, code, message", [
    ([], 2, "--mode=predict needs the recordings to classify"),
    (["--predict.inputs=x.wav"], 1, "config.json does not exist: train a run"),
])
def test_predict_without_inputs_or_run_says_what_is_missing(tmp_path, flags, code, message):
    result = run_main(f"--workdir={tmp_path / 'run'}", "--mode=predict", *flags,
                      data_dir=tmp_path / "data", timeout=120)
    assert result.returncode == code
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnnjax: error:"), result.stderr
    assert message in lines[0]
