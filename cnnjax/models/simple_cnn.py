"""The classic Keras tutorial CNN: conv-ReLU-pool blocks, then dense layers."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from cnnjax.models.layers import (POOLS_2X2, Dtype, conv_general_dilated, flatten, global_avg_pool,
                                   torch_dense)
from cnnjax.models.norms import bn_layer, check_frozen_norms

HEAD_POOLS = {"flatten": flatten, "gap": global_avg_pool}


class SimpleCNN(nn.Module):
    """`len(widths)` x (3x3 'valid' conv + [BN] + ReLU + 2x2 pool), `head_pool`, dense layers.

    Defaults are the Keras tutorial's network: widths 32/64/128, max pooling, flatten,
    dense 128 and 512 with ReLU, then the output layer. `frozen_norms` ('bn1', ...) keeps
    those BatchNorms in eval mode while training.
    """
    num_classes: int
    widths: Sequence[int] = (32, 64, 128)
    pool: str = "max"  # 'max' | 'avg' | 'min'
    head_pool: str = "flatten"  # 'flatten' | 'gap'
    dense: Sequence[int] = (128, 512)
    batch_norm: bool = False
    dropout: float = 0.0
    in_channels: int = 3
    frozen_norms: tuple[str, ...] = ()
    norm_axis_name: str | None = None  # pmap: BatchNorm statistics over this device axis
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        pool = POOLS_2X2[self.pool]
        for i, width in enumerate(self.widths):
            x = nn.Conv(width, (3, 3), padding="VALID", use_bias=not self.batch_norm,
                        dtype=self.dtype, conv_general_dilated=conv_general_dilated,
                        name=f"conv{i + 1}")(x)
            if self.batch_norm:
                x = bn_layer(self, train, f"bn{i + 1}")(x)
            x = pool(nn.relu(x))
        x = HEAD_POOLS[self.head_pool](x)
        for i, width in enumerate(self.dense):
            x = nn.relu(torch_dense(width, dtype=self.dtype, name=f"dense{i + 1}")(x))
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        check_frozen_norms(self.frozen_norms, self.variables)
        return torch_dense(self.num_classes, dtype=self.dtype, name="output")(x)
