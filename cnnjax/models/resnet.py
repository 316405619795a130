"""ResNet-18/34/50 in torchvision's layout, so torchvision weights map onto it by name.

Flax module paths follow torchvision's state-dict keys with every `<name>.<index>` pair
joined by an underscore: `layer2.0.downsample.1.running_mean` is
`batch_stats['layer2_0']['downsample_1']['mean']`; `conv1.weight` (OIHW) is
`params['conv1']['kernel']` (HWIO); BN `weight`/`bias` are `scale`/`bias`; `fc.weight` is
`params['fc']['kernel']` transposed. That is the 'plain' head; `head='fastai'` or `'dense'`
puts a fresh head under `params['head']` instead (see `cnnjax.models.heads`).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnnjax.errors import ConfigError
from cnnjax.models.heads import check_head, fresh_head
from cnnjax.models.layers import Dtype, global_avg_pool, max_pool, torch_conv, torch_dense
from cnnjax.models.norms import bn_layer, check_frozen_norms, nested_norms


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34); stride on the first."""
    features: int
    stride: int = 1
    frozen_norms: tuple[str, ...] = ()
    norm_axis_name: str | None = None  # pmap: BatchNorm statistics over this device axis
    dtype: Dtype = jnp.float32
    expansion = 1

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        out = torch_conv(self.features, 3, self.stride, dtype=self.dtype, name="conv1")(x)
        out = nn.relu(bn_layer(self, train, "bn1")(out))
        out = torch_conv(self.features, 3, dtype=self.dtype, name="conv2")(out)
        out = bn_layer(self, train, "bn2")(out)
        return nn.relu(out + _shortcut(self, x, train))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, torchvision's "v1.5"), 1x1 expand by 4."""
    features: int
    stride: int = 1
    frozen_norms: tuple[str, ...] = ()
    norm_axis_name: str | None = None  # pmap: BatchNorm statistics over this device axis
    dtype: Dtype = jnp.float32
    expansion = 4

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        out = torch_conv(self.features, 1, dtype=self.dtype, name="conv1")(x)
        out = nn.relu(bn_layer(self, train, "bn1")(out))
        out = torch_conv(self.features, 3, self.stride, dtype=self.dtype, name="conv2")(out)
        out = nn.relu(bn_layer(self, train, "bn2")(out))
        out = torch_conv(self.features * 4, 1, dtype=self.dtype, name="conv3")(out)
        out = bn_layer(self, train, "bn3")(out)
        return nn.relu(out + _shortcut(self, x, train))


def _shortcut(block: BasicBlock | Bottleneck, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    """Identity, or torchvision's `downsample` (1x1 conv + BN) when the shape changes."""
    out_features = block.features * block.expansion
    if block.stride == 1 and x.shape[-1] == out_features:
        return x
    x = torch_conv(out_features, 1, block.stride, padding=0, dtype=block.dtype,
                   name="downsample_0")(x)
    return bn_layer(block, train, "downsample_1")(x)


class ResNet(nn.Module):
    """torchvision's ResNet: 7x7/2 stem, 3x3/2 max pool, four stages, then a head.

    `head='plain'` is torchvision's average pool + `fc`; `'fastai'` (`FastaiHead`) and
    `'dense'` (`DenseHead`) are fresh heads under `head`, with `head_hidden` features and
    `head_dropout` rates (None: the head's own defaults); `'none'` returns the feature map.
    `features_at='layer3'` (or another stage) cuts the body after that stage, for transfer
    recipes that take intermediate features; the cut model has no `fc`.

    `in_channels` documents the expected input (1 for spectrograms, 3 for RGB); Flax infers
    the stem's kernel shape from the input it is initialised with. Stage outputs are sown
    into the `intermediates` collection (`layer1` .. `layer4`) for parity checks and
    feature extraction. `frozen_norms` lists BatchNorm paths ('bn1', 'layer1_0/bn2',
    'layer2_0/downsample_1', 'head/bn1'; see `norm_paths`) kept in eval mode while training.
    """
    stage_sizes: Sequence[int]
    block: str = "basic"  # 'basic' or 'bottleneck'
    num_classes: int = 1000
    in_channels: int = 3
    head: str = "plain"  # 'plain' | 'fastai' | 'dense' | 'none'
    head_dropout: tuple[float, ...] | None = None  # one rate per dropout layer of the head
    head_hidden: int | None = None
    features_at: str = ""  # '' (the whole body) or the stage it ends after: 'layer1'..
    frozen_norms: tuple[str, ...] = ()
    norm_axis_name: str | None = None  # pmap: BatchNorm statistics over this device axis
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        check_head(self.head, self.features_at, "ResNet")
        stages = [f"layer{stage + 1}" for stage in range(len(self.stage_sizes))]
        if self.features_at and self.features_at not in stages:
            raise ConfigError(f"features_at={self.features_at!r} is not a stage of this "
                              f"ResNet; choose one of {stages}.")
        num_stages = stages.index(self.features_at) + 1 if self.features_at else len(stages)
        block_cls = {"basic": BasicBlock, "bottleneck": Bottleneck}[self.block]
        x = torch_conv(64, 7, 2, padding=3, dtype=self.dtype, name="conv1")(x)
        x = nn.relu(bn_layer(self, train, "bn1")(x))
        x = max_pool(x, 3, 2, padding=1)
        for stage, num_blocks in enumerate(self.stage_sizes[:num_stages]):
            features = 64 * 2**stage
            for index in range(num_blocks):
                stride = 2 if stage > 0 and index == 0 else 1
                name = f"layer{stage + 1}_{index}"
                x = block_cls(features, stride, nested_norms(self.frozen_norms, name),
                              self.norm_axis_name, dtype=self.dtype, name=name)(x, train)
            self.sow("intermediates", f"layer{stage + 1}", x)
        if self.head == "plain":
            x = torch_dense(self.num_classes, dtype=self.dtype, name="fc")(global_avg_pool(x))
        elif self.head != "none":
            x = fresh_head(self, x, train)
        check_frozen_norms(self.frozen_norms, self.variables)
        return x


def resnet18(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ResNet:
    return ResNet((2, 2, 2, 2), "basic", num_classes, in_channels, **kwargs)


def resnet34(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ResNet:
    return ResNet((3, 4, 6, 3), "basic", num_classes, in_channels, **kwargs)


def resnet50(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ResNet:
    return ResNet((3, 4, 6, 3), "bottleneck", num_classes, in_channels, **kwargs)
