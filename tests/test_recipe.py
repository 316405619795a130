"""The transfer-learning recipe as configs drive it: phases, frozen parts and their
BatchNorm modes, the loss from config.loss, and the learning-rate range test."""

import math
import sys

import jax
import numpy as np
import pytest

from cnnjax.config import validate_config
from cnnjax.errors import ConfigError
from cnnjax.parallel import DataParallel
from cnnjax.train import create_train_state
from cnnjax.train.lr_find import (LrFindResult, exponential_learning_rates, lr_find,
                                  plot_lr_find, suggest)
from cnnjax.train.phases import phase_of_epoch, training_phases
from cnnjax.train.recipe import make_loss, phase_setup, phase_setups, setup_of_epoch
from cnnjax.train.steps import jit_train_step
from experiments.heartbeat_synthetic import get_config

INPUT = (32, 32, 1)


def recipe_config(**fields):
    config = get_config()
    config.num_epochs = 5
    for dotted, value in fields.items():
        *parents, name = dotted.split("__")
        node = config
        for part in parents:
            node = node[part]
        node[name] = value
    return config


def batch(seed=0, size=8):
    rng = np.random.default_rng(seed)
    labels = np.arange(size, dtype=np.int32) % 3
    images = rng.normal(size=(size, *INPUT)).astype(np.float32) + labels[:, None, None, None]
    return {"image": images, "label": labels}


def state_for(config, epoch=1):
    phases = training_phases(config)
    setup = phase_setup(config, phase_of_epoch(phases, epoch), 3, INPUT, steps_per_epoch=2)
    return create_train_state(setup.model, setup.tx, INPUT, jax.random.PRNGKey(0)), setup


def changed(a, b):
    return jax.tree.map(lambda x, y: not np.array_equal(x, y), a, b)


def test_fine_tune_phases_split_the_epochs_and_override_the_optimizer():
    config = recipe_config(freeze=("body",), fine_tune__unfreeze_after=2)
    frozen, unfrozen = training_phases(config)
    assert (frozen.first_epoch, frozen.last_epoch, frozen.freeze) == (1, 2, ("body",))
    assert (unfrozen.first_epoch, unfrozen.last_epoch, unfrozen.freeze) == (3, 5, ())
    assert unfrozen.optimizer.learning_rate == config.fine_tune.learning_rate
    assert unfrozen.optimizer.lr_spread == config.fine_tune.lr_spread
    assert frozen.optimizer.learning_rate == config.optimizer.learning_rate
    assert phase_of_epoch([frozen, unfrozen], 3) is unfrozen
    with pytest.raises(ConfigError, match="leaves no epoch"):
        validate_config(recipe_config(freeze=("body",), fine_tune__unfreeze_after=5))
    with pytest.raises(ConfigError, match="needs config.freeze"):
        validate_config(recipe_config(fine_tune__unfreeze_after=2))


def test_every_phase_is_set_up_once_and_found_by_epoch():
    config = recipe_config(freeze=("body",), fine_tune__unfreeze_after=2)
    setups = phase_setups(config, 3, INPUT, steps_per_epoch=2)
    assert [s.phase.name for s in setups] == ["frozen", "unfrozen"]
    assert [setups.index(setup_of_epoch(setups, epoch)) for epoch in range(1, 6)] == [
        0, 0, 1, 1, 1]
    assert setups[0].frozen_count > 0 == setups[1].frozen_count
    assert setups[0].tx is not setups[1].tx


@pytest.mark.parametrize("mode", ["train", "frozen"])
def test_frozen_body_norm_modes(mode):
    config = recipe_config(freeze=("body",), freeze_norm=mode)
    state, setup = state_for(config)
    before = jax.device_get((state.params, state.batch_stats))
    for seed in range(3):
        state, _ = jit_train_step(state, batch(seed))
    params_changed, stats_changed = changed(before[0], state.params), changed(before[1],
                                                                              state.batch_stats)
    # Convolutions of the body never move; the classifier does.
    assert not params_changed["conv1"]["kernel"] and not params_changed["layer4_1"]["conv2"][
        "kernel"]
    assert params_changed["fc"]["kernel"] and params_changed["fc"]["bias"]
    body_norm = (params_changed["layer2_0"]["bn1"]["scale"], stats_changed["layer2_0"]["bn1"][
        "mean"], stats_changed["bn1"]["var"])
    if mode == "train":  # fastai: BatchNorm keeps training inside the frozen body
        assert all(body_norm)
        assert setup.frozen_count == sum(x.size for path, x in jax.tree_util.tree_flatten_with_path(
            before[0])[0] if "fc" not in jax.tree_util.keystr(path) and x.ndim == 4)
    else:  # running averages used and untouched, affine parameters frozen
        assert not any(body_norm)
        assert not any(jax.tree.leaves(stats_changed))


