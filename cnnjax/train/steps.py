"""Pure train and eval steps: `(state, batch) -> (state, metrics)`, no I/O, no globals.

A batch is `{'image': [B, H, W, C] float32, 'label': [B] int32}`, with `target` ([B]
float32) for a regression loss; a mixup batch adds `mix_label` and `mix_weight`; an eval
batch may carry a boolean `mask` marking its real examples (padding keeps one compiled
shape), and a prediction batch has no targets.

cnnjax's own modes compile these steps in one place, `cnnjax.parallel.DataParallel`, which
places them on every device (`config.parallel`). `jit_train_step` and `jit_eval_step` are
the one-device versions for research scripts: `jit_train_step` donates the incoming state,
so its buffers are reused for the new one, and both compile once per `Loss` (a static
argument).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from cnnjax.models.layers import NORM_STATS
from cnnjax.train.losses import Loss
from cnnjax.train.state import TrainState

__all__ = ["Batch", "Metrics", "eval_step", "jit_eval_step", "jit_train_step", "norm_stats_step",
           "train_step"]

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


def train_step(state: TrainState, batch: Batch, loss: Loss = Loss(), grad_accum_steps: int = 1,
               axis_name: str | None = None) -> tuple[TrainState, Metrics]:
    """One optimizer step on `batch` with BatchNorm in train mode (batch statistics used,
    running averages updated, except in a model's `frozen_norms`). Returns the new state
    and the batch's `loss` (as `loss` defines it) with its means of `Loss.batch_sums`:
    `accuracy`, or for regression `mae`, `mse`, `target` and `target_squared`.

    `grad_accum_steps=k` splits the batch into k micro-batches run one after another (less
    memory) and sums their gradients: the same update as the whole batch, except that
    BatchNorm sees k smaller batches. Under `pmap`, `axis_name` names the device axis: each
    device holds its part of the global batch, gradients and metrics are summed across
    devices and the model's BatchNorm must use the same `axis_name`.
    """
    key = loss.target_key
    dropout_rng = jax.random.fold_in(state.rng, state.step)
    if axis_name is not None:  # every device draws its own dropout masks
        dropout_rng = jax.random.fold_in(dropout_rng, jax.lax.axis_index(axis_name))
    total = _across(loss.denominator(batch[key], batch.get("mix_label"),
                                     batch.get("mix_weight")).sum(), axis_name)
    count = _across(jnp.asarray(batch[key].shape[0], jnp.float32), axis_name)

    def grads_of(params: Any, batch_stats: Any, micro: Batch, rng: jax.Array
                 ) -> tuple[tuple[jax.Array, Metrics, Any], Any]:
        def part_loss(params: Any) -> tuple[jax.Array, tuple[Metrics, Any]]:
            outputs, updates = state.apply_fn(
                {"params": params, "batch_stats": batch_stats}, micro["image"], train=True,
                mutable=["batch_stats"], rngs={"dropout": rng})
            numerator = loss.numerator(outputs, micro[key], micro.get("mix_label"),
                                       micro.get("mix_weight"))
            sums = loss.batch_sums(outputs, micro[key])
            return numerator.sum() / total, (sums, updates["batch_stats"])

        (value, (sums, new_stats)), grads = jax.value_and_grad(part_loss, has_aux=True)(
            params)
        return (value, sums, new_stats), grads

    if grad_accum_steps == 1:
        (value, sums, batch_stats), grads = grads_of(state.params, state.batch_stats, batch,
                                                     dropout_rng)
    else:
        (value, sums, batch_stats), grads = _accumulated(grads_of, state, batch, dropout_rng,
                                                         grad_accum_steps)
    grads, value, sums = (_across(x, axis_name) for x in (grads, value, sums))
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                              batch_stats=batch_stats, opt_state=opt_state)
    return new_state, {"loss": value, **{name: x / count for name, x in sums.items()}}


def _accumulated(grads_of: Any, state: TrainState, batch: Batch, dropout_rng: jax.Array,
                 grad_accum_steps: int) -> tuple[tuple[jax.Array, Metrics, Any], Any]:
    """`grads_of` over `grad_accum_steps` micro-batches in turn (`lax.scan`): the summed loss
    parts, step sums and gradients, and BatchNorm statistics carried from one to the next."""
    micro_batches = jax.tree.map(lambda x: x.reshape(grad_accum_steps, -1, *x.shape[1:]),
                                 batch)

    def accumulate(carry: tuple[Any, ...], xs: tuple[Batch, jax.Array]
                   ) -> tuple[tuple[Any, ...], Metrics]:
        grads_sum, value_sum, batch_stats = carry
        micro, index = xs
        (value, sums, batch_stats), grads = grads_of(
            state.params, batch_stats, micro, jax.random.fold_in(dropout_rng, index))
        grads_sum = jax.tree.map(jnp.add, grads_sum, grads)
        return (grads_sum, value_sum + value, batch_stats), sums

    zeros = jax.tree.map(jnp.zeros_like, state.params)
    (grads, value, batch_stats), micro_sums = jax.lax.scan(
        accumulate, (zeros, jnp.zeros((), jnp.float32), state.batch_stats),
        (micro_batches, jnp.arange(grad_accum_steps)))
    return (value, jax.tree.map(lambda x: x.sum(0), micro_sums), batch_stats), grads


def _across(tree: Any, axis_name: str | None) -> Any:
    """Sums over the devices of a `pmap` axis; unchanged without one."""
    return tree if axis_name is None else jax.lax.psum(tree, axis_name)


def eval_step(state: TrainState, batch: Batch, loss: Loss = Loss()) -> Metrics:
    """BatchNorm in eval mode (running averages). Returns the per-example `loss` (without
    class weights or smoothing; absent when the batch has no targets, as in prediction),
    `prediction` (class or value), the model's raw outputs as `logits`, and `mask`, so the
    caller can sum over masked examples, build a confusion matrix or average the task's
    `window_outputs` over a recording's windows."""
    logits = state.apply_fn(state.variables, batch["image"], train=False)
    mask = batch.get("mask", jnp.ones(batch["image"].shape[:1], bool))
    out = {"prediction": loss.predictions(logits), "logits": logits, "mask": mask}
    if loss.target_key in batch:
        out["loss"] = loss.per_example(logits, batch[loss.target_key])
    return out


def norm_stats_step(state: TrainState, batch: Batch, axis_name: str | None = None) -> Any:
    """Every BatchNorm layer's statistics of `batch["image"]` in a train-mode pass (dropout
    on, as in training): its mean and unbiased variance, shaped like `state.batch_stats`.
    A layer kept in eval mode (a model's `frozen_norms`) gives back its running statistics.
    Under `pmap` they are those of the global batch."""
    rng = jax.random.fold_in(state.rng, state.step)
    if axis_name is not None:
        rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
    _, collections = state.apply_fn(state.variables, batch["image"], train=True,
                                    mutable=["batch_stats", NORM_STATS], rngs={"dropout": rng})
    seen = traverse_util.flatten_dict(dict(collections.get(NORM_STATS, {})))
    running = traverse_util.flatten_dict(dict(state.batch_stats))
    return traverse_util.unflatten_dict({key: seen.get(key, value)
                                         for key, value in running.items()})


jit_train_step = jax.jit(train_step, donate_argnums=0,
                         static_argnames=("loss", "grad_accum_steps", "axis_name"))
jit_eval_step = jax.jit(eval_step, static_argnames=("loss",))
