"""The most confidently wrong validation recordings, against hand-computed losses."""

import csv
import math
import sys

import numpy as np
import pytest

from cnnjax.report import TOP_LOSS_FIELDS, top_losses, write_top_losses_csv

NAMES = ["extrastole", "murmur", "normal"]
FILES = ["a.wav", "b.wav", "c.wav", "d.wav", "e.wav", "f.wav"]
LABELS = [0, 1, 2, 0, 1, 0]
PROBABILITIES = np.array([
    [0.70, 0.20, 0.10],  # right
    [0.60, 0.30, 0.10],  # wrong: loss -ln 0.3
    [0.10, 0.10, 0.80],  # right
    [0.05, 0.90, 0.05],  # wrong: loss -ln 0.05
    [0.20, 0.50, 0.30],  # right
    [0.00, 0.50, 0.50],  # wrong, p(actual) underflowed to 0; tie broken to the first class
], np.float32)


def test_wrong_ones_sorted_by_loss_with_hand_computed_values():
    rows = top_losses(FILES, LABELS, PROBABILITIES, NAMES)
    assert [row["file"] for row in rows] == ["f.wav", "d.wav", "b.wav"]
    assert [(row["actual"], row["predicted"]) for row in rows] == [
        ("extrastole", "murmur"), ("extrastole", "murmur"), ("murmur", "extrastole")]
    assert rows[0]["loss"] == pytest.approx(-math.log(sys.float_info.min))  # 708.396...
    assert rows[1]["loss"] == pytest.approx(math.log(20), rel=1e-6)
    assert rows[2]["loss"] == pytest.approx(-math.log(0.3), rel=1e-6)
    assert rows[1]["predicted_probability"] == pytest.approx(0.9)
    assert rows[1]["actual_probability"] == pytest.approx(0.05)
    assert rows[0]["actual_probability"] == 0.0
    assert all(set(row) == set(TOP_LOSS_FIELDS) for row in rows)


def test_k_keeps_the_worst_and_ties_keep_input_order():
    assert [r["file"] for r in top_losses(FILES, LABELS, PROBABILITIES, NAMES, k=2)] == \
        ["f.wav", "d.wav"]
    assert top_losses(FILES, LABELS, PROBABILITIES, NAMES, k=0) == []
    same = np.array([[0.2, 0.8], [0.2, 0.8], [0.9, 0.1]])
    assert [r["file"] for r in top_losses(["x", "y", "z"], [0, 0, 0], same, ["p", "q"])] == \
        ["x", "y"]


def test_csv_round_trips_every_digit(tmp_path):
    rows = top_losses(FILES, LABELS, PROBABILITIES, NAMES)
    path = tmp_path / "top_losses.csv"
    write_top_losses_csv(path, rows)
    with path.open(newline="") as f:
        read = list(csv.DictReader(f))
    assert list(read[0]) == list(TOP_LOSS_FIELDS)
    assert [{k: (float(v) if k.endswith(("probability", "loss")) else v)
             for k, v in row.items()} for row in read] == rows

    write_top_losses_csv(path, top_losses(FILES[:1], LABELS[:1], PROBABILITIES[:1], NAMES))
    assert path.read_text().splitlines() == [",".join(TOP_LOSS_FIELDS)]
    assert [p.name for p in tmp_path.iterdir()] == ["top_losses.csv"]


@pytest.mark.parametrize("labels, probabilities, message", [
    ([0, 1], PROBABILITIES, "Expected 6 labels"),
    ([0, 1, 2, 0, 1, 3], PROBABILITIES, "class indices in \\[0, 3\\)"),
    ([0.0, 1, 2, 0, 1, 0], PROBABILITIES, "class indices"),
    (LABELS, PROBABILITIES[:, :2], "Expected 6 labels"),
])
def test_bad_input_is_refused(labels, probabilities, message):
    with pytest.raises(ValueError, match=message):
        top_losses(FILES, labels, probabilities, NAMES)
