"""fastai's head, BatchNorm kept frozen while training, and the torch-defined loss."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnjax.config import validate_config
from cnnjax.errors import ConfigError, DataError
from cnnjax.models import FastaiHead, SimpleCNN, get_model, norm_paths, resnet18
from cnnjax.models.layers import TorchBatchNorm
from cnnjax.train.losses import Loss, balanced_class_weights, cross_entropy_loss
from cnnjax.train.state import create_train_state
from cnnjax.train.steps import jit_train_step
from experiments import heartbeat_synthetic

torch = pytest.importorskip("torch")


def randomize(tree, seed):
    """Random values for every leaf (arrays or shapes): kernels He-scaled so activations stay
    moderate, BatchNorm scales and variances positive. Cheaper than compiling `init`."""
    rng = np.random.default_rng(seed)
    draw = {"kernel": lambda shape: rng.normal(size=shape) * math.sqrt(2 / np.prod(shape[:-1])),
            "scale": lambda shape: rng.uniform(0.5, 1.5, size=shape),
            "var": lambda shape: rng.uniform(0.5, 2.0, size=shape)}

    def leaf(path, value):
        make = draw.get(path[-1].key, lambda shape: rng.normal(size=shape) * 0.3)
        return jnp.asarray(make(value.shape), jnp.float32)

    return jax.tree.map_with_path(leaf, tree)


def fastai_torch_head(features, hidden, num_classes, dropout):
    """The nn.Sequential fastai's create_head builds (concat pool, LinBnDrop x 2)."""
    class ConcatPool(torch.nn.Module):  # fastai's AdaptiveConcatPool2d: max, then average
        def forward(self, x):
            return torch.cat([torch.nn.functional.adaptive_max_pool2d(x, 1),
                              torch.nn.functional.adaptive_avg_pool2d(x, 1)], 1)

    nn = torch.nn
    return nn.Sequential(
        ConcatPool(), nn.Flatten(),
        nn.BatchNorm1d(2 * features), nn.Dropout(dropout[0]),
        nn.Linear(2 * features, hidden, bias=False), nn.ReLU(inplace=True),
        nn.BatchNorm1d(hidden), nn.Dropout(dropout[1]),
        nn.Linear(hidden, num_classes, bias=False))


def load_into_torch(head, variables):
    params, stats = variables["params"], variables["batch_stats"]

    def tensor(array):
        return torch.from_numpy(np.array(array))

    with torch.no_grad():
        for index, name in ((2, "bn1"), (6, "bn2")):
            head[index].weight.copy_(tensor(params[name]["scale"]))
            head[index].bias.copy_(tensor(params[name]["bias"]))
            head[index].running_mean.copy_(tensor(stats[name]["mean"]))
            head[index].running_var.copy_(tensor(stats[name]["var"]))
        for index, name in ((4, "fc1"), (8, "fc2")):
            head[index].weight.copy_(tensor(params[name]["kernel"]).T)


@pytest.fixture
def head_case():
    features, hidden, classes = 6, 8, 3
    x = np.random.default_rng(0).normal(size=(5, 4, 3, features)).astype(np.float32)
    model = FastaiHead(classes, hidden, (0.0, 0.0))
    variables = randomize(model.init(jax.random.PRNGKey(0), x), seed=1)
    reference = fastai_torch_head(features, hidden, classes, (0.0, 0.0))
    load_into_torch(reference, variables)
    return model, variables, reference, x, torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


def test_fastai_head_eval_matches_torch(head_case):
    model, variables, reference, x, x_torch = head_case
    expected = reference.eval()(x_torch).detach().numpy()
    np.testing.assert_allclose(model.apply(variables, x), expected, rtol=1e-5, atol=1e-5)


def test_fastai_head_train_mode_matches_torch_outputs_and_running_stats(head_case):
    model, variables, reference, x, x_torch = head_case
    expected = reference.train()(x_torch).detach().numpy()
    out, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    for index, name in ((2, "bn1"), (6, "bn2")):
        stats = updates["batch_stats"][name]
        np.testing.assert_allclose(stats["mean"], reference[index].running_mean.numpy(),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(stats["var"], reference[index].running_var.numpy(),
                                   rtol=1e-5, atol=1e-6)


def test_fastai_head_dropout_uses_the_dropout_rng():
    model = FastaiHead(2, 16, (0.25, 0.5))
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 2, 2, 8))
    variables = model.init(jax.random.PRNGKey(1), x)

    def train(key):
        return model.apply(variables, x, train=True, mutable=["batch_stats"],
                           rngs={"dropout": jax.random.PRNGKey(key)})[0]

    np.testing.assert_array_equal(train(3), train(3))
    assert not np.allclose(train(3), train(4))
    np.testing.assert_array_equal(model.apply(variables, x), model.apply(variables, x))


