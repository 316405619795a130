"""Regression end to end: numeric targets from an audio_folder CSV (or the synthetic heart
rates), MAE/RMSE/R² against their closed forms, and a tiny heart-rate run through train,
eval, predict and cv."""

import csv
import json

import ml_collections
import numpy as np
import pytest
import soundfile as sf
from matplotlib import colors

from cnnjax.audio.synth import (HEART_RATE_CSV, HEART_RATES, SynthSettings, synthesize,
                                write_dataset)
from cnnjax.cv import cross_validate
from cnnjax.data import load_recordings
from cnnjax.data.datasets import SpectrogramDatasets
from cnnjax.data.pipeline import (AugmentSettings, ImageSettings, SpectrogramSource,
                                  eval_batches, train_loader)
from cnnjax.errors import ConfigError, DataError
from cnnjax.evaluation import evaluate_checkpoint
from cnnjax.metrics import r_squared, regression_report
from cnnjax.predict import predict
from cnnjax.train.loop import train_and_evaluate
from cnnjax.train.losses import Loss
from cnnjax.train.tasks import task_for
from cnnjax.train.validation import evaluate
from experiments import heartbeat_rate_regression
from readback import (CURVES_SIZE, POINT, SCATTER_SIZE, TRAIN, VALIDATION, count_colour,
                      read_csv, read_png)
from test_tensorboard import read_scalars

TARGETS = np.array([60.0, 72.0, 75.0, 93.0])


def test_regression_report_matches_the_closed_forms():
    predictions = np.array([62.0, 70.0, 75.0, 89.0])
    report = regression_report(TARGETS, predictions)
    assert report["mae"] == pytest.approx((2 + 2 + 0 + 4) / 4)
    assert report["rmse"] == pytest.approx(np.sqrt((4 + 4 + 0 + 16) / 4))
    total = np.square(TARGETS - TARGETS.mean()).sum()
    assert report["r2"] == pytest.approx(1 - 24 / total)
    assert report["num_examples"] == 4 and report["target_mean"] == pytest.approx(75.0)
    # Predicting the targets' own mean explains nothing; exact predictions explain it all.
    assert regression_report(TARGETS, np.full(4, TARGETS.mean()))["r2"] == pytest.approx(0.0)
    exact = regression_report(TARGETS, TARGETS)
    assert (exact["mae"], exact["rmse"], exact["r2"]) == (0.0, 0.0, 1.0)
    # Constant targets: R² is 1 for exact predictions, else 0 (never NaN).
    assert (r_squared(0.0, 0.0), r_squared(3.0, 0.0)) == (1.0, 0.0)


def test_regression_report_agrees_with_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    targets = rng.uniform(55, 100, 50)
    for predictions in (targets + rng.normal(0, 8, 50), rng.uniform(55, 100, 50)):  # R² < 0
        report = regression_report(targets, predictions)
        assert report["mae"] == pytest.approx(metrics.mean_absolute_error(targets, predictions))
        assert report["rmse"] == pytest.approx(
            metrics.root_mean_squared_error(targets, predictions))
        assert report["r2"] == pytest.approx(metrics.r2_score(targets, predictions))
    constant = np.full(5, 70.0)
    for predictions in (constant, constant + 1):
        assert regression_report(constant, predictions)["r2"] == \
            metrics.r2_score(constant, predictions)


def write_csv_folder(root, rows):
    for path, *_ in rows:
        sf.write(root / path, synthesize("normal", np.random.default_rng(len(path)), 4000, 1.0),
                 4000, subtype="PCM_16")
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "target"])
        writer.writerows(rows)


def audio_folder(tmp_path, source):
    data = heartbeat_rate_regression.get_config().data
    data.update(name="audio_folder", manual_dir=str(source), csv="labels.csv",
                data_dir=str(tmp_path / "cache"))
    return data


