"""InceptionV3 in torchvision's layout, so torchvision's weights map onto it by name.

Flax module paths are torchvision's module names verbatim: `Mixed_5b.branch5x5_1.conv.weight`
(OIHW) is `params['Mixed_5b']['branch5x5_1']['conv']['kernel']` (HWIO),
`Mixed_5b.branch5x5_1.bn.running_var` is `batch_stats[...]['bn']['var']`, `fc.weight` is
`params['fc']['kernel']` transposed. Every conv is torchvision's `BasicConv2d`: bias-free
conv, BatchNorm with eps 1e-3 (not torch's default 1e-5), ReLU. Inputs are NHWC.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax.numpy as jnp

from cnnjax.errors import ConfigError
from cnnjax.imagenet import IMAGENET_MEAN, IMAGENET_STD
from cnnjax.models.heads import check_head, fresh_head
from cnnjax.models.layers import Dtype, conv_general_dilated, global_avg_pool, max_pool
from cnnjax.models.norms import bn_layer, check_frozen_norms, nested_norms

# torchvision's children in forward order: `features_at` may name any of them.
BLOCKS = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
          "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a",
          "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")
MIN_SIZE = 75  # torchvision's smallest input: Mixed_7a then sees 3x3
# AuxLogits' 5x5 conv needs Mixed_6e at least 17x17 (pooled 5x5/3 to 5x5): 299x299 inputs.
MIN_SIZE_AUX = 299
# Inputs normalised with IMAGENET_MEAN/STD (`data.normalization='imagenet'`):
# `transform_input` turns them into (pixel - 0.5) / 0.5, the scaling Google trained the
# ImageNet weights with.


def _init(stddev: float) -> nn.initializers.Initializer:
    """torchvision's `trunc_normal_(std=stddev, a=-2, b=2)`: bounds absolute, not in stds."""
    return nn.initializers.truncated_normal(stddev, lower=-2 / stddev, upper=2 / stddev)


def classifier(num_classes: int, stddev: float, dtype: Dtype = jnp.float32, *,
               name: str | None = None) -> nn.Dense:
    """A Linear layer as torchvision initialises Inception's (`fc` 0.1, `AuxLogits.fc` 0.001);
    weight porting builds a fresh one alone with it, for another class count."""
    return nn.Dense(num_classes, dtype=dtype, kernel_init=_init(stddev), name=name)


class BasicConv2d(nn.Module):
    """Bias-free conv (torch's explicit padding, per axis) + BatchNorm (eps 1e-3) + ReLU."""
    features: int
    kernel: tuple[int, int]
    stride: int = 1
    padding: tuple[int, int] = (0, 0)
    stddev: float = 0.1  # torchvision's init
    frozen_norms: tuple[str, ...] = ()
    norm_axis_name: str | None = None  # pmap: BatchNorm statistics over this device axis
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        pad_h, pad_w = self.padding
        x = nn.Conv(self.features, self.kernel, strides=(self.stride, self.stride),
                    padding=((pad_h, pad_h), (pad_w, pad_w)), use_bias=False, dtype=self.dtype,
                    kernel_init=_init(self.stddev),
                    conv_general_dilated=conv_general_dilated, name="conv")(x)
        return nn.relu(bn_layer(self, train, "bn", epsilon=1e-3)(x))


class _Block(nn.Module):
    """What every Inception block shares: its BasicConv2d children by torchvision's names."""
    frozen_norms: tuple[str, ...] = ()
    norm_axis_name: str | None = None
    dtype: Dtype = jnp.float32

    def conv(self, name: str, features: int, kernel: int | tuple[int, int], stride: int = 1,
             padding: int | tuple[int, int] = 0, stddev: float = 0.1) -> BasicConv2d:
        return BasicConv2d(features, _pair(kernel), stride, _pair(padding), stddev,
                           nested_norms(self.frozen_norms, name), self.norm_axis_name,
                           self.dtype, name=name)


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else value


def avg_pool_3x3(x: jnp.ndarray) -> jnp.ndarray:
    """torch's `avg_pool2d(x, 3, stride=1, padding=1)`: zero padding counted in the mean."""
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                       count_include_pad=True)


