"""Pure train and eval steps: `(state, batch) -> (state, metrics)`, no I/O, no globals.

A batch is `{'image': [B, H, W, C] float32, 'label': [B] int32}`; a mixup batch adds
`mix_label` and `mix_weight`; an eval batch may carry a boolean `mask` marking its real
examples (padding keeps one compiled shape).
`jit_train_step` donates the incoming state, so its buffers are reused for the new one.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from cnnjax.train.state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


def cross_entropy_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy against integer labels, computed in float32."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    """One optimizer step on `batch` with BatchNorm in train mode (batch statistics used,
    running averages updated). Returns the new state and the batch's mean loss/accuracy."""
    dropout_rng = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params: Any) -> tuple[jax.Array, tuple[jax.Array, Any]]:
        logits, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats}, batch["image"], train=True,
            mutable=["batch_stats"], rngs={"dropout": dropout_rng})
        loss = cross_entropy_loss(logits, batch["label"])
        if "mix_label" in batch:
            weight = batch["mix_weight"]
            loss = weight * loss + (1 - weight) * cross_entropy_loss(logits, batch["mix_label"])
        return loss.mean(), (logits, updates["batch_stats"])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                              batch_stats=batch_stats, opt_state=opt_state)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    return new_state, {"loss": loss, "accuracy": accuracy}


def eval_step(state: TrainState, batch: Batch) -> Metrics:
    """BatchNorm in eval mode (running averages). Returns per-example `loss`, `prediction`,
    `logits` and `mask`, so the caller can sum over masked examples and build a confusion
    matrix."""
    logits = state.apply_fn(state.variables, batch["image"], train=False)
    mask = batch.get("mask", jnp.ones(batch["label"].shape, bool))
    return {"loss": cross_entropy_loss(logits, batch["label"]),
            "prediction": jnp.argmax(logits, -1), "logits": logits, "mask": mask}


jit_train_step = jax.jit(train_step, donate_argnums=0)
jit_eval_step = jax.jit(eval_step)
