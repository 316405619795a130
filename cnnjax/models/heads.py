"""Classifier heads that sit on a backbone's last feature map.

`FastaiHead` is fastai's `create_head` with its defaults (concat pooling, first BN on, no
final BN): what `vision_learner` puts on a cut torchvision body, so a port of a fastai
recipe trains the same head.
"""

from __future__ import annotations


import flax.linen as nn
import jax.numpy as jnp

from cnnjax.models.layers import Dtype, global_avg_pool
from cnnjax.models.norms import bn_layer

HEADS = ("plain", "fastai")

# fastai's `vision_learner` re-initialises the head's linear layers with torch's
# kaiming_normal_ (fan_in, ReLU gain, untruncated); its BatchNorm biases start at 1e-3.
fastai_kernel_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
fastai_bn_bias_init = nn.initializers.constant(1e-3)


def concat_pool(x: jnp.ndarray) -> jnp.ndarray:
    """fastai's AdaptiveConcatPool2d on NHWC: global max pool, then global average pool."""
    return jnp.concatenate([jnp.max(x, axis=(1, 2)), global_avg_pool(x)], axis=-1)


class FastaiHead(nn.Module):
    """Concat pool, then two of fastai's LinBnDrop (BatchNorm1d, Dropout, bias-free Linear):
    the first to `hidden` features with ReLU, the second to `num_classes`.

    BatchNorm follows torch (eps 1e-5, momentum 0.1); dropout draws from the 'dropout' rng.
    `frozen_norms` ('bn1', 'bn2') keeps those BatchNorms in eval mode while training.
    """
    num_classes: int
    hidden: int = 512
    dropout: tuple[float, float] = (0.25, 0.5)
    frozen_norms: tuple[str, ...] = ()
    norm_axis_name: str | None = None  # pmap: BatchNorm statistics over this device axis
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        first_rate, second_rate = self.dropout
        x = bn_layer(self, train, "bn1", bias_init=fastai_bn_bias_init)(
            concat_pool(x))
        x = nn.Dropout(first_rate, deterministic=not train)(x)
        x = nn.relu(_linear(self.hidden, self.dtype, "fc1")(x))
        x = bn_layer(self, train, "bn2", bias_init=fastai_bn_bias_init)(x)
        x = nn.Dropout(second_rate, deterministic=not train)(x)
        return _linear(self.num_classes, self.dtype, "fc2")(x)


def _linear(features: int, dtype: Dtype, name: str) -> nn.Dense:
    """fastai's LinBnDrop leaves out the Linear's bias whenever its BatchNorm is on."""
    return nn.Dense(features, use_bias=False, dtype=dtype, kernel_init=fastai_kernel_init,
                    name=name)
