"""Evaluation per recording: every window of a recording goes through the model and the
softmax is averaged over them, so long recordings are judged whole."""

import numpy as np
import pytest

from cnnjax.data.datasets import SpectrogramDatasets
from cnnjax.data.pipeline import (AugmentSettings, ImageSettings, SpectrogramSource,
                                  eval_batches, spectrogram_image)
from cnnjax.train.losses import Loss
from cnnjax.train.tasks import task_for
from cnnjax.train.validation import evaluate

IMAGE = ImageSettings(crop_frames=10, image_size=(8, 10))
NAMES = ("a", "b", "c")


def recordings() -> SpectrogramSource:
    """Lengths 25 (windows at 0, 10, 15), 10 (one) and 4 frames (one, padded)."""
    rng = np.random.default_rng(0)
    spectrograms = [rng.uniform(-80, 0, size=(8, frames)).astype(np.float32)
                    for frames in (25, 10, 4)]
    return SpectrogramSource(spectrograms, np.array([2, 0, 1], np.int32))


def test_eval_batches_carry_every_window_with_its_record_and_pad_the_last():
    source = recordings()
    batches = list(eval_batches(source, IMAGE, batch_size=3))
    assert [b["image"].shape for b in batches] == [(3, 8, 10, 1), (3, 8, 10, 1)]
    records = np.concatenate([b["record"][b["mask"]] for b in batches])
    assert records.tolist() == [0, 0, 0, 1, 2]
    assert batches[-1]["mask"].tolist() == [True, True, False]
    first = source[0]["spectrogram"]
    np.testing.assert_array_equal(batches[0]["image"][2],
                                  spectrogram_image(first[:, 15:25], IMAGE))
    centre = list(eval_batches(source, IMAGE, batch_size=3, windows="centre"))
    assert np.concatenate([b["record"][b["mask"]] for b in centre]).tolist() == [0, 1, 2]
    np.testing.assert_array_equal(centre[0]["image"][0],
                                  spectrogram_image(first[:, 7:17], IMAGE))


def fake_logits(state, batch):
    """A stand-in model whose logits are fixed functions of the image, so the expected
    averages can be computed by hand below."""
    image = batch["image"].reshape(len(batch["image"]), -1)
    logits = np.stack([image.mean(1), image.std(1), image.max(1)], axis=1) * 3
    return {"logits": logits, "mask": batch["mask"]}


@pytest.mark.parametrize("windows", ["all", "centre"])
def test_evaluate_averages_the_softmax_over_each_recordings_windows(windows):
    source = recordings()
    datasets = SpectrogramDatasets(NAMES, source, source, ["x", "y", "z"], IMAGE,
                                   AugmentSettings(), batch_size=2, eval_batch_size=2, seed=0,
                                   eval_windows=windows)
    loss, confusion, probabilities = evaluate(None, datasets, fake_logits, task_for(Loss()))

    def softmax(x):
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    expected = []
    for index in range(len(source)):
        rows = [b for batch in eval_batches(source, IMAGE, 2, windows)
                for b in zip(batch["image"][batch["mask"]], batch["record"][batch["mask"]])
                if b[1] == index]
        logits = fake_logits(None, {"image": np.stack([r[0] for r in rows]),
                                    "mask": None})["logits"]
        expected.append(softmax(logits).mean(0))
    expected = np.array(expected)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5)
    labels = source.labels
    assert loss == pytest.approx(-np.log(expected[np.arange(3), labels]).mean(), rel=1e-5)
    by_hand = np.zeros((3, 3), int)
    for label, predicted in zip(labels, expected.argmax(-1)):
        by_hand[label, predicted] += 1
    np.testing.assert_array_equal(confusion, by_hand)