def test_fastai_head_initialises_as_vision_learner_does():
    # Linear: kaiming_normal_ (std sqrt(2 / fan_in), untruncated); BatchNorm: weight 1, bias 1e-3.
    params = FastaiHead(4, 512).init(jax.random.PRNGKey(0), jnp.zeros((2, 3, 3, 512)))["params"]
    assert set(params) == {"bn1", "fc1", "bn2", "fc2"}
    assert set(params["fc1"]) == {"kernel"} and set(params["fc2"]) == {"kernel"}
    kernel = np.asarray(params["fc1"]["kernel"])
    std = math.sqrt(2 / 1024)
    assert np.std(kernel) == pytest.approx(std, rel=0.01)
    assert np.abs(kernel).max() > 3.5 * std  # a truncated normal stops at 2 std
    for name in ("bn1", "bn2"):
        np.testing.assert_array_equal(params[name]["scale"], 1.0)
        np.testing.assert_array_equal(params[name]["bias"], np.float32(1e-3))


def test_resnet_fastai_head_from_config_replaces_fc():
    model = get_model({"name": "resnet18", "head": "fastai", "head_hidden": 16,
                       "head_dropout": [0.1, 0.2]}, num_classes=3)
    assert model.head_dropout == (0.1, 0.2)
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                                  jnp.zeros((1, 64, 64, 3))))
    params = variables["params"]
    assert "fc" not in params
    shapes = jax.tree.map(lambda a: a.shape, params["head"])
    assert shapes == {"bn1": {"scale": (1024,), "bias": (1024,)}, "fc1": {"kernel": (1024, 16)},
                      "bn2": {"scale": (16,), "bias": (16,)}, "fc2": {"kernel": (16, 3)}}
    # resnet18 without its fc (512 * 1000 + 1000), plus the head: 2048 + 16384 + 32 + 48.
    count = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))
    assert count == 11_689_512 - 513_000 + 2048 + 16_384 + 32 + 48
    with pytest.raises(ConfigError, match="'plain', 'fastai'"):
        jax.eval_shape(lambda: resnet18(head="timm").init(jax.random.PRNGKey(0),
                                                          jnp.zeros((1, 32, 32, 3))))


def test_norm_paths_name_every_resnet_batch_norm():
    variables = jax.eval_shape(lambda: resnet18(head="fastai").init(
        jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))
    blocks = [f"layer{s}_{i}/bn{n}" for s in range(1, 5) for i in range(2) for n in (1, 2)]
    downsamples = [f"layer{s}_0/downsample_1" for s in (2, 3, 4)]
    paths = norm_paths(variables)
    assert len(paths) == len(set(paths)) == 1 + 16 + 3 + 2
    assert set(paths) == {"bn1", "head/bn1", "head/bn2", *blocks, *downsamples}


def only_norms(module, method_name):
    return isinstance(module, TorchBatchNorm)


def test_frozen_norms_keep_running_stats_and_eval_outputs_while_training():
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 32, 32, 1))
    variables = randomize(jax.eval_shape(resnet18(num_classes=2, head="fastai").init,
                                         jax.random.PRNGKey(1), x), seed=2)
    stem_and_layer1 = [p for p in norm_paths(variables) if p == "bn1" or p.startswith("layer1")]
    frozen = (*stem_and_layer1, "head/bn1")
    model = resnet18(num_classes=2, head="fastai", frozen_norms=frozen)

    _, train_vars = jax.jit(lambda v: model.apply(
        v, x, train=True, capture_intermediates=only_norms,
        mutable=["batch_stats", "intermediates"], rngs={"dropout": jax.random.PRNGKey(3)}))(
            variables)
    _, eval_vars = jax.jit(lambda v: model.apply(
        v, x, capture_intermediates=only_norms, mutable=["intermediates"]))(variables)

    def at(tree, path):
        for key in path.split("/"):
            tree = tree[key]
        return tree

    changed = []
    for path in norm_paths(variables):
        before, after = at(variables["batch_stats"], path), at(train_vars["batch_stats"], path)
        same = all(np.array_equal(before[k], after[k]) for k in ("mean", "var"))
        assert same == (path in frozen), path
        train_out = at(train_vars["intermediates"], path)["__call__"][0]
        eval_out = at(eval_vars["intermediates"], path)["__call__"][0]
        if path in stem_and_layer1:  # everything up to them is frozen too
            np.testing.assert_allclose(train_out, eval_out, rtol=1e-6, atol=1e-6)
        elif not np.allclose(train_out, eval_out, atol=1e-3):
            changed.append(path)
    assert len(stem_and_layer1) == 5 and "layer2_0/bn1" in changed


def test_unknown_frozen_norm_is_a_config_error():
    model = resnet18(frozen_norms=("layer1_0/bn9",))
    with pytest.raises(ConfigError, match=r"\['layer1_0/bn9'\].*layer1_0/bn2"):
        jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))


