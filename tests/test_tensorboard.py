"""TensorBoard event files written without TensorFlow, read back by TensorBoard's own reader."""

import io
import json

import ml_collections
import numpy as np
import pytest
from flax import traverse_util
from matplotlib import image as mpimg
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.util import tensor_util

from cnnjax.report import confusion_matrix_figure, png_bytes
from cnnjax.tensorboard import SummaryWriter
from cnnjax.train.loop import TENSORBOARD_DIR, train_and_evaluate
from cnnjax.train.optim import make_schedule
from experiments import heartbeat_synthetic

KEEP_EVERY_EVENT = {"scalars": 0, "images": 0, "tensors": 0}  # the reader samples otherwise


def read(logdir) -> EventAccumulator:
    accumulator = EventAccumulator(str(logdir), size_guidance=KEEP_EVERY_EVENT)
    accumulator.Reload()
    return accumulator


def read_scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    accumulator = read(logdir)
    return {tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]}


def read_text(accumulator: EventAccumulator, tag: str) -> list[tuple[int, str]]:
    return [(event.step, tensor_util.make_ndarray(event.tensor_proto).item().decode())
            for event in accumulator.Tensors(tag)]


def read_hparams(accumulator: EventAccumulator) -> dict[str, object]:
    """The HParams session's values, as the HParams plugin parses them."""
    (content,) = accumulator.PluginTagToContent(hparams_metadata.PLUGIN_NAME).values()
    info = hparams_metadata.parse_session_start_info_plugin_data(content)
    return {name: getattr(value, value.WhichOneof("kind"))
            for name, value in info.hparams.items()}


def decode_png(png: bytes) -> np.ndarray:
    return mpimg.imread(io.BytesIO(png), format="png")


def as_float32(value: float) -> float:
    """Event files store scalars as float32."""
    return float(np.float32(value))


def test_scalars_read_back_with_steps_and_values(tmp_path):
    epochs = {3: {"train_loss": 1.0726430018742878, "val_accuracy": 1 / 3},
              6: {"train_loss": 0.5, "val_accuracy": 2 / 3, "learning_rate": 1.9e-4}}
    with SummaryWriter(tmp_path / "tb") as writer:
        for step, values in epochs.items():
            writer.scalars(step, values)
        # Flushed at every call: a run killed now has lost nothing.
        assert read_scalars(tmp_path / "tb")["train_loss"] == [
            (3, as_float32(1.0726430018742878)), (6, 0.5)]
    scalars = read_scalars(tmp_path / "tb")
    assert scalars == {
        "train_loss": [(3, as_float32(1.0726430018742878)), (6, 0.5)],
        "val_accuracy": [(3, as_float32(1 / 3)), (6, as_float32(2 / 3))],
        "learning_rate": [(6, as_float32(1.9e-4))],
    }
    assert [p.name.startswith("events.out.tfevents.") for p in (tmp_path / "tb").iterdir()] \
        == [True]


def test_a_resumed_run_adds_a_file_and_tensorboard_joins_them(tmp_path):
    with SummaryWriter(tmp_path) as writer:
        writer.scalars(1, {"val_loss": 2.0})
        writer.scalars(2, {"val_loss": 1.5})
    with SummaryWriter(tmp_path) as writer:
        writer.scalars(3, {"val_loss": 1.25})
    assert len(list(tmp_path.iterdir())) == 2
    assert read_scalars(tmp_path) == {"val_loss": [(1, 2.0), (2, 1.5), (3, 1.25)]}


def test_text_image_and_hparams_read_back(tmp_path):
    png = png_bytes(confusion_matrix_figure(np.array([[3, 1], [0, 2]]), ["a", "b"]))
    with SummaryWriter(tmp_path) as writer:
        writer.text(0, "notes", "**bold** and `code`")
        writer.image(5, "confusion_matrix", png)
        writer.hparams({"batch_size": 16, "optimizer.learning_rate": 2e-3, "mixed": True,
                        "model.name": "resnet18"})
        with pytest.raises(ValueError, match="not one"):
            writer.image(6, "broken", b"GIF89a")
    accumulator = read(tmp_path)
    assert read_text(accumulator, "notes") == [(0, "**bold** and `code`")]
    (image,) = accumulator.Images("confusion_matrix")
    assert image.step == 5 and image.encoded_image_string == png
    assert decode_png(png).shape == (image.height, image.width, 4) == (400, 500, 4)
    assert read_hparams(accumulator) == {"batch_size": 16, "optimizer.learning_rate": 2e-3,
                                         "mixed": True, "model.name": "resnet18"}