def test_unfrozen_phase_keeps_the_optimizer_state_and_trains_everything():
    config = recipe_config(freeze=("body",), fine_tune__unfreeze_after=1)
    state, _ = state_for(config, epoch=1)
    state, _ = jit_train_step(state, batch(0))
    _, unfrozen = state_for(config, epoch=2)
    assert jax.tree.structure(unfrozen.tx.init(state.params)) == jax.tree.structure(
        state.opt_state)
    state = state.replace(apply_fn=unfrozen.model.apply, tx=unfrozen.tx)
    before = jax.device_get(state.params)
    state, _ = jit_train_step(state, batch(1))
    assert all(jax.tree.leaves(changed(before, state.params)))


def test_misspelt_freeze_patterns_are_named():
    with pytest.raises(ConfigError, match="layer9"):
        state_for(recipe_config(freeze=("stem", "layer9")))


def test_loss_from_config():
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2], np.int32)
    assert make_loss(recipe_config(), labels, 3).class_weights is None
    balanced = make_loss(recipe_config(loss__class_weights="balanced"), labels, 3)
    np.testing.assert_allclose(balanced.class_weights, (8 / 12, 8 / 6, 8 / 6))
    explicit = make_loss(recipe_config(loss__class_weights="1, 2.5,4",
                                       loss__label_smoothing=0.1), labels, 3)
    assert explicit.class_weights == (1.0, 2.5, 4.0) and explicit.label_smoothing == 0.1
    with pytest.raises(ConfigError, match="class_weights"):  # the count: the data knows
        make_loss(recipe_config(loss__class_weights="1,2"), labels, 3)
    for bad in ("1,0,2", "heavy"):  # the syntax: the config's gate
        with pytest.raises(ConfigError, match="class_weights"):
            validate_config(recipe_config(loss__class_weights=bad))


def test_valley_suggestion_on_a_known_curve():
    lrs = list(exponential_learning_rates(1e-6, 1.0, 61))
    # Flat, then falling steadily from point 15 to point 45, then exploding.
    smoothed = [2.0] * 15 + [2.0 - 0.05 * i for i in range(1, 31)] + [1.0 + 0.5 * i
                                                                        for i in range(16)]
    # The valley runs from the last flat point (14) to the minimum (45): 31 points; a third
    # is 10.33, so the suggestion is point 14 + 10 + 5.
    assert suggest(lrs, smoothed) == lrs[29]


def test_lr_find_plot_is_drawn_without_pyplot(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)  # importing it fails
    lrs = list(exponential_learning_rates(1e-6, 1.0, 20))
    losses = [2.0 - 0.05 * i for i in range(20)]
    plot_lr_find(LrFindResult(lrs, losses, losses, False, lrs[10]), tmp_path / "lr_find.png")
    with Image.open(tmp_path / "lr_find.png") as image:
        assert image.size == (720, 480)


def test_lr_find_stops_at_divergence_on_a_separable_problem():
    config = recipe_config(optimizer__learning_rate=1.0, optimizer__schedule="constant")
    state, _ = state_for(config)
    batches = (batch(seed) for seed in range(1000))
    result = lr_find(state, batches, DataParallel(), start=1e-5, end=1e3, num_steps=80)
    assert result.diverged and len(result.learning_rates) < 80
    assert result.smoothed[-1] > 4 * min(result.smoothed) or not math.isfinite(
        result.smoothed[-1])
    np.testing.assert_allclose(result.learning_rates,
                               exponential_learning_rates(1e-5, 1e3, 80)[:len(
                                   result.learning_rates)])
    assert 1e-5 < result.suggestion < result.learning_rates[-1]
    # The sweep trains a copy: the state it was given is untouched (not donated).
    assert not state.step.is_deleted() and int(state.step) == 0
