"""`benchmarks.conv_breakdown` must time the convolutions the models really run: its tables
are only a profile of the step if every shape and count matches the network."""

from collections import Counter

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from benchmarks.conv_breakdown import CONVS
from cnnjax.models import resnet34, resnet50


def model_convolutions(model: nn.Module, size: int) -> Counter:
    """(kernel, stride, in, out, input side) of every nn.Conv the model calls."""
    seen: Counter = Counter()

    def record(next_fun, args, kwargs, context):
        module = context.module
        if isinstance(module, nn.Conv) and context.method_name == "__call__":
            x = args[0]
            seen[(module.kernel_size[0], module.strides[0], x.shape[-1], module.features,
                  x.shape[1])] += 1
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x),
                       jnp.zeros((1, size, size, 3)))
    return seen


@pytest.mark.parametrize("arch, build", [("resnet34", resnet34), ("resnet50", resnet50)])
def test_the_breakdown_lists_every_convolution_of_the_network(arch, build):
    listed: Counter = Counter()
    for conv in CONVS[arch](224):
        listed[(conv.kernel, conv.stride, conv.cin, conv.cout, conv.size)] += conv.count
    assert listed == model_convolutions(build(num_classes=10), 224)
