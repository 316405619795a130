"""Classifier heads that sit on a backbone's last feature map.

`FastaiHead` is fastai's `create_head` with its defaults (concat pooling, first BN on, no
final BN): what `vision_learner` puts on a cut torchvision body, so a port of a fastai
recipe trains the same head. `DenseHead` is the head of Keras' transfer-learning tutorial
(flatten, dense 1024 + ReLU, dropout 0.2, output layer) for a backbone cut at an
intermediate block.

A model's `head` field picks one of `HEADS`: 'plain' is the network's own torchvision
classifier (`fc`, which pretrained files carry); 'fastai' and 'dense' are fresh heads under
`params['head']`, which warm starts keep while taking the body from a file; 'none' leaves
the head out, so the model returns its last feature map.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from cnnjax.errors import ConfigError
from cnnjax.models.layers import Dtype, flatten, global_avg_pool, torch_dense
from cnnjax.models.norms import bn_layer, nested_norms

HEADS = ("plain", "fastai", "dense", "none")

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


class DenseHead(nn.Module):
    """Keras' transfer head: flatten, dense `hidden` + ReLU, dropout, dense `num_classes`.

    Flattening keeps where in the cut feature map a pattern was (a 7x7x768 `Mixed_6e` map
    gives 37,632 inputs), which global pooling would average away. Kernels start as torch's
    Linear's do, as elsewhere in cnnjax; dropout draws from the 'dropout' rng.
    """
    num_classes: int
    hidden: int = 1024
    dropout: tuple[float] = (0.2,)
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        (rate,) = self.dropout
        x = nn.relu(torch_dense(self.hidden, dtype=self.dtype, name="fc1")(flatten(x)))
        x = nn.Dropout(rate, deterministic=not train)(x)
        return torch_dense(self.num_classes, dtype=self.dtype, name="fc2")(x)


_FRESH_HEADS = {"fastai": FastaiHead, "dense": DenseHead}


def check_head(head: str, features_at: str, network: str) -> None:
    """Raises ConfigError for an unknown head, or torchvision's own classifier on a network
    cut at `features_at`: that classifier belongs to the whole network's last block."""
    if head not in HEADS:
        raise ConfigError(f"head={head!r} is not a head of {network}; choose one of "
                          f"{list(HEADS)}.")
    if head == "plain" and features_at:
        raise ConfigError(f"head='plain' is torchvision's classifier of the whole {network}; "
                          f"a {network} cut at features_at={features_at!r} takes head "
                          f"'dense', 'fastai' or 'none'.")


def fresh_head(owner: Any, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    """`owner.head` ('fastai' or 'dense') on feature map `x`, as module `head` of `owner`.

    `owner.head_hidden` and `owner.head_dropout` (one rate per dropout layer of the head)
    override the head's own defaults where they are not None; BatchNorm follows
    `owner.frozen_norms` ('head/bn1') and `owner.norm_axis_name`.
    """
    options: dict[str, Any] = {}
    if owner.head_hidden is not None:
        options["hidden"] = owner.head_hidden
    if owner.head_dropout is not None:
        rates = tuple(owner.head_dropout)
        layers = len(_FRESH_HEADS[owner.head].dropout)
        if len(rates) != layers:
            raise ConfigError(f"head_dropout={rates} gives {len(rates)} rate(s), but head "
                              f"{owner.head!r} has {layers} dropout layer(s); give {layers}.")
        options["dropout"] = rates
    if owner.head == "fastai":
        options.update(frozen_norms=nested_norms(owner.frozen_norms, "head"),
                       norm_axis_name=owner.norm_axis_name)
    return _FRESH_HEADS[owner.head](owner.num_classes, dtype=owner.dtype, name="head",
                                    **options)(x, train)
