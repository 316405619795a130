"""The losses a run can train with (`config.loss.name`) and what each makes of the model's
outputs. The name also fixes the task (see `tasks.py`): the first three classify, the last
three regress.

    softmax_cross_entropy  C outputs (logits); torch.nn.CrossEntropyLoss
    binary_cross_entropy   1 output z for 2 classes, class 1 the positive one, p = sigmoid(z);
                           torch.nn.BCEWithLogitsLoss
    hinge                  C scores; Weston-Watkins multi-class hinge as
                           torch.nn.MultiMarginLoss (p=1, margin=1)
    mse, mae, huber        1 output; torch.nn.MSELoss, L1Loss, HuberLoss(delta)

`Loss` is the jittable part only: hashable (a static argument of the jitted steps), it splits
the batch loss into per-example numerators and denominators, so a batch cut into
micro-batches or spread over devices can divide every part by the whole batch's denominator
and add (see `train_step`). What happens on the host (averaging over windows, per-recording
losses, reports) is the task's. The config gate checks the settings a user gives; `Loss`
only refuses what would compute nonsense.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnnjax.errors import ConfigError, DataError

DEFAULT_LOSS = "softmax_cross_entropy"
CROSS_ENTROPY_LOSSES = ("softmax_cross_entropy", "binary_cross_entropy")
CLASSIFICATION_LOSSES = (*CROSS_ENTROPY_LOSSES, "hinge")
REGRESSION_LOSSES = ("mse", "mae", "huber")
LOSSES = CLASSIFICATION_LOSSES + REGRESSION_LOSSES


def cross_entropy_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy against integer labels, computed in float32."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def multi_margin_loss(scores: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example Weston-Watkins hinge, torch.nn.MultiMarginLoss(p=1, margin=1):
    sum over classes j != y of max(0, 1 - s_y + s_j), divided by the number of classes C.
    (optax.multiclass_hinge_loss is the other one, Crammer-Singer: max over j != y.)"""
    true = jnp.take_along_axis(scores, labels[:, None], axis=-1)
    margins = jnp.maximum(0.0, 1.0 - true + scores)
    others = jnp.arange(scores.shape[-1]) != labels[:, None]
    return jnp.where(others, margins, 0.0).sum(-1) / scores.shape[-1]