@pytest.fixture
def tiny_config(tmp_path) -> ml_collections.ConfigDict:
    """The default experiment with a two-block SimpleCNN on 20 short recordings: 14 train
    (3 steps of 4 per epoch), 6 validation; two epochs, a log every 2 steps."""
    config = heartbeat_synthetic.get_config()
    config.data.data_dir = str(tmp_path / "data")
    config.data.synthetic.num_per_class = (("normal", 10), ("murmur", 6), ("extrastole", 4))
    config.data.image_size = (32, 32)
    config.data.crop_seconds = 1.0
    config.model = ml_collections.ConfigDict(dict(
        name="simple_cnn", in_channels=1, widths=(8, 16), pool="max", head_pool="gap",
        dense=(16,), batch_norm=True, dropout=0.0))
    config.batch_size = 4
    config.eval_batch_size = 8
    config.num_epochs = 2
    config.log_every_steps = 2
    return config


@pytest.mark.slow
def test_a_run_logs_steps_config_confusion_images_and_hparams(tiny_config, tmp_path):
    workdir = tmp_path / "run"
    train_and_evaluate(tiny_config, workdir)
    epochs = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in epochs] == [3, 6]
    accumulator = read(workdir / TENSORBOARD_DIR)
    scalars = read_scalars(workdir / TENSORBOARD_DIR)

    # Every log_every_steps, across the epoch's end: the mean loss of the two steps since the
    # last log, so the three logs average to the two epochs' mean training loss.
    losses = scalars["step/train_loss"]
    assert [step for step, _ in losses] == [2, 4, 6]
    assert np.mean([loss for _, loss in losses]) == pytest.approx(
        np.mean([r["train_loss"] for r in epochs]), rel=1e-6)
    schedule = make_schedule(tiny_config.optimizer, total_steps=6)
    assert scalars["step/learning_rate"] == [
        (step, as_float32(schedule(step - 1))) for step in (2, 4, 6)]
    assert scalars["step/learning_rate"][-1][1] == as_float32(epochs[-1]["learning_rate"])
    throughput = scalars["step/examples_per_second"]
    assert [step for step, _ in throughput] == [2, 4, 6] and all(v > 0 for _, v in throughput)
    assert scalars["train_loss"] == [(r["step"], as_float32(r["train_loss"])) for r in epochs]

    (config_text,) = read_text(accumulator, "config")
    assert config_text[0] == 0
    fenced = config_text[1].removeprefix("```json\n").removesuffix("\n```")
    assert json.loads(fenced) == json.loads((workdir / "config.json").read_text()) \
        == json.loads(tiny_config.to_json())

    # One confusion matrix per epoch, the figure of confusion_matrix.png (3 classes).
    images = accumulator.Images("confusion_matrix")
    assert [image.step for image in images] == [3, 6]
    for image in images:
        assert decode_png(image.encoded_image_string).shape == (400, 500, 4)
        assert (image.width, image.height) == (500, 400)
    assert decode_png(images[-1].encoded_image_string).shape \
        == mpimg.imread(workdir / "confusion_matrix.png").shape

    flat = traverse_util.flatten_dict(tiny_config.to_dict(), sep=".")
    scalar_fields = {k: v for k, v in flat.items() if isinstance(v, (bool, int, float, str))}
    hparams = read_hparams(accumulator)
    assert hparams == scalar_fields
    assert hparams["model.name"] == "simple_cnn" and hparams["log_every_steps"] == 2
    assert "data.image_size" not in hparams  # a tuple: no HParams value
