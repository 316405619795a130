import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.errors import ConfigError
from cnnjax.models import SimpleCNN, get_model, resnet18, resnet34, resnet50
from cnnjax.models.layers import (avg_pool_2x2, conv_general_dilated, max_pool, max_pool_2x2,
                                  min_pool_2x2)


def param_count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def abstract_init(model, shape):
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(shape)))


@pytest.mark.parametrize("constructor, expected", [
    (resnet18, 11_689_512), (resnet34, 21_797_672), (resnet50, 25_557_032)])
def test_resnet_parameter_counts_match_torchvision(constructor, expected):
    variables = abstract_init(constructor(num_classes=1000), (1, 224, 224, 3))
    assert param_count(variables["params"]) == expected


@pytest.mark.parametrize("constructor", [resnet18, resnet34, resnet50])
def test_resnet_output_and_stage_shapes(constructor):
    model = constructor(num_classes=5, in_channels=1)
    x = jnp.zeros((2, 64, 96, 1))
    variables = abstract_init(model, x.shape)
    logits, state = jax.eval_shape(
        lambda v: model.apply(v, x, mutable=["intermediates"]), variables)
    assert logits.shape == (2, 5)
    widths = (64, 128, 256, 512) if constructor is not resnet50 else (256, 512, 1024, 2048)
    for stage, width in enumerate(widths):
        (feature,) = state["intermediates"][f"layer{stage + 1}"]
        assert feature.shape == (2, 16 // 2**stage, 24 // 2**stage, width)


def test_simple_cnn_is_the_keras_tutorial_network():
    # Hand count for 150x150x3 and one output: convs 896 + 18,496 + 73,856; after three
    # valid-conv + pool blocks 17x17x128 = 36,992 features; dense 4,735,104 + 66,048 + 513.
    model = SimpleCNN(num_classes=1)
    variables = abstract_init(model, (1, 150, 150, 3))
    assert param_count(variables["params"]) == 896 + 18_496 + 73_856 + 4_735_104 + 66_048 + 513
    logits = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((4, 150, 150, 3))), variables)
    assert logits.shape == (4, 1)


def test_simple_cnn_global_average_head_drops_the_spatial_size():
    model = SimpleCNN(num_classes=3, head_pool="gap", dense=(), widths=(8, 16))
    variables = abstract_init(model, (1, 40, 40, 1))
    # conv 8: 80, conv 16: 1,168, output 16*3+3.
    assert param_count(variables["params"]) == 80 + 1_168 + 51


def test_pools_against_hand_computed_values():
    x = jnp.array([[1., 5., -2., 0., 9.],
                   [3., -4., 7., 1., 9.],
                   [2., 2., 2., 2., 9.]])[None, :, :, None]  # odd sizes: floor mode drops edges
    assert max_pool_2x2(x)[0, :, :, 0].tolist() == [[5., 7.]]
    assert min_pool_2x2(x)[0, :, :, 0].tolist() == [[-4., -2.]]
    assert avg_pool_2x2(x)[0, :, :, 0].tolist() == [[1.25, 1.5]]


def test_strided_max_pool_by_hand():
    # 3x3 windows at stride 2 with one row/column of -inf padding, as ResNet's stem pools.
    x = jnp.array([[1., 5., -2., 0.],
                   [3., -4., 7., 1.],
                   [2., 8., 2., -6.],
                   [0., -1., 4., 3.]])[None, :, :, None]
    assert max_pool(x, 3, 2, padding=1)[0, :, :, 0].tolist() == [[5., 7.], [8., 8.]]
    assert max_pool(x, 3, 2)[0, :, :, 0].tolist() == [[8.]]  # floor mode: one window fits


@pytest.mark.parametrize("padding", [0, 1])
def test_strided_max_pool_and_its_gradient_match_reduce_window(padding):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 11, 9, 3))  # odd sizes, no ties
    weights = jax.random.normal(jax.random.PRNGKey(1), (2, 5 + padding, 4 + padding, 3))
    pads = ((padding, padding), (padding, padding))

    def reference(x):
        return nn.max_pool(x, (3, 3), strides=(2, 2), padding=pads)

    assert reference(x).shape == weights.shape
    np.testing.assert_array_equal(max_pool(x, 3, 2, padding), reference(x))
    ours = jax.grad(lambda x: jnp.sum(max_pool(x, 3, 2, padding) * weights))(x)
    theirs = jax.grad(lambda x: jnp.sum(reference(x) * weights))(x)
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("shape, window, stride, padding, as_dot", [
    ((3, 2, 2, 8), 3, 1, ((1, 1), (1, 1)), True),  # ResNet's layer4 at 64x64 inputs
    ((3, 1, 8, 8), 3, 1, ((1, 1), (1, 1)), True),  # ... at 32x256
    ((3, 1, 1, 8), 3, 1, ((1, 1), (1, 1)), True),
    ((3, 4, 4, 8), 3, 2, ((1, 1), (1, 1)), True),  # its output map, 2x2, is the small one
    ((3, 5, 3, 8), 3, 1, "VALID", True),
    ((3, 2, 3, 8), 3, 2, "SAME", True),
    ((3, 3, 3, 8), 3, 1, ((1, 1), (1, 1)), False),  # as many pixels as taps: lax's
    ((3, 2, 2, 8), 1, 1, ((0, 0), (0, 0)), True),  # 1x1: pointwise_conv
    ((3, 7, 5, 8), 1, 2, ((0, 0), (0, 0)), True),  # ResNet's stride-2 downsample
    ((3, 6, 6, 8), 1, 2, "VALID", True),
    ((3, 4, 4, 8), 1, 1, ((1, 1), (1, 1)), False),  # padded 1x1: lax's
])
def test_small_map_and_1x1_convolutions_are_dots_with_lax_values_and_gradients(
        shape, window, stride, padding, as_dot):
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    kernel = jax.random.normal(jax.random.PRNGKey(1), (window, window, shape[-1], 5))

    def conv(impl, x, kernel):
        return impl(x, kernel, (stride, stride), padding,
                    dimension_numbers=("NHWC", "HWIO", "NHWC"))

    ours = conv(conv_general_dilated, x, kernel)
    reference = conv(jax.lax.conv_general_dilated, x, kernel)
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)
    weights = jax.random.normal(jax.random.PRNGKey(2), reference.shape)
    grads = [jax.grad(lambda x, k: jnp.sum(conv(impl, x, k) * weights), (0, 1))(x, kernel)
             for impl in (conv_general_dilated, jax.lax.conv_general_dilated)]
    for ours_grad, reference_grad in zip(*grads):
        np.testing.assert_allclose(ours_grad, reference_grad, rtol=1e-5, atol=1e-5)
    jaxpr = str(jax.make_jaxpr(lambda x, k: conv(conv_general_dilated, x, k))(x, kernel))
    assert ("conv_general_dilated" not in jaxpr) == as_dot