def max_pool_3x3_s2(x: jnp.ndarray) -> jnp.ndarray:
    """torch's `max_pool2d(x, 3, stride=2)`: no padding, floor mode."""
    return max_pool(x, 3, 2)


class InceptionA(_Block):
    """35x35 block (Mixed_5b..5d): 1x1, 5x5, double 3x3 and pool branches."""
    pool_features: int = 32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        branch1x1 = self.conv("branch1x1", 64, 1)(x, train)
        branch5x5 = self.conv("branch5x5_1", 48, 1)(x, train)
        branch5x5 = self.conv("branch5x5_2", 64, 5, padding=2)(branch5x5, train)
        branch3x3dbl = self.conv("branch3x3dbl_1", 64, 1)(x, train)
        branch3x3dbl = self.conv("branch3x3dbl_2", 96, 3, padding=1)(branch3x3dbl, train)
        branch3x3dbl = self.conv("branch3x3dbl_3", 96, 3, padding=1)(branch3x3dbl, train)
        branch_pool = self.conv("branch_pool", self.pool_features, 1)(avg_pool_3x3(x), train)
        return jnp.concatenate([branch1x1, branch5x5, branch3x3dbl, branch_pool], axis=-1)


class InceptionB(_Block):
    """35x35 -> 17x17 reduction (Mixed_6a)."""

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        branch3x3 = self.conv("branch3x3", 384, 3, stride=2)(x, train)
        branch3x3dbl = self.conv("branch3x3dbl_1", 64, 1)(x, train)
        branch3x3dbl = self.conv("branch3x3dbl_2", 96, 3, padding=1)(branch3x3dbl, train)
        branch3x3dbl = self.conv("branch3x3dbl_3", 96, 3, stride=2)(branch3x3dbl, train)
        return jnp.concatenate([branch3x3, branch3x3dbl, max_pool_3x3_s2(x)], axis=-1)


class InceptionC(_Block):
    """17x17 block (Mixed_6b..6e): 7x7 convolutions factorised into 1x7 and 7x1."""
    channels_7x7: int = 128

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        c7 = self.channels_7x7
        branch1x1 = self.conv("branch1x1", 192, 1)(x, train)
        branch7x7 = self.conv("branch7x7_1", c7, 1)(x, train)
        branch7x7 = self.conv("branch7x7_2", c7, (1, 7), padding=(0, 3))(branch7x7, train)
        branch7x7 = self.conv("branch7x7_3", 192, (7, 1), padding=(3, 0))(branch7x7, train)
        dbl = self.conv("branch7x7dbl_1", c7, 1)(x, train)
        dbl = self.conv("branch7x7dbl_2", c7, (7, 1), padding=(3, 0))(dbl, train)
        dbl = self.conv("branch7x7dbl_3", c7, (1, 7), padding=(0, 3))(dbl, train)
        dbl = self.conv("branch7x7dbl_4", c7, (7, 1), padding=(3, 0))(dbl, train)
        dbl = self.conv("branch7x7dbl_5", 192, (1, 7), padding=(0, 3))(dbl, train)
        branch_pool = self.conv("branch_pool", 192, 1)(avg_pool_3x3(x), train)
        return jnp.concatenate([branch1x1, branch7x7, dbl, branch_pool], axis=-1)


class InceptionD(_Block):
    """17x17 -> 8x8 reduction (Mixed_7a)."""

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        branch3x3 = self.conv("branch3x3_1", 192, 1)(x, train)
        branch3x3 = self.conv("branch3x3_2", 320, 3, stride=2)(branch3x3, train)
        branch7x7x3 = self.conv("branch7x7x3_1", 192, 1)(x, train)
        branch7x7x3 = self.conv("branch7x7x3_2", 192, (1, 7), padding=(0, 3))(branch7x7x3,
                                                                             train)
        branch7x7x3 = self.conv("branch7x7x3_3", 192, (7, 1), padding=(3, 0))(branch7x7x3,
                                                                             train)
        branch7x7x3 = self.conv("branch7x7x3_4", 192, 3, stride=2)(branch7x7x3, train)
        return jnp.concatenate([branch3x3, branch7x7x3, max_pool_3x3_s2(x)], axis=-1)