def test_a_csv_target_column_is_stored_and_bad_cells_are_named(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    write_csv_folder(source, [("a.wav", "x", "61.5"), ("b.wav", "y", "-3"),
                              ("c.wav", "x", "1e2")])
    recordings = load_recordings(audio_folder(tmp_path, source), log=lambda _: None)
    assert recordings.file_names == ["a.wav", "b.wav", "c.wav"]
    np.testing.assert_array_equal(recordings.targets, np.float32([61.5, -3.0, 100.0]))

    write_csv_folder(source, [("a.wav", "x", "61.5"), ("b.wav", "y", "fast"),
                              ("c.wav", "x", ""), ("d.wav", "x", "nan")])
    with pytest.raises(DataError) as error:
        load_recordings(audio_folder(tmp_path, source), log=lambda _: None)
    message = str(error.value)
    assert "labels.csv: the target column must hold a number in every row; lines 3 " \
           "('fast'), 4 (''), 5 ('nan') do not." in message and "\n" not in message


def test_sources_without_targets_have_none():
    assert SpectrogramSource([np.zeros((4, 4))], np.zeros(1)).targets is None


def test_batches_carry_each_windows_target():
    spectrograms = [np.random.default_rng(i).uniform(-80, 0, (8, 25)).astype(np.float32)
                    for i in range(3)]
    source = SpectrogramSource(spectrograms, np.array([0, 1, 0]), TARGETS[:3])
    image = ImageSettings(crop_frames=10, image_size=(8, 10))
    batch = next(iter(train_loader(source, image, AugmentSettings(), batch_size=3, seed=0,
                                   epoch=1)))
    assert batch["target"].dtype == np.float32
    np.testing.assert_array_equal(np.sort(batch["target"]), np.sort(TARGETS[:3]))
    for batch in eval_batches(source, image, batch_size=4):
        real = batch["mask"]
        np.testing.assert_array_equal(batch["target"][real], TARGETS[batch["record"][real]])


def test_synthetic_heart_rates_vary_and_the_recordings_stay_as_they_were(tmp_path):
    settings = SynthSettings(num_per_class=(("normal", 6), ("murmur", 3), ("extrastole", 3)),
                             min_duration=1.0, max_duration=2.0, seed=4)
    folder = write_dataset(settings, tmp_path)
    with open(folder / HEART_RATE_CSV) as f:
        rows = list(csv.DictReader(f))
    rates = np.array([float(r["target"]) for r in rows])
    assert len(rows) == 12 and np.all((HEART_RATES[0] <= rates) & (rates <= HEART_RATES[1]))
    assert rates.std() > 5  # uniform over 55-100 BPM: std 13
    assert all((folder / r["path"]).is_file() for r in rows)
    # The recordings are those the generator wrote before it recorded the rates.
    rng = np.random.default_rng(settings.seed)
    for row in rows:
        duration = rng.uniform(settings.min_duration, settings.max_duration)
        expected = synthesize(row["label"], rng, settings.sample_rate, duration)
        assert row["group"] == str(100 + int(rng.integers(0, 200)))
        written, _ = sf.read(folder / row["path"], dtype="float32")
        np.testing.assert_allclose(written, expected, atol=1 / 32768)




def tiny_config(root) -> ml_collections.ConfigDict:
    config = heartbeat_rate_regression.get_config()
    config.data.data_dir = str(root / "data")
    config.data.synthetic.num_per_class = (("normal", 10), ("murmur", 6), ("extrastole", 6))
    config.data.image_size = (32, 32)
    config.data.crop_seconds = 1.0
    config.model.widths = (8, 16)
    config.model.dense = (16,)
    config.batch_size = 4
    config.eval_batch_size = 8
    config.num_epochs = 2
    return config


def test_a_best_metric_the_task_does_not_record_stops_before_any_data(tmp_path):
    config = tiny_config(tmp_path)
    config.checkpoint.best_metric = "val_accuracy"
    with pytest.raises(ConfigError, match="'val_accuracy' is not recorded when "
                                          "config.loss.name='huber'.*'val_mae'"):
        train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "data").exists()


