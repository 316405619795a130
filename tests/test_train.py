import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from cnnjax.models import SimpleCNN, resnet18
from cnnjax.parallel import DataParallel
from cnnjax.train import (create_train_state, cross_entropy_loss, jit_eval_step, jit_train_step,
                          make_optimizer, make_schedule)
from cnnjax.train.state import inference_state


def optimizer_config(**overrides) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(dict(
        name="adam", learning_rate=1e-2, weight_decay=0.0, b1=0.9, b2=0.999,
        schedule="constant", warmup_fraction=0.25, div_factor=25.0, final_div_factor=1e4,
        lr_spread=1.0, moms=(0.95, 0.85, 0.95), cycle_momentum=False))
    config.update(overrides)
    return config


def param_shapes(model, size: int):
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                             jnp.zeros((1, size, size, 1))))["params"]


def test_constant_schedule():
    schedule = make_schedule(optimizer_config(learning_rate=3e-4), 100)
    assert [float(schedule(s)) for s in (0, 50, 99)] == pytest.approx([3e-4] * 3)


def test_cosine_schedule_warms_up_linearly_then_decays_to_zero():
    schedule = make_schedule(optimizer_config(schedule="cosine", learning_rate=1.0,
                                              warmup_fraction=0.1), 100)
    assert float(schedule(0)) == pytest.approx(0.0)
    assert float(schedule(5)) == pytest.approx(0.5)
    assert float(schedule(10)) == pytest.approx(1.0)
    # Half-way through the 90 decay steps: 0.5 * (1 + cos(pi / 2)) = 0.5.
    assert float(schedule(55)) == pytest.approx(0.5, abs=1e-6)
    assert float(schedule(100)) == pytest.approx(0.0, abs=1e-9)


def test_one_cycle_schedule_matches_the_fastai_formula():
    peak, div, final_div, total, pct = 1e-2, 25.0, 1e4, 200, 0.25
    schedule = make_schedule(optimizer_config(schedule="one_cycle", learning_rate=peak,
                                              warmup_fraction=pct, div_factor=div,
                                              final_div_factor=final_div), total)
    start, end = peak / div, peak / div / final_div

    def cos_anneal(a, b, fraction):  # fastai's SchedCos
        return b + (a - b) / 2 * (1 + math.cos(math.pi * fraction))

    assert float(schedule(0)) == pytest.approx(start)
    assert float(schedule(25)) == pytest.approx(cos_anneal(start, peak, 0.5))
    assert float(schedule(50)) == pytest.approx(peak)
    assert float(schedule(125)) == pytest.approx(cos_anneal(peak, end, 0.5))
    assert float(schedule(200)) == pytest.approx(end)


def test_adam_weight_decay_is_l2_and_adamw_is_decoupled():
    params = {"w": jnp.array([[2.0]])}  # a kernel: biases and norms (rank 1) are not decayed
    grads = {"w": jnp.array([[0.0]])}
    for name, expected in (("adam", -1e-2), ("adamw", -1e-2 * 0.5 * 2.0)):
        # adam: the decay 0.5*2 becomes the gradient, and Adam's first step is -lr*sign(g).
        # adamw: the update is -lr * weight_decay * w next to Adam's zero step.
        tx, _ = make_optimizer(optimizer_config(name=name, weight_decay=0.5), 10, params)
        updates, _ = tx.update(grads, tx.init(params), params)
        assert float(updates["w"][0, 0]) == pytest.approx(expected, rel=1e-4)


def test_cross_entropy_against_hand_computed_value():
    logits = jnp.array([[2.0, 0.0, -1.0]])
    expected = -(2.0 - math.log(math.exp(2.0) + 1.0 + math.exp(-1.0)))
    assert float(cross_entropy_loss(logits, jnp.array([0]))[0]) == pytest.approx(expected)


def test_train_step_overfits_one_batch_to_full_accuracy():
    rng = np.random.default_rng(0)
    batch = {"image": rng.normal(size=(8, 16, 16, 1)).astype(np.float32),
             "label": np.array([0, 1, 2, 0, 1, 2, 0, 1], np.int32)}
    model = SimpleCNN(num_classes=3, widths=(8, 16), dense=(32,), batch_norm=True,
                      in_channels=1)
    tx, _ = make_optimizer(optimizer_config(learning_rate=3e-3), 100, param_shapes(model, 16))
    state = create_train_state(model, tx, (16, 16, 1), jax.random.PRNGKey(0))
    first = None
    for _ in range(60):
        state, metrics = jit_train_step(state, batch)
        first = float(metrics["loss"]) if first is None else first
    assert int(state.step) == 60
    assert float(metrics["loss"]) < 0.1 * first
    out = jit_eval_step(state, batch)
    assert np.array_equal(np.asarray(out["prediction"]), batch["label"])


def test_resnet_train_step_donates_and_updates_every_parameter():
    model = resnet18(num_classes=2, in_channels=1)
    tx, _ = make_optimizer(optimizer_config(), 10, param_shapes(model, 32))
    state = create_train_state(model, tx, (32, 32, 1), jax.random.PRNGKey(0))
    before = jax.device_get(state.params)
    batch = {"image": np.random.default_rng(0).normal(size=(4, 32, 32, 1)).astype(np.float32),
             "label": np.array([0, 1, 0, 1], np.int32)}
    old_state = state
    state, _ = jit_train_step(state, batch)
    assert old_state.step.is_deleted()  # the state's buffers were donated to the new one
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), before,
                           jax.device_get(state.params))
    assert all(jax.tree.leaves(changed))


def test_prediction_runs_the_compiled_eval_step_on_batches_without_targets():
    model = SimpleCNN(num_classes=3, widths=(4,), dense=(8,), batch_norm=True, in_channels=1)
    tx, _ = make_optimizer(optimizer_config(), 10, param_shapes(model, 16))
    state = create_train_state(model, tx, (16, 16, 1), jax.random.PRNGKey(0))
    images = np.random.default_rng(0).normal(size=(4, 16, 16, 1)).astype(np.float32)
    parallel = DataParallel()
    out = parallel.evaluate_batch(parallel.place(inference_state(model, state.variables)),
                                  {"image": images})
    assert "loss" not in out and out["mask"].all()
    labelled = jit_eval_step(state, {"image": images, "label": np.zeros(4, np.int32)})
    np.testing.assert_allclose(out["logits"], labelled["logits"], rtol=1e-6)
