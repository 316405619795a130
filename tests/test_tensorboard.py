"""TensorBoard event files written without TensorFlow, read back by TensorBoard's own reader."""

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cnnjax.tensorboard import SummaryWriter


def read_scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    accumulator = EventAccumulator(str(logdir))
    accumulator.Reload()
    return {tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]}


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