@dataclass(frozen=True)
class Loss:
    """The training loss, hashable so that it can be a static argument of a jitted step.

    Classification, for example i with label y, C classes, smoothing e and class weights w
    (all 1 when None), with -log p_i[c] the negative log-probabilities (softmax of the logits;
    for binary cross-entropy [log(1 - sigmoid(z)), log sigmoid(z)], i.e. the softmax of
    [0, z]):

        numerator_i   = (1 - e) * w[y] * -log p_i[y] + (e / C) * sum_c w[c] * -log p_i[c]
        denominator_i = w[y]

    and the batch loss is sum(numerator) / sum(denominator). That is torch's
    CrossEntropyLoss(weight=w, label_smoothing=e): its weighted mean divides by the summed
    weights of the targets, and with smoothing the class weights scale the smoothing term
    too. Unweighted, it is the plain mean over examples. Binary cross-entropy is the same
    with C = 2: BCEWithLogitsLoss on the smoothed target y * (1 - e) + e / 2, and with class
    weights BCEWithLogitsLoss(weight=w[y], reduction='sum') / sum(w[y]). The hinge takes
    `multi_margin_loss` as its term, weighted the same way (MultiMarginLoss(weight=w,
    reduction='sum') / sum(w[y])); it has no smoothing.

    Logit adjustment (Menon et al., "Long-tail learning via logit adjustment", ICLR 2021): with
    offsets a = tau * log(prior) (the training labels' class frequencies), the cross-entropies
    train on the scores s + a instead of s, while predictions, probabilities and the reported
    per-example loss use s itself. Rare classes then need a larger margin during training, and
    argmax(s) estimates the class that is most likely under equal priors: the loss is
    consistent for balanced error, where class weights only re-weight examples.

    A mixup example (label y, `mix_label` y', `mix_weight` m) mixes both terms with the same
    weights, numerator m * numerator(y) + (1 - m) * numerator(y') and denominator
    m * w[y] + (1 - m) * w[y'], so m = 1 is torch's loss on y alone and, unweighted, the
    loss is the mean of m * L(y) + (1 - m) * L(y').

    Regression: the model's output o stands for the value `target_mean + target_std * o`
    (the training targets' mean and std), so a fresh model starts out predicting the mean
    and one output unit is one standard deviation; the loss is the mean over examples of
    (value - target)^2, |value - target| or torch's HuberLoss(delta=huber_delta), in the
    target's own units.
    """
    label_smoothing: float = 0.0
    class_weights: tuple[float, ...] | None = None
    name: str = DEFAULT_LOSS
    huber_delta: float = 1.0
    target_mean: float = 0.0
    target_std: float = 1.0
    logit_offsets: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.name not in LOSSES:
            raise ValueError(f"name={self.name!r} is not one of {LOSSES}.")
        if not self.target_std > 0:
            raise ValueError(f"target_std={self.target_std!r} must be positive.")
        if self.class_weights is not None:  # a list from a config would not hash
            object.__setattr__(self, "class_weights",
                               tuple(float(w) for w in self.class_weights))
        if self.logit_offsets is not None:
            object.__setattr__(self, "logit_offsets",
                               tuple(float(a) for a in self.logit_offsets))

    @property
    def regression(self) -> bool:
        return self.name in REGRESSION_LOSSES

    @property
    def target_key(self) -> str:
        """The batch entry the loss compares the outputs with."""
        return "target" if self.regression else "label"

    def class_scores(self, outputs: jax.Array) -> jax.Array:
        """[B, C] float32 scores whose argmax is the predicted class and whose softmax is
        the class probabilities (logits; [0, z] for a single sigmoid output)."""
        outputs = outputs.astype(jnp.float32)
        if self.name == "binary_cross_entropy":
            return jnp.concatenate([jnp.zeros_like(outputs), outputs], axis=-1)
        return outputs

    def values(self, outputs: jax.Array) -> jax.Array:
        """[B] float32 predicted values of a regression model, in the target's units."""
        return self.target_mean + self.target_std * outputs[..., 0].astype(jnp.float32)

    def predictions(self, outputs: jax.Array) -> jax.Array:
        """The predicted class of each example, or its predicted value."""
        return self.values(outputs) if self.regression else jnp.argmax(
            self.class_scores(outputs), -1)

    def __call__(self, outputs: jax.Array, targets: jax.Array,
                 mix_labels: jax.Array | None = None,
                 mix_weight: jax.Array | None = None) -> jax.Array:
        """The batch's scalar loss; `mix_labels` and `mix_weight` ([B]) for a mixup batch."""
        numerator = self.numerator(outputs, targets, mix_labels, mix_weight)
        if self.class_weights is None:
            return numerator.mean()
        return numerator.sum() / self.denominator(targets, mix_labels, mix_weight).sum()

    def numerator(self, outputs: jax.Array, targets: jax.Array,
                  mix_labels: jax.Array | None = None,
                  mix_weight: jax.Array | None = None) -> jax.Array:
        """Per-example numerators [B], float32."""
        numerator = self._numerator(outputs, targets)
        if mix_labels is not None:
            numerator = mix_weight * numerator + (1 - mix_weight) * self._numerator(
                outputs, mix_labels)
        return numerator

    def denominator(self, targets: jax.Array, mix_labels: jax.Array | None = None,
                    mix_weight: jax.Array | None = None) -> jax.Array:
        """Per-example denominators [B]. They do not depend on the model, so a batch split into
        micro-batches or devices can divide every part by the whole batch's sum and add."""
        if self.class_weights is None:
            return jnp.ones(targets.shape, jnp.float32)
        weights = jnp.asarray(self.class_weights, jnp.float32)
        denominator = weights[targets]
        if mix_labels is not None:
            denominator = mix_weight * denominator + (1 - mix_weight) * weights[mix_labels]
        return denominator

    def per_example(self, outputs: jax.Array, targets: jax.Array) -> jax.Array:
        """The plain per-example term [B], float32: no class weights, no smoothing."""
        if self.regression:
            return self.regression_term(self.values(outputs), targets)
        return self._term(self.class_scores(outputs), targets)

    def _term(self, scores: jax.Array, targets: jax.Array) -> jax.Array:
        """The classification loss of each example's `scores`, unweighted."""
        if self.name == "hinge":
            return multi_margin_loss(scores, targets)
        return cross_entropy_loss(scores, targets)

    def regression_term(self, values: jax.Array, targets: jax.Array) -> jax.Array:
        """The loss of predicted `values` against `targets`, elementwise."""
        targets = jnp.asarray(targets, jnp.float32)
        if self.name == "mse":
            return optax.squared_error(values, targets)
        if self.name == "mae":
            return jnp.abs(values - targets)
        return optax.huber_loss(values, targets, delta=self.huber_delta)

    def training_scores(self, outputs: jax.Array) -> jax.Array:
        """`class_scores` plus the logit offsets, if any: what the training loss sees."""
        scores = self.class_scores(outputs)
        if self.logit_offsets is None:
            return scores
        if len(self.logit_offsets) != scores.shape[-1]:
            raise ValueError(f"logit_offsets has {len(self.logit_offsets)} entries for "
                             f"{scores.shape[-1]} classes.")
        return scores + jnp.asarray(self.logit_offsets, jnp.float32)

    def _numerator(self, outputs: jax.Array, targets: jax.Array) -> jax.Array:
        """Per-example numerator [B] of the batch loss for one set of targets, in float32."""
        if self.regression:
            return self.per_example(outputs, targets)
        scores = self.training_scores(outputs)
        numerator = self._term(scores, targets)
        weights = None
        if self.class_weights is not None:
            if len(self.class_weights) != scores.shape[-1]:
                raise ValueError(f"class_weights has {len(self.class_weights)} entries for "
                                  f"{scores.shape[-1]} classes.")
            weights = jnp.asarray(self.class_weights, jnp.float32)
            numerator = weights[targets] * numerator
        if self.label_smoothing:
            neg_log_p = -jax.nn.log_softmax(scores)
            if weights is not None:
                neg_log_p = neg_log_p * weights
            smooth = neg_log_p.sum(-1) / scores.shape[-1]
            numerator = (1 - self.label_smoothing) * numerator + self.label_smoothing * smooth
        return numerator

    def batch_sums(self, outputs: jax.Array, targets: jax.Array) -> dict[str, jax.Array]:
        """What a train step measures besides the loss, as sums over the batch (divided by
        the example count once summed over micro-batches and devices): the correct
        predictions, or the absolute and squared errors and, for the epoch's R², the
        targets and their squares."""
        if not self.regression:
            return {"accuracy": jnp.sum(self.predictions(outputs) == targets)}
        errors = self.values(outputs) - targets
        return {"mae": jnp.abs(errors).sum(), "mse": jnp.square(errors).sum(),
                "target": targets.sum(), "target_squared": jnp.square(targets).sum()}


