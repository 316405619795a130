import json
import os
import stat

import numpy as np
import pytest

from cnnjax.metrics import classification_report, confusion_matrix
from cnnjax.report import (
    append_jsonl,
    format_summary,
    plot_confusion_matrix,
    plot_curves,
    read_jsonl,
    write_json,
)
from readback import (CURVES_SIZE, TRAIN, VALIDATION, assert_confusion_png, count_colour,
                      read_png)

NAMES = ["cat", "dog", "bird"]
# Same example as tests/test_metrics.py: accuracy 0.6, balanced accuracy 2/3,
# macro-F1 38/63 = 0.6032 (4 d.p.).
CONFUSION = confusion_matrix(
    [0, 0, 0, 1, 1, 2, 2, 2, 2, 0], [0, 1, 2, 1, 1, 2, 2, 0, 1, 0], num_classes=3
)


def test_write_json_round_trip_creates_parents_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "a" / "b" / "report.json"
    obj = {"accuracy": 0.5, "names": ["x", "y"], "nested": {"n": 3}}
    write_json(path, obj)
    assert json.loads(path.read_text()) == obj
    assert path.read_text().startswith('{\n  "accuracy"')  # indent=2

    write_json(path, {"replaced": True})
    assert json.loads(path.read_text()) == {"replaced": True}
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]


def test_written_files_get_the_permissions_of_an_ordinary_open(tmp_path):
    """A temporary file is private to its owner; the report replacing it must not be, or
    colleagues sharing a workdir cannot read it."""
    previous = os.umask(0o027)
    try:
        write_json(tmp_path / "report.json", {"ok": 1})
        with open(tmp_path / "plain.json", "w"):
            pass
    finally:
        os.umask(previous)
    mode = stat.S_IMODE((tmp_path / "report.json").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.json").stat().st_mode) == 0o640


def test_write_json_converts_numpy_values(tmp_path):
    path = tmp_path / "r.json"
    write_json(path, {"loss": np.float32(0.25), "counts": np.arange(3)})
    assert json.loads(path.read_text()) == {"loss": 0.25, "counts": [0, 1, 2]}


def test_write_json_failure_keeps_previous_file(tmp_path):
    path = tmp_path / "r.json"
    write_json(path, {"ok": 1})
    with pytest.raises(TypeError):
        write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_append_and_read_jsonl(tmp_path):
    path = tmp_path / "logs" / "history.jsonl"
    records = [{"epoch": 1, "train_loss": 1.5}, {"epoch": 2, "train_loss": np.float64(0.75)}]
    for record in records:
        append_jsonl(path, record)
    assert path.read_text().count("\n") == 2
    assert read_jsonl(path) == [{"epoch": 1, "train_loss": 1.5}, {"epoch": 2, "train_loss": 0.75}]


def test_plot_confusion_matrix_writes_png(tmp_path):
    path = tmp_path / "plots" / "confusion.png"
    plot_confusion_matrix(CONFUSION, NAMES, path, title="Validation")
    assert_confusion_png(path, CONFUSION)


def test_plot_confusion_matrix_rejects_wrong_number_of_names(tmp_path):
    with pytest.raises(ValueError, match="2 class names"):
        plot_confusion_matrix(CONFUSION, ["cat", "dog"], tmp_path / "c.png")


def test_plot_curves_writes_png_with_partial_history(tmp_path):
    history = [
        {"epoch": 1, "train_loss": 1.2, "train_accuracy": 0.5},
        {"epoch": 2, "train_loss": 0.9, "train_accuracy": 0.6, "val_loss": 1.0, "val_accuracy": 0.55},
        {"epoch": 3, "train_loss": 0.7, "train_accuracy": 0.7},
    ]
    path = tmp_path / "curves.png"
    plot_curves(history, path)
    pixels = read_png(path, CURVES_SIZE)
    assert count_colour(pixels, TRAIN) > 0 and count_colour(pixels, VALIDATION) > 0


def test_plot_curves_handles_history_without_accuracy(tmp_path):
    path = tmp_path / "loss_only.png"
    plot_curves([{"train_loss": 1.0}, {"train_loss": 0.5}], path)
    pixels = read_png(path, CURVES_SIZE)
    assert count_colour(pixels, TRAIN) > 0 and count_colour(pixels, VALIDATION) == 0


def test_format_summary_lists_metrics_classes_and_confusion():
    report = classification_report(CONFUSION, NAMES)
    text = format_summary(report, title="Test")
    lines = text.splitlines()

    assert lines[0] == "Test (10 examples)"
    assert "accuracy           0.6000" in text
    assert "error rate         0.4000" in text
    assert "balanced accuracy  0.6667" in text
    assert "macro-F1           0.6032" in text
    # dog: precision 2/4, recall 2/2, F1 2/3, support 2
    assert any(line.split() == ["dog", "0.5000", "1.0000", "0.6667", "2"] for line in lines)
    # confusion header and the "bird" row [1, 1, 2]
    assert any(line.split() == NAMES for line in lines)
    assert any(line.split() == ["bird", "1", "1", "2"] for line in lines)
    assert len(lines) < 25
