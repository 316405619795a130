"""fastai's transfer-learning recipe: frozen parameters, per-group learning rates, one-cycle
with cycled momentum, weight decay off for rank-1 leaves; against closed forms and torch."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from cnnjax.config import validate_config
from cnnjax.configs import base
from cnnjax.models import SimpleCNN, resnet18
from cnnjax.train.optim import (group_multipliers, make_momentum_schedule, make_optimizer,
                                make_schedule)
from cnnjax.train.param_groups import (frozen_mask, lr_group_labels, matches, param_paths,
                                       unmatched_patterns)
from cnnjax.train.state import create_train_state
from cnnjax.train.steps import jit_train_step

SHAPES = {  # a ResNet's names, tiny shapes
    "conv1": {"kernel": (3, 3, 1, 2)}, "bn1": {"scale": (2,), "bias": (2,)},
    "layer1_0": {"conv1": {"kernel": (3, 3, 2, 2)}, "bn1": {"scale": (2,), "bias": (2,)}},
    "layer2_0": {"downsample_0": {"kernel": (1, 1, 2, 3)},
                 "downsample_1": {"scale": (3,), "bias": (3,)}},
    "layer3_0": {"conv2": {"kernel": (3, 3, 3, 3)}},
    "layer4_1": {"bn2": {"scale": (3,), "bias": (3,)}},
    "fc": {"kernel": (3, 4), "bias": (4,)},
}
GROUP = {"conv1": "early", "bn1": "early", "layer1_0": "early", "layer2_0": "early",
         "layer3_0": "late", "layer4_1": "late", "fc": "head"}


def opt_config(**overrides) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(dict(
        name="adam", learning_rate=1e-2, weight_decay=0.0, b1=0.9, b2=0.999,
        schedule="constant", warmup_fraction=0.25, div_factor=25.0, final_div_factor=1e4,
        moms=(0.95, 0.85, 0.95), cycle_momentum=True, lr_spread=1.0))
    config.update(overrides)
    return config


def random_tree(seed: int, scale: float = 1.0) -> dict:
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda shape: (scale * rng.normal(size=shape)).astype(np.float32),
                        SHAPES, is_leaf=lambda x: isinstance(x, tuple))


def cos_anneal(a: float, b: float, fraction: float) -> float:  # fastai's SchedCos
    return b + (a - b) / 2 * (1 + math.cos(math.pi * fraction))


def test_paths_aliases_and_regexes():
    paths = jax.tree.leaves(param_paths(random_tree(0)))
    assert "layer2_0/downsample_1/bias" in paths and "fc/kernel" in paths
    assert matches("layer1_0/conv1/kernel", ["layer1"])
    assert matches("bn1/bias", ["stem"]) and not matches("layer1_0/bn1/bias", ["stem"])
    assert matches("fc/kernel", ["head"]) and matches("head_dense/bias", ["head"])
    assert matches("head/out/kernel", ["head"]) and not matches("header/kernel", ["head"])
    assert matches("layer4_1/bn2/scale", ["body"]) and not matches("fc/bias", ["body"])
    assert matches("layer3_0/conv2/kernel", [r"layer\d_0/conv2"])
    assert not matches("layer3_0/conv2/kernel", [])


def test_frozen_mask_and_unmatched_patterns():
    params = random_tree(0)
    mask = frozen_mask(params, ["stem", "layer3"])
    assert mask["conv1"]["kernel"] is True and mask["bn1"]["bias"] is True
    assert mask["layer3_0"]["conv2"]["kernel"] is True
    assert mask["layer1_0"]["conv1"]["kernel"] is False and mask["fc"]["bias"] is False
    body = jax.tree.leaves(param_paths(params)), jax.tree.leaves(frozen_mask(params, ["body"]))
    assert all(frozen == (not path.startswith("fc/")) for path, frozen in zip(*body))
    assert unmatched_patterns(params, ["stem", "lyer1", "layer9", "head"]) == ["lyer1", "layer9"]


def test_lr_groups_split_a_resnet_like_fastai_and_leave_simple_cnn_whole():
    x = jnp.zeros((1, 32, 32, 1))
    params = jax.eval_shape(lambda: resnet18(3, 1).init(jax.random.PRNGKey(0), x))["params"]
    labels = dict(zip(jax.tree.leaves(param_paths(params)),
                      jax.tree.leaves(lr_group_labels(params))))
    assert labels["conv1/kernel"] == labels["bn1/scale"] == "early"
    assert labels["layer1_0/conv2/kernel"] == labels["layer2_1/bn2/bias"] == "early"
    assert labels["layer3_0/downsample_0/kernel"] == labels["layer4_1/conv2/kernel"] == "late"
    assert labels["fc/kernel"] == labels["fc/bias"] == "head"
    assert sorted(set(labels.values())) == ["early", "head", "late"]
    cnn = SimpleCNN(num_classes=3, widths=(4,), dense=(8,), batch_norm=True, in_channels=1)
    cnn_params = jax.eval_shape(lambda: cnn.init(jax.random.PRNGKey(0), x))["params"]
    assert "conv1/kernel" in jax.tree.leaves(param_paths(cnn_params))
    assert set(jax.tree.leaves(lr_group_labels(cnn_params))) == {"head"}


def test_group_multipliers_are_fastai_even_mults():
    # fastai: even_mults(1e-2, 1, 3) = [1e-2, 1e-1, 1].
    assert group_multipliers(0.01) == pytest.approx({"early": 0.01, "late": 0.1, "head": 1.0})
    assert group_multipliers(1.0) == {"early": 1.0, "late": 1.0, "head": 1.0}
    with pytest.raises(ValueError):
        group_multipliers(0.0)


def test_one_cycle_lr_and_momentum_match_fastai_closed_form():
    peak, div, final_div, total = 1e-2, 25.0, 1e4, 10
    opt = opt_config(schedule="one_cycle", learning_rate=peak, warmup_fraction=0.25)
    lr, b1 = make_schedule(opt, total), make_momentum_schedule(opt, total)
    start, end = peak / div, peak / div / final_div
    # fastai positions are step / total: the peak is at 2.5 steps, between two steps.
    assert float(lr(0)) == pytest.approx(start) and float(b1(0)) == pytest.approx(0.95)
    assert float(lr(2)) == pytest.approx(cos_anneal(start, peak, 2 / 2.5))
    assert float(b1(2)) == pytest.approx(cos_anneal(0.95, 0.85, 2 / 2.5))
    assert float(lr(6)) == pytest.approx(cos_anneal(peak, end, 3.5 / 7.5))
    assert float(b1(6)) == pytest.approx(cos_anneal(0.85, 0.95, 3.5 / 7.5))
    assert float(lr(10)) == pytest.approx(end) and float(b1(10)) == pytest.approx(0.95)
    whole = make_schedule(opt, 200), make_momentum_schedule(opt, 200)
    assert [float(s(50)) for s in whole] == pytest.approx([peak, 0.85])


def test_momentum_is_constant_b1_unless_cycling_one_cycle():
    for opt in (opt_config(schedule="one_cycle", cycle_momentum=False),
                opt_config(schedule="cosine")):
        b1 = make_momentum_schedule(opt, 100)
        assert [float(b1(s)) for s in (0, 25, 100)] == pytest.approx([0.9] * 3)


def test_start_step_shifts_the_schedules():
    opt = opt_config(schedule="one_cycle", warmup_fraction=0.3)
    for make in (make_schedule, make_momentum_schedule):
        plain, shifted = make(opt, 20), make(opt, 20, start_step=50)
        assert [float(shifted(50 + s)) for s in (0, 3, 6, 13, 20)] == pytest.approx(
            [float(plain(s)) for s in (0, 3, 6, 13, 20)])
    _, schedule = make_optimizer(opt, 20, random_tree(0), start_step=50)
    assert float(schedule(56)) == pytest.approx(opt.learning_rate)


@pytest.mark.parametrize("schedule, lr_at_0", [("constant", 1e-2), ("one_cycle", 1e-2 / 25)])
def test_first_adam_step_is_the_group_rate_times_g_over_abs_g_plus_eps(schedule, lr_at_0):
    # Adam's first step: m_hat = g, v_hat = g^2, so the update is -lr * g / (|g| + eps).
    params, grads = random_tree(0), random_tree(1)
    tx, lr = make_optimizer(opt_config(schedule=schedule, lr_spread=0.01), 100, params)
    assert float(lr(0)) == pytest.approx(lr_at_0)
    updates, _ = tx.update(grads, tx.init(params), params)
    mult = {"early": 0.01, "late": 0.1, "head": 1.0}
    for path, g, u in zip(jax.tree.leaves(param_paths(params)), jax.tree.leaves(grads),
                          jax.tree.leaves(updates)):
        g = g.astype(np.float64)
        expected = -lr_at_0 * mult[GROUP[path.split("/")[0]]] * g / (np.abs(g) + 1e-8)
        np.testing.assert_allclose(np.asarray(u), expected, rtol=1e-5, err_msg=path)


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_weight_decay_skips_biases_and_batchnorm(name):
    params = random_tree(0)
    zeros = jax.tree.map(np.zeros_like, params)
    tx, _ = make_optimizer(opt_config(name=name, weight_decay=0.5), 10, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    for path, p, u in zip(jax.tree.leaves(param_paths(params)), jax.tree.leaves(params),
                          jax.tree.leaves(updates)):
        if p.ndim <= 1:  # no gradient, no decay: Adam's step is 0 / (0 + eps)
            assert not np.any(np.asarray(u)), path
        elif name == "adam":  # L2: the gradient g = 0.5 * p, Adam's first step as above
            g = 0.5 * p.astype(np.float64)
            np.testing.assert_allclose(u, -1e-2 * g / (np.abs(g) + 1e-8), rtol=1e-6,
                                       err_msg=path)
        else:  # decoupled: p -= lr * weight_decay * p, beside Adam's zero step
            np.testing.assert_allclose(u, -1e-2 * 0.5 * p, rtol=1e-6, err_msg=path)


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_frozen_leaves_take_no_step_and_keep_zero_moments(name):
    params = random_tree(0)
    tx, _ = make_optimizer(opt_config(name=name, weight_decay=0.5, lr_spread=0.01), 10,
                           params, freeze=("stem", "layer3"))
    state, new = tx.init(params), params
    for seed in range(3):
        updates, state = tx.update(random_tree(seed + 1), state, new)
        new = jax.tree.map(lambda p, u: p + u, new, updates)
    adam = state[1]
    frozen = frozen_mask(params, ("stem", "layer3"))
    for is_frozen, p, q, mu, nu, n in zip(*map(jax.tree.leaves, (
            frozen, params, new, adam.mu, adam.nu, adam.leaf_count))):
        if is_frozen:
            assert np.array_equal(p, q) and not np.any(mu) and not np.any(nu) and n == 0
        else:
            assert not np.any(p == q) and n == 3
    assert int(adam.count) == 3


def test_opt_state_structure_does_not_depend_on_freeze_name_or_start():
    params = random_tree(0)
    plain, _ = make_optimizer(opt_config(), 10, params)
    other, _ = make_optimizer(opt_config(name="adamw", weight_decay=0.1, schedule="one_cycle",
                                         lr_spread=0.01), 10, params,
                              freeze=("body",), start_step=7)
    a, b = plain.init(params), other.init(params)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    assert jax.tree.map(np.shape, a) == jax.tree.map(np.shape, b)


def test_frozen_resnet_parameters_are_bit_identical_after_train_steps():
    model = resnet18(num_classes=3, in_channels=1)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                               jnp.zeros((1, 32, 32, 1))))["params"]
    freeze = ("stem", "layer1", "layer3_1")
    tx, _ = make_optimizer(opt_config(name="adamw", weight_decay=0.1, schedule="one_cycle",
                                      lr_spread=0.01), 10, shapes, freeze=freeze)
    state = create_train_state(model, tx, (32, 32, 1), jax.random.PRNGKey(0))
    before = jax.device_get(state.params)
    rng = np.random.default_rng(0)
    batch = {"image": rng.normal(size=(4, 32, 32, 1)).astype(np.float32),
             "label": np.array([0, 1, 2, 0], np.int32)}
    for _ in range(3):
        state, _ = jit_train_step(state, batch)
    after = jax.device_get(state.params)
    frozen = frozen_mask(before, freeze)
    for path, is_frozen, a, b in zip(*map(jax.tree.leaves, (
            param_paths(before), frozen, before, after))):
        assert np.array_equal(a, b) == is_frozen, path
    assert sum(jax.tree.leaves(frozen)) == 3 + 2 * 6 + 6  # stem, layer1, layer3_1


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_fine_tune_matches_torch_adam_with_one_cycle(name):
    """fastai's fine_tune in torch: `body` frozen (no grad) for a one-cycle of 6 steps, then
    everything unfrozen for a second one-cycle of 5 steps with per-group rates, one optimizer
    throughout. torch's OneCycleLR puts its peak at step pct*T - 1 and its end at T - 1, a
    step before fastai's (pct*T, T); `total_steps = T + 1` with `pct_start = (pct*T + 1) /
    (T + 1)` lands both on fastai's steps."""
    torch = pytest.importorskip("torch")
    phases = [dict(steps=6, freeze=("body",), start=0,
                   opt=opt_config(name=name, weight_decay=0.1, schedule="one_cycle",
                                  learning_rate=1e-2, warmup_fraction=0.25)),
              dict(steps=5, freeze=(), start=6,
                   opt=opt_config(name=name, weight_decay=0.1, schedule="one_cycle",
                                  learning_rate=5e-3, warmup_fraction=0.3, div_factor=5.0,
                                  lr_spread=0.01))]
    init, target, weight = random_tree(0), random_tree(1), random_tree(2, scale=0.5)

    def loss(params):
        return sum(jnp.sum(w**2 * (p - t) ** 2) for p, t, w in zip(
            *map(jax.tree.leaves, (params, target, weight))))

    paths = jax.tree.leaves(param_paths(init))
    torch_params = [torch.nn.Parameter(torch.tensor(p)) for p in jax.tree.leaves(init)]
    torch_group = {(GROUP[path.split("/")[0]], p.ndim > 1): [] for path, p in
                   zip(paths, torch_params)}
    for path, p in zip(paths, torch_params):
        torch_group[GROUP[path.split("/")[0]], p.ndim > 1].append(p)
    keys = list(torch_group)
    torch_opt = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name](
        [{"params": torch_group[k], "weight_decay": 0.1 if k[1] else 0.0} for k in keys],
        lr=1e-3, betas=(0.9, 0.999), eps=1e-8)

    params, opt_state = init, None
    for phase in phases:
        opt, steps = phase["opt"], phase["steps"]
        tx, schedule = make_optimizer(opt, steps, init, freeze=phase["freeze"],
                                      start_step=phase["start"])
        opt_state = tx.init(params) if opt_state is None else opt_state
        mults = group_multipliers(opt.lr_spread)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            torch_opt, max_lr=[opt.learning_rate * mults[k[0]] for k in keys],
            total_steps=steps + 1, pct_start=(opt.warmup_fraction * steps + 1) / (steps + 1),
            anneal_strategy="cos", cycle_momentum=True, base_momentum=0.85,
            max_momentum=0.95, div_factor=opt.div_factor, final_div_factor=opt.final_div_factor,
            three_phase=False)
        frozen = frozen_mask(init, phase["freeze"])
        for p, is_frozen in zip(torch_params, jax.tree.leaves(frozen)):
            p.requires_grad_(not is_frozen)
        for step in range(phase["start"], phase["start"] + steps):
            for k, group in zip(keys, torch_opt.param_groups):
                assert group["lr"] == pytest.approx(float(schedule(step)) * mults[k[0]],
                                                    rel=1e-5)
            torch_opt.zero_grad(set_to_none=True)
            sum(torch.sum(torch.tensor(w) ** 2 * (p - torch.tensor(t)) ** 2) for p, t, w in zip(
                torch_params, jax.tree.leaves(target), jax.tree.leaves(weight))).backward()
            torch_opt.step()
            scheduler.step()
            updates, opt_state = tx.update(jax.grad(loss)(params), opt_state, params)
            params = jax.tree.map(lambda p, u: p + u, params, updates)
    for path, p, q, p0 in zip(paths, jax.tree.leaves(params), torch_params,
                              jax.tree.leaves(init)):
        np.testing.assert_allclose(p, q.detach().numpy(), rtol=0, atol=1e-6, err_msg=path)
        assert not np.array_equal(p, p0), path


def test_unknown_optimizer_or_schedule_is_an_error():
    config = base.get_config()  # the optimizer's name: the config's gate
    config.optimizer.name = "sgd"
    with pytest.raises(ValueError, match="optimizer"):
        validate_config(config)
    with pytest.raises(ValueError, match="schedule"):
        make_optimizer(opt_config(schedule="linear"), 10, random_tree(0))