def balanced_class_weights(labels: Sequence[int] | np.ndarray,
                           num_classes: int) -> tuple[float, ...]:
    """sklearn's 'balanced' weights, n / (num_classes * count_c): every class then carries
    the same total weight in the loss. Raises DataError when a class has no example."""
    counts = _class_counts(labels, num_classes, "balanced class weights")
    return tuple(float(w) for w in counts.sum() / (num_classes * counts))


def logit_offsets(labels: Sequence[int] | np.ndarray, num_classes: int,
                  tau: float) -> tuple[float, ...]:
    """tau * log(prior), the prior being the labels' class frequencies (see `Loss`). Raises
    DataError when a class has no example (its log-prior would be -inf)."""
    counts = _class_counts(labels, num_classes, "logit adjustment")
    return tuple(float(a) for a in tau * np.log(counts / counts.sum()))


def _class_counts(labels: Sequence[int] | np.ndarray, num_classes: int,
                  needed_by: str) -> np.ndarray:
    labels = np.asarray(labels, np.int64).ravel()
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"labels must lie in [0, {num_classes}); found "
                        f"{labels.min()}..{labels.max()}.")
    counts = np.bincount(labels, minlength=num_classes)
    empty = np.flatnonzero(counts == 0).tolist()
    if empty:
        raise DataError(f"classes {empty} have no examples; {needed_by} needs at least one "
                        f"example of each of the {num_classes} classes.")
    return counts


def parse_class_weights(spec: object) -> str | tuple[float, ...] | None:
    """`config.loss.class_weights` read: None for 'none', 'balanced', or the numbers; the
    count is checked where the classes are known (`make_loss`)."""
    text = str(spec).strip()
    if text in ("", "none"):
        return None
    if text == "balanced":
        return text
    try:
        weights = tuple(float(w) for w in text.split(","))
    except ValueError:
        weights = ()
    if not weights or min(weights) <= 0:
        raise ConfigError(f"config.loss.class_weights={text!r} must be 'none', 'balanced' or "
                          f"positive comma-separated numbers, one per class.")
    return weights
