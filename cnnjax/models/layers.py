"""Building blocks shared by the models: torchvision-style conv/BN, pooling kinds."""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

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
                   kernel_init=conv_kernel_init, conv_general_dilated=conv_general_dilated,
                   name=name)


_NHWC = lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))


def conv_general_dilated(lhs: jnp.ndarray, rhs: jnp.ndarray, window_strides: Sequence[int],
                         padding: str | Sequence[tuple[int, int]], lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision=None,
                         preferred_element_type=None) -> jnp.ndarray:
    """`lax.conv_general_dilated` (the `conv_general_dilated` of every `nn.Conv` here), except
    for two kinds of 2-D NHWC/HWIO convolution that XLA:CPU runs slowly: a 1x1 window without
    padding runs as `pointwise_conv` (one matrix product), and a window with more taps than its
    input or its output has pixels as `small_map_conv` (two dots, no convolution).

    XLA's algebraic simplifier swaps such a convolution's operands (the feature map becomes
    the window, which is smaller), and XLA:CPU has no library kernel for the swapped form (a
    reversed window in a feature-major layout): it runs as an emitted loop at well under
    1 GFLOP/s. ResNet's 3x3 convolutions on layer4's 2x2 map (48x48 and 64x64 inputs) took
    ~0.5 s each, forward and input gradient, where the same layer on a 3x3 map takes ~6 ms
    (the input gradient is a convolution over the output's map, hence the output counts too;
    benchmarks/NOTES.md). The product sums the same terms, equal to float32 rounding.
    """
    dims = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    plain = (lhs.ndim == 4 and dims == _NHWC and feature_group_count == 1
             and batch_group_count == 1 and set(lhs_dilation or (1,)) == {1}
             and set(rhs_dilation or (1,)) == {1})
    if plain:
        pads = (lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
                if isinstance(padding, str) else padding)
        pads = tuple((int(low), int(high)) for low, high in pads)
        out = [(size + low + high - window) // stride + 1 for size, (low, high), window, stride
               in zip(lhs.shape[1:3], pads, rhs.shape[:2], window_strides)]
        taps = rhs.shape[0] * rhs.shape[1]
        if taps == 1 and pads == ((0, 0), (0, 0)):
            return pointwise_conv(lhs, rhs, tuple(window_strides), precision,
                                  preferred_element_type)
        if taps > 1 and taps > min(lhs.shape[1] * lhs.shape[2], out[0] * out[1]):
            return small_map_conv(lhs, rhs, tuple(window_strides), pads, precision,
                                  preferred_element_type)
    out = lax.conv_general_dilated(_whole_on_cpu(lhs), rhs, window_strides, padding,
                                   lhs_dilation, rhs_dilation, dimension_numbers,
                                   feature_group_count, batch_group_count, precision,
                                   preferred_element_type)
    return _whole_on_cpu(out)


def _whole_on_cpu(x: jnp.ndarray) -> jnp.ndarray:
    """On CPU, `x` (and, in the backward pass, its cotangent) as a whole tensor of its own.

    Around a convolution this keeps XLA:CPU from fusing the elementwise work that made its
    input or its output's cotangent (BatchNorm, ReLU, the residual sum, their gradients) into
    the transposed copies its weight gradient reads, where it is recomputed with strided
    access: ResNet-18/34 train steps ~20% faster (benchmarks/NOTES.md). Same values. Not on
    GPUs and TPUs, whose compilers fuse elementwise work into their convolutions.
    """
    return lax.optimization_barrier(x) if jax.default_backend() == "cpu" else x