@pytest.mark.parametrize("side", [(64, 64), (32, 256), (48, 48)])
def test_resnet_train_step_compiles_without_swapped_convolutions(side):
    # XLA swaps the operands of a convolution whose window has more taps than its map has
    # pixels and runs the swapped form as a slow emitted loop (a window reversal in the
    # compiled program): the small-input cliff of benchmarks/NOTES.md.
    model = resnet18(num_classes=3, in_channels=1)
    x = jnp.zeros((2, *side, 1))
    variables = model.init(jax.random.PRNGKey(0), x)

    def loss(params):
        logits, _ = model.apply({**variables, "params": params}, x, train=True,
                                mutable=["batch_stats"])
        return jnp.sum(logits)

    hlo = jax.jit(jax.grad(loss)).lower(variables["params"]).compile().as_text()
    swapped = [line for line in hlo.splitlines()
               if "convolution(" in line and "rhs_reversal" in line]
    assert not swapped, swapped


def test_batch_norm_statistics_update_in_train_mode_only():
    model = SimpleCNN(num_classes=3, widths=(8,), dense=(), batch_norm=True, in_channels=1)
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 12, 12, 1)) * 3 + 2
    variables = model.init(jax.random.PRNGKey(0), x)
    _, updated = model.apply(variables, x, train=True, mutable=["batch_stats"])
    # torch's momentum 0.1: running_mean = 0.9 * running_mean + 0.1 * batch mean of conv1.
    conv1 = nn.Conv(8, (3, 3), padding="VALID", use_bias=False).apply(
        {"params": variables["params"]["conv1"]}, x)
    np.testing.assert_allclose(updated["batch_stats"]["bn1"]["mean"],
                               0.1 * conv1.mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)
    _, eval_updates = model.apply(variables, x, train=False, mutable=["batch_stats"])
    jax.tree.map(np.testing.assert_array_equal, eval_updates["batch_stats"],
                 variables["batch_stats"])


def test_get_model_builds_from_config_and_names_bad_fields():
    model = get_model({"name": "simple_cnn", "widths": (4,), "dense": ()}, num_classes=2)
    assert isinstance(model, SimpleCNN) and model.num_classes == 2
    with pytest.raises(ConfigError, match="resnet18"):
        get_model({"name": "resnet19"})
    with pytest.raises(ConfigError, match="config.model.depth"):
        get_model({"name": "resnet18", "depth": 3})


def test_resnet_cut_after_a_stage_returns_its_features_or_a_fresh_head():
    x = jnp.zeros((2, 64, 96, 3))
    cut = resnet18(features_at="layer3", head="none")
    variables = abstract_init(cut, x.shape)
    assert "layer4_0" not in variables["params"] and "fc" not in variables["params"]
    assert jax.eval_shape(cut.apply, variables, x).shape == (2, 4, 6, 256)
    dense = resnet18(num_classes=3, features_at="layer3", head="dense", head_hidden=8,
                     head_dropout=(0.2,))
    variables = abstract_init(dense, x.shape)
    assert variables["params"]["head"]["fc1"]["kernel"].shape == (4 * 6 * 256, 8)
    assert jax.eval_shape(dense.apply, variables, x).shape == (2, 3)
    with pytest.raises(ConfigError, match=r"features_at='layer5'.*\['layer1', 'layer2', "
                                          r"'layer3', 'layer4'\]"):
        abstract_init(resnet18(features_at="layer5", head="none"), x.shape)
    with pytest.raises(ConfigError, match="head='plain'.*takes head 'dense', 'fastai' or 'none'"):
        abstract_init(resnet18(features_at="layer3"), x.shape)
    with pytest.raises(ConfigError, match=r"head_dropout=\(0.25, 0.5\) gives 2 rate\(s\), but "
                                          r"head 'dense' has 1"):
        abstract_init(resnet18(head="dense", head_dropout=(0.25, 0.5)), x.shape)