class InceptionE(_Block):
    """8x8 block (Mixed_7b, 7c): 3x3 convolutions split into parallel 1x3 and 3x1."""

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        branch1x1 = self.conv("branch1x1", 320, 1)(x, train)
        branch3x3 = self.conv("branch3x3_1", 384, 1)(x, train)
        branch3x3 = jnp.concatenate(
            [self.conv("branch3x3_2a", 384, (1, 3), padding=(0, 1))(branch3x3, train),
             self.conv("branch3x3_2b", 384, (3, 1), padding=(1, 0))(branch3x3, train)], -1)
        dbl = self.conv("branch3x3dbl_1", 448, 1)(x, train)
        dbl = self.conv("branch3x3dbl_2", 384, 3, padding=1)(dbl, train)
        dbl = jnp.concatenate(
            [self.conv("branch3x3dbl_3a", 384, (1, 3), padding=(0, 1))(dbl, train),
             self.conv("branch3x3dbl_3b", 384, (3, 1), padding=(1, 0))(dbl, train)], -1)
        branch_pool = self.conv("branch_pool", 192, 1)(avg_pool_3x3(x), train)
        return jnp.concatenate([branch1x1, branch3x3, dbl, branch_pool], axis=-1)


class InceptionAux(_Block):
    """The auxiliary classifier on Mixed_6e: 5x5/3 average pool, 1x1 and 5x5 convs, fc."""
    num_classes: int = 1000

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        x = nn.avg_pool(x, (5, 5), strides=(3, 3), padding="VALID")
        x = self.conv("conv0", 128, 1)(x, train)
        x = self.conv("conv1", 768, 5, stddev=0.01)(x, train)
        return classifier(self.num_classes, 0.001, self.dtype, name="fc")(global_avg_pool(x))