@pytest.mark.slow
def test_a_tiny_heart_rate_run_trains_evaluates_predicts_and_cross_validates(tmp_path):
    config = tiny_config(tmp_path)
    workdir = tmp_path / "run"
    report = train_and_evaluate(config, workdir)
    assert set(report) == {"mae", "rmse", "r2", "num_examples", "target_mean", "target_std",
                           "baseline"}
    assert set(report["baseline"]) == {"prediction", "mae", "rmse", "r2"}
    assert json.loads((workdir / "report.json").read_text()) == report
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert {"train_loss", "train_mae", "train_rmse", "train_r2", "val_loss", "val_mae",
            "val_rmse", "val_r2"} <= set(records[-1]) and "val_accuracy" not in records[-1]
    assert records[-1]["val_mae"] == report["mae"]
    curves = read_png(workdir / "curves.png", CURVES_SIZE)
    assert count_colour(curves, TRAIN) > 0 and count_colour(curves, VALIDATION) > 0
    scatter = read_png(workdir / "predicted_vs_true.png", SCATTER_SIZE)
    assert count_colour(scatter, POINT) > 0 and count_colour(scatter, colors.to_rgb("grey")) > 0
    assert not (workdir / "confusion_matrix.png").exists()
    # One row per validation recording, largest error first, at the rate it was made with.
    (folder,) = (tmp_path / "data").glob("synthetic_heartbeat-*")
    rates = {row["path"]: float(row["target"])
             for row in read_csv(folder / HEART_RATE_CSV, ["path", "label", "group", "target"])}
    rows = read_csv(workdir / "top_losses.csv", ["file", "actual", "predicted", "error"])
    errors = np.array([float(row["predicted"]) - float(row["actual"]) for row in rows])
    assert len(rows) == report["num_examples"]
    assert [float(row["error"]) for row in rows] == pytest.approx(errors)
    assert np.all(np.diff(np.abs(errors)) <= 0)
    assert np.abs(errors).mean() == pytest.approx(report["mae"], rel=1e-5)
    for row in rows:
        assert float(row["actual"]) == pytest.approx(rates[row["file"]], rel=1e-6)
    assert [v for _, v in read_scalars(workdir / "tensorboard")["val_mae"]] == pytest.approx(
        [r["val_mae"] for r in records], rel=1e-6)

    best = min(records, key=lambda r: (r["val_mae"], -r["step"]))  # val_mae, mode 'min'
    assert evaluate_checkpoint(config, workdir)["mae"] == best["val_mae"]
    with open(workdir / "top_losses.csv") as f:  # rewritten for the best checkpoint
        evaluated = {row["file"]: float(row["predicted"]) for row in csv.DictReader(f)}
    assert len(evaluated) == report["num_examples"]

    path = predict(config, workdir, [str(folder / name) for name in sorted(evaluated)])
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["file", "predicted", "error"]
    for row, name in zip(rows, sorted(evaluated)):  # a validation file gets its evaluation
        assert float(row["predicted"]) == pytest.approx(evaluated[name], rel=1e-5)

    config.num_epochs, config.data.num_folds = 1, 2
    summary = cross_validate(config, tmp_path / "cv")
    folds = [json.loads((tmp_path / "cv" / f"fold_{i}" / "report.json").read_text())
             for i in range(2)]
    assert summary["metrics"]["mae"]["mean"] == pytest.approx(np.mean([f["mae"] for f in folds]))
    assert summary["baseline"]["r2"]["folds"] == [f["baseline"]["r2"] for f in folds]
    assert summary["num_examples"] == 22
    assert not (tmp_path / "cv" / "cv_confusion_matrix.png").exists()
    assert "always the training mean" in (tmp_path / "cv" / "cv_report.md").read_text()


def test_evaluation_averages_each_recordings_predicted_values_over_its_windows():
    """Three recordings of 25, 10 and 4 frames (3, 1 and 1 windows of 10); a stand-in model
    whose output is each window's mean pixel, so the averages can be computed by hand."""
    rng = np.random.default_rng(0)
    spectrograms = [rng.uniform(-80, 0, (8, n)).astype(np.float32) for n in (25, 10, 4)]
    source = SpectrogramSource(spectrograms, np.zeros(3, np.int32), TARGETS[:3])
    image = ImageSettings(crop_frames=10, image_size=(8, 10))
    datasets = SpectrogramDatasets(("a",), source, source, ["x", "y", "z"], image,
                                   AugmentSettings(), batch_size=2, eval_batch_size=2, seed=0)
    loss = Loss(name="mae", target_mean=70.0, target_std=10.0)

    def outputs(state, batch):
        return {"logits": batch["image"].mean(axis=(1, 2, 3))[:, None], "mask": batch["mask"]}

    evaluation = evaluate(None, datasets, outputs, task_for(loss))
    windows = [np.concatenate([b["image"][b["mask"] & (b["record"] == r)]
                               for b in eval_batches(source, image, 2)]) for r in range(3)]
    expected = np.array([np.mean(70.0 + 10.0 * w.mean(axis=(1, 2, 3))) for w in windows])
    assert [len(w) for w in windows] == [3, 1, 1] and evaluation.confusion is None
    np.testing.assert_allclose(evaluation.outputs, expected, rtol=1e-5)
    assert evaluation.loss == pytest.approx(np.abs(expected - TARGETS[:3]).mean(), rel=1e-5)
