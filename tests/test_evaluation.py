"""The best checkpoint, found from a fresh process's view of the folder, restored whole or as
model variables only, with unreadable ones passed over."""

import functools
import shutil

import jax
import numpy as np
import optax
import pytest

from cnnjax.checkpoint import CheckpointError, Checkpoints
from cnnjax.models import SimpleCNN
from cnnjax.predict import abstract_variables
from cnnjax.train import create_train_state

INPUT_SHAPE = (8, 8, 1)


def model(num_classes=2):
    return SimpleCNN(num_classes=num_classes, widths=(4,), dense=(), in_channels=1,
                     batch_norm=True)


@functools.lru_cache(maxsize=None)
def state_at(step):
    """A state whose every array tells its step apart (params and BatchNorm statistics)."""
    state = create_train_state(model(), optax.adam(1e-3), INPUT_SHAPE, jax.random.PRNGKey(step))
    return state.replace(step=jax.numpy.asarray(step, jax.numpy.int32),
                         batch_stats=jax.tree.map(lambda x: x + step, state.batch_stats))


def save_run(directory, saves, best_metric="val_accuracy", best_mode="max"):
    """`saves`: (step, epoch record or None for a mid-epoch save), in order, as the trainer
    saves them: the JSON record's history ends with the last finished epoch."""
    checkpoints = Checkpoints(directory, max_to_keep=10, best_metric=best_metric,
                              best_mode=best_mode, asynchronous=False)
    history = []
    for step, record in saves:
        if record is not None:
            history = history + [{"step": step, **record}]
        checkpoints.save(state_at(step), {"history": history, "class_names": ["a", "b"]},
                         metrics={"step": step, **record} if record else None)
    checkpoints.close()


def reopened(directory, **kwargs):
    return Checkpoints(directory, max_to_keep=10, asynchronous=False, **kwargs)


SAVES = [(2, {"val_accuracy": 0.5, "val_loss": 0.9}),
         (3, None),  # mid-epoch: its history still ends with step 2's record
         (4, {"val_accuracy": 0.75, "val_loss": 0.4}),
         (6, {"val_accuracy": 0.75, "val_loss": 0.6}),
         (7, None)]


def test_best_step_is_read_back_by_a_fresh_manager(tmp_path):
    save_run(tmp_path, SAVES)
    # Ties (0.75 at steps 4 and 6) go to the newer step; mid-epoch saves never count.
    assert reopened(tmp_path, best_metric="val_accuracy").best_step() == 6
    assert reopened(tmp_path, best_metric="val_loss", best_mode="min").best_step() == 4
    assert reopened(tmp_path, best_metric="val_loss", best_mode="max").best_step() == 2
    assert reopened(tmp_path).best_step() == 7  # no best metric: the newest
    assert reopened(tmp_path, best_metric="val_f1").best_step() == 7  # metric never logged
    assert reopened(tmp_path / "empty", best_metric="val_loss").best_step() is None
    assert reopened(tmp_path, best_metric="val_loss", best_mode="min").steps_best_first() \
        == [4, 7, 6, 3, 2]


def test_restore_best_restores_the_best_and_falls_back_past_an_unreadable_one(tmp_path):
    save_run(tmp_path, SAVES)
    checkpoints = reopened(tmp_path, best_metric="val_loss", best_mode="min")
    restored, extra, step = checkpoints.restore_best(state_at(0), warn=pytest.fail)
    assert step == 4 and extra["history"][-1]["step"] == 4
    expected = state_at(4)
    jax.tree.map(np.testing.assert_array_equal, restored.params, expected.params)
    jax.tree.map(np.testing.assert_array_equal, restored.batch_stats, expected.batch_stats)

    shutil.rmtree(tmp_path / "4" / "state")
    warnings = []
    restored, _, step = reopened(tmp_path, best_metric="val_loss",
                                 best_mode="min").restore_best(state_at(0), warnings.append)
    assert step == 7 and "step 4" in warnings[0]
    jax.tree.map(np.testing.assert_array_equal, restored.params, state_at(7).params)
    assert reopened(tmp_path / "empty").restore_best(state_at(0), pytest.fail) is None


def test_best_variables_reads_only_the_model_variables_of_the_best(tmp_path):
    save_run(tmp_path, SAVES)
    checkpoints = reopened(tmp_path, best_metric="val_accuracy")
    shapes = abstract_variables(model(), INPUT_SHAPE)
    variables, extra, step = checkpoints.best_variables(lambda extra: shapes, pytest.fail)
    assert step == 6 and extra["class_names"] == ["a", "b"] and set(variables) == {
        "params", "batch_stats"}
    expected = state_at(6)
    jax.tree.map(np.testing.assert_array_equal, variables["params"], expected.params)
    jax.tree.map(np.testing.assert_array_equal, variables["batch_stats"], expected.batch_stats)
    assert reopened(tmp_path / "empty").best_variables(lambda extra: shapes,
                                                       pytest.fail) is None


def test_best_variables_names_every_checkpoint_when_none_fits(tmp_path):
    save_run(tmp_path, SAVES[:2])
    other = abstract_variables(model(num_classes=3), INPUT_SHAPE)
    warnings = []
    with pytest.raises(CheckpointError, match="none can be read: step 2 .*; step 3 "):
        reopened(tmp_path, best_metric="val_accuracy").best_variables(lambda extra: other,
                                                                      warnings.append)
    assert len(warnings) == 2


def test_the_best_step_is_orbaxs_and_a_damaged_best_gives_way_to_the_newest(tmp_path):
    """orbax names the best from the metrics stored beside each checkpoint, without opening
    it; the readers pass over a best checkpoint that did not finish, to the newest readable
    one. A checkpoint without its stored metrics is no candidate."""
    save_run(tmp_path, SAVES)
    (tmp_path / "6" / "commit_success.txt").unlink()
    checkpoints = reopened(tmp_path, best_metric="val_accuracy")
    assert checkpoints.best_step() == 6
    warnings = []
    restored, _, step = checkpoints.restore_best(state_at(0), warnings.append)
    assert step == 7 and warnings == [
        "skipping the unreadable checkpoint at step 6: incomplete: no commit_success.txt"]
    jax.tree.map(np.testing.assert_array_equal, restored.params, state_at(7).params)
    shutil.rmtree(tmp_path / "6" / "metrics")
    assert reopened(tmp_path, best_metric="val_accuracy").best_step() == 4
