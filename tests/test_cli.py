"""The command line end to end, in real subprocesses."""

import json
import os
import subprocess
import sys

import pytest

from cnnjax.ensemble import ensemble
from conftest import REPO
from readback import (CURVES_SIZE, TRAIN, VALIDATION, assert_confusion_png,
                      assert_top_losses_match, assert_val_predictions_match, count_colour,
                      read_png)

TINY = ["--config.num_epochs=2", "--config.data.workers=1", "--config.batch_size=4", "--config.eval_batch_size=8",
        "--config.data.image_size=(32,32)", "--config.data.crop_seconds=1.0",
        "--config.data.synthetic.num_per_class=(('normal',8),('murmur',6),('extrastole',6))",
        "--config.model.name=resnet18"]


def run_main(*args, data_dir, timeout=300) -> subprocess.CompletedProcess:
    env = dict(os.environ, CNNJAX_DATA_DIR=str(data_dir), PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "cnnjax.main", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_default_experiment_with_tiny_overrides_writes_every_output(tmp_path):
    """One epoch, then the same run continued to two, so the report of either epoch that
    turns out best is at hand when --mode=eval re-evaluates it."""
    workdir = tmp_path / "run"
    first = run_main(f"--workdir={workdir}", *TINY, "--config.num_epochs=1",
                     data_dir=tmp_path / "data")
    assert first.returncode == 0, first.stderr
    reports = {1: json.loads((workdir / "report.json").read_text())}
    result = run_main(f"--workdir={workdir}", *TINY, data_dir=tmp_path / "data")
    assert result.returncode == 0, result.stderr
    assert "resuming with changed config fields: num_epochs: 1 -> 2" in result.stderr
    epochs = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert {"train_loss", "val_loss", "train_accuracy", "val_accuracy", "val_error_rate"} <= \
        set(epochs[0])
    report = reports[2] = json.loads((workdir / "report.json").read_text())
    assert report["class_names"] == ["extrastole", "murmur", "normal"]
    assert sum(map(sum, report["confusion_matrix"])) == report["num_examples"] == 6
    assert report["accuracy"] == pytest.approx(epochs[-1]["val_accuracy"])
    assert_confusion_png(workdir / "confusion_matrix.png", report["confusion_matrix"])
    assert_top_losses_match(workdir / "top_losses.csv", report)
    curves = read_png(workdir / "curves.png", CURVES_SIZE)
    assert count_colour(curves, TRAIN) > 0 and count_colour(curves, VALIDATION) > 0
    assert "balanced accuracy" in result.stdout and "confusion matrix" in result.stdout
    assert json.loads((workdir / "config.json").read_text())["num_epochs"] == 2

    # The same command again finds the finished run and does not train it twice.
    again = run_main(f"--workdir={workdir}", *TINY, data_dir=tmp_path / "data")
    assert again.returncode == 0, again.stderr
    assert "resuming from the checkpoint at step 6 (2 epochs done)" in again.stderr
    assert len((workdir / "metrics.jsonl").read_text().splitlines()) == 2

    # --mode=eval re-evaluates the best checkpoint by val_accuracy (the newer one on a tie).
    evaluated = run_main(f"--workdir={workdir}", "--mode=eval", *TINY,
                         data_dir=tmp_path / "data")
    assert evaluated.returncode == 0, evaluated.stderr
    best = max(epochs, key=lambda e: (e["val_accuracy"], e["step"]))
    assert f"checkpoint at step {best['step']}" in evaluated.stdout
    reevaluated = json.loads((workdir / "report.json").read_text())
    assert reevaluated["accuracy"] == pytest.approx(best["val_accuracy"])
    assert reevaluated["balanced_accuracy"] == pytest.approx(best["val_balanced_accuracy"])
    assert reevaluated["confusion_matrix"] == reports[best["epoch"]]["confusion_matrix"]
    assert_confusion_png(workdir / "confusion_matrix.png", reevaluated["confusion_matrix"])
    assert_top_losses_match(workdir / "top_losses.csv", reevaluated)
    assert_val_predictions_match(workdir / "val_predictions.csv", reevaluated)
    # A run ensembled with itself is that run.
    alone = ensemble([workdir, workdir], tmp_path / "ensemble")
    assert alone["confusion_matrix"] == reevaluated["confusion_matrix"]
    assert alone["balanced_accuracy"] == pytest.approx(reevaluated["balanced_accuracy"])


@pytest.mark.parametrize("flag, message", [
    ("--config.num_epoch=3", "config.num_epoch is not a field"),
    ("--config.optimizer.momentum=0.9", "config.optimizer.momentum is not a field"),
    ("--config.optimizer.schedule=linear", "choose one of ['constant', 'cosine', 'one_cycle']"),
    ("--config.batch_size=many", "--config.batch_size=many"),
    ("--mode=serve", "--mode=serve"),
])
def test_bad_config_or_flag_exits_2_with_one_clear_line(tmp_path, flag, message):
    result = run_main(f"--workdir={tmp_path / 'run'}", flag, data_dir=tmp_path / "data",
                      timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnnjax: error:"), result.stderr
    assert message in lines[0]


def test_eval_without_a_checkpoint_says_to_train_first(tmp_path):
    result = run_main(f"--workdir={tmp_path / 'empty'}", "--mode=eval", *TINY,
                      data_dir=tmp_path / "data", timeout=120)
    assert result.returncode == 1
    assert "holds no checkpoint: train first" in result.stderr