class InceptionV3(nn.Module):
    """torchvision's Inception3: stem convs and pools, Mixed_5b..Mixed_7c, then a head.

    `head='plain'` is torchvision's global average pool, dropout (`dropout`) and `fc`;
    'fastai', 'dense' and 'none' are as for ResNet (see `cnnjax.models.heads`).
    `features_at` names one of `BLOCKS` (e.g. 'Mixed_6e', the counterpart of Keras'
    'mixed7'): the network ends after it, so with head 'none' the model returns that
    block's feature map, and with 'dense' or 'fastai' a fresh head sits on it.

    `transform_input` (True, as torchvision sets it for the ImageNet weights) maps inputs
    normalised with ImageNet's per-channel statistics (the first `in_channels` of them, as
    the input pipeline uses) to the (pixel - 0.5) / 0.5 scaling of Google's weights.
    `aux_logits=True` adds torchvision's `AuxLogits` on Mixed_6e; it runs in training (and
    at init, to create its variables), then on inputs of at least 299x299, and is sown as
    `intermediates['aux_logits']`, since the model returns the main logits only. cnnjax's
    losses do not use it, so the training recipe leaves it off; it is for loading all of a
    torchvision file and for scripts that add the auxiliary loss. `frozen_norms` lists BatchNorm paths ('Conv2d_1a_3x3/bn',
    'Mixed_5b/branch1x1/bn', 'head/bn1'; see `norm_paths`) kept in eval mode while training.

    Fresh kernels are drawn as torchvision's `init_weights=True` draws them (truncated normal,
    std 0.1; 0.01 and 0.001 in AuxLogits); biases start at zero, as in cnnjax's other layers.
    """
    num_classes: int = 1000
    in_channels: int = 3
    aux_logits: bool = False
    transform_input: bool = True
    dropout: float = 0.5  # torchvision's, before `fc` (head 'plain')
    head: str = "plain"  # 'plain' | 'fastai' | 'dense' | 'none'
    head_dropout: tuple[float, ...] | None = None  # one rate per dropout layer of the head
    head_hidden: int | None = None
    features_at: str = ""  # '' (the whole network) or the block in BLOCKS it ends after
    frozen_norms: tuple[str, ...] = ()
    norm_axis_name: str | None = None  # pmap: BatchNorm statistics over this device axis
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        run_aux = self.aux_logits and (train or self.is_initializing())
        self._check(x, run_aux)
        if self.transform_input:
            mean = jnp.asarray(IMAGENET_MEAN[:self.in_channels])
            std = jnp.asarray(IMAGENET_STD[:self.in_channels])
            x = x * (std / 0.5) + (mean - 0.5) / 0.5
        last = BLOCKS.index(self.features_at) if self.features_at else len(BLOCKS) - 1
        for name in BLOCKS[:last + 1]:
            x = self._block(name)(x, train)
            if name == "Mixed_6e" and run_aux:
                aux = InceptionAux(nested_norms(self.frozen_norms, "AuxLogits"),
                                   self.norm_axis_name, self.dtype, self.num_classes,
                                   name="AuxLogits")(x, train)
                self.sow("intermediates", "aux_logits", aux)
        if self.head == "plain":
            x = nn.Dropout(self.dropout, deterministic=not train)(global_avg_pool(x))
            x = classifier(self.num_classes, 0.1, self.dtype, name="fc")(x)
        elif self.head != "none":
            x = fresh_head(self, x, train)
        check_frozen_norms(self.frozen_norms, self.variables)
        return x

    def _check(self, x: jnp.ndarray, run_aux: bool) -> None:
        """One sentence for a field or an input the network cannot take."""
        check_head(self.head, self.features_at, "InceptionV3")
        if self.features_at and self.features_at not in BLOCKS:
            raise ConfigError(f"features_at={self.features_at!r} is not a block of "
                              f"InceptionV3; choose one of {list(BLOCKS)}.")
        if self.aux_logits and self.features_at:
            raise ConfigError("aux_logits=True needs the whole InceptionV3; a model cut at "
                              f"features_at={self.features_at!r} has no AuxLogits.")
        if self.transform_input and not 1 <= self.in_channels <= len(IMAGENET_MEAN):
            raise ConfigError(f"transform_input=True undoes ImageNet's normalisation of 1 to 3 "
                              f"channels, not {self.in_channels}; set it False.")
        need = MIN_SIZE_AUX if run_aux else MIN_SIZE
        if min(x.shape[1:3]) < need:
            raise ConfigError(f"InceptionV3{' with aux_logits' if run_aux else ''} needs "
                              f"inputs of at least {need}x{need}, not {x.shape[1]}x"
                              f"{x.shape[2]}; use larger images"
                              f"{' or aux_logits=False' if run_aux else ''}.")

    def _block(self, name: str) -> Callable[[jnp.ndarray, bool], jnp.ndarray]:
        """torchvision's child `name` as a callable `(x, train) -> x`."""
        if name.startswith("maxpool"):
            return lambda x, train: max_pool_3x3_s2(x)
        norms = (nested_norms(self.frozen_norms, name), self.norm_axis_name, self.dtype)
        if name.startswith("Conv2d"):
            features, kernel, stride, padding = _STEM[name]
            return BasicConv2d(features, (kernel, kernel), stride, (padding, padding), 0.1,
                               *norms, name=name)
        block, *options = _MIXED[name]
        return block(*norms, *options, name=name)


# torchvision's stem: (features, kernel, stride, padding) per conv.
_STEM = {"Conv2d_1a_3x3": (32, 3, 2, 0), "Conv2d_2a_3x3": (32, 3, 1, 0),
         "Conv2d_2b_3x3": (64, 3, 1, 1), "Conv2d_3b_1x1": (80, 1, 1, 0),
         "Conv2d_4a_3x3": (192, 3, 1, 0)}
# Each Mixed block: its class and the options after the shared fields.
_MIXED = {"Mixed_5b": (InceptionA, 32), "Mixed_5c": (InceptionA, 64),
          "Mixed_5d": (InceptionA, 64), "Mixed_6a": (InceptionB,),
          "Mixed_6b": (InceptionC, 128), "Mixed_6c": (InceptionC, 160),
          "Mixed_6d": (InceptionC, 160), "Mixed_6e": (InceptionC, 192),
          "Mixed_7a": (InceptionD,), "Mixed_7b": (InceptionE,), "Mixed_7c": (InceptionE,)}

inception_v3 = InceptionV3  # torchvision's constructor name, as `resnet18` is ResNet's
