"""The train state: everything a step reads and writes, as one pytree."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct


class TrainState(struct.PyTreeNode):
    """Parameters, BatchNorm statistics, optimizer state, step and RNG key.

    `apply_fn` (the model's) and `tx` (the optimizer) are static: they are not arrays and
    are not saved in checkpoints.
    """
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: optax.OptState
    rng: jax.Array
    apply_fn: Callable = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)

    @property
    def variables(self) -> dict[str, Any]:
        """The Flax variables `model.apply` takes in evaluation mode."""
        return {"params": self.params, "batch_stats": self.batch_stats}


def create_train_state(model: nn.Module, tx: optax.GradientTransformation,
                       input_shape: tuple[int, ...], rng: jax.Array) -> TrainState:
    """Initialises `model` for inputs of `input_shape` (no batch axis) and `tx` for its
    parameters. `rng` is a `jax.random.PRNGKey`; it seeds initialisation and dropout."""
    init_rng, state_rng = jax.random.split(rng)
    dummy = jnp.zeros((1, *input_shape), jnp.float32)
    variables = jax.jit(lambda key: model.init(key, dummy, train=False))(init_rng)
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                      rng=state_rng, apply_fn=model.apply, tx=tx)


def inference_state(model: nn.Module, variables: dict[str, Any]) -> TrainState:
    """A state that only evaluates: `variables` (params and batch_stats) read from a
    checkpoint, no optimizer, so prediction runs the same compiled eval step as training."""
    tx = optax.identity()
    return TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                      batch_stats=variables.get("batch_stats", {}),
                      opt_state=tx.init(variables["params"]), rng=jax.random.PRNGKey(0),
                      apply_fn=model.apply, tx=tx)
