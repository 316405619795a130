"""The loss kinds of `config.loss.name` against torch.nn's definitions, their gradients, their
per-recording forms used by evaluation, and the errors for settings that do not apply."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from cnnjax.config import validate_config
from cnnjax.data.datasets import SpectrogramDatasets
from cnnjax.data.pipeline import AugmentSettings, ImageSettings, SpectrogramSource, eval_batches
from cnnjax.errors import ConfigError, DataError
from cnnjax.models import SimpleCNN
from cnnjax.train.losses import (LOSSES, REGRESSION_LOSSES, Loss, logit_offsets,
                                  multi_margin_loss)
from cnnjax.train.recipe import make_loss
from cnnjax.train.state import create_train_state
from cnnjax.train.steps import train_step
from cnnjax.train.tasks import task_for
from cnnjax.train.validation import evaluate
from experiments import heartbeat_synthetic

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(0)
WEIGHTS = (0.5, 2.0, 1.0, 3.0, 0.25)


def t(array, dtype=torch.float64):
    return torch.tensor(np.asarray(array), dtype=dtype)


@pytest.fixture
def binary_case():
    z = (RNG.normal(size=(16, 1)) * 3).astype(np.float32)
    labels = RNG.integers(0, 2, size=16).astype(np.int32)
    return z, labels


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.4])
def test_binary_cross_entropy_equals_torch_bce_with_logits(binary_case, smoothing):
    z, labels = binary_case
    soft_targets = labels * (1 - smoothing) + smoothing / 2
    expected = torch.nn.BCEWithLogitsLoss()(t(z[:, 0]), t(soft_targets)).item()
    loss = Loss(smoothing, name="binary_cross_entropy")
    assert float(loss(jnp.asarray(z), jnp.asarray(labels))) == pytest.approx(expected,
                                                                                rel=1e-6)


def test_weighted_binary_cross_entropy_is_the_weighted_mean_of_torchs_terms(binary_case):
    z, labels = binary_case
    class_weights = np.array([0.7, 2.5])
    per_example = torch.nn.BCEWithLogitsLoss(weight=t(class_weights[labels]),
                                             reduction="sum")(t(z[:, 0]), t(labels)).item()
    expected = per_example / class_weights[labels].sum()
    loss = Loss(class_weights=tuple(class_weights), name="binary_cross_entropy")
    assert float(loss(jnp.asarray(z), jnp.asarray(labels))) == pytest.approx(expected,
                                                                                rel=1e-6)


def test_binary_cross_entropy_is_stable_and_reads_as_two_classes():
    loss = Loss(name="binary_cross_entropy")
    z = jnp.array([[-120.0], [0.0], [3.0], [120.0]])
    labels = jnp.array([1, 0, 1, 0])
    # -log sigmoid(-120) = 120 exactly in float32, where log(sigmoid(z)) would be -inf.
    np.testing.assert_allclose(loss.per_example(z, labels),
                               [120.0, np.log(2), np.log1p(np.exp(-3.0)), 120.0], rtol=1e-6)
    grads = jax.grad(lambda z: loss(z, labels))(z)
    assert np.all(np.isfinite(grads))
    sigmoid = 1 / (1 + np.exp(-3.0))
    task = task_for(loss)
    np.testing.assert_allclose(task.window_outputs(z)[2], [1 - sigmoid, sigmoid], rtol=1e-6)
    np.testing.assert_array_equal(loss.predictions(z), [0, 0, 1, 1])
    assert task.num_outputs(2) == 1
    with pytest.raises(ConfigError, match="exactly 2 classes"):
        task.num_outputs(3)


@pytest.mark.parametrize("weights", [None, WEIGHTS])
def test_hinge_equals_torch_multi_margin_loss(weights):
    scores = (RNG.normal(size=(12, 5)) * 1.5).astype(np.float32)
    labels = RNG.integers(0, 5, size=12).astype(np.int32)
    if weights is None:
        expected = torch.nn.MultiMarginLoss()(t(scores), t(labels, torch.long)).item()
    else:  # torch's weighted mean divides by the count; ours by the summed target weights
        summed = torch.nn.MultiMarginLoss(weight=t(weights), reduction="sum")(
            t(scores), t(labels, torch.long)).item()
        expected = summed / np.asarray(weights)[labels].sum()
    got = Loss(class_weights=weights, name="hinge")(jnp.asarray(scores), jnp.asarray(labels))
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_hinge_is_weston_watkins_by_hand_not_optax_crammer_singer():
    scores = jnp.array([[2.0, 1.5, -1.0, 1.8]])
    label = jnp.array([0])
    # Classes 1 and 3 sit inside the margin: (1 - 2 + 1.5) + (1 - 2 + 1.8), over 4 classes.
    assert float(multi_margin_loss(scores, label)[0]) == pytest.approx((0.5 + 0.8) / 4)
    # optax's multiclass hinge takes only the worst class: 1 - 2 + 1.8.
    assert float(optax.losses.multiclass_hinge_loss(scores, label)[0]) == pytest.approx(0.8)


@pytest.mark.parametrize("name, reference", [
    ("mse", lambda: torch.nn.MSELoss()),
    ("mae", lambda: torch.nn.L1Loss()),
    ("huber", lambda: torch.nn.HuberLoss(delta=2.5)),
])
def test_regression_losses_equal_torch_on_the_scaled_outputs(name, reference):
    outputs = RNG.normal(size=(20, 1)).astype(np.float32)
    targets = RNG.normal(70.0, 12.0, size=20).astype(np.float32)
    loss = Loss(name=name, huber_delta=2.5, target_mean=72.0, target_std=11.0)
    values = 72.0 + 11.0 * outputs[:, 0]
    expected = reference()(t(values), t(targets)).item()
    got = loss(jnp.asarray(outputs), jnp.asarray(targets))
    assert float(got) == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(loss.predictions(jnp.asarray(outputs)), values, rtol=1e-6)


def test_huber_follows_torch_huber_not_smooth_l1():
    loss = Loss(name="huber", huber_delta=2.0)
    errors = jnp.array([1.0, 3.0])  # inside: 0.5 e^2; outside: delta * (|e| - delta / 2)
    np.testing.assert_allclose(loss.regression_term(errors, jnp.zeros(2)), [0.5, 4.0])
    smooth_l1 = torch.nn.SmoothL1Loss(beta=2.0, reduction="none")(t(errors), t([0.0, 0.0]))
    np.testing.assert_allclose(smooth_l1.numpy() * 2.0, [0.5, 4.0])  # SmoothL1 = Huber/delta


@pytest.mark.parametrize("name", LOSSES)
def test_gradients_are_finite_for_every_loss(name):
    regression = name in REGRESSION_LOSSES
    loss = Loss(name=name, target_mean=80.0, target_std=10.0) if regression else Loss(name=name)
    classes = 2 if name == "binary_cross_entropy" else 3
    outputs = jnp.asarray(RNG.normal(size=(8, task_for(loss).num_outputs(classes))) * 50, jnp.float32)
    targets = RNG.normal(80, 10, size=8).astype(np.float32) if regression else \
        RNG.integers(0, classes, size=8).astype(np.int32)
    value, grads = jax.value_and_grad(lambda o: loss(o, jnp.asarray(targets)))(outputs)
    assert np.isfinite(float(value)) and np.all(np.isfinite(grads)) and np.any(grads != 0)


def checked(**loss_fields):
    """Runs the config gate on the default experiment with `loss_fields` in config.loss."""
    config = heartbeat_synthetic.get_config()
    config.loss.update(loss_fields)
    validate_config(config)


def test_settings_that_do_not_apply_are_config_errors():
    with pytest.raises(ConfigError, match="'softmax'"):
        checked(name="softmax")
    with pytest.raises(ConfigError, match="regresses"):
        checked(name="mse", label_smoothing=0.1)
    with pytest.raises(ConfigError, match="regresses"):
        checked(name="huber", class_weights="1,2")
    with pytest.raises(ConfigError, match="'hinge'"):
        checked(name="hinge", label_smoothing=0.1)
    with pytest.raises(ConfigError, match="huber_delta"):
        checked(name="huber", huber_delta=0.0)
    assert hash(Loss(name="huber", target_mean=70.0)) == hash(Loss(name="huber",
                                                                   target_mean=70.0))


def loss_config(**loss_fields):
    config = ml_collections.ConfigDict({
        "loss": {"name": "softmax_cross_entropy", "label_smoothing": 0.0,
                 "class_weights": "none", "logit_adjustment": 0.0, "huber_delta": 1.0},
        "augment": {"mixup_alpha": 0.0}, "data": {"name": "pascal_heartbeat"}})
    config.loss.update(loss_fields)
    return config


def test_make_loss_scales_regression_by_the_training_targets_and_needs_them():
    labels = np.zeros(4, np.int32)
    loss = make_loss(loss_config(name="huber", huber_delta=3.0), labels, 1,
                     np.array([60.0, 70.0, 80.0, 90.0]))
    assert (loss.name, loss.huber_delta, loss.target_mean) == ("huber", 3.0, 75.0)
    assert loss.target_std == pytest.approx(np.std([60.0, 70.0, 80.0, 90.0]))
    assert make_loss(loss_config(name="mse"), labels, 1, np.full(4, 7.0)).target_std == 1.0
    with pytest.raises(DataError, match="has none"):
        make_loss(loss_config(name="mse"), labels, 1, None)
    mixup = heartbeat_synthetic.get_config()
    mixup.loss.name, mixup.augment.mixup_alpha = "mae", 0.4
    with pytest.raises(ConfigError, match="mixup_alpha"):
        validate_config(mixup)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_logit_adjusted_cross_entropy_is_torchs_on_the_offset_logits(smoothing):
    """Training sees logits + tau * log(prior) (torch's CrossEntropyLoss on those); the
    predictions and the reported per-example loss still read the raw logits."""
    logits = (RNG.normal(size=(12, 3)) * 2).astype(np.float32)
    labels = np.array([0] * 8 + [1] * 3 + [2], np.int32)
    offsets = logit_offsets(labels, 3, tau=1.5)
    np.testing.assert_allclose(offsets, 1.5 * np.log([8 / 12, 3 / 12, 1 / 12]), rtol=1e-12)
    loss = Loss(label_smoothing=smoothing, logit_offsets=offsets)
    expected = torch.nn.CrossEntropyLoss(label_smoothing=smoothing)(
        t(logits) + t(offsets), t(labels, torch.long)).item()
    assert float(loss(jnp.asarray(logits), jnp.asarray(labels))) == pytest.approx(expected,
                                                                                  rel=1e-5)
    plain = Loss(label_smoothing=smoothing)
    np.testing.assert_array_equal(loss.predictions(jnp.asarray(logits)),
                                  plain.predictions(jnp.asarray(logits)))
    np.testing.assert_allclose(loss.per_example(jnp.asarray(logits), jnp.asarray(labels)),
                               plain.per_example(jnp.asarray(logits), jnp.asarray(labels)))


@pytest.mark.parametrize("name", ["softmax_cross_entropy", "binary_cross_entropy"])
def test_logit_adjustment_makes_equal_scores_optimal_for_any_prior(name):
    """Closed form: a classifier that only learns per-class biases b minimises plain
    cross-entropy at b = log(prior) + c, so the rare class is never predicted; with tau = 1
    the minimum moves to b = c, every class alike, whatever the prior."""
    labels = jnp.asarray([0] * 7 + [1] * 2 + [2] * 1 if name == "softmax_cross_entropy"
                         else [0] * 9 + [1], jnp.int32)
    classes = 3 if name == "softmax_cross_entropy" else 2
    outputs = jnp.zeros((labels.size, classes if classes > 2 else 1))
    adjusted = Loss(name=name, logit_offsets=logit_offsets(np.asarray(labels), classes, 1.0))

    def bias_gradient(loss):
        return jax.grad(lambda bias: loss(outputs + bias, labels))(jnp.zeros(outputs.shape[1]))

    np.testing.assert_allclose(bias_gradient(adjusted), 0.0, atol=1e-6)
    assert np.abs(bias_gradient(Loss(name=name))).max() > 0.1


def test_logit_adjustment_settings():
    with pytest.raises(ConfigError, match="must be >= 0"):
        checked(logit_adjustment=-1.0)
    with pytest.raises(ConfigError, match="not 'hinge'"):
        checked(name="hinge", logit_adjustment=1.0)
    with pytest.raises(ConfigError, match="both correct"):
        checked(class_weights="balanced", logit_adjustment=1.0)
    loss = make_loss(loss_config(logit_adjustment=1.0), np.array([0, 0, 0, 1]), 2)
    np.testing.assert_allclose(loss.logit_offsets, np.log([0.75, 0.25]))
    assert make_loss(loss_config(), np.array([0, 1]), 2).logit_offsets is None
    with pytest.raises(DataError, match=r"classes \[2\] have no examples; logit adjustment"):
        make_loss(loss_config(logit_adjustment=1.0), np.array([0, 1]), 3)


@pytest.mark.parametrize("name", ["mse", "binary_cross_entropy"])
def test_micro_batches_give_the_whole_batchs_step(name):
    """The numerator/denominator split: two micro-batches step as one batch (no BatchNorm,
    so the model sees the same thing either way), regression metrics included."""
    regression = name == "mse"
    loss = Loss(name=name, target_mean=75.0, target_std=12.0) if regression else \
        Loss(class_weights=(0.5, 2.0), name=name)
    model = SimpleCNN(num_classes=1, widths=(4,), dense=(8,), in_channels=1)
    state = create_train_state(model, optax.sgd(0.01), (10, 10, 1), jax.random.PRNGKey(0))
    batch = {"image": RNG.normal(size=(8, 10, 10, 1)).astype(np.float32),
             "label": RNG.integers(0, 2, size=8).astype(np.int32),
             "target": RNG.normal(75, 12, size=8).astype(np.float32)}
    whole_state, whole = train_step(state, batch, loss)
    parts_state, parts = train_step(state, batch, loss, grad_accum_steps=2)
    assert set(whole) == ({"loss", "mae", "mse", "target", "target_squared"} if regression
                          else {"loss", "accuracy"})
    for key in whole:
        assert float(parts[key]) == pytest.approx(float(whole[key]), rel=1e-5), key
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 whole_state.params, parts_state.params)
    if regression:
        values = np.asarray(loss.values(model.apply(state.variables, batch["image"])))
        assert float(whole["mae"]) == pytest.approx(np.abs(values - batch["target"]).mean(),
                                                    rel=1e-5)
        assert float(whole["target"]) == pytest.approx(batch["target"].mean(), rel=1e-6)


def test_recording_losses_judge_the_averaged_window_outputs():
    bce = task_for(Loss(name="binary_cross_entropy"))
    averaged = np.array([[0.2, 0.8], [0.9, 0.1]])
    np.testing.assert_allclose(bce.recording_losses(averaged, np.array([1, 1])),
                               [-np.log(0.8), -np.log(0.1)])
    hinge = task_for(Loss(name="hinge"))
    scores = np.array([[2.0, 1.5, -1.0]])
    np.testing.assert_allclose(hinge.recording_losses(scores, np.array([0])),
                               [(0.5 + 0.0) / 3], rtol=1e-6)
    np.testing.assert_allclose(hinge.probabilities(scores).sum(), 1.0)
    assert hinge.probabilities(scores).argmax() == 0
    mae = task_for(Loss(name="mae"))
    np.testing.assert_allclose(mae.recording_losses(np.array([[70.0], [82.0]]),
                                                    np.array([72.0, 80.0])), [2.0, 2.0])


def test_a_sigmoid_classifier_is_evaluated_as_two_classes():
    """Evaluation averages [1 - sigmoid(z), sigmoid(z)] over a recording's windows and
    reads the confusion matrix off those probabilities."""
    rng = np.random.default_rng(3)
    spectrograms = [rng.uniform(-80, 0, (8, n)).astype(np.float32) for n in (25, 10, 14)]
    source = SpectrogramSource(spectrograms, np.array([1, 0, 1], np.int32))
    image = ImageSettings(crop_frames=10, image_size=(8, 10))
    datasets = SpectrogramDatasets(("cat", "dog"), source, source, ["x", "y", "z"], image,
                                   AugmentSettings(), batch_size=2, eval_batch_size=2, seed=0)

    def outputs(state, batch):  # one logit per window, from its pixels
        return {"logits": (batch["image"].mean(axis=(1, 2, 3)) + 40.0)[:, None] / 5,
                "mask": batch["mask"]}

    evaluation = evaluate(None, datasets, outputs, task_for(Loss(name="binary_cross_entropy")))
    expected = []
    for r in range(3):
        z = np.concatenate([outputs(None, b)["logits"][b["mask"] & (b["record"] == r)]
                            for b in eval_batches(source, image, 2)])[:, 0]
        s = 1 / (1 + np.exp(-z.astype(np.float64)))
        expected.append([np.mean(1 - s), np.mean(s)])
    expected = np.array(expected)
    np.testing.assert_allclose(evaluation.outputs, expected, rtol=1e-5)
    assert evaluation.loss == pytest.approx(
        -np.log(expected[np.arange(3), source.labels]).mean(), rel=1e-5)
    confusion = np.zeros((2, 2), int)
    for label, predicted in zip(source.labels, expected.argmax(-1)):
        confusion[label, predicted] += 1
    np.testing.assert_array_equal(evaluation.confusion, confusion)