def test_simple_cnn_frozen_norm():
    model = SimpleCNN(num_classes=2, widths=(4, 8), dense=(), batch_norm=True,
                      frozen_norms=("bn2",))
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 14, 14, 1)) + 1
    variables = model.init(jax.random.PRNGKey(1), x)
    _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    jax.tree.map(np.testing.assert_array_equal, updates["batch_stats"]["bn2"],
                 variables["batch_stats"]["bn2"])
    assert not np.array_equal(updates["batch_stats"]["bn1"]["mean"],
                              variables["batch_stats"]["bn1"]["mean"])


@pytest.fixture
def logits_case():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(16, 5)).astype(np.float32) * 2
    labels = rng.integers(0, 5, size=16).astype(np.int32)
    mix_labels = rng.permutation(labels)
    mix_weight = rng.uniform(size=16).astype(np.float32)
    return logits, labels, mix_labels, mix_weight


WEIGHTS = (0.5, 2.0, 1.0, 3.0, 0.25)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3, 1.0])
@pytest.mark.parametrize("weights", [None, WEIGHTS])
def test_loss_equals_torch_cross_entropy(logits_case, smoothing, weights):
    logits, labels = logits_case[:2]
    weight = None if weights is None else torch.tensor(weights, dtype=torch.float64)
    expected = torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=smoothing)(
        torch.from_numpy(logits).double(), torch.from_numpy(labels).long()).item()
    got = float(Loss(smoothing, weights)(jnp.asarray(logits), jnp.asarray(labels)))
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_unweighted_mixup_loss_is_bit_identical_to_the_previous_formula(logits_case):
    logits, labels, mix_labels, w = map(jnp.asarray, logits_case)
    before = (w * cross_entropy_loss(logits, labels)
              + (1 - w) * cross_entropy_loss(logits, mix_labels)).mean()
    assert float(Loss()(logits, labels, mix_labels, w)) == float(before)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_weighted_mixup_loss_mixes_torch_terms(logits_case, smoothing):
    logits, labels, mix_labels, w = logits_case
    weight = torch.tensor(WEIGHTS, dtype=torch.float64)

    def per_example(y):  # torch's unreduced terms are the numerators
        return torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=smoothing,
                                         reduction="none")(
            torch.from_numpy(logits).double(), torch.from_numpy(y).long()).numpy()

    class_w = np.asarray(WEIGHTS)
    expected = ((w * per_example(labels) + (1 - w) * per_example(mix_labels)).sum()
                / (w * class_w[labels] + (1 - w) * class_w[mix_labels]).sum())
    loss = Loss(smoothing, WEIGHTS)
    got = loss(*map(jnp.asarray, (logits, labels, mix_labels, w)))
    assert float(got) == pytest.approx(expected, rel=1e-6)
    # A mix weight of 1 is torch's loss on the first labels alone.
    ones = jnp.ones_like(jnp.asarray(w))
    assert float(loss(jnp.asarray(logits), labels, mix_labels, ones)) == pytest.approx(
        float(loss(jnp.asarray(logits), labels)), rel=1e-6)


def test_loss_is_hashable_and_checks_its_fields():
    assert hash(Loss(0.1, [1, 2])) == hash(Loss(0.1, (1.0, 2.0)))
    config = heartbeat_synthetic.get_config()
    config.loss.label_smoothing = 1.5
    with pytest.raises(ConfigError, match="label_smoothing"):
        validate_config(config)
    with pytest.raises(ValueError, match="2 entries for 5 classes"):
        Loss(class_weights=(1.0, 2.0))(jnp.zeros((1, 5)), jnp.zeros((1,), jnp.int32))


def test_balanced_class_weights_by_hand():
    # 8 examples, 3 classes with counts 4, 3, 1: 8 / (3 * count).
    weights = balanced_class_weights([0, 0, 0, 0, 1, 1, 1, 2], 3)
    assert weights == pytest.approx((8 / 12, 8 / 9, 8 / 3))
    with pytest.raises(DataError, match=r"classes \[1, 3\] have no examples"):
        balanced_class_weights(np.array([0, 2, 2]), 4)
    with pytest.raises(DataError, match="must lie in"):
        balanced_class_weights([0, 3], 3)


def test_train_step_reports_the_loss_it_is_given():
    model = SimpleCNN(num_classes=3, widths=(4,), dense=(), batch_norm=True)
    state = create_train_state(model, optax.sgd(0.1), (8, 8, 1), jax.random.PRNGKey(0))
    batch = {"image": np.random.default_rng(0).normal(size=(6, 8, 8, 1)).astype(np.float32),
             "label": np.array([0, 1, 2, 0, 0, 1], np.int32)}
    loss = Loss(0.1, balanced_class_weights(batch["label"], 3))
    logits, _ = state.apply_fn(state.variables, batch["image"], train=True,
                               mutable=["batch_stats"])
    expected = float(loss(logits, batch["label"]))
    state, metrics = jit_train_step(state, batch, loss=loss)
    assert float(metrics["loss"]) == pytest.approx(expected, rel=1e-6)
    _, metrics = jit_train_step(state, batch, loss)  # positional works too
    assert float(metrics["loss"]) < expected