def pointwise_conv(x: jnp.ndarray, kernel: jnp.ndarray, strides: tuple[int, int],
                   precision=None, preferred_element_type=None) -> jnp.ndarray:
    """A 1x1 NHWC x HWIO convolution as one matrix product of the [pixels, in] input (every
    `strides`-th pixel) with the [in, out] kernel.

    Its weight gradient is then the product of the two [pixels, channels] matrices. As a
    convolution's (or a 4-D dot's) gradient XLA:CPU lays it out channel-major first, a
    strided copy of every activation that took ~1 s of ResNet-50's 4 s train step
    (batch 16, 224x224; benchmarks/NOTES.md). Same sums as the convolution.
    """
    if strides != (1, 1):
        x = x[:, ::strides[0], ::strides[1], :]
    batch, height, width, channels = x.shape
    out = lax.dot_general(x.reshape(batch * height * width, channels), kernel[0, 0],
                          (((1,), (0,)), ((), ())), precision=precision,
                          preferred_element_type=preferred_element_type)
    return out.reshape(batch, height, width, -1)


def small_map_conv(x: jnp.ndarray, kernel: jnp.ndarray, strides: tuple[int, int],
                   padding: Sequence[tuple[int, int]], precision=None,
                   preferred_element_type=None) -> jnp.ndarray:
    """An NHWC x HWIO convolution on a small map as two dots: the first gathers every output
    pixel's window (im2col) as a product with a constant 0/1 tap-selection tensor, exact in
    any dtype (one input pixel per output pixel and tap, zero where the window hangs over the
    edge); the second contracts the windows with the kernel. The gradients are dots too.
    Cheap where it is used, on maps with fewer pixels than the window has taps, and as few
    operations for XLA to compile as a convolution."""
    batch, height, width, channels = x.shape
    window_h, window_w, _, features = kernel.shape
    select = _tap_selection((height, width), (window_h, window_w), strides, padding)
    windows = lax.dot_general(  # [batch, in, pixels_out, taps]
        x.reshape(batch, height * width, channels), jnp.asarray(select, x.dtype),
        (((1,), (0,)), ((), ())), precision=lax.Precision.HIGHEST)
    out = lax.dot_general(windows, kernel.reshape(window_h * window_w, channels, features),
                          (((3, 1), (0, 1)), ((), ())), precision=precision,
                          preferred_element_type=preferred_element_type)
    out_h = (height + sum(padding[0]) - window_h) // strides[0] + 1
    return out.reshape(batch, out_h, -1, features)


@functools.lru_cache(maxsize=None)
def _tap_selection(size: tuple[int, int], window: tuple[int, int], strides: tuple[int, int],
                   padding: tuple[tuple[int, int], ...]) -> np.ndarray:
    """[pixels_in, pixels_out, taps] 0/1: which window tap joins input pixel p to output q."""
    (height, width), (window_h, window_w) = size, window
    out_h = (height + sum(padding[0]) - window_h) // strides[0] + 1
    out_w = (width + sum(padding[1]) - window_w) // strides[1] + 1
    select = np.zeros((height * width, out_h * out_w, window_h * window_w), np.float32)
    for oy, ox, ky, kx in itertools.product(range(out_h), range(out_w), range(window_h),
                                            range(window_w)):
        iy = oy * strides[0] + ky - padding[0][0]
        ix = ox * strides[1] + kx - padding[1][0]
        if 0 <= iy < height and 0 <= ix < width:
            select[iy * width + ix, oy * out_w + ox, ky * window_w + kx] = 1.0
    return select


# Where a train-mode pass leaves each BatchNorm layer's batch mean and unbiased variance, when
# the caller makes this collection mutable (test-time adaptation reads them there).
NORM_STATS = "norm_stats"


