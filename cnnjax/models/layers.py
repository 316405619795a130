"""Building blocks shared by the models: torchvision-style conv/BN, pooling kinds."""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any

# torchvision initialises convolutions with kaiming_normal_(mode='fan_out', nonlinearity='relu').
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# torch.nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
dense_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_conv(features: int, kernel: int, stride: int = 1, *, padding: int | None = None,
               dtype: Dtype = jnp.float32, name: str | None = None) -> nn.Conv:
    """A bias-free conv with torch's explicit symmetric padding (never 'SAME' at stride 2)."""
    pad = kernel // 2 if padding is None else padding
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=((pad, pad), (pad, pad)), use_bias=False, dtype=dtype,
                   kernel_init=conv_kernel_init, name=name)


def torch_batch_norm(train: bool, *, name: str | None = None,
                     scale_init: Callable = nn.initializers.ones) -> nn.BatchNorm:
    """BatchNorm with torch's defaults: momentum 0.1 (0.9 in flax terms), epsilon 1e-5.

    Under `jit` with a sharded batch, the batch statistics are global (axis_name=None).
    """
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        scale_init=scale_init, name=name)


def _pool_2x2(x: jnp.ndarray, reduce: Callable) -> jnp.ndarray:
    """2x2/2 pooling as a reshape + reduction (floor mode, like torch and Keras).

    XLA differentiates this far faster on CPU than the generic `reduce_window` of
    `nn.max_pool`, whose backward pass dominated a small CNN's step.
    """
    n, h, w, c = x.shape
    h2, w2 = h // 2, w // 2
    x = x[:, : 2 * h2, : 2 * w2, :].reshape(n, h2, 2, w2, 2, c)
    return reduce(x, axis=(2, 4))


def max_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
    return _pool_2x2(x, jnp.max)


def avg_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
    return _pool_2x2(x, jnp.mean)


def min_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
    return -_pool_2x2(-x, jnp.max)


POOLS_2X2: dict[str, Callable[[jnp.ndarray], jnp.ndarray]] = {
    "max": max_pool_2x2,
    "avg": avg_pool_2x2,
    "min": min_pool_2x2,
}


def global_avg_pool(x: jnp.ndarray) -> jnp.ndarray:
    return jnp.mean(x, axis=(1, 2))


def flatten(x: jnp.ndarray) -> jnp.ndarray:
    return x.reshape(x.shape[0], -1)


torch_dense = functools.partial(nn.Dense, kernel_init=dense_kernel_init)
