"""Reading back the plots and tables a run writes, so tests check what they show rather than
that they exist."""

import csv
import math
from collections import Counter

import numpy as np
from matplotlib import colormaps, colors, image

CONFUSION_SIZE = (500, 400)  # (width, height) in pixels of a confusion matrix of <= 3 classes
CURVES_SIZE = (1100, 400)  # two panels
SCATTER_SIZE = (500, 500)
TRAIN, VALIDATION = colors.to_rgb("C0"), colors.to_rgb("C1")  # the curves' line colours
POINT = 0.7 * np.asarray(TRAIN) + 0.3  # a scatter point (C0 at alpha 0.7) on white
TOP_LOSS_COLUMNS = ["file", "actual", "predicted", "predicted_probability", "actual_probability",
                    "loss"]


def read_png(path, size: tuple[int, int]) -> np.ndarray:
    """The RGB pixels (floats in [0, 1]) of the PNG at `path`, checked to be `size` (width,
    height) and not blank."""
    pixels = image.imread(path)[..., :3]
    assert pixels.shape[:2] == (size[1], size[0]), (path, pixels.shape)
    assert pixels.std() > 0.05 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10, path
    return pixels


def count_colour(pixels: np.ndarray, rgb) -> int:
    """How many pixels show the colour `rgb`, to within 8-bit rounding."""
    return int((np.abs(pixels - np.asarray(rgb)) <= 1.5 / 255).all(axis=-1).sum())


def assert_confusion_png(path, matrix) -> None:
    """The PNG at `path` draws `matrix` (at most 3 classes): each count's shade of blue covers
    as many cells' worth of pixels as the count has cells."""
    pixels = read_png(path, CONFUSION_SIZE)
    matrix = np.asarray(matrix)
    area = {int(value): count_colour(pixels, colormaps["Blues"](value / matrix.max())[:3])
            / np.sum(matrix == value) for value in np.unique(matrix)}
    assert min(area.values()) > 0.9 * max(area.values()), area


def read_csv(path, fields) -> list[dict[str, str]]:
    """The rows of the CSV at `path`, checked to have exactly the columns `fields`."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == list(fields), (path, reader.fieldnames)
    return rows


def assert_top_losses_match(path, report) -> None:
    """`top_losses.csv` lists exactly the misclassified recordings that `report`'s confusion
    matrix counts, most confidently wrong first, each with its loss -ln p(actual)."""
    rows = read_csv(path, TOP_LOSS_COLUMNS)
    names, matrix = report["class_names"], np.asarray(report["confusion_matrix"])
    wrong = {(names[i], names[j]): int(matrix[i, j])
             for i, j in zip(*np.nonzero(matrix)) if i != j}
    assert Counter((row["actual"], row["predicted"]) for row in rows) == wrong
    assert len({row["file"] for row in rows}) == len(rows)
    losses = [float(row["loss"]) for row in rows]
    assert losses == sorted(losses, reverse=True)
    for row, loss in zip(rows, losses):
        actual = max(float(row["actual_probability"]), np.finfo(np.float64).tiny)
        assert float(row["predicted_probability"]) >= actual
        assert math.isclose(loss, -math.log(actual), rel_tol=1e-6), row


def assert_val_predictions_match(path, report) -> None:
    """`val_predictions.csv` holds every validation recording once, with probabilities that
    sum to 1 and whose argmax gives `report`'s confusion matrix."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    names = report["class_names"]
    assert len(rows) == report["num_examples"] == len({row["file"] for row in rows})
    probabilities = np.array([[float(row[n]) for n in names] for row in rows])
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-5)
    confusion = np.zeros((len(names), len(names)), np.int64)
    for row, predicted in zip(rows, probabilities.argmax(1)):
        confusion[names.index(row["label"]), predicted] += 1
    assert confusion.tolist() == report["confusion_matrix"]