class TorchBatchNorm(nn.Module):
    """BatchNorm that keeps its running statistics exactly as torch.nn.BatchNorm2d does.

    Same variables as `flax.linen.BatchNorm` (params `scale`/`bias`, batch_stats
    `mean`/`var`) and the same flax-style momentum (new = momentum * old + (1 - momentum) *
    batch). In train mode it normalises with the biased batch variance, like torch, but
    updates the running variance with the unbiased one (n / (n - 1)), which flax's module
    does not: without that, running statistics drift away from torch's during fine-tuning
    of ported weights. Statistics are computed in float32 with two passes (mean, then mean
    squared deviation). `axis_name` is for the `pmap` path only; under `jit` with a sharded
    batch the statistics are global already.
    """
    use_running_average: bool | None = None
    momentum: float = 0.9
    epsilon: float = 1e-5
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    axis_name: str | None = None
    scale_init: Callable = nn.initializers.ones
    bias_init: Callable = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jnp.ndarray, use_running_average: bool | None = None) -> jnp.ndarray:
        use_running_average = nn.merge_param("use_running_average", self.use_running_average,
                                             use_running_average)
        features = (x.shape[-1],)
        axes = tuple(range(x.ndim - 1))
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, features, jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, features, jnp.float32)
        scale = self.param("scale", self.scale_init, features, self.param_dtype)
        bias = self.param("bias", self.bias_init, features, self.param_dtype)

        if use_running_average:
            mean, var = ra_mean.value, ra_var.value
        else:
            x32 = x.astype(jnp.float32)
            count = math.prod(x.shape[:-1])
            mean = jnp.mean(x32, axes)
            sync = self.axis_name is not None and not self.is_initializing()
            if sync:
                mean = jax.lax.pmean(mean, self.axis_name)
            var = jnp.mean(jnp.square(x32 - mean), axes)
            if sync:
                var = jax.lax.pmean(var, self.axis_name)
                count = count * jax.lax.psum(1, self.axis_name)
            if not self.is_initializing():
                unbiased = var * (count / jnp.maximum(count - 1, 1))
                ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
                ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * unbiased
                for name, value in (("mean", mean), ("var", unbiased)):
                    self.sow(NORM_STATS, name, value, init_fn=lambda: None,
                             reduce_fn=lambda _, latest: latest)

        dtype = self.dtype or jnp.promote_types(x.dtype, self.param_dtype)
        mul = jax.lax.rsqrt(var + self.epsilon) * scale
        y = (x.astype(jnp.float32) - mean) * mul + bias
        return y.astype(dtype)


def torch_batch_norm(train: bool, *, name: str | None = None, axis_name: str | None = None,
                     epsilon: float = 1e-5, scale_init: Callable = nn.initializers.ones,
                     bias_init: Callable = nn.initializers.zeros) -> TorchBatchNorm:
    """BatchNorm with torch's defaults and update rule: momentum 0.1 (0.9 in flax terms),
    epsilon 1e-5, running variance from the unbiased batch variance (`TorchBatchNorm`).
    A network whose torch original sets another `eps` (InceptionV3: 1e-3) passes it here.

    Under `jit` with a sharded batch, the batch statistics are global (axis_name=None);
    under `pmap`, `axis_name` averages them over the devices.
    """
    return TorchBatchNorm(use_running_average=not train, momentum=0.9, epsilon=epsilon,
                          axis_name=axis_name, scale_init=scale_init, bias_init=bias_init,
                          name=name)


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


def max_pool(x: jnp.ndarray, window: int, stride: int, padding: int = 0) -> jnp.ndarray:
    """`window` x `window` max pooling at `stride` (torch's `max_pool2d`: -inf padding, floor
    mode), as the running maximum of `window`² strided slices.

    The same values as `nn.max_pool`. XLA's CPU backend differentiates it faster than
    `reduce_window` (whose gradient is a `select_and_scatter`): ResNet-34's train step about
    7% (benchmarks/NOTES.md). A window whose maximum is tied shares its gradient among the
    tied entries where torch gives it all to the first; after a ReLU the only likely ties are
    zeros, whose gradient the ReLU drops either way.
    """
    if padding:
        edge = (padding, padding)
        x = jnp.pad(x, ((0, 0), edge, edge, (0, 0)), constant_values=-jnp.inf)
    _, height, width, _ = x.shape
    out_h, out_w = (height - window) // stride + 1, (width - window) // stride + 1
    pooled = None
    for row in range(window):
        for col in range(window):
            part = x[:, row:row + stride * (out_h - 1) + 1:stride,
                     col:col + stride * (out_w - 1) + 1:stride, :]
            pooled = part if pooled is None else jnp.maximum(pooled, part)
    return pooled


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
