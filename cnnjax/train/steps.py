"""Pure train and eval steps: `(state, batch) -> (state, metrics)`, no I/O, no globals.

A batch is `{'image': [B, H, W, C] float32, 'label': [B] int32}`; a mixup batch adds
`mix_label` and `mix_weight`; an eval batch may carry a boolean `mask` marking its real
examples (padding keeps one compiled shape).
`jit_train_step` donates the incoming state, so its buffers are reused for the new one, and
compiles once per `Loss` (a static argument).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnnjax.errors import ConfigError, DataError
from cnnjax.train.state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


def cross_entropy_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy against integer labels, computed in float32."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


@dataclass(frozen=True)
class Loss:
    """The training loss: torch.nn.CrossEntropyLoss(weight=class_weights,
    label_smoothing=label_smoothing) with its default mean reduction. Hashable, so it can be
    a static argument of a jitted step.

    For example i with label y, C classes, smoothing e and class weights w (all 1 when None):

        numerator_i   = (1 - e) * w[y] * -log p_i[y] + (e / C) * sum_c w[c] * -log p_i[c]
        denominator_i = w[y]

    and the batch loss is sum(numerator) / sum(denominator). That is torch's definition: its
    weighted mean divides by the summed weights of the targets, and with smoothing the class
    weights scale the smoothing term too. Unweighted, it is the plain mean over examples.

    A mixup example (label y, `mix_label` y', `mix_weight` m) mixes both terms with the same
    weights, numerator m * numerator(y) + (1 - m) * numerator(y') and denominator
    m * w[y] + (1 - m) * w[y'], so m = 1 is torch's loss on y alone and, unweighted, the
    loss is the mean of m * CE(y) + (1 - m) * CE(y').
    """
    label_smoothing: float = 0.0
    class_weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_smoothing <= 1.0:
            raise ConfigError(f"label_smoothing={self.label_smoothing!r} must lie in [0, 1].")
        if self.class_weights is not None:  # a list from a config would not hash
            object.__setattr__(self, "class_weights",
                               tuple(float(w) for w in self.class_weights))

    def __call__(self, logits: jax.Array, labels: jax.Array, mix_labels: jax.Array | None = None,
                 mix_weight: jax.Array | None = None) -> jax.Array:
        """The batch's scalar loss; `mix_labels` and `mix_weight` ([B]) for a mixup batch."""
        numerator = self.numerator(logits, labels, mix_labels, mix_weight)
        if self.class_weights is None:
            return numerator.mean()
        return numerator.sum() / self.denominator(labels, mix_labels, mix_weight).sum()

    def numerator(self, logits: jax.Array, labels: jax.Array,
                  mix_labels: jax.Array | None = None,
                  mix_weight: jax.Array | None = None) -> jax.Array:
        """Per-example numerators [B], float32."""
        numerator = self._numerator(logits, labels)
        if mix_labels is not None:
            numerator = mix_weight * numerator + (1 - mix_weight) * self._numerator(
                logits, mix_labels)
        return numerator

    def denominator(self, labels: jax.Array, mix_labels: jax.Array | None = None,
                    mix_weight: jax.Array | None = None) -> jax.Array:
        """Per-example denominators [B]. They do not depend on the model, so a batch split into
        micro-batches or devices can divide every part by the whole batch's sum and add."""
        if self.class_weights is None:
            return jnp.ones(labels.shape, jnp.float32)
        weights = jnp.asarray(self.class_weights, jnp.float32)
        denominator = weights[labels]
        if mix_labels is not None:
            denominator = mix_weight * denominator + (1 - mix_weight) * weights[mix_labels]
        return denominator

    def _numerator(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        """Per-example numerator [B] of the batch loss for one set of labels, in float32."""
        logits = logits.astype(jnp.float32)
        numerator = cross_entropy_loss(logits, labels)
        weights = None
        if self.class_weights is not None:
            if len(self.class_weights) != logits.shape[-1]:
                raise ConfigError(f"class_weights has {len(self.class_weights)} entries for "
                                  f"{logits.shape[-1]} classes.")
            weights = jnp.asarray(self.class_weights, jnp.float32)
            numerator = weights[labels] * numerator
        if self.label_smoothing:
            neg_log_p = -jax.nn.log_softmax(logits)
            if weights is not None:
                neg_log_p = neg_log_p * weights
            smooth = neg_log_p.sum(-1) / logits.shape[-1]
            numerator = (1 - self.label_smoothing) * numerator + self.label_smoothing * smooth
        return numerator


def balanced_class_weights(labels: Sequence[int] | np.ndarray,
                           num_classes: int) -> tuple[float, ...]:
    """sklearn's 'balanced' weights, n / (num_classes * count_c): every class then carries
    the same total weight in the loss. Raises DataError when a class has no example."""
    labels = np.asarray(labels, np.int64).ravel()
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"labels must lie in [0, {num_classes}); found "
                        f"{labels.min()}..{labels.max()}.")
    counts = np.bincount(labels, minlength=num_classes)
    empty = np.flatnonzero(counts == 0).tolist()
    if empty:
        raise DataError(f"classes {empty} have no examples; balanced class weights need at "
                        f"least one example of each of the {num_classes} classes.")
    return tuple(float(w) for w in labels.size / (num_classes * counts))


def train_step(state: TrainState, batch: Batch, loss: Loss = Loss(), grad_accum_steps: int = 1,
               axis_name: str | None = None) -> tuple[TrainState, Metrics]:
    """One optimizer step on `batch` with BatchNorm in train mode (batch statistics used,
    running averages updated, except in a model's `frozen_norms`). Returns the new state
    and the batch's `loss` (as `loss` defines it) and accuracy.

    `grad_accum_steps=k` splits the batch into k micro-batches run one after another (less
    memory) and sums their gradients: the same update as the whole batch, except that
    BatchNorm sees k smaller batches. Under `pmap`, `axis_name` names the device axis: each
    device holds its part of the global batch, gradients and metrics are summed across
    devices and the model's BatchNorm must use the same `axis_name`.
    """
    dropout_rng = jax.random.fold_in(state.rng, state.step)
    if axis_name is not None:  # every device draws its own dropout masks
        dropout_rng = jax.random.fold_in(dropout_rng, jax.lax.axis_index(axis_name))
    total = _across(loss.denominator(batch["label"], batch.get("mix_label"),
                                     batch.get("mix_weight")).sum(), axis_name)
    count = _across(jnp.asarray(batch["label"].shape[0], jnp.float32), axis_name)

    def grads_of(params: Any, batch_stats: Any, micro: Batch, rng: jax.Array
                 ) -> tuple[tuple[jax.Array, jax.Array, Any], Any]:
        def part_loss(params: Any) -> tuple[jax.Array, tuple[jax.Array, Any]]:
            logits, updates = state.apply_fn(
                {"params": params, "batch_stats": batch_stats}, micro["image"], train=True,
                mutable=["batch_stats"], rngs={"dropout": rng})
            numerator = loss.numerator(logits, micro["label"], micro.get("mix_label"),
                                       micro.get("mix_weight"))
            correct = jnp.sum(jnp.argmax(logits, -1) == micro["label"])
            return numerator.sum() / total, (correct, updates["batch_stats"])

        (value, (correct, new_stats)), grads = jax.value_and_grad(part_loss, has_aux=True)(
            params)
        return (value, correct, new_stats), grads

    if grad_accum_steps == 1:
        (value, correct, batch_stats), grads = grads_of(state.params, state.batch_stats, batch,
                                                        dropout_rng)
    else:
        micro_batches = jax.tree.map(lambda x: x.reshape(grad_accum_steps, -1, *x.shape[1:]),
                                     batch)

        def accumulate(carry: tuple[Any, ...], xs: tuple[Batch, jax.Array]
                       ) -> tuple[tuple[Any, ...], None]:
            grads_sum, value_sum, correct_sum, batch_stats = carry
            micro, index = xs
            (value, correct, batch_stats), grads = grads_of(
                state.params, batch_stats, micro, jax.random.fold_in(dropout_rng, index))
            grads_sum = jax.tree.map(jnp.add, grads_sum, grads)
            return (grads_sum, value_sum + value, correct_sum + correct, batch_stats), None

        zeros = jax.tree.map(jnp.zeros_like, state.params)
        (grads, value, correct, batch_stats), _ = jax.lax.scan(
            accumulate, (zeros, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32),
                         state.batch_stats),
            (micro_batches, jnp.arange(grad_accum_steps)))
    grads, value, correct = (_across(x, axis_name) for x in (grads, value, correct))
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                              batch_stats=batch_stats, opt_state=opt_state)
    return new_state, {"loss": value, "accuracy": correct / count}


def _across(tree: Any, axis_name: str | None) -> Any:
    """Sums over the devices of a `pmap` axis; unchanged without one."""
    return tree if axis_name is None else jax.lax.psum(tree, axis_name)


def eval_step(state: TrainState, batch: Batch) -> Metrics:
    """BatchNorm in eval mode (running averages). Returns per-example `loss`, `prediction`,
    `logits` and `mask`, so the caller can sum over masked examples and build a confusion
    matrix."""
    logits = state.apply_fn(state.variables, batch["image"], train=False)
    mask = batch.get("mask", jnp.ones(batch["label"].shape, bool))
    return {"loss": cross_entropy_loss(logits, batch["label"]),
            "prediction": jnp.argmax(logits, -1), "logits": logits, "mask": mask}


jit_train_step = jax.jit(train_step, donate_argnums=0,
                         static_argnames=("loss", "grad_accum_steps", "axis_name"))
jit_eval_step = jax.jit(eval_step)
